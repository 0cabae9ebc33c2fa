"""Where classes live: ``ClassStore``, a small interface with two implementations, chosen once
per app by ``store_for``:

- ``MemoryClassStore``: this process's memory (the default: ``cnnlab`` runs one process);
- ``RedisClassStore`` (app/classroom/redis_store.py): Valkey or Redis, when
  ``CNNLAB_REDIS_URL`` is set, so that several processes and hosts serve the same classes.

Every change goes through ``ClassStore.update``, which applies a function to the room
atomically and then wakes every event stream of that class (``ClassStore.subscribe``); a
stream then reads the room and sends what changed. The routes never ask which store they have.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from cnnlab.app.appstate import shared
from cnnlab.app.backend import Wakeup
from cnnlab.app.classroom.access import new_code
from cnnlab.app.classroom.room import Room
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.settings import settings_for

__all__ = ["ClassStore", "MemoryClassStore", "NoSuchClass", "Subscription", "store_for", "too_many_classes",
           "update_class"]

T = TypeVar("T")


class Subscription(Protocol):
    async def wait(self, timeout: float) -> bool:
        """True when the class changed since the last wait, False after ``timeout`` seconds."""

    def close(self) -> None: ...


class ClassStore(Protocol):
    """Where classes live. ``get`` returns a room to read (never to change); every change is
    ``update(code, change)``, atomic, which then wakes the class's subscribers."""

    # ``store_for`` ends idle classes (``expire``) at most this often per process.
    sweep_seconds: float

    def create(self, secret_hash: str, now: float, max_classes: int) -> Room:
        """A new class with a fresh code; a 503 ``InputError`` when ``max_classes`` run already."""

    def get(self, code: str) -> Room | None:
        """The class, or None (no such code, or it has ended)."""

    def peek(self, code: str) -> Room | None:
        """``get`` for an event stream just woken by this store: may return the room of the
        change it was woken for a moment before ``get`` would see a newer one."""

    def update(self, code: str, change: Callable[[Room], T]) -> T:
        """Apply ``change`` to the class atomically and return its result, then wake every
        subscriber of the class. ``NoSuchClass`` when it has ended; an exception raised by
        ``change`` leaves the class as it was (``change`` checks before it writes)."""

    def touch(self, code: str, now: float) -> None:
        """The assistant is still there (wakes no stream)."""

    def delete(self, code: str) -> None:
        """End the class; its subscribers wake and find it gone."""

    def expire(self, now: float, idle_seconds: float, empty_seconds: float) -> list[str]:
        """End every class whose assistant has been silent longer than ``idle_seconds``, or
        where nobody has been (``Room.quiet_since``) for ``empty_seconds``."""

    def subscribe(self, code: str) -> Subscription:
        """Wake-ups for one event stream (call from the event loop; ``close`` it at the end)."""


class NoSuchClass(LookupError):
    """The class has ended (or never existed)."""


def too_many_classes() -> InputError:
    return InputError(_("Too many classes are running on this server. Please try again later."), status_code=503)


def is_over(room: Room, now: float, idle_seconds: float, empty_seconds: float) -> bool:
    """Whether ``expire`` ends this class now."""
    quiet = room.quiet_since()
    return now - room.active > idle_seconds or (quiet is not None and now - quiet > empty_seconds)


# ============================================================================== in this process


class MemoryClassStore:
    """Classes in this process's memory: enough for one server process (``cnnlab`` runs one)."""

    sweep_seconds = 1.0

    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}
        self._subs: dict[str, set[Wakeup]] = {}
        self._lock = threading.Lock()

    def create(self, secret_hash: str, now: float, max_classes: int) -> Room:
        with self._lock:
            if len(self._rooms) >= max_classes:
                raise too_many_classes()
            while True:
                code = new_code()
                if code not in self._rooms:
                    break
            room = self._rooms[code] = Room(code=code, secret_hash=secret_hash, created=now, active=now)
            return room

    def get(self, code: str) -> Room | None:
        return self._rooms.get(code)

    peek = get

    def update(self, code: str, change: Callable[[Room], T]) -> T:
        # The change is made on a copy, put in place when it succeeds: an exception leaves the
        # class as it was, and a room returned by ``get`` never changes under its reader.
        with self._lock:
            room = self._rooms.get(code)
            if room is None:
                raise NoSuchClass(code)
            new = room.copy()
            result = change(new)
            self._rooms[code] = new
            subs = list(self._subs.get(code, ()))
        for sub in subs:
            sub.wake()
        return result

    def touch(self, code: str, now: float) -> None:
        with self._lock:
            room = self._rooms.get(code)
            if room is not None and now > room.active:
                room = self._rooms[code] = room.copy()
                room.active = now

    def delete(self, code: str) -> None:
        with self._lock:
            self._rooms.pop(code, None)
            subs = list(self._subs.get(code, ()))
        for sub in subs:
            sub.wake()

    def expire(self, now: float, idle_seconds: float, empty_seconds: float) -> list[str]:
        with self._lock:
            gone = [code for code, room in self._rooms.items() if is_over(room, now, idle_seconds, empty_seconds)]
        for code in gone:
            self.delete(code)
        return gone

    def subscribe(self, code: str) -> Subscription:
        waker = Wakeup(code, self._unsubscribe)
        with self._lock:
            self._subs.setdefault(code, set()).add(waker)
        return waker

    def _unsubscribe(self, waker: Wakeup) -> None:
        with self._lock:
            subs = self._subs.get(waker.channel)
            if subs is not None:
                subs.discard(waker)
                if not subs:
                    del self._subs[waker.channel]


# ============================================================================== the app's store


def _make_store(app) -> ClassStore:
    """Valkey/Redis when the app has a shared engine, else this process's memory."""
    from cnnlab.app import backend

    settings = settings_for(app)
    if backend.redis_url(settings) is None:
        return MemoryClassStore()
    from cnnlab.app.classroom.redis_store import RedisClassStore

    return RedisClassStore(settings, backend.hub_for(app))


_last_sweep: dict[int, float] = {}


def store_for(request_or_app) -> ClassStore:
    """The app's class store (chosen on first use), after ending classes idle too long (at
    most every ``store.sweep_seconds`` in this process)."""
    app = getattr(request_or_app, "app", request_or_app)
    store = shared(app, "classes", lambda: _make_store(app))
    now = time.time()
    settings = settings_for(app)
    every = store.sweep_seconds
    last = _last_sweep.get(id(store), 0.0)
    if not 0 <= now - last < every or min(settings.class_idle_seconds, settings.class_empty_seconds) < every:
        _last_sweep[id(store)] = now
        store.expire(now, settings.class_idle_seconds, settings.class_empty_seconds)
    return store


def update_class(request_or_app, code: str, change: Callable[[Room], T]) -> T:
    """``update`` of the app's store, for a route: a 404 with a sentence when the class has ended."""
    try:
        return store_for(request_or_app).update(code, change)
    except NoSuchClass:
        raise InputError(_("This class has ended."), status_code=404) from None
