"""Receptive fields: which input pixels one output cell of a layer can see.

For every layer of a Sequential model, three numbers describe the fields of its output
cells, in input-pixel coordinates (one axis; the other is the same for square inputs):

    r (size)   side of the square of input pixels one output cell sees
    j (jump)   input pixels between the fields of two neighbouring output cells
    start      top-left input coordinate of output cell (0, 0)'s field (< 0: it reaches
               into the padding)

They grow layer by layer, from r = 1, j = 1, start = 0 for the input itself:

    r = r_prev + (k − 1)·j_prev        j = j_prev·s        start = start_prev − p·j_prev

with k the layer's effective kernel (a conv's dilated kernel d·(k − 1) + 1, a pool's
window), s its stride and p its padding before the first row. An activation works cell
by cell (k = 1, s = 1). Global average pooling is a pool whose window is the whole map
(k = s = the map's side). Flatten and Dense see every cell of the map before them, so
their field is the union of those cells' fields (k = the map's side, s = 0: every output
shares one field, j = 0), which is the whole input, and more if padding is involved.

cell_box() clips the field to the input picture: the pixels that, changed, can change
the cell. Dilation leaves holes in a field; the box is the square around it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .conv import resolve_padding
from .layers import Activation, Conv2D, Dense, Flatten, Pool2D

__all__ = ["Field", "axis_fields", "cell_box", "field_steps", "layer_fields"]


@dataclass(frozen=True)
class Field:
    """For one layer's output, in input-pixel coordinates (see the module docstring)."""
    size: int
    jump: int
    start: float


def _input_shape(model, input_shape):
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError("this model was built without input_shape; pass input_shape=(C, H, W)")
    shape = tuple(int(d) for d in shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W); got {shape}")
    return shape


def _layer_geometry(layer, n):
    """(k, s, p, kind) for one axis of length n entering ``layer``: effective kernel,
    stride, padding before, and a short kind name. n is None for a flat (1-D) input."""
    if isinstance(layer, Conv2D):
        k = layer.dilation * (layer.k - 1) + 1
        before, _ = resolve_padding(layer.padding, layer.k, layer.dilation, layer.stride, n)
        return k, layer.stride, before, "conv"
    if isinstance(layer, Pool2D):
        if layer.kind == "global_avg":
            return n, n, 0, "global"
        return layer.size, (layer.size if layer.stride is None else layer.stride), 0, "pool"
    if isinstance(layer, Activation):
        return 1, 1, 0, "activation"
    if isinstance(layer, (Flatten, Dense)):
        # The whole map before it (n = None once flat: a Dense after a Dense sees one "cell").
        return (1 if n is None else n), 0, 0, "dense" if isinstance(layer, Dense) else "flatten"
    raise ValueError(f"no receptive-field rule for layer {type(layer).__name__}")


def axis_fields(model, input_shape=None):
    """Per layer, the rows' and the columns' rules: [(row_step, col_step), ...] where a step is
    a dict {k, s, p, kind, r_prev, j_prev, start_prev, r, j, start, n_in, n_out}. n_out is the
    layer's output length along that axis (None once the output is flat)."""
    C, H, W = _input_shape(model, input_shape)
    shape = (C, H, W)
    state = [(1, 1, 0, H), (1, 1, 0, W)]      # (r, j, start, n) per axis
    out = []
    for layer in model.layers:
        new_shape = tuple(layer.output_shape(shape))
        flat_out = len(new_shape) != 3
        pair, new_state = [], []
        for axis, (r, j, start, n) in enumerate(state):
            k, s, p, kind = _layer_geometry(layer, n)
            r2, j2, start2 = r + (k - 1) * j, j * s, start - p * j
            n_out = None if flat_out else new_shape[1 + axis]
            pair.append({"k": k, "s": s, "p": p, "kind": kind, "r_prev": r, "j_prev": j, "start_prev": start,
                         "r": r2, "j": j2, "start": start2, "n_in": n, "n_out": n_out})
            new_state.append((r2, j2, start2, n_out))
        out.append(tuple(pair))
        state, shape = new_state, new_shape
    return out


def layer_fields(model, input_shape=None) -> list[Field]:
    """One Field per layer of model.layers, in declared order (the rows' axis; the columns'
    is the same for a square input)."""
    return [Field(size=row["r"], jump=row["j"], start=row["start"]) for row, _ in axis_fields(model, input_shape)]


def field_steps(model, upto: int, input_shape=None) -> list[dict]:
    """The formula's numbers for layers 0..upto (inclusive), one dict each:
    {"index", "layer" (describe()), "kind", "k", "s", "p", "r_prev", "j_prev", "r", "j", "start"}
    with r = r_prev + (k − 1)·j_prev and j = j_prev·s (rows' axis)."""
    steps = axis_fields(model, input_shape)
    upto = int(upto)
    if not 0 <= upto < len(steps):
        raise ValueError(f"layer {upto} does not exist: the model has layers 0 to {len(steps) - 1}")
    return [{"index": i, "layer": model.layers[i].describe(), "kind": row["kind"], "k": row["k"], "s": row["s"],
             "p": row["p"], "r_prev": row["r_prev"], "j_prev": row["j_prev"], "r": row["r"], "j": row["j"],
             "start": row["start"]}
            for i, (row, _) in enumerate(steps[:upto + 1])]


def cell_box(model, layer: int, row: int, col: int, input_shape=None) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), inclusive, of the input pixels output cell (row, col) of
    layer ``layer`` sees, clipped to the input. For a flat output (Flatten, Dense) row must
    be 0 and col is the unit's index. Raises ValueError when layer, row or col is out of range."""
    shape = _input_shape(model, input_shape)
    _, H, W = shape
    steps = axis_fields(model, shape)
    layer, row, col = int(layer), int(row), int(col)
    if not 0 <= layer < len(steps):
        raise ValueError(f"layer {layer} does not exist: the model has layers 0 to {len(steps) - 1}")
    rows, cols = steps[layer]
    if rows["n_out"] is None:
        units = model.output_shapes(shape)[layer][0]
        if row != 0 or not 0 <= col < units:
            raise ValueError(f"layer {layer} gives a flat vector of {units} values: "
                             f"use row 0 and a column from 0 to {units - 1}; got ({row}, {col})")
    else:
        rows_n, cols_n = rows["n_out"], cols["n_out"]
        if not (0 <= row < rows_n and 0 <= col < cols_n):
            raise ValueError(f"cell ({row}, {col}) is outside layer {layer}'s {rows_n}\u00d7{cols_n} map")
    top = rows["start"] + row * rows["j"]
    left = cols["start"] + col * cols["j"]
    bottom, right = top + rows["r"] - 1, left + cols["r"] - 1
    return (int(max(top, 0)), int(max(left, 0)), int(min(bottom, H - 1)), int(min(right, W - 1)))
