"""A receptive field as a page writes it: the steps r = r_prev + (k − 1)·j_prev, j = j_prev·s
with their numbers, layer by layer, and a cell's box (core/receptive.py) in 1-based rows and
columns. Used by /train's layer view (app/routers/train_inside.py) and /pipeline."""

from __future__ import annotations

from typing import Any

from cnnlab.app.i18n import gettext as _
from cnnlab.app.layer_names import layer_label
from cnnlab.core.receptive import cell_box, field_steps, layer_fields

__all__ = ["field_view", "step_formulas", "step_texts"]

MINUS, DOT = "\u2212", "\u00b7"


def step_formulas(step: dict[str, Any]) -> tuple[str, str]:
    """One of core.receptive.field_steps' steps as its two formulas' right-hand sides:
    ("1 + (3 − 1)·1 = 3", "1·1 = 1")."""
    return (f"{step['r_prev']} + ({step['k']} {MINUS} 1){DOT}{step['j_prev']} = {step['r']}",
            f"{step['j_prev']}{DOT}{step['s']} = {step['j']}")


def step_texts(model, layer: int) -> list[dict[str, Any]]:
    """field_steps(model, layer) written out: {"index", "layer" (its name in the page's language),
    "r": "r = 1 + (3 − 1)·1 = 3", "j": "j = 1·1 = 1", "note"}."""
    out = []
    for s in field_steps(model, layer):
        note = ""
        if s["kind"] in ("flatten", "dense"):
            note = _("every number sees the whole map before it")
        elif s["kind"] == "global":
            note = _("the window is the whole map")
        elif s["kind"] == "activation":
            note = _("cell by cell: k = 1, s = 1")
        r_formula, j_formula = step_formulas(s)
        out.append({"index": s["index"], "layer": layer_label(model.layers[s["index"]].spec()),
                    "r": f"r = {r_formula}", "j": f"j = {j_formula}", "note": note,
                    "k": s["k"], "s": s["s"], "r_value": s["r"], "j_value": s["j"]})
    return out


def field_view(model, layer: int, row: int, col: int) -> dict[str, Any]:
    """Cell (row, col) of ``layer`` (0-based): its box (0-based top, left, height, width for
    drawing; 1-based "rows" and "cols" for reading), its full size r, whether the box was
    clipped to the picture, and the steps."""
    t, left, b, r = cell_box(model, layer, row, col)
    size = layer_fields(model)[layer].size
    return {"top": t, "left": left, "bottom": b, "right": r, "height": b - t + 1, "width": r - left + 1,
            "rows": (t + 1, b + 1), "cols": (left + 1, r + 1), "size": size,
            "clipped": (b - t + 1, r - left + 1) != (size, size), "steps": step_texts(model, layer)}
