"""The shared engine (Valkey or Redis) when CNN Lab runs as several processes or hosts.

Without ``CNNLAB_REDIS_URL`` nothing here is used: classes, limits and jobs live in the
server's own process (the default, ``pip install . && cnnlab``). With it, each shared part
(the class store, the rate limits, the job queue) picks its Valkey implementation once, at
start-up, behind the same interface as its in-process one (README, "Running for a whole
course"):

    client(settings)            a redis-py client, one per URL and process, short timeouts
    hub_for(app)                this process's pub/sub: ONE pattern subscription to
                                ``cnnlab:wake:*``, shared by every event stream it serves
    publish(settings, channel, data)

Wake-ups: whoever changes shared state publishes on ``cnnlab:wake:<kind>:<id>`` (a class, a
job); the Hub hands the message to the local waiters of that channel, which then re-read
the state from Valkey. A message says "look again", never what changed, so a lost one only
delays: after a reconnect the Hub wakes every waiter, and waiters also look again at least
every heartbeat.

Why both redis-py APIs: routes and the stores they call are synchronous (a store call is a
fraction of a millisecond), while listening is a long-lived coroutine on the server's event
loop (``redis.asyncio``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis

from cnnlab.app.appstate import shared
from cnnlab.app.settings import Settings, settings_for

__all__ = ["KEY", "WAKE", "Hub", "SharedStoreDown", "Wakeup", "client", "hub_for", "publish", "redis_url",
           "start_hub"]

log = logging.getLogger(__name__)

KEY = "cnnlab:"
WAKE = KEY + "wake:"
# A request must never hang on a missing server: connecting and each reply are short (a
# reply takes well under a millisecond when the server is well).
CONNECT_TIMEOUT_SECONDS = 1.0
REPLY_TIMEOUT_SECONDS = 1.0
# After a timeout, calls fail at once for this long instead of each waiting a timeout: a
# server that hangs (accepts, never answers) would otherwise hold every request, and the
# event loop with them, for REPLY_TIMEOUT_SECONDS each.
FAIL_FAST_SECONDS = 2.0
# The Hub retries a lost connection this often.
RECONNECT_SECONDS = 0.5

# What a call raises while Valkey cannot be reached (app/errors.py answers a 503).
SharedStoreDown = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def redis_url(settings: Settings) -> str | None:
    """The shared engine's URL, or None: everything in this process (the default)."""
    return settings.redis_url or None


class _FailFast:
    """When the server last timed out (monotonic), shared by every connection of the process."""

    until = 0.0

    @classmethod
    def check(cls) -> None:
        if time.monotonic() < cls.until:
            raise redis.exceptions.ConnectionError("the shared store timed out a moment ago")

    @classmethod
    def trip(cls) -> None:
        cls.until = time.monotonic() + FAIL_FAST_SECONDS


class _Connection(redis.Connection):
    """A connection that fails at once while the server is known to hang (``_FailFast``)."""

    def send_packed_command(self, command, check_health=True):
        _FailFast.check()
        try:
            return super().send_packed_command(command, check_health)
        except redis.exceptions.TimeoutError:
            _FailFast.trip()
            raise

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)
        except redis.exceptions.TimeoutError:
            _FailFast.trip()
            raise


def _options() -> dict[str, Any]:
    return {"socket_connect_timeout": CONNECT_TIMEOUT_SECONDS, "socket_timeout": REPLY_TIMEOUT_SECONDS,
            "health_check_interval": 30, "connection_class": _Connection}


def client(settings: Settings) -> redis.Redis:
    """A synchronous client of ``settings.redis_url`` (thread-safe: a connection pool)."""
    url = redis_url(settings)
    if url is None:
        raise RuntimeError("CNNLAB_REDIS_URL is not set")
    with _clients_lock:
        found = _clients.get(url)
        if found is None:
            found = _clients[url] = redis.Redis.from_url(url, **_options())
        return found


def publish(settings: Settings, channel: str, data: str | bytes | int = b"") -> None:
    client(settings).publish(channel, data)


class Wakeup:
    """One event stream's wake-up call (a ``Subscription``): an asyncio.Event of the stream's
    loop, set from any thread or loop by ``wake()``; ``close()`` tells its owner (the Hub, or
    the in-process class store) to forget it."""

    def __init__(self, channel: str, on_close: Callable[[Wakeup], None]) -> None:
        self.channel, self._on_close = channel, on_close
        self.event = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def wake(self) -> None:
        if self.loop is _running_loop():
            self.event.set()
        else:  # woken from another thread or loop (tests run a live server and a TestClient)
            self.loop.call_soon_threadsafe(self.event.set)

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            return False
        self.event.clear()
        return True

    def close(self) -> None:
        self._on_close(self)


class Hub:
    """This process's one pub/sub connection (see the module docstring).

    ``subscribe(channel)`` and ``listen(prefix, callback)`` are called on the event loop the
    Hub runs on; ``run()`` is its listening task (started by the app's lifespan, ended by
    cancelling it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._waiters: dict[str, set[Wakeup]] = {}
        self._listeners: list[tuple[str, Callable[[str, bytes], None]]] = []
        self.connected = asyncio.Event()
        self.messages = 0  # received, for tests and benchmarks
        self.task: asyncio.Task | None = None

    def subscribe(self, channel: str) -> Wakeup:
        waiter = Wakeup(channel, self._drop)
        self._waiters.setdefault(channel, set()).add(waiter)
        return waiter

    def _drop(self, waiter: Wakeup) -> None:
        waiters = self._waiters.get(waiter.channel)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[waiter.channel]

    def listen(self, prefix: str, callback: Callable[[str, bytes], None]) -> None:
        self._listeners.append((prefix, callback))

    def _deliver(self, channel: str, data: bytes) -> None:
        self.messages += 1
        for waiter in list(self._waiters.get(channel, ())):
            waiter.wake()
        for prefix, callback in self._listeners:
            if channel.startswith(prefix):
                try:
                    callback(channel, data)
                except Exception:  # one listener's failure must not stop the others' wake-ups
                    log.exception("pub/sub listener for %s failed", prefix)

    def _wake_all(self) -> None:
        for waiters in list(self._waiters.values()):
            for waiter in list(waiters):
                waiter.wake()
        for prefix, callback in self._listeners:
            try:
                callback(prefix, b"")  # "look again": something may have been missed
            except Exception:
                log.exception("pub/sub listener for %s failed", prefix)

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after a lost connection."""
        first = True
        while True:
            conn = aioredis.Redis.from_url(self.url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS)
            pubsub = conn.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(WAKE + "*")
                self.connected.set()
                if not first:
                    self._wake_all()
                first = False
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None and message["type"] == "pmessage":
                        channel = message["channel"]
                        self._deliver(channel.decode() if isinstance(channel, bytes) else channel,
                                      message["data"] or b"")
            except SharedStoreDown:
                if self.connected.is_set():
                    log.warning("lost the connection to the shared store; retrying")
                self.connected.clear()
                first = False
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                try:
                    await pubsub.aclose()
                    await conn.aclose()
                except Exception:  # the connection is gone anyway
                    pass


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def hub_for(app: Any) -> Hub:
    """The app's Hub (made on first use; ``start_hub`` runs it)."""
    return shared(app, "hub", lambda: Hub(redis_url(settings_for(app))))


def start_hub(app: Any) -> asyncio.Task | None:
    """In the lifespan: start the Hub's task when a shared engine is set, else None."""
    if redis_url(settings_for(app)) is None:
        return None
    hub = hub_for(app)
    if hub.task is not None and not hub.task.done():  # a second lifespan of the same app (tests)
        return None
    hub.task = asyncio.create_task(hub.run(), name="cnnlab-hub")
    return hub.task
