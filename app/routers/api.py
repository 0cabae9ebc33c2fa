"""The JSON twin of the lesson: each endpoint is a thin call into ``core``.

Bodies are JSON numbers; anything else (text, NaN, ragged rows, a kernel that does not fit)
is answered with a 4xx and a sentence in the request's language, never a 500.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    WithJsonSchema,
    model_validator,
)

from cnnlab.app.api_schema import api_errors
from cnnlab.app.budget import ConvCost, check_conv, conv_cost
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.images import image_array, image_info, working_shape
from cnnlab.app.settings import Settings, get_settings
from cnnlab.core.conv import OutputSizeError, conv_forward, conv_step, conv_step_count
from cnnlab.core.losses import cross_entropy, softmax
from cnnlab.core.pool import pool_forward

router = APIRouter(prefix="/api", tags=["api"])

# Bounds on each value: 1024×1024 is larger than any image the stepper shows, and 64 filters
# is far beyond what a lesson needs. What they add up to (the output's numbers, the
# multiply-adds, a JSON body's values) is checked by app/budget.py before anything is computed.
MAX_SIDE = 1024
MAX_CHANNELS = 4
MAX_FILTERS = 64
MAX_KERNEL = 15
MAX_STRIDE = 64
MAX_DILATION = 16
MAX_PADDING = 64
MAX_CLASSES = 1000
# Inputs, weights and biases: products of a 15×15×4 window stay far below 2**53 (exact sums
# of whole numbers) and nothing overflows to infinity, which JSON cannot carry.
MAX_ABS_VALUE = 1_000_000

Number = Annotated[float, Field(allow_inf_nan=False)]
Bounded = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
Padding = Annotated[int, Field(ge=0, le=MAX_PADDING)] | Literal["valid", "same"]


def _grid_schema(dims: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "array", "items": {"type": "array"}, "description": f"nested lists of numbers: {dims}"})


# Grids are checked by hand rather than as a union of list types: one walk gives one sentence
# ("text at [0][2]") instead of an error per union member.
Grid = Annotated[list, _grid_schema("H×W or C×H×W")]
KernelGrid = Annotated[list, _grid_schema("HH×WW, C×HH×WW or F×C×HH×WW")]


def _array(value: list, name: str, dims: tuple[int, ...]) -> np.ndarray:
    """A nested list of finite numbers with ``dims`` possible depths, as a float64 array."""

    def walk(v, where: str) -> None:
        if isinstance(v, list):
            for i, item in enumerate(v):
                walk(item, f"{where}[{i}]")
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(_("%(name)s%(where)s is not a number.") % {"name": name, "where": where})
        elif isinstance(v, float) and not math.isfinite(v):
            raise ValueError(_("%(name)s%(where)s is not a finite number (NaN or infinity).") % {"name": name, "where": where})
        elif abs(v) > MAX_ABS_VALUE:
            raise ValueError(_("%(name)s%(where)s is too large: values must be between −%(limit)s and %(limit)s.")
                             % {"name": name, "where": where, "limit": MAX_ABS_VALUE})

    walk(value, "")
    try:
        a = np.array(value, dtype=np.float64)
    except ValueError:
        raise ValueError(_("%(name)s must be rectangular: every row needs the same number of values.") % {"name": name}) from None
    if a.ndim not in dims:
        raise ValueError(_("%(name)s must be a grid of numbers (%(dims)s levels of lists); got %(n)s.")
                         % {"name": name, "dims": _(" or ").join(map(str, dims)), "n": a.ndim})
    if a.size == 0:
        raise ValueError(_("%(name)s must not be empty.") % {"name": name})
    return a


def _check_side(a: np.ndarray, name: str, limit: int) -> None:
    if max(a.shape[-2:]) > limit:
        raise ValueError(_("%(name)s may be at most %(limit)s×%(limit)s; got %(h)s×%(w)s.")
                         % {"name": name, "limit": limit, "h": a.shape[-2], "w": a.shape[-1]})


def _integral(*arrays: np.ndarray | None) -> bool:
    return all(a is None or bool(np.all(a == np.round(a))) for a in arrays)


def _plain(out: np.ndarray, exact: bool) -> list:
    """Whole-number inputs give whole-number outputs (78, not 78.0): float64 sums of integers
    below 2**53 are exact, so rounding only changes the type."""
    return np.rint(out).astype(np.int64).tolist() if exact else out.tolist()


class Body(BaseModel):
    """A request body: strict, so "2" is not taken for 2 nor true for 1."""

    model_config = ConfigDict(strict=True)


class ConvRequest(Body):
    """One convolution layer applied to one input: typed numbers, or a stored image by id."""

    input: Grid | None = Field(None, description="H×W (grayscale) or C×H×W numbers; or give image_id",
                               examples=[[[35, 40, 41, 45, 50], [40, 40, 42, 46, 52], [42, 46, 50, 55, 55],
                                          [48, 52, 56, 58, 60], [56, 60, 65, 70, 75]]])
    image_id: str | None = Field(None, description="an id from POST /api/images, or a sample's name, in place of input")
    size: int | None = Field(None, ge=1, le=64, description="with image_id: the working size (longest side in pixels)")
    color: Literal["gray", "rgb"] = Field("gray", description="with image_id: one channel or three")
    kernel: KernelGrid = Field(
        description="HH×WW (one kernel, used on every channel), C×HH×WW (one filter) or F×C×HH×WW (F filters)",
        examples=[[[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]],
    )
    bias: list[Bounded] | None = Field(None, description="one number per filter")
    stride: int = Field(1, ge=1, le=MAX_STRIDE)
    padding: Padding = Field(0, description='a number of zero cells on each side, "valid" (0) or "same"')
    dilation: int = Field(1, ge=1, le=MAX_DILATION)
    mode: Literal["cross-correlation", "convolution"] = Field(
        "cross-correlation", description="deep-learning libraries compute cross-correlation; convolution flips the kernel")

    _x: np.ndarray | None = PrivateAttr(None)
    _w: np.ndarray = PrivateAttr()
    _b: np.ndarray | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _arrays(self) -> ConvRequest:
        if (self.input is None) == (self.image_id is None):
            raise ValueError(_("Give either input (numbers) or image_id, not both."))
        w = _array(self.kernel, "kernel", (2, 3, 4))
        _check_side(w, "kernel", MAX_KERNEL)
        if w.ndim == 4 and w.shape[0] > MAX_FILTERS:
            raise ValueError(_("At most %(max)s filters; got %(n)s.") % {"max": MAX_FILTERS, "n": w.shape[0]})
        if self.bias is not None:
            F = w.shape[0] if w.ndim == 4 else 1
            if len(self.bias) != F:
                raise ValueError(_("The bias needs one number per filter (%(f)s); got %(n)s.") % {"f": F, "n": len(self.bias)})
            self._b = np.array(self.bias, dtype=np.float64)
        self._w = w
        if self.input is not None:
            x = _array(self.input, "input", (2, 3))
            _check_side(x, "input", MAX_SIDE)
            self._x = x if x.ndim == 3 else x[None]
        return self

    @property
    def one_filter(self) -> bool:
        """A 2-D or 3-D kernel is one filter, whose output is one Ho×Wo map."""
        return self._w.ndim < 4

    def arrays(self, settings: Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """x (C, H, W), w (F, C, HH, WW) and b (F,) or None, with the channels checked."""
        x = self._x
        if self.image_id is not None:
            x = image_array(self.image_id, settings, self.size, self.color).astype(np.float64)
        C = x.shape[0]
        if C > MAX_CHANNELS:
            raise InputError(_("The input may have at most %(max)s channels; got %(n)s.") % {"max": MAX_CHANNELS, "n": C})
        w = self._w
        if w.ndim == 2:  # one kernel for every channel
            w = np.broadcast_to(w, (C, *w.shape))
        w = np.ascontiguousarray(w if w.ndim == 4 else w[None])
        if w.shape[1] != C:
            raise InputError(_("The kernel has %(k)s channels but the input has %(c)s.") % {"k": w.shape[1], "c": C})
        return x, w, self._b

    def settings(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation, "mode": self.mode}

    def cost(self, settings: Settings) -> ConvCost:
        """The output size and work, from the shapes alone (a picture's stored header, no pixels)."""
        if self._x is not None:
            C, H, W = self._x.shape
        else:
            info = image_info(self.image_id, settings)
            W, H = working_shape(info.width, info.height, self.size)
            C = 3 if self.color == "rgb" else 1
        F = self._w.shape[0] if self._w.ndim == 4 else 1
        HH, WW = self._w.shape[-2:]
        try:
            return conv_cost(C, H, W, F, HH, WW, self.stride, self.padding, self.dilation)
        except OutputSizeError as e:
            raise _does_not_fit(e) from None


class ConvResponse(BaseModel):
    output: list = Field(description="Ho×Wo for one filter (a 2-D or 3-D kernel), F×Ho×Wo otherwise")
    output_shape: list[int]


class ConvStepRequest(ConvRequest):
    step: int = Field(0, ge=0, description="row-major index over filters, output rows, output columns")


class Term(BaseModel):
    channel: int
    row: int = Field(description="row in the unpadded input; outside 0…H−1 for a padding cell")
    col: int = Field(description="column in the unpadded input; outside 0…W−1 for a padding cell")
    input: int | float
    weight: int | float
    product: int | float


class ConvStepResponse(BaseModel):
    filter: int
    row: int
    col: int
    steps: int = Field(description="how many positions there are: F·Ho·Wo")
    terms: list[Term]
    channel_sums: list[int | float]
    bias: int | float | None
    value: int | float
    text: str = Field(description="the dot product written out as the slides write it, e.g. 35·(−2) + … = 78")


class PoolRequest(Body):
    input: Grid = Field(description="H×W or C×H×W numbers", examples=[[[1, 3, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]])
    kind: Literal["max", "avg", "global_avg"] = "max"
    size: int = Field(2, ge=1, le=MAX_KERNEL, description="window side; ignored by global_avg")
    stride: int | None = Field(None, ge=1, le=MAX_STRIDE, description="defaults to size")

    _x: np.ndarray = PrivateAttr()

    @model_validator(mode="after")
    def _shapes(self) -> PoolRequest:
        x = _array(self.input, "input", (2, 3))
        _check_side(x, "input", MAX_SIDE)
        if x.ndim == 3 and x.shape[0] > MAX_CHANNELS:
            raise ValueError(_("The input may have at most %(max)s channels; got %(n)s.") % {"max": MAX_CHANNELS, "n": x.shape[0]})
        self._x = x
        return self


class PoolResponse(BaseModel):
    output: list = Field(description="Ho×Wo for an H×W input, C×Ho×Wo for C×H×W")
    output_shape: list[int]


class SoftmaxRequest(Body):
    logits: list[Number] = Field(min_length=1, max_length=MAX_CLASSES, examples=[[2.0, 1.0, 0.1]])
    label: int | None = Field(None, ge=0, description="the true class; gives the cross-entropy H(p, q) = −log q[label]")

    @model_validator(mode="after")
    def _label(self) -> SoftmaxRequest:
        if self.label is not None and self.label >= len(self.logits):
            raise ValueError(_("The label must be a class index below %(k)s; got %(label)s.") % {"k": len(self.logits), "label": self.label})
        return self


class SoftmaxResponse(BaseModel):
    probabilities: list[float]
    cross_entropy: float | None


def _does_not_fit(e: OutputSizeError) -> InputError:
    return InputError(
        _("The kernel does not fit: it spans %(span)s cells but the padded input has only %(padded)s, "
          "so the output size would be %(formula)s.")
        % {"span": e.dilation * (e.k - 1) + 1, "padded": e.n + sum(e.pad), "formula": e.formula})


# 400: a body that is not JSON; 404: a picture given by id that is gone.
ERRORS = api_errors(400, 422)
IMAGE_ERRORS = api_errors(400, 404, 422)


@router.post("/conv", response_model=ConvResponse, responses=IMAGE_ERRORS)
def conv(req: ConvRequest, settings: Annotated[Settings, Depends(get_settings)]) -> ConvResponse:
    """The whole output of one convolution layer (the vectorised engine)."""
    check_conv(req.cost(settings), settings, answer_values=True)  # before a pixel is read
    x, w, b = req.arrays(settings)
    try:
        out, _cache = conv_forward(x[None], w, b, **req.settings())
    except OutputSizeError as e:
        raise _does_not_fit(e) from None
    out = out[0, 0] if req.one_filter else out[0]
    return ConvResponse(output=_plain(out, _integral(x, w, b)), output_shape=list(out.shape))


@router.post("/conv/step", response_model=ConvStepResponse, responses=IMAGE_ERRORS)
def conv_step_view(req: ConvStepRequest, settings: Annotated[Settings, Depends(get_settings)]) -> ConvStepResponse:
    """One output position with every product, each channel's sum, the bias and the sum written out."""
    x, w, b = req.arrays(settings)
    try:
        steps = conv_step_count(x, w, stride=req.stride, padding=req.padding, dilation=req.dilation)
    except OutputSizeError as e:
        raise _does_not_fit(e) from None
    if req.step >= steps:
        raise InputError(_("Step %(step)s is past the last one: there are %(steps)s steps (0 to %(last)s).")
                         % {"step": req.step, "steps": steps, "last": steps - 1}, field="step")
    s = conv_step(x, w, b, step=req.step, **req.settings())
    return ConvStepResponse(
        filter=s.filter, row=s.row, col=s.col, steps=s.steps,
        terms=[Term(channel=t.channel, row=t.row, col=t.col, input=t.input, weight=t.weight, product=t.product) for t in s.terms],
        channel_sums=s.channel_sums, bias=s.bias, value=s.value, text=s.text)


@router.post("/pool", response_model=PoolResponse, responses=ERRORS)
def pool(req: PoolRequest) -> PoolResponse:
    x = req._x if req._x.ndim == 3 else req._x[None]
    try:
        out, _cache = pool_forward(x[None], kind=req.kind, size=req.size, stride=req.stride)
    except OutputSizeError as e:
        raise _does_not_fit(e) from None
    out = out[0] if req._x.ndim == 3 else out[0, 0]
    exact = req.kind == "max" and _integral(req._x)
    return PoolResponse(output=_plain(out, exact), output_shape=list(out.shape))


@router.post("/softmax", response_model=SoftmaxResponse, responses=ERRORS)
def softmax_view(req: SoftmaxRequest) -> SoftmaxResponse:
    """q = softmax(logits) and, with a label, H(p, q) = −Σ p(x) log q(x) for the one-hot p."""
    z = np.array(req.logits, dtype=np.float64)
    loss = None
    if req.label is not None:
        loss, _grad = cross_entropy(z[None], np.array([req.label]))
        loss = float(loss)
    return SoftmaxResponse(probabilities=softmax(z).tolist(), cross_entropy=loss)
