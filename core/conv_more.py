"""Convolutions beyond the slides: the 1×1 (pointwise) convolution, the depthwise and the
depthwise-separable convolution, and the transposed convolution, each with its stepper view.

Layout is NCHW as in ``core.conv``:

* pointwise:  x (N, C, H, W), w (F, C) (or (F, C, 1, 1)), b (F,) -> (N, F, H, W);
  out[n, f, r, c] = Σ_ch w[f, ch]·x[n, ch, r, c] + b[f]: a 1×1 convolution mixes the channels
  of one pixel and never looks at its neighbours.
* depthwise:  x (N, C, H, W), w (C, HH, WW) (or (C, 1, HH, WW)), b (C,) -> (N, C, Ho, Wo);
  channel ch is convolved with its own kernel w[ch] only (PyTorch: conv2d with groups=C).
  Ho is the ordinary output size ⌊(H + P_total − D·(HH − 1) − 1)/S⌋ + 1.
* separable:  depthwise, then pointwise on its C maps: (N, F, Ho, Wo). Parameters
  k·k·C + C + (C + 1)·F instead of the full convolution's (k·k·C + 1)·F.
* transposed: x (N, C, H, W), w (C, F, HH, WW) (PyTorch's conv_transpose2d layout), b (F,)
  -> (N, F, Ho, Wo) with Ho = (H − 1)·S − 2P + HH: every input value is multiplied by the
  kernel and added into the output window whose top-left corner is (i·S − P, j·S − P);
  what falls outside 0…Ho−1 (the padding P, cut from each side) is dropped.

The step views follow ``core.conv.conv_step``: exact Python ints when every input is whole,
floats otherwise; every view's numbers add up to the forward pass's (tests/test_conv_more.py).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .conv import (
    Term,
    _expression,
    _is_integral,
    _resolve_position,
    _whole,
    conv_forward,
    conv_geometry,
    conv_step,
    format_factor,
    format_number,
)

__all__ = [
    "PointwiseStep",
    "ScatterTerm",
    "SeparableStep",
    "TransposeSizeError",
    "TransposeStep",
    "conv_transpose_forward",
    "depthwise_forward",
    "depthwise_output",
    "depthwise_step",
    "pointwise_forward",
    "pointwise_step",
    "separable_counts",
    "separable_forward",
    "separable_step",
    "transpose_output_size",
    "transpose_output_size_formula",
    "transpose_step",
]

DOT = "\u00b7"


# ---------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------

def _pointwise_weights(w):
    w = np.asarray(w)
    if w.ndim == 4:
        if w.shape[2:] != (1, 1):
            raise ValueError(f"a pointwise kernel is 1×1; got {w.shape[2]}×{w.shape[3]}.")
        w = w[:, :, 0, 0]
    if w.ndim != 2:
        raise ValueError(f"pointwise weights must have shape (F, C) or (F, C, 1, 1); got {w.shape}.")
    return w


def _depthwise_weights(w):
    w = np.asarray(w)
    if w.ndim == 4:
        if w.shape[1] != 1:
            raise ValueError(f"depthwise weights (C, 1, HH, WW) have one channel per kernel; got {w.shape}.")
        w = w[:, 0]
    if w.ndim != 3:
        raise ValueError(f"depthwise weights must have shape (C, HH, WW) or (C, 1, HH, WW); got {w.shape}.")
    return w


def _channels_match(C, Cw, what):
    if C != Cw:
        raise ValueError(f"the input has {C} channels but {what} has {Cw}.")


def _bias(b, n, what):
    if b is None:
        return None
    b = np.atleast_1d(np.asarray(b))
    if b.shape != (n,):
        raise ValueError(f"{what} needs {n} numbers; got shape {b.shape}.")
    return b


# ---------------------------------------------------------------------------
# Forward passes (the worker)
# ---------------------------------------------------------------------------

def pointwise_forward(x, w, b=None):
    """1×1 convolution. x (N, C, H, W), w (F, C) or (F, C, 1, 1), b (F,) or None ->
    (N, F, H, W): at every pixel the C values are mixed by each filter's C weights."""
    x = np.asarray(x)
    w = _pointwise_weights(w)
    N, C, H, W = x.shape
    F, Cw = w.shape
    _channels_match(C, Cw, "the pointwise weights")
    b = _bias(b, F, "the bias")
    out = np.einsum("fc,nchw->nfhw", w.astype(np.float64), x.astype(np.float64), optimize=True)
    if b is not None:
        out = out + b.astype(np.float64)[None, :, None, None]
    return out


def depthwise_forward(x, w, b=None, stride=1, padding=0, dilation=1):
    """Depthwise convolution: channel ch convolved with w[ch] alone.

    x (N, C, H, W), w (C, HH, WW) or (C, 1, HH, WW), b (C,) or None -> (N, C, Ho, Wo),
    Ho = ⌊(H + P_total − D·(HH − 1) − 1)/S⌋ + 1 (padding as in core.conv: int, pair, "valid",
    "same"). Each channel is an ordinary one-channel convolution (core.conv.conv_forward).
    """
    x = np.asarray(x)
    w = _depthwise_weights(w)
    N, C, H, W = x.shape
    _channels_match(C, w.shape[0], "the depthwise kernels")
    b = _bias(b, C, "the depthwise bias")
    maps = []
    for ch in range(C):
        out, _cache = conv_forward(x[:, ch:ch + 1], w[ch][None, None], None if b is None else b[ch:ch + 1],
                                   stride=stride, padding=padding, dilation=dilation)
        maps.append(out)
    return np.concatenate(maps, axis=1)


def separable_forward(x, dw, db, pw, pb, stride=1, padding=0, dilation=1):
    """Depthwise-separable convolution: ``depthwise_forward`` then ``pointwise_forward``.

    x (N, C, H, W), dw (C, HH, WW), db (C,) or None, pw (F, C), pb (F,) or None ->
    (out (N, F, Ho, Wo), depthwise (N, C, Ho, Wo)).
    """
    d = depthwise_forward(x, dw, db, stride=stride, padding=padding, dilation=dilation)
    return pointwise_forward(d, pw, pb), d


def separable_counts(C, F, HH, WW, Ho, Wo):
    """What the separable convolution saves, with the formulas and their numbers.

    Parameters: full (HH·WW·C + 1)·F; separable HH·WW·C + C + (C + 1)·F (depthwise weights and
    biases, then the pointwise weights and biases). Multiplications for one image:
    full HH·WW·C·F·Ho·Wo; separable HH·WW·C·Ho·Wo + C·F·Ho·Wo.
    """
    k = f"{HH}·{WW}"
    full = (HH * WW * C + 1) * F
    sep = HH * WW * C + C + (C + 1) * F
    mult_full = HH * WW * C * F * Ho * Wo
    mult_dw = HH * WW * C * Ho * Wo
    mult_pw = C * F * Ho * Wo
    return {
        "params_full": full,
        "params_full_text": f"({k}·{C} + 1)·{F} = {full}",
        "params_separable": sep,
        "params_separable_text": f"{k}·{C} + {C} + ({C} + 1)·{F} = {sep}",
        "mults_full": mult_full,
        "mults_full_text": f"{k}·{C}·{F}·{Ho}·{Wo} = {mult_full}",
        "mults_separable": mult_dw + mult_pw,
        "mults_separable_text": f"{k}·{C}·{Ho}·{Wo} + {C}·{F}·{Ho}·{Wo} = {mult_dw + mult_pw}",
    }


class TransposeSizeError(ValueError):
    """The transposed convolution's output would have no rows or columns.

    n, k, stride, pad: the numbers of one axis; size: (n − 1)·S − 2P + k (< 1); formula: the
    formula with the numbers filled in."""

    def __init__(self, n, k, stride, pad):
        self.n, self.k, self.stride, self.pad = n, k, stride, pad
        self.size = (n - 1) * stride - 2 * pad + k
        self.formula = transpose_output_size_formula(n, k, stride, pad)
        super().__init__(f"transposed convolution output size {self.formula} is below 1.")


def transpose_output_size(n, k, stride=1, pad=0):
    """(n − 1)·S − 2P + k; raises TransposeSizeError when it is below 1."""
    n = _whole("input size", n, 1)
    k = _whole("kernel size", k, 1)
    stride = _whole("stride", stride, 1)
    pad = _whole("padding", pad, 0)
    size = (n - 1) * stride - 2 * pad + k
    if size < 1:
        raise TransposeSizeError(n, k, stride, pad)
    return size


def transpose_output_size_formula(n, k, stride=1, pad=0):
    """``(5 − 1)·2 − 2·1 + 3 = 9``."""
    size = (n - 1) * stride - 2 * pad + k
    minus = "\u2212"
    text = f"({n} {minus} 1)\u00b7{stride} {minus} 2\u00b7{pad} + {k} = "
    return text + (f"{minus}{-size}" if size < 0 else str(size))


def _transpose_arrays(x, w, b):
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W) and w (C, F, HH, WW); got {x.shape} and {w.shape}.")
    _channels_match(x.shape[1], w.shape[0], "the transposed kernel (C, F, HH, WW)")
    b = _bias(b, w.shape[1], "the bias")
    return x, w, b


def conv_transpose_forward(x, w, b=None, stride=1, padding=0):
    """Transposed convolution (PyTorch's conv_transpose2d, no output padding, no dilation).

    x (N, C, H, W), w (C, F, HH, WW), b (F,) or None -> (N, F, Ho, Wo),
    Ho = (H − 1)·S − 2P + HH, Wo = (W − 1)·S − 2P + WW. Each input value x[n, c, i, j] adds
    x·w[c, f] into the full output at rows i·S … i·S + HH − 1 (columns likewise); the full
    output ((H − 1)·S + HH rows) then loses P rows and columns on every side.
    """
    x, w, b = _transpose_arrays(x, w, b)
    N, C, H, W = x.shape
    _C, F, HH, WW = w.shape
    S = _whole("stride", stride, 1)
    P = _whole("padding", padding, 0)
    Ho = transpose_output_size(H, HH, S, P)
    Wo = transpose_output_size(W, WW, S, P)
    full = np.zeros((N, F, (H - 1) * S + HH, (W - 1) * S + WW))
    xf = x.astype(np.float64)
    wf = w.astype(np.float64)
    for i in range(HH):
        for j in range(WW):
            # every input cell's contribution through kernel cell (i, j), all at once
            full[:, :, i:i + (H - 1) * S + 1:S, j:j + (W - 1) * S + 1:S] += np.einsum("nchw,cf->nfhw", xf, wf[:, :, i, j])
    out = full[:, :, P:P + Ho, P:P + Wo]
    if b is not None:
        out = out + b.astype(np.float64)[None, :, None, None]
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------------------
# Step views (the teacher)
# ---------------------------------------------------------------------------

def _number(*arrays):
    exact = all(a is None or _is_integral(a) for a in arrays)
    return exact, (int if exact else float)


def _total(values, exact):
    return sum(values) if exact else math.fsum(values)


@dataclasses.dataclass(frozen=True)
class PointwiseStep:
    """One output value of a 1×1 convolution: w_1·x_1 + … + w_C·x_C + b at one pixel.

    filter, row, col: the output position; step (row-major over (F, H, W)), steps = F·H·W;
    terms: C Terms (row/col = the pixel, kernel_row = kernel_col = 0); bias; value; text:
    ``2·1 + 5·0 + 7·(−1) + 1 = −4`` (input·weight, as core.conv writes products).
    """
    filter: int
    row: int
    col: int
    step: int
    steps: int
    out_shape: tuple
    terms: list
    bias: object
    value: object
    text: str


def pointwise_step(x, w, b=None, step=None, position=None):
    """One pixel of the 1×1 convolution of x (C, H, W) with w (F, C) (or (F, C, 1, 1)) written
    out; its value equals pointwise_forward(x[None], w, b)[0, filter, row, col]."""
    x = np.asarray(x)
    w = _pointwise_weights(w)
    C, H, W = x.shape
    F, Cw = w.shape
    _channels_match(C, Cw, "the pointwise weights")
    b = _bias(b, F, "the bias")
    f, row, col, k = _resolve_position(step, position, F, H, W)
    exact, number = _number(x, w, b)
    terms = []
    for ch in range(C):
        value, weight = number(x[ch, row, col]), number(w[f, ch])
        terms.append(Term(ch, row, col, False, value, weight, value * weight, 0, 0))
    bias = None if b is None else number(b[f])
    value = _total([t.product for t in terms], exact) + (0 if bias is None else bias)
    text = _expression([(t.input, t.weight) for t in terms], extra=bias, result=value)
    return PointwiseStep(filter=f, row=row, col=col, step=k, steps=F * H * W, out_shape=(F, H, W), terms=terms,
                         bias=bias, value=value, text=text)


def depthwise_step(x, w, b=None, stride=1, padding=0, dilation=1, step=None, position=None):
    """One output value of the depthwise convolution: channel ch's window times its own kernel.

    x (C, H, W), w (C, HH, WW); step is row-major over (C, Ho, Wo) and position is
    (channel, row, col). Returns a ConvStep (``filter`` = the channel) whose terms all come
    from that channel (their ``channel`` says which)."""
    x = np.asarray(x)
    w = _depthwise_weights(w)
    C, H, W = x.shape
    _channels_match(C, w.shape[0], "the depthwise kernels")
    b = _bias(b, C, "the depthwise bias")
    HH, WW = w.shape[1:]
    g = conv_geometry(H, W, HH, WW, stride, padding, dilation)
    ch, row, col, k = _resolve_position(step, position, C, g.Ho, g.Wo, axis="channel")
    st = conv_step(x[ch:ch + 1], w[ch][None, None], None if b is None else b[ch:ch + 1], stride=stride,
                   padding=padding, dilation=dilation, position=(0, row, col))
    terms = [dataclasses.replace(t, channel=ch) for t in st.terms]
    return dataclasses.replace(st, filter=ch, step=k, steps=C * g.Ho * g.Wo, out_shape=(C, g.Ho, g.Wo), terms=terms)


@dataclasses.dataclass(frozen=True)
class SeparableStep:
    """One step of the depthwise-separable convolution.

    phase: "depthwise" (steps 0 … C·Ho·Wo − 1: ``inner`` is a core.conv.ConvStep from depthwise_step)
    or "pointwise" (the next F·Ho·Wo steps: ``inner`` is a PointwiseStep on the depthwise
    output); step: the index over both phases; steps: (C + F)·Ho·Wo; depthwise_steps: C·Ho·Wo.
    """
    phase: str
    step: int
    steps: int
    depthwise_steps: int
    inner: object


def separable_step(x, dw, db, pw, pb, stride=1, padding=0, dilation=1, step=0, depthwise=None):
    """Step ``step`` of the separable convolution of x (C, H, W). ``depthwise``: the depthwise
    output (C, Ho, Wo) if already computed (exact ints when every input is whole)."""
    x = np.asarray(x)
    dw = _depthwise_weights(dw)
    pw = _pointwise_weights(pw)
    C, H, W = x.shape
    _channels_match(C, dw.shape[0], "the depthwise kernels")
    _channels_match(C, pw.shape[1], "the pointwise weights")
    g = conv_geometry(H, W, dw.shape[1], dw.shape[2], stride, padding, dilation)
    F = pw.shape[0]
    n_dw = C * g.Ho * g.Wo
    steps = n_dw + F * g.Ho * g.Wo
    step = _whole("step", step, 0)
    if step >= steps:
        raise ValueError(f"step {step} is past the last one; there are {steps} steps (0 to {steps - 1}).")
    if step < n_dw:
        inner = depthwise_step(x, dw, db, stride=stride, padding=padding, dilation=dilation, step=step)
        return SeparableStep("depthwise", step, steps, n_dw, inner)
    if depthwise is None:
        depthwise = depthwise_output(x, dw, db, stride, padding, dilation)
    inner = pointwise_step(depthwise, pw, pb, step=step - n_dw)
    return SeparableStep("pointwise", step, steps, n_dw, inner)


def depthwise_output(x, dw, db, stride=1, padding=0, dilation=1):
    """The depthwise output of one image x (C, H, W) -> (C, Ho, Wo): int64 when x, dw and db
    are whole (float64 sums of whole numbers below 2**53 are exact), else float64."""
    d = depthwise_forward(np.asarray(x)[None], dw, db, stride=stride, padding=padding, dilation=dilation)[0]
    if _is_integral(x) and _is_integral(dw) and (db is None or _is_integral(db)):
        d = np.rint(d).astype(np.int64)
    return d


@dataclasses.dataclass(frozen=True)
class ScatterTerm:
    """One product of a transposed-convolution step: input·w[kernel_row, kernel_col] added into
    output cell (out_row, out_col) (coordinates after the padding is cut; ``inside`` is False
    when the cell is cut off and the product dropped); before/after: that cell's running value."""
    kernel_row: int
    kernel_col: int
    out_row: int
    out_col: int
    inside: bool
    weight: object
    product: object
    before: object
    after: object


@dataclasses.dataclass(frozen=True)
class TransposeStep:
    """One step of the transposed convolution: input cell (row, col) of ``channel`` scattered
    through kernel w[channel, filter] into output map ``filter``.

    step: row-major over (F, C, H, W); steps: F·C·H·W; out_shape: (F, Ho, Wo).
    top, left: the output cell the kernel's top-left lands on (row·S − P, col·S − P; may be
    negative: cut off by the padding). input: x[channel, row, col]; terms: HH·WW ScatterTerms
    in row-major kernel order; bias: b[filter] (the running output starts there) or None;
    running: output map ``filter`` after this step (Ho, Wo) as nested lists; text: the step in
    one line, e.g. ``3·[1, 2; 0, −1] → y[2–3, 4–5]`` (output rows, then columns).
    """
    filter: int
    channel: int
    row: int
    col: int
    step: int
    steps: int
    out_shape: tuple
    top: int
    left: int
    input: object
    terms: list
    bias: object
    running: list
    text: str


def transpose_step(x, w, b=None, stride=1, padding=0, step=None, position=None):
    """Step ``step`` (or position (filter, channel, row, col)) of the transposed convolution of
    one image x (C, H, W) with w (C, F, HH, WW): the products and the running output.

    After the last step of filter f, ``running`` equals conv_transpose_forward(...)[0, f]."""
    x = np.asarray(x)
    w = np.asarray(w)
    _x, w, b = _transpose_arrays(x[None], w, b)
    C, H, W = x.shape
    _C, F, HH, WW = w.shape
    S = _whole("stride", stride, 1)
    P = _whole("padding", padding, 0)
    Ho = transpose_output_size(H, HH, S, P)
    Wo = transpose_output_size(W, WW, S, P)
    steps = F * C * H * W
    if position is not None:
        if step is not None:
            raise ValueError("give either step or position, not both.")
        f, ch, row, col = (_whole(n, v, 0) for n, v in zip(("filter", "channel", "row", "col"), position))
        if f >= F or ch >= C or row >= H or col >= W:
            raise ValueError(f"position {(f, ch, row, col)} is outside (F, C, H, W) = {(F, C, H, W)}.")
        k = ((f * C + ch) * H + row) * W + col
    else:
        k = 0 if step is None else _whole("step", step, 0)
        if k >= steps:
            raise ValueError(f"step {k} is past the last one; there are {steps} steps (0 to {steps - 1}).")
        f, rest = divmod(k, C * H * W)
        ch, rest = divmod(rest, H * W)
        row, col = divmod(rest, W)
    exact, number = _number(x, w, b)
    # The running map before this step: every earlier input cell of this filter, scattered.
    upto = np.zeros((1, C, H, W), dtype=np.float64)
    upto[0, :ch] = x[:ch]
    upto[0, ch].flat[:row * W + col] = x[ch].flat[:row * W + col]
    before = conv_transpose_forward(upto, w[:, f:f + 1], None if b is None else b[f:f + 1], stride=S, padding=P)[0, 0]
    if exact:
        before = np.rint(before).astype(np.int64)
    running = before.astype(object) if exact else before.copy()
    value = number(x[ch, row, col])
    top, left = row * S - P, col * S - P
    terms = []
    for i in range(HH):
        for j in range(WW):
            r, q = top + i, left + j
            weight = number(w[ch, f, i, j])
            product = value * weight
            inside = 0 <= r < Ho and 0 <= q < Wo
            if inside:
                was = number(running[r, q])
                now = was + product
                running[r, q] = now
            else:
                was = now = None
            terms.append(ScatterTerm(i, j, r, q, inside, weight, product, was, now))
    kernel_text = "; ".join(", ".join(format_number(number(w[ch, f, i, j])) for j in range(WW)) for i in range(HH))
    rows_text = f"{top}\u2013{top + HH - 1}" if HH > 1 else str(top)
    cols_text = f"{left}\u2013{left + WW - 1}" if WW > 1 else str(left)
    text = f"{format_factor(value)}{DOT}[{kernel_text}] \u2192 y[{rows_text}, {cols_text}]"
    running_list = [[number(v) for v in r] for r in running.tolist()]
    return TransposeStep(filter=f, channel=ch, row=row, col=col, step=k, steps=steps, out_shape=(F, Ho, Wo),
                         top=top, left=left, input=value, terms=terms, bias=None if b is None else number(b[f]),
                         running=running_list, text=text)


