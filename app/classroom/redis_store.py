"""Classes in Valkey or Redis (``CNNLAB_REDIS_URL``): every process and host serving CNN Lab
sees the same classes, and a change made by one wakes the event streams of all.

Keys (app/backend.py's ``KEY`` prefix):

- ``cnnlab:class:<code>``, a hash: ``room`` (the Room as JSON, its students and question
  included), ``version`` (an integer, +1 on every ``update``) and ``active`` (the assistant's
  last sign of life, written by ``touch`` apart from the room so that it wakes no stream and
  costs no JSON; merged into ``Room.active`` on read);
- ``cnnlab:classes``, the set of open codes (``max_classes``, ``expire``).

``update`` reads the room under WATCH, applies the change in Python and writes it back with
the version + 1 and a PUBLISH of that version on ``cnnlab:wake:class:<code>`` in one
MULTI/EXEC (starting from a copy of the room this process parsed last when it is current); when another process changed the class in between, it starts again. Event
streams wait on that channel through this process's Hub (one pattern subscription per
process, not one per phone). Every key has a generous TTL, refreshed on write, so a crashed
deployment leaves nothing behind for long.

1,000 phones re-read the room after every step. ``get`` keeps the last room parsed per
class with its version, so a read costs one small script call (version and ``active``) and
parses the JSON once per process and version. ``peek``, for the event streams, does better:
the Hub tells the store the version each wake-up announces, so the first stream of a process
woken by a change reads the room and every other one reads it from memory, with no round
trip.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import redis

from cnnlab.app import backend
from cnnlab.app.classroom.access import new_code
from cnnlab.app.classroom.room import Room, room_from_json, room_to_json
from cnnlab.app.classroom.store import NoSuchClass, Subscription, is_over, too_many_classes
from cnnlab.app.settings import Settings

__all__ = ["RedisClassStore", "class_channel", "class_key"]

T = TypeVar("T")

CLASSES = backend.KEY + "classes"
# A class nobody has written to for this long is dropped by Valkey itself (the app ends idle
# classes long before: ``class_idle_seconds``); only a crashed deployment relies on it.
TTL_SECONDS = 24 * 3600
# Rooms parsed and kept per process (the classes it serves).
CACHED_ROOMS = 256
# An update that keeps losing the race gives up (a 503) after this many tries.
MAX_TRIES = 100


def class_key(code: str) -> str:
    return f"{backend.KEY}class:{code}"


def class_channel(code: str) -> str:
    return f"{backend.WAKE}class:{code}"


# KEYS: the classes' set, the class; ARGV: code, room JSON, max classes, TTL, active.
# -> 1 made, 0 the code is taken, -1 too many classes.
_CREATE = """
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], 'room', ARGV[2], 'version', 1, 'active', ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: the class; ARGV: the version this process has parsed ('' for none).
# -> nil (no such class), {version, active} (unchanged) or {version, active, room JSON}.
_READ = """
local v = redis.call('HMGET', KEYS[1], 'version', 'active')
if not v[1] then return false end
if v[1] == ARGV[1] then return {v[1], v[2] or ''} end
return {v[1], v[2] or '', redis.call('HGET', KEYS[1], 'room')}
"""

# KEYS: the class; ARGV: now, TTL. The assistant's sign of life: no version, no wake-up.
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local a = tonumber(redis.call('HGET', KEYS[1], 'active') or '0') or 0
if tonumber(ARGV[1]) > a then redis.call('HSET', KEYS[1], 'active', ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: the class, the classes' set; ARGV: code, channel, expected version and active
# ('' = end it whatever they are). -> 1 ended, 0 it changed meanwhile (kept).
_END = """
if ARGV[3] ~= '' then
  local v = redis.call('HMGET', KEYS[1], 'version', 'active')
  if v[1] and (v[1] ~= ARGV[3] or (v[2] or '') ~= ARGV[4]) then return 0 end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'end')
return 1
"""


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


class RedisClassStore:
    """``ClassStore`` on Valkey/Redis. ``hub`` (app/backend.py) carries the wake-ups of this
    process's event streams; without one, ``subscribe`` is not available."""

    # Ending idle classes reads every class: at most this often per process.
    sweep_seconds = 5.0

    def __init__(self, settings: Settings, hub: backend.Hub | None = None) -> None:
        self.client: redis.Redis = backend.client(settings)
        self.hub = hub
        self.ttl = max(TTL_SECONDS, int(2 * settings.class_idle_seconds))
        self._create = self.client.register_script(_CREATE)
        self._read = self.client.register_script(_READ)
        self._touch = self.client.register_script(_TOUCH)
        self._end = self.client.register_script(_END)
        self._rooms: OrderedDict[str, tuple[str, Room]] = OrderedDict()  # code -> (version, room)
        self._lock = threading.Lock()
        # The latest version of each class the Hub has announced (code -> version): while the
        # Hub is connected, a parsed room of that version is current without asking Valkey.
        self._announced: dict[str, str] = {}
        if hub is not None:
            hub.listen(class_channel(""), self._heard)

    def _heard(self, channel: str, data: bytes) -> None:
        """A wake-up of the Hub (on the event loop): remember the version it announces."""
        code = channel[len(class_channel("")):]
        if not code:  # the Hub reconnected: anything may have been missed
            self._announced.clear()
            return
        version = _text(data)
        if version.isdigit():
            self._announced[code] = version
        else:  # the class ended
            self._announced.pop(code, None)
            self._forget(code)

    # ------------------------------------------------------------------ the per-process cache

    def _cached(self, code: str) -> tuple[str, Room] | None:
        with self._lock:
            found = self._rooms.get(code)
            if found is not None:
                self._rooms.move_to_end(code)
            return found

    def _remember(self, code: str, version: str, room: Room) -> None:
        with self._lock:
            old = self._rooms.get(code)
            if old is not None and int(old[0]) > int(version):
                return  # a newer one was parsed meanwhile
            self._rooms[code] = (version, room)
            self._rooms.move_to_end(code)
            while len(self._rooms) > CACHED_ROOMS:
                self._rooms.popitem(last=False)

    def _forget(self, code: str) -> None:
        with self._lock:
            self._rooms.pop(code, None)

    def _parse(self, code: str, reply: list | None, cached: tuple[str, Room] | None) -> tuple[str, Room] | None:
        """A ``_READ`` reply -> (version, room) with ``active`` merged; None when gone."""
        if reply is None:
            self._forget(code)
            return None
        version, active = _text(reply[0]), _text(reply[1])
        if len(reply) > 2 and reply[2] is not None:
            room = room_from_json(reply[2])
            self._remember(code, version, room)
        elif cached is not None:
            room = cached[1]
        else:  # the room field is missing: a damaged key, as good as gone
            return None
        if active:
            room.active = max(room.active, float(active))
        return version, room

    # ------------------------------------------------------------------ ClassStore

    def create(self, secret_hash: str, now: float, max_classes: int) -> Room:
        while True:
            code = new_code()
            room = Room(code=code, secret_hash=secret_hash, created=now, active=now)
            made = self._create(keys=[CLASSES, class_key(code)],
                                args=[code, room_to_json(room), max_classes, self.ttl, repr(float(now))])
            if made == -1:
                raise too_many_classes()
            if made == 1:
                self._remember(code, "1", room)
                return room

    def peek(self, code: str) -> Room | None:
        cached = self._cached(code)
        if cached is not None and self._announced.get(code) == cached[0] and self.hub.connected.is_set():
            # The change every stream of this process was woken for was parsed by the first
            # of them: the others read it here, with no round trip (1,000 phones, one read).
            return cached[1]
        return self.get(code)

    def get(self, code: str) -> Room | None:
        cached = self._cached(code)
        found = self._parse(code, self._read(keys=[class_key(code)], args=[cached[0] if cached else ""]), cached)
        return None if found is None else found[1]

    def update(self, code: str, change: Callable[[Room], T]) -> T:
        key = class_key(code)
        with self.client.pipeline() as pipe:
            for tries in range(MAX_TRIES):
                try:
                    pipe.watch(key)
                    version, active = pipe.hmget(key, "version", "active")
                    cached = self._cached(code)
                    # The room this process parsed last, when it is still current; else read.
                    raw = None if cached is not None and cached[0] == _text(version) else pipe.hget(key, "room")
                    if version is None or (raw is None and cached is None):
                        self._forget(code)
                        raise NoSuchClass(code)
                    room = room_from_json(raw) if raw is not None else cached[1].copy()
                    if active:
                        room.active = max(room.active, float(active))
                    result = change(room)  # an exception here: UNWATCH, nothing written
                    new_version = str(int(version) + 1)
                    pipe.multi()
                    pipe.hset(key, mapping={"room": room_to_json(room), "version": new_version})
                    pipe.expire(key, self.ttl)
                    pipe.publish(class_channel(code), new_version)
                    pipe.execute()
                except redis.WatchError:  # another process changed it first: again
                    if tries >= 3:
                        time.sleep(random.uniform(0, 0.002 * tries))
                    continue
                self._remember(code, new_version, room)
                return result
        raise redis.exceptions.TimeoutError(f"class {code} changed too often to update")

    def touch(self, code: str, now: float) -> None:
        self._touch(keys=[class_key(code)], args=[repr(float(now)), self.ttl])

    def delete(self, code: str) -> None:
        self._end(keys=[class_key(code), CLASSES], args=[code, class_channel(code), "", ""])
        self._forget(code)

    def expire(self, now: float, idle_seconds: float, empty_seconds: float) -> list[str]:
        codes = sorted(_text(c) for c in self.client.smembers(CLASSES))
        if not codes:
            return []
        cached = [self._cached(code) for code in codes]
        with self.client.pipeline(transaction=False) as pipe:
            for code, old in zip(codes, cached, strict=True):
                self._read(keys=[class_key(code)], args=[old[0] if old else ""], client=pipe)
            replies = pipe.execute()
        gone = []
        for code, old, reply in zip(codes, cached, replies, strict=True):
            found = self._parse(code, reply, old)
            if found is not None and not is_over(found[1], now, idle_seconds, empty_seconds):
                continue
            # Ended only if nothing changed since it was read (a student arrived, a request).
            version, active = (_text(reply[0]), _text(reply[1])) if found is not None else ("", "")
            if self._end(keys=[class_key(code), CLASSES], args=[code, class_channel(code), version, active]):
                self._forget(code)
                if found is not None:
                    gone.append(code)
        self.client.expire(CLASSES, self.ttl)
        return gone

    def subscribe(self, code: str) -> Subscription:
        if self.hub is None:
            raise RuntimeError("RedisClassStore.subscribe needs the app's Hub")
        return self.hub.subscribe(class_channel(code))
