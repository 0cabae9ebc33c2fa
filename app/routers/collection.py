"""The class builds its own dataset (issue 15): the routes of a class's collection. What its
screens show (the states, the class stream's ``collection`` event, the projector panel's
context, the thumbnails) is built in app/classroom/collection_view.py.

Who may do what: the assistant (``is_host``: the class's secret cookie) opens, closes and
trains a collection, removes any drawing, sees every thumbnail and downloads the dataset;
a student (a seat in the class, app/seats.py) draws, undoes their own last drawing, sees
their own thumbnails and tests the trained model. Students never see who drew what: the
assistant's screens get seat numbers, never session ids.

API (JSON; errors ``{"detail"}`` in the request's language):

- ``GET    /api/class/{code}/collection``: the state (the assistant's or the phone's view);
- ``POST   /api/class/{code}/collection``: open one (assistant): ``labels`` (null: the digits
  0–9; a list, or one text separated by commas), ``target`` per label, ``minutes`` (null: no
  time limit);
- ``DELETE /api/class/{code}/collection``: close it (assistant; the drawings stay for training
  and download);
- ``POST   …/collection/drawings``: a drawing (student): ``grid`` 784 numbers 0..1, ``label``;
- ``DELETE …/collection/drawings/last``: undo (student); ``DELETE …/drawings/{id}`` (assistant);
- ``GET    …/collection/drawings/{id}.png``: a thumbnail (assistant: any; student: their own);
- ``GET    …/collection/tests/{id}.png``: a test drawing that fooled the model (assistant);
- ``POST   …/collection/train`` (assistant); ``POST …/collection/test`` (student);
- ``GET /class/{code}/collection/dataset.npz`` and ``…/dataset.zip`` (assistant).

Pages: ``/class/{code}/collect`` (a phone's pad, templates/class_collect.html); the projector's
panel (templates/_class_collection.html) is in ``/class/{code}/present`` through
collection_view.collection_context.

Every change goes through the service layer (app/classroom/collect.py), which wakes the class's
event streams; each stream then sends ``collection`` (collection_view.collection_events) when
the collection changed since it last sent one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse

from cnnlab.app import seats
from cnnlab.app.api_schema import PNG, api_errors, page_errors, redirect
from cnnlab.app.classroom import Room, is_host
from cnnlab.app.classroom import collect
from cnnlab.app.classroom import collection_use as use
from cnnlab.app.classroom import collection_view as view
from cnnlab.app.classroom.collection import (
    GRID,
    Collection,
    check_add,
    grid_bytes,
    next_label,
)
from cnnlab.app.classroom.collection_store import CollectionStore, collection_store_for
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.ratelimit import limiter_for, too_many
from cnnlab.app.routers.classroom import _body, _host_room, _room, bar_context
from cnnlab.app.session import session_id
from cnnlab.app.settings import settings_for
from cnnlab.app.templating import render

__all__ = ["parse_labels", "router"]

router = APIRouter(tags=["class"])


# ============================================================================== helpers


def _store(request: Request) -> CollectionStore:
    return collection_store_for(request)


def _collection(request: Request, code: str) -> Collection:
    """The class's collection (any phase); a 404 with a sentence when there is none."""
    c = _store(request).get(code)
    if c is None:
        raise collect.no_collection()
    return c


def _student(request: Request, room: Room) -> tuple[str, int]:
    """This phone's session id and seat number; a 403 for the assistant, or for a browser
    without a seat in the class."""
    if is_host(request, room):
        raise InputError(_("The students' phones draw for the collection; the assistant runs it from the projector."),
                         status_code=403)
    sid = session_id(request)
    student = room.students.get(sid)
    if student is None:
        raise InputError(_("Join the class first: open the class's address on this phone."), status_code=403)
    return sid, student.seat


def _limit(request: Request, code: str, sid: str, action: str) -> None:
    """``collection_drawings_per_minute`` per student and class (in any moving minute), for
    drawings and for tests apart; counted in Valkey in shared mode (app/ratelimit.py). A 429
    with Retry-After past it."""
    settings = settings_for(request.app)
    per_minute = settings.collection_drawings_per_minute
    wait = limiter_for(settings).hit(f"session:collection-{action}:{code}:{sid}", per_minute, per_minute)
    if wait:
        raise too_many(wait)


def _png(data: bytes) -> Response:
    # Private (the class's drawings); an address names one picture for good (``?v=``).
    return Response(data, media_type="image/png",
                    headers={"cache-control": "private, max-age=3600", "x-content-type-options": "nosniff"})


# ============================================================================== pages


@router.get("/class/{code}/collect", name="class_collect", response_class=HTMLResponse,
            responses={**redirect("the assistant: to the projector page"),
                       **page_errors(403, 404, 429, descriptions={
                           403: "the class is full, or locked to new students",
                           404: "no such class (or it has ended)",
                           429: "too many codes looked up in vain from this address, or too many joins"})})
async def class_collect(code: str, request: Request) -> Response:
    """A phone's page while the class builds its dataset: the label it is asked for, big, a
    drawing pad, send, clear and undo; in the test phase the pad asks the trained model.

    Context of templates/class_collect.html: the class bar's (``bar_context``: ``room``,
    ``code``, ``host`` False, ``panel``…), ``collecting`` True, and ``collection``:
    ``phone_state`` (None before the assistant opens a collection)."""
    room = _room(request, code)
    if is_host(request, room):
        return RedirectResponse(f"/class/{room.code}/present", status_code=303)
    sid = seats.take_seat(request, room)
    room = _room(request, code)
    return render(request, "class_collect.html", {
        **bar_context(request, room, False, False), "collecting": True,
        "collection": view.phone_state(view.refresh(request, room.code), sid)}, fragment=None)


DOWNLOAD_ERRORS = page_errors(403, 404, 409, 429, descriptions={
    403: "only the class's assistant may download the dataset",
    404: "no such class, or no collection in it",
    409: "too few drawings to make a dataset yet; the page says why",
    429: "too many codes looked up in vain from this address"})


async def _download(request: Request, code: str, make: Callable[[CollectionStore, str], bytes], suffix: str,
                    media_type: str) -> Response:
    room = _host_room(request, code)
    _collection(request, room.code)
    # Up to thousands of drawings to pack: in a worker thread, not on the event loop.
    data = await anyio.to_thread.run_sync(make, _store(request), room.code)
    return Response(data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="cnnlab-{room.code}.{suffix}"',
                             "cache-control": "private, no-store"})


@router.get("/class/{code}/collection/dataset.npz", name="class_collection_npz", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "images (N, 28, 28) uint8, labels, label_names: loads in /train"},
                       **DOWNLOAD_ERRORS})
async def dataset_npz(code: str, request: Request) -> Response:
    """The class's drawings as a dataset file (.npz) that /train loads (assistant only)."""
    return await _download(request, code, use.dataset_npz, "npz", "application/octet-stream")


@router.get("/class/{code}/collection/dataset.zip", name="class_collection_zip", response_class=Response,
            responses={200: {"content": {"application/zip": {}},
                             "description": "a PNG per drawing in a folder per label, and labels.csv"},
                       **DOWNLOAD_ERRORS})
async def dataset_zip(code: str, request: Request) -> Response:
    """The class's drawings as PNG files, a folder per label, and labels.csv (assistant only)."""
    return await _download(request, code, use.dataset_zip, "zip", "application/zip")


# ============================================================================== JSON API


ERRORS = api_errors(403, 404, 409, 422, 429, descriptions={
    403: "not this browser's to do: the assistant's actions, a student's actions, or no seat in the class",
    404: "no such class (or it has ended), no collection in it, or no such drawing",
    409: "not possible in the collection's present phase (closed, time is up, training…); `detail` says why",
    429: "too many drawings in a short time, a cap reached, or too many codes looked up in vain; "
         "`detail` says why, and Retry-After how long to wait"})


class CollectionState(BaseModel):
    """A collection as this browser may see it (the assistant's fields, or a phone's);
    ``phase`` null when the class has none."""

    model_config = ConfigDict(extra="allow")

    phase: str | None = Field(description='"collect", "train", "test" or "closed"; null: no collection')


def _whole(value: Any) -> Any:
    """A whole number typed in a form ("20") as a number, an empty field as None; anything
    else as it came (the service layer refuses it with a message)."""
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,6}\s*", value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_labels(value: Any) -> Any:
    """The assistant's labels as sent: None, "" or [] -> None (the digits); one text
    separated by commas (or ";", new lines) -> its parts; a list as it came (the service
    layer checks the names)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return [p for p in re.split(r"[,;\n]", value) if p.strip()]
    return value


@router.get("/api/class/{code}/collection", response_model=CollectionState, responses=ERRORS)
async def api_collection(code: str, request: Request) -> dict[str, Any]:
    """The collection now: for the assistant its counts, contributors and tally (never who
    drew what) and the drawings that fooled the model; for a phone the label it is asked for
    and its own count. ``phase`` null while the class has none."""
    room = _room(request, code)
    c = view.refresh(request, room.code)
    if c is None:
        return {"phase": None}
    if is_host(request, room):
        return {**view.host_state(c), "fooled_recent": view.fooled_json(room.code, c)}
    return view.phone_state(c, session_id(request))


@router.post("/api/class/{code}/collection", response_model=CollectionState, status_code=201, responses=ERRORS)
async def api_open(code: str, request: Request) -> dict[str, Any]:
    """Open a collection (assistant only): ``labels`` (null: the digits 0–9; a list, or one
    text separated by commas), ``target`` drawings per label, ``minutes`` of time limit (null:
    the longest allowed). Replaces a closed one; a 409 while one is open."""
    room = _host_room(request, code)
    body = await _body(request)
    c = collect.open_collection(request, room.code, parse_labels(body.get("labels")), _whole(body.get("target", 20)),
                                _whole(body.get("minutes")))
    return view.host_state(c)


@router.delete("/api/class/{code}/collection", response_model=CollectionState, responses=ERRORS)
async def api_close(code: str, request: Request) -> dict[str, Any]:
    """Close the collection (assistant only): phones stop drawing and testing; the drawings
    stay, to download (and the next collection replaces them)."""
    room = _host_room(request, code)
    return view.host_state(collect.close_collection(request, room.code))


_GRID_SCHEMA = WithJsonSchema({"type": "array", "items": {"type": "number"}, "minItems": GRID * GRID,
                               "maxItems": GRID * GRID,
                               "description": "the pad's 28×28 drawing row by row: 784 numbers, 0 paper .. 1 ink"})


class DrawingRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    grid: Annotated[list, _GRID_SCHEMA] = Field(description="the drawing: 784 numbers, 0 paper .. 1 ink")
    label: int = Field(description="the label drawn: its index in the collection's labels")


class DrawingAdded(BaseModel):
    id: int = Field(description="the drawing's id (its thumbnail: drawings/{id}.png)")
    ask: int = Field(description="the label this phone is asked for next")
    mine: int = Field(description="this phone's drawings in the collection now")


@router.post("/api/class/{code}/collection/drawings", response_model=DrawingAdded, status_code=201, responses=ERRORS)
async def api_draw(code: str, body: DrawingRequest, request: Request) -> DrawingAdded:
    """A student's drawing (a seat in the class): ``grid`` and ``label``. At most
    ``collection_drawings_per_minute`` a minute and ``collection_max_per_student`` in all
    per student, ``collection_max_drawings`` per class (429)."""
    room = _room(request, code)
    sid, seat = _student(request, room)
    grid = grid_bytes(body.grid)  # a 422 with a message
    settings = settings_for(request.app)
    # Everything the store refuses is refused before the rate limit counts the drawing.
    check_add(_collection(request, room.code), body.label, grid, time.time(), sid,
              settings.collection_max_per_student, settings.collection_max_drawings)
    _limit(request, room.code, sid, "drawings")
    drawing = collect.add_drawing(request, room.code, sid, seat, body.label, grid)
    c = _collection(request, room.code)
    return DrawingAdded(id=drawing.id, ask=next_label(c, sid), mine=c.by_student.get(sid, 0))


@router.delete("/api/class/{code}/collection/drawings/last", response_model=DrawingAdded, responses=ERRORS)
async def api_undo(code: str, request: Request) -> DrawingAdded:
    """Take back this student's newest drawing still in the collection (409 when there is none)."""
    room = _room(request, code)
    sid, _seat = _student(request, room)
    undone = collect.undo_drawing(request, room.code, sid)
    if undone is None:
        raise InputError(_("You have no drawing in the collection to take back."), status_code=409)
    c = _collection(request, room.code)
    return DrawingAdded(id=undone, ask=next_label(c, sid), mine=c.by_student.get(sid, 0))


@router.delete("/api/class/{code}/collection/drawings/{drawing_id}", status_code=204, response_class=Response,
               responses=ERRORS)
async def api_remove(code: str, drawing_id: int, request: Request) -> Response:
    """Remove any drawing (assistant only): it leaves the projector and the dataset."""
    room = _host_room(request, code)
    if not collect.remove_drawing(request, room.code, drawing_id):
        raise InputError(_("There is no drawing %(n)s in this collection.") % {"n": drawing_id}, status_code=404)
    return Response(status_code=204)


@router.get("/api/class/{code}/collection/drawings/{drawing_id}.png", response_class=Response,
            responses={**PNG, **ERRORS})
async def api_drawing_png(code: str, drawing_id: int, request: Request) -> Response:
    """A drawing's thumbnail: the assistant's screens see any, a student only their own
    (anyone else's is a 404, as one that does not exist)."""
    room = _room(request, code)
    host = is_host(request, room)
    sid = None if host else _student(request, room)[0]
    store = _store(request)
    found = view.thumbnail(store, room.code, _collection(request, room.code), drawing_id)
    if found is None or (not host and found[0] != sid):
        raise InputError(_("There is no drawing %(n)s in this collection.") % {"n": drawing_id}, status_code=404)
    return _png(found[1])


@router.get("/api/class/{code}/collection/tests/{test_id}.png", response_class=Response,
            responses={**PNG, **ERRORS})
async def api_fooled_png(code: str, test_id: int, request: Request) -> Response:
    """A test drawing that fooled the model (one of the last ones), for the projector (assistant only)."""
    room = _host_room(request, code)
    for record in _collection(request, room.code).fooled_recent:
        if record.id == test_id:
            return _png(use.thumbnail_png(record.grid))
    raise InputError(_("There is no drawing %(n)s in this collection.") % {"n": test_id}, status_code=404)


class TrainStarted(BaseModel):
    job: str = Field(description="the training's id: its live view is /train/jobs/{job}")


@router.post("/api/class/{code}/collection/train", response_model=TrainStarted, status_code=201, responses=ERRORS)
async def api_train(code: str, request: Request) -> TrainStarted:
    """Train the lab's CNN on the class's drawings (assistant only): the phase becomes
    "train", then "test" when the run ends. 409 while a label has too few drawings."""
    room = _host_room(request, code)
    # Writes the dataset file, starts a process (or asks Valkey): in a worker thread, not on
    # the event loop (the request's language goes along: contextvars are copied).
    return TrainStarted(job=await run_in_threadpool(use.start_training, request, room.code))


class TrialRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    grid: Annotated[list, _GRID_SCHEMA] = Field(description="the drawing: 784 numbers, 0 paper .. 1 ink")
    label: int = Field(description="the label the student meant (the tally counts right / fooled it)")


class TrialAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")

    probabilities: list[float] = Field(description="one per label, summing to 1")
    predicted: int = Field(description="the most probable label")
    right: bool = Field(description="the model said the label the student meant")


@router.post("/api/class/{code}/collection/test", response_model=TrialAnswer, responses=ERRORS)
async def api_test(code: str, body: TrialRequest, request: Request) -> dict[str, Any]:
    """Ask the class's trained model about a student's drawing (a seat in the class): its
    probabilities; the projector's tally counts it. At most ``collection_drawings_per_minute``
    tests a minute per student."""
    room = _room(request, code)
    sid, seat = _student(request, room)
    grid = grid_bytes(body.grid)

    def ask() -> dict[str, Any]:
        _collection(request, room.code)
        _limit(request, room.code, sid, "tests")
        return use.test_drawing(request, room.code, sid, seat, body.label, grid)

    # The store, the rate limit (Valkey in shared mode) and the model's forward pass block:
    # in a worker thread, not on the event loop (the request's language goes along).
    return await run_in_threadpool(ask)
