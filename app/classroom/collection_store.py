"""Where collections live: ``CollectionStore``, two implementations chosen once per app by
``collection_store_for`` (as ``store_for`` chooses the class store):

- ``MemoryCollectionStore``: this process's memory (the default);
- ``RedisCollectionStore`` (app/classroom/collection_redis.py): Valkey or Redis, when
  ``CNNLAB_REDIS_URL`` is set.

Every method that changes something checks and writes atomically and bumps ``Collection.seq``.
The stores wake nobody: the service layer (app/classroom/collect.py) follows each change
with an ``update_class`` that wakes the class's event streams.

A collection ends with its class: ``collection_store_for`` deletes, at most every
``sweep_seconds`` per process, every collection whose class has ended (or whose code now
names a newer class); the Valkey keys also expire on their own (TTL) after a crash.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from cnnlab.app.appstate import shared
from cnnlab.app.classroom.collection import (
    Collection,
    Drawing,
    TestRecord,
    check_add,
    check_phase,
    check_test,
    check_undo,
)
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.settings import settings_for

__all__ = ["CollectionStore", "MemoryCollectionStore", "NoCollection", "already_open", "collection_store_for",
           "end_orphans"]


class NoCollection(LookupError):
    """The class has no collection (none was opened, or it was deleted)."""


def already_open() -> InputError:
    return InputError(_("This class already has a collection open: close it first."), status_code=409)


class CollectionStore(Protocol):
    # ``collection_store_for`` deletes the collections of ended classes at most this often.
    sweep_seconds: float

    def open(self, code: str, labels: list[str], target: int, deadline: float | None, now: float) -> Collection:
        """A new collection for the class (replacing a closed one: its drawings go); a 409
        ``InputError`` while one is open (any phase but "closed")."""

    def get(self, code: str) -> Collection | None:
        """The collection to read (never to change), or None."""

    def add(self, code: str, student: str, seat: int, label: int, grid: bytes, now: float, *,
            max_per_student: int, max_total: int) -> Drawing:
        """Checks atomically, in this order: a collection exists (else ``NoCollection``), its
        phase is "collect" (409), its deadline has not passed (409), the label exists (422),
        the grid is 784 bytes (422), the student has fewer than ``max_per_student`` drawings
        (429) and the class fewer than ``max_total`` (429); then keeps the drawing."""

    def undo(self, code: str, student: str) -> int | None:
        """Removes the student's newest drawing still there: its id, or None when there is
        none. 409 once the phase is no longer "collect"."""

    def remove(self, code: str, drawing_id: int) -> bool:
        """The assistant removes any drawing (any phase): False when it is not there."""

    def drawings(self, code: str, after_id: int = 0) -> list[Drawing]:
        """The drawings still there with an id above ``after_id``, ordered by id."""

    def drawing(self, code: str, drawing_id: int) -> Drawing | None:
        """One drawing still there, by id, or None."""

    def set_phase(self, code: str, phase: str, job_id: str | None = None) -> Collection:
        """The new phase (``PHASES``), and the training's job id when given."""

    def close(self, code: str) -> Collection:
        """``set_phase(code, "closed")``."""

    def record_test(self, code: str, student: str, seat: int, label: int, predicted: int, grid: bytes,
                    now: float) -> TestRecord:
        """A test of the class's model (phase "train" or "test", else 409): the tally and,
        when it fooled the model, the last ``FOOLED_KEPT`` of those."""

    def delete(self, code: str) -> None:
        """The collection and its drawings are gone (the class ended)."""

    def opened(self) -> dict[str, float]:
        """Every collection kept: code -> when it was opened (for the sweep)."""


# ============================================================================== in this process


@dataclass
class _Entry:
    collection: Collection  # replaced on every change, never changed in place (``get`` hands it out)
    drawings: dict[int, Drawing] = field(default_factory=dict)  # by id, in id order
    ids: dict[str, list[int]] = field(default_factory=dict)  # each student's drawings still there


class MemoryCollectionStore:
    """Collections in this process's memory, behind one lock."""

    sweep_seconds = 2.0

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def _entry(self, code: str) -> _Entry:
        entry = self._entries.get(code)
        if entry is None:
            raise NoCollection(code)
        return entry

    def _changed(self, entry: _Entry, new: Collection) -> Collection:
        new.seq += 1
        entry.collection = new
        return new

    def open(self, code: str, labels: list[str], target: int, deadline: float | None, now: float) -> Collection:
        with self._lock:
            old = self._entries.get(code)
            if old is not None and old.collection.phase != "closed":
                raise already_open()
            c = Collection(code=code, labels=list(labels), target=target, deadline=deadline, opened=now,
                           seq=old.collection.seq if old is not None else 0)
            self._entries[code] = _Entry(c)
            return self._changed(self._entries[code], c)

    def get(self, code: str) -> Collection | None:
        entry = self._entries.get(code)
        return None if entry is None else entry.collection

    def add(self, code: str, student: str, seat: int, label: int, grid: bytes, now: float, *,
            max_per_student: int, max_total: int) -> Drawing:
        with self._lock:
            entry = self._entry(code)
            new = entry.collection.copy()
            check_add(new, label, grid, now, student, max_per_student, max_total)
            d = Drawing(id=new.next_id, label=label, student=student, seat=seat, grid=grid, at=now)
            new.count_in(d)
            entry.drawings[d.id] = d
            entry.ids.setdefault(student, []).append(d.id)
            self._changed(entry, new)
            return d

    def _take_out(self, entry: _Entry, new: Collection, d: Drawing) -> None:
        del entry.drawings[d.id]
        mine = entry.ids.get(d.student, [])
        if d.id in mine:
            mine.remove(d.id)
        if not mine:
            entry.ids.pop(d.student, None)
        new.count_out(d, mine[-1] if mine else None)

    def undo(self, code: str, student: str) -> int | None:
        with self._lock:
            entry = self._entry(code)
            check_undo(entry.collection)
            mine = entry.ids.get(student)
            if not mine:
                return None
            new = entry.collection.copy()
            d = entry.drawings[mine[-1]]
            self._take_out(entry, new, d)
            self._changed(entry, new)
            return d.id

    def remove(self, code: str, drawing_id: int) -> bool:
        with self._lock:
            entry = self._entry(code)
            d = entry.drawings.get(drawing_id)
            if d is None:
                return False
            new = entry.collection.copy()
            self._take_out(entry, new, d)
            self._changed(entry, new)
            return True

    def drawings(self, code: str, after_id: int = 0) -> list[Drawing]:
        with self._lock:
            entry = self._entry(code)
            if after_id <= 0:
                return list(entry.drawings.values())
            if after_id >= entry.collection.next_id - 1:
                return []
            return [d for i, d in entry.drawings.items() if i > after_id]

    def drawing(self, code: str, drawing_id: int) -> Drawing | None:
        entry = self._entries.get(code)
        return None if entry is None else entry.drawings.get(drawing_id)

    def set_phase(self, code: str, phase: str, job_id: str | None = None) -> Collection:
        check_phase(phase)
        with self._lock:
            entry = self._entry(code)
            new = entry.collection.copy()
            new.phase = phase
            if job_id is not None:
                new.job_id = job_id
            return self._changed(entry, new)

    def close(self, code: str) -> Collection:
        return self.set_phase(code, "closed")

    def record_test(self, code: str, student: str, seat: int, label: int, predicted: int, grid: bytes,
                    now: float) -> TestRecord:
        with self._lock:
            entry = self._entry(code)
            new = entry.collection.copy()
            check_test(new, label, predicted)
            record = TestRecord(id=new.tests + 1, label=label, predicted=predicted, student=student, seat=seat,
                                grid=grid, at=now)
            new.tally(record)
            self._changed(entry, new)
            return record

    def delete(self, code: str) -> None:
        with self._lock:
            self._entries.pop(code, None)

    def opened(self) -> dict[str, float]:
        with self._lock:
            return {code: e.collection.opened for code, e in self._entries.items()}


# ============================================================================== the app's store


def _make_store(app) -> CollectionStore:
    """Valkey/Redis when the app has a shared engine, else this process's memory."""
    from cnnlab.app import backend

    settings = settings_for(app)
    if backend.redis_url(settings) is None:
        return MemoryCollectionStore()
    from cnnlab.app.classroom.collection_redis import RedisCollectionStore

    return RedisCollectionStore(settings)


_last_sweep: dict[int, float] = {}


def end_orphans(app, store: CollectionStore) -> list[str]:
    """Deletes every collection whose class has ended, or whose code now names a class
    started after it was opened; returns their codes."""
    from cnnlab.app.classroom.store import store_for

    classes = store_for(app)
    gone = []
    for code, opened in store.opened().items():
        room = classes.get(code)
        if room is None or room.created > opened:
            store.delete(code)
            gone.append(code)
    return gone


def collection_store_for(request_or_app) -> CollectionStore:
    """The app's collection store (chosen on first use), after deleting the collections of
    ended classes (at most every ``store.sweep_seconds`` in this process)."""
    app = getattr(request_or_app, "app", request_or_app)
    store = shared(app, "collections", lambda: _make_store(app))
    now = time.time()
    last = _last_sweep.get(id(store), 0.0)
    if not 0 <= now - last < store.sweep_seconds:
        _last_sweep[id(store)] = now
        end_orphans(app, store)
    return store
