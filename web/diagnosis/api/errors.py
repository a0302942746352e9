"""Every API error has one shape: {"error": {"status", "code", "message", "fields"?, "details"?}}."""

from __future__ import annotations

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from diagnosis.services import UploadRejected


def error_response(status_code: int, code: str, message: str, **extra) -> Response:
    body = {"status": status_code, "code": code, "message": message}
    body.update({k: v for k, v in extra.items() if v})
    return Response({"error": body}, status=status_code)


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
            response["Retry-After"] = "60"
        return response
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # unexpected: Django's handler500 answers with a JSON error (no stack trace)
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"error": {"status": response.status_code, "code": "invalid",
                                   "message": _flatten(exc.detail), "fields": exc.detail}}
        return response
    detail = getattr(exc, "detail", None)
    code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
    response.data = {"error": {"status": response.status_code, "code": str(code),
                               "message": _flatten(detail) if detail is not None else str(exc)}}
    return response
