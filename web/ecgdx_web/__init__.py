"""Django project of the ecgdx clinician web app (see docs/web.md)."""

from ecgdx_web.celery import app as celery_app

__all__ = ["celery_app"]
