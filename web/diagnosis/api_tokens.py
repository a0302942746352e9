"""API tokens (django-rest-knox): only a SHA-512 digest of each token is stored.

A token is returned once, by ``api_token_create``; after that nobody can read it back, not even an
administrator. A user may hold several (one per script or machine) up to ECGDX_API_TOKENS_PER_USER;
making one more revokes the oldest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from knox.models import AuthToken
from knox.settings import knox_settings


@dataclass(frozen=True)
class IssuedToken:
    token: str  # the only copy there will ever be
    expiry: datetime | None


def api_token_create(*, user, replace_existing: bool) -> IssuedToken:
    """A new token for ``user``; ``replace_existing`` revokes every other token first."""
    with transaction.atomic():
        if replace_existing:
            AuthToken.objects.filter(user=user).delete()
        row, token = AuthToken.objects.create(user=user, expiry=knox_settings.TOKEN_TTL)
        surplus = list(AuthToken.objects.filter(user=user).order_by("-created", "-token_key")
                       .values_list("digest", flat=True)[settings.ECGDX_API_TOKENS_PER_USER:])
        if surplus:
            AuthToken.objects.filter(digest__in=surplus).delete()
    return IssuedToken(token, row.expiry)


def api_tokens_revoke(*, user) -> int:
    """Revoke every token of ``user``; how many there were."""
    deleted, _ = AuthToken.objects.filter(user=user).delete()
    return deleted


def api_token_list(*, user):
    """The user's tokens, newest first: when each was made and its first characters, never the token."""
    return AuthToken.objects.filter(user=user).order_by("-created")
