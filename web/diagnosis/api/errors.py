"""Every API error has one shape: {"error": {"status", "code", "message", "fields"?, "details"?}}.

The codes are the ones docs/web.md lists; DRF's own names are translated where they differ.
"""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from diagnosis.services import UploadRejected

# DRF's code -> the documented one.
_CODES = {"unsupported_media_type": "unsupported_type", "throttled": "rate_limited"}


def error_response(status_code: int, code: str, message: str, **extra) -> Response:
    body = {"status": status_code, "code": code, "message": message}
    body.update({k: v for k, v in extra.items() if v})
    return Response({"error": body}, status=status_code)


def upload_window_seconds_left(now: float | None = None) -> int:
    """Seconds until the upload rate limit's current window ends (its windows are fixed, from the epoch)."""
    window = settings.ECGDX_UPLOAD_RATE_WINDOW_SECONDS
    now = time.time() if now is None else now
    return max(1, math.ceil(window - now % window))


def _flatten(detail) -> str:
    if isinstance(detail, dict):
        return " ".join(f"{k}: {_flatten(v)}" for k, v in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(v) for v in detail)
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, UploadRejected):
        response = error_response(exc.status, exc.code, exc.message, details=exc.details)
        if exc.status == status.HTTP_429_TOO_MANY_REQUESTS:
            response["Retry-After"] = str(upload_window_seconds_left())
        return response
    # DRF answers Django's own exceptions too; name them as DRF would, so the codes match the docs.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # unexpected: Django's handler500 answers with a JSON error (no stack trace)
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"error": {"status": response.status_code, "code": "invalid",
                                   "message": _flatten(exc.detail), "fields": exc.detail}}
        return response
    detail = getattr(exc, "detail", None)
    code = str(getattr(detail, "code", None) or getattr(exc, "default_code", "error"))
    response.data = {"error": {"status": response.status_code, "code": _CODES.get(code, code),
                               "message": _flatten(detail) if detail is not None else str(exc)}}
    return response
