"""Rate limits, per browser session and per client address, on the ``limits`` library.

Two layers, one rule each: ``burst`` actions in any window of ``burst · 60 / per_minute``
seconds (a moving window, so the average is ``per_minute`` and a burst is never more than
``burst``). Past either, the answer is a 429 ``InputError`` saying, in the request's language,
how many seconds to wait.

- ``limit(request, action)`` counts one action for the session *and* for the client's address
  (``app/clientaddr.py``): a script that drops its cookie gets a new session each time, but
  not a new address. Settings: ``rate_<action>_per_minute`` / ``_burst`` (the session) and
  ``rate_address_<action>_per_minute`` / ``_burst`` (the address).
- ``limit_address(request, action, scope=...)`` counts for the address only (classes started,
  seats taken, event streams…): any action with ``rate_address_<action>_…`` settings.
- ``address_waits(request, action)`` / ``hit_address`` split a check from its count, for a
  limit on failures: refuse while the address is over it, count only what failed.

The address settings are sized for a whole class behind one campus NAT (README, "Operator
settings"). The counters live in this process (``limits``' MemoryStorage), or, with
``CNNLAB_REDIS_URL`` set, in Valkey (``limits``' RedisStorage on the client of
app/backend.py), so every web process of a course counts against the same limits. The
choice is made once per URL (``limiter_for``); the rules and the answers are the same.
"""

from __future__ import annotations

import math
import threading
from ipaddress import IPv6Address, ip_address

import limits.storage.memory as memory_storage
import limits.storage.redis as redis_storage
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter
from starlette.requests import HTTPConnection

from cnnlab.app import backend
from cnnlab.app.clientaddr import client_address
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.session import session_id
from cnnlab.app.settings import Settings, settings_for

__all__ = ["ACTIONS", "RateLimiter", "address_key", "address_waits", "hit_address", "limit", "limit_address",
           "limiter_for", "reset", "too_many"]

# The actions limited per session as well as per address (``limit``).
ACTIONS = ("uploads", "trainings", "answers")


class RateLimiter:
    """``burst`` hits per key in any window of ``burst · 60 / per_minute`` seconds."""

    def __init__(self, storage: Storage | None = None) -> None:
        self._limiter = MovingWindowRateLimiter(storage or MemoryStorage())

    @classmethod
    def shared(cls, settings: Settings) -> RateLimiter:
        """Counters in the shared engine of ``settings`` (Valkey), on app/backend.py's client:
        its short timeouts, and a 503 while it cannot be reached (app/errors.py)."""
        pool = backend.client(settings).connection_pool
        # Keys ``cnnlab:limits:LIMITER/...``; nothing is sent before the first hit.
        return cls(RedisStorage(backend.redis_url(settings) or "", connection_pool=pool,
                                key_prefix=backend.KEY + "limits"))

    @staticmethod
    def _item(per_minute: float, burst: int) -> RateLimitItemPerSecond:
        window = max(1, math.ceil(burst * 60.0 / per_minute))  # the storage counts whole seconds
        return RateLimitItemPerSecond(burst, window)

    def hit(self, key: str, per_minute: float, burst: int) -> float:
        """Count one hit: 0.0 when allowed, otherwise the seconds until one is allowed again
        (a refused hit is not counted)."""
        item = self._item(per_minute, burst)
        if self._limiter.hit(item, key):
            return 0.0
        return self._wait(item, key)

    def waits(self, key: str, per_minute: float, burst: int) -> float:
        """Like ``hit``, without counting: 0.0 while a hit would be allowed."""
        item = self._item(per_minute, burst)
        return 0.0 if self._limiter.test(item, key) else self._wait(item, key)

    def _wait(self, item: RateLimitItemPerSecond, key: str) -> float:
        reset_at = self._limiter.get_window_stats(item, key).reset_time
        # The storage's own clock (wall-clock time in both), so a test that moves it moves
        # this too. Never 0: refused.
        clock = memory_storage.time if isinstance(self._limiter.storage, MemoryStorage) else redis_storage.time
        return max(1e-3, reset_at - clock.time())

    def clear(self) -> None:
        self._limiter.storage.reset()


_limiter = RateLimiter()  # in this process: the default
_shared: dict[str, RateLimiter] = {}  # one per shared engine's URL
_shared_lock = threading.Lock()


def limiter_for(settings: Settings) -> RateLimiter:
    """The counters ``settings`` use: this process's, or the shared engine's."""
    url = backend.redis_url(settings)
    if url is None:
        return _limiter
    with _shared_lock:
        found = _shared.get(url)
        if found is None:
            found = _shared[url] = RateLimiter.shared(settings)
        return found


def reset() -> None:
    """Forget every count (tests start from nothing): this process's, and those kept in each
    shared engine used so far that is still there."""
    _limiter.clear()
    with _shared_lock:
        shared = list(_shared.values())
        _shared.clear()
    for limiter in shared:
        try:
            limiter.clear()
        except backend.SharedStoreDown:  # a test's engine that is gone: nothing to forget
            pass


def _rates(settings: Settings, prefix: str, action: str) -> tuple[float, int]:
    try:
        return getattr(settings, f"{prefix}{action}_per_minute"), getattr(settings, f"{prefix}{action}_burst")
    except AttributeError:
        raise ValueError(f"unknown rate-limited action {action!r}") from None


def address_key(conn: HTTPConnection) -> str:
    """The client's address as a limit counts it: an IPv6 client by its /64, the block one
    home or phone gets (a host picks any address inside it at will)."""
    address = client_address(conn.scope, settings_for(conn.app).trusted_proxies)
    try:
        ip = ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{IPv6Address(int(ip) >> 64 << 64)}/64"
    return str(ip)


def too_many(wait: float) -> InputError:
    """The 429 past a limit: wait ``wait`` seconds, said in the request's language."""
    seconds = max(1, math.ceil(wait - 1e-6))
    return InputError(
        _("Too many requests in a short time. Please wait %(seconds)d seconds and try again.")
        % {"seconds": seconds},
        status_code=429,
        headers={"Retry-After": str(seconds)},  # what a page's script and any client read
    )


def _address_hit(conn: HTTPConnection, action: str, scope: str, count: bool) -> float:
    settings = settings_for(conn.app)
    per_minute, burst = _rates(settings, "rate_address_", action)
    key = f"address:{action}:{scope}:{address_key(conn)}"
    limiter = limiter_for(settings)
    return limiter.hit(key, per_minute, burst) if count else limiter.waits(key, per_minute, burst)


def limit(request: HTTPConnection, action: str) -> None:
    """Count one ``action`` for the request's session and its address; a 429 past either."""
    if action not in ACTIONS:
        raise ValueError(f"unknown rate-limited action {action!r}")
    settings = settings_for(request.app)
    per_minute, burst = _rates(settings, "rate_", action)
    limiter = limiter_for(settings)
    session = f"session:{action}:{session_id(request)}"
    # A refused request spends nothing: a session over its own limit does not use up its
    # address's (a whole room's), nor a room over the address limit a session's.
    wait = limiter.waits(session, per_minute, burst) or _address_hit(request, action, "", count=True)
    if not wait:
        wait = limiter.hit(session, per_minute, burst)
    if wait:
        raise too_many(wait)


def limit_address(conn: HTTPConnection, action: str, scope: str = "") -> None:
    """Count one ``action`` for the client's address (within ``scope``, e.g. one class); a
    429 past the ``rate_address_<action>_…`` settings. Works on any HTTP or WebSocket
    connection, e.g. an event stream before it starts."""
    wait = _address_hit(conn, action, scope, count=True)
    if wait:
        raise too_many(wait)


def address_waits(conn: HTTPConnection, action: str, scope: str = "") -> None:
    """A 429 while the address is over its ``action`` limit; counts nothing."""
    wait = _address_hit(conn, action, scope, count=False)
    if wait:
        raise too_many(wait)


def hit_address(conn: HTTPConnection, action: str, scope: str = "") -> None:
    """Count one ``action`` for the address (a failure to remember; see ``address_waits``)."""
    _address_hit(conn, action, scope, count=True)
