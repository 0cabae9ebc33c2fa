"""2-D convolution: the output-size formula, padding, the stepper's dot product, and the
im2col engine that trains.

Two implementations sit side by side and tests prove they agree:

* ``conv_forward_naive`` and ``conv_step`` are the teacher: one explicit dot product per
  output position, exactly what the slides write out (``35·(−2) + 40·(−1) + … = 78``).
* ``conv_forward`` / ``conv_backward`` are the worker: im2col (every receptive field as a
  column, built by one strided copy) followed by a single matrix product.

Layout is NCHW: x (N, C, H, W), w (F, C, HH, WW), b (F,), out (N, F, Ho, Wo) with

    Ho = ⌊(H + P_total − D·(HH − 1) − 1) / S⌋ + 1          (and the same for Wo)

``mode="cross-correlation"`` (the default) is what deep-learning libraries and the slides
compute; ``mode="convolution"`` flips the kernel in both spatial axes first.

Training code should give each conv (and pool) layer a ``Workspace`` so big buffers are
reused from step to step instead of being faulted in anew (see Workspace).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import numfmt

__all__ = [
    "MODES",
    "OutputSizeError",
    "output_size",
    "output_size_formula",
    "resolve_padding",
    "ConvGeometry",
    "conv_geometry",
    "Workspace",
    "ConvCache",
    "conv_forward_naive",
    "conv_forward",
    "conv_backward",
    "Term",
    "ConvStep",
    "conv_step",
    "conv_step_count",
    "format_number",
    "format_factor",
]

MODES = ("cross-correlation", "convolution")

MINUS = "\u2212"
DOT = "\u00b7"


# ---------------------------------------------------------------------------
# Checking settings
# ---------------------------------------------------------------------------

def _whole(name, value, minimum):
    """``value`` as a Python int, or a ValueError that says what was expected."""
    # bool is an int subclass, but `stride=True` is always a mistake.
    if type(value) is int:
        pass
    elif isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number \u2265 {minimum}; got {value!r}.")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be a whole number \u2265 {minimum}; got {value}.")
    return value


def _pair(name, value, minimum):
    """An int or a pair of ints as (for rows, for columns)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be a whole number or a pair (rows, columns); got {value!r}.")
        return _whole(name, value[0], minimum), _whole(name, value[1], minimum)
    value = _whole(name, value, minimum)
    return value, value


def _pad_pair(pad):
    """An int P (P before and P after) or a (before, after) pair, as (before, after)."""
    if isinstance(pad, (tuple, list)):
        if len(pad) != 2:
            raise ValueError(f"padding for one axis must be a whole number or a pair (before, after); got {pad!r}.")
        return _whole("padding", pad[0], 0), _whole("padding", pad[1], 0)
    pad = _whole("padding", pad, 0)
    return pad, pad


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    return mode


# ---------------------------------------------------------------------------
# Output size and padding
# ---------------------------------------------------------------------------

class OutputSizeError(ValueError):
    """The kernel does not fit in the padded input. Carries the numbers so a page can
    explain it in its own language: n, k, stride, pad (before, after), dilation,
    size (the formula's value, < 1) and formula (the formula with the numbers filled in)."""

    def __init__(self, message, *, n, k, stride, pad, dilation, size, formula):
        super().__init__(message)
        self.n, self.k, self.stride, self.pad, self.dilation = n, k, stride, pad, dilation
        self.size, self.formula = size, formula


def _signed(v):
    return f"{MINUS}{-v}" if v < 0 else str(v)


def _output_size_parts(n, k, stride, pad, dilation):
    """Checked settings and the size."""
    n = _whole("input size", n, 1)
    k = _whole("kernel size", k, 1)
    stride = _whole("stride", stride, 1)
    dilation = _whole("dilation", dilation, 1)
    before, after = _pad_pair(pad)
    # Python's // floors toward −∞, which is the ⌊·⌋ of the formula for negative numerators too.
    size = (n + before + after - dilation * (k - 1) - 1) // stride + 1
    return n, k, stride, (before, after), dilation, size


def _formula(n, k, stride, pad, dilation, size):
    return (f"\u230a({n} + {pad[0] + pad[1]} {MINUS} {dilation}{DOT}({k} {MINUS} 1) {MINUS} 1)/{stride}\u230b + 1"
            f" = {_signed(size)}")


def output_size(n, k, stride=1, pad=0, dilation=1):
    """Output length along one axis: ⌊(n + P_total − D·(k − 1) − 1)/S⌋ + 1.

    n: input length, k: kernel length, stride S ≥ 1, dilation D ≥ 1, pad: int P
    (P_total = 2P) or a (before, after) pair. Raises OutputSizeError (a ValueError) when
    the result is < 1, i.e. the dilated kernel D·(k − 1) + 1 is longer than the padded input.
    This is the one place the formula lives.
    """
    n, k, stride, pad, dilation, size = _output_size_parts(n, k, stride, pad, dilation)
    if size < 1:
        formula = _formula(n, k, stride, pad, dilation, size)
        span = dilation * (k - 1) + 1
        padded = n + pad[0] + pad[1]
        raise OutputSizeError(
            f"The kernel does not fit: it spans {span} cells (dilation {dilation}, size {k}) but the "
            f"padded input has only {padded} ({n} + padding {pad[0] + pad[1]}), so the output size "
            f"would be {formula}.",
            n=n, k=k, stride=stride, pad=pad, dilation=dilation, size=size, formula=formula)
    return size


def output_size_formula(n, k, stride=1, pad=0, dilation=1):
    """The output-size formula with the numbers filled in, e.g.
    ``⌊(5 + 0 − 1·(3 − 1) − 1)/1⌋ + 1 = 3`` (U+2212 minus signs). Never raises for a
    non-fitting kernel: the value shown is then < 1."""
    return _formula(*_output_size_parts(n, k, stride, pad, dilation))


def resolve_padding(padding, k, dilation=1, stride=1, n=None):
    """Padding for one axis as (before, after).

    padding: int P ≥ 0 → (P, P); "valid" → (0, 0); a (before, after) pair → itself;
    "same" → the TensorFlow/PyTorch rule: the output has ⌈n/S⌉ cells and
        total = max((⌈n/S⌉ − 1)·S + D·(k − 1) + 1 − n, 0),  before = ⌊total/2⌋,  after = total − before,
    so an even kernel puts the extra row/column at the bottom/right. With stride 1 the
    total does not depend on n, so n may be omitted.
    """
    k = _whole("kernel size", k, 1)
    dilation = _whole("dilation", dilation, 1)
    stride = _whole("stride", stride, 1)
    if isinstance(padding, str):
        name = padding.strip().lower()
        if name == "valid":
            return 0, 0
        if name == "same":
            if n is None:
                if stride != 1:
                    raise ValueError("'same' padding with a stride above 1 depends on the input size; pass n.")
                total = dilation * (k - 1)
            else:
                n = _whole("input size", n, 1)
                out = -(-n // stride)
                total = max((out - 1) * stride + dilation * (k - 1) + 1 - n, 0)
            return total // 2, total - total // 2
        raise ValueError(f"padding must be a whole number, 'valid' or 'same'; got {padding!r}.")
    return _pad_pair(padding)


def _padding_2d(padding, HH, WW, stride, dilation, H, W):
    """((top, bottom), (left, right)) from int | "valid" | "same" | ((top, bottom), (left, right))."""
    if isinstance(padding, (tuple, list)):
        if len(padding) != 2 or not all(isinstance(p, (tuple, list)) for p in padding):
            raise ValueError("padding must be a whole number, 'valid', 'same' or ((top, bottom), (left, right)); "
                             f"got {padding!r}.")
        rows, cols = padding
    else:
        rows = cols = padding
    return (resolve_padding(rows, HH, dilation[0], stride[0], H),
            resolve_padding(cols, WW, dilation[1], stride[1], W))


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """Everything about where the kernel goes, resolved once.

    stride (Sh, Sw), dilation (Dh, Dw), padding ((top, bottom), (left, right)), and the
    output size Ho × Wo from ``output_size``.
    """
    stride: tuple
    dilation: tuple
    padding: tuple
    Ho: int
    Wo: int


def _frozen(value):
    """Settings as a cache key: lists as tuples; None when anything is not a plain int or
    str (True == 1 and 2.0 == 2 hash alike, but must still be rejected by the checks)."""
    if isinstance(value, (list, tuple)):
        items = tuple(_frozen(v) for v in value)
        return None if None in items else items
    return value if type(value) in (int, str) else None


def conv_geometry(H, W, HH, WW, stride=1, padding=0, dilation=1):
    """Checked settings and output size for an H×W input and an HH×WW kernel.

    stride and dilation: int or (rows, columns); padding: int, "valid", "same" or
    ((top, bottom), (left, right)). Raises ValueError (OutputSizeError when the kernel
    does not fit).
    """
    key = tuple(_frozen(v) for v in (H, W, HH, WW, stride, padding, dilation))
    if None in key:
        return _geometry(H, W, HH, WW, stride, padding, dilation)
    return _cached_geometry(*key)


def _geometry(H, W, HH, WW, stride, padding, dilation):
    stride = _pair("stride", stride, 1)
    dilation = _pair("dilation", dilation, 1)
    pad = _padding_2d(padding, HH, WW, stride, dilation, H, W)
    Ho = output_size(H, HH, stride[0], pad[0], dilation[0])
    Wo = output_size(W, WW, stride[1], pad[1], dilation[1])
    return ConvGeometry(stride, dilation, pad, Ho, Wo)


# Training calls conv_forward with the same settings every step; checking them once is enough.
_cached_geometry = functools.lru_cache(maxsize=256)(_geometry)


# ---------------------------------------------------------------------------
# Shared checks for the forward functions
# ---------------------------------------------------------------------------

def _check_arrays(x, w, b):
    x, w = np.asarray(x), np.asarray(w)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W); got {x.shape}.")
    if w.ndim != 4:
        raise ValueError(f"w must have shape (F, C, HH, WW); got {w.shape}.")
    N, C, H, W = x.shape
    F, Cw, HH, WW = w.shape
    if Cw != C:
        raise ValueError(f"x has {C} channels but each filter in w has {Cw}; they must match.")
    if min(N, C, H, W, F, HH, WW) < 1:
        raise ValueError(f"empty arrays: x {x.shape}, w {w.shape}.")
    if b is not None:
        b = np.asarray(b)
        if b.shape != (F,):
            raise ValueError(f"b must have shape ({F},), one bias per filter; got {b.shape}.")
    return x, w, b


def _float_dtype(*arrays):
    """float32 when everything is float32 (training), otherwise float64."""
    dt = np.result_type(*[a for a in arrays if a is not None])
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float64)


def _kernel(w, mode):
    """The kernel as it slides: w itself, or w flipped in both spatial axes for a true convolution."""
    return w if _check_mode(mode) == "cross-correlation" else w[:, :, ::-1, ::-1]


# ---------------------------------------------------------------------------
# The teacher: one dot product per output position
# ---------------------------------------------------------------------------

def conv_forward_naive(x, w, b, stride=1, padding=0, dilation=1, mode="cross-correlation"):
    """Explicit loops over images, filters, rows and columns; one dot product per position.

    x: (N, C, H, W), w: (F, C, HH, WW), b: (F,) or None -> out: (N, F, Ho, Wo),
    Ho = ⌊(H + P_total − D·(HH − 1) − 1)/S⌋ + 1, Wo likewise.
    """
    x, w, b = _check_arrays(x, w, b)
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    g = conv_geometry(H, W, HH, WW, stride, padding, dilation)
    (Sh, Sw), (Dh, Dw), ((pt, pb), (pl, pr)) = g.stride, g.dilation, g.padding
    kernel = _kernel(w, mode)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    out = np.zeros((N, F, g.Ho, g.Wo), dtype=_float_dtype(x, w, b))
    for n in range(N):
        for f in range(F):
            for row in range(g.Ho):
                for col in range(g.Wo):
                    # the receptive field: HH×WW cells, D apart, starting at (row·S, col·S)
                    window = xp[n, :, row * Sh: row * Sh + Dh * (HH - 1) + 1: Dh,
                                col * Sw: col * Sw + Dw * (WW - 1) + 1: Dw]
                    out[n, f, row, col] = np.sum(window * kernel[f]) + (0 if b is None else b[f])
    return out


# ---------------------------------------------------------------------------
# The worker: im2col + one matrix product
# ---------------------------------------------------------------------------

class Workspace:
    """Buffers a layer keeps from one training step to the next.

    Fresh multi-megabyte arrays every step cost page faults (glibc hands large freed
    blocks back to the system, so each new one is faulted in again: about 1 ms of a
    3 ms step of the tiny model). A layer that owns a Workspace and passes it to
    ``conv_forward``/``conv_backward`` (through the cache) or ``pool_forward``/
    ``pool_backward`` gets the same buffers back each step, including the arrays it
    returns: ``out`` is valid until the next forward with this workspace, ``dx`` until
    the next backward. Copy them to keep them longer (e.g. feature maps for a page).

    Use one workspace per layer, one thread at a time (a second layer or thread would
    overwrite the buffers). A second forward with the same workspace makes the first
    forward's cache stale, and the backward functions refuse a stale cache rather than
    return wrong gradients. Without a workspace every array is new.
    """

    _MAX_BUFFERS = 16

    def __init__(self):
        self._buffers = {}
        self.generation = 0
        # Prepared layouts (buffers and views) keyed by their caller; see core.pool._Tiled.
        self.plans = {}

    def buffer(self, name, shape, dtype, init=None):
        """An array of this shape and dtype, reused when name, shape and dtype match.
        ``init`` runs only on a new buffer: "zeros" (padding borders) or "ones_row" (the
        bias row of an im2col matrix: [:, -1] = 1); later writes never touch those cells."""
        key = (name, tuple(shape), np.dtype(dtype).str)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) >= self._MAX_BUFFERS:
                self._buffers.clear()
            buf = _new_buffer(shape, dtype, init)
            self._buffers[key] = buf
        return buf


def _new_buffer(shape, dtype, init):
    if init == "zeros":
        return np.zeros(shape, dtype)
    buf = np.empty(shape, dtype)
    if init == "ones_row":
        buf[:, -1] = 1
    return buf


class _Fresh:
    """Stands in for a Workspace: every buffer is new."""

    generation = 0

    @staticmethod
    def buffer(name, shape, dtype, init=None):
        return _new_buffer(shape, dtype, init)


_FRESH = _Fresh()

# How the work is cut (see _Pieces): the whole batch at once when its im2col matrix is
# at most _WHOLE_BATCH_BYTES (and then kept for the backward pass), otherwise pieces of
# about _BAND_BYTES that stay in the CPU cache. OpenBLAS multiplies small matrices
# (M·N·K ≤ 100³) with a dedicated single-threaded kernel and no packing, several times
# faster for our short-and-wide products than its general path (which, threaded, can
# stall for milliseconds on a busy machine), so pieces are also kept under _SMALL_GEMM.
_WHOLE_BATCH_BYTES = 8 << 20
_BAND_BYTES = 1 << 20
_SMALL_GEMM = 100 ** 3
# dw is F×(K+1) summed over every output position: a tiny result with a very long inner
# dimension, which OpenBLAS handles badly, so that inner dimension is cut into pieces.
_DW_PIECE = 1024


@dataclasses.dataclass
class ConvCache:
    """What conv_backward needs, by name.

    xp: padded input (N, C, H + top + bottom, W + left + right); kernel: the sliding
    kernel (F, C, HH, WW) (already flipped in convolution mode); x_shape; geometry;
    mode; has_bias; dtype; cols: the im2col matrix (N, C·HH·WW + 1, Ho·Wo) when it was
    built for the whole batch, else None (rebuilt piece by piece); workspace and
    generation (to detect a workspace reused before this backward).
    """
    xp: np.ndarray
    kernel: np.ndarray
    x_shape: tuple
    geometry: ConvGeometry
    mode: str
    has_bias: bool
    dtype: np.dtype
    cols: np.ndarray | None
    workspace: object
    generation: int


def _view(a, shape):
    """``a`` reshaped without copying (results are written through these views)."""
    v = a.reshape(shape)
    if v.size and not np.may_share_memory(v, a):
        raise AssertionError(f"reshape of {a.shape} to {shape} needed a copy")
    return v


class _Pieces:
    """im2col of a padded input, piece by piece.

    Column (row, col) of image n holds xp[n, c, row·Sh + i·Dh, col·Sw + j·Dw] at row
    c·HH·WW + i·WW + j; the last row is all ones (the bias). A piece is images n0:n1 and
    output rows r0:r1: the whole batch, groups of whole images, or bands of rows of one
    image. Each piece is ONE strided copy from a view of the whole input, made once.
    """

    def __init__(self, xp, g, F, HH, WW, ws, keep=True):
        N, C, _, _ = xp.shape
        self.xp, self.g, self.N = xp, g, N
        self.K = C * HH * WW
        K1 = self.K + 1
        sN, sC, sH, sW = xp.strides
        (Sh, Sw), (Dh, Dw) = g.stride, g.dilation
        shape, strides = (N, C, HH, WW, g.Ho, g.Wo), (sN, sC, Dh * sH, Dw * sW, Sh * sH, Sw * sW)
        field_shape, field_strides = shape, strides
        if xp.flags.c_contiguous:  # the direct constructor costs a sixth of as_strided's setup
            self.fields = np.ndarray(shape, xp.dtype, buffer=xp, strides=strides)
            self.fields.flags.writeable = False
        else:
            self.fields = as_strided(xp, shape, strides, writeable=False)
        row_bytes = K1 * g.Wo * xp.itemsize
        # One output row is already more than a band: the pieces cannot stay small.
        self.wide = row_bytes > _BAND_BYTES
        rows = max(1, _BAND_BYTES // row_bytes)
        small_rows = _SMALL_GEMM // (F * K1 * g.Wo)
        if small_rows >= 1:
            rows = min(rows, small_rows)
        if rows >= g.Ho:
            # keep=False: nobody needs the whole matrix afterwards, so pieces that stay in cache
            whole = _WHOLE_BATCH_BYTES if keep else _BAND_BYTES
            per = N if N * row_bytes * g.Ho <= whole else max(1, _BAND_BYTES // (row_bytes * g.Ho))
            self.pieces = [(n0, min(N, n0 + per), 0, g.Ho) for n0 in range(0, N, per)]
            shape = (per, K1, g.Ho * g.Wo)
        else:
            self.pieces = [(n, n + 1, r0, min(g.Ho, r0 + rows)) for n in range(N) for r0 in range(0, g.Ho, rows)]
            shape = (1, K1, rows * g.Wo)
        self.whole = len(self.pieces) == 1
        self.cols = ws.buffer("conv.cols", shape, xp.dtype, init="ones_row")
        self.cols6 = _view(self.cols[:, :self.K], (shape[0], C, HH, WW, shape[2] // g.Wo, g.Wo))
        # With stride 1 along the columns, the Wo values of one output row's field for one
        # (c, i, j) are Wo neighbours in xp: copied as ONE opaque item of Wo values, the
        # copy runs a loop per kernel offset instead of a loop of Wo per output row (NumPy's
        # per-loop cost dominates for small pictures: about 4× faster on 8×8 digits).
        self.row_fields = self.row_cols = None
        if Sw == 1 and g.Wo > 1 and xp.flags.c_contiguous:
            row = np.dtype((np.void, g.Wo * xp.itemsize))
            self.row_fields = np.ndarray(field_shape[:5], row, buffer=xp, strides=field_strides[:5])
            self.row_cols = self.cols6.view(row)[..., 0]

    def fill(self, n0, n1, r0, r1):
        """The im2col matrix of one piece: (n1 − n0, K + 1, (r1 − r0)·Wo)."""
        nb, rb = n1 - n0, r1 - r0
        if self.row_fields is not None:
            np.copyto(self.row_cols[:nb, :, :, :, :rb], self.row_fields[n0:n1, :, :, :, r0:r1])
        else:
            np.copyto(self.cols6[:nb, :, :, :, :rb], self.fields[n0:n1, :, :, :, r0:r1])
        return self.cols[:nb, :, :rb * self.g.Wo]


def _pieces(xp, g, F, HH, WW, ws, keep=True):
    """_Pieces(...), kept in a workspace from step to step while xp is the same array
    (the padded-input buffer, or a caller's input used again): its views cost ~10 µs to build."""
    if ws is _FRESH:
        return _Pieces(xp, g, F, HH, WW, ws, keep)
    key = ("conv.pieces", g, F, HH, WW, keep)
    im2col = ws.plans.get(key)
    if im2col is None or im2col.xp is not xp:
        if len(ws.plans) >= 4:
            ws.plans.clear()
        im2col = ws.plans[key] = _Pieces(xp, g, F, HH, WW, ws, keep)
    return im2col


def _pad_input(x, pad, dtype, ws):
    """x (N, C, H, W) inside a zero border: (N, C, H + top + bottom, W + left + right).
    A workspace buffer's border is zeroed once and never written again."""
    N, C, H, W = x.shape
    (pt, pb), (pl, pr) = pad
    if pt == pb == pl == pr == 0:
        return x if x.dtype == dtype else x.astype(dtype)
    # the padding is part of the key: a border must only ever have held zeros
    xp = ws.buffer(f"conv.xp{pad}", (N, C, H + pt + pb, W + pl + pr), dtype, init="zeros")
    xp[:, :, pt:pt + H, pl:pl + W] = x
    return xp


def conv_forward(x, w, b, stride=1, padding=0, dilation=1, mode="cross-correlation", *, workspace=None):
    """Vectorised convolution layer forward pass.

    x: (N, C, H, W), w: (F, C, HH, WW), b: (F,) or None -> out: (N, F, Ho, Wo),
    Ho = ⌊(H + P_total − D·(HH − 1) − 1)/S⌋ + 1, Wo likewise; and a ConvCache.
    stride, dilation: int or (rows, columns); padding: int, "valid", "same" or
    ((top, bottom), (left, right)). float32 inputs stay float32, anything else is float64.
    workspace: an optional Workspace whose buffers are reused (see Workspace).
    """
    return _conv_forward(x, w, b, stride, padding, dilation, mode, workspace)


def _conv_forward(x, w, b, stride, padding, dilation, mode, workspace, keep=True):
    """conv_forward; keep=False when the im2col matrix is not needed afterwards (dx computed
    as a convolution), so it is built in cache-sized pieces even for a batch that fits in
    _WHOLE_BATCH_BYTES."""
    x, w, b = _check_arrays(x, w, b)
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    g = conv_geometry(H, W, HH, WW, stride, padding, dilation)
    dtype = _float_dtype(x, w, b)
    ws = _FRESH if workspace is None else workspace
    if workspace is not None:
        workspace.generation += 1
    kernel = _kernel(w, mode)
    K = C * HH * WW
    # The bias is one more column of weights times a row of ones in cols: one matmul does both.
    wb = np.empty((F, K + 1), dtype)
    wb[:, :K] = kernel.reshape(F, K)
    wb[:, K] = 0 if b is None else b
    xp = _pad_input(x, g.padding, dtype, ws)
    out = ws.buffer("conv.out", (N, F, g.Ho, g.Wo), dtype)
    flat = out.reshape(N, F, g.Ho * g.Wo)
    im2col = _pieces(xp, g, F, HH, WW, ws, keep)
    for n0, n1, r0, r1 in im2col.pieces:
        cols, target = im2col.fill(n0, n1, r0, r1), flat[n0:n1, :, r0 * g.Wo:r1 * g.Wo]
        if im2col.wide and (F == 1 or F * cols.shape[1] * cols.shape[2] > _SMALL_GEMM):
            # A band this large (a 15×15 RGB kernel on a 1024-wide picture: 5.5 MB a row),
            # times one filter (matrix–vector) or past the small kernel, is multiplied by
            # OpenBLAS on its threads, which stall for tens of milliseconds a band on a busy
            # machine (32 s for one such filter on a 1024² picture). NumPy's own loop runs it
            # in this thread: 15–30× faster there (and 2× slower than BLAS's small kernel).
            np.einsum("fk,nkp->nfp", wb, cols, out=target)
        else:
            np.matmul(wb, cols, out=target)
    cache = ConvCache(xp=xp, kernel=kernel, x_shape=x.shape, geometry=g, mode=mode, has_bias=b is not None,
                      dtype=np.dtype(dtype), cols=im2col.cols if im2col.whole else None,
                      workspace=ws, generation=ws.generation)
    return out, cache


def _accumulate_dw(acc, dout, cols):
    """acc (F, K1) += Σ_n dout[n] (F, L) @ cols[n].T (L, K1), the inner dimension cut into
    pieces of at most _DW_PIECE (batched by viewing L as (pieces, piece) — no copies)."""
    nb, F, L = dout.shape
    K1 = cols.shape[1]
    if L <= _DW_PIECE:
        acc += np.matmul(dout, cols.transpose(0, 2, 1)).sum(axis=0)
        return
    m = L // _DW_PIECE
    head = m * _DW_PIECE
    d = dout[:, :, :head].reshape(nb, F, m, _DW_PIECE).transpose(0, 2, 1, 3)
    c = cols[:, :, :head].reshape(nb, K1, m, _DW_PIECE).transpose(0, 2, 3, 1)
    acc += np.matmul(d, c).sum(axis=(0, 1))
    if head < L:
        acc += np.matmul(dout[:, :, head:], cols[:, :, head:].transpose(0, 2, 1)).sum(axis=0)


def _col2im_add(dxp, dcols, g, HH, WW, n0, n1, r0, r1):
    """Scatter-add dcols (nb, C·HH·WW, rb·Wo) back onto the padded gradient: one strided
    slice add per kernel offset (i, j), which accumulates overlapping windows correctly."""
    _, C, _, _ = dxp.shape
    (Sh, Sw), (Dh, Dw) = g.stride, g.dilation
    nb, rb = n1 - n0, r1 - r0
    d6 = _view(dcols, (nb, C, HH, WW, rb, g.Wo))
    for i in range(HH):
        top = r0 * Sh + i * Dh
        for j in range(WW):
            left = j * Dw
            dxp[n0:n1, :, top: top + Sh * (rb - 1) + 1: Sh, left: left + Sw * (g.Wo - 1) + 1: Sw] += d6[:, :, i, j]


def _dx_by_convolution_fits(g, HH, WW):
    """Whether dx can be computed as a convolution: stride 1, no dilation, and padding at
    most k − 1 on every side (so dout's own padding k − 1 − P is never negative)."""
    (pt, pb), (pl, pr) = g.padding
    return (g.stride == (1, 1) and g.dilation == (1, 1) and max(pt, pb) <= HH - 1
            and max(pl, pr) <= WW - 1)


def _dx_by_convolution(dout, kernel, g, ws):
    """dx[n, c, h, w] = Σ_f,i,j dout[n, f, h + top − i, w + left − j]·kernel[f, c, i, j]
    (dout read as 0 outside): the cross-correlation of dout, padded by k − 1 − P, with the
    kernel flipped in both spatial axes and its F and C axes swapped. Computed in a
    workspace of its own (kept in ``ws``) so the forward pass's buffers stay untouched."""
    _, _, HH, WW = kernel.shape
    (pt, pb), (pl, pr) = g.padding
    flipped = np.ascontiguousarray(kernel[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    sub = _FRESH
    if ws is not _FRESH:
        sub = ws.plans.get("conv.dx")
        if sub is None:
            sub = ws.plans["conv.dx"] = Workspace()
    pad = ((HH - 1 - pt, HH - 1 - pb), (WW - 1 - pl, WW - 1 - pr))
    dx, _ = _conv_forward(dout, flipped, None, 1, pad, 1, "cross-correlation", None if sub is _FRESH else sub,
                          keep=False)
    return dx


def conv_backward(dout, cache, *, need_dx=True):
    """Backward pass of conv_forward.

    dout: (N, F, Ho, Wo) -> dx: (N, C, H, W), dw: (F, C, HH, WW), db: (F,) or None
    (None when the forward had no bias). need_dx=False skips dx (returns None), e.g. for
    the first layer of a network, whose input gradient nobody uses.
    """
    xp, kernel, g = cache.xp, cache.kernel, cache.geometry
    N, C, H, W = cache.x_shape
    F, _, HH, WW = kernel.shape
    if cache.generation != cache.workspace.generation:
        raise RuntimeError("this cache's workspace was used by a later forward pass; "
                           "run backward before the next forward with the same workspace")
    dtype = cache.dtype
    dout = np.ascontiguousarray(dout, dtype=dtype)
    if dout.shape != (N, F, g.Ho, g.Wo):
        raise ValueError(f"dout must have shape {(N, F, g.Ho, g.Wo)}; got {dout.shape}.")
    ws = cache.workspace
    K = C * HH * WW
    flat = dout.reshape(N, F, g.Ho * g.Wo)
    acc = np.zeros((F, K + 1), dtype)
    if cache.cols is not None:
        pieces, cols = [(0, N, 0, g.Ho)], cache.cols
    else:
        im2col = _pieces(xp, g, F, HH, WW, ws)
        pieces = im2col.pieces
    # With stride 1 and no dilation, dx is itself a convolution (of dout, padded by k − 1 −
    # padding, with the kernel flipped and its F and C axes swapped): an im2col and one
    # product, instead of scattering k² strided slices back (about 3× faster for a second conv
    # layer's 64×8×14×14 input). Sums then run in another order: float32 rounding apart,
    # the same numbers.
    by_conv = need_dx and _dx_by_convolution_fits(g, HH, WW)
    scatter = need_dx and not by_conv
    if scatter:
        kernel_t = np.ascontiguousarray(kernel.reshape(F, K).T)
        dxp = ws.buffer("conv.dxp", xp.shape, dtype)
        dxp.fill(0)
        n0, n1, r0, r1 = pieces[0]
        dcols = ws.buffer("conv.dcols", (n1 - n0, K, (r1 - r0) * g.Wo), dtype)
    for n0, n1, r0, r1 in pieces:
        nb, L = n1 - n0, (r1 - r0) * g.Wo
        piece = cols if cache.cols is not None else im2col.fill(n0, n1, r0, r1)
        d = flat[n0:n1, :, r0 * g.Wo:r1 * g.Wo]
        _accumulate_dw(acc, d, piece)
        if scatter:
            dc = dcols[:nb, :, :L]
            np.matmul(kernel_t, d, out=dc)
            _col2im_add(dxp, dc, g, HH, WW, n0, n1, r0, r1)
    dw = acc[:, :K].reshape(F, C, HH, WW)
    if cache.mode == "convolution":
        # the forward slid the flipped kernel, so its gradient is flipped back onto w
        dw = dw[:, :, ::-1, ::-1]
    dw = np.ascontiguousarray(dw)
    db = acc[:, K].copy() if cache.has_bias else None
    dx = None
    if by_conv:
        dx = _dx_by_convolution(dout, kernel, g, ws)
    elif need_dx:
        (pt, _), (pl, _) = g.padding
        if dxp.shape == (N, C, H, W):
            dx = dxp
        else:
            dx = ws.buffer("conv.dx", (N, C, H, W), dtype)
            np.copyto(dx, dxp[:, :, pt:pt + H, pl:pl + W])
    return dx, dw, db


# ---------------------------------------------------------------------------
# The stepper: one output position written out term by term
# ---------------------------------------------------------------------------

def format_number(v):
    """A number as the slides write it: integers plainly, other values with at most four
    decimals, rounded half up, and no trailing zeros (0.7843, 2.5, not 2.5000 or 78.0000001);
    very small values in scientific notation; U+2212 for the minus sign; never "−0"; the
    decimal mark of the page's language (core.numfmt)."""
    if isinstance(v, (bool, np.bool_)):
        v = int(v)
    if isinstance(v, (numbers.Integral, np.integer)):
        v = int(v)
        return f"{MINUS}{-v}" if v < 0 else str(v)
    v = float(v)
    if not math.isfinite(v):
        return {math.inf: "\u221e", -math.inf: f"{MINUS}\u221e"}.get(v, "NaN")
    if abs(v) < 0.00005:
        return "0" if abs(v) < 5e-13 else numfmt.scientific(v, 3)
    return numfmt.fixed(v, 4)


def format_factor(v):
    """format_number, with negatives in parentheses so products read ``40·(−1)``."""
    s = format_number(v)
    return f"({s})" if s.startswith(MINUS) else s


def _is_integral(a):
    a = np.asarray(a)
    if a.dtype.kind in "iub":
        return True
    return a.dtype.kind == "f" and bool(np.all(np.isfinite(a))) and bool(np.all(a == np.round(a)))


@dataclasses.dataclass(frozen=True)
class Term:
    """One input·weight product of a dot product.

    channel; row, col: position in the *unpadded* input (negative or ≥ H / ≥ W for a
    padding cell); padding: whether it is a padding cell (input 0 there); input; weight;
    product; kernel_row, kernel_col: the cell of w the weight comes from (in convolution
    mode that is the mirrored cell).
    """
    channel: int
    row: int
    col: int
    padding: bool
    input: object
    weight: object
    product: object
    kernel_row: int
    kernel_col: int


@dataclasses.dataclass(frozen=True)
class ConvStep:
    """One output value of the convolution, with every number that makes it.

    filter, row, col: the output position; step: its index in row-major order over
    (filter, row, col); steps: F·Ho·Wo; out_shape: (F, Ho, Wo).
    terms: C·HH·WW Terms, channel by channel, each channel's window in row-major order.
    channel_sums: one sum per channel; channel_texts: each channel's ``a·b + … = sum``.
    bias: b[filter] or None; value: Σ channel_sums + bias.
    text: the whole dot product as the slides write it,
        ``35·(−2) + 40·(−1) + 41·0 + 40·(−1) + 40·1 + 42·1 + 42·0 + 46·1 + 50·2 = 78``
        (`` + bias`` before the ``=`` when there is a bias).
    window_rows, window_cols: the receptive field's rows/columns in unpadded coordinates
    (HH and WW of them, D apart); padded_rows, padded_cols: the same in the padded input.
    padding ((top, bottom), (left, right)), stride, dilation, mode: the resolved settings.
    Integer inputs (integer dtype, or floats with whole values) give Python ints throughout.
    """
    filter: int
    row: int
    col: int
    step: int
    steps: int
    out_shape: tuple
    terms: list
    channel_sums: list
    channel_texts: list
    bias: object
    value: object
    text: str
    window_rows: list
    window_cols: list
    padded_rows: list
    padded_cols: list
    padding: tuple
    stride: tuple
    dilation: tuple
    mode: str


def _step_arrays(x, w, b):
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim == 2:
        x = x[None]
    if w.ndim == 2:
        w = w[None, None]
    elif w.ndim == 3:
        w = w[None]
    if x.ndim != 3:
        raise ValueError(f"x must be one image of shape (C, H, W) or (H, W); got {x.shape}.")
    if w.ndim != 4:
        raise ValueError(f"w must have shape (F, C, HH, WW), (C, HH, WW) or (HH, WW); got {w.shape}.")
    if b is not None:
        b = np.atleast_1d(np.asarray(b))
    _check_arrays(x[None], w, b)
    for name, a in (("x", x), ("w", w), ("b", b)):
        if a is not None and a.dtype.kind not in "iubf":
            raise ValueError(f"{name} must hold numbers; got dtype {a.dtype}.")
        if a is not None and a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinity.")
    return x, w, b


def conv_step_count(x, w, stride=1, padding=0, dilation=1):
    """Number of stepper positions F·Ho·Wo for one image x (C, H, W) and w (F, C, HH, WW)
    (arrays or shapes; 2-D x and 2- or 3-D w as in conv_step)."""
    xs, ws_ = tuple(np.shape(x)), tuple(np.shape(w))
    xs = (1,) * (3 - len(xs)) + xs if len(xs) == 2 else xs
    ws_ = (1,) * (4 - len(ws_)) + ws_ if len(ws_) in (2, 3) else ws_
    if len(xs) != 3 or len(ws_) != 4:
        raise ValueError(f"x must be (C, H, W) and w (F, C, HH, WW); got {xs} and {ws_}.")
    _, H, W = xs
    F, _, HH, WW = ws_
    g = conv_geometry(H, W, HH, WW, stride, padding, dilation)
    return F * g.Ho * g.Wo


def _resolve_position(step, position, F, Ho, Wo, axis="filter"):
    """(f, row, col, step) from a position (f, row, col) or a row-major step over (F, Ho, Wo);
    ``axis`` names the first axis in messages ("filter" here, "channel" for pooling)."""
    steps = F * Ho * Wo
    if step is not None and position is not None:
        raise ValueError("give either step or position, not both.")
    if position is not None:
        if len(position) != 3:
            raise ValueError(f"position must be ({axis}, row, col); got {position!r}.")
        f = _whole(axis, position[0], 0)
        row = _whole("row", position[1], 0)
        col = _whole("col", position[2], 0)
        if f >= F or row >= Ho or col >= Wo:
            raise ValueError(f"position {(f, row, col)} is outside the output "
                             f"({axis[0].upper()}, Ho, Wo) = {(F, Ho, Wo)}.")
        return f, row, col, (f * Ho + row) * Wo + col
    step = 0 if step is None else _whole("step", step, 0)
    if step >= steps:
        raise ValueError(f"step {step} is past the last one; there are {steps} steps (0 to {steps - 1}).")
    f, rest = divmod(step, Ho * Wo)
    row, col = divmod(rest, Wo)
    return f, row, col, step


def _expression(pairs, extra=None, result=None):
    text = " + ".join(f"{format_factor(a)}{DOT}{format_factor(b)}" for a, b in pairs)
    if extra is not None:
        text += f" + {format_factor(extra)}"
    return f"{text} = {format_number(result)}"


def conv_step(x, w, b=None, stride=1, padding=0, dilation=1, mode="cross-correlation", step=None, position=None):
    """One output position of the convolution of a single image, written out.

    x: (C, H, W) (or (H, W) for one channel), w: (F, C, HH, WW) (or (C, HH, WW) / (HH, WW)
    for one filter), b: (F,) or None. position=(filter, row, col) or step k (row-major over
    filters, rows, columns; default 0). Returns a ConvStep whose value equals
    conv_forward(x[None], w, b, ...)[0][0, filter, row, col].
    """
    x, w, b = _step_arrays(x, w, b)
    C, H, W = x.shape
    F, _, HH, WW = w.shape
    g = conv_geometry(H, W, HH, WW, stride, padding, dilation)
    _check_mode(mode)
    (Sh, Sw), (Dh, Dw), ((pt, _), (pl, _)) = g.stride, g.dilation, g.padding
    f, row, col, k = _resolve_position(step, position, F, g.Ho, g.Wo)

    exact = _is_integral(x) and _is_integral(w) and (b is None or _is_integral(b))
    number = int if exact else float
    rows = [row * Sh - pt + i * Dh for i in range(HH)]
    cols = [col * Sw - pl + j * Dw for j in range(WW)]
    flip = mode == "convolution"
    terms, sums, texts = [], [], []
    for c in range(C):
        channel = []
        for i, r in enumerate(rows):
            for j, q in enumerate(cols):
                inside = 0 <= r < H and 0 <= q < W
                value = number(x[c, r, q]) if inside else number(0)
                ki, kj = (HH - 1 - i, WW - 1 - j) if flip else (i, j)
                weight = number(w[f, c, ki, kj])
                channel.append(Term(c, r, q, not inside, value, weight, value * weight, ki, kj))
        total = sum(t.product for t in channel) if exact else math.fsum(t.product for t in channel)
        terms.extend(channel)
        sums.append(total)
        texts.append(_expression([(t.input, t.weight) for t in channel], result=total))
    bias = None if b is None else number(b[f])
    value = (sum(sums) if exact else math.fsum(sums)) + (0 if bias is None else bias)
    text = _expression([(t.input, t.weight) for t in terms], extra=bias, result=value)
    return ConvStep(filter=f, row=row, col=col, step=k, steps=F * g.Ho * g.Wo, out_shape=(F, g.Ho, g.Wo),
                    terms=terms, channel_sums=sums, channel_texts=texts, bias=bias, value=value, text=text,
                    window_rows=rows, window_cols=cols, padded_rows=[r + pt for r in rows],
                    padded_cols=[q + pl for q in cols], padding=g.padding, stride=g.stride,
                    dilation=g.dilation, mode=mode)
