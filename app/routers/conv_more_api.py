"""The JSON twins of /conv's kinds beyond the slides: the 1×1 convolution, the
depthwise-separable convolution and the transposed convolution, each as a whole result and as
one step written out (the numbers of core/conv_more.py, as the stepper shows them).

Bodies are JSON numbers, checked like /api/conv's (app/routers/api.py); what cannot be
computed (a channel mismatch, an output below one cell or too large, a step past the last)
is a 422 with a sentence in the request's language.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from cnnlab.app.budget import ConvCost, check_conv
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import N_
from cnnlab.app.i18n import gettext as _
from cnnlab.app.routers.api import (
    IMAGE_ERRORS,
    MAX_CHANNELS,
    MAX_FILTERS,
    MAX_KERNEL,
    MAX_PADDING,
    MAX_SIDE,
    MAX_STRIDE,
    Body,
    Bounded,
    Grid,
    KernelGrid,
    Padding,
    _array,
    _check_side,
    _does_not_fit,
    _integral,
    _plain,
)
from cnnlab.app.settings import Settings, get_settings
from cnnlab.core.conv import OutputSizeError, conv_geometry
from cnnlab.core.conv_more import (
    conv_transpose_forward,
    depthwise_forward,
    pointwise_forward,
    pointwise_step,
    separable_counts,
    separable_step,
    transpose_output_size_formula,
    transpose_step,
)
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, PrivateAttr, model_validator

router = APIRouter(prefix="/api/conv", tags=["api"])

ERRORS = IMAGE_ERRORS


def _input(value: list) -> np.ndarray:
    x = _array(value, "input", (2, 3))
    _check_side(x, "input", MAX_SIDE)
    x = x if x.ndim == 3 else x[None]
    if x.shape[0] > MAX_CHANNELS:
        raise ValueError(_("The input may have at most %(max)s channels; got %(n)s.") % {"max": MAX_CHANNELS, "n": x.shape[0]})
    return x


def _channels(C: int, got: int, message: str) -> None:
    """``message`` (a msgid with %(c)s and %(k)s) when the input's C channels and the weights' ``got`` differ."""
    if C != got:
        raise InputError(_(message) % {"c": C, "k": got})


def _bias(values: list | None, n: int, what: str) -> np.ndarray | None:
    if values is None:
        return None
    if len(values) != n:
        raise InputError(_("%(what)s needs %(n)s numbers; got %(got)s.") % {"what": what, "n": n, "got": len(values)})
    return np.array(values, dtype=np.float64)


def _step_past(step: int, steps: int) -> InputError:
    return InputError(_("Step %(step)s is past the last one: there are %(steps)s steps (0 to %(last)s).")
                      % {"step": step, "steps": steps, "last": steps - 1}, field="step")


def _exact(*arrays: np.ndarray | None):
    """Whole numbers everywhere: the step views then give ints (78, not 78.0)."""
    if _integral(*arrays):
        return [None if a is None else np.rint(a).astype(np.int64) for a in arrays]
    return list(arrays)


class StepTerm(BaseModel):
    channel: int
    input: int | float
    weight: int | float
    product: int | float


class WindowTerm(StepTerm):
    row: int = Field(description="row in the unpadded input; outside 0…H−1 for a padding cell")
    col: int = Field(description="column in the unpadded input; outside 0…W−1 for a padding cell")


# ============================================================================== 1×1 convolution


class PointwiseRequest(Body):
    """A 1×1 convolution: every pixel's C values mixed by each filter's C weights."""

    input: Grid = Field(description="C×H×W numbers (H×W is one channel)",
                        examples=[[[[9, 8], [7, 2]], [[1, 2], [4, 6]], [[0, 1], [3, 8]]]])
    weights: KernelGrid = Field(description="F×C numbers: filter f's weight for channel c (or F×C×1×1)",
                                examples=[[[1, 1, 1], [1, 0, -1]]])
    bias: list[Bounded] | None = Field(None, description="one number per filter")

    _x: np.ndarray = PrivateAttr()
    _w: np.ndarray = PrivateAttr()

    @model_validator(mode="after")
    def _arrays(self) -> PointwiseRequest:
        self._x = _input(self.input)
        w = _array(self.weights, "weights", (2, 4))
        if w.ndim == 4:
            if w.shape[2:] != (1, 1):
                raise ValueError(_("A 1×1 convolution has 1×1 kernels; got %(h)s×%(w)s.") % {"h": w.shape[2], "w": w.shape[3]})
            w = w[:, :, 0, 0]
        if w.shape[0] > MAX_FILTERS:
            raise ValueError(_("At most %(max)s filters; got %(n)s.") % {"max": MAX_FILTERS, "n": w.shape[0]})
        self._w = w
        return self

    def arrays(self, settings: Settings):
        x, w = self._x, self._w
        C, H, W = x.shape
        _channels(C, w.shape[1], N_("The input has %(c)s channels but each filter has %(k)s weights: give one weight "
                                    "per channel."))
        b = _bias(self.bias, w.shape[0], _("The bias"))
        check_conv(ConvCost(w.shape[0], C, H, W, 1, 1), settings, answer_values=True)
        return x, w, b


class PointwiseStepRequest(PointwiseRequest):
    step: int = Field(0, ge=0, description="row-major index over filters, rows, columns")


class ConvMoreOutput(BaseModel):
    output: list = Field(description="F×Ho×Wo")
    output_shape: list[int]


class PointwiseStepResponse(BaseModel):
    filter: int
    row: int
    col: int
    steps: int = Field(description="F·H·W")
    terms: list[StepTerm] = Field(description="one product per channel: input x_c times weight w_c")
    bias: int | float | None
    value: int | float
    text: str = Field(description="x_1·w_1 + … + x_C·w_C + b = value, as the stepper writes it")


@router.post("/pointwise", response_model=ConvMoreOutput, responses=ERRORS)
def pointwise(req: PointwiseRequest, settings: Annotated[Settings, Depends(get_settings)]) -> ConvMoreOutput:
    """The whole output of a 1×1 convolution (mixing channels): out[f, r, c] = Σ_ch w[f, ch]·x[ch, r, c] + b[f]."""
    x, w, b = req.arrays(settings)
    out = pointwise_forward(x[None], w, b)[0]
    return ConvMoreOutput(output=_plain(out, _integral(x, w, b)), output_shape=list(out.shape))


@router.post("/pointwise/step", response_model=PointwiseStepResponse, responses=ERRORS)
def pointwise_step_view(req: PointwiseStepRequest, settings: Annotated[Settings, Depends(get_settings)]) -> PointwiseStepResponse:
    """One pixel of the 1×1 convolution written out: w_1·x_1 + … + w_C·x_C + b."""
    x, w, b = _exact(*req.arrays(settings))
    steps = w.shape[0] * x.shape[1] * x.shape[2]
    if req.step >= steps:
        raise _step_past(req.step, steps)
    s = pointwise_step(x, w, b, step=req.step)
    return PointwiseStepResponse(
        filter=s.filter, row=s.row, col=s.col, steps=s.steps, bias=s.bias, value=s.value, text=s.text,
        terms=[StepTerm(channel=t.channel, input=t.input, weight=t.weight, product=t.product) for t in s.terms])


# ============================================================================== depthwise-separable


class SeparableRequest(Body):
    """A depthwise-separable convolution: each channel convolved with its own kernel (depthwise),
    then a 1×1 convolution mixing the channels (pointwise)."""

    input: Grid = Field(description="C×H×W numbers (H×W is one channel)")
    depthwise: KernelGrid = Field(description="C×HH×WW: one kernel per channel (HH×WW: the same kernel for every channel)",
                                  examples=[[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]]])
    depthwise_bias: list[Bounded] | None = Field(None, description="one number per channel")
    pointwise: KernelGrid = Field(description="F×C: filter f's weight for depthwise map c", examples=[[[1], [-1]]])
    pointwise_bias: list[Bounded] | None = Field(None, description="one number per pointwise filter")
    stride: int = Field(1, ge=1, le=MAX_STRIDE)
    padding: Padding = Field(0, description='a number of zero cells on each side, "valid" (0) or "same"')
    dilation: int = Field(1, ge=1, le=16)

    _x: np.ndarray = PrivateAttr()
    _dw: np.ndarray = PrivateAttr()
    _pw: np.ndarray = PrivateAttr()

    @model_validator(mode="after")
    def _arrays(self) -> SeparableRequest:
        self._x = _input(self.input)
        dw = _array(self.depthwise, "depthwise", (2, 3))
        _check_side(dw, "depthwise", MAX_KERNEL)
        self._dw = dw
        pw = _array(self.pointwise, "pointwise", (2,))
        if pw.shape[0] > MAX_FILTERS:
            raise ValueError(_("At most %(max)s filters; got %(n)s.") % {"max": MAX_FILTERS, "n": pw.shape[0]})
        self._pw = pw
        return self

    def arrays(self, settings: Settings):
        x = self._x
        C, H, W = x.shape
        dw = self._dw if self._dw.ndim == 3 else np.broadcast_to(self._dw, (C, *self._dw.shape))
        _channels(C, dw.shape[0], N_("The input has %(c)s channels but there are %(k)s depthwise kernels: give one "
                                     "kernel per channel."))
        _channels(C, self._pw.shape[1], N_("The input has %(c)s channels but each pointwise filter has %(k)s weights: "
                                           "give one weight per depthwise map."))
        db = _bias(self.depthwise_bias, C, _("The depthwise bias"))
        pb = _bias(self.pointwise_bias, self._pw.shape[0], _("The pointwise bias"))
        try:
            g = conv_geometry(H, W, dw.shape[1], dw.shape[2], self.stride, self.padding, self.dilation)
        except OutputSizeError as e:
            raise _does_not_fit(e) from None
        F = self._pw.shape[0]
        check_conv(ConvCost(F + C, C, g.Ho, g.Wo, dw.shape[1], dw.shape[2]), settings, answer_values=True)
        return x, np.ascontiguousarray(dw), db, self._pw, pb, g

    def settings(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}


class SeparableStepRequest(SeparableRequest):
    step: int = Field(0, ge=0, description="the depthwise steps (row-major over channels, rows, columns), "
                                            "then the pointwise steps (over filters, rows, columns)")


class Counts(BaseModel):
    params_full: int = Field(description="a full convolution's parameters: (k·k·C + 1)·F")
    params_full_text: str
    params_separable: int = Field(description="k·k·C + C (depthwise) + (C + 1)·F (pointwise)")
    params_separable_text: str
    mults_full: int = Field(description="multiplications of the full convolution: k·k·C·F·Ho·Wo")
    mults_full_text: str
    mults_separable: int = Field(description="k·k·C·Ho·Wo + C·F·Ho·Wo")
    mults_separable_text: str


class SeparableResponse(BaseModel):
    depthwise_output: list = Field(description="C×Ho×Wo: each channel with its own kernel")
    output: list = Field(description="F×Ho×Wo: the depthwise maps mixed by the 1×1 filters")
    output_shape: list[int]
    counts: Counts


class SeparableStepResponse(BaseModel):
    phase: str = Field(description="depthwise | pointwise")
    step: int
    steps: int = Field(description="(C + F)·Ho·Wo")
    depthwise_steps: int = Field(description="C·Ho·Wo: the steps before the pointwise ones")
    index: int = Field(description="the channel (depthwise) or the filter (pointwise) of this value")
    row: int
    col: int
    terms: list[WindowTerm]
    bias: int | float | None
    value: int | float
    text: str


@router.post("/separable", response_model=SeparableResponse, responses=ERRORS)
def separable(req: SeparableRequest, settings: Annotated[Settings, Depends(get_settings)]) -> SeparableResponse:
    """The whole depthwise-separable convolution: the depthwise maps, the output, and the parameter and
    multiplication counts beside a full convolution's with the same k, C and F."""
    x, dw, db, pw, pb, g = req.arrays(settings)
    d = depthwise_forward(x[None], dw, db, **req.settings())
    out = pointwise_forward(d, pw, pb)[0]
    exact = _integral(x, dw, db, pw, pb)
    C, F = x.shape[0], pw.shape[0]
    return SeparableResponse(depthwise_output=_plain(d[0], _integral(x, dw, db)), output=_plain(out, exact),
                             output_shape=list(out.shape),
                             counts=Counts(**separable_counts(C, F, dw.shape[1], dw.shape[2], g.Ho, g.Wo)))


@router.post("/separable/step", response_model=SeparableStepResponse, responses=ERRORS)
def separable_step_view(req: SeparableStepRequest, settings: Annotated[Settings, Depends(get_settings)]) -> SeparableStepResponse:
    """One step of the separable convolution written out: a depthwise window times its channel's kernel,
    or a pointwise w_1·d_1 + … + w_C·d_C + b."""
    x, dw, db, pw, pb, g = req.arrays(settings)
    x, dw, db, pw, pb = _exact(x, dw, db, pw, pb)
    steps = (x.shape[0] + pw.shape[0]) * g.Ho * g.Wo
    if req.step >= steps:
        raise _step_past(req.step, steps)
    s = separable_step(x, dw, db, pw, pb, step=req.step, **req.settings())
    i = s.inner
    return SeparableStepResponse(
        phase=s.phase, step=s.step, steps=s.steps, depthwise_steps=s.depthwise_steps, index=i.filter, row=i.row,
        col=i.col, bias=i.bias, value=i.value, text=i.text,
        terms=[WindowTerm(channel=t.channel, row=t.row, col=t.col, input=t.input, weight=t.weight, product=t.product)
               for t in i.terms])


# ============================================================================== transposed


class TransposedRequest(Body):
    """A transposed convolution (PyTorch's conv_transpose2d): every input value times the kernel,
    added into the output window at (i·S − P, j·S − P); Ho = (H − 1)·S − 2P + HH."""

    input: Grid = Field(description="C×H×W numbers (H×W is one channel)", examples=[[[1, 2], [3, 4]]])
    kernel: KernelGrid = Field(description="HH×WW (one channel, one output map) or C×F×HH×WW (PyTorch's layout: "
                                           "input channel, output map, rows, columns)",
                               examples=[[[1, 2, 1], [2, 4, 2], [1, 2, 1]]])
    bias: list[Bounded] | None = Field(None, description="one number per output map")
    stride: int = Field(1, ge=1, le=MAX_STRIDE)
    padding: int = Field(0, ge=0, le=MAX_PADDING, description="rows and columns cut from every side of the output")

    _x: np.ndarray = PrivateAttr()
    _w: np.ndarray = PrivateAttr()

    @model_validator(mode="after")
    def _arrays(self) -> TransposedRequest:
        self._x = _input(self.input)
        w = _array(self.kernel, "kernel", (2, 4))
        _check_side(w, "kernel", MAX_KERNEL)
        if w.ndim == 4 and w.shape[1] > MAX_FILTERS:
            raise ValueError(_("At most %(max)s filters; got %(n)s.") % {"max": MAX_FILTERS, "n": w.shape[1]})
        self._w = w
        return self

    def arrays(self, settings: Settings):
        x = self._x
        C, H, W = x.shape
        w = self._w if self._w.ndim == 4 else np.broadcast_to(self._w, (C, 1, *self._w.shape))
        _channels(C, w.shape[0], N_("The input has %(c)s channels but the kernel has %(k)s (its first axis: "
                                    "C×F×HH×WW)."))
        F, HH, WW = w.shape[1:]
        b = _bias(self.bias, F, _("The bias"))
        S, P = self.stride, self.padding
        Ho, Wo = (H - 1) * S - 2 * P + HH, (W - 1) * S - 2 * P + WW
        if Ho < 1 or Wo < 1:
            n, k = (H, HH) if Ho < 1 else (W, WW)
            raise InputError(_("The padding cuts away the whole output: its size would be %(formula)s. Use less padding "
                               "or a larger kernel or stride.") % {"formula": transpose_output_size_formula(n, k, S, P)})
        if max(Ho, Wo) > MAX_SIDE:
            n, k = (H, HH) if Ho >= Wo else (W, WW)
            raise InputError(_("The output would be too large: %(formula)s rows or columns, at most %(max)s. Use a "
                               "smaller stride or input.") % {"formula": transpose_output_size_formula(n, k, S, P),
                                                             "max": MAX_SIDE})
        check_conv(ConvCost(F, C, Ho, Wo, HH, WW), settings, answer_values=True)
        return x, np.ascontiguousarray(w), b


class TransposedStepRequest(TransposedRequest):
    step: int = Field(0, ge=0, description="row-major index over output maps, input channels, input rows, input columns")


class TransposedResponse(ConvMoreOutput):
    rows_formula: str = Field(description="Ho = (H − 1)·S − 2P + HH with the numbers")
    cols_formula: str = Field(description="Wo = (W − 1)·S − 2P + WW with the numbers")


class ScatterTerm(BaseModel):
    kernel_row: int
    kernel_col: int
    out_row: int = Field(description="output row the product lands on (outside 0…Ho−1: cut by the padding)")
    out_col: int
    inside: bool = Field(description="false: the product falls on a cell the padding cuts away and is dropped")
    weight: int | float
    product: int | float
    before: int | float | None = Field(description="the output cell's running value before this step")
    after: int | float | None


class TransposedStepResponse(BaseModel):
    filter: int
    channel: int
    row: int = Field(description="the input cell's row")
    col: int
    steps: int = Field(description="F·C·H·W")
    top: int = Field(description="output row of the kernel's top-left: row·S − P")
    left: int = Field(description="output column of the kernel's top-left: col·S − P")
    input: int | float
    terms: list[ScatterTerm]
    bias: int | float | None
    running: list = Field(description="output map `filter` after this step (Ho×Wo)")
    text: str


@router.post("/transposed", response_model=TransposedResponse, responses=ERRORS)
def transposed(req: TransposedRequest, settings: Annotated[Settings, Depends(get_settings)]) -> TransposedResponse:
    """The whole output of a transposed convolution, with its output-size formula filled in."""
    x, w, b = req.arrays(settings)
    out = conv_transpose_forward(x[None], w, b, stride=req.stride, padding=req.padding)[0]
    H, W = x.shape[1:]
    HH, WW = w.shape[2:]
    return TransposedResponse(output=_plain(out, _integral(x, w, b)), output_shape=list(out.shape),
                              rows_formula=transpose_output_size_formula(H, HH, req.stride, req.padding),
                              cols_formula=transpose_output_size_formula(W, WW, req.stride, req.padding))


@router.post("/transposed/step", response_model=TransposedStepResponse, responses=ERRORS)
def transposed_step_view(req: TransposedStepRequest, settings: Annotated[Settings, Depends(get_settings)]) -> TransposedStepResponse:
    """One input value scattered through the kernel: its products, where each lands, and the running output."""
    x, w, b = _exact(*req.arrays(settings))
    steps = w.shape[1] * x.size
    if req.step >= steps:
        raise _step_past(req.step, steps)
    s = transpose_step(x, w, b, stride=req.stride, padding=req.padding, step=req.step)
    return TransposedStepResponse(
        filter=s.filter, channel=s.channel, row=s.row, col=s.col, steps=s.steps, top=s.top, left=s.left, input=s.input,
        bias=s.bias, running=s.running, text=s.text,
        terms=[ScatterTerm(**{f: getattr(t, f) for f in ScatterTerm.model_fields}) for t in s.terms])
