"""Per-session rate limits: a token bucket per (action, session id), kept in memory.

``limit(request, "uploads")`` spends one token of the session's bucket for that action, or
raises ``InputError`` with status 429 and a friendly sentence in the request's language.
The rates are settings (``CNNLAB_RATE_<ACTION>_PER_MINUTE`` and ``..._BURST``), so an
operator can loosen them for a large room behind one address.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from starlette.requests import Request

from app.errors import InputError
from app.i18n import gettext as _
from app.session import session_id
from app.settings import settings_for

__all__ = ["ACTIONS", "TokenBucket", "limit"]

# A bucket that has been full this long is forgotten, so the table cannot grow without bound.
_IDLE_SECONDS = 600.0
_SWEEP_EVERY = 1024


@dataclass
class TokenBucket:
    """``burst`` actions at once, then ``per_minute`` a minute on average."""

    per_minute: float
    burst: int
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> float:
        """Spend one token: 0.0 when allowed, otherwise the seconds until one is back."""
        if self.tokens < 0:
            self.tokens, self.stamp = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.per_minute / 60.0)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) * 60.0 / self.per_minute


# The limited actions; each has a ``rate_<action>_per_minute`` and ``rate_<action>_burst`` setting.
ACTIONS = ("uploads", "trainings", "answers")

_buckets: dict[tuple[str, str], TokenBucket] = {}
_lock = threading.Lock()
_calls = 0


def _sweep(now: float) -> None:
    for key in [key for key, bucket in _buckets.items() if now - bucket.stamp > _IDLE_SECONDS]:
        del _buckets[key]


def limit(request: Request, action: str) -> None:
    """Count one ``action`` for the request's session; raise a 429 ``InputError`` past the limit."""
    global _calls
    if action not in ACTIONS:
        raise ValueError(f"unknown rate-limited action {action!r}")
    settings = settings_for(request.app)
    per_minute = getattr(settings, f"rate_{action}_per_minute")
    burst = getattr(settings, f"rate_{action}_burst")
    key = (action, session_id(request))
    now = time.monotonic()
    with _lock:
        _calls += 1
        if _calls % _SWEEP_EVERY == 0:
            _sweep(now)
        bucket = _buckets.get(key)
        if bucket is None or bucket.per_minute != per_minute or bucket.burst != burst:
            bucket = _buckets[key] = TokenBucket(per_minute, burst)
        wait = bucket.take(now)
    if wait > 0:
        raise InputError(
            _("Too many requests in a short time. Please wait %(seconds)d seconds and try again.")
            % {"seconds": max(1, round(wait))},
            status_code=429,
        )
