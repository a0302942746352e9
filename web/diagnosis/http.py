"""Request helpers shared by the page views and the API views."""

from __future__ import annotations

from django.conf import settings


def client_ip(request) -> str | None:
    """The client's address: REMOTE_ADDR, or the proxy-appended X-Forwarded-For entry when trusted."""
    if settings.ECGDX_TRUST_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            return hops[-1]  # the entry our own proxy added; earlier ones are client-controlled
    return request.META.get("REMOTE_ADDR")


def wants_json(request) -> bool:
    return request.path.startswith("/api/")
