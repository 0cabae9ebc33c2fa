"""The collection's service layer, for the routes: the app's settings' limits, translated
refusals, and after every change an ``update_class`` of the class (``Room.collection_seq``
follows ``Collection.seq``) so the class's event streams wake, on either store kind.

Every function takes the request (or the app) and the class code; a refusal is an
``InputError``: 404 (no collection, or the class has ended), 409 (the phase, the time is up),
422 (bad input), 429 (a cap).
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cnnlab.app.classroom.collection import (
    DIGIT_LABELS,
    Collection,
    Drawing,
    TestRecord,
    grid_bytes,
)
from cnnlab.app.classroom.collection_store import CollectionStore, NoCollection, collection_store_for
from cnnlab.app.classroom.room import Room
from cnnlab.app.classroom.store import update_class
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.settings import settings_for

__all__ = ["add_drawing", "change", "clean_labels", "close_collection", "current", "no_collection",
           "open_collection", "record_test", "remove_drawing", "set_phase", "undo_drawing"]

T = TypeVar("T")

_SPACES = re.compile(r"\s+")


def no_collection() -> InputError:
    return InputError(_("This class has no collection open."), status_code=404)


def _app(request_or_app: Any) -> Any:
    return getattr(request_or_app, "app", request_or_app)


def change(request_or_app: Any, code: str, fn: Callable[[CollectionStore], T]) -> T:
    """Runs ``fn(store)`` (a store call that changes the collection), then bumps the class's
    ``collection_seq`` so its event streams wake. ``NoCollection`` -> a 404; a class that
    has ended -> a 404, and its collection is deleted."""
    store = collection_store_for(request_or_app)
    try:
        result = fn(store)
    except NoCollection:
        raise no_collection() from None
    c = result if isinstance(result, Collection) else store.get(code)
    seq = c.seq if c is not None else 0

    def bump(room: Room) -> None:
        # Equal to the collection's seq; +1 when the room is already there (a change that
        # finished after a later one, or a collection opened again from 1): always a change.
        room.collection_seq = seq if seq > room.collection_seq else room.collection_seq + 1

    try:
        update_class(request_or_app, code, bump)
    except InputError as refused:
        if refused.status_code == 404:  # the class has ended: so has its collection
            store.delete(code)
        raise
    return result


def current(request_or_app: Any, code: str) -> Collection | None:
    """The class's collection to read (closed ones included), or None."""
    return collection_store_for(request_or_app).get(code)


# ============================================================================== opening


def clean_labels(labels: Sequence[Any] | None, settings) -> list[str]:
    """The assistant's labels, checked: None -> the digits 0–9; each one's spaces collapsed,
    control characters dropped, 1..``collection_label_chars`` characters, all different,
    2..``collection_max_labels`` of them. A 422 ``InputError`` otherwise."""
    if labels is None:
        return list(DIGIT_LABELS)
    most = min(settings.collection_max_labels, len(DIGIT_LABELS))
    if isinstance(labels, str) or not isinstance(labels, Sequence) or not 2 <= len(labels) <= most:
        raise InputError(_("Give from %(min)s to %(max)s labels.") % {"min": 2, "max": most}, field="labels")
    out: list[str] = []
    seen: set[str] = set()
    for raw in labels:
        text = raw if isinstance(raw, str) else ""
        text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("C") or ch.isspace())
        text = _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()
        if not 1 <= len(text) <= settings.collection_label_chars:
            raise InputError(_("A label must have from 1 to %(n)s characters.") % {"n": settings.collection_label_chars},
                             field="labels")
        if text.casefold() in seen:
            raise InputError(_("Each label must be different: “%(label)s” is there twice.") % {"label": text},
                             field="labels")
        seen.add(text.casefold())
        out.append(text)
    return out


def open_collection(request_or_app: Any, code: str, labels: Sequence[Any] | None, target: Any,
                    minutes: Any = None, now: float | None = None) -> Collection:
    """Opens the class's collection (replacing a closed one): ``labels`` (None: the digits),
    ``target`` drawings per label, a time limit of ``minutes`` (None: the most allowed)."""
    settings = settings_for(_app(request_or_app))
    names = clean_labels(labels, settings)
    if isinstance(target, bool) or not isinstance(target, int) or not 1 <= target <= settings.collection_max_target:
        raise InputError(_("The target must be a whole number from 1 to %(n)s.") % {"n": settings.collection_max_target},
                         field="target")
    most = settings.collection_max_minutes
    if minutes is None:
        minutes = most
    if (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not math.isfinite(minutes)
            or not 1 <= minutes <= most):
        raise InputError(_("The time limit must be from 1 to %(n)s minutes.") % {"n": most}, field="minutes")
    now = time.time() if now is None else now
    return change(request_or_app, code, lambda store: store.open(code, names, target, now + 60.0 * minutes, now))


def close_collection(request_or_app: Any, code: str) -> Collection:
    return change(request_or_app, code, lambda store: store.close(code))


def set_phase(request_or_app: Any, code: str, phase: str, job_id: str | None = None) -> Collection:
    return change(request_or_app, code, lambda store: store.set_phase(code, phase, job_id))


# ============================================================================== drawing


def add_drawing(request_or_app: Any, code: str, student: str, seat: int, label: int, grid: bytes | list,
                now: float | None = None) -> Drawing:
    """A student's drawing (``grid``: the pad's 784 numbers in 0..1, or its bytes), within
    the settings' caps (``collection_max_per_student``, ``collection_max_drawings``)."""
    settings = settings_for(_app(request_or_app))
    data = grid if isinstance(grid, bytes) else grid_bytes(grid)
    now = time.time() if now is None else now
    return change(request_or_app, code, lambda store: store.add(
        code, student, seat, label, data, now, max_per_student=settings.collection_max_per_student,
        max_total=settings.collection_max_drawings))


def undo_drawing(request_or_app: Any, code: str, student: str) -> int | None:
    """Takes back the student's newest drawing still there: its id, or None (nothing to undo)."""
    return change(request_or_app, code, lambda store: store.undo(code, student))


def remove_drawing(request_or_app: Any, code: str, drawing_id: int) -> bool:
    """The assistant removes a drawing: False when it was not there."""
    return change(request_or_app, code, lambda store: store.remove(code, drawing_id))


def record_test(request_or_app: Any, code: str, student: str, seat: int, label: int, predicted: int,
                grid: bytes | list, now: float | None = None) -> TestRecord:
    data = grid if isinstance(grid, bytes) else grid_bytes(grid)
    now = time.time() if now is None else now
    return change(request_or_app, code, lambda store: store.record_test(code, student, seat, label, predicted, data,
                                                                        now))
