"""Why did it say 7? /train's "why" panel and its JSON twin (core/explain.py on a run's model).

Routes:

- ``POST /train/jobs/{id}/why`` (HTML, htmx): the panel ``#train-why`` for a drawn grid
  (``grid``: side×side comma-separated values, as ``/train/jobs/{id}/predict`` takes) or a
  test image (``test_index``); ``method`` = saliency | gradient_input | grad_cam, ``target``
  (the class whose evidence is shown; default the predicted one), ``row``/``col`` (the
  clicked pixel; default the map's strongest pixel).
- ``POST /api/train/{id}/why`` (JSON): the same numbers.

The model is a float64 copy of the run's weights taken at one moment (``_snapshot``): a
running job is never disturbed, and the central-difference check keeps its digits.

Sections: the numbers (``explain_image``, shared by both routes), the panel's view
(``why_context``: pictures, legend, formulas in the page's language), the routes.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Literal

import numpy as np
from cnnlab.app.api_schema import api_errors, page_errors
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import N_
from cnnlab.app.i18n import gettext as _
from cnnlab.app.jobs.job import Job
from cnnlab.app.jobs.use import _snapshot, predict_input
from cnnlab.app.layer_names import layer_label
from cnnlab.app.routers.train_api import ImageRequest, _job
from cnnlab.app.routers.train_page import (
    datasets_shape,
    find_job,
    label_names,
    parse_grid,
    spec_value,
)
from cnnlab.app.templating import render
from cnnlab.core import explain, numfmt
from cnnlab.core.losses import softmax
from fastapi import APIRouter, Request
from markupsafe import Markup
from PIL import Image
from pydantic import BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

router = APIRouter(tags=["train"])

# The central-difference step, in the input's units (pixels are 0..1).
FD_STEP = 1e-3
# Backpropagation and the central difference differ by more than this (relative) only at a kink:
# with h = 1e-3 a smooth score's estimate is off by ~h² (tanh, sigmoid), a ReLU network's by 0.
KINK_TOLERANCE = 1e-4
# Overlays are drawn this many screen pixels wide at least (one image pixel = a square block).
OVERLAY_PX = 224
METHOD_NAMES = {
    "saliency": N_("Saliency"),
    "gradient_input": N_("Gradient × input"),
    "grad_cam": N_("Grad-CAM"),
}
EXPLANATIONS = {
    "saliency": N_(
        "Saliency: how much the score of class %(name)s would change if one pixel changed a little. It is the "
        "gradient ∂score/∂x, computed by backpropagation from the score back to the input, drawn as its size "
        "|∂score/∂x|: the darker a pixel, the more a little ink there would change the answer. It says where the "
        "network is sensitive, not whether the ink there speaks for or against class %(name)s."),
    "gradient_input": N_(
        "Gradient × input multiplies each pixel's value by its gradient: x · ∂score/∂x. Blue pixels push the "
        "score of class %(name)s up, orange ones push it down, and pixels without ink (x = 0) count nothing: it "
        "shows which strokes of the image count as evidence for class %(name)s, and which against."),
    "grad_cam": N_(
        "Grad-CAM looks at the last convolution layer's feature maps A_f instead of the pixels. Each map gets "
        "a weight α_f, the mean of ∂score/∂A_f over its cells: how much that map matters for class %(name)s. "
        "The weighted sum Σ α_f · A_f, with its negative values set to zero (ReLU), marks the regions that speak "
        "for class %(name)s; it has the map's coarse size and is stretched over the image."),
}

# Colours (Okabe–Ito): sizes in one hue, signed values blue (+) and vermillion (−) as the lab's other maps.
SIZE_RGB = np.array([117.0, 60.0, 160.0])   # a dark purple, not used for signs anywhere
POSITIVE_RGB = np.array([0.0, 114.0, 178.0])
NEGATIVE_RGB = np.array([213.0, 94.0, 0.0])
WHITE = np.full(3, 255.0)


# ============================================================================== the numbers


def _class_message(names: list[str]) -> str:
    last = len(names) - 1
    if names == [str(d) for d in range(len(names))]:
        return _("The class must be a whole number from 0 to %(last)s.") % {"last": last}
    return _("The class must be a whole number from 0 to %(last)s (%(names)s).") % {
        "last": last, "names": ", ".join(f"{i} = {n}" for i, n in enumerate(names))}


def _method_message(method: str) -> str:
    return _("Unknown method “%(name)s”: choose saliency, gradient_input or grad_cam.") % {"name": str(method)[:40]}


def _pixel_message(H: int, W: int) -> str:
    return _("The pixel must be a row from 0 to %(rows)s and a column from 0 to %(cols)s.") % {
        "rows": H - 1, "cols": W - 1}


def explain_image(job: Job, grid: Any = None, test_index: int | None = None, *, target: Any = None,
                  method: str = "saliency", row: Any = None, col: Any = None, names: list[str] | None = None) -> dict:
    """Everything the panel and the JSON twin show, as plain numbers.

    Raises InputError (422) for a bad class, method or pixel, ValueError for a bad grid or
    test index, JobStateError (409) when the job has no model yet.
    """
    if method not in explain.METHODS:
        raise InputError(_method_message(method), field="method")
    model = _snapshot(job).astype(np.float64)
    x, true_label = predict_input(job, model, grid, test_index)
    x = x.astype(np.float64)
    _N, _C, H, W = x.shape
    z = explain.scores(model, x)
    K = z.shape[0]
    names = names if names and len(names) == K else [str(k) for k in range(K)]
    p = softmax(z.astype(np.float64))  # explain.probabilities without a second forward pass
    label = int(p.argmax())
    if target is None or target == "":
        target = label
    if isinstance(target, str):
        target = target.strip()
        target = int(target) if target.lstrip("-").isdigit() and len(target) < 6 else target
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < K:
        raise InputError(_class_message(names), field="target")
    score, dx = explain.class_score_gradient(model, x, target)
    out: dict[str, Any] = {
        "method": method, "target": target, "label": label, "score": score, "scores": z.tolist(),
        "probabilities": p.tolist(), "input": x[0, 0].tolist(), "names": names,
    }
    if true_label is not None:
        out["true_label"] = true_label
    cam = None
    if method == "saliency":
        heat = explain.saliency_of(dx)
    elif method == "gradient_input":
        heat = explain.gradient_times_input_of(x, dx)
    else:
        cam = explain.grad_cam(model, x, target)
        heat = cam["upsampled"]
        out["grad_cam"] = {"layer": cam["layer"], "layer_name": model.layers[cam["layer"]].describe(),
                           "layer_label": layer_label(model.layers[cam["layer"]].spec()),
                           "weights": cam["weights"].tolist(), "cells": cam["map"].tolist(), "sum": cam["sum"].tolist()}
    out["map"] = heat.tolist()
    # the pixel: given, or the map's strongest one
    given = row not in (None, "") or col not in (None, "")
    if given:
        try:
            r, c = int(str(row).strip()), int(str(col).strip())
        except (TypeError, ValueError):
            raise InputError(_pixel_message(H, W), field="row") from None
        if not (0 <= r < H and 0 <= c < W):
            raise InputError(_pixel_message(H, W), field="row" if not 0 <= r < H else "col")
    else:
        r, c = (int(v) for v in np.unravel_index(int(np.abs(heat).argmax()), heat.shape))
    channel = int(np.abs(dx[0, :, r, c]).argmax())
    fd = explain.central_difference(model, x, target, channel, r, c, h=FD_STEP)
    pixel: dict[str, Any] = {
        "row": r, "col": c, "channel": channel, "clicked": given, "value": float(x[0, channel, r, c]),
        "gradient": float(dx[0, channel, r, c]), "h": fd["h"], "score_plus": fd["plus"], "score_minus": fd["minus"],
        "estimate": fd["estimate"], "map_value": float(heat[r, c]), "score": fd["score"],
        "right": fd["right"], "left": fd["left"],
        # a kink: the two sides' slopes differ (see explain.central_difference), so do the two numbers
        "kink": bool(abs(fd["estimate"] - float(dx[0, channel, r, c])) > KINK_TOLERANCE * max(1.0, abs(float(dx[0, channel, r, c])))),
    }
    if method == "gradient_input":
        pixel["product"] = float(x[0, channel, r, c] * dx[0, channel, r, c])
    if cam is not None:
        h, w = cam["map"].shape
        i, j = min(h - 1, r * h // H), min(w - 1, c * w // W)
        pixel["cell"] = {"row": i, "col": j, "activations": cam["activations"][:, i, j].tolist(),
                         "weights": cam["weights"].tolist(), "sum": float(cam["sum"][i, j]),
                         "value": float(cam["map"][i, j])}
    out["pixel"] = pixel
    return out


# ============================================================================== the panel's view


def _png(rgb: np.ndarray) -> str:
    """An (h, w, 3) array of 0..255 as a PNG data URI, each pixel enlarged to a square block
    (so no CSS scaling is needed for sharp pixels)."""
    h, w = rgb.shape[:2]
    block = max(1, -(-OVERLAY_PX // max(h, w)))
    big = np.repeat(np.repeat(np.clip(rgb, 0, 255).astype(np.uint8), block, axis=0), block, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(big, "RGB").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def colours(values: np.ndarray, signed: bool, scale: float) -> np.ndarray:
    """(…) values → (…, 3) colours on white: sizes 0..scale white→purple; signed −scale..scale
    vermillion←white→blue."""
    t = np.clip(np.asarray(values, dtype=np.float64) / (scale or 1.0), -1, 1)[..., None]
    if signed:
        return np.where(t >= 0, WHITE + (POSITIVE_RGB - WHITE) * t, WHITE + (NEGATIVE_RGB - WHITE) * (-t))
    return WHITE + (SIZE_RGB - WHITE) * np.clip(t, 0, 1)


def overlay(image: np.ndarray, heat: np.ndarray, signed: bool, scale: float) -> str:
    """The input in grey (ink = mid grey, so the colours stay visible) under the map's colours."""
    ink = np.clip(np.asarray(image, dtype=np.float64), 0, 1)[..., None]
    grey = WHITE * (1 - 0.45 * ink)
    t = np.clip(np.abs(heat) / (scale or 1.0), 0, 1)[..., None]
    colour = colours(heat, signed, scale)
    # the map's colour over the grey image, more opaque where the map is stronger
    alpha = np.sqrt(t)
    return _png(grey * (1 - alpha) + colour * alpha * (grey / 255.0 * 0.35 + 0.65))


def legend(signed: bool, scale: float) -> dict[str, Any]:
    """The colour scale from −scale (signed) or 0 to scale, with the numbers at its ends."""
    values = np.linspace(-1.0 if signed else 0.0, 1.0, 96)[None, :]
    rgb = np.repeat(colours(values, signed, 1.0), 8, axis=0)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(buffer, "PNG", optimize=True)
    return {"src": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
            "low": numfmt.significant(-scale, 3) if signed and scale else "0", "mid": "0" if signed else None,
            "high": numfmt.significant(scale, 3)}


def _n(v: float, digits: int = 4) -> str:
    return numfmt.significant(v, digits)


def _paren(v: float, digits: int = 4) -> str:
    """A number as a factor of a product: negative ones in parentheses."""
    text = _n(v, digits)
    return f"({text})" if v < 0 else text


def _sub(k: int) -> str:
    return str(k).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def why_context(result: dict, job_id: str, hidden: dict[str, str]) -> dict[str, Any]:
    names = result["names"]
    k = int(result["target"])
    method = result["method"]
    heat = np.asarray(result["map"])
    signed = method == "gradient_input"
    largest = float(np.abs(heat).max())
    scale = largest or 1.0
    name = names[k]
    z = f"z{_sub(k)}"
    px = result["pixel"]
    H, W = heat.shape
    formula: dict[str, Any] = {
        "z": z, "row": px["row"], "col": px["col"], "clicked": px["clicked"], "x": _n(px["value"]),
        "gradient": _n(px["gradient"]), "plus": _n(px["score_plus"], 7), "minus": _n(px["score_minus"], 7),
        "h": numfmt.significant(px["h"], 1), "two_h": numfmt.significant(2 * px["h"], 1), "estimate": _n(px["estimate"]),
        "map_value": _n(px["map_value"]), "kink": px["kink"], "score": _n(px["score"], 7),
        "right": _n(px["right"]), "left": _n(px["left"]),
    }
    if method == "gradient_input":
        formula["product"] = _n(px["product"])
        formula["x_paren"], formula["gradient_paren"] = _paren(px["value"]), _paren(px["gradient"])
    if method == "saliency":
        formula["size"] = _n(abs(px["gradient"]))
    if "cell" in px:
        cell = px["cell"]
        terms = [f"{_paren(a, 3)}·{_paren(v, 3)}" for a, v in zip(cell["weights"], cell["activations"])]
        cam = result["grad_cam"]
        formula["cell"] = {"row": cell["row"], "col": cell["col"], "terms": " + ".join(terms), "sum": _n(cell["sum"]),
                           "value": _n(cell["value"]), "F": len(terms),
                           "shape": f"{len(cam['cells'])}×{len(cam['cells'][0])}",
                           "alphas": [{"f": f + 1, "alpha": _n(a, 3)} for f, a in enumerate(cell["weights"])]}
        formula["layer"] = cam["layer_label"]
        formula["layer_number"] = cam["layer"] + 1
    classes = [{"k": i, "name": n, "p": result["probabilities"][i], "selected": i == k, "top": i == result["label"]}
               for i, n in enumerate(names)]
    return {
        "why": True, "job_id": job_id, "hidden": hidden, "method": method, "target": k, "target_name": name,
        "label_name": names[result["label"]], "own": names != [str(i) for i in range(len(names))],
        "methods": [{"value": m, "label": _(label), "checked": m == method} for m, label in METHOD_NAMES.items()],
        "classes": classes, "score": _n(result["score"]), "probability": result["probabilities"][k],
        "overlay": overlay(np.asarray(result["input"]), heat, signed, scale), "rows": H, "cols": W,
        "legend": legend(signed, largest), "explanation": _(EXPLANATIONS[method]) % {"name": name},
        "empty": largest == 0, "formula": formula, "z": z, "zsub": Markup(f"z<sub>{k}</sub>"),
    }


# ============================================================================== routes


def _names(request: Request, job: Job) -> list[str]:
    return label_names(request, spec_value(job.spec, "dataset"))


@router.post("/train/jobs/{job_id}/why", name="train_why", response_class=HTMLResponse,
             responses=page_errors(404, 409, 422))
async def train_why(request: Request, job_id: str) -> Response:
    """The "why" panel for a drawing (``grid``) or a test image (``test_index``): ``method``
    (saliency, gradient_input, grad_cam), ``target`` class (default: the predicted one), the
    clicked pixel ``row``, ``col`` (default: the map's strongest)."""
    job = find_job(request, job_id)
    form = await request.form()
    value = {key: str(form.get(key) or "").strip() for key in ("test_index", "grid", "target", "method", "row", "col")}
    side = datasets_shape(spec_value(job.spec, "dataset"))[1]
    grid, test_index = None, None
    if value["test_index"]:
        try:
            test_index = int(value["test_index"])
        except ValueError:
            raise InputError(_("The test image number must be a whole number.")) from None
        hidden = {"test_index": str(test_index)}
    else:
        grid = parse_grid(value["grid"], side)
        hidden = {"grid": value["grid"]}

    def make() -> Response:
        try:
            result = explain_image(job, grid, test_index, target=value["target"] or None,
                                   method=value["method"] or "saliency", row=value["row"], col=value["col"],
                                   names=_names(request, job))
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return render(request, "_train_why.html", why_context(result, job.id, hidden), fragment=None)

    return await run_in_threadpool(make)


class WhyRequest(ImageRequest):
    target: int | None = Field(None, description="the class whose evidence is shown (default: the predicted class)")
    method: str = Field("saliency", description="saliency (|∂score/∂x|), gradient_input (x·∂score/∂x) or grad_cam")
    row: int | None = Field(None, description="the pixel whose numbers are written out (default: the map's strongest)")
    col: int | None = Field(None, description="its column")

    @model_validator(mode="after")
    def _pixel(self) -> WhyRequest:
        if (self.row is None) != (self.col is None):
            raise ValueError(_("Give both row and col, or neither."))
        return self


class PixelNumbers(BaseModel):
    row: int
    col: int
    channel: int
    clicked: bool = Field(description="false: the pixel was chosen as the map's strongest")
    value: float = Field(description="x, the pixel's value")
    gradient: float = Field(description="∂score/∂x at the pixel, by backpropagation")
    h: float = Field(description="the central-difference step")
    score_plus: float = Field(description="z_target(x + h at the pixel)")
    score_minus: float = Field(description="z_target(x − h at the pixel)")
    estimate: float = Field(description="(score_plus − score_minus) / 2h")
    map_value: float = Field(description="the method's map at the pixel")
    score: float = Field(description="z_target(x)")
    right: float = Field(description="(score_plus − score) / h: the slope to the right")
    left: float = Field(description="(score − score_minus) / h: the slope to the left")
    kink: bool = Field(description=(
        "the score has a kink at this pixel (left ≠ right: a max-pooling window whose largest values tie), so "
        "backpropagation's slope (the window's first maximum) and the central difference (the mean of the two sides) differ"))
    product: float | None = Field(None, description="gradient_input: x · ∂score/∂x")
    cell: dict[str, Any] | None = Field(None, description=(
        "grad_cam: the map cell under the pixel: row, col, activations A_f[i, j], weights α_f, sum Σ α_f·A_f[i, j], "
        "value relu(sum)"))


class WhyResponse(BaseModel):
    method: Literal["saliency", "gradient_input", "grad_cam"]
    target: int = Field(description="the class explained")
    label: int = Field(description="the predicted class")
    score: float = Field(description="z_target: the target class's logit (score before the softmax)")
    scores: list[float] = Field(description="every class's logit")
    probabilities: list[float] = Field(description="softmax of the scores")
    names: list[str] = Field(description="what each class is called")
    input: list = Field(description="the image, H×W in 0..1")
    true_label: int | None = Field(None, description="with test_index: the right answer")
    map: list = Field(description="H×W: |∂score/∂x| (max over channels), x·∂score/∂x, or Grad-CAM stretched to H×W")
    grad_cam: dict[str, Any] | None = Field(None, description=(
        "grad_cam: layer (index of the last conv layer's activation), layer_name, layer_label (in the request's "
        "language), weights α_f (F), "
        "cells relu(Σ α_f A_f) (h×w), sum Σ α_f A_f (h×w)"))
    pixel: PixelNumbers


@router.post("/api/train/{job_id}/why", response_model=WhyResponse, response_model_exclude_none=True,
             responses=api_errors(400, 404, 409, 422))
def why_api(job_id: str, req: WhyRequest, request: Request) -> WhyResponse:
    """Why the job's model answers what it does: the saliency map |∂score/∂x|, gradient × input
    or Grad-CAM (on the last conv layer's activation) for one class, with the score, the
    probabilities and, for one pixel, ∂score/∂x by backpropagation next to its central-difference
    check (z(x+h) − z(x−h))/2h."""
    job = _job(request, job_id)
    try:
        result = explain_image(job, req.grid, req.test_index, target=req.target, method=req.method,
                               row=req.row, col=req.col, names=_names(request, job))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return WhyResponse(**result)
