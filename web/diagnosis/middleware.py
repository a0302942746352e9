"""Turn an unreachable database into a clear 503 (JSON under /api/, a page elsewhere), never a 500.

The model being unavailable is handled where it is used (services, the model and health views);
the database can fail anywhere a view touches it (sessions, tokens, rows), so it is caught here.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, InterfaceError

logger = logging.getLogger(__name__)

MESSAGE = "The service is temporarily unavailable: its database cannot be reached. Please try again in a few minutes."


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
