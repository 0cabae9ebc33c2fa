"""Seats: who is in a class, and for how long.

A student's browser session takes a seat when it first arrives (the follow page, the class
bar, or its event stream). The seat is held while a screen of that browser is connected (an
event stream is open) and for ``class_seat_grace_seconds`` after the last one closes, long
enough for a reload or a phone waking up; then it is freed, and with it the student's answer
to the open question, so the histogram counts one answer per seated student. A script that
opens pages and never a screen holds its seats only that long, and one address can hold at
most ``class_pending_seats_per_address`` seats that have no screen yet (a room behind one NAT
opens its screens within a second or two of joining). New seats are also limited per address
and class (``rate_address_joins_…``). The assistant sees every seat (a number, connected or
not), can free one, and can lock the class to new students.

Every change goes through the class store's atomic ``update`` (app/classroom/store.py). Times
are wall-clock (``time.time()``): a class may be shared by several processes and hosts.
"""

from __future__ import annotations

import time

from starlette.requests import HTTPConnection

from cnnlab.app.classroom import ClassStore, NoSuchClass, Room, Student, update_class
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.ratelimit import address_key, limit_address, too_many
from cnnlab.app.session import session_id
from cnnlab.app.settings import settings_for

__all__ = ["connect", "free_expired", "lock", "remove", "seat_list", "seat_view", "take_seat"]


def _held(student: Student, now: float, grace: float) -> bool:
    return student.streams > 0 or now - student.left <= grace


def _free(room: Room, sid: str) -> None:
    room.students.pop(sid, None)
    if room.question is not None and room.question.answers.pop(sid, None) is not None:
        room.answers_seq += 1


def _expired(room: Room, now: float, grace: float) -> list[str]:
    return [sid for sid, s in list(room.students.items()) if not _held(s, now, grace)]


def free_expired(store: ClassStore, code: str, now: float, grace: float) -> None:
    """Free the seats whose grace time has passed (the class's screens are woken only when
    there are some)."""
    room = store.get(code)
    if room is None or not _expired(room, now, grace):
        return

    def free(r: Room) -> None:
        for sid in _expired(r, now, grace):
            _free(r, sid)

    try:
        store.update(code, free)
    except NoSuchClass:
        pass


def take_seat(request: HTTPConnection, room: Room) -> str:
    """This browser's seat in the class (taken now if it has none): its session id. A 403
    when the class is locked or full, a 429 past the address's limits."""
    sid = session_id(request)
    if sid in room.students:
        return sid
    settings = settings_for(request.app)
    if room.locked:
        raise _locked()
    address = address_key(request)
    grace = settings.class_seat_grace_seconds
    now = time.time()
    limit_address(request, "joins", scope=room.code)

    def join(r: Room) -> None:
        if sid in r.students:
            return
        for gone in _expired(r, now, grace):
            _free(r, gone)
        if r.locked:
            raise _locked()
        # Seats of this address whose screen has not opened yet (never connected).
        pending = [s.joined for s in r.students.values()
                   if s.address == address and s.streams == 0 and s.left == s.joined]
        if len(pending) >= settings.class_pending_seats_per_address:
            raise too_many(min(pending) + grace - now)
        most = settings.max_class_students
        if len(r.students) >= most:
            raise InputError(_("This class is full: it has %(n)s students already.") % {"n": most}, status_code=403)
        r.seats_made += 1
        r.students[sid] = Student(joined=now, seat=r.seats_made, address=address, left=now)

    update_class(request, room.code, join)
    return sid


def _locked() -> InputError:
    return InputError(_("This class is closed to new students. Ask the assistant to open it."), status_code=403)


def connect(sid: str | None, step: int):
    """A change for ``store.update``: one more (+1) or one fewer (-1) screen of ``sid``, or
    of the assistant (``sid`` None)."""

    def change(r: Room) -> None:
        if sid is None:
            r.host_streams = max(0, r.host_streams + step)
            return
        student = r.students.get(sid)
        if student is not None:
            student.streams = max(0, student.streams + step)
            if student.streams == 0:
                student.left = time.time()

    return change


def seat_list(room: Room) -> list[dict]:
    """The seats, for the assistant: number and whether a screen is open, in joining order."""
    students = sorted(list(room.students.values()), key=lambda s: s.seat)
    return [{"seat": s.seat, "connected": s.streams > 0} for s in students]


def seat_view(room: Room) -> dict:
    """What templates/_class_seats.html shows (equal when nothing it shows has changed)."""
    return {"code": room.code, "locked": room.locked, "seats": seat_list(room), "connected": room.connected}


def remove(request: HTTPConnection, room: Room, seat: int) -> None:
    """Free seat number ``seat`` (the assistant's choice); a 404 when there is none."""

    def free(r: Room) -> None:
        for sid, student in list(r.students.items()):
            if student.seat == seat:
                _free(r, sid)
                return
        raise InputError(_("There is no seat %(n)s in this class.") % {"n": seat}, status_code=404)

    update_class(request, room.code, free)


def lock(request: HTTPConnection, room: Room, locked: bool) -> None:
    """Lock the class to new students (or open it again)."""

    def change(r: Room) -> None:
        r.locked = locked

    update_class(request, room.code, change)

