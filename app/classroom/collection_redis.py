"""Collections in Valkey or Redis (``CNNLAB_REDIS_URL``): every process sees the same
collection, and two phones drawing at once through two processes never lose a drawing nor
pass a cap.

Keys (app/backend.py's ``KEY`` prefix):

- ``cnnlab:coll:<code>``, a hash: ``meta`` (the Collection as JSON, without its drawings),
  ``v`` (its version, ``<opened>:<seq>``, rewritten by every change) and ``ids:<student>``
  (that student's drawing ids still there, space-separated: what ``undo`` takes back);
- ``cnnlab:coll:<code>:d``, a hash: drawing id -> the Drawing as JSON (grid in base64);
- ``cnnlab:collections``, a sorted set: code -> when it was opened (the sweep of
  collection_store.py).

Every change reads under WATCH of ``cnnlab:coll:<code>``, checks and applies it in Python
(the rules of collection.py, shared with the memory store) and writes it back in one
MULTI/EXEC; when another process changed the collection in between, it starts again. Every
change writes the ``cnnlab:coll:<code>`` hash, so watching it alone guards the drawings too.
Both keys have the class keys' TTL, refreshed on write.

``get`` keeps the last collection parsed per code with its version: a read costs one small
script call, and the JSON is parsed once per process and change.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from cnnlab.app import backend
from cnnlab.app.classroom.collection import (
    Collection,
    Drawing,
    TestRecord,
    check_add,
    check_phase,
    check_test,
    check_undo,
    collection_from_json,
    collection_to_json,
    drawing_from_json,
    drawing_to_json,
)
from cnnlab.app.classroom.collection_store import NoCollection, already_open
from cnnlab.app.classroom.redis_store import TTL_SECONDS
from cnnlab.app.settings import Settings

__all__ = ["RedisCollectionStore", "collection_key", "drawings_key"]

T = TypeVar("T")

COLLECTIONS = backend.KEY + "collections"
CACHED = 256  # collections parsed and kept per process
MAX_TRIES = 200  # a change that keeps losing the race gives up (a 503) after this many tries
HMGET_CHUNK = 500  # drawings asked for per call


def collection_key(code: str) -> str:
    return f"{backend.KEY}coll:{code}"


def drawings_key(code: str) -> str:
    return f"{backend.KEY}coll:{code}:d"


def _version(c: Collection) -> str:
    return f"{c.opened!r}:{c.seq}"


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def _ids(value: bytes | str | None) -> list[int]:
    return [int(i) for i in _text(value).split()]


# KEYS: the collection; ARGV: the version this process has parsed ('' for none).
# -> nil (none), {v} (unchanged) or {v, meta}.
_READ = """
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return false end
if v == ARGV[1] then return {v} end
return {v, redis.call('HGET', KEYS[1], 'meta')}
"""


class _Writes:
    """What a change writes besides the collection itself, queued in its MULTI."""

    def __init__(self) -> None:
        self.calls: list[Callable[[Any], Any]] = []

    def __call__(self, call: Callable[[Any], Any]) -> None:
        self.calls.append(call)


class RedisCollectionStore:
    """``CollectionStore`` on Valkey/Redis (the module docstring)."""

    sweep_seconds = 10.0

    def __init__(self, settings: Settings) -> None:
        self.client: redis.Redis = backend.client(settings)
        self.ttl = max(TTL_SECONDS, int(2 * settings.class_idle_seconds))
        self._read = self.client.register_script(_READ)
        self._cache: OrderedDict[str, tuple[str, Collection]] = OrderedDict()  # code -> (version, collection)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the per-process cache

    def _cached(self, code: str) -> tuple[str, Collection] | None:
        with self._lock:
            found = self._cache.get(code)
            if found is not None:
                self._cache.move_to_end(code)
            return found

    def _remember(self, code: str, c: Collection) -> None:
        with self._lock:
            old = self._cache.get(code)
            if old is not None and old[1].opened == c.opened and old[1].seq > c.seq:
                return  # a newer one was parsed meanwhile
            self._cache[code] = (_version(c), c)
            self._cache.move_to_end(code)
            while len(self._cache) > CACHED:
                self._cache.popitem(last=False)

    def _forget(self, code: str) -> None:
        with self._lock:
            self._cache.pop(code, None)

    # ------------------------------------------------------------------ the one way to change

    def _change(self, code: str, change: Callable[[Collection | None, Any, _Writes], tuple[Collection | None, T]],
                *, missing_ok: bool = False) -> T:
        """Reads the collection under WATCH, calls ``change(c, pipe, writes)`` (it may read
        more through ``pipe``, raise to refuse, queue writes) -> (the changed collection, or
        None for no change; the result), then writes it with seq + 1 in one MULTI/EXEC."""
        key = collection_key(code)
        with self.client.pipeline() as pipe:
            for tries in range(MAX_TRIES):
                try:
                    pipe.watch(key)
                    version = _text(pipe.hget(key, "v"))
                    cached = self._cached(code)
                    if not version:
                        c = None
                    elif cached is not None and cached[0] == version:
                        c = cached[1].copy()
                    else:
                        meta = pipe.hget(key, "meta")
                        c = collection_from_json(meta) if meta is not None else None
                    if c is None and not missing_ok:
                        self._forget(code)
                        raise NoCollection(code)
                    writes = _Writes()
                    new, result = change(c, pipe, writes)  # an exception here: UNWATCH, nothing written
                    if new is None:
                        pipe.unwatch()
                        return result
                    new.seq += 1
                    pipe.multi()
                    pipe.hset(key, mapping={"meta": collection_to_json(new), "v": _version(new)})
                    for call in writes.calls:
                        call(pipe)
                    pipe.expire(key, self.ttl)
                    pipe.expire(drawings_key(code), self.ttl)
                    pipe.execute()
                except redis.WatchError:  # another process changed it first: again
                    if tries >= 3:
                        time.sleep(random.uniform(0, 0.001 * min(tries, 20)))
                    continue
                self._remember(code, new)
                return result
        raise redis.exceptions.TimeoutError(f"collection {code} changed too often to update")

    # ------------------------------------------------------------------ CollectionStore

    def open(self, code: str, labels: list[str], target: int, deadline: float | None, now: float) -> Collection:
        def change(old: Collection | None, pipe, writes: _Writes):
            if old is not None and old.phase != "closed":
                raise already_open()
            c = Collection(code=code, labels=list(labels), target=target, deadline=deadline, opened=now,
                           seq=old.seq if old is not None else 0)
            stale = [f for f in pipe.hkeys(collection_key(code)) if _text(f).startswith("ids:")]

            def write(p) -> None:
                p.delete(drawings_key(code))
                if stale:
                    p.hdel(collection_key(code), *stale)
                p.zadd(COLLECTIONS, {code: now})
                p.expire(COLLECTIONS, self.ttl)

            writes(write)
            return c, c

        return self._change(code, change, missing_ok=True)

    def get(self, code: str) -> Collection | None:
        cached = self._cached(code)
        reply = self._read(keys=[collection_key(code)], args=[cached[0] if cached else ""])
        if reply is None:
            self._forget(code)
            return None
        if len(reply) == 1 and cached is not None:
            return cached[1]
        if len(reply) < 2 or reply[1] is None:
            return None
        c = collection_from_json(reply[1])
        self._remember(code, c)
        return c

    def add(self, code: str, student: str, seat: int, label: int, grid: bytes, now: float, *,
            max_per_student: int, max_total: int) -> Drawing:
        field = "ids:" + student

        def change(c: Collection, pipe, writes: _Writes):
            check_add(c, label, grid, now, student, max_per_student, max_total)
            d = Drawing(id=c.next_id, label=label, student=student, seat=seat, grid=grid, at=now)
            mine = _ids(pipe.hget(collection_key(code), field)) + [d.id]
            c.count_in(d)
            writes(lambda p: p.hset(drawings_key(code), str(d.id), drawing_to_json(d)))
            writes(lambda p: p.hset(collection_key(code), field, " ".join(map(str, mine))))
            return c, d

        return self._change(code, change)

    def _take_out(self, code: str, c: Collection, pipe, writes: _Writes, d: Drawing) -> None:
        field = "ids:" + d.student
        mine = [i for i in _ids(pipe.hget(collection_key(code), field)) if i != d.id]
        c.count_out(d, mine[-1] if mine else None)
        writes(lambda p: p.hdel(drawings_key(code), str(d.id)))
        if mine:
            writes(lambda p: p.hset(collection_key(code), field, " ".join(map(str, mine))))
        else:
            writes(lambda p: p.hdel(collection_key(code), field))

    def undo(self, code: str, student: str) -> int | None:
        def change(c: Collection, pipe, writes: _Writes):
            check_undo(c)
            mine = _ids(pipe.hget(collection_key(code), "ids:" + student))
            raw = pipe.hget(drawings_key(code), str(mine[-1])) if mine else None
            if raw is None:
                return None, None
            d = drawing_from_json(raw)
            self._take_out(code, c, pipe, writes, d)
            return c, d.id

        return self._change(code, change)

    def remove(self, code: str, drawing_id: int) -> bool:
        def change(c: Collection, pipe, writes: _Writes):
            raw = pipe.hget(drawings_key(code), str(int(drawing_id)))
            if raw is None:
                return None, False
            self._take_out(code, c, pipe, writes, drawing_from_json(raw))
            return c, True

        return self._change(code, change)

    def drawings(self, code: str, after_id: int = 0) -> list[Drawing]:
        c = self.get(code)
        if c is None:
            raise NoCollection(code)
        ids = [str(i) for i in range(max(0, after_id) + 1, c.next_id)]
        if not ids:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for start in range(0, len(ids), HMGET_CHUNK):
                pipe.hmget(drawings_key(code), ids[start:start + HMGET_CHUNK])
            replies = pipe.execute()
        # Ids are increasing: the hash has no order, the range does.
        return [drawing_from_json(raw) for chunk in replies for raw in chunk if raw is not None]

    def drawing(self, code: str, drawing_id: int) -> Drawing | None:
        raw = self.client.hget(drawings_key(code), str(int(drawing_id)))
        return None if raw is None else drawing_from_json(raw)

    def set_phase(self, code: str, phase: str, job_id: str | None = None) -> Collection:
        check_phase(phase)

        def change(c: Collection, pipe, writes: _Writes):
            c.phase = phase
            if job_id is not None:
                c.job_id = job_id
            return c, c

        return self._change(code, change)

    def close(self, code: str) -> Collection:
        return self.set_phase(code, "closed")

    def record_test(self, code: str, student: str, seat: int, label: int, predicted: int, grid: bytes,
                    now: float) -> TestRecord:
        def change(c: Collection, pipe, writes: _Writes):
            check_test(c, label, predicted)
            record = TestRecord(id=c.tests + 1, label=label, predicted=predicted, student=student, seat=seat,
                                grid=grid, at=now)
            c.tally(record)
            return c, record

        return self._change(code, change)

    def delete(self, code: str) -> None:
        with self.client.pipeline() as pipe:
            pipe.delete(collection_key(code), drawings_key(code))
            pipe.zrem(COLLECTIONS, code)
            pipe.execute()
        self._forget(code)

    def opened(self) -> dict[str, float]:
        return {_text(code): float(score) for code, score in self.client.zrange(COLLECTIONS, 0, -1, withscores=True)}
