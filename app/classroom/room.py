"""What a class holds: the room, its students (seats) and its quick question, and their JSON
form (what a shared store keeps; ``room_from_json(room_to_json(r)) == r``).

Times (``created``, ``active``, ``joined``, ``left``) are wall-clock seconds (``time.time()``):
the processes and hosts sharing a class do not share a monotonic clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

__all__ = ["Question", "Room", "Student", "room_from_json", "room_to_json"]

T = TypeVar("T")


@dataclass
class Student:
    """A seat in the class (app/seats.py): held while a screen of this browser is open, and
    for a grace time after it closes (or after joining, while the page opens its stream)."""

    joined: float
    seat: int = 0  # the seat's number, shown to the assistant instead of any name
    address: str = ""  # the client's address (app/ratelimit.address_key), never shown
    streams: int = 0  # open event streams (the follow page, or the bar while exploring)
    left: float = 0.0  # when the last stream closed (or the student joined)


@dataclass
class Question:
    """A quick question about the view it was asked on (``QUESTION_KINDS``):

    - "next_value": what value comes next? step: the 0-based step whose value is asked (the
      one after the view's); row, col, channel: that output position (1-based for people);
      solution: the worked sum (``35·(−2) + … = 78``);
    - "output_size": how many rows does the output have? solution: the output-size formula
      with the view's numbers (``⌊(5 + 0 − 1·(3 − 1) − 1)/1⌋ + 1 = 3``);
    - "param_count": how many parameters does this layer learn? solution: ``(3·3·1 + 1)·1 = 10``
      on a convolution, and 0 on a pooling layer (it learns nothing).

    page: "conv" | "pool"; answer: the value; tolerance: 0.0 = exact.
    answers: student id → the number they sent (the last one counts).
    """

    id: int
    page: str
    view: str
    answer: float
    tolerance: float
    solution: str
    kind: str = "next_value"
    step: int | None = None
    row: int | None = None
    col: int | None = None
    channel: int | None = None
    answers: dict[str, float] = field(default_factory=dict)
    revealed: bool = False

    def is_right(self, value: float) -> bool:
        return abs(value - self.answer) <= self.tolerance + 1e-9 * max(1.0, abs(self.answer))


@dataclass
class Room:
    code: str
    secret_hash: str
    created: float
    active: float  # the assistant's last sign of life (a request, or their open event stream)
    view: str | None = None
    view_seq: int = 0
    students: dict[str, Student] = field(default_factory=dict)
    question: Question | None = None
    questions: int = 0
    answers_seq: int = 0
    locked: bool = False  # no new students (those seated stay)
    seats_made: int = 0
    host_streams: int = 0  # the assistant's open screens (kept in the room: shared by every process)
    # The class's collection's ``seq`` (app/classroom/collect.py): changed by every change of
    # the collection, so the class's event streams wake and send it.
    collection_seq: int = 0

    @property
    def connected(self) -> int:
        """Students with an event stream open now."""
        return sum(1 for s in list(self.students.values()) if s.streams > 0)

    def quiet_since(self) -> float | None:
        """Since when nobody has been here (no screen open, no assistant's request); None
        while a screen is open."""
        students = list(self.students.values())
        if self.host_streams > 0 or any(s.streams > 0 for s in students):
            return None
        return max([self.active] + [s.left for s in students])

    def copy(self) -> Room:
        """A copy to change (its students and question copied too; strings and numbers shared)."""
        new = _clone(self)
        new.students = {sid: _clone(s) for sid, s in self.students.items()}
        if self.question is not None:
            new.question = _clone(self.question)
            new.question.answers = dict(self.question.answers)
        return new


def _clone(obj: T) -> T:
    """A shallow copy of a dataclass instance (several times faster than ``copy.copy``)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    return new


# ============================================================================== JSON
#
# By hand rather than ``dataclasses.asdict`` (a deep copy): a room of 200 students is written
# at every change of a shared class, and this is about 5 times faster.


def room_to_json(room: Room) -> str:
    """The room, its students and question, as compact JSON."""
    data = dict(room.__dict__)
    data["students"] = {sid: s.__dict__ for sid, s in room.students.items()}
    if room.question is not None:
        data["question"] = room.question.__dict__
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


_FIELDS = {cls: frozenset(f.name for f in fields(cls)) for cls in (Room, Student, Question)}


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Only the fields ``cls`` has: a room written by a newer version still reads."""
    names = _FIELDS[cls]
    return data if data.keys() <= names else {k: v for k, v in data.items() if k in names}


def room_from_json(text: str | bytes) -> Room:
    data = json.loads(text)
    students = {sid: Student(**_known(Student, s)) for sid, s in (data.get("students") or {}).items()}
    q = data.get("question")
    question = None
    if q is not None:
        q = _known(Question, q)
        q["answers"] = {sid: float(v) for sid, v in (q.get("answers") or {}).items()}
        question = Question(**q)
    return Room(**{**_known(Room, data), "students": students, "question": question})
