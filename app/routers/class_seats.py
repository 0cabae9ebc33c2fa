"""A class's seats (app/seats.py), for its assistant: lock the class to new students, free a
seat. The projector page's seats panel (templates/_class_seats.html) posts here; every
screen of the assistant then gets the new list through the class's event stream."""

from __future__ import annotations

from fastapi import APIRouter, Request

from cnnlab.app import seats
# The class routes' own helpers: who is the assistant, the body, the class as JSON.
from cnnlab.app.routers.classroom import ERRORS, ClassView, _body, _class_json, _host_room

router = APIRouter(tags=["class"])


@router.post("/api/class/{code}/lock", response_model=ClassView, responses=ERRORS)
async def api_lock(code: str, request: Request) -> ClassView:
    """Lock the class to new students (``locked`` true, the default) or open it again
    (``locked`` false); students already seated stay (assistant only)."""
    room = _host_room(request, code)
    locked = (await _body(request)).get("locked", True)
    seats.lock(request, room, locked not in (False, "false", "0", ""))
    return _class_json(request, room)


@router.delete("/api/class/{code}/seats/{seat}", response_model=ClassView, responses=ERRORS)
async def api_free_seat(code: str, seat: int, request: Request) -> ClassView:
    """Free seat number ``seat`` (assistant only): its screen is told, its answer no longer
    counts, and it can come back only while the class is open to new students."""
    room = _host_room(request, code)
    seats.remove(request, room, seat)
    return _class_json(request, room)
