"""Attempt limits for sign-in and token creation, per user name and per client address.

Each limit counts attempts in a window that starts with the first attempt and lasts
``window_seconds``; the attempt that goes over either count is refused, and so is every later one
until that window ends. ``seconds_left`` of a refusal is exactly that wait (the ``Retry-After``).

Counters live in the default cache, shared by every worker when the cache is (production uses a
file cache). They are counted before the password is checked, so a burst of parallel guesses cannot
slip past the limit; a successful sign-in gives its attempts back (``attempt_refunded``), so
people who mistype now and then are never locked out.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache


@dataclass(frozen=True)
class AttemptLimit:
    scope: str
    per_user: int
    per_address: int
    window_seconds: int


def sign_in_limit() -> AttemptLimit:
    return AttemptLimit("sign-in", settings.ECGDX_SIGN_IN_LIMIT_PER_USER, settings.ECGDX_SIGN_IN_LIMIT_PER_ADDRESS,
                        settings.ECGDX_SIGN_IN_WINDOW_SECONDS)


def token_create_limit() -> AttemptLimit:
    return AttemptLimit("token-create", settings.ECGDX_TOKEN_CREATE_LIMIT_PER_USER,
                        settings.ECGDX_TOKEN_CREATE_LIMIT_PER_ADDRESS, settings.ECGDX_TOKEN_CREATE_WINDOW_SECONDS)


@dataclass(frozen=True)
class Refusal:
    seconds_left: int

    @property
    def wait_text(self) -> str:
        minutes = math.ceil(self.seconds_left / 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"


def attempt_counted(limit: AttemptLimit, *, username: str, client_ip: str | None) -> Refusal | None:
    """Count one attempt; a Refusal when it is over the user's or the address's limit, else None."""
    now = time.time()
    waits = []
    for key, allowed in _counters(limit, username=username, client_ip=client_ip):
        count, started = _increment(key, limit.window_seconds, now)
        if count > allowed:
            waits.append(max(1, math.ceil(started + limit.window_seconds - now)))
    return Refusal(max(waits)) if waits else None


def attempt_refunded(limit: AttemptLimit, *, username: str, client_ip: str | None) -> None:
    """Give back an attempt that succeeded: forget the user's count, take one off the address's."""
    (user_key, _), (address_key, _) = _counters(limit, username=username, client_ip=client_ip)
    cache.delete_many([user_key, user_key + ":started"])
    try:
        if cache.decr(address_key) < 0:
            cache.set(address_key, 0, timeout=limit.window_seconds)
    except ValueError:  # expired meanwhile: nothing to give back
        pass


def _counters(limit: AttemptLimit, *, username: str, client_ip: str | None) -> list[tuple[str, int]]:
    # Case-folded, so 'Alice' and 'ALICE' share one count; hashed, so any text makes a valid cache key.
    user = hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]
    address = hashlib.sha256((client_ip or "unknown").encode()).hexdigest()[:32]
    return [(f"ecgdx:{limit.scope}:user:{user}", limit.per_user),
            (f"ecgdx:{limit.scope}:address:{address}", limit.per_address)]


def _increment(key: str, window: int, now: float) -> tuple[int, float]:
    """(attempts so far in the window, when the window started)."""
    if cache.add(key, 0, timeout=window):
        cache.set(key + ":started", now, timeout=window)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr: a new window
        cache.set(key, 1, timeout=window)
        cache.set(key + ":started", now, timeout=window)
        count = 1
    return count, float(cache.get(key + ":started", now))
