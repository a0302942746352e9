"""Read-only queries. Users only ever see their own analyses (staff see everything in the admin)."""

from __future__ import annotations

from datetime import date

from django.db.models import QuerySet
from django.http import Http404

from diagnosis.models import Analysis


def analysis_list(*, user, label: str | None = None, date_from: date | None = None,
                  date_to: date | None = None) -> QuerySet[Analysis]:
    """The user's analyses, newest first, optionally of one label and between two dates (inclusive)."""
    if user is None or not user.is_authenticated:
        return Analysis.objects.none()
    qs = Analysis.objects.filter(owner=user)
    if label:
        qs = qs.filter(label=label)
    if date_from:
        qs = qs.filter(created_at__date__gte=date_from)
    if date_to:
        qs = qs.filter(created_at__date__lte=date_to)
    return qs.order_by("-created_at")


def analysis_get(*, user, pk) -> Analysis:
    """The user's analysis ``pk``; Http404 for a missing one and for anyone else's (no leak either way)."""
    if user is None or not user.is_authenticated:
        raise Http404("no such analysis")
    try:
        return Analysis.objects.get(pk=pk, owner=user)
    except (Analysis.DoesNotExist, ValueError):
        raise Http404("no such analysis") from None
