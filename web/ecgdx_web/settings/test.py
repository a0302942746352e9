"""Settings for the web tests (pytest-django): temporary data directory, fake predictor, fast hashing."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ecgdx_web.settings.base import *  # noqa: F403

DATA_DIR = Path(tempfile.mkdtemp(prefix="ecgdx-web-test-"))
SECRET_KEY = "test-only-key-" + "x" * 40
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(DATA_DIR / "db.sqlite3")}}
PRIVATE_MEDIA_ROOT = DATA_DIR / "private"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir()  # WhiteNoise warns about a missing STATIC_ROOT
WHITENOISE_USE_FINDERS = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ECGDX_ANONYMOUS_DEMO = False
ECGDX_ALLOW_SIGNUP = True
ECGDX_UPLOAD_RATE_LIMIT = 1000
# Most tests use the fake predictor; the integration tests switch to the real ONNX one.
ECGDX_PREDICTOR_FACTORY = "diagnosis.tests.fakes.FakePredictor"
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "CRITICAL"}}
# Analyses run in the calling process, at once (tests of real workers start them: test_workers.py).
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_BROKER_URL = "memory://"
CELERY_BROKER_TRANSPORT_OPTIONS = {}
