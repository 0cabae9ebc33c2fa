"""The lesson's other pages: grid data (section 1), local connectivity (2), the pooling
stepper (6) and the activation functions (7).

Like /conv, every view lives in the URL. The pooling stepper answers three ways: a full
page; an htmx request aimed at ``#pool-stepper`` (a step) gets only the stepper; any other
htmx request (a changed setting) gets the lab (``#pool-lab``). Bad values never give a 500:
the page comes back (status 200, so htmx swaps it) with a translated message.

Pooling and activation read the same input parameters:
  ``input`` = ``example`` (a 4×4 grid, the default) | ``seed`` (the slides' 5×5 matrix) |
  ``grid`` (typed, ``grid=1,2;3,4``) | ``conv`` (``from`` = a /conv query string: the
  feature map that page shows, recomputed through its own parser); ``relu=1`` applies ReLU
  to the input first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cnnlab.app import conv_state, conv_view, images, numbers
from cnnlab.app.api_schema import api_errors, page_errors, redirect
from cnnlab.app.errors import InputError
from cnnlab.app.guards import page_status
from cnnlab.app.i18n import N_
from cnnlab.app.i18n import gettext as _
from cnnlab.app.layer_names import ACTIVATION_NAMES, activation_name
from cnnlab.app.lesson import nav_context
from cnnlab.app.ratelimit import limit
from cnnlab.app.settings import settings_for
from cnnlab.app.templating import add_vary, locale_links, render, wants_fragment
from cnnlab.app.uploads import picture_chosen, read_upload_form, store_upload
from cnnlab.core import kernels, numfmt
from cnnlab.core.activations import ACTIVATIONS
from cnnlab.core.conv import format_number, output_size
from cnnlab.core.pool import pool_forward, pool_step

router = APIRouter(tags=["lesson"])

MAX_POOL_SIZE = 6
MAX_SIDE = 16
MAX_ABS_INPUT = 10000
POOL_KINDS = {"max": N_("Max pooling"), "avg": N_("Average pooling"), "global_avg": N_("Global average pooling")}
EXAMPLE_POOL = np.array([[1, 3, 2, 1], [4, 6, 5, 0], [3, 1, 1, 2], [7, 2, 8, 4]], dtype=np.int64)
# A feature map with negative values, the case where the activation matters.
EXAMPLE_ACTIVATION = np.array([[-3, 5, 0, -1], [2, -4, 7, 1], [-6, 3, -2, 8], [1, -5, 4, -7]], dtype=np.int64)
INPUTS = {"example": N_("A 4×4 example"), "seed": N_("The slides’ 5×5 matrix"), "grid": N_("A grid I type"),
          "conv": N_("The feature map from the convolution page")}
LEAKY_ALPHA = 0.1
_SPLIT_ROWS = re.compile(r"[;\n]")
_SPLIT_CELLS = re.compile(r"[,\s]+")


def _lesson_nav(request: Request, number: int) -> dict:
    return {"lesson": nav_context(request.app, number)}


def _int(raw: Mapping[str, str], name: str, lo: int, hi: int, default: int | None, message: str) -> int | None:
    text = (raw.get(name) or "").strip()
    if not text:
        return default
    try:
        v = conv_state.parse_number(text, cell=False)
    except ValueError:
        v = None
    if not isinstance(v, int) or not lo <= v <= hi:
        raise conv_state.FieldError(name, _(message) % {"min": lo, "max": hi})
    return v


def _bool(raw: Mapping[str, str], name: str) -> bool:
    text = (raw.get(name) or "").lower()
    if text not in ("", "0", "1", "on", "true", "false", "off"):
        raise conv_state.FieldError(name, _("This option must be on (1) or off (0)."))
    return text in ("1", "on", "true")


# ============================================================================== the input grid


def parse_grid(text: str) -> np.ndarray:
    """Typed rows (separated by ";" or new lines) of values (separated by "," or spaces)."""
    rows = [r.strip() for r in _SPLIT_ROWS.split(text) if r.strip()]
    if not rows:
        raise conv_state.FieldError("grid", _("The grid is empty: type rows of numbers."))
    values: list = []
    width = None
    for i, row in enumerate(rows):
        cells = [c for c in _SPLIT_CELLS.split(row) if c]
        if width is None:
            width = len(cells)
        elif len(cells) != width:
            raise conv_state.FieldError("grid", _(
                "Row %(row)s has %(got)s values but row 1 has %(want)s: every row needs the same number of values."
            ) % {"row": i + 1, "got": len(cells), "want": width})
        for j, cell in enumerate(cells):
            where = _("input grid, row %(row)s, column %(col)s") % {"row": i + 1, "col": j + 1}
            try:
                v = conv_state.parse_number(cell, cell=False)
            except ValueError as exc:
                raise conv_state.FieldError("grid", conv_state._number_message(str(exc), cell, where)) from None
            if abs(v) > MAX_ABS_INPUT:
                raise conv_state.FieldError("grid", _(
                    "%(value)s is too large (%(where)s): values must be between −%(limit)s and %(limit)s.")
                    % {"value": cell, "where": where, "limit": MAX_ABS_INPUT})
            values.append(v)
    if len(rows) > MAX_SIDE or (width or 0) > MAX_SIDE:
        raise conv_state.FieldError("grid", _("A typed grid can be at most %(max)s×%(max)s.") % {"max": MAX_SIDE})
    return conv_state._as_array(values, (len(rows), width or 0))


def grid_text(a: np.ndarray) -> str:
    """One row per line, for the textarea."""
    return "\n".join(" ".join(conv_state.ascii_number(v) for v in row) for row in a.tolist())


@dataclass
class Source:
    """The input of /pool and /activation: x (C, H, W), the pairs that name it in a URL."""

    kind: str = "example"
    x: np.ndarray | None = None
    pairs: list = field(default_factory=list)
    conv_query: str = ""
    grid: str = ""
    relu: bool = False
    names: list = field(default_factory=list)  # per channel: "" or "filter n"


def read_source(raw: Mapping[str, str], request: Request, default: np.ndarray, errors: dict[str, str]) -> Source:
    """The input grid; a bad value leaves a message in ``errors`` and ``x`` None."""
    conv_query = raw.get("from") or ""
    kind = raw.get("input") or ("conv" if conv_query else "grid" if raw.get("grid") else "example")
    src = Source(kind=kind, conv_query=conv_query)
    try:
        src.relu = _bool(raw, "relu")
    except conv_state.FieldError as exc:
        errors[exc.field] = exc.message
    try:
        if kind == "example":
            x = default[None]
        elif kind == "seed":
            x = kernels.SEED_INPUT[None]
        elif kind == "grid":
            src.grid = raw.get("grid") or grid_text(default)
            x = parse_grid(src.grid)[None]
        elif kind == "conv":
            x = _conv_map(conv_query, request)
        else:
            raise conv_state.FieldError("input", _("Choose an input from the list."))
    except conv_state.FieldError as exc:
        errors[exc.field] = exc.message
        src.kind = kind if kind in INPUTS else "example"
        return src
    if x.shape[0] > 1:
        src.names = [_("filter %(n)s") % {"n": f + 1} for f in range(x.shape[0])]
    typed = x[0]
    if src.relu:
        x = np.maximum(x, 0)
    x = np.array(x)
    x.flags.writeable = False
    src.x = x
    src.pairs = [("input", kind)]
    if kind == "grid":
        src.pairs.append(("grid", conv_state.format_grid(typed)))
    if kind == "conv":
        src.pairs.append(("from", conv_query))
    if src.relu:
        src.pairs.append(("relu", "1"))
    if kind != "grid":
        src.grid = grid_text(typed)
    return src


def _conv_map(query: str, request: Request) -> np.ndarray:
    """The feature map /conv shows for ``query``, at its working size: (F, Ho, Wo)."""
    if not query:
        raise conv_state.FieldError("input", _("There is no feature map to carry over: open the convolution page first."))
    parsed = conv_state.read_state(dict(parse_qsl(query, keep_blank_values=True)), settings_for(request.app))
    if not parsed.ok:
        raise conv_state.FieldError("input", _("The convolution settings carried over are not valid: %(problem)s")
                                   % {"problem": next(iter(parsed.errors.values()))})
    state = parsed.state
    out = conv_view.shown_map(state, conv_view.feature_map(state, parsed.x, "work"))
    if max(out.shape[1:]) > MAX_SIDE:
        raise conv_state.FieldError("input", _(
            "The feature map is %(h)s×%(w)s; this page shows at most %(max)s×%(max)s numbers. "
            "Choose a smaller working size on the convolution page.") % {"h": out.shape[1], "w": out.shape[2], "max": MAX_SIDE})
    if out.dtype.kind == "f" and np.all(out == np.round(out)):
        out = out.astype(np.int64)
    return out


def input_choices(src: Source) -> list[dict]:
    return [{"value": k, "label": _(v)} for k, v in INPUTS.items() if k != "conv" or src.conv_query]


def grid_decimals(a: np.ndarray) -> int | None:
    """One precision per grid: None when every value is whole, else two decimals for every
    cell (0,00 0,05 1,00 — not 0,0025 next to 1)."""
    return None if bool(np.all(a == np.round(a))) else 2


def cell_text(v: Any, decimals: int | None = None) -> str:
    return conv_view.short_number(v) if decimals is None else numbers.num(v, decimals, trim=False)


# ============================================================================== pooling


@dataclass
class PoolView:
    src: Source
    errors: dict
    kind: str = "max"
    size: int = 2
    stride: int | None = None
    step: int = 0
    out: np.ndarray | None = None

    def pairs(self) -> list[tuple[str, str]]:
        out = list(self.src.pairs) + [("kind", self.kind)]
        if self.kind != "global_avg":
            out.append(("size", str(self.size)))
            if self.stride is not None and self.stride != self.size:
                out.append(("stride", str(self.stride)))
        return out

    def query(self, step: int | None = None) -> str:
        pairs = self.pairs()
        if step:
            pairs.append(("step", str(step)))
        return urlencode(pairs)

    def step_at(self, step: int):
        """``core.pool.pool_step`` for this view's input and window (global average has none)."""
        glob = self.kind == "global_avg"
        return pool_step(self.src.x, self.kind, None if glob else self.size,
                         None if glob else (self.stride or self.size), step=step)


def read_pool(raw: Mapping[str, str], request: Request) -> PoolView:
    errors: dict[str, str] = {}
    src = read_source(raw, request, EXAMPLE_POOL, errors)
    view = PoolView(src=src, errors=errors)
    kind = raw.get("kind") or "max"
    if kind not in POOL_KINDS:
        errors["kind"] = _("The pooling must be “max”, “avg” or “global_avg”.")
        kind = "max"
    view.kind = kind
    for name, message in (("size", N_("The window size must be a whole number from %(min)s to %(max)s.")),
                          ("stride", N_("The stride must be a whole number from %(min)s to %(max)s."))):
        try:
            setattr(view, name, _int(raw, name, 1, MAX_POOL_SIZE, 2 if name == "size" else None, message))
        except conv_state.FieldError as exc:
            errors[exc.field] = exc.message
    if view.size is None:
        view.size = 2
    if src.x is None or errors:
        return view
    _C, H, W = src.x.shape
    stride = view.stride or view.size
    if kind != "global_avg" and (view.size > H or view.size > W):
        errors["fit"] = _("The %(k)s×%(k)s window does not fit in the %(h)s×%(w)s input: choose a smaller window.") % {
            "k": view.size, "h": H, "w": W}
        return view
    view.out = pool_forward(src.x[None], kind, view.size, stride)[0][0]
    steps = view.out.size
    try:
        view.step = _int(raw, "step", 0, steps - 1, 0, N_("The step must be a whole number from %(min)s to %(max)s."))
    except conv_state.FieldError as exc:
        errors[exc.field] = exc.message
    return view


def pool_formula(view: PoolView) -> dict | None:
    if view.src.x is None or "size" in view.errors or "stride" in view.errors:
        return None
    _C, H, W = view.src.x.shape
    if view.kind == "global_avg":
        return {"global": True, "H": H, "W": W}
    stride = view.stride or view.size
    return {"global": False, "rows": _pool_size_text(H, view.size, stride),
            "cols": _pool_size_text(W, view.size, stride), "H": H, "W": W, "k": view.size, "s": stride}


def _pool_size_text(n: int, k: int, s: int) -> str:
    """The page's own formula ⌊(n − k)/S⌋ + 1 with its numbers (pooling has no padding or
    dilation, so not the convolution's longer one): ``⌊(4 − 2)/2⌋ + 1 = 2``."""
    return f"\u230a({n} \u2212 {k})/{s}\u230b + 1 = {(n - k) // s + 1}"


def build_pool_stepper(view: PoolView) -> dict:
    x = view.src.x
    C, H, W = x.shape
    st = view.step_at(view.step)
    out = view.out
    _C, Ho, Wo = out.shape
    window = {(r, q) for r in st.window_rows for q in st.window_cols}
    # Projector mode keeps the rows and columns near the window (and the current output cell),
    # with the input's row and column numbers, as /conv does (.is-far is hidden there).
    near_rows = conv_view.near_band(H, min(st.window_rows), max(st.window_rows), conv_view.NEAR_SIDE)
    near_cols = conv_view.near_band(W, min(st.window_cols), max(st.window_cols), conv_view.NEAR_SIDE)
    out_rows, out_cols = conv_view.near_band(Ho, st.row, st.row, 5), conv_view.near_band(Wo, st.col, st.col, 5)
    banded = near_rows is not None or near_cols is not None
    heads = [{"label": str(q + 1), "far": near_cols is not None and q not in near_cols} for q in range(W)] if banded else None
    inputs = []
    in_decimals, out_decimals = grid_decimals(x), grid_decimals(out)
    for c in range(C):
        rows = []
        for r in range(H):
            row = []
            for q in range(W):
                here = c == st.channel and (r, q) in window
                row.append({"text": cell_text(x[c, r, q], in_decimals), "window": here, "winner": here and st.winner == (r, q),
                            "title": format_number(x[c, r, q].item()), "far": near_cols is not None and q not in near_cols})
            rows.append({"cells": row, "label": str(r + 1), "far": near_rows is not None and r not in near_rows})
        inputs.append({"c": c, "name": view.src.names[c] if view.src.names else "", "rows": rows,
                       "active": c == st.channel, "heads": heads})
    maps = []
    for c in range(C):
        rows = []
        for r in range(Ho):
            row = []
            for q in range(Wo):
                k = (c * Ho + r) * Wo + q
                status = "done" if k < st.step else ("current" if k == st.step else "todo")
                value = out[c, r, q].item()
                row.append({"step": k, "row": r, "col": q, "status": status,
                            "text": cell_text(value, out_decimals) if status != "todo" else "",
                            "full": format_number(value), "far": out_cols is not None and q not in out_cols})
            rows.append({"cells": row, "far": out_rows is not None and r not in out_rows})
        maps.append({"c": c, "name": view.src.names[c] if view.src.names else "", "rows": rows, "active": c == st.channel})
    return {"step": st.step, "steps": st.steps, "last": st.steps - 1, "row": st.row, "col": st.col, "channel": st.channel,
            "C": C, "H": H, "W": W, "Ho": Ho, "Wo": Wo, "inputs": inputs, "maps": maps, "text": st.text,
            "value": format_number(st.value), "kind": view.kind, "winner": st.winner, "state_pairs": view.pairs()}


def _render_pool(request: Request, view: PoolView, *, block: str, headers: dict | None = None) -> HTMLResponse:
    ok = not view.errors and view.out is not None
    context: dict[str, Any] = {"stepper": build_pool_stepper(view) if ok else None}
    query = view.query(view.step) if ok else urlencode(list(request.query_params.items()))
    # "Open as notebook" (inside the stepper, so it follows every step): this very state.
    context["notebook_url"] = f"{request.app.url_path_for('notebook', page='pool')}?{query}" if ok else None
    if block != "stepper":
        src = view.src
        context.update({
            "errors": view.errors, "formula": pool_formula(view),
            "form": {"input": src.kind, "inputs": input_choices(src), "grid": src.grid, "from": src.conv_query,
                     "relu": src.relu, "kind": view.kind,
                     "kinds": [{"value": k, "label": _(v)} for k, v in POOL_KINDS.items()],
                     "size": view.size, "stride": "" if view.stride is None else view.stride,
                     "sizes": list(range(1, MAX_POOL_SIZE + 1))},
            "conv_back": f"/conv?{src.conv_query}" if src.kind == "conv" and src.conv_query else None,
            "activation_link": f"/activation?{urlencode(src.pairs)}" if src.x is not None else None,
            **_lesson_nav(request, 6),
        })
    context["locales"] = locale_links(request, query)
    response = render(request, "pool.html", context, fragment="stepper" if block == "stepper" else "lab", headers=headers,
                      status_code=page_status(request, view.errors))
    add_vary(response, "HX-Target")
    return response


@router.get("/pool", name="pool", response_class=HTMLResponse, responses=page_errors(422))
def pool(request: Request) -> Response:
    """The pooling stepper: input parameters (see the module), ``kind`` = ``max`` | ``avg`` |
    ``global_avg``, ``size`` 1–6 (default 2), ``stride`` 1–6 (default: the size), ``step``
    (0-based, row-major over channels, rows, columns)."""
    view = read_pool(request.query_params, request)
    htmx = wants_fragment(request)
    ok = not view.errors
    block = "stepper" if htmx and request.headers.get("hx-target") == "pool-stepper" and ok else "lab"
    headers = {"HX-Push-Url": f"/pool?{view.query(view.step)}"} if htmx and block == "lab" and ok else None
    return _render_pool(request, view, block=block, headers=headers)


# ============================================================================== activation

CURVE_W, CURVE_H, CURVE_PAD = 400, 260, 24
CURVE_POINTS = 161


def _apply(fn: str, x: np.ndarray) -> np.ndarray:
    f = ACTIVATIONS[fn]
    out, _cache = f.forward(x, LEAKY_ALPHA) if fn == "leaky_relu" else f.forward(x)
    return out


def curve_svg(fn: str, values: np.ndarray) -> dict:
    """The function's curve over the range of ``values`` and the values plotted on it, in
    SVG coordinates (y grows downwards)."""
    span = max(4.0, float(np.abs(values).max()) * 1.1)
    xs = np.linspace(-span, span, CURVE_POINTS)
    ys = _apply(fn, xs)
    lo, hi = min(float(ys.min()), 0.0), max(float(ys.max()), 0.0)
    if hi - lo < 1e-12:
        hi = lo + 1

    def sx(v: float) -> float:
        return round(CURVE_PAD + (v + span) / (2 * span) * (CURVE_W - 2 * CURVE_PAD), 2)

    def sy(v: float) -> float:
        return round(CURVE_H - CURVE_PAD - (v - lo) / (hi - lo) * (CURVE_H - 2 * CURVE_PAD), 2)

    flat = np.unique(values.astype(np.float64).ravel())
    after = _apply(fn, flat)
    dots = [{"cx": sx(float(a)), "cy": sy(float(b)), "title": f"{format_number(_tidy(a))} → {format_number(_tidy(b))}",
             "neg": a < 0} for a, b in zip(flat, after)]
    return {"w": CURVE_W, "h": CURVE_H, "points": " ".join(f"{sx(a)},{sy(b)}" for a, b in zip(xs, ys)),
            "x0": sx(0.0), "y0": sy(0.0), "left": CURVE_PAD, "right": CURVE_W - CURVE_PAD, "top": CURVE_PAD,
            "bottom": CURVE_H - CURVE_PAD, "dots": dots, "span": format_number(_tidy(round(span, 2))),
            "hi": format_number(_tidy(round(hi, 2))), "lo": format_number(_tidy(round(lo, 2)))}


def _tidy(v: Any) -> int | float:
    v = float(v)
    return int(v) if v.is_integer() else v


def _matrix(a: np.ndarray) -> list[list[dict]]:
    """A grid's cells, all with one precision: whole numbers, or two decimals (0.00, 0.05, 1.00)."""
    m = float(np.abs(a).max()) if a.size else 0.0
    decimals = grid_decimals(a)
    return [[{"text": cell_text(_tidy(v), decimals), "title": format_number(_tidy(v)),
              "tint": conv_view.tint_class(float(v), m)} for v in row] for row in a.tolist()]


def read_activation_fn(raw: Mapping[str, str], errors: dict[str, str]) -> str:
    """``fn``: a name in ACTIVATIONS (default relu); a bad one leaves a message and relu."""
    fn = raw.get("fn") or "relu"
    if fn not in ACTIVATIONS:
        errors["fn"] = _("There is no activation called “%(name)s”: choose relu, sigmoid, tanh or leaky_relu.") % {
            "name": fn[:40]}
        fn = "relu"
    return fn


def activation_input(src: Source) -> tuple[np.ndarray, int | None]:
    """The map the functions are applied to (float64) and the bias added to it (None: none)."""
    x = src.x.astype(np.float64)
    if not src.relu and x.size and x.min() >= 0 and x.max() > 0:
        # A map with no negative value (the slides' map, a picture) makes a dull demo: every
        # function but sigmoid passes it through unchanged. A conv layer adds a bias before
        # its activation; minus the map's mean puts about half the values below 0.
        bias = -int(numfmt.round_half_up(x.mean(), 0))
        return x + bias, bias
    return x, None


def activation_numbers(request: Request) -> tuple[Source, str, np.ndarray, int | None, np.ndarray]:
    """/activation's state and numbers, for its JSON twin and its notebook: (source, fn, the map
    with the page's bias, that bias, the function's output); an InputError with the page's
    messages for a state the page refuses."""
    errors: dict[str, str] = {}
    src = read_source(request.query_params, request, EXAMPLE_ACTIVATION, errors)
    fn = read_activation_fn(request.query_params, errors)
    if errors:  # read_source leaves x None only with a message
        raise InputError.of(errors)
    x, bias = activation_input(src)
    return src, fn, x, bias, _apply(fn, x)


@router.get("/activation", name="activation", response_class=HTMLResponse, responses=page_errors(422))
def activation(request: Request) -> Response:
    """Activation functions on a feature map: input parameters (see the module) and
    ``fn`` = ``relu`` (default) | ``sigmoid`` | ``tanh`` | ``leaky_relu`` (slope 0.1)."""
    raw = request.query_params
    errors: dict[str, str] = {}
    src = read_source(raw, request, EXAMPLE_ACTIVATION, errors)
    fn = read_activation_fn(raw, errors)
    alpha = numbers.num(LEAKY_ALPHA, 4)
    # max(0,1·x; x) in Spanish: a list separator that is not the decimal comma
    formula = ACTIVATIONS[fn].formula
    if "α" in formula:
        formula = formula.replace(", ", numfmt.list_separator([LEAKY_ALPHA])).replace("α", alpha)
    view: dict[str, Any] = {"errors": errors, "fn": fn, "formula": formula,
                            "derivative": ACTIVATIONS[fn].derivative, "name": activation_name(fn), "alpha": alpha,
                            "functions": [{"value": k, "label": activation_name(k)} for k in ACTIVATION_NAMES],
                            "bias": None}
    maps = []
    if src.x is not None and not errors:
        x, bias = activation_input(src)
        if bias is not None:
            view["bias"] = format_number(bias)
        y = _apply(fn, x)
        for c in range(x.shape[0]):
            maps.append({"name": src.names[c] if src.names else "", "before": _matrix(x[c]), "after": _matrix(y[c])})
        view["curve"] = curve_svg(fn, x)
        first, first_out = _tidy(x.flat[0]), _tidy(y.flat[0])
        view["example"] = f"{activation_name(fn)}({format_number(first)}) = {format_number(first_out)}"
        view["negatives"] = int((x < 0).sum())
        view["zeros_after"] = int((y == 0).sum())
    else:
        view.update(curve=None, example=None, negatives=0, zeros_after=0)
    view["maps"] = maps
    view["form"] = {"input": src.kind, "inputs": input_choices(src), "grid": src.grid, "from": src.conv_query,
                    "relu": src.relu}
    pairs = list(src.pairs) + ([("fn", fn)] if fn != "relu" else [])
    view["pool_link"] = f"/pool?{urlencode(src.pairs)}" if src.x is not None else None
    context = {"view": view, **_lesson_nav(request, 7), "locales": locale_links(request, urlencode(pairs)),
               # "Open as notebook" (app/routers/notebooks.py): this state, only when the page shows it.
               "notebook_url": f"{request.app.url_path_for('notebook', page='activation')}?{urlencode(pairs)}"
               if maps else None}
    headers = {"HX-Push-Url": f"/activation?{urlencode(pairs)}"} if wants_fragment(request) and not errors else None
    return render(request, "activation.html", context, fragment="lab", headers=headers,
                  status_code=page_status(request, errors))


# ============================================================================== grid data

GRID_MIN, GRID_MAX = 4, 32
ZOOMS = (1, 2, 3, 4)
AUDIO_SAMPLES = 48


@router.get("/api/activation", name="api_activation", tags=["api"], responses=api_errors(404, 422))
def api_activation(request: Request) -> JSONResponse:
    """JSON twin of /activation (the same parameters): the map the function is applied to (with
    the bias the page adds to a map without negatives), the function's output, and the counts
    the page shows."""
    src, fn, x, bias, y = activation_numbers(request)
    return JSONResponse({"fn": fn, "alpha": LEAKY_ALPHA if fn == "leaky_relu" else None, "bias": bias,
                         "input": x.tolist(), "output": y.tolist(),
                         "negatives": int((x < 0).sum()), "zeros_after": int((y == 0).sum())})


def audio_wave() -> dict:
    """A deterministic sound: 3 and 7 cycles of two sines over 48 samples, as numbers and a strip."""
    t = np.arange(AUDIO_SAMPLES) / AUDIO_SAMPLES
    values = np.round(0.6 * np.sin(2 * np.pi * 3 * t) + 0.3 * np.sin(2 * np.pi * 7 * t), 2)
    w, h = 480, 80
    xs = [round(4 + i * (w - 8) / (AUDIO_SAMPLES - 1), 2) for i in range(AUDIO_SAMPLES)]
    ys = [round(h / 2 - v * (h / 2 - 4), 2) for v in values]
    return {"w": w, "h": h, "points": " ".join(f"{a},{b}" for a, b in zip(xs, ys)), "mid": h / 2,
            "dots": [{"cx": a, "cy": b, "title": f"{i}: {format_number(_tidy(v))}"} for i, (a, b, v) in
                     enumerate(zip(xs, ys, values.tolist()))],
            "values": [format_number(_tidy(v)) for v in values.tolist()]}


def pixel_grid(a: np.ndarray, channel: str) -> dict:
    """(H, W) uint8 -> an SVG grid: one square per pixel, its colour, its number."""
    H, W = a.shape
    cells = []
    for r in range(H):
        for q in range(W):
            v = int(a[r, q])
            fill = {"R": f"rgb({v},0,0)", "G": f"rgb(0,{v},0)", "B": f"rgb(0,0,{v})"}.get(channel, f"rgb({v},{v},{v})")
            cells.append({"x": q, "y": r, "v": v, "fill": fill, "ink": "#000" if v > 140 and channel in ("", "G") else "#fff"})
    return {"H": H, "W": W, "cells": cells, "channel": channel}


@router.get("/grid", name="grid", response_class=HTMLResponse, responses=page_errors(422))
def grid(request: Request) -> Response:
    """An image as a grid of numbers: ``image`` (a sample or an upload id, default the MNIST
    digit), ``size`` 4–32 (the longest side in pixels), ``color`` = gray | rgb, ``zoom`` 1–4."""
    raw = request.query_params
    errors: dict[str, str] = {}
    image_id = raw.get("image") or "digit"
    if not images.is_image_id(image_id):
        errors["image"] = _("There is no image called “%(id)s”. Choose a sample or upload a picture.") % {"id": image_id[:40]}
        image_id = "digit"
    default_size = 28 if image_id == "digit" else 16
    size = zoom = None
    try:
        size = _int(raw, "size", GRID_MIN, GRID_MAX, default_size, N_("The size must be a whole number from %(min)s to %(max)s pixels."))
    except conv_state.FieldError as exc:
        errors["size"] = exc.message
    try:
        zoom = _int(raw, "zoom", 1, len(ZOOMS), 2, N_("The zoom must be a whole number from %(min)s to %(max)s."))
    except conv_state.FieldError as exc:
        errors["zoom"] = exc.message
    color = raw.get("color") or "gray"
    if color not in ("gray", "rgb"):
        errors["color"] = _("The colour must be “gray” or “rgb”.")
        color = "gray"
    size = size or default_size
    zoom = zoom or 2
    grids = []
    if not errors:
        try:
            x = images.image_array(image_id, settings_for(request.app), size, color)
        except images.ImageError as exc:
            errors["image"] = exc.message
        else:
            if color == "rgb":
                grids = [pixel_grid(x[c], name) for c, name in enumerate("RGB")]
            else:
                grids = [pixel_grid(x[0], "")]
    pairs = [("image", image_id), ("size", str(size)), ("color", color), ("zoom", str(zoom))]
    samples = [{"value": k, "label": _(s.title)} for k, s in images.SAMPLES.items()]
    if image_id not in images.SAMPLES:
        samples.append({"value": image_id, "label": _("My uploaded picture")})
    context = {"errors": errors, "grids": grids, "image": image_id, "size": size, "color": color, "zoom": zoom,
               "samples": samples, "zooms": ZOOMS, "min_size": GRID_MIN, "max_size": GRID_MAX,
               "state": urlencode(pairs), "audio": audio_wave(), **_lesson_nav(request, 1),
               "locales": locale_links(request, urlencode(pairs))}
    headers = {"HX-Push-Url": f"/grid?{urlencode(pairs)}"} if wants_fragment(request) and not errors else None
    return render(request, "grid.html", context, fragment="lab", headers=headers, status_code=page_status(request, errors))


@router.post("/grid/upload", name="grid_upload", response_class=HTMLResponse,
             responses={**redirect("Stored: the grid of the new picture."), **page_errors(400, 413, 415, 422, 429, 503, 507)})
async def grid_upload(request: Request) -> Response:
    """Upload a picture (multipart ``file``, ``state``) and show it as a grid."""
    settings = settings_for(request.app)
    # A bad file (or too many uploads: 429) raises InputError: the app's handler answers with
    # the translated error page.
    limit(request, "uploads")
    form = await read_upload_form(request, settings)
    stored = await store_upload(picture_chosen(form), settings)
    params = dict(parse_qsl(form.state))
    params["image"] = stored.id
    params.setdefault("size", "16")
    return RedirectResponse(f"/grid?{urlencode(params)}", status_code=303)


# ============================================================================== local connectivity

LOCAL_PRESETS = {
    "mnist": (N_("A handwritten digit (MNIST)"), 28, 28, 1),
    "cifar": (N_("A small colour photo (CIFAR-10)"), 32, 32, 3),
    "photo": (N_("A colour photo (ImageNet)"), 224, 224, 3),
}
LOCAL_LIMITS = {"h": 4096, "w": 4096, "c": 64, "f": 1024, "k": 15}


def local_counts(H: int, W: int, C: int, F: int, K: int) -> dict:
    """Weights of a convolutional layer (F filters K×K, stride 1, no padding) and of a dense
    layer with the same output size."""
    Ho, Wo = output_size(H, K), output_size(W, K)
    n_in, n_out = H * W * C, Ho * Wo * F
    dense_w, dense_b = n_in * n_out, n_out
    conv_w, conv_b = F * C * K * K, F
    return {"H": H, "W": W, "C": C, "F": F, "K": K, "Ho": Ho, "Wo": Wo, "n_in": n_in, "n_out": n_out,
            "dense_w": dense_w, "dense_b": dense_b, "dense": dense_w + dense_b,
            "conv_w": conv_w, "conv_b": conv_b, "conv": conv_w + conv_b,
            "ratio": (dense_w + dense_b) / (conv_w + conv_b)}


def sharing_figure() -> dict:
    """A 6×6 input with a 3×3 kernel at two positions: the same nine weights both times."""
    positions = [(0, 0), (2, 3)]
    panels = []
    for r0, c0 in positions:
        cells = [{"x": q, "y": r, "tc": (r - r0) * 3 + (q - c0) if 0 <= r - r0 < 3 and 0 <= q - c0 < 3 else None}
                 for r in range(6) for q in range(6)]
        panels.append({"cells": cells, "r": r0, "c": c0})
    return {"panels": panels, "weights": [f"w{n + 1}" for n in range(9)]}


def local_samples(request: Request) -> list[dict]:
    """The shipped pictures with their stored size H×W×C (the size /conv computes on)."""
    out = []
    for name, sample in images.SAMPLES.items():
        info = images.image_info(name, settings_for(request.app))
        out.append({"value": name, "label": _(sample.title), "dims": f"{info.height}×{info.width}×{info.channels}"})
    return out


@router.get("/local", name="local", response_class=HTMLResponse, responses=page_errors(422))
def local(request: Request) -> Response:
    """Local connectivity: ``h``, ``w``, ``c`` (the input), ``f`` filters of ``k``×``k``;
    ``preset`` = mnist | cifar | photo or ``image`` = a shipped sample sets the input size."""
    raw = dict(request.query_params)
    errors: dict[str, str] = {}
    preset = raw.get("preset")
    if preset:
        if preset not in LOCAL_PRESETS:
            errors["preset"] = _("There is no preset called “%(name)s”.") % {"name": preset[:40]}
        else:
            _label, raw["h"], raw["w"], raw["c"] = (str(v) for v in LOCAL_PRESETS[preset])
    sample = raw.get("image")
    if sample:
        if sample not in images.SAMPLES:
            errors["image"] = _("There is no image called “%(id)s”. Choose a sample or upload a picture.") % {"id": sample[:40]}
        else:
            info = images.image_info(sample, settings_for(request.app))
            raw["h"], raw["w"], raw["c"] = str(info.height), str(info.width), str(info.channels)
    defaults = {"h": 28, "w": 28, "c": 1, "f": 8, "k": 3}
    messages = {"h": N_("The height must be a whole number from %(min)s to %(max)s."),
                "w": N_("The width must be a whole number from %(min)s to %(max)s."),
                "c": N_("The number of channels must be a whole number from %(min)s to %(max)s."),
                "f": N_("The number of filters must be a whole number from %(min)s to %(max)s."),
                "k": N_("The kernel size must be a whole number from %(min)s to %(max)s.")}
    values = {}
    for name, default in defaults.items():
        try:
            values[name] = _int(raw, name, 1, LOCAL_LIMITS[name], default, messages[name])
        except conv_state.FieldError as exc:
            errors[name] = exc.message
            values[name] = default
    counts = None
    if not errors:
        if values["k"] > min(values["h"], values["w"]):
            errors["k"] = _("A %(k)s×%(k)s kernel does not fit in a %(h)s×%(w)s input.") % {
                "k": values["k"], "h": values["h"], "w": values["w"]}
        else:
            counts = local_counts(values["h"], values["w"], values["c"], values["f"], values["k"])
    shown = {k: (raw.get(k, "") if k in errors else str(v)) for k, v in values.items()}
    pairs = [(k, str(v)) for k, v in values.items()]
    context = {"errors": errors, "counts": counts, "values": shown, "group": numbers.count, "sharing": sharing_figure(),
               "presets": [{"value": k, "label": _(v[0]), "dims": f"{v[1]}×{v[2]}×{v[3]}"} for k, v in LOCAL_PRESETS.items()],
               "samples": local_samples(request),
               "ratio": None if counts is None else numbers.count(counts["ratio"]),
               **_lesson_nav(request, 2), "locales": locale_links(request, urlencode(pairs))}
    headers = {"HX-Push-Url": f"/local?{urlencode(pairs)}"} if wants_fragment(request) and not errors else None
    return render(request, "local.html", context, fragment="lab", headers=headers, status_code=page_status(request, errors))
