"""What /train's run shows besides numbers: small arrays as PNG pictures (filters, feature maps,
inputs, overlays) and the loss and accuracy curves of a run and the runs it is compared with, in SVG
coordinates (templates/_train_live.html draws them). No request here: app/routers/train_page.py
and the layer and why views call these.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from cnnlab.app import numbers

__all__ = ["filter_pictures", "plots", "png_data_uri", "run_series"]

# Curves are thinned to at most this many points per line (a long run has thousands of batches).
MAX_CURVE_POINTS = 240


# ============================================================================== pictures


def png_data_uri(array: np.ndarray, diverging: bool, scale: float | None = None) -> str:
    """A small (H, W) array as a PNG data URI, one pixel per value (CSS enlarges it, pixelated).

    diverging: blue for positive, vermillion for negative, white at 0, scaled by the largest
    magnitude (or ``scale``, shared by a set of pictures); otherwise black ink on white from 0 to the array's maximum (images,
    feature maps after ReLU).
    """
    a = np.asarray(array, dtype=np.float64)
    if diverging:
        scale = scale or float(np.abs(a).max()) or 1.0
        t = np.clip(a / scale, -1, 1)[..., None]
        positive = np.array([0, 114, 178], dtype=np.float64)
        negative = np.array([213, 94, 0], dtype=np.float64)
        white = np.full(3, 255.0)
        rgb = np.where(t >= 0, white + (positive - white) * t, white + (negative - white) * (-t))
    else:
        low = min(float(a.min()), 0.0)
        span = ((scale or float(a.max())) - low) or 1.0
        g = 255.0 * (1.0 - np.clip((a - low) / span, 0, 1))
        rgb = np.repeat(g[..., None], 3, axis=2)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def filter_pictures(filters: Any) -> list[str]:
    """The first conv layer's filters (F, C, HH, WW) (the job's latest copy), channel 0, one
    shared colour scale."""
    if not filters:
        return []
    w = np.asarray(filters, dtype=np.float64)
    F = w.shape[0]
    scale = float(np.abs(w).max()) or 1.0
    return [png_data_uri(w[f, 0], True, scale) for f in range(F)]


# ============================================================================== curves

PLOT_W, PLOT_H = 480, 200
# The left margin holds a tick label such as "100 %" at the projector's 20-unit type.
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 72, 14, 12, 30


def _thin(points: list[tuple[float, float]], limit: int = MAX_CURVE_POINTS) -> list[tuple[float, float]]:
    """Every k-th point (and always the last) so a line has at most ``limit`` points."""
    if len(points) <= limit:
        return points
    k = math.ceil(len(points) / limit)
    kept = points[::k]
    if kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


def _epoch_x(r: Mapping[str, Any]) -> float:
    """A record's position in epochs (runs with different batch sizes share the axis)."""
    per = r.get("batches_per_epoch") or 1
    return (r["epoch"] - 1) + r["batch"] / per


def run_series(records: list[Mapping[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """The lines of one run, per epoch: training loss and accuracy measured at each epoch's end
    on the training images as trained (their labels, no augmentation: core.train's
    train_eval_*), the same measure as the held-out loss and accuracy beside them, so the
    gap between the lines is exact. Records without that measure (runs saved before it):
    the batch loss and the epoch's running training accuracy."""
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if any("train_eval_accuracy" in r for r in records):  # every record of a run has the key (None in batches)
        measured = [r for r in epochs if r.get("train_eval_accuracy") is not None]
        loss = [(r["epoch"], r["train_eval_loss"]) for r in measured
                if r.get("train_eval_loss") is not None and math.isfinite(r["train_eval_loss"])]
        train_accuracy = [(r["epoch"], r["train_eval_accuracy"]) for r in measured]
    else:
        loss = _thin([(_epoch_x(r), r["loss"]) for r in records
                      if r.get("kind") == "batch" and r.get("loss") is not None and math.isfinite(r["loss"])])
        train_accuracy = [(r["epoch"], r["train_accuracy"]) for r in epochs]
    return {
        "loss": loss,
        # Every batch's loss as it trained: the line that moves during the first epoch.
        "batch_loss": _thin([(_epoch_x(r), r["loss"]) for r in records if r.get("kind") == "batch"
                             and r.get("loss") is not None and math.isfinite(r["loss"])]),
        "test_loss": [(r["epoch"], r["test_loss"]) for r in epochs if r.get("test_loss") is not None],
        "train_accuracy": train_accuracy,
        "test_accuracy": [(r["epoch"], r["test_accuracy"]) for r in epochs if r.get("test_accuracy") is not None],
    }


def _points(series: list[tuple[float, float]], x_max: float, y_max: float) -> str:
    inner_w = PLOT_W - PLOT_LEFT - PLOT_RIGHT
    inner_h = PLOT_H - PLOT_TOP - PLOT_BOTTOM
    out = []
    for x, y in series:
        px = PLOT_LEFT + inner_w * min(x / x_max, 1.0)
        py = PLOT_TOP + inner_h * (1.0 - min(max(y / y_max, 0.0), 1.0))
        out.append(f"{px:.1f},{py:.1f}")
    return " ".join(out)


def plots(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Two plots (loss, accuracy) with one line per run and kind, in SVG coordinates.

    runs: [{"label", "colour", "series", "epochs"}], the current run first.
    """
    x_max = max([run["epochs"] for run in runs] + [1])
    losses = [y for run in runs for key in ("loss", "test_loss") for _x, y in run["series"][key]]
    losses += [y for _x, y in runs[0]["series"]["batch_loss"]] if runs else []
    loss_max = min(max(math.ceil(max(losses) * 2) / 2, 0.5), 5.0) if losses else 2.5
    inner_h = PLOT_H - PLOT_TOP - PLOT_BOTTOM
    inner_w = PLOT_W - PLOT_LEFT - PLOT_RIGHT

    def axis(y_max: float, ticks: list[tuple[float, str]]):
        return [{"y": PLOT_TOP + inner_h * (1 - v / y_max), "label": label} for v, label in ticks]

    step = max(1, math.ceil(x_max / 6))
    x_ticks = [{"x": PLOT_LEFT + inner_w * e / x_max, "label": str(e)} for e in range(0, int(x_max) + 1, step)]
    loss_ticks = axis(loss_max, [(loss_max * i / 4, numbers.num(loss_max * i / 4, 3)) for i in range(5)])
    acc_ticks = axis(1.0, [(i / 4, numbers.pct(i / 4, 0)) for i in range(5)])
    lines_loss, lines_acc = [], []
    for i, run in enumerate(runs):
        s = run["series"]
        lines_loss.append({"run": i, "kind": "train", "colour": run["colour"], "points": _points(s["loss"], x_max, loss_max)})
        lines_loss.append({"run": i, "kind": "test", "colour": run["colour"], "points": _points(s["test_loss"], x_max, loss_max)})
        lines_acc.append({"run": i, "kind": "train", "colour": run["colour"], "points": _points(s["train_accuracy"], x_max, 1.0)})
        lines_acc.append({"run": i, "kind": "test", "colour": run["colour"], "points": _points(s["test_accuracy"], x_max, 1.0)})
    if runs:  # the current run's batch losses, thin, under the measured lines (earlier runs' would crowd the plot)
        lines_loss.append({"run": 0, "kind": "batch", "colour": runs[0]["colour"],
                           "points": _points(runs[0]["series"]["batch_loss"], x_max, loss_max)})
    frame = {"w": PLOT_W, "h": PLOT_H, "left": PLOT_LEFT, "right": PLOT_W - PLOT_RIGHT, "top": PLOT_TOP,
             "bottom": PLOT_H - PLOT_BOTTOM, "x_ticks": x_ticks}
    return {"frame": frame, "loss": {"lines": lines_loss, "ticks": loss_ticks},
            "accuracy": {"lines": lines_acc, "ticks": acc_ticks}}
