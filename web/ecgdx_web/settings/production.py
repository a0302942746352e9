"""Production: gunicorn behind a TLS-terminating proxy, static files by WhiteNoise (docs/web.md).

Required: SECRET_KEY (50+ random characters) and ALLOWED_HOSTS. DATABASE_URL selects PostgreSQL
(or any database dj-database-url knows); without it SQLite in the data directory is used.
``manage.py check --deploy`` passes without warnings with these settings.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from ecgdx_web.env import env_bool, env_int, env_list, env_str
from ecgdx_web.settings.base import *  # noqa: F403
from ecgdx_web.settings.base import DATA_DIR, SECRET_KEY

if not SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY must be set for the production settings, e.g. "
        "SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(50))')"
    )
if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-"):
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters")

DEBUG = False
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS")
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must name the host(s) the app is served as, comma separated")

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# One cache all gunicorn workers share (the upload rate limit counts there).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": env_str("ECGDX_CACHE_DIR") or str(DATA_DIR / "cache"),
    }
}

# HTTPS. Behind a proxy that terminates TLS, set SECURE_PROXY_SSL_HEADER=1 (it must set
# X-Forwarded-Proto and strip it from clients).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
