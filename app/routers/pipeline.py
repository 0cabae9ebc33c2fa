"""The whole network on one digit, every number clickable (lesson sections 5 and 8).

    /pipeline?index=4&label=9&lr=0.1&show=conv-0-2-3&weight=0-1-1

- ``index``: a held-out 8×8 digit (0-based index into the digits test split; default 4);
- ``image``: instead of a held-out digit, a picture: a sample name (``digit``, an MNIST 7)
  or an upload id from ``POST /pipeline/upload``, brought to 8×8 (see ``picture_input``);
- ``label``: the true class p is one-hot at (0–9; default: the digit's real label, or for a
  picture, which has none, the class the network predicts);
- ``lr``: the learning rate of the two updates (0 < lr ≤ 10; default 0.1);
- ``show``: the number whose computation is written out: ``conv-F-R-C``, ``relu-F-R-C``,
  ``pool-F-R-C`` (0-based filter, row, column), ``logit-K``, ``prob-K`` or ``loss``;
- ``weight``: the kernel weight of the backprop section, ``F-I-J`` (filter, row, column).

One URL answers four ways (by ``HX-Target``): the full page; ``pipeline-explain`` (a
clicked number) only the explanation; ``pipeline-backprop`` (a clicked kernel weight) only
the backprop section; ``pipeline-lab`` (a changed setting) the whole lab. The first two
also carry out-of-band copies of the state fields other forms keep, so no form ever
sends a stale ``show`` or ``weight``. Bad values never give a 500: a translated message
where the value was used, the default in its place.

Every number comes from ``core.pipeline``; this module only formats it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cnnlab.app import images
from cnnlab.app.api_schema import api_errors, page_errors, redirect
from cnnlab.app.errors import InputError
from cnnlab.app.guards import page_status
from cnnlab.app.i18n import gettext as _
from cnnlab.app.lesson import nav_context
from cnnlab.app.ratelimit import limit
from cnnlab.app.receptive_view import field_view
from cnnlab.app.settings import Settings, get_settings
from cnnlab.app.templating import add_vary, render, wants_fragment
from cnnlab.app.uploads import page_state, picture_chosen, read_upload_form, store_upload
from cnnlab.core import numfmt
from cnnlab.core import pipeline as engine
from cnnlab.core.conv import format_number
from cnnlab.core.datasets import load
from cnnlab.core.layers import Activation, Conv2D, Pool2D
from cnnlab.core.model import Sequential

router = APIRouter(tags=["pipeline"])

DEFAULT_INDEX = 4  # a 9 the network gets right with 85 %: confident, not certain
DEFAULT_LR = 0.1
MAX_LR = 10.0
LR_CHOICES = (0.001, 0.01, 0.1, 0.5, 1.0)
DEFAULT_WEIGHT = (0, 1, 1)
MINUS = "\u2212"
_SHOW_KINDS = ("conv", "relu", "pool", "logit", "prob", "loss")


@dataclass(frozen=True)
class State:
    index: int = DEFAULT_INDEX
    image: str | None = None  # a sample name or an upload id, instead of a held-out digit
    label: int | None = None  # None: the digit's own label
    lr: float = DEFAULT_LR
    show: tuple | None = None  # ("conv", f, r, c) | ("logit", k) | ("loss",) ...
    weight: tuple = DEFAULT_WEIGHT

    def pairs(self, *, without: tuple = ()) -> list[tuple[str, str]]:
        out = [("image", self.image)] if self.image else [("index", str(self.index))]
        if self.label is not None:
            out.append(("label", str(self.label)))
        if self.lr != DEFAULT_LR:
            out.append(("lr", _ascii(self.lr)))
        if self.show is not None:
            out.append(("show", "-".join(str(v) for v in self.show)))
        if self.weight != DEFAULT_WEIGHT:
            out.append(("weight", "-".join(str(v) for v in self.weight)))
        return [(k, v) for k, v in out if k not in without]

    def url(self, **change: Any) -> str:
        return "/pipeline?" + urlencode(replace(self, **change).pairs())


def _ascii(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


# ------------------------------------------------------------------------------ reading a request


def _whole(text: str) -> int | None:
    s = text.strip().replace(MINUS, "-")
    try:
        return int(s)
    except ValueError:
        return None


def _test_count() -> int:
    return len(load("digits").y_test)


def read_state(params: Mapping[str, str]) -> tuple[State, dict[str, str]]:
    """The state, defaults where a value is bad, and a translated message per bad field."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    N = _test_count()
    if (text := params.get("index")) not in (None, ""):
        index = _whole(text)
        if index is None or not 0 <= index < N:
            errors["index"] = _("The digit must be a whole number from 0 to %(max)s.") % {"max": N - 1}
        else:
            values["index"] = index
    if (text := params.get("image")) not in (None, ""):
        if images.is_image_id(text):
            values["image"] = text
        else:
            errors["image"] = _("There is no image called “%(id)s”. Choose a sample or upload a picture.") % {
                "id": text[:40]}
    go = params.get("go")
    if go in ("prev", "next"):
        # The settings form's ← and → buttons: relative to the index it sends (wrapping round).
        values["index"] = (values.get("index", DEFAULT_INDEX) + (1 if go == "next" else -1)) % N
        values.pop("image", None)
    if (text := params.get("label")) not in (None, ""):
        label = _whole(text)
        if label is None or not 0 <= label < engine.CLASSES:
            errors["label"] = _("The true class must be a digit from 0 to 9.")
        else:
            values["label"] = label
    if (text := params.get("lr")) not in (None, ""):
        try:
            lr = float(text.strip().replace(",", "."))
        except ValueError:
            lr = math.nan
        if not (math.isfinite(lr) and 0 < lr <= MAX_LR):
            errors["lr"] = _("The learning rate must be a number greater than 0 and at most %(max)s.") % {
                "max": format_number(MAX_LR)}
        else:
            values["lr"] = lr
    if (text := params.get("show")) not in (None, ""):
        show = _read_show(text)
        if show is None:
            errors["show"] = _("“%(address)s” is not a number of this network. Click a number in the grids to see "
                               "how it was computed.") % {"address": text[:40]}
        else:
            values["show"] = show
    if (text := params.get("weight")) not in (None, ""):
        weight = _read_weight(text)
        if weight is None:
            errors["weight"] = _("“%(address)s” is not a kernel weight: give filter, row and column, like 0-1-1 "
                                 "(filters 0 to %(f)s, rows and columns 0 to %(k)s).") % {
                "address": text[:40], "f": engine.FILTERS - 1, "k": engine.KERNEL - 1}
        else:
            values["weight"] = weight
    return State(**values), errors


def _read_show(text: str) -> tuple | None:
    kind, *rest = text.strip().split("-")
    if kind not in _SHOW_KINDS:
        return None
    numbers = [_whole(t) for t in rest]
    if any(n is None for n in numbers):
        return None
    side = 8 + 2 * engine.PADDING - engine.KERNEL + 1
    limits = {"conv": (engine.FILTERS, side, side), "relu": (engine.FILTERS, side, side),
              "pool": (engine.FILTERS, side // engine.POOL, side // engine.POOL),
              "logit": (engine.CLASSES,), "prob": (engine.CLASSES,), "loss": ()}[kind]
    if len(numbers) != len(limits) or not all(0 <= n < hi for n, hi in zip(numbers, limits)):
        return None
    return (kind, *numbers)


def _read_weight(text: str) -> tuple | None:
    numbers = [_whole(t) for t in text.strip().split("-")]
    if len(numbers) != 3 or any(n is None for n in numbers):
        return None
    f, i, j = numbers
    if not (0 <= f < engine.FILTERS and 0 <= i < engine.KERNEL and 0 <= j < engine.KERNEL):
        return None
    return (f, i, j)


# ------------------------------------------------------------------------------ numbers for display


def short(v: float) -> str:
    """Two decimals for a grid cell (the explanation gives four), rounded half up; never "−0"."""
    return numfmt.fixed(v, 2)


def sig(v: float) -> str:
    """Four significant digits, for optimizer quantities that can be tiny (v = 6.465e−5)."""
    v = float(v)
    if v == 0:
        return "0"
    return numfmt.significant(v, 4) if 1e-4 <= abs(v) < 1e4 else numfmt.scientific(v, 3)


def sigf(v: float) -> str:
    """sig, with a negative in parentheses so it reads as a factor: 0.1·(−0.0798)."""
    text = sig(v)
    return f"({text})" if text.startswith(MINUS) else text


def _grid(a: np.ndarray, kind: str, f: int, show: tuple | None, extra=None) -> list[list[dict]]:
    rows = []
    for r in range(a.shape[0]):
        row = []
        for c in range(a.shape[1]):
            v = float(a[r, c])
            cell = {"text": short(v), "full": format_number(v), "addr": f"{kind}-{f}-{r}-{c}",
                    "sign": "pos" if v > 0 else ("neg" if v < 0 else "zero"),
                    "current": show == (kind, f, r, c)}
            if extra:
                cell.update(extra(r, c))
            row.append(cell)
        rows.append(row)
    return rows


def _vector(v: np.ndarray, kind: str | None, show: tuple | None) -> list[dict]:
    return [{"k": k, "text": short(x), "full": format_number(float(x)), "addr": f"{kind}-{k}" if kind else None,
             "sign": "pos" if x > 0 else ("neg" if x < 0 else "zero"), "current": show == (kind, k)}
            for k, x in enumerate(v)]


# ------------------------------------------------------------------------------ views


# The lab's layers as a model, for their receptive fields (core/receptive.py): a clicked conv,
# ReLU or pool cell's field is framed on the input (layer 0, 1, 2).
FIELD_MODEL = Sequential([Conv2D(1, engine.FILTERS, engine.KERNEL, padding=engine.PADDING), Activation("relu"),
                          Pool2D("max", engine.POOL)], input_shape=(1, 8, 8))
FIELD_LAYERS = {"conv": 0, "relu": 1, "pool": 2}


def shown_field(show: tuple | None) -> dict | None:
    """The receptive field of the clicked conv / ReLU / pool cell (app/receptive_view.field_view)."""
    if not show or show[0] not in FIELD_LAYERS:
        return None
    _k, _f, r, c = show
    return field_view(FIELD_MODEL, FIELD_LAYERS[show[0]], r, c)


def _field_edges(field: dict | None, r: int, c: int) -> str:
    """CSS classes drawing the field's frame on input cell (r, c): fld (inside), fld-t/-b/-l/-r (its edges)."""
    if field is None or not (field["top"] <= r <= field["bottom"] and field["left"] <= c <= field["right"]):
        return ""
    edges = [name for name, on in (("fld-t", r == field["top"]), ("fld-b", r == field["bottom"]),
                                   ("fld-l", c == field["left"]), ("fld-r", c == field["right"])) if on]
    return " ".join(["fld", *edges])


def forward_view(p: engine.Pipeline, state: State) -> dict:
    w = p.weights
    F = w.w.shape[0]
    show = state.show
    pool_win = {}
    if show and show[0] == "pool":
        _k, f, r, c = show
        pool_win = {(f, r * engine.POOL + i, c * engine.POOL + j) for i in range(engine.POOL) for j in range(engine.POOL)}
    conv_win = set()
    if show and show[0] == "conv":
        _k, f, r, c = show
        conv_win = {(r + i - engine.PADDING, c + j - engine.PADDING) for i in range(engine.KERNEL) for j in range(engine.KERNEL)}
    filters = []
    for f in range(F):
        filters.append({
            "f": f,
            "kernel": [[format_number(float(v)) for v in row] for row in w.w[f, 0]],
            "bias": format_number(float(w.b[f])),
            "conv": _grid(p.out[f], "conv", f, show),
            "relu": _grid(p.a[f], "relu", f, show,
                          lambda r, c, f=f: {"window": (f, r, c) in pool_win}),
            "pool": _grid(p.pooled[f], "pool", f, show),
        })
    field = shown_field(show)
    x_rows = [[{"text": short(v), "full": format_number(float(v)), "window": (r, c) in conv_win,
                "shade": round(float(v) * 4), "field": _field_edges(field, r, c)}
               for c, v in enumerate(row)] for r, row in enumerate(p.x[0])]
    return {"x": x_rows, "filters": filters, "h": _vector(p.h, None, show), "z": _vector(p.z, "logit", show),
            "q": _vector(p.q, "prob", show), "D": len(p.h), "F": F}


def loss_view(p: engine.Pipeline, state: State) -> dict:
    terms = engine.explain_loss(p)
    classes = [{"k": t.cls, "p": format_number(t.p), "q": format_number(t.q), "q_pct": round(100 * t.q, 1),
                "p_pct": round(100 * t.p), "target": t.cls == p.target, "predicted": t.cls == p.predicted}
               for t in terms.terms]
    q_target = float(p.q[p.target])
    return {"classes": classes, "loss": format_number(p.loss), "loss_full": p.loss, "text": terms.text,
            "target": p.target, "predicted": p.predicted, "q_target": format_number(q_target),
            "current": state.show == ("loss",)}


def explain_view(p: engine.Pipeline, show: tuple | None) -> dict | None:
    """What the explanation panel shows for ``show``: a kind, a title's numbers and the text."""
    if show is None:
        return None
    kind = show[0]
    view: dict[str, Any] = {"kind": kind, "addr": "-".join(str(v) for v in show), "field": shown_field(show)}
    if kind == "conv":
        _k, f, r, c = show
        step = engine.explain_conv(p, f, r, c)
        view.update(f=f + 1, row=r + 1, col=c + 1, text=step.text, value=format_number(step.value),
                    rows=[t + 1 for t in step.window_rows], cols=[t + 1 for t in step.window_cols],
                    padding=any(t.padding for t in step.terms))
    elif kind == "relu":
        _k, f, r, c = show
        view.update(f=f + 1, row=r + 1, col=c + 1, text=engine.explain_relu(p, f, r, c),
                    value=format_number(float(p.a[f, r, c])))
    elif kind == "pool":
        _k, f, r, c = show
        step = engine.explain_pool(p, f, r, c)
        view.update(f=f + 1, row=r + 1, col=c + 1, text=step.text, value=format_number(step.value),
                    rows=[t + 1 for t in step.window_rows], cols=[t + 1 for t in step.window_cols])
    elif kind == "logit":
        k = show[1]
        e = engine.explain_logit(p, k)
        view.update(k=k, text=e.text, value=format_number(e.value), hidden=e.hidden,
                    rest=format_number(e.rest), shown=len(e.shown), D=len(e.terms))
    elif kind == "prob":
        k = show[1]
        e = engine.explain_prob(p, k)
        view.update(k=k, text=e.text, value=format_number(e.value), z=format_number(float(p.z[k])),
                    exp=format_number(e.exps[k]), total=format_number(e.total))
    else:
        view.update(loss_view(p, State()))
        view["kind"] = "loss"
    return view


def backprop_view(p: engine.Pipeline, state: State) -> dict:
    f, i, j = state.weight
    g = engine.weight_gradient(p, f, 0, i, j)
    sgd, adam = engine.updates(p, f, 0, i, j, state.lr)
    used = {(t.row, t.col): t for t in g.nonzero}
    dout_rows = [[{"text": short(float(p.dout[f, r, c])), "full": format_number(float(p.dout[f, r, c])),
                   "used": (r, c) in used} for c in range(p.dout.shape[2])] for r in range(p.dout.shape[1])]
    kernels = [{"f": ff, "rows": [[{"text": format_number(float(p.weights.w[ff, 0, ii, jj])),
                                    "addr": f"{ff}-{ii}-{jj}", "current": (ff, ii, jj) == state.weight,
                                    "grad": sig(float(p.dw[ff, 0, ii, jj]))}
                                   for jj in range(engine.KERNEL)] for ii in range(engine.KERNEL)]}
               for ff in range(p.weights.w.shape[0])]
    b1, b2, eps = adam["beta1"], adam["beta2"], adam["eps"]
    return {
        "f": f, "i": i, "j": j, "F1": f + 1, "I1": i + 1, "J1": j + 1,
        "kernels": kernels, "dout": dout_rows,
        "weight": format_number(g.weight), "grad": sig(g.value), "grad_text": g.text,
        "terms": [{"row": t.row + 1, "col": t.col + 1, "grad": format_number(t.grad), "input": format_number(t.input),
                   "in_row": t.in_row + 1, "in_col": t.in_col + 1, "product": format_number(t.product)}
                  for t in g.nonzero],
        "positions": len(g.terms), "zero": len(g.terms) - len(g.nonzero),
        "engine_grad": sig(float(p.dw[f, 0, i, j])), "lr": sig(state.lr),
        "sgd": {"g": sig(sgd["g"]), "gf": sigf(sgd["g"]), "old": sig(sgd["old"]), "step": sigf(sgd["step"]),
                "new": sig(sgd["new"])},
        "adam": {"g": sig(adam["g"]), "gf": sigf(adam["g"]), "m_hat_f": sigf(adam["m_hat"]), "step_f": sigf(adam["step"]),
                 "b1": sig(b1), "b2": sig(b2), "eps": sig(eps), "one_b1": sig(1 - b1),
                 "one_b2": sig(1 - b2), "m": sig(adam["m"]), "v": sig(adam["v"]), "m_hat": sig(adam["m_hat"]),
                 "v_hat": sig(adam["v_hat"]), "bc1": sig(adam["bias_correction1"]),
                 "bc2": sig(adam["bias_correction2"]), "sqrt_v_hat": sig(math.sqrt(adam["v_hat"])),
                 "step": sig(adam["step"]), "old": sig(adam["old"]), "new": sig(adam["new"]), "t": adam["t"]},
    }


def settings_view(state: State, real_label: int | None, target: int) -> dict:
    N = _test_count()
    lrs = list(LR_CHOICES)
    if state.lr not in lrs:
        lrs = sorted(lrs + [state.lr])
    return {"index": state.index, "max_index": N - 1, "label": target, "image": state.image,
            "real_label": real_label, "lrs": [{"value": _ascii(v), "text": sig(v), "current": v == state.lr} for v in lrs],
}


# ------------------------------------------------------------------------------ routes


# A picture is "ink on paper" when its border is brighter than this (0–1): the digits are
# ink-high (0 background, 16 ink), so such a picture is inverted first.
LIGHT_BORDER = 0.5


def picture_input(pixels: np.ndarray) -> np.ndarray:
    """A working-size gray picture uint8 (1, h, w), longest side 8, as the network's input
    (1, 8, 8) in [0, 1]: inverted when its border is light (dark ink on white paper), then
    centred on a black 8×8 canvas when it is not square (the digits fill their square)."""
    _C, h, w = pixels.shape
    x = pixels[0].astype(np.float64) / 255.0
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    if border.mean() > LIGHT_BORDER:
        x = 1.0 - x
    canvas = np.zeros((1, 8, 8))
    top, left = (8 - h) // 2, (8 - w) // 2
    canvas[0, top:top + h, left:left + w] = x
    return canvas


def _compute(state: State, settings: Settings, errors: dict[str, str]) -> tuple[engine.Pipeline, int | None, State]:
    """The pipeline for the state's input; a picture that cannot be read leaves a message
    and falls back to the held-out digit."""
    if state.image:
        try:
            x = picture_input(images.image_array(state.image, settings, 8, "gray"))
        except InputError as exc:
            errors["image"] = exc.message
            state = replace(state, image=None)
        else:
            target = state.label
            if target is None:
                target = engine.run(x, 0).predicted
            return engine.run(x, target), None, state
    x, real = engine.digit_image(state.index)
    target = real if state.label is None else state.label
    return engine.run(x, target), real, state


_BLOCKS = {"pipeline-explain": "explain", "pipeline-backprop": "backprop", "pipeline-lab": "lab"}


@router.get("/pipeline", name="pipeline", response_class=HTMLResponse,
            responses={**redirect("To the address of the chosen digit."), **page_errors(422)})
def pipeline_page(request: Request, settings: Settings = Depends(get_settings)) -> Response:
    """The whole network on one digit (parameters in the module docstring)."""
    state, errors = read_state(request.query_params)
    if "go" in request.query_params and not wants_fragment(request):
        return RedirectResponse(state.url(), status_code=303)
    return _page(request, state, errors, settings)


def _page(request: Request, state: State, errors: dict[str, str], settings: Settings,
          status_code: int = 422) -> HTMLResponse:
    p, real, state = _compute(state, settings, errors)
    htmx = wants_fragment(request)
    block = _BLOCKS.get(request.headers.get("hx-target", ""), "content") if htmx else "content"
    # Sections 5 (#backprop) and 8 (#loss) of the walk through the lesson are both here, each
    # with its own previous / next links.
    context = {
        "state": state, "errors": errors, "oob": htmx and block in ("explain", "backprop"),
        "settings": settings_view(state, real, p.target), "forward": forward_view(p, state),
        "loss": loss_view(p, state), "explain": explain_view(p, state.show), "backprop": backprop_view(p, state),
        "state_explain": state.pairs(without=("show",)), "state_backprop": state.pairs(without=("weight",)),
        "show_value": "-".join(str(v) for v in state.show) if state.show else "",
        "weight_value": "-".join(str(v) for v in state.weight),
        "accuracy": round(100 * p.weights.test_accuracy, 1), "real_label": real,
        "state_query": urlencode(state.pairs()),
        # "Open as notebook" (app/routers/notebooks.py): this state, only when every value is good.
        "notebook_url": None if errors else
        f"{request.app.url_path_for('notebook', page='pipeline')}?{urlencode(state.pairs())}",
        "lesson": nav_context(request.app, 5), "lesson_loss": nav_context(request.app, 8),
    }
    headers = {"HX-Push-Url": state.url()} if htmx and block == "lab" else {}
    # A full page with bad values is a 4xx (htmx gets 200: it swaps only 2xx responses).
    status = page_status(request, errors, status_code)
    response = render(request, "pipeline.html", context, fragment=block, headers=headers, status_code=status)
    add_vary(response, "HX-Target")
    return response


@router.post("/pipeline/upload", name="pipeline_upload", response_class=HTMLResponse,
             responses={**redirect("Stored: the page on the new picture."), **page_errors(400, 413, 415, 422, 429, 503, 507)})
async def pipeline_upload(request: Request, settings: Settings = Depends(get_settings)) -> Response:
    """The page's upload form (multipart ``file``, and ``state``: the current query string).
    Success: a redirect to the page on the picture. A bad file: the page as it was, with the
    message next to the upload control."""
    state_text = page_state(request, "/pipeline")  # until the form's own state is read
    try:
        limit(request, "uploads")  # too many (429): the message shows next to the upload control
        form = await read_upload_form(request, settings)
        state_text = form.state
        stored = await store_upload(picture_chosen(form), settings)
    except InputError as exc:
        state, errors = read_state(dict(parse_qsl(state_text)))
        errors["upload"] = exc.message
        return await run_in_threadpool(_page, request, state, errors, settings, exc.status_code)
    state, _errors = read_state(dict(parse_qsl(state_text)))
    return RedirectResponse(replace(state, image=stored.id, label=None, show=None).url(), status_code=303)


@router.get("/api/pipeline", name="api_pipeline", tags=["api"], responses=api_errors(404, 422))
def api_pipeline(request: Request, settings: Settings = Depends(get_settings)) -> Response:
    """JSON twin of /pipeline: every intermediate of one digit, forward and backward, and
    ∂L/∂w with one SGD and one Adam step for ``weight`` (same parameters as the page)."""
    state, errors = read_state(request.query_params)
    if not errors:
        p, real, state = _compute(state, settings, errors)
    if errors:
        raise InputError.of(errors)
    f, i, j = state.weight
    g = engine.weight_gradient(p, f, 0, i, j)
    sgd, adam = engine.updates(p, f, 0, i, j, state.lr)
    body = {
        "index": None if state.image else state.index, "image": state.image, "label": real, "target": p.target, "predicted": p.predicted,
        "x": p.x.tolist(), "w": p.weights.w.tolist(), "b": p.weights.b.tolist(), "conv": p.out.tolist(),
        "relu": p.a.tolist(), "pool": p.pooled.tolist(), "flat": p.h.tolist(), "logits": p.z.tolist(),
        "probabilities": p.q.tolist(), "loss": p.loss, "loss_text": engine.explain_loss(p).text,
        "dlogits": p.dz.tolist(), "dconv": p.dout.tolist(), "dw": p.dw.tolist(),
        "weight": {"index": [f, 0, i, j], "value": g.weight, "grad": g.value, "text": g.text,
                   "sgd": _listed(sgd), "adam": _listed(adam)},
    }
    return JSONResponse(body)


def _listed(values: Mapping[str, Any]) -> dict[str, Any]:
    """Tuples as lists, for JSON."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}

