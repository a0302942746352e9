"""The Celery application of the web app: analyses run as tasks (``diagnosis.tasks``) on workers.

Configured from the Django settings' ``CELERY_*`` names (settings/base.py): Redis in production
(``ECGDX_BROKER_URL``), else kombu's filesystem transport in the data directory, which needs no
server so that ``ecgdx serve`` works alone on one machine. Workers are started by ``ecgdx worker``.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ecgdx_web.settings.local")

app = Celery("ecgdx_web")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["diagnosis"])
app.autodiscover_tasks(["diagnosis"], related_name="batch_tasks")  # archive batches (`ecgdx predict --broker`)
