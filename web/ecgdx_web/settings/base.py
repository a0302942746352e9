"""Settings shared by every environment. Everything that varies comes from environment variables.

Safe defaults: DEBUG off, SQLite in the data directory (PostgreSQL or any other database when
DATABASE_URL is set), uploads kept in a private folder outside every static or public folder.
The data directory (ECGDX_WEB_DATA_DIR, default ~/.local/share/ecgdx-web) is never inside the repo.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF, UNSAFE_INLINE

from ecgdx_web.env import default_data_dir, env_bool, env_int, env_list, env_str

WEB_DIR = Path(__file__).resolve().parents[2]  # .../web
DATA_DIR = default_data_dir()

SECRET_KEY = env_str("SECRET_KEY")  # local.py generates one; production.py requires it
DEBUG = False
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "csp",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "diagnosis",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Below WhiteNoise, so static files keep their long cache lifetimes.
    "diagnosis.middleware.NoStoreMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "diagnosis.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "ecgdx_web.urls"
WSGI_APPLICATION = "ecgdx_web.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "diagnosis.context_processors.app_settings",
            ],
        },
    },
]

if not env_str("DATABASE_URL"):
    # The default SQLite file lives in the data directory; SQLite cannot create missing folders.
    # 0700: the database holds password hashes and results (`ecgdx serve` also tightens an old folder).
    DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)

DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL",
        default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sign-in attempts (the page and POST /api/v1/auth/token) per user name and per client address in a
# window; over either limit further attempts are refused (429, with Retry-After) until the window ends.
ECGDX_SIGN_IN_LIMIT_PER_USER = env_int("ECGDX_SIGN_IN_LIMIT_PER_USER", 5, minimum=1)
ECGDX_SIGN_IN_LIMIT_PER_ADDRESS = env_int("ECGDX_SIGN_IN_LIMIT_PER_ADDRESS", 20, minimum=1)
ECGDX_SIGN_IN_WINDOW_SECONDS = env_int("ECGDX_SIGN_IN_WINDOW_SECONDS", 900, minimum=1)
# New API tokens from the token page per user and per address in a window.
ECGDX_TOKEN_CREATE_LIMIT_PER_USER = env_int("ECGDX_TOKEN_CREATE_LIMIT_PER_USER", 10, minimum=1)
ECGDX_TOKEN_CREATE_LIMIT_PER_ADDRESS = env_int("ECGDX_TOKEN_CREATE_LIMIT_PER_ADDRESS", 30, minimum=1)
ECGDX_TOKEN_CREATE_WINDOW_SECONDS = env_int("ECGDX_TOKEN_CREATE_WINDOW_SECONDS", 3600, minimum=1)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "diagnosis:upload"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or DATA_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# No MEDIA_URL: uploads are never served as static files, only through the authorised image views.
PRIVATE_MEDIA_ROOT = Path(env_str("ECGDX_PRIVATE_MEDIA_ROOT") or DATA_DIR / "private")

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ecgdx"}}

# Uploads: held in memory up to the limit, never spooled to a temporary file (rejected files never
# touch the disk); anything larger is refused before it is read (diagnosis.uploads).
ECGDX_MAX_UPLOAD_BYTES = env_int("ECGDX_MAX_UPLOAD_BYTES", 20_000_000, minimum=1)  # 20 MB
ECGDX_MAX_IMAGE_PIXELS = env_int("ECGDX_MAX_IMAGE_PIXELS", 50_000_000, minimum=1)
FILE_UPLOAD_HANDLERS = ["diagnosis.uploads.LimitedMemoryUploadHandler"]
FILE_UPLOAD_MAX_MEMORY_SIZE = ECGDX_MAX_UPLOAD_BYTES + 1
DATA_UPLOAD_MAX_NUMBER_FILES = 5
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
ECGDX_ALLOWED_IMAGE_TYPES = env_list("ECGDX_ALLOWED_IMAGE_TYPES", ["jpeg", "png"])

# `ecgdx serve` (waitress) refuses bodies over this itself, in plain text; it must stay above the size
# the upload handler refuses unread (2 x ECGDX_MAX_UPLOAD_BYTES + 1 MiB), so the app answers with its JSON 413.
ECGDX_SERVER_MAX_BODY_BYTES = env_int("ECGDX_SERVER_MAX_BODY_BYTES", 5 * ECGDX_MAX_UPLOAD_BYTES + 2 * 1024 * 1024,
                                      minimum=1)

# Anonymous users may try one upload (result shown once, nothing stored) when this is on.
ECGDX_ANONYMOUS_DEMO = env_bool("ECGDX_ANONYMOUS_DEMO", False)
# Self-service sign-up page (off in production unless asked for).
ECGDX_ALLOW_SIGNUP = env_bool("ECGDX_ALLOW_SIGNUP", False)
# Uploads per user (or per IP address for anonymous requests) per window; 0 disables the limit.
ECGDX_UPLOAD_RATE_LIMIT = env_int("ECGDX_UPLOAD_RATE_LIMIT", 30)
ECGDX_UPLOAD_RATE_WINDOW_SECONDS = env_int("ECGDX_UPLOAD_RATE_WINDOW_SECONDS", 3600, minimum=1)
# Take the client address from X-Forwarded-For (only behind a proxy that sets it).
ECGDX_TRUST_X_FORWARDED_FOR = env_bool("ECGDX_TRUST_X_FORWARDED_FOR", False)
# Delete stored images (not the result rows) older than this many days (`manage.py purge_images`); 0 = keep.
ECGDX_IMAGE_RETENTION_DAYS = env_int("ECGDX_IMAGE_RETENTION_DAYS", 30)
# Paint the printed header and footer (patient details) of stored uploads white (preprocessing's crop box).
ECGDX_BLANK_PRINTED_TEXT = env_bool("ECGDX_BLANK_PRINTED_TEXT", True)

# Model: ECGDX_MODEL_PATH (else the bundled default); how inference is reached (tests inject a fake).
ECGDX_MODEL_PATH = env_str("ECGDX_MODEL_PATH") or None
ECGDX_INFERENCE_THREADS = env_int("ECGDX_INFERENCE_THREADS", 1, minimum=1)
ECGDX_PREDICTOR_FACTORY = env_str("ECGDX_PREDICTOR_FACTORY", "diagnosis.inference_adapter.onnx_predictor")

# Analyses run as Celery tasks (diagnosis.tasks; docs/web.md "Workers"). ECGDX_BROKER_URL names the
# broker (redis://host:6379/0 in production); without it the queue is a folder in the data directory
# (kombu's filesystem transport): no server to install, and `ecgdx serve` starts its own worker.
ECGDX_BROKER_URL = env_str("ECGDX_BROKER_URL")
BROKER_DIR = Path(env_str("ECGDX_BROKER_DIR") or DATA_DIR / "broker")
# Hard limit of one analysis; a running analysis older than this plus a margin was lost with its worker
# and is queued again by the recovery sweep (diagnosis.services.analyses_recover).
ECGDX_TASK_TIME_LIMIT = env_int("ECGDX_TASK_TIME_LIMIT", 300, minimum=5)
# A worker killed by the same picture this many times fails it instead of trying again (a poison picture).
ECGDX_TASK_MAX_ATTEMPTS = env_int("ECGDX_TASK_MAX_ATTEMPTS", 3, minimum=1)
# Queued analyses whose message is gone (the broker lost it) are sent again after this many seconds,
# and only while the queue is empty, so that a long archive backlog is never sent twice.
ECGDX_REQUEUE_AFTER_SECONDS = env_int("ECGDX_REQUEUE_AFTER_SECONDS", 60, minimum=1)
ECGDX_RECOVERY_INTERVAL_SECONDS = env_int("ECGDX_RECOVERY_INTERVAL_SECONDS", 30, minimum=1)
# `Prefer: wait=N` on the API is honoured up to this many seconds.
ECGDX_MAX_PREFER_WAIT_SECONDS = env_int("ECGDX_MAX_PREFER_WAIT_SECONDS", 60, minimum=0)

if ECGDX_BROKER_URL:
    CELERY_BROKER_URL = ECGDX_BROKER_URL
    # Unacknowledged messages of a worker that died come back after this many seconds (Redis).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": ECGDX_TASK_TIME_LIMIT + 60,
                                       "socket_connect_timeout": 5, "socket_timeout": 10}
else:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"), "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"), "store_processed": False,
    }
    for _folder in ("queue", "control"):
        (BROKER_DIR / _folder).mkdir(mode=0o700, parents=True, exist_ok=True)
CELERY_TASK_ACKS_LATE = True  # a message is removed only when its analysis is finished
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a pool process killed mid-task gives the message back
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # each worker process holds one message: no picture waits behind a slow one
CELERY_TASK_IGNORE_RESULT = True  # results live in the database, not in a result backend
CELERY_TASK_TIME_LIMIT = ECGDX_TASK_TIME_LIMIT
CELERY_TASK_SOFT_TIME_LIMIT = max(ECGDX_TASK_TIME_LIMIT - 5, 1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None  # a worker waits for its broker to come back, however long
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
# Tests run tasks in the calling process (settings/test.py).
CELERY_TASK_ALWAYS_EAGER = False
# Archive batches (`ecgdx predict DIR --broker URL`, diagnosis.batch_tasks) get their rows back through a
# result backend: ECGDX_RESULT_BACKEND, else the broker's Redis; none with the queue folder. Analyses
# still keep no results there (CELERY_TASK_IGNORE_RESULT); the client deletes each row once written.
CELERY_RESULT_BACKEND = env_str("ECGDX_RESULT_BACKEND") or (
    ECGDX_BROKER_URL if ECGDX_BROKER_URL.startswith("redis") else None)
CELERY_RESULT_EXPIRES = 24 * 3600  # rows of an interrupted batch are not kept longer than a day

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.MultiPartParser", "rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "diagnosis.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# API tokens are stored as SHA-512 digests (django-rest-knox): the token itself is shown once, when made.
# ECGDX_API_TOKEN_DAYS = 0: tokens last until replaced or revoked.
_TOKEN_DAYS = env_int("ECGDX_API_TOKEN_DAYS", 0)
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=_TOKEN_DAYS) if _TOKEN_DAYS else None,
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
ECGDX_API_TOKENS_PER_USER = env_int("ECGDX_API_TOKENS_PER_USER", 10, minimum=1)  # the oldest go beyond this

SPECTACULAR_SETTINGS = {
    "TITLE": "ecgdx API",
    "DESCRIPTION": (
        "Classify pictures of paper 12-lead ECGs (Normal, Myocardial Infarction, Abnormal Heartbeat, "
        "History of MI). Research tool, not a medical device."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No call to the public validator service: the docs must work offline.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "COMPONENT_SPLIT_REQUEST": True,
}

CSRF_FAILURE_VIEW = "diagnosis.views.csrf_failure"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# No inline or third-party script anywhere. Inline style *attributes* stay allowed (the result page's
# bar widths); <style> elements do not. The Redoc page relaxes styles for itself (diagnosis.api.urls).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],  # data: for the pictures of an anonymous demo result
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"one_line": {"()": "ecgdx_web.log_filters.WithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING")},
    "loggers": {
        "diagnosis": {"level": env_str("LOG_LEVEL", "INFO")},
        # Every scanner's bad Host header is a client error, not ours: one line, no traceback.
        "django.security.DisallowedHost": {"filters": ["one_line"], "level": "WARNING"},
    },
}
