"""Middleware: ``NoStoreMiddleware`` keeps pages out of caches; ``DatabaseUnavailableMiddleware`` turns an
unreachable database into a clear 503 (JSON under /api/, a page elsewhere), never a 500.

The model being unavailable is handled where it is used (services, the model and health views);
the database can fail anywhere a view touches it (sessions, tokens, rows), so it is caught here.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, InterfaceError
from django.utils.cache import add_never_cache_headers

logger = logging.getLogger(__name__)

MESSAGE = "The service is temporarily unavailable: its database cannot be reached. Please try again in a few minutes."


class NoStoreMiddleware:
    """Every answer of the app (pages, API, errors) gets ``Cache-Control: no-store, private``.

    Results, pictures and tokens are medical or secret: no browser, proxy or shared computer may keep a
    copy. A view that sets its own Cache-Control keeps it. Static files never reach this middleware
    (WhiteNoise answers them first, with long lifetimes).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Cache-Control" not in response:
            add_never_cache_headers(response)
        return response


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            return self.get_response(request)
        except (DatabaseError, InterfaceError) as exc:  # raised outside a view (e.g. saving the session)
            return self._unavailable(request, exc)

    def process_exception(self, request, exception):
        if isinstance(exception, DatabaseError | InterfaceError):
            return self._unavailable(request, exception)
        return None

    def _unavailable(self, request, exc):
        from diagnosis.views import service_unavailable

        logger.error("database unavailable for %s %s: %s", request.method, request.path, exc)
        response = service_unavailable(request, MESSAGE)
        response["Retry-After"] = "60"
        return response
