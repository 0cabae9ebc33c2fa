"""What one request may cost, worked out from the request before anything is computed.

One ``POST /api/conv`` (a 1024² upload, 64 kernels of 15×15, padding 64: a 51 KB body) once
made the server hold 2.86 GB and answer 257 MB of JSON. Every route that computes now
estimates its cost first and refuses past a limit (``Settings``, ``CNNLAB_MAX_…``) with 422
and a sentence naming the limit:

- a convolution (``/api/conv``, the /conv page and its pictures at full resolution):
  its multiply-adds F·Ho·Wo·C·HH·WW (``max_conv_work``), the numbers of its feature maps
  F·Ho·Wo (``max_map_values``, 8 bytes each) and, answered as JSON, the numbers in the answer
  (``max_json_values``); Ho and Wo come from the output-size formula (``conv_cost``);
- JSON bodies, before they are parsed (``BodyBudget``): at most ``max_json_values`` values,
  ``MAX_JSON_LISTS`` lists and objects, nested at most ``MAX_JSON_DEPTH`` deep (a deeper body
  would exhaust Python's recursion while parsed or walked: 400);
- routes whose bodies are small by nature (a drawn digit to classify) get a byte cap of their
  own (``SMALL_BODIES``), checked before a byte is parsed;
- a saved model may be as large as the largest model the training form allows, and no
  larger (``model_file_limit``: worked out from the form's bounds, so every model the lab
  trains can be loaded back).

The rest is bounded by construction: ``/api/conv/step`` computes one position; ``/api/pool``
answers at most as many numbers as its input has (already bounded as a JSON body) after at
most 2·size passes over it; the /pool and /activation pages read at most 16×16 numbers a
channel, /grid a picture at 32 pixels, /pipeline an 8×8 digit; a stored picture has at most ``max_stored_side`` pixels a
side. ``benchmarks/worst_request.py`` measures the server's memory on the largest of each.
"""

from __future__ import annotations

import functools
import itertools
import re
import threading
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cnnlab.app.errors import InputError, input_error_handler
from cnnlab.app.guards import BodyTooLarge
from cnnlab.app.i18n import gettext as _
from cnnlab.app.i18n import use_locale
from cnnlab.app.images import format_bytes, format_number
from cnnlab.app.jobs import TrainSpec, build_model, export_npz
from cnnlab.app.settings import Settings, settings_for
from cnnlab.app.templating import request_locale
from cnnlab.core.conv import conv_geometry

__all__ = ["MAX_JSON_DEPTH", "MAX_JSON_LISTS", "SMALL_BODIES", "BodyBudget", "BudgetError", "ConvCost", "check_conv",
           "conv_cost", "json_body_problem", "largest_model_spec", "model_file_limit"]

# The deepest body a route reads is a kernel F×C×HH×WW inside an object: 5 levels.
MAX_JSON_DEPTH = 32
# The most lists a route reads: a 4-channel 1024-row input (4,096) and 64×4 kernels of 15 rows.
MAX_JSON_LISTS = 16_384
# A drawn digit is at most 28×28 numbers: 32 bytes each (any way of writing them: 0.123456789,
# 255, URL-encoded commas) is 25 KB, and the form's other fields fit in the rest.
PREDICT_BODY_BYTES = 32 * 1024
SMALL_BODIES: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"/(api/train|train/jobs)/[^/]+/predict"), PREDICT_BODY_BYTES),
    (re.compile(r"/(api/train/[^/]+/layers|train/jobs/[^/]+/inside)$"), PREDICT_BODY_BYTES),  # the layer view
)
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_DEPTH_CHUNK = 1 << 20


class BudgetError(InputError):
    """A request that would cost more than a limit allows (422, translated)."""


# ============================================================================== convolution


@dataclass(frozen=True)
class ConvCost:
    """A convolution's size: F filters over C channels, an Ho×Wo output, an HH×WW kernel."""

    F: int
    C: int
    Ho: int
    Wo: int
    HH: int
    WW: int

    @property
    def values(self) -> int:
        return self.F * self.Ho * self.Wo

    @property
    def work(self) -> int:
        return self.values * self.C * self.HH * self.WW


def conv_cost(C: int, H: int, W: int, F: int, HH: int, WW: int, stride=1, padding=0, dilation=1) -> ConvCost:
    """The output size (the output-size formula) and work of a convolution layer, from its
    shapes alone. Raises core.conv.OutputSizeError when the kernel does not fit."""
    g = conv_geometry(H, W, HH, WW, stride, padding, dilation)
    return ConvCost(F, C, g.Ho, g.Wo, HH, WW)


def check_conv(cost: ConvCost, settings: Settings, *, answer_values: bool) -> None:
    """Raises ``BudgetError`` when ``cost`` is past a limit; ``answer_values``: the numbers
    are answered as JSON, so ``max_json_values`` applies too."""
    product = f"{cost.F}·{cost.Ho}·{cost.Wo}"
    if answer_values and cost.values > settings.max_json_values:
        raise BudgetError(_("The answer would have %(n)s numbers (F·Ho·Wo = %(product)s); one answer may carry at most "
                            "%(limit)s. Use fewer filters, a smaller picture or a larger stride.")
                          % {"n": format_number(cost.values), "product": product,
                             "limit": format_number(settings.max_json_values)})
    if cost.values > settings.max_map_values:
        raise BudgetError(_("The feature maps would have %(n)s numbers (F·Ho·Wo = %(product)s); at most %(limit)s are "
                            "computed for one request. Use fewer filters, a smaller picture or "
                            "a larger stride.")
                          % {"n": format_number(cost.values), "product": product,
                             "limit": format_number(settings.max_map_values)})
    if cost.work > settings.max_conv_work:
        raise BudgetError(_("This convolution needs %(n)s multiply-adds (F·Ho·Wo·C·HH·WW = %(product)s); at most "
                            "%(limit)s are computed for one request. Use fewer or smaller "
                            "filters, a smaller picture or a larger stride.")
                          % {"n": format_number(cost.work),
                             "product": f"{product}·{cost.C}·{cost.HH}·{cost.WW}",
                             "limit": format_number(settings.max_conv_work)})


# ============================================================================== request bodies


def _depth(body: bytes) -> int:
    """How deeply the lists and objects of a JSON body nest, counting brackets (those inside
    strings too: no body this app reads has dozens of them), a megabyte at a time."""
    brackets = body.translate(None, _NOT_BRACKETS)
    deepest = level = 0
    for start in range(0, len(brackets), _DEPTH_CHUNK):
        chunk = np.frombuffer(brackets, np.uint8, count=min(_DEPTH_CHUNK, len(brackets) - start), offset=start)
        # "[" 0x5B and "{" 0x7B have bit 1 set, "]" 0x5D and "}" 0x7D do not: +1 and −1.
        levels = np.cumsum((chunk & 2).astype(np.int64) - 1) + level
        deepest = max(deepest, int(levels.max()))
        level = int(levels[-1])
    return deepest


def json_body_problem(body: bytes, settings: Settings) -> tuple[str, int] | None:
    """Why ``body`` must not be parsed (a translated sentence and a status), or None. Counted
    on the bytes, because parsing is what costs: a list is 64 bytes of Python, a number 32."""
    lists = body.count(b"[") + body.count(b"{")
    if lists > MAX_JSON_DEPTH and _depth(body) > MAX_JSON_DEPTH:  # fewer lists cannot nest deeper
        return _("The JSON body is nested too deeply: at most %(limit)s levels of lists and objects are accepted.") % {
            "limit": MAX_JSON_DEPTH}, 400
    if lists > MAX_JSON_LISTS:
        return _("The JSON body has %(n)s lists and objects; at most %(limit)s are accepted.") % {
            "n": format_number(lists), "limit": format_number(MAX_JSON_LISTS)}, 413
    # Every value but the last is followed by a comma; a string counts twice (a short one is
    # 60 bytes of Python, a number 32).
    values = body.count(b",") + 1 + body.count(b'"') // 2
    if values > settings.max_json_values:
        return _("The JSON body has about %(n)s values; at most %(limit)s are accepted.") % {
            "n": format_number(values), "limit": format_number(settings.max_json_values)}, 413
    return None


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return True  # FastAPI may read a body without a type as JSON


def _small_limit(path: str) -> int | None:
    return next((limit for pattern, limit in SMALL_BODIES if pattern.fullmatch(path)), None)


class BodyBudget:
    """Pure ASGI, inside ``RequestGuard`` (which caps every body at 16 MB): reads a JSON body,
    or any body of a ``SMALL_BODIES`` route, whole and checks it before the route parses it;
    the route then reads the same bytes. Other bodies (uploads) pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        small = _small_limit(scope["path"])
        json_body = _is_json(scope)
        if small is None and not json_body:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        declared = request.headers.get("content-length", "")
        problem: tuple[str, int] | None = None
        body = b""
        with use_locale(request_locale(request)):
            too_large = None if small is None else (
                _("The request is too large: at most %(limit)s are accepted here.") % {"limit": format_bytes(small)}, 413)
            if too_large and declared.isdigit() and int(declared) > small:
                problem = too_large
            else:
                try:
                    read = await _read(receive, small)
                except BodyTooLarge as exc:  # past RequestGuard's cap for every body
                    problem = (str(exc.detail), 413)
                else:
                    if read is None:
                        problem = too_large
                    else:
                        body = read
                        if json_body:
                            problem = json_body_problem(body, settings_for(scope["app"]))
        if problem is not None:
            response = await input_error_handler(request, InputError(problem[0], status_code=problem[1]))
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _read(receive: Receive, limit: int | None) -> bytes | None:
    """The whole body; None past ``limit`` bytes."""
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        received += len(chunk)
        if limit is not None and received > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


# ============================================================================== saved models

# A saved model's settings are text whose length varies with its numbers (a learning rate of
# 0.1 or 0.123456789, a seed of 0 or 2147483647).
MODEL_FILE_SLACK = 4096


def _bounds(name: str) -> tuple[int, int]:
    """The smallest and largest value the training form (TrainSpec) allows for ``name``."""
    lo = hi = None
    for rule in TrainSpec.model_fields[name].metadata:
        lo = getattr(rule, "ge", lo)
        hi = getattr(rule, "le", hi)
    return lo, hi


def largest_model_spec() -> TrainSpec:
    """The allowed architecture with the most parameters: the most filters and hidden units,
    and the kernel, padding and pooling that leave the largest map to flatten (the dense
    layer's flattened × hidden weights outweigh the rest; the larger kernel breaks a tie)."""
    candidates = []
    for dataset, kernel, padding, pool_size in itertools.product(
            ("digits", "mnist"), range(_bounds("kernel")[0], _bounds("kernel")[1] + 1),
            range(_bounds("padding")[0], _bounds("padding")[1] + 1),
            range(_bounds("pool_size")[0], _bounds("pool_size")[1] + 1)):
        try:
            spec = TrainSpec(dataset=dataset, filters=_bounds("filters")[1], kernel=kernel, padding=padding,
                             pool_size=pool_size, hidden=_bounds("hidden")[1])
        except ValueError:  # the kernel or the pooling window does not fit
            continue
        C, H, W = spec.output_shapes()[-1]
        candidates.append(((C * H * W, kernel), spec))
    return max(candidates, key=lambda item: item[0])[1]


@functools.cache
def model_file_limit() -> int:
    """The bytes of the largest model file the lab can save (``export_npz`` of
    ``largest_model_spec``'s model, with room for longer settings): the cap of /train/load and
    /api/train/load. Worked out once, in about 50 ms."""
    spec = largest_model_spec()
    saved = export_npz(SimpleNamespace(model=build_model(spec), spec=spec, cond=threading.Lock()))
    return len(saved) + MODEL_FILE_SLACK
