"""Classrooms (app/classroom/): pages, the live event stream and the JSON API.

Pages: ``/class`` (join with a code, or start a class), ``/class/{code}`` (a student follows
the assistant), ``/class/{code}/present`` (the assistant's projector page: code and QR code),
``/class/{code}/bar`` (the class bar that static/js/classroom.js puts on every lesson page of
a browser in a class), ``/class/{code}/qr.svg`` and ``/class/{code}/events`` (server-sent
events: ``stepper``, ``view``, ``count``, ``seated``, ``seats``, ``panel``, ``collection``, ``closed``).
The class's own dataset (issue 15) has its routes in app/routers/collection.py.

API (every change of a class; the pages' buttons post here and the result comes back to
every screen through the event stream): ``/api/class/{code}`` and ``…/view``,
``…/question``, ``…/reveal``, ``…/answer``. Only the browser holding the class's secret
cookie may show views, ask, reveal or end the class; anyone else gets a 403 with a message.
"""

from __future__ import annotations

import asyncio
import functools
import io
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import segno
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.responses import HTMLResponse, RedirectResponse

from cnnlab.app import seats
from cnnlab.app.backend import SharedStoreDown
from cnnlab.app.classroom import (
    NoSuchClass,
    Room,
    clean_view,
    code_ok,
    format_value,
    histogram,
    host_cookie,
    is_host,
    make_question,
    new_secret,
    normalise_code,
    parse_answer,
    store_for,
    update_class,
)
from cnnlab.app.classroom.collection_store import collection_store_for
from cnnlab.app.classroom.collection_view import collection_context, collection_events
from cnnlab.app.errors import InputError
from cnnlab.app.eventstream import HEARTBEAT_SECONDS, Event, event_stream
from cnnlab.app.i18n import gettext as _
from cnnlab.app.inprocess import asgi_get
from cnnlab.app.lesson import SECTIONS, is_served
from cnnlab.app.ratelimit import address_waits, hit_address, limit, limit_address
from cnnlab.app.session import session_id
from cnnlab.app.settings import settings_for
from cnnlab.app.templating import render, render_text, request_locale

# Every route is ``async``: classes are changed and read on the event loop only, so a stream
# never sees a room half-changed by a worker thread (and no thread waits for the GIL).
router = APIRouter(tags=["class"])

# The assistant's sign of life is written at most this often (a write wakes no stream).
TOUCH_SECONDS = 5.0


# ============================================================================== helpers


def _find(request: Request, code: str) -> Room | None:
    """The class with this (normalised) code. Failed look-ups are throttled per address, and
    while an address is over the throttle every look-up of it waits (a 429), so guessing
    codes learns nothing faster (README, "Security")."""
    address_waits(request, "lookups")
    room = store_for(request).get(code) if code_ok(code) else None
    if room is None:
        hit_address(request, "lookups")
    return room


def _room(request: Request, code: str) -> Room:
    code = normalise_code(code)
    room = _find(request, code)
    if room is None:
        raise InputError(_("There is no class with the code “%(code)s”. Check the code on the projector: "
                           "the class may have ended.") % {"code": code[:16]}, status_code=404)
    return room


def _host_room(request: Request, code: str) -> Room:
    """The class, when this browser is its assistant; otherwise a 403 with a message."""
    room = _room(request, code)
    if not is_host(request, room):
        raise InputError(_("Only the assistant who started this class can do this."), status_code=403)
    _touch(request, room)
    return room


def _touch(request: Request, room: Room) -> None:
    now = time.time()
    every = min(TOUCH_SECONDS, settings_for(request.app).class_idle_seconds / 4)
    if now - room.active >= every:
        store_for(request).touch(room.code, now)


async def _body(request: Request) -> dict[str, Any]:
    """A JSON object or a form, as a dict of strings and values."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = await request.json()
        except ValueError:
            raise InputError(_("The request body is not valid JSON.")) from None
        if not isinstance(data, dict):
            raise InputError(_("The request body must be a JSON object."))
        return data
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def on_loopback(request: Request) -> bool:
    """The page was opened as localhost: an address no phone in the room can reach."""
    return (request.url.hostname or "") in LOOPBACK_HOSTS


@functools.cache
def lan_address() -> str | None:
    """This machine's address on the local network: the interface a packet to a private
    address would leave by (connecting a UDP socket sends nothing). None with no network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def join_url(request: Request, code: str | None = None) -> str:
    """Where students join, as the projector shows it (and its QR code). An assistant who
    opened the app as localhost gets the machine's network address in its place."""
    base = request.base_url
    if on_loopback(request) and (address := lan_address()):
        base = base.replace(hostname=address)
    base_text = str(base).rstrip("/")
    return f"{base_text}/class/{code}" if code else f"{base_text}/class"


def _views(request: Request) -> list[dict]:
    """The lesson's pages, as links the assistant opens to start."""
    seen, out = set(), []
    for s in SECTIONS:
        if s.href not in seen and is_served(request.app, s.path):
            seen.add(s.href)
            out.append({"href": s.href, "number": s.number, "title": _(s.title)})
    return out


# ============================================================================== what screens show


def panel_context(room: Room, host: bool, sid: str | None) -> dict[str, Any]:
    q = room.question
    ctx: dict[str, Any] = {"code": room.code, "host": host, "q": q, "connected": room.connected}
    if q is None:
        return ctx
    mine = q.answers.get(sid) if sid else None
    bars = histogram(q) if host else []
    top = max((b["count"] for b in bars), default=1)
    ctx.update({
        # Students who answered and then closed their page still count among those asked.
        "connected": max(room.connected, len(q.answers)),
        "answered": len(q.answers), "bars": bars, "top": top,
        "answer": format_value(q.answer) if q.revealed else None,
        "mine": None if mine is None else format_value(mine),
        "mine_right": None if mine is None else q.is_right(mine),
    })
    return ctx


def bar_context(request: Request, room: Room, host: bool, following: bool, present: bool = False) -> dict[str, Any]:
    sid = None if host else session_id(request)
    return {"room": room, "code": room.code, "host": host, "following": following, "present": present,
            "join_url": join_url(request), "on_loopback": on_loopback(request),
            "panel": panel_context(room, host, sid), "seats": seats.seat_view(room) if present else None}


# ------------------------------------------------------------------ the stepper, prepared once
#
# When the assistant steps, every following phone would otherwise fetch the same stepper
# fragment at the same moment: 100 renders of one view in a burst (p95 ~300 ms on 2 cores).
# Instead the stream sends it along: rendered once per view and language (an in-process
# request through the whole app, exactly what a phone's fetch would get), shared by every
# stream through one task, and sent as a ``stepper`` event (first line the view, then the
# HTML) just before the ``view`` event. The follow page uses it when only the step changed.

STEPPER_TARGETS = {"/conv": "conv-stepper", "/pool": "pool-stepper"}
_PREPARED_KEPT = 32
_prepared: OrderedDict[tuple[str, str], asyncio.Task] = OrderedDict()


async def _render_view(request: Request, view: str, locale: str) -> str | None:
    """The stepper fragment of ``view`` in ``locale``, as the app answers a phone's fetch."""
    parts = urlsplit(view)
    settings = settings_for(request.app)
    status, _headers, body = await asgi_get(request.app, parts.path, parts.query, [
        (b"host", request.headers.get("host", "localhost").encode("latin-1")),
        (b"hx-request", b"true"), (b"hx-target", STEPPER_TARGETS[parts.path].encode()),
        (b"cookie", f"{settings.locale_cookie}={locale}".encode())])
    return body.decode() if status == 200 else None


async def prepared_stepper(request: Request, view: str, locale: str) -> str | None:
    """The stepper of ``view`` for ``locale``, rendered by the first stream that asks."""
    if urlsplit(view).path not in STEPPER_TARGETS:
        return None
    key = (view, locale)
    task = _prepared.get(key)
    if task is None or task.get_loop() is not asyncio.get_running_loop():  # tests run several loops
        task = _prepared[key] = asyncio.ensure_future(_render_view(request, view, locale))
        while len(_prepared) > _PREPARED_KEPT:
            _prepared.popitem(last=False)
    try:
        return await asyncio.shield(task)
    except Exception:  # noqa: BLE001 — the phone then fetches the view itself
        return None


def _changes(request: Request, room: Room, host: bool, sid: str | None, sent: dict) -> list[tuple[str, str]]:
    """The events this screen needs now that the class changed: only what it has not seen."""
    out = []
    if not host and sent.get("view") != room.view_seq:
        sent["view"] = room.view_seq
        out.append(("view", room.view or ""))
    q = room.question
    if host:
        if sent.get("count") != room.connected:
            sent["count"] = room.connected
            out.append(("count", str(room.connected)))
        seat_view = seats.seat_view(room)
        if sent.get("seats") != seat_view:
            sent["seats"] = seat_view
            out.append(("seated", str(len(seat_view["seats"]))))
            out.append(("seats", render_text(request, "_class_seats.html", {"v": seat_view})))
        key = (q.id, q.revealed, room.answers_seq, room.connected) if q else None
    else:
        key = (q.id, q.revealed, q.answers.get(sid)) if q else None
    if sent.get("panel", ()) != key:
        sent["panel"] = key
        out.append(("panel", render_text(request, "_class_panel.html", {"p": panel_context(room, host, sid)})))
    # The class's own dataset (app/classroom/collection_view.py).
    out.extend(collection_events(request, room, host, sid, sent))
    return out


# ============================================================================== pages


LOOKUPS_429 = {"description": "too many codes looked up in vain from this address, or too many joins"}
PAGE_ERRORS = {403: {"description": "not allowed for this browser, or the class is full or locked"},
               404: {"description": "no such class (or it has ended)"},
               429: LOOKUPS_429}
PAGE_REDIRECT = {303: {"description": "see the address in Location"}}


@router.get("/class", name="class_join", response_class=HTMLResponse)
async def class_join(request: Request) -> HTMLResponse:
    """Join a class with its code, or start one (for the assistant)."""
    return render(request, "class_join.html", {"typed": "", "error": None, "join_url": join_url(request)},
                  fragment=None)


@router.get("/class/go", name="class_go", response_class=HTMLResponse,
            responses={**PAGE_REDIRECT, 404: {"description": "no such class: the form again, with a message"},
                       422: {"description": "no code typed"}, 429: LOOKUPS_429})
async def class_go(request: Request, code: str = "") -> Response:
    """The join form: ``code`` as typed -> that class's page, or the form again with a message."""
    typed = normalise_code(code)
    room = _find(request, typed) if typed else None
    if room is None:
        return _join_again(request, typed)
    return RedirectResponse(f"/class/{room.code}", status_code=303)


def _join_again(request: Request, typed: str) -> HTMLResponse:
    """The join form again, saying why ``typed`` leads to no class (404; 422 when empty)."""
    error = (_("Type the code shown on the projector.") if not typed else
             _("There is no class with the code “%(code)s”. Check the code on the projector: "
               "the class may have ended.") % {"code": typed})
    return render(request, "class_join.html", {"typed": typed, "error": error, "join_url": join_url(request)},
                  fragment=None, status_code=404 if typed else 422)


@router.post("/class", name="class_create", status_code=303, response_class=Response,
             responses={303: {"description": "the new class's projector page"},
                        429: {"description": "too many classes started from this address"},
                        503: {"description": "too many classes on this server"}})
async def class_create(request: Request) -> Response:
    """Start a class: this browser becomes its assistant (a secret cookie), then the projector page."""
    settings = settings_for(request.app)
    limit_address(request, "classes")
    token, secret_hash = new_secret()
    room = store_for(request).create(secret_hash, time.time(), settings.max_classes)
    response = RedirectResponse(f"/class/{room.code}/present", status_code=303)
    response.set_cookie(host_cookie(room.code), token, httponly=True, samesite="strict", path="/")
    return response


@router.get("/class/{code}", name="class_follow", response_class=HTMLResponse,
            responses={**PAGE_REDIRECT, **PAGE_ERRORS})
async def class_follow(code: str, request: Request) -> Response:
    """A student's screen: the page the assistant shows, live, and the quick questions."""
    room = _find(request, normalise_code(code))  # a 429 past the failed look-ups' throttle
    if room is None:  # no such class (mistyped, or ended): the form to type the code again
        return _join_again(request, normalise_code(code))
    if is_host(request, room):
        return RedirectResponse(f"/class/{room.code}/present", status_code=303)
    seats.take_seat(request, room)
    room = _room(request, code)
    return render(request, "class_follow.html", {**bar_context(request, room, False, True), "view": room.view or ""},
                  fragment=None)


@router.get("/class/{code}/present", name="class_present", response_class=HTMLResponse, responses=PAGE_ERRORS)
async def class_present(code: str, request: Request) -> HTMLResponse:
    """The assistant's projector page: the code, big, a QR code of the join address, and the lesson."""
    room = _host_room(request, code)
    return render(request, "class_present.html", {**bar_context(request, room, True, False, present=True),
                                                  "follow_url": join_url(request, room.code),
                                                  "views": _views(request),
                                                  **collection_context(request, room)}, fragment=None)


@router.get("/class/{code}/bar", name="class_bar", response_class=HTMLResponse, responses=PAGE_ERRORS)
async def class_bar(code: str, request: Request) -> HTMLResponse:
    """The class bar for a lesson page: the assistant's (count, question) or a student's (follow again)."""
    room = _room(request, code)
    host = is_host(request, room)
    if host:
        _touch(request, room)
    else:
        seats.take_seat(request, room)
    return render(request, "_class_bar.html", bar_context(request, room, host, False), fragment=None)


@router.get("/class/{code}/qr.svg", name="class_qr", response_class=Response,
            responses={200: {"content": {"image/svg+xml": {}}, "description": "the QR code"}, **PAGE_ERRORS})
async def class_qr(code: str, request: Request) -> Response:
    """A QR code of this class's join address (on this server's host name), as SVG."""
    room = _room(request, code)
    qr = segno.make(join_url(request, room.code), error="m")
    buffer = io.BytesIO()
    qr.save(buffer, kind="svg", scale=10, border=2, xmldecl=False, svgns=True, title=room.code)
    return Response(buffer.getvalue(), media_type="image/svg+xml", headers={"cache-control": "private, max-age=3600"})


@router.get("/class/{code}/events", name="class_events",
            responses={200: {"content": {"text/event-stream": {}}, "description": "the event stream"},
                       403: PAGE_ERRORS[403], 429: {"description": "too many event streams open"}})
async def class_events(code: str, request: Request) -> StreamingResponse:
    """Server-sent events of one class for this screen: ``view`` (students: the path to show;
    a stepper view is preceded by ``stepper``: the path, a newline, its stepper fragment;
    the newest one: a stream sends the class as it is when it wakes, so a view replaced
    before then is skipped, never replayed — a phone shows what the projector shows),
    ``count`` (the assistant: students connected), ``seated`` and ``seats`` (the assistant:
    seats held, and the seats panel as HTML), ``panel`` (the quick question, as HTML),
    ``collection`` (the class's own dataset, JSON: app/routers/collection.py), ``closed``
    (the class ended, or does not exist: a screen left open across a restart of the server
    is told so, and its stream ends; also when the server stops)."""
    code = normalise_code(code)
    room = _find(request, code)
    host = room is not None and is_host(request, room)
    sid = None if room is None or host else seats.take_seat(request, room)

    def closed(reason: str) -> Event:
        return Event("closed", render_text(request, "_class_closed.html", {"reason": reason}))

    async def produce(_last_id: str | None) -> AsyncIterator[Event]:
        if room is None:
            yield closed("gone")
            return
        store = store_for(request)
        sub = store.subscribe(code)
        grace = settings_for(request.app).class_seat_grace_seconds
        try:
            # The open screen holds the seat (app/seats.py); the assistant's keeps the class.
            update_class(request, code, seats.connect(sid, +1))
            sent: dict[str, Any] = {}
            while True:
                # Through store_for: every stream's wake-up also ends classes idle too long.
                now_room = store_for(request).peek(code)
                if now_room is None:
                    yield closed("ended")
                    return
                if host:
                    _touch(request, now_room)
                    seats.free_expired(store, code, time.time(), grace)
                elif sid not in now_room.students:  # the assistant freed this seat
                    yield closed("removed")
                    return
                for name, data in _changes(request, now_room, host, sid, sent):
                    if name == "view" and data:
                        html = await prepared_stepper(request, data, request_locale(request))
                        if html is not None:
                            yield Event("stepper", f"{data}\n{html}")
                    yield Event(name, data)
                # Woken by any change; at least every heartbeat, so the assistant's open
                # screen keeps the class alive.
                await sub.wait(HEARTBEAT_SECONDS)
        finally:
            sub.close()
            try:
                store.update(code, seats.connect(sid, -1))
            except (NoSuchClass, *SharedStoreDown):  # ended, or the shared store is away
                pass

    return event_stream(request, produce, lambda: closed("stopping"),
                        session=None if room is None else session_id(request))


# ============================================================================== JSON API


class ClassView(BaseModel):
    code: str = Field(description="the join code")
    students: int = Field(description="students connected now")
    joined: int = Field(description="students seated (a screen open, or closed a moment ago)")
    view: str | None = Field(description="the page the assistant shows (path and query)")
    question: dict[str, Any] | None = Field(description="the open quick question, if any")
    host: bool = Field(description="true for the assistant's browser")
    locked: bool = Field(False, description="closed to new students")
    seats: list[dict[str, Any]] | None = Field(
        None, description="the assistant only: every seat, its number and whether a screen is open")


def _question_json(room: Room, host: bool, sid: str | None) -> dict[str, Any] | None:
    q = room.question
    if q is None:
        return None
    out: dict[str, Any] = {"id": q.id, "kind": q.kind, "page": q.page, "view": q.view, "step": q.step,
                           "row": q.row, "col": q.col, "channel": q.channel, "answered": len(q.answers),
                           "revealed": q.revealed}
    if sid is not None and sid in q.answers:
        out["mine"] = q.answers[sid]
    if q.revealed:
        out.update(answer=q.answer, tolerance=q.tolerance, solution=q.solution)
    if host:
        out["histogram"] = [{"label": b["label"], "count": b["count"], "right": b["right"] if q.revealed else None}
                            for b in histogram(q)]
    return out


def _class_json(request: Request, room: Room) -> ClassView:
    # The class as it is now: a route's room was read before its change (and a shared
    # store's room is a copy).
    room = store_for(request).get(room.code) or room
    host = is_host(request, room)
    sid = getattr(request.state, "session_id", None)
    return ClassView(code=room.code, students=room.connected, joined=len(room.students), view=room.view,
                     question=_question_json(room, host, None if host else sid), host=host, locked=room.locked,
                     seats=seats.seat_list(room) if host else None)


ERRORS = {403: {"description": "only the class's assistant may do this"},
          404: {"description": "no such class (or it has ended)"},
          409: {"description": "not possible now (no question open, no view to ask about…); `detail` says why"},
          422: {"description": "the input cannot be used; `detail` says why"},
          429: LOOKUPS_429}


@router.get("/api/class/{code}", response_model=ClassView, responses=ERRORS)
async def api_class(code: str, request: Request) -> ClassView:
    """The class now: code, students, the view shown and the open question (its answer once revealed)."""
    return _class_json(request, _room(request, code))


@router.post("/api/class/{code}/view", response_model=ClassView, responses=ERRORS)
async def api_view(code: str, request: Request) -> ClassView:
    """Show a page to the class: ``url`` = a lesson page's path and query (assistant only)."""
    room = _host_room(request, code)
    view = clean_view(str((await _body(request)).get("url", "")))

    def show(r: Room) -> None:
        if r.view != view:
            r.view = view
            r.view_seq += 1

    update_class(request, room.code, show)
    return _class_json(request, room)


@router.post("/api/class/{code}/question", response_model=ClassView, responses=ERRORS)
async def api_ask(code: str, request: Request) -> ClassView:
    """Ask the class about the view shown (assistant only): ``kind`` = ``next_value`` (what
    value comes next? the default), ``output_size`` (how many rows does the output have?) or
    ``param_count`` (how many parameters does this layer learn?)."""
    room = _host_room(request, code)
    kind = str((await _body(request)).get("kind") or "next_value")
    question = make_question(kind, room.view, request, settings_for(request.app), room.questions + 1)

    def ask(r: Room) -> None:
        r.questions += 1
        question.id = r.questions
        r.question = question
        r.answers_seq += 1

    update_class(request, room.code, ask)
    return _class_json(request, room)


@router.post("/api/class/{code}/reveal", response_model=ClassView, responses=ERRORS)
async def api_reveal(code: str, request: Request) -> ClassView:
    """Show everyone the right answer and its worked solution (assistant only)."""
    room = _host_room(request, code)

    def reveal(r: Room) -> None:
        if r.question is None:
            raise InputError(_("There is no question to reveal: ask one first."), status_code=409)
        r.question.revealed = True

    update_class(request, room.code, reveal)
    return _class_json(request, room)


@router.delete("/api/class/{code}/question", response_model=ClassView, responses=ERRORS)
async def api_close_question(code: str, request: Request) -> ClassView:
    """Put the question away (assistant only)."""
    room = _host_room(request, code)

    def close(r: Room) -> None:
        r.question = None
        r.answers_seq += 1

    update_class(request, room.code, close)
    return _class_json(request, room)


@router.post("/api/class/{code}/answer", response_model=ClassView,
             responses={**ERRORS, 429: {"description": "too many answers in a short time"}})
async def api_answer(code: str, request: Request) -> ClassView:
    """A student's answer to the open question: ``value`` (a number; the last one sent counts)."""
    room = _room(request, code)
    if is_host(request, room):
        raise InputError(_("The assistant asks the questions; students answer them."), status_code=403)
    sid = session_id(request)
    if sid not in room.students:
        raise InputError(_("Join the class before answering."), status_code=403)
    limit(request, "answers")
    value = parse_answer(str((await _body(request)).get("value", "")))

    def answer(r: Room) -> None:
        q = r.question
        if q is None or q.revealed:
            raise InputError(_("There is no open question right now."), status_code=409)
        q.answers[sid] = value
        r.answers_seq += 1

    update_class(request, room.code, answer)
    return _class_json(request, room)


@router.delete("/api/class/{code}", status_code=204, responses=ERRORS)
async def api_end(code: str, request: Request) -> Response:
    """End the class (assistant only): every screen is told, and the code stops working."""
    room = _host_room(request, code)
    store_for(request).delete(room.code)
    collection_store_for(request).delete(room.code)  # its drawings end with it
    response = Response(status_code=204)
    response.delete_cookie(host_cookie(room.code), path="/")
    return response

