"""Classrooms: an assistant projects the lesson, students follow it live on their phones.

The assistant creates a class and gets a short join code. Their control is bound to their
browser by a secret (an unguessable token in an HttpOnly cookie named after the class; the
store keeps only its SHA-256), never by the code, which everyone in the room can read.
Students join with the code, no account: their browser session id (app/session.py) names
them inside the class.

What a class holds (``Room``): the page the assistant shows (``view``: a same-site path and
query of a lesson page, e.g. ``/conv?preset=seed&kernel=seed&step=3``), the students, and at
most one quick question with the students' answers.

Where it lives: behind ``ClassStore``, a small interface with an in-memory implementation
(``MemoryClassStore``, one per process). Every change goes through ``ClassStore.update``,
which applies a function to the room atomically and then wakes every event stream of that
class (``ClassStore.subscribe``); a stream then reads the room and sends what changed. A
shared store (Redis: a hash per room, WATCH/MULTI or a Lua script for ``update``, pub/sub for
the wake-ups) can replace it without touching the routes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
from starlette.requests import Request

from app.appstate import shared
from app.errors import InputError
from app.i18n import gettext as _
from app.lesson import SECTIONS
from app.settings import Settings, settings_for
from core.numfmt import round_half_up

__all__ = [
    "ClassStore",
    "MemoryClassStore",
    "Question",
    "Room",
    "Student",
    "Subscription",
    "clean_view",
    "code_ok",
    "histogram",
    "host_cookie",
    "is_host",
    "make_question",
    "new_secret",
    "next_value_question",
    "normalise_code",
    "parse_answer",
    "store_for",
    "update_class",
]

T = TypeVar("T")

# Codes are read off a projector and typed on a phone: no 0/O, 1/I/L.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
# Six characters: 31⁶ ≈ 888 million codes, so that guessing one of the classes open, at the
# failed-look-up throttle (README, "Security"), takes longer than a school term.
CODE_LENGTH = 6
MAX_VIEW_LENGTH = 4096
# The pages a class can be shown: the lesson's pages (and the home page).
VIEW_PATHS = frozenset({"/"} | {s.path for s in SECTIONS})
# At most this many bars in the answers' histogram; the rest are counted as "other".
HISTOGRAM_BARS = 8


# ============================================================================== the data


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
    host_streams: int = 0  # the assistant's open screens

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


# ============================================================================== the store


class Subscription(Protocol):
    async def wait(self, timeout: float) -> bool:
        """True when the class changed since the last wait, False after ``timeout`` seconds."""

    def close(self) -> None: ...


class ClassStore(Protocol):
    """Where classes live. ``get`` returns a room to read (never to change); every change is
    ``update(code, change)``, atomic, which then wakes the class's subscribers."""

    def create(self, secret_hash: str, now: float, max_classes: int) -> Room:
        """A new class with a fresh code; a 503 ``InputError`` when ``max_classes`` run already."""

    def get(self, code: str) -> Room | None:
        """The class, or None (no such code, or it has ended)."""

    def update(self, code: str, change: Callable[[Room], T]) -> T:
        """Apply ``change`` to the class atomically and return its result, then wake every
        subscriber of the class. ``NoSuchClass`` when it has ended; an exception raised by
        ``change`` leaves the class as it was (``change`` checks before it writes)."""

    def touch(self, code: str, now: float) -> None:
        """The assistant is still there (wakes no stream)."""

    def delete(self, code: str) -> None:
        """End the class; its subscribers wake and find it gone."""

    def expire(self, now: float, idle_seconds: float, empty_seconds: float) -> list[str]:
        """End every class whose assistant has been silent longer than ``idle_seconds``, or
        where nobody has been (``Room.quiet_since``) for ``empty_seconds``."""

    def subscribe(self, code: str) -> Subscription:
        """Wake-ups for one event stream (call from the event loop; ``close`` it at the end)."""


class NoSuchClass(LookupError):
    """The class has ended (or never existed)."""


class _Waker:
    """One event stream's wake-up call: an asyncio.Event set from any thread."""

    def __init__(self, store: MemoryClassStore, code: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.store, self.code = store, code

    def wake(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.event.set()
        else:
            self.loop.call_soon_threadsafe(self.event.set)

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            return False
        self.event.clear()
        return True

    def close(self) -> None:
        self.store._unsubscribe(self)


class MemoryClassStore:
    """Classes in this process's memory: enough for one server process (``cnnlab`` runs one)."""

    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}
        self._subs: dict[str, set[_Waker]] = {}
        self._lock = threading.Lock()

    def create(self, secret_hash: str, now: float, max_classes: int) -> Room:
        with self._lock:
            if len(self._rooms) >= max_classes:
                raise InputError(_("Too many classes are running on this server. Please try again later."),
                                 status_code=503)
            while True:
                code = "".join(secrets.choice(CODE_ALPHABET) for _i in range(CODE_LENGTH))
                if code not in self._rooms:
                    break
            room = self._rooms[code] = Room(code=code, secret_hash=secret_hash, created=now, active=now)
            return room

    def get(self, code: str) -> Room | None:
        return self._rooms.get(code)

    def update(self, code: str, change: Callable[[Room], T]) -> T:
        with self._lock:
            room = self._rooms.get(code)
            if room is None:
                raise NoSuchClass(code)
            result = change(room)
            subs = list(self._subs.get(code, ()))
        for sub in subs:
            sub.wake()
        return result

    def touch(self, code: str, now: float) -> None:
        with self._lock:
            room = self._rooms.get(code)
            if room is not None:
                room.active = max(room.active, now)

    def delete(self, code: str) -> None:
        with self._lock:
            self._rooms.pop(code, None)
            subs = list(self._subs.get(code, ()))
        for sub in subs:
            sub.wake()

    def expire(self, now: float, idle_seconds: float, empty_seconds: float) -> list[str]:
        def over(room: Room) -> bool:
            quiet = room.quiet_since()
            return now - room.active > idle_seconds or (quiet is not None and now - quiet > empty_seconds)

        with self._lock:
            gone = [code for code, room in self._rooms.items() if over(room)]
        for code in gone:
            self.delete(code)
        return gone

    def subscribe(self, code: str) -> Subscription:
        waker = _Waker(self, code)
        with self._lock:
            self._subs.setdefault(code, set()).add(waker)
        return waker

    def _unsubscribe(self, waker: _Waker) -> None:
        with self._lock:
            subs = self._subs.get(waker.code)
            if subs is not None:
                subs.discard(waker)
                if not subs:
                    del self._subs[waker.code]


def update_class(request_or_app, code: str, change: Callable[[Room], T]) -> T:
    """``update`` of the app's store, for a route: a 404 with a sentence when the class has ended."""
    try:
        return store_for(request_or_app).update(code, change)
    except NoSuchClass:
        raise InputError(_("This class has ended."), status_code=404) from None


_last_sweep: dict[int, float] = {}
SWEEP_SECONDS = 1.0


def store_for(request_or_app) -> ClassStore:
    """The app's class store (made on first use), after forgetting classes idle too long."""
    app = getattr(request_or_app, "app", request_or_app)
    store = shared(app, "classes", MemoryClassStore)
    now = time.monotonic()
    settings = settings_for(app)
    if now - _last_sweep.get(id(store), 0.0) >= SWEEP_SECONDS or min(settings.class_idle_seconds,
                                                                      settings.class_empty_seconds) < SWEEP_SECONDS:
        _last_sweep[id(store)] = now
        store.expire(now, settings.class_idle_seconds, settings.class_empty_seconds)
    return store


# ============================================================================== codes and secrets


def normalise_code(text: str) -> str:
    """What a person typed -> a code to look up ("k7qx2 " -> "K7QX2")."""
    return "".join(text.split()).upper()[:16]


def code_ok(code: str) -> bool:
    return len(code) == CODE_LENGTH and all(c in CODE_ALPHABET for c in code)


def new_secret() -> tuple[str, str]:
    """(token for the assistant's cookie, its hash for the store)."""
    token = secrets.token_urlsafe(32)
    return token, _hash(token)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def host_cookie(code: str) -> str:
    return f"cnnlab_class_{code}"


def is_host(request: Request, room: Room) -> bool:
    token = request.cookies.get(host_cookie(room.code))
    return bool(token) and hmac.compare_digest(_hash(token), room.secret_hash)


# ============================================================================== views


def clean_view(url: str) -> str:
    """A view the class can be shown: a same-site path of a lesson page and its query,
    without ``lang`` (every student keeps their own language). Anything else: a 422."""
    url = (url or "").strip()
    if not url or len(url) > MAX_VIEW_LENGTH:
        raise InputError(_("The page address is missing or too long."), field="url")
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not url.startswith("/") or url.startswith("//") or "\\" in url:
        raise InputError(_("Only an address of this site (a path starting with “/”) can be shown to the class."),
                         field="url")
    if parts.path not in VIEW_PATHS:
        raise InputError(_("Only the lesson's pages can be shown to the class."), field="url")
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "lang"]
    return parts.path + (f"?{urlencode(pairs)}" if pairs else "")


# ============================================================================== quick questions

QUESTION_KINDS = ("next_value", "output_size", "param_count")


def make_question(kind: str, view: str | None, request: Request, settings: Settings, qid: int) -> Question:
    """A question of ``kind`` about ``view``, its answer computed by the engine; a 409 with a
    sentence when the view has no such question."""
    if kind not in QUESTION_KINDS:
        raise InputError(_("There is no question of that kind."), field="kind")
    if kind == "output_size":
        return output_size_question(view, request, settings, qid)
    if kind == "param_count":
        return param_count_question(view, settings, qid)
    return next_value_question(view, request, settings, qid)


def _view_params(view: str | None) -> tuple[str, dict[str, str]]:
    if not view:
        raise InputError(_("Open the convolution or pooling stepper first: the question is about what it shows."),
                         status_code=409)
    parts = urlsplit(view)
    if parts.path not in ("/conv", "/pool"):
        raise InputError(_("Quick questions work on the convolution and pooling steppers: open one of them first."),
                         status_code=409)
    return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))


def _invalid_view() -> InputError:
    return InputError(_("The page shown has invalid settings: fix them before asking."), status_code=409)


def _conv_view(params: dict[str, str], settings: Settings):
    """The /conv view's parsed state (``app.conv_state.read_state``); a 409 when it is invalid."""
    from app.conv_state import read_state

    parsed = read_state(params, settings)
    if not parsed.ok or parsed.geometry is None:
        raise _invalid_view()
    return parsed


def _pool_view(params: dict[str, str], request: Request):
    """The /pool view (``read_pool``); a 409 when it is invalid."""
    from app.routers.lesson_pages import read_pool

    pv = read_pool(params, request)
    if pv.errors or pv.out is None:
        raise _invalid_view()
    return pv


def output_size_question(view: str | None, request: Request, settings: Settings, qid: int) -> Question:
    """"How many rows does the output have?" on the view shown, with the output-size formula."""
    from core.conv import output_size_formula, resolve_padding

    path, params = _view_params(view)
    if path == "/conv":
        parsed = _conv_view(params, settings)
        s = parsed.state
        H = parsed.x.shape[1]
        HH = s.kernel.shape[2]
        pad = resolve_padding(s.padding, HH, s.dilation, s.stride, H)
        answer, solution = parsed.geometry.Ho, output_size_formula(H, HH, s.stride, pad, s.dilation)
    else:
        pv = _pool_view(params, request)
        if pv.kind == "global_avg":
            raise InputError(_("Global average pooling always gives one value per channel: choose max or "
                               "average pooling to ask this."), status_code=409)
        H = pv.src.x.shape[1]
        answer = pv.out.shape[1]
        solution = output_size_formula(H, pv.size, pv.stride or pv.size)
    return Question(id=qid, kind="output_size", page=path.strip("/"), view=view or "", answer=float(answer),
                    tolerance=0.0, solution=solution)


def param_count_question(view: str | None, settings: Settings, qid: int) -> Question:
    """"How many parameters does this layer learn?": (K·K·C + 1)·F weights and biases for the
    convolution shown; a pooling layer learns none (the answer is 0, a question worth asking)."""
    path, params = _view_params(view)
    if path == "/pool":
        return Question(id=qid, kind="param_count", page="pool", view=view or "", answer=0.0, tolerance=0.0,
                        solution=_("Pooling learns no parameters: 0"))
    parsed = _conv_view(params, settings)
    F, C, HH, WW = parsed.state.kernel.shape
    answer = (HH * WW * C + 1) * F
    return Question(id=qid, kind="param_count", page="conv", view=view or "", answer=float(answer), tolerance=0.0,
                    solution=f"({HH}·{WW}·{C} + 1)·{F} = {answer}")


def next_value_question(view: str | None, request: Request, settings: Settings, qid: int) -> Question:
    """"What value comes next?" on the view shown: the value of the step after the current one,
    computed by the engine from the view's own URL state (the same parsers as the pages)."""
    from app.conv_state import MODES
    from core.conv import conv_step, format_number

    path, params = _view_params(view)
    if path == "/conv":
        parsed = _conv_view(params, settings)
        s, g = parsed.state, parsed.geometry
        steps = s.F * g.Ho * g.Wo
        k = s.step + 1
        _check_next(k, steps)
        bias = None if s.bias is None else np.array(s.bias)
        st = conv_step(parsed.x, s.kernel, bias, stride=s.stride, padding=s.padding, dilation=s.dilation,
                       mode=MODES[s.mode], step=k)
        value, solution = st.value, st.text
        if s.relu:
            value = max(value, 0)
            solution += f"; ReLU({format_number(st.value)}) = {format_number(value)}"
        channel = st.filter + 1 if s.F > 1 else None
        row, col = st.row, st.col
    else:
        pv = _pool_view(params, request)
        k = pv.step + 1
        _check_next(k, pv.out.size)
        st = pv.step_at(k)
        value, solution = st.value, st.text
        channel = st.channel + 1 if pv.out.shape[0] > 1 else None
        row, col = st.row, st.col
    value = float(value)
    whole = value == round(value)
    tolerance = 0.0 if whole else max(0.01, 0.005 * abs(value))
    return Question(id=qid, kind="next_value", page=path.strip("/"), view=view or "", step=k, row=row + 1, col=col + 1, channel=channel,
                    answer=value, tolerance=tolerance, solution=solution)


def _check_next(k: int, steps: int) -> None:
    if k >= steps:
        raise InputError(_("This is the last step: there is no next value. Go back a step and ask again."),
                         status_code=409)


def parse_answer(text: str) -> float:
    """A typed number ("−3", "2,5", "78"); a 422 with a sentence otherwise."""
    from app.conv_state import parse_number

    text = (text or "").strip()
    if not text:
        raise InputError(_("Type a number before sending."), field="value")
    try:
        v = float(parse_number(text[:40], cell=True))
    except ValueError:
        raise InputError(_("“%(value)s” is not a number.") % {"value": text[:40]}, field="value") from None
    if not math.isfinite(v) or abs(v) > 1e12:
        raise InputError(_("“%(value)s” is not a number.") % {"value": text[:40]}, field="value")
    return v


def format_value(v: float) -> str:
    from core.conv import format_number

    return format_number(int(v) if v == round(v) and abs(v) < 2**53 else v)


def histogram(q: Question) -> list[dict]:
    """The answers grouped by value (as shown, so 2.50 and 2.5 are one bar), most common first:
    [{"label", "count", "right"}]; beyond HISTOGRAM_BARS, one "other" bar (label None)."""
    groups: dict[str, list[float]] = {}
    for v in list(q.answers.values()):
        groups.setdefault(format_value(float(round_half_up(v, 4))), []).append(v)
    bars = sorted(({"label": label, "count": len(vs), "value": vs[0], "right": q.is_right(vs[0])}
                   for label, vs in groups.items()), key=lambda b: (-b["count"], b["value"]))
    if len(bars) > HISTOGRAM_BARS:
        rest = bars[HISTOGRAM_BARS - 1:]
        bars = bars[:HISTOGRAM_BARS - 1] + [{"label": None, "count": sum(b["count"] for b in rest), "value": None,
                                              "right": False}]
    return bars
