"""A class's own dataset in the making: the collection (issue 15).

The assistant opens a collection (its labels, a target per label, a time limit); each phone
draws the label it is asked for (``next_label``), and each drawing is kept as a ``Drawing``
(28×28 grey levels, uint8: 0 = paper, 255 = ink, row-major, 784 bytes). Then the class's
model trains on them and everyone tests it: each test is a ``TestRecord``, the drawings that
fooled the model are kept (the last ``FOOLED_KEPT``).

``Collection`` is what the class's screens read (counts, phase, tally); the drawings are
kept apart by the stores (app/classroom/collection_store.py and collection_redis.py), read
in order with ``drawings(code, after_id)``. ``collection_from_json(collection_to_json(c))
== c``. Student ids (browser session ids) are kept to count and undo; nothing shown to
anyone carries them (the seat number names a student on the projector).

Times (``deadline``, ``opened``, ``at``) are wall-clock seconds, as in room.py.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _

__all__ = ["DIGIT_LABELS", "FOOLED_KEPT", "GRID", "PHASES", "REMOVED_KEPT", "BadGrid", "Collection", "Drawing",
           "TestRecord", "collection_from_json", "collection_to_json", "drawing_from_json", "drawing_to_json",
           "grid_bytes", "next_label"]

GRID = 28  # drawings are GRID×GRID, uint8 0 (paper) .. 255 (ink), row-major
PHASES = ("collect", "train", "test", "closed")
DIGIT_LABELS = tuple(str(d) for d in range(10))  # the default labels
FOOLED_KEPT = 24  # the last test drawings that fooled the model, kept for the projector
REMOVED_KEPT = 500  # the last removed drawing ids, kept so screens drop their thumbnails
# A drawing with no value above this (of 0..1) has no ink: nothing was drawn.
BLANK_BELOW = 0.05


@dataclass
class Drawing:
    id: int
    label: int
    student: str  # the browser session id: never shown
    seat: int  # the class seat number (what the projector names)
    grid: bytes  # GRID·GRID uint8
    at: float


@dataclass
class TestRecord:
    __test__ = False  # not a pytest class

    id: int
    label: int  # what the student drew
    predicted: int  # what the model said
    student: str
    seat: int
    grid: bytes
    at: float


@dataclass
class Collection:
    code: str
    labels: list[str]
    target: int  # drawings wanted per label
    deadline: float | None  # wall clock, or None: no time limit
    opened: float
    phase: str = "collect"
    next_id: int = 1
    seq: int = 0  # +1 on every change
    counts: list[int] = field(default_factory=list)  # drawings per label (those still there)
    by_student: dict[str, int] = field(default_factory=dict)  # drawings per student (still there)
    # Drawings per label of each student (still there): ``next_label``'s tie-break.
    student_counts: dict[str, list[int]] = field(default_factory=dict)
    last_by_student: dict[str, int] = field(default_factory=dict)  # each one's newest drawing still there
    removed: list[int] = field(default_factory=list)  # the last REMOVED_KEPT removed ids
    job_id: str | None = None
    right: int = 0
    fooled: int = 0
    fooled_recent: list[TestRecord] = field(default_factory=list)  # the last FOOLED_KEPT that fooled it
    tests: int = 0  # tests recorded (the last test's id)

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.labels)

    @property
    def total(self) -> int:
        """Drawings still there."""
        return sum(self.counts)

    @property
    def contributors(self) -> int:
        """Students with at least one drawing still there."""
        return sum(1 for n in self.by_student.values() if n > 0)

    def copy(self) -> Collection:
        """A copy to change (its lists and dicts copied; records and strings shared)."""
        new = object.__new__(Collection)
        new.__dict__.update(self.__dict__)
        new.labels = list(self.labels)
        new.counts = list(self.counts)
        new.by_student = dict(self.by_student)
        new.student_counts = {s: list(n) for s, n in self.student_counts.items()}
        new.last_by_student = dict(self.last_by_student)
        new.removed = list(self.removed)
        new.fooled_recent = list(self.fooled_recent)
        return new

    # ------------------------------------------------------------------ changes (the stores' common rules)

    def count_in(self, d: Drawing) -> None:
        """``d`` was added: the counts follow (its id is ``next_id``, taken)."""
        self.counts[d.label] += 1
        self.by_student[d.student] = self.by_student.get(d.student, 0) + 1
        mine = self.student_counts.setdefault(d.student, [0] * len(self.labels))
        mine[d.label] += 1
        self.last_by_student[d.student] = d.id
        self.next_id = max(self.next_id, d.id + 1)

    def count_out(self, d: Drawing, newest_left: int | None) -> None:
        """``d`` was removed; ``newest_left``: its student's newest drawing still there."""
        self.counts[d.label] = max(0, self.counts[d.label] - 1)
        left = self.by_student.get(d.student, 0) - 1
        if left > 0:
            self.by_student[d.student] = left
        else:
            self.by_student.pop(d.student, None)
        mine = self.student_counts.get(d.student)
        if mine is not None:
            mine[d.label] = max(0, mine[d.label] - 1)
            if not any(mine):
                del self.student_counts[d.student]
        if newest_left is None:
            self.last_by_student.pop(d.student, None)
        else:
            self.last_by_student[d.student] = newest_left
        self.removed.append(d.id)
        del self.removed[:-REMOVED_KEPT]

    def tally(self, record: TestRecord) -> None:
        self.tests = max(self.tests, record.id)
        if record.predicted == record.label:
            self.right += 1
        else:
            self.fooled += 1
            self.fooled_recent.append(record)
            del self.fooled_recent[:-FOOLED_KEPT]


# ============================================================================== checks shared by the stores


def check_add(c: Collection, label: int, grid: bytes, now: float, student: str, max_per_student: int,
              max_total: int) -> None:
    """What ``CollectionStore.add`` refuses, in its order (an ``InputError``)."""
    if c.phase != "collect":
        raise InputError(_("The collection is closed: it takes no more drawings."), status_code=409)
    if c.deadline is not None and now > c.deadline:
        raise InputError(_("Time is up: the collection takes no more drawings."), status_code=409)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(c.labels):
        raise InputError(_("This collection has no such label."), status_code=422)
    if not isinstance(grid, bytes) or len(grid) != GRID * GRID:
        raise BadGrid(_("The drawing must be %(n)s×%(n)s values.") % {"n": GRID})
    if c.by_student.get(student, 0) >= max_per_student:
        raise InputError(_("You have sent %(n)s drawings: the most one student can send.") % {"n": max_per_student},
                         status_code=429)
    if c.total >= max_total:
        raise InputError(_("The collection is full: it has %(n)s drawings.") % {"n": max_total}, status_code=429)


def check_test(c: Collection, label: int, predicted: int) -> None:
    """What ``CollectionStore.record_test`` refuses: no model to test yet, or bad labels."""
    if c.phase not in ("train", "test"):
        raise InputError(_("The class's model is not ready to be tested."), status_code=409)
    for k in (label, predicted):
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(c.labels):
            raise InputError(_("This collection has no such label."), status_code=422)


def check_undo(c: Collection) -> None:
    if c.phase != "collect":
        raise InputError(_("The collection is closed: its drawings can no longer be undone."), status_code=409)


def check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")


# ============================================================================== which label is asked


def next_label(c: Collection, student: str) -> int:
    """The label a phone is asked for: the fewest drawings in the class, ties broken by the
    fewest from this student, then by the lowest index (so every label fills evenly)."""
    mine = c.student_counts.get(student) or [0] * len(c.labels)
    return min(range(len(c.labels)), key=lambda k: (c.counts[k], mine[k] if k < len(mine) else 0, k))


# ============================================================================== the pad's grid


class BadGrid(InputError, ValueError):
    """A drawing that is not the pad's 28×28 numbers in 0..1 (a 422 ``InputError``, and a
    ``ValueError``)."""


def grid_bytes(values: Any) -> bytes:
    """The pad's drawing, 784 numbers in 0..1 (1 = ink; a flat list, or 28 rows of 28), as
    uint8 bytes (0 = paper, 255 = ink). ``BadGrid`` (a ``ValueError`` with a translated
    message, and a 422 ``InputError``) on anything else, and on an empty pad."""
    if isinstance(values, list) and len(values) == GRID and all(isinstance(r, list) for r in values):
        values = [v for row in values for v in row] if all(len(r) == GRID for r in values) else None
    if not isinstance(values, list) or len(values) != GRID * GRID:
        raise BadGrid(_("The drawing must be %(n)s×%(n)s values.") % {"n": GRID})
    out = bytearray(GRID * GRID)
    ink = False
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 <= v <= 1):
            raise BadGrid(_("The drawing must be numbers from 0 to 1."))
        out[i] = int(round(v * 255))
        ink = ink or v > BLANK_BELOW
    if not ink:
        raise BadGrid(_("Draw something first: the pad is empty."))
    return bytes(out)


# ============================================================================== JSON


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def drawing_to_json(d: Drawing | TestRecord) -> str:
    return json.dumps(_record(d), separators=(",", ":"), ensure_ascii=False)


def _record(d: Drawing | TestRecord) -> dict[str, Any]:
    return {**d.__dict__, "grid": _b64(d.grid)}


def drawing_from_json(text: str | bytes) -> Drawing:
    data = json.loads(text)
    return Drawing(**{**_known(Drawing, data), "grid": _unb64(data["grid"])})


def _test_from(data: dict[str, Any]) -> TestRecord:
    return TestRecord(**{**_known(TestRecord, data), "grid": _unb64(data["grid"])})


_FIELDS = {cls: frozenset(f.name for f in fields(cls)) for cls in (Collection, Drawing, TestRecord)}


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Only the fields ``cls`` has: a collection written by a newer version still reads."""
    names = _FIELDS[cls]
    return data if data.keys() <= names else {k: v for k, v in data.items() if k in names}


def collection_to_json(c: Collection) -> str:
    """The collection (not its drawings) as compact JSON."""
    data = dict(c.__dict__)
    data["fooled_recent"] = [_record(r) for r in c.fooled_recent]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def collection_from_json(text: str | bytes) -> Collection:
    data = _known(Collection, json.loads(text))
    data["fooled_recent"] = [_test_from(r) for r in data.get("fooled_recent") or []]
    data["by_student"] = {s: int(n) for s, n in (data.get("by_student") or {}).items()}
    data["last_by_student"] = {s: int(n) for s, n in (data.get("last_by_student") or {}).items()}
    return Collection(**data)
