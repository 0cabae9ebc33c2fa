"""Pooling: max, average and global average, as forward/backward pairs, a naive loop and
the stepper's one-window view.

Layout is NCHW: x (N, C, H, W) -> out (N, C, Ho, Wo) with Ho = ⌊(H − size)/stride⌋ + 1
(conv.output_size with no padding; stride defaults to size), and out (N, C, 1, 1) for
global average pooling.

The vectorised max pool is separable: first, for every input row, the maximum over each
window's columns (one strided slice per column offset), then the maximum of those over
each window's rows. Both passes keep the first maximum they meet (strict >), so a tied
window's gradient goes to exactly one cell, the first in row-major order, as PyTorch does.
After ReLU the blank background of a digit ties every cell of most windows at 0; routing
the gradient to every tied cell instead would multiply it by up to four.

Windows that tile the input (stride == size, the usual 2×2 pool of a training step) take a
faster route to the same numbers. NumPy runs an operation on a view like across[:, :, i::2, :]
as one short loop per row of Wo values, and the loop overhead dominates (7,168 loops of 14
for a 64×8×28×28 batch). And NumPy's vectorised (SIMD) loops for maximum and greater run only
on contiguous data: on a stride-k view they fall back to one element at a time. So the column
pass first copies each window column x[..., j::k] into a contiguous plane (a plain copy of a
strided view is one long loop, ~3× cheaper than comparing on it: 65 µs against 130 µs for
greater and 180 µs for maximum on the batch above), then compares the planes. The row pass
copies each window row into a contiguous plane, moving each row of Wo values as one opaque
item, and then compares contiguous arrays. The gradient goes back the same way (writing
straight into dx's strided columns: copying planes out measured no faster there). The same
comparisons in the same order give bit-identical outputs, picks and gradients:
tests/test_pool.py checks the two routes against each other, ties included.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np

from . import numfmt
from .conv import _FRESH, _is_integral, _resolve_position, _whole, format_factor, format_number, output_size

__all__ = ["KINDS", "PoolCache", "pool_forward", "pool_backward", "pool_forward_naive", "PoolStep", "pool_step",
           "pool_step_count"]

KINDS = ("max", "avg", "global_avg")


def _settings(kind, size, stride, H, W):
    """Checked (size, stride, Ho, Wo)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}.")
    if kind == "global_avg":
        return None, None, 1, 1
    size = _whole("pool size", size, 1)
    stride = size if stride is None else _whole("stride", stride, 1)
    return size, stride, output_size(H, size, stride), output_size(W, size, stride)


def _float(x):
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


@dataclasses.dataclass
class PoolCache:
    """What pool_backward needs, by name.

    kind, size, stride, x_shape (N, C, H, W), out_shape (N, C, Ho, Wo), dtype;
    workspace and generation (to detect a workspace reused before this backward).
    For max pooling (else None):
      col_pick (N, C, Hc, Wo) int8: for each input row r < Hc = stride·(Ho − 1) + size and
        output column q, which window column (0 … size−1) holds the first maximum of
        x[r, q·stride : q·stride + size];
      row_pick (N, C, Ho, Wo) int8: which window row holds the window's first maximum.
    The winner of window (p, q) is row p·stride + i, column q·stride + col_pick[…, p·stride + i, q]
    with i = row_pick[…, p, q].
    """
    kind: str
    size: int | None
    stride: int | None
    x_shape: tuple
    out_shape: tuple
    dtype: np.dtype
    workspace: object
    generation: int
    col_pick: np.ndarray | None = None
    row_pick: np.ndarray | None = None
    tiled: object = None   # the tiled route's buffers when forward took it (stride == size)


def _rows(a, i, stride, count):
    """Rows i, i + stride, … (count of them) of a (N, C, rows, cols)."""
    return a[:, :, i: i + stride * (count - 1) + 1: stride, :]


def _cols(a, j, stride, count):
    """Columns j, j + stride, … (count of them) of a (N, C, rows, cols)."""
    return a[:, :, :, j: j + stride * (count - 1) + 1: stride]


def _running_max(slices, best, pick):
    """best = elementwise max over slices; pick (int8) = index of the first slice attaining it.

    Only a strictly greater value replaces the running maximum, so ties keep the earliest
    index; since indices only grow, pick = max(pick, j·[slice j took over]) records the
    last takeover. Two slices (the usual 2×2 window) take two passes in all.
    """
    if len(slices) == 1:
        np.copyto(best, slices[0])
        pick.fill(0)
        return
    np.greater(slices[1], slices[0], out=pick.view(np.bool_))
    np.maximum(slices[0], slices[1], out=best)
    if len(slices) > 2:
        flag = np.empty(best.shape, np.bool_)
        took = flag.view(np.int8)
        for j in range(2, len(slices)):
            np.greater(slices[j], best, out=flag)
            np.maximum(best, slices[j], out=best)
            np.multiply(took, np.int8(j), out=took)
            np.maximum(pick, took, out=pick)


# The tiled route (see the module docstring); tests switch it off to compare the two routes.
_TILED = True


def _tiled(kind, size, stride, x):
    """Whether the windows tile x (stride == size > 1) and x is one C-ordered block."""
    return _TILED and kind != "global_avg" and stride == size > 1 and x.flags.c_contiguous


def _as_rows(a):
    """a (..., Wo), C-ordered rows -> (...) view of opaque items, one per row of Wo values:
    copying rows then moves one item each instead of Wo strided elements."""
    return a.view(np.dtype((np.void, a.shape[-1] * a.itemsize)))[..., 0]


class _Tiled:
    """Buffers and views of the tiled route for one input shape, dtype and window size k,
    built once per workspace (a training step calls with the same shape every time).

    cols (k, N·C, Hc, Wo): contiguous copies of x's window columns x[..., j::k] (rows
    r < Hc = k·Ho), so that the comparisons run NumPy's SIMD loops (module docstring);
    across (N·C, Hc, Wo): the maximum (sum) over each window's columns;
    rows (k, N·C, Ho, Wo): rows[i][m, p] = across[m, p·k + i]; out, picks and dx.
    Backward reuses across and rows as scratch space (the picks hold what it needs).
    """

    def __init__(self, shape, dtype, k, Ho, Wo, kind):
        N, C, H, W = shape
        NC, Hc = N * C, k * Ho
        self.k, self.Hc, self.Wc = k, Hc, k * Wo
        self.across = np.empty((NC, Hc, Wo), dtype)
        self.cols = np.empty((k, NC, Hc, Wo), dtype)
        self.rows = np.empty((k, NC, Ho, Wo), dtype)
        self.out = np.empty((N, C, Ho, Wo), dtype)
        self.flat_out = self.out.reshape(NC, Ho, Wo)
        self.dx = np.empty(shape, dtype)
        self.dx3 = self.dx.reshape(NC, H, W)
        self.dx_cols = [self.dx3[:, :Hc, j: self.Wc: k] for j in range(k)]
        # the cells no window reaches (the last rows / columns when k does not divide H, W)
        self.dx_left_out = [a for a in (self.dx3[:, Hc:, :], self.dx3[:, :Hc, self.Wc:]) if a.size]
        across_rows = _as_rows(self.across).reshape(NC, Ho, k)
        self.across_rows = [across_rows[:, :, i] for i in range(k)]
        self.row_items = [_as_rows(r) for r in self.rows]
        if kind == "max":
            self.col_pick = np.empty((N, C, Hc, Wo), np.int8)
            self.row_pick = np.empty((N, C, Ho, Wo), np.int8)
            self.col_pick_flat = self.col_pick.reshape(self.across.shape)
            self.row_pick_flat = self.row_pick.reshape(self.flat_out.shape)

    _x = _x_cols = None

    def x_cols(self, x):
        """x's window columns: [x[m, r, j::k] for j < k] as (N·C, Hc, Wo) views."""
        if x is not self._x:
            # a layer's input is usually the same buffer every step: slice it once
            x3 = x.reshape(self.across.shape[0], x.shape[2], x.shape[3])
            k, Hc, Wc = self.k, self.Hc, self.Wc
            self._x, self._x_cols = x, [x3[:, :Hc, j: Wc: k] for j in range(k)]
        return self._x_cols

    def copy_cols(self, x):
        """x's window columns copied into the contiguous planes self.cols."""
        for plane, col in zip(self.cols, self.x_cols(x)):
            np.copyto(plane, col)
        return self.cols

    def split_rows(self):
        for i in range(self.k):
            np.copyto(self.row_items[i], self.across_rows[i])

    def join_rows(self):
        for i in range(self.k):
            np.copyto(self.across_rows[i], self.row_items[i])

    def zero_left_out(self):
        """Zeros in dx where no window reaches."""
        for a in self.dx_left_out:
            a.fill(0)


def _tiled_plan(ws, shape, dtype, k, Ho, Wo, kind):
    key = ("pool.tiled", shape, np.dtype(dtype).str, k, kind)
    plan = ws.plans.get(key) if ws is not _FRESH else None
    if plan is None:
        plan = _Tiled(shape, dtype, k, Ho, Wo, kind)
        if ws is not _FRESH:
            if len(ws.plans) >= 4:   # a few shapes (full batches, an epoch's last one)
                ws.plans.clear()
            ws.plans[key] = plan
    return plan


def _forward_tiled(x, kind, size, Ho, Wo, ws, cache):
    t = _tiled_plan(ws, x.shape, x.dtype, size, Ho, Wo, kind)
    cache.tiled = t
    cols = t.copy_cols(x)
    if kind == "avg":
        # the same additions in the same order as the strided route: bit-identical
        np.copyto(t.across, cols[0])
        for j in range(1, size):
            t.across += cols[j]
        t.split_rows()
        np.copyto(t.flat_out, t.rows[0])
        for i in range(1, size):
            t.flat_out += t.rows[i]
        t.out /= size * size
        return t.out
    cache.col_pick, cache.row_pick = t.col_pick, t.row_pick
    _running_max(cols, t.across, t.col_pick_flat)
    t.split_rows()
    _running_max(t.rows, t.flat_out, t.row_pick_flat)
    return t.out


def _route(src, pick, planes, size):
    """planes[i] = src where pick == i, else 0 (average: pick None, every plane = src)."""
    if pick is None:
        for i in range(size):
            np.copyto(planes[i], src)
    elif size == 2:
        # as _spread: plane 1 gets src·pick and plane 0 the rest, two passes in all
        np.multiply(src, pick, out=planes[1])
        np.subtract(src, planes[1], out=planes[0])
    else:
        mask = np.empty(src.shape, np.bool_)
        for i in range(size):
            np.equal(pick, i, out=mask)
            np.multiply(src, mask, out=planes[i])


def _backward_tiled(dout, cache):
    t, k = cache.tiled, cache.size
    d = dout.reshape(t.flat_out.shape)
    if cache.kind == "avg":
        d = d / (k * k)
    max_pool = cache.kind == "max"
    _route(d, t.row_pick_flat if max_pool else None, t.rows, k)
    t.join_rows()
    _route(t.across, t.col_pick_flat if max_pool else None, t.dx_cols, k)
    t.zero_left_out()
    return t.dx


def pool_forward(x, kind="max", size=2, stride=None, *, workspace=None):
    """Pooling forward pass.

    x: (N, C, H, W) -> out: (N, C, Ho, Wo) with Ho = ⌊(H − size)/stride⌋ + 1,
    Wo = ⌊(W − size)/stride⌋ + 1 (stride defaults to size; windows may overlap when
    stride < size); "global_avg" gives out (N, C, 1, 1). Returns (out, PoolCache).
    float32 stays float32, anything else becomes float64.
    workspace: an optional core.conv.Workspace whose buffers are reused (out included;
    see Workspace).
    """
    x = _float(x)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W); got {x.shape}.")
    N, C, H, W = x.shape
    size, stride, Ho, Wo = _settings(kind, size, stride, H, W)
    ws = _FRESH if workspace is None else workspace
    if workspace is not None:
        workspace.generation += 1
    cache = PoolCache(kind, size, stride, x.shape, (N, C, Ho, Wo), x.dtype, ws, ws.generation)
    if kind == "global_avg":
        return x.mean(axis=(2, 3), keepdims=True), cache
    if _tiled(kind, size, stride, x):
        return _forward_tiled(x, kind, size, Ho, Wo, ws, cache), cache
    Hc = stride * (Ho - 1) + size
    xs = x[:, :, :Hc, :]
    across = ws.buffer("pool.across", (N, C, Hc, Wo), x.dtype)
    out = ws.buffer("pool.out", (N, C, Ho, Wo), x.dtype)
    if kind == "avg":
        np.copyto(across, _cols(xs, 0, stride, Wo))
        for j in range(1, size):
            across += _cols(xs, j, stride, Wo)
        np.copyto(out, _rows(across, 0, stride, Ho))
        for i in range(1, size):
            out += _rows(across, i, stride, Ho)
        out /= size * size
        return out, cache
    cache.col_pick = ws.buffer("pool.col_pick", across.shape, np.int8)
    cache.row_pick = ws.buffer("pool.row_pick", out.shape, np.int8)
    _running_max([_cols(xs, j, stride, Wo) for j in range(size)], across, cache.col_pick)
    _running_max([_rows(across, i, stride, Ho) for i in range(size)], out, cache.row_pick)
    return out, cache


def _spread(dst, src, pick, size, stride, part):
    """Send src back through the `size` slices part(dst, i): all of it (average, pick None)
    or, for max, only where pick == i. Slices that overlap (stride < size) add up; disjoint
    ones are assigned, so dst must start zeroed wherever no slice reaches."""
    if stride < size:
        if pick is None:
            for i in range(size):
                part(dst, i)[...] += src
            return
        mask = np.empty(src.shape, np.bool_)
        routed = np.empty(src.shape, src.dtype)
        for i in range(size):
            np.equal(pick, i, out=mask)
            np.multiply(src, mask, out=routed)
            part(dst, i)[...] += routed
        return
    if pick is None:
        for i in range(size):
            np.copyto(part(dst, i), src)
    elif size == 1:
        np.copyto(part(dst, 0), src)
    elif size == 2:
        # pick is 0/1 here: slice 1 gets src·pick and slice 0 the rest, two passes in all
        np.multiply(src, pick, out=part(dst, 1))
        np.subtract(src, part(dst, 1), out=part(dst, 0))
    else:
        mask = np.empty(src.shape, np.bool_)
        for i in range(size):
            np.equal(pick, i, out=mask)
            np.multiply(src, mask, out=part(dst, i))


def pool_backward(dout, cache):
    """Backward pass of pool_forward.

    dout: (N, C, Ho, Wo) (or (N, C, 1, 1) for global_avg) -> dx: (N, C, H, W).
    Max: each window's gradient goes to its first maximum in row-major order; windows that
    overlap (stride < size) add up. Average: each window's gradient is shared equally.
    """
    N, C, H, W = cache.x_shape
    _, _, Ho, Wo = cache.out_shape
    if cache.generation != cache.workspace.generation:
        raise RuntimeError("this cache's workspace was used by a later forward pass; "
                           "run backward before the next forward with the same workspace")
    dout = np.asarray(dout, dtype=cache.dtype)
    if dout.shape != cache.out_shape:
        raise ValueError(f"dout must have shape {cache.out_shape}; got {dout.shape}.")
    if cache.tiled is not None:
        return _backward_tiled(dout, cache)
    ws = cache.workspace
    dx = ws.buffer("pool.dx", (N, C, H, W), cache.dtype)
    if cache.kind == "global_avg":
        np.copyto(dx, dout / (H * W))
        return dx
    size, stride = cache.size, cache.stride
    Hc, Wc = stride * (Ho - 1) + size, stride * (Wo - 1) + size
    across = ws.buffer("pool.across", (N, C, Hc, Wo), cache.dtype)
    # When the windows tile the input exactly every cell is written below; otherwise the
    # cells no window reaches must read 0.
    tiles = stride == size
    if not tiles:
        across.fill(0)
    if not (tiles and (Hc, Wc) == (H, W)):
        dx.fill(0)
    if cache.kind == "avg":
        dout = dout / (size * size)
    _spread(across, dout, cache.row_pick, size, stride, lambda a, i: _rows(a, i, stride, Ho))
    _spread(dx[:, :, :Hc, :], across, cache.col_pick, size, stride, lambda a, j: _cols(a, j, stride, Wo))
    return dx


def pool_forward_naive(x, kind="max", size=2, stride=None):
    """Explicit loops over images, channels, rows and columns; one window at a time.

    x: (N, C, H, W) -> out: (N, C, Ho, Wo), Ho = ⌊(H − size)/stride⌋ + 1 (or (N, C, 1, 1)
    for global_avg).
    """
    x = _float(x)
    N, C, H, W = x.shape
    size, stride, Ho, Wo = _settings(kind, size, stride, H, W)
    out = np.zeros((N, C, Ho, Wo), x.dtype)
    for n in range(N):
        for c in range(C):
            for row in range(Ho):
                for col in range(Wo):
                    if kind == "global_avg":
                        window = x[n, c]
                    else:
                        window = x[n, c, row * stride: row * stride + size, col * stride: col * stride + size]
                    out[n, c, row, col] = window.max() if kind == "max" else window.mean()
    return out


# ---------------------------------------------------------------------------
# The stepper: one window written out
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PoolStep:
    """One output value of the pooling of a single image, with the window that makes it.

    kind; channel, row, col: the output position; step: its index in row-major order over
    (channel, row, col); steps: C·Ho·Wo; out_shape: (C, Ho, Wo); size, stride (None for
    global_avg).
    window: the window's values as a list of rows; window_rows, window_cols: their input
    coordinates. winner: (row, col) in the input of the cell that wins a max window (the
    first maximum in row-major order, the one that receives the gradient); None otherwise.
    value: the output; text: ``max(3, 7, 1, 7) = 7`` or ``(1 + 2 + 3 + 4) / 4 = 2.5``.
    Integer inputs (integer dtype, or floats with whole values) give Python ints, and an
    average that comes out whole is an int too.
    """
    kind: str
    channel: int
    row: int
    col: int
    step: int
    steps: int
    out_shape: tuple
    size: int | None
    stride: int | None
    window: list
    window_rows: list
    window_cols: list
    winner: tuple | None
    value: object
    text: str


def _image(x):
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or min(x.shape) < 1:
        raise ValueError(f"x must be one image of shape (C, H, W) or (H, W); got {x.shape}.")
    if x.dtype.kind not in "iubf":
        raise ValueError(f"x must hold numbers; got dtype {x.dtype}.")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or infinity.")
    return x


def pool_step_count(x, kind="max", size=2, stride=None):
    """Number of stepper positions C·Ho·Wo for one image x (C, H, W) or (H, W) (array or shape)."""
    shape = tuple(np.shape(x))
    if len(shape) == 2:
        shape = (1,) + shape
    if len(shape) != 3:
        raise ValueError(f"x must be one image of shape (C, H, W) or (H, W); got {shape}.")
    C, H, W = shape
    _, _, Ho, Wo = _settings(kind, size, stride, H, W)
    return C * Ho * Wo


def pool_step(x, kind="max", size=2, stride=None, step=None, position=None):
    """One output position of pooling a single image x (C, H, W) (or (H, W)), written out.

    position=(channel, row, col) or step k (row-major over channels, rows, columns;
    default 0). Returns a PoolStep whose value equals pool_forward(x[None], ...)[0][0, channel, row, col].
    """
    x = _image(x)
    C, H, W = x.shape
    size, stride, Ho, Wo = _settings(kind, size, stride, H, W)
    c, row, col, step = _resolve_position(step, position, C, Ho, Wo, axis="channel")

    if kind == "global_avg":
        rows, cols = list(range(H)), list(range(W))
    else:
        rows = list(range(row * stride, row * stride + size))
        cols = list(range(col * stride, col * stride + size))
    exact = _is_integral(x)
    number = int if exact else float
    window = [[number(x[c, r, q]) for q in cols] for r in rows]
    flat = [v for line in window for v in line]
    winner = None
    if kind == "max":
        value = max(flat)
        first = flat.index(value)  # row-major: the cell that receives the gradient
        winner = (rows[first // len(cols)], cols[first % len(cols)])
        text = f"max({numfmt.list_separator(flat).join(format_number(v) for v in flat)}) = {format_number(value)}"
    else:
        count = len(flat)
        if exact:
            mean = Fraction(sum(flat), count)
            value = int(mean) if mean.denominator == 1 else float(mean)
        else:
            value = math.fsum(flat) / count
        text = f"({' + '.join(format_factor(v) for v in flat)}) / {count} = {format_number(value)}"
    return PoolStep(kind=kind, channel=c, row=row, col=col, step=step, steps=C * Ho * Wo, out_shape=(C, Ho, Wo),
                    size=size, stride=stride, window=window, window_rows=rows, window_cols=cols, winner=winner,
                    value=value, text=text)
