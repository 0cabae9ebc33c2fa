"""The /train design table: every layer's output shape and parameter count, each with its
formula and numbers, the total, and the receptive field of the last convolution.

One function, ``design(model)``, used by the page's summary (``templates/_train_summary.html``)
and by its JSON twin ``GET /api/train/design``. The counts are the slides':

    convolution   (k·k·C + 1)·F      k×k kernel, C input channels, F filters (+1: each filter's bias)
    dense         (D + 1)·U          D inputs, U units
    pooling, activation, flatten: 0

and each map's side is core.conv's output-size formula ⌊(n + 2p − d·(k − 1) − 1)/s⌋ + 1. The
receptive field (core.receptive) grows layer by layer: r = r_prev + (k − 1)·j_prev, j = j_prev·s.
"""

from __future__ import annotations

import math
from typing import Any

from cnnlab.app.i18n import gettext as _
from cnnlab.app.layer_names import LAYER_NAMES, layer_detail
from cnnlab.app.numbers import count
from cnnlab.app.receptive_view import step_formulas
from cnnlab.core.conv import output_size_formula, resolve_padding
from cnnlab.core.layers import Conv2D, Dense, Flatten, Pool2D
from cnnlab.core.receptive import field_steps

__all__ = ["design", "conv_blocks_of"]


def _shape(shape) -> str:
    return "×".join(str(d) for d in shape)


def conv_blocks_of(model) -> list[int]:
    """The block number (1, 2, 3) of each layer: a block starts at each Conv2D and runs to
    the next one; Flatten and the dense part after it get 0."""
    numbers, block = [], 0
    for layer in model.layers:
        if isinstance(layer, Conv2D) and block >= 0:
            block += 1
        elif isinstance(layer, Flatten):
            block = -1
        numbers.append(max(block, 0))
    return numbers


def _params_formula(layer) -> str | None:
    if isinstance(layer, Conv2D):
        return (f"(k·k·C + 1)·F = ({layer.k}·{layer.k}·{layer.C} + 1)·{layer.F} = "
                f"{count(layer.n_params)}")
    if isinstance(layer, Dense):
        D, U = layer.params["w"].shape
        return f"(D + 1)·U = ({count(D)} + 1)·{count(U)} = {count(layer.n_params)}"
    return None


def _shape_formula(layer, shape_in, shape_out) -> str | None:
    """The output side's formula with its numbers for a conv or pooling layer; Flatten: C·H·W."""
    if isinstance(layer, Conv2D):
        n = shape_in[1]
        pad = resolve_padding(layer.padding, layer.k, layer.dilation, layer.stride, n)
        return output_size_formula(n, layer.k, layer.stride, pad, layer.dilation)
    if isinstance(layer, Pool2D) and layer.kind != "global_avg":
        n = shape_in[1]
        stride = layer.stride or layer.size
        return output_size_formula(n, layer.size, stride, 0)
    if isinstance(layer, Flatten) and len(shape_in) == 3:
        return f"{'·'.join(str(d) for d in shape_in)} = {count(math.prod(shape_in))}"
    return None


def design(model, input_shape=None) -> dict[str, Any]:
    """The design table of ``model`` (translated where it is text):

    {"input_shape": [C, H, W], "layers": [{"index", "block" (1–3; 0 for the dense part),
    "type", "name", "detail", "shape" [..], "shape_formula" (or None), "params",
    "params_formula" (or None)}], "total", "total_formula" ("80 + 0 + … = 2 730"),
    "receptive_field": {"layer" (index of the last Conv2D), "size" r, "jump" j,
    "steps": [{"index", "name", "k", "s", "r_prev", "j_prev", "r", "j", "r_formula",
    "j_formula"}]} or None when there is no convolution}.
    """
    shape = tuple(input_shape or model.input_shape)
    shapes = model.output_shapes(shape)
    blocks = conv_blocks_of(model)
    layers = []
    shape_in = shape
    for i, (layer, out) in enumerate(zip(model.layers, shapes)):
        kind = type(layer).__name__
        layers.append({
            "index": i, "block": blocks[i], "type": kind, "name": _(LAYER_NAMES.get(kind, kind)),
            "detail": layer_detail(layer.spec()), "shape": list(out),
            "shape_formula": _shape_formula(layer, shape_in, out),
            "params": layer.n_params, "params_formula": _params_formula(layer)})
        shape_in = out
    counted = [row["params"] for row in layers if row["params"]]
    total = model.n_params
    total_formula = f"{' + '.join(count(n) for n in counted)} = {count(total)}" if len(counted) > 1 else None
    convs = [i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2D)]
    field = None
    if convs:
        last = convs[-1]
        steps = []
        for step in field_steps(model, last, shape):
            layer = model.layers[step["index"]]
            kind = type(layer).__name__
            r_formula, j_formula = step_formulas(step)
            steps.append({
                "index": step["index"], "name": _(LAYER_NAMES.get(kind, kind)), "detail": layer_detail(layer.spec()),
                "k": step["k"], "s": step["s"], "r_prev": step["r_prev"], "j_prev": step["j_prev"],
                "r": step["r"], "j": step["j"], "r_formula": r_formula, "j_formula": j_formula})
        field = {"layer": last, "size": steps[-1]["r"], "jump": steps[-1]["j"], "steps": steps}
    return {"input_shape": list(shape), "layers": layers, "total": total, "total_formula": total_formula,
            "receptive_field": field}
