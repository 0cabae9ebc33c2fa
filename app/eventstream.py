"""Server-sent events: the one helper behind every live stream (a class's, a training's).

    return event_stream(request, produce, farewell)

``produce(last_id)`` is an async generator of ``Event``s: what the screen needs, when it
changes. ``last_id`` is the browser's ``Last-Event-ID`` (the ``id`` of the last event it got
before its connection dropped), so a producer can resume instead of starting over.
``farewell()`` is the last event a screen gets when the server stops. The helper adds what
every stream needs:

- **caps**: at most ``max_streams_per_address`` open streams per client address and
  ``max_streams_per_session`` per browser session; past them the answer is 429 with a
  message, before anything streams;
- **reconnects**: a ``retry:`` line, so a dropped stream is tried again after 2 s;
- **heartbeats**: a comment line after ``HEARTBEAT_SECONDS`` without an event, so proxies
  keep a quiet stream open and a closed tab is noticed (writing to it fails);
- **disconnects**: Starlette cancels the stream when the browser goes; the producer's
  ``finally`` runs then, whether it was waiting or not;
- **the shared store going away** (Valkey/Redis, app/backend.py): the stream ends without a
  trace in the log; the browser reconnects and gets a 503 with a message until it is back;
- **shutdown**: ``stop_streams(app)`` (cnnlab's server calls it on SIGTERM or Ctrl-C) ends
  every stream at once with its ``farewell``, so the server exits in moments instead of
  waiting for screens that never close, and the screens say that it stopped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import StreamingResponse

from cnnlab.app.appstate import shared
from cnnlab.app.backend import SharedStoreDown
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.ratelimit import address_key
from cnnlab.app.settings import settings_for

__all__ = ["Event", "event_stream", "stop_streams", "HEARTBEAT_SECONDS"]

log = logging.getLogger(__name__)

# A comment line this often keeps proxies and the browser from closing a quiet stream.
HEARTBEAT_SECONDS = 15.0
# A browser tries a dropped stream again after this long.
RETRY_MS = 2000


@dataclass(frozen=True)
class Event:
    name: str
    data: str
    id: str | None = None

    def encode(self) -> str:
        return _encode(self.name, self.data, self.id)


@functools.lru_cache(maxsize=64)
def _encode(name: str, data: str, id: str | None) -> str:
    """An event's text. Kept for the last few events: every screen of a class gets the same
    ones (a step's stepper is ~20 KB of HTML: 1,000 phones, one encoding per process)."""
    lines = data.splitlines() or [""]
    head = f"id: {id}\n" if id is not None else ""
    return head + f"event: {name}\ndata: " + "\ndata: ".join(lines) + "\n\n"


@dataclass(eq=False)
class _Open:
    """One open stream: whose it is, and how to tell it the server is stopping."""

    address: str
    session: str | None
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event


class _Streams:
    """The app's open streams, counted per address and session (any thread may ask)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[_Open] = set()
        self._by_address: Counter[str] = Counter()
        self._by_session: Counter[str] = Counter()
        self.stopping = False

    def open(self, request: Request, session: str | None) -> _Open:
        settings = settings_for(request.app)
        address = address_key(request)  # as every per-address limit counts it (IPv6 by /64)
        handle = _Open(address, session, asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if self._by_address[address] >= settings.max_streams_per_address:
                raise InputError(_("Too many live pages are open from your network (%(n)s at most). Close a few "
                                   "CNN Lab tabs, then reload this page.") % {"n": settings.max_streams_per_address},
                                 status_code=429)
            if session is not None and self._by_session[session] >= settings.max_streams_per_session:
                raise InputError(_("Too many live pages are open in this browser (%(n)s at most). Close a few "
                                   "CNN Lab tabs, then reload this page.") % {"n": settings.max_streams_per_session},
                                 status_code=429)
            self._open.add(handle)
            self._by_address[address] += 1
            if session is not None:
                self._by_session[session] += 1
            if self.stopping:
                handle.stop.set()
        return handle

    def close(self, handle: _Open) -> None:
        with self._lock:
            if handle not in self._open:
                return
            self._open.discard(handle)
            for counter, key in ((self._by_address, handle.address), (self._by_session, handle.session)):
                if key is not None:
                    counter[key] -= 1
                    if counter[key] <= 0:
                        del counter[key]

    def stop_all(self) -> None:
        with self._lock:
            self.stopping = True
            handles = list(self._open)
        for handle in handles:
            handle.loop.call_soon_threadsafe(handle.stop.set)


def _streams(app: FastAPI) -> _Streams:
    return shared(app, "event_streams", _Streams)


def stop_streams(app: FastAPI) -> None:
    """The server is stopping: every open stream sends its farewell and ends now, and any
    stream opened from now on does so at once."""
    _streams(app).stop_all()


async def _relay(handle: _Open, events: AsyncIterator[Event], farewell: Callable[[], Event]) -> AsyncIterator[str]:
    """The stream's text: the producer's events, heartbeats between them, the farewell at a stop.

    The producer runs in a task of its own, so a producer waiting (for a change in the class,
    for the next records of a training) can be interrupted by a heartbeat or by the stop.
    """
    pending: asyncio.Future | None = None
    stopped = asyncio.ensure_future(handle.stop.wait())
    try:
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            finished, _waiting = await asyncio.wait({pending, stopped}, timeout=HEARTBEAT_SECONDS,
                                                    return_when=asyncio.FIRST_COMPLETED)
            if stopped in finished:
                yield farewell().encode()
                return
            if pending not in finished:
                yield ": heartbeat\n\n"
                continue
            future, pending = pending, None
            try:
                event = future.result()
            except StopAsyncIteration:
                return
            except SharedStoreDown:
                # Valkey went away mid-stream: end it quietly; the browser reconnects in
                # RETRY_MS and is told (a 503) until it is back.
                log.warning("an event stream ended: the shared store is not answering")
                return
            yield event.encode()
    finally:
        stopped.cancel()
        if pending is not None:
            # The producer is inside its task: cancelling it runs its ``finally`` there.
            pending.cancel()
        else:
            # Suspended at a ``yield`` (or done): closing it runs its ``finally`` here.
            await events.aclose()


class _EventResponse(StreamingResponse):
    """Gives the stream's place back however the response ends (even if it never started)."""

    def __init__(self, body: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self._release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def event_stream(request: Request, produce: Callable[[str | None], AsyncIterator[Event]],
                 farewell: Callable[[], Event], *, session: str | None = None) -> StreamingResponse:
    """A ``text/event-stream`` response of ``produce``'s events (see the module docstring).

    Raises a 429 ``InputError`` when the client address or ``session`` has too many streams
    open already. The producer starts only once the response does."""
    streams = _streams(request.app)
    handle = streams.open(request, session)
    body = _relay(handle, produce(request.headers.get("last-event-id")), farewell)
    return _EventResponse(body, lambda: streams.close(handle))
