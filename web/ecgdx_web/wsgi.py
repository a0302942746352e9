"""WSGI entry point: ``gunicorn --chdir web ecgdx_web.wsgi`` (production settings by default)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ecgdx_web.settings.production")

application = get_wsgi_application()
