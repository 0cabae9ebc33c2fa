"""Inside a trained network: every layer's maps with their values, the first layer's filters,
and where one cell of a map looks (its receptive field on the input, core/receptive.py).

    POST /train/jobs/{id}/inside       the page's fragment (htmx): one map (or filter) enlarged,
                                       with its values and, for a clicked cell, its field framed
                                       on the input and its size written layer by layer
    GET  /api/train/{id}/layers?test_index=i[&layer=l&row=r&col=c&channel=f]
    POST /api/train/{id}/layers        the JSON twin, for a test image or a drawn grid

Both use a copy of the job's model taken at one moment (app/jobs/use.py ``_snapshot``), so a
running job's weights cannot change between the values and the picture.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, Response

from cnnlab.app import numbers
from cnnlab.app.api_schema import api_errors, page_errors
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.jobs.use import _snapshot, predict_input
from cnnlab.app.layer_names import layer_label
from cnnlab.app.receptive_view import field_view
from cnnlab.app.routers.train_api import ImageRequest, _job
from cnnlab.app.routers.train_page import datasets_shape, find_job, parse_grid, spec_value
from cnnlab.app.templating import render
from cnnlab.app.train_view import png_data_uri
from cnnlab.core import numfmt
from cnnlab.core.layers import Conv2D
from cnnlab.core.losses import softmax
from cnnlab.core.receptive import cell_box, field_steps, layer_fields

router = APIRouter()

# A map's values: whole up to WHOLE×WHOLE (the digits' 8×8 maps), else a WINDOW×WINDOW part
# centred on the clicked cell (784 numbers of a 28×28 map are unreadable; 7 columns fit a phone).
WHOLE, WINDOW = 8, 7
USE_ERRORS = api_errors(400, 404, 409, 422)


# ------------------------------------------------------------------------------ the computation


class Inside:
    """One image through a copy of the job's model: the model, the input (1, C, H, W), every
    layer's output, the probabilities and (test images) the true label."""

    def __init__(self, job: Any, grid: Any = None, test_index: int | None = None) -> None:
        self.model = _snapshot(job)  # a JobStateError (409) when there is no model yet
        try:
            self.x, self.true_label = predict_input(job, self.model, grid, test_index)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        self.outs = self.model.activations(self.x)
        self.p = softmax(self.outs[-1][0].astype(np.float64))
        self.fields = layer_fields(self.model)

    def check_cell(self, layer: int, row: int, col: int, channel: int = 0) -> None:
        """An InputError (422) naming what is out of range."""
        n = len(self.model.layers)
        if not 0 <= layer < n:
            raise InputError(_("There is no layer %(l)s: the layers are numbered 0 to %(last)s.")
                             % {"l": layer, "last": n - 1}, field="layer")
        out = self.outs[layer][0]
        if out.ndim == 3:
            C, H, W = out.shape
            if not 0 <= channel < C:
                raise InputError(_("Layer %(l)s has maps 0 to %(last)s; there is no map %(c)s.")
                                 % {"l": layer, "last": C - 1, "c": channel}, field="channel")
            if not (0 <= row < H and 0 <= col < W):
                raise InputError(_("Layer %(l)s's maps are %(h)s×%(w)s: rows 0 to %(h1)s, columns 0 to %(w1)s; "
                                   "there is no cell (%(r)s, %(c)s).")
                                 % {"l": layer, "h": H, "w": W, "h1": H - 1, "w1": W - 1, "r": row, "c": col},
                                 field="row")
        elif row != 0 or channel != 0 or not 0 <= col < out.shape[0]:
            raise InputError(_("Layer %(l)s gives %(n)s numbers in a row: use row 0 and a column from 0 to "
                               "%(last)s.") % {"l": layer, "n": out.shape[0], "last": out.shape[0] - 1}, field="col")

    def value(self, layer: int, row: int, col: int, channel: int = 0) -> float:
        out = self.outs[layer][0]
        return float(out[channel, row, col] if out.ndim == 3 else out[col])

    def first_conv(self) -> int | None:
        return next((i for i, layer in enumerate(self.model.layers) if isinstance(layer, Conv2D)), None)


# ------------------------------------------------------------------------------ the JSON twin


def _field(f) -> dict[str, Any]:
    return {"size": f.size, "jump": f.jump, "start": f.start}


def layers_body(inside: Inside, layer: int | None, row: int | None, col: int | None, channel: int) -> dict[str, Any]:
    model = inside.model
    body: dict[str, Any] = {
        "probabilities": inside.p.tolist(), "label": int(inside.p.argmax()),
        "input": inside.x[0].astype(np.float64).tolist(),
        "layers": [{"index": i, "layer": lay.describe(), "type": type(lay).__name__, "shape": list(o.shape[1:]),
                    "values": o[0].astype(np.float64).tolist(), "field": _field(f)}
                   for i, (lay, o, f) in enumerate(zip(model.layers, inside.outs, inside.fields))],
    }
    if inside.true_label is not None:
        body["true_label"] = inside.true_label
    first = inside.first_conv()
    if first is not None:
        conv = model.layers[first]
        body["filters"] = {"layer": first, "w": conv.params["w"].astype(np.float64).tolist(),
                           "b": conv.params["b"].astype(np.float64).tolist()}
    if layer is not None:
        inside.check_cell(layer, row, col, channel)
        body["cell"] = {"layer": layer, "channel": channel, "row": row, "col": col,
                        "value": inside.value(layer, row, col, channel),
                        "box": list(cell_box(model, layer, row, col)), "field": _field(inside.fields[layer]),
                        "steps": field_steps(model, layer)}
    return body


def _cell_args(layer: int | None, row: int | None, col: int | None) -> None:
    if (layer is None) != (row is None) or (layer is None) != (col is None):
        raise InputError(_("Give layer, row and col together (or none of them)."), field="layer")


class LayersRequest(ImageRequest):
    layer: int | None = Field(None, ge=0, description="with row and col: the cell whose receptive field is wanted")
    row: int | None = Field(None, ge=0, description="the cell's row (0 for a flat layer)")
    col: int | None = Field(None, ge=0, description="the cell's column (a flat layer: the unit)")
    channel: int = Field(0, ge=0, description="the cell's map (filter), for its value")


LAYERS_DOC = (
    "Every layer's output for one image, with its receptive field in input pixels: size r (side of "
    "the square one cell sees), jump j (pixels between neighbouring cells' fields) and start (top-left "
    "of cell (0, 0)'s field, < 0 in the padding); the first conv layer's filters. With layer, row and col: "
    "that cell's value, its field's box (top, left, bottom, right; inclusive, clipped to the input) and "
    "the steps r = r_prev + (k − 1)·j_prev, j = j_prev·s for layers 0..layer (k: a conv's dilated kernel, "
    "a pool's window; 1 for an activation; Flatten and Dense see the whole map before them, s = 0).")


@router.get("/api/train/{job_id}/layers", tags=["train"], responses=USE_ERRORS, description=LAYERS_DOC)
def api_layers(request: Request, job_id: str,
               test_index: int = Query(..., ge=0, description="an image of the dataset's test set"),
               layer: int | None = Query(None, ge=0), row: int | None = Query(None, ge=0),
               col: int | None = Query(None, ge=0), channel: int = Query(0, ge=0)) -> Response:
    """Every layer of the job's model on a test image; with layer/row/col, where that cell looks."""
    job = _job(request, job_id)
    _cell_args(layer, row, col)
    return JSONResponse(layers_body(Inside(job, test_index=test_index), layer, row, col, channel))


@router.post("/api/train/{job_id}/layers", tags=["train"], responses=USE_ERRORS, description=LAYERS_DOC)
def api_layers_drawn(request: Request, job_id: str, req: LayersRequest) -> Response:
    """The same for a drawn grid (body as /api/train/{id}/predict's) or a test image."""
    job = _job(request, job_id)
    _cell_args(req.layer, req.row, req.col)
    inside = Inside(job, grid=req.grid, test_index=req.test_index)
    return JSONResponse(layers_body(inside, req.layer, req.row, req.col, req.channel))


# ------------------------------------------------------------------------------ the page's fragment


def _whole(form: Any, name: str, default: int | None = None) -> int | None:
    text = str(form.get(name) or "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise InputError(_("%(name)s must be a whole number.") % {"name": name}, field=name) from None


def _window(n: int, centre: int | None) -> range:
    """All of 0..n−1 when n ≤ WHOLE, else WINDOW indices around ``centre`` (the first ones without a centre)."""
    size = n if n <= WHOLE else WINDOW
    first = 0 if centre is None else min(max(centre - size // 2, 0), n - size)
    return range(first, first + size)


def _num(v: float) -> str:
    return numbers.num(v, 2)


def inside_context(inside: Inside, job_id: str, kind: str, layer: int, channel: int,
                   row: int | None, col: int | None, hidden: dict[str, str]) -> dict[str, Any]:
    model = inside.model
    _c, H, W = model.input_shape
    ctx: dict[str, Any] = {"job_id": job_id, "kind": kind, "layer": layer, "channel": channel, "hidden": hidden,
                           "input": png_data_uri(inside.x[0, 0], False), "H": H, "W": W,
                           "row": row, "col": col, "box": None}
    if kind == "filter":
        conv = model.layers[layer]
        w = conv.params["w"].astype(np.float64)
        scale = float(np.abs(w).max()) or 1.0
        k = w.shape[-1]
        ctx.update(
            title=_("Filter %(f)s of %(n)s of the first layer (%(layer)s)")
            % {"f": channel + 1, "n": w.shape[0], "layer": layer_label(conv.spec())},
            picture=png_data_uri(w[channel, 0], True, scale), rows=k, cols=k,
            table=[{"n": r + 1, "cells": [{"text": _num(w[channel, 0, r, c]), "row": r, "col": c,
                                            "full": numfmt.significant(w[channel, 0, r, c], 4), "current": False}
                                           for c in range(k)]} for r in range(k)],
            table_cols=[c + 1 for c in range(k)], clickable=False, partial=False,
            bias=numfmt.significant(float(conv.params["b"][channel]), 4))
        return ctx
    out = inside.outs[layer][0].astype(np.float64)
    m = out[channel]
    h, w = m.shape
    scale = float(np.abs(out).max()) or 1.0
    rows_shown, cols_shown = _window(h, row), _window(w, col)
    ctx.update(
        title=_("Layer %(l)s · %(layer)s · map %(c)s of %(n)s · %(h)s×%(w)s")
        % {"l": layer, "layer": layer_label(model.layers[layer].spec()), "c": channel + 1, "n": out.shape[0],
           "h": h, "w": w},
        picture=png_data_uri(m, bool(out.min() < 0), scale), rows=h, cols=w, clickable=True,
        table=[{"n": r + 1, "cells": [{"text": _num(m[r, c]), "row": r, "col": c, "full": numfmt.significant(m[r, c], 4),
                                        "current": (r, c) == (row, col)} for c in cols_shown]} for r in rows_shown],
        table_cols=[c + 1 for c in cols_shown], partial=len(rows_shown) < h or len(cols_shown) < w,
        window_rows=(rows_shown[0] + 1, rows_shown[-1] + 1), window_cols=(cols_shown[0] + 1, cols_shown[-1] + 1))
    if row is not None:
        box = field_view(model, layer, row, col)
        ctx.update(box=box, value=numfmt.significant(float(m[row, col]), 4), size=box["size"],
                   clipped=box["clipped"], steps=box["steps"])
    return ctx


@router.post("/train/jobs/{job_id}/inside", name="train_inside", response_class=HTMLResponse,
             responses=page_errors(400, 404, 409, 422))
async def train_inside(request: Request, job_id: str) -> Response:
    """One feature map (or first-layer filter) enlarged with its values; with ``cell`` ("row-col")
    or ``row`` and ``col``: that cell's receptive field framed on the input, its size written out.
    The image: ``grid`` (as /train/jobs/{id}/predict) or ``test_index``; ``pick``: "map-L-C" (layer L,
    map C) or "filter-C"; or ``layer`` and ``channel`` fields."""
    job = find_job(request, job_id)
    form = await request.form()
    side = datasets_shape(spec_value(job.spec, "dataset"))[1]
    test_index = _whole(form, "test_index")
    hidden: dict[str, str] = {}
    grid = None
    if test_index is not None:
        hidden["test_index"] = str(test_index)
    else:
        text = str(form.get("grid") or "")
        grid = parse_grid(text, side)
        hidden["grid"] = text
    kind, layer, channel = "map", _whole(form, "layer", 0), _whole(form, "channel", 0)
    pick = str(form.get("pick") or "").strip()
    row, col = _whole(form, "row"), _whole(form, "col")
    if pick:
        parts = pick.split("-")
        try:
            if parts[0] == "filter" and len(parts) == 2:
                kind, channel, row, col = "filter", int(parts[1]), None, None
            elif parts[0] == "map" and len(parts) == 3:
                layer, channel, row, col = int(parts[1]), int(parts[2]), None, None
            else:
                raise ValueError
        except ValueError:
            raise InputError(_("Pick a map or a filter."), field="pick") from None
    cell = str(form.get("cell") or "").strip()
    if cell:
        try:
            row, col = (int(v) for v in cell.split("-"))
        except ValueError:
            raise InputError(_("Pick a cell of the map."), field="cell") from None
    if (row is None) != (col is None):
        raise InputError(_("Give layer, row and col together (or none of them)."), field="row")

    def make() -> Response:
        inside = Inside(job, grid=grid, test_index=test_index)
        nonlocal layer
        if kind == "filter":
            first = inside.first_conv()
            C = inside.model.layers[first].F if first is not None else 0
            if first is None or not 0 <= channel < C:
                raise InputError(_("The first layer has filters 1 to %(n)s.") % {"n": C}, field="pick")
            layer = first
        else:
            inside.check_cell(layer, row or 0, col or 0, channel)
            if inside.outs[layer][0].ndim != 3:
                raise InputError(_("Layer %(l)s gives numbers in a row, not maps: pick a map.") % {"l": layer},
                                 field="layer")
        ctx = inside_context(inside, job_id, kind, layer, channel, row, col, hidden)
        return render(request, "_train_inside.html", ctx, fragment=None)

    return await run_in_threadpool(make)
