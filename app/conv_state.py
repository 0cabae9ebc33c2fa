"""Reading the convolution stepper's state from a URL or a form: every parameter checked,
every bad value turned into a translated message next to its control (never a 500).

The URL format is described in ``app.routers.conv.conv_page``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import numpy as np

from cnnlab.app import budget, images
from cnnlab.app.i18n import N_
from cnnlab.app.i18n import gettext as _
from cnnlab.app.settings import Settings
from cnnlab.core import kernels
from cnnlab.core.conv import (
    OutputSizeError,
    conv_geometry,
    output_size_formula,
    resolve_padding,
)
from cnnlab.core.conv_more import transpose_output_size_formula

# ------------------------------------------------------------------------------ limits
MAX_KERNEL = 7
MAX_STRIDE = 8
MAX_DILATION = 4
MAX_PADDING = 8
MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = 5, 32, 10
MAX_FILTERS = 4
MAX_GRID = 10
MAX_ABS_WEIGHT = 1000
MAX_ABS_INPUT = 10000
# Above this many cells per side a grid is drawn as a picture (the numbers would not fit a
# projector at a readable size); the receptive field is then shown as its own small matrix.
NUMBERS_MAX_SIDE = 12
# Working-size pictures are enlarged (nearest neighbour, every pixel a crisp square) to at
# least this many pixels on their longest side.
PICTURE_SIDE = 256
# Term colours: up to 3×3 every kernel position (row-major) has its own colour.
TERM_COLOURS = 9
TINT_LEVELS = 5
PNG_CACHE_CONTROL = "private, max-age=3600"

MODES = {"xcorr": "cross-correlation", "conv": "convolution"}
# The kinds of convolution the stepper steps through (URL ``kind``; "conv" is left out of it).
KINDS = {
    "conv": N_("Convolution"),
    "pointwise": N_("1×1 convolution (mixing channels)"),
    "separable": N_("Depthwise-separable convolution"),
    "transposed": N_("Transposed convolution"),
}
# A transposed convolution's output grows with the stride: at most this many rows or columns.
MAX_TRANSPOSED_SIDE = 96
# A small three-channel input (the numbers of a tiny RGB picture) for the 1×1 and the
# depthwise-separable convolutions: whole numbers, so every sum prints exactly.
SEED3_INPUT = np.array([
    [[9, 8, 7, 2, 1], [8, 9, 6, 2, 0], [7, 6, 5, 3, 1], [3, 2, 4, 6, 7], [1, 0, 2, 7, 9]],
    [[1, 2, 4, 6, 8], [2, 3, 5, 7, 8], [4, 5, 6, 5, 4], [6, 7, 5, 3, 2], [8, 8, 4, 2, 1]],
    [[0, 1, 3, 8, 9], [1, 2, 4, 9, 8], [3, 4, 5, 6, 5], [9, 8, 6, 4, 3], [8, 9, 7, 3, 2]],
], dtype=np.int64)
SEED3_INPUT.flags.writeable = False
CHANNEL_NAMES_RGB = ("R", "G", "B")

PRESET_LABELS = {
    "seed": N_("Kernel from the slides"),
    "identity": N_("Identity"),
    "box_blur": N_("Box blur"),
    "gaussian": N_("Gaussian blur"),
    "sharpen": N_("Sharpen"),
    "sobel_x": N_("Sobel x (vertical edges)"),
    "sobel_y": N_("Sobel y (horizontal edges)"),
    "laplacian": N_("Laplacian"),
    "emboss": N_("Emboss (same as the slides’ kernel)"),
    "outline": N_("Outline"),
}

# Query parameters that only the settings form sends: a plain (non-htmx) submission carrying
# them is redirected to the canonical address.
FORM_ONLY = re.compile(r"(source|ksize|filters|random|grid_rows|grid_cols|kind_was|use_\d+|b_\d+|w_\d+_\d+_\d+_\d+|g_\d+_\d+)")
_CELL_W = re.compile(r"w_(\d)_(\d)_(\d)_(\d)")
_CELL_G = re.compile(r"g_(\d{1,2})_(\d{1,2})")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class FieldError(ValueError):
    """A bad value for one control; the message is already translated."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# ============================================================================== state


@dataclass(frozen=True)
class ConvState:
    """Everything a view depends on, checked. Arrays are read-only.

    kind: "seed" | "seed3" | "grid" | "image" (the input); image: sample name or upload id;
    grid: (h, w) typed values; size: working size (longest side, images only); color: "gray" |
    "rgb"; kernel: (F, C, HH, WW); names: per filter, the preset it equals (or None);
    bias: F numbers or None; padding: "valid" | "same" | int; mode: "xcorr" | "conv".
    op: the kind of convolution (KINDS; URL ``kind``). "pointwise": kernel (F, C, 1, 1).
    "separable": kernel (1, C, HH, WW) holds the depthwise kernels, ``dbias`` their C biases,
    ``pointwise`` (F, C) the 1×1 weights and ``bias`` their F biases. "transposed": kernel
    (F, C, HH, WW), applied as conv_transpose2d's weight (C, F, HH, WW); padding an int.
    """

    kind: str = "seed"
    image: str | None = None
    grid: np.ndarray | None = None
    size: int = DEFAULT_SIZE
    color: str = "gray"
    kernel: np.ndarray = field(default_factory=lambda: kernels.SEED_KERNEL[None, None])
    names: tuple = ("seed",)
    bias: tuple | None = None
    stride: int = 1
    padding: str | int = "valid"
    dilation: int = 1
    mode: str = "xcorr"
    relu: bool = False
    step: int = 0
    op: str = "conv"
    pointwise: np.ndarray | None = None
    dbias: tuple | None = None

    @property
    def channels(self) -> int:
        return 3 if (self.kind == "image" and self.color == "rgb") or self.kind == "seed3" else 1

    @property
    def F(self) -> int:
        """The number of output maps."""
        if self.op == "separable" and self.pointwise is not None:
            return self.pointwise.shape[0]
        return self.kernel.shape[0]

    def pairs(self) -> list[tuple[str, str]]:
        """The canonical query parameters, step excluded (defaults left out)."""
        out: list[tuple[str, str]] = []
        if self.kind == "seed":
            out.append(("preset", "seed"))
        elif self.kind == "seed3":
            out.append(("preset", "seed3"))
        elif self.kind == "grid":
            out.append(("grid", format_grid(self.grid)))
        else:
            out += [("image", self.image), ("size", str(self.size)), ("color", self.color)]
        if self.op != "conv":
            out.append(("kind", self.op))
        out.append(("kernel", format_kernel(self.kernel, self.names)))
        if self.op == "separable" and self.dbias is not None:
            out.append(("dbias", ",".join(ascii_number(b) for b in self.dbias)))
        if self.op == "separable" and self.pointwise is not None:
            out.append(("pointwise", format_pointwise(self.pointwise)))
        if self.bias is not None:
            out.append(("bias", ",".join(ascii_number(b) for b in self.bias)))
        if self.stride != 1:
            out.append(("stride", str(self.stride)))
        if self.padding not in ("valid", 0):
            out.append(("padding", str(self.padding)))
        if self.dilation != 1:
            out.append(("dilation", str(self.dilation)))
        if self.mode != "xcorr":
            out.append(("mode", self.mode))
        if self.relu:
            out.append(("relu", "1"))
        return out

    def query(self, step: int | None = None, **extra: object) -> str:
        pairs = self.pairs()
        if step is not None:
            pairs.append(("step", str(step)))
        pairs += [(k, str(v)) for k, v in extra.items()]
        return urlencode(pairs)

    def url(self, step: int | None = None) -> str:
        return f"/conv?{self.query(step)}"

    def source_key(self, res: str) -> tuple:
        if self.kind in ("seed", "seed3"):
            return (self.kind,)
        if self.kind == "grid":
            return ("grid", self.grid.shape, self.grid.dtype.str, self.grid.tobytes())
        return ("image", self.image, self.size if res == "work" else None, self.color)

    def compute_key(self, res: str) -> tuple:
        k = self.kernel
        key = (self.source_key(res), k.shape, k.dtype.str, k.tobytes(), self.bias, self.stride,
               self.padding, self.dilation, self.mode)
        if self.op != "conv":
            p = self.pointwise
            key += (self.op, self.dbias, None if p is None else (p.shape, p.dtype.str, p.tobytes()))
        return key


@dataclass
class Parsed:
    """The outcome of reading a request: a state (defaults where a value was bad), the
    messages per control, and what the form should show (the values as typed)."""

    state: ConvState
    errors: dict[str, str]
    raw: dict[str, str]
    kernel_cells: dict[tuple, str] | None = None  # (f, c, i, j) -> typed text
    grid_cells: dict[tuple, str] | None = None
    bias_cells: list[str] | None = None
    x: np.ndarray | None = None  # the working-size input (C, H, W)
    geometry: Any = None
    fit: dict | None = None  # when the kernel does not fit: the formulas and a sentence

    @property
    def ok(self) -> bool:
        return not self.errors


# ------------------------------------------------------------------------------ numbers


def ascii_number(v: float | int) -> str:
    """A number for the URL: integers plainly, floats with the shortest exact repr."""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def parse_number(text: str, *, cell: bool) -> int | float:
    """A typed number. Accepts "−" (U+2212) for minus and, in a single cell, a decimal comma.

    Raises ValueError("nan") for NaN/infinity and ValueError("text") for anything else.
    """
    s = text.strip().replace("\u2212", "-")
    if cell:
        s = s.replace(",", ".")
    if s.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        raise ValueError("nan")
    if not _NUMBER.fullmatch(s):
        raise ValueError("text")
    v = float(s)
    if not math.isfinite(v):
        raise ValueError("nan")
    if "." not in s and "e" not in s.lower():
        return int(s)
    return v


def _as_array(values: list, shape: tuple) -> np.ndarray:
    """int64 when every value is whole (sums then print as integers), else float64."""
    a = np.array(values, dtype=np.float64).reshape(shape)
    if np.all(a == np.round(a)) and np.all(np.abs(a) < 2**53):
        a = a.astype(np.int64)
    a.flags.writeable = False
    return a


def _number_message(kind: str, text: str, where: str) -> str:
    if kind == "nan":
        return _("“%(value)s” is not allowed (%(where)s): enter a finite number, not NaN or infinity.") % {
            "value": text, "where": where}
    return _("“%(value)s” is not a number (%(where)s).") % {"value": text, "where": where}


def _checked_number(text: str, *, cell: bool, limit: float, field_name: str, where: Callable[[], str]) -> int | float:
    """``parse_number`` of one typed value within ±``limit``; a FieldError for ``field_name``
    naming the place (``where()``, worked out only for a message) otherwise."""
    try:
        v = parse_number(text, cell=cell)
    except ValueError as exc:
        raise FieldError(field_name, _number_message(str(exc), text.strip(), where())) from None
    if abs(v) > limit:
        raise FieldError(field_name, _("%(value)s is too large (%(where)s): values must be between −%(limit)s and %(limit)s.")
                         % {"value": text.strip(), "where": where(), "limit": limit})
    return v


def where_kernel(f: int, F: int, c: int, C: int, i: int, j: int) -> str:
    parts = []
    if F > 1:
        parts.append(_("filter %(n)s") % {"n": f + 1})
    if C > 1:
        parts.append(_("channel %(name)s") % {"name": CHANNEL_NAMES_RGB[c] if C == 3 else c + 1})
    parts.append(_("row %(row)s, column %(col)s") % {"row": i + 1, "col": j + 1})
    return _("kernel, %(place)s") % {"place": ", ".join(parts)}


# ------------------------------------------------------------------------------ text formats


def format_grid(a: np.ndarray) -> str:
    return ";".join(",".join(ascii_number(v) for v in row) for row in a.tolist())


def format_pointwise(p: np.ndarray) -> str:
    """(F, C) pointwise weights -> "1,1,1|1,0,-1" (filters separated by "|")."""
    return "|".join(",".join(ascii_number(v) for v in row) for row in p.tolist())


def format_kernel(k: np.ndarray, names: tuple = ()) -> str:
    """Filters joined by "|"; a filter whose channels are equal is written once (2-D), as a
    preset name when it equals one; otherwise its channels are joined by "/"."""
    filters = []
    for f in range(k.shape[0]):
        channels = k[f]
        same = all(np.array_equal(channels[0], channels[c]) for c in range(1, channels.shape[0]))
        if same:
            prefer = names[f] if f < len(names) else None
            name = kernels.preset_name(channels[0], prefer)
            filters.append(name or format_grid(channels[0]))
        else:
            filters.append("/".join(format_grid(ch) for ch in channels))
    return "|".join(filters)


def _parse_rows(text: str, what: Callable[[int, int], str], limit: float, field_name: str) -> np.ndarray:
    """"1,0,-1;2,0,-2" -> a (rows, cols) array; ``what(i, j)`` names a cell in messages."""
    rows = [r for r in text.split(";")]
    values: list = []
    width = None
    for i, row in enumerate(rows):
        cells = row.split(",")
        if width is None:
            width = len(cells)
        elif len(cells) != width:
            raise FieldError(field_name, _(
                "Row %(row)s has %(got)s values but row 1 has %(want)s: every row needs the same number of values."
            ) % {"row": i + 1, "got": len(cells), "want": width})
        for j, cell in enumerate(cells):
            if not cell.strip():
                raise FieldError(field_name, _("A value is missing (%(where)s).") % {"where": what(i, j)})
            values.append(_checked_number(cell, cell=False, limit=limit, field_name=field_name,
                                          where=lambda i=i, j=j: what(i, j)))
    return _as_array(values, (len(rows), width or 0))


def parse_kernel(text: str, C: int) -> tuple[np.ndarray, tuple]:
    """The ``kernel`` parameter -> ((F, C, HH, WW) array, preset name per filter).

    Format: filters separated by "|" (at most 4); within a filter, one kernel for every
    channel or one per channel separated by "/"; a kernel is a preset name or rows separated
    by ";" of values separated by ",".
    """
    text = text.strip()
    if not text:
        raise FieldError("kernel", _("The kernel is empty: choose a preset or type its values."))
    filter_texts = text.split("|")
    if len(filter_texts) > MAX_FILTERS:
        raise FieldError("kernel", _("There are %(n)s filters; at most %(max)s are allowed.")
                         % {"n": len(filter_texts), "max": MAX_FILTERS})
    F = len(filter_texts)
    filters, names = [], []
    for f, ftext in enumerate(filter_texts):
        channel_texts = ftext.split("/")
        if len(channel_texts) not in (1, C):
            raise FieldError("kernel", _(
                "Filter %(f)s has %(got)s channel kernels but the input has %(c)s channels: give one kernel for "
                "every channel, or one per channel."
            ) % {"f": f + 1, "got": len(channel_texts), "c": C})
        chans, name = [], None
        for c, ctext in enumerate(channel_texts):
            token = ctext.strip()
            if _NAME.fullmatch(token.lower()) and not _NUMBER.fullmatch(token):
                if token.lower() in ("nan", "inf", "infinity"):
                    raise FieldError("kernel", _number_message("nan", token, where_kernel(f, F, c, C, 0, 0)))
                if token.lower() not in kernels.PRESETS:
                    raise FieldError("kernel", _("There is no kernel preset called “%(name)s”.") % {"name": token})
                name = token.lower()
                chans.append(kernels.PRESETS[name])
            else:
                chans.append(_parse_rows(token, lambda i, j, f=f, c=c: where_kernel(f, F, c, C, i, j),
                                         MAX_ABS_WEIGHT, "kernel"))
        shapes = {ch.shape for ch in chans}
        if len(shapes) > 1:
            raise FieldError("kernel", _("The channel kernels of filter %(f)s have different sizes.") % {"f": f + 1})
        filters.append(np.stack(chans * (C if len(chans) == 1 else 1)))
        names.append(name if len(channel_texts) == 1 else None)
    shapes = [k.shape[-2:] for k in filters]
    if len(set(shapes)) > 1:
        raise FieldError("kernel", _("Every filter must have the same size: filter 1 is %(a)s, filter %(f)s is %(b)s.")
                         % {"a": _dims(shapes[0]), "f": next(i for i, s in enumerate(shapes) if s != shapes[0]) + 1,
                            "b": _dims(next(s for s in shapes if s != shapes[0]))})
    _check_kernel_size(shapes[0])
    return _as_array(np.stack(filters).tolist(), (F, C) + shapes[0]), tuple(names)


def _dims(shape) -> str:
    return f"{shape[0]}×{shape[1]}"


def _check_kernel_size(shape) -> None:
    if not (1 <= shape[0] <= MAX_KERNEL and 1 <= shape[1] <= MAX_KERNEL):
        raise FieldError("kernel", _("The kernel is %(dims)s; a kernel can be from 1×1 up to %(max)s×%(max)s.")
                         % {"dims": _dims(shape), "max": MAX_KERNEL})


# ------------------------------------------------------------------------------ reading a request


def _int_field(raw: Mapping[str, str], name: str, lo: int, hi: int, default: int, message: str) -> int:
    text = raw.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        v = parse_number(text, cell=False)
    except ValueError:
        v = None
    if not isinstance(v, int) or not lo <= v <= hi:
        raise FieldError(name, _(message) % {"min": lo, "max": hi, "value": text})
    return v


def read_state(params: Mapping[str, str], settings: Settings) -> Parsed:
    """Check every parameter; a bad one falls back to its default and leaves a message."""
    raw = {k: v for k, v in params.items()}
    errors: dict[str, str] = {}
    parsed = Parsed(state=ConvState(), errors=errors, raw=raw)
    values: dict[str, Any] = {}

    def attempt(fn: Callable[[], Any], default: Any = None) -> Any:
        try:
            return fn()
        except FieldError as exc:
            errors.setdefault(exc.field, exc.message)
            return default

    # ---- the kind of convolution: it decides the defaults of the input and the kernel
    op = (raw.get("kind") or "conv").strip()
    if op not in KINDS:
        errors["kind"] = _("There is no kind of convolution called “%(name)s”: choose conv, pointwise, separable or "
                           "transposed.") % {"name": op[:40]}
        op = "conv"
    values["op"] = op
    _switch_kind(raw, op)

    # ---- the input
    default_input = "seed3" if op in ("pointwise", "separable") else "seed"
    kind, image, grid = attempt(lambda: _read_source(raw, parsed, default_input), (default_input, None, None))
    values.update(kind=kind, image=image, grid=grid)
    values["size"] = attempt(lambda: _int_field(raw, "size", MIN_SIZE, MAX_SIZE, DEFAULT_SIZE, N_(
        "The working size must be a whole number from %(min)s to %(max)s pixels.")), DEFAULT_SIZE)
    color = raw.get("color", "gray") or "gray"
    if color not in ("gray", "rgb"):
        errors["color"] = _("The colour must be “gray” or “rgb”.")
        color = "gray"
    values["color"] = color
    C = 3 if (kind == "image" and color == "rgb") or kind == "seed3" else 1

    # ---- the kernel and bias
    if op != "conv" and not raw.get("kernel") and not any(_CELL_W.fullmatch(k) for k in raw):
        raw["kernel"] = DEFAULT_KERNELS[op][C == 3]
    fallback = (kernels.SEED_KERNEL[None, None].repeat(C, 1), ("seed",))
    if op != "conv":
        fallback = parse_kernel(DEFAULT_KERNELS[op][C == 3], C)
    kernel, names = attempt(lambda: _check_kind_kernel(op, *_read_kernel(raw, C, parsed)), fallback)
    values.update(kernel=kernel, names=names)
    F = kernel.shape[0]
    if op == "separable":
        pointwise = attempt(lambda: _read_pointwise(raw, C), _parse_pointwise(DEFAULT_POINTWISE[C == 3], C))
        values["pointwise"] = pointwise
        values["dbias"] = attempt(lambda: _read_dbias(raw, C))
        F = pointwise.shape[0]
    values["bias"] = attempt(lambda: _read_bias(raw, F, parsed))

    # ---- where the kernel goes
    values["stride"] = attempt(lambda: _int_field(raw, "stride", 1, MAX_STRIDE, 1, N_(
        "The stride must be a whole number from %(min)s to %(max)s.")), 1)
    values["dilation"] = attempt(lambda: _int_field(raw, "dilation", 1, MAX_DILATION, 1, N_(
        "The dilation must be a whole number from %(min)s to %(max)s.")), 1)
    values["padding"] = attempt(lambda: _read_padding(raw), "valid")
    mode = raw.get("mode", "xcorr") or "xcorr"
    if mode not in MODES:
        errors["mode"] = _("The operation must be “xcorr” (cross-correlation) or “conv” (convolution).")
        mode = "xcorr"
    values["mode"] = mode
    relu = (raw.get("relu") or "").lower()
    if relu not in ("", "0", "1", "on", "true", "false", "off"):
        errors["relu"] = _("ReLU must be on (1) or off (0).")
    values["relu"] = relu in ("1", "on", "true")
    if op in ("separable", "transposed"):
        if values["mode"] != "xcorr":
            errors["mode"] = _("This kind of convolution is shown as cross-correlation only (as PyTorch computes it).")
            values["mode"] = "xcorr"
        if values["relu"]:
            errors["relu"] = _("ReLU is offered for the ordinary and the 1×1 convolution only.")
            values["relu"] = False
    if op == "transposed":
        if values["padding"] == "same":
            errors["padding"] = _("The transposed convolution takes a padding from 0 to %(max)s (“same” is for the "
                                  "ordinary convolution).") % {"max": MAX_PADDING}
            values["padding"] = "valid"
        if values["dilation"] != 1:
            errors["dilation"] = _("The transposed convolution is shown without dilation: use 1.")
            values["dilation"] = 1

    state = ConvState(**values)
    parsed.state = state

    # ---- the pixels, then whether the kernel fits, then the step
    if "input" not in errors and "grid" not in errors:
        parsed.x = attempt(lambda: working_array(state, settings, "work"))
    if parsed.x is not None and not {"kernel", "stride", "dilation", "padding"} & errors.keys():
        _check_fit(parsed)
    if parsed.geometry is not None:
        attempt(lambda: _check_budget(parsed, settings))
    steps = None
    if parsed.geometry is not None:
        steps = step_count(state, parsed.x, parsed.geometry)
    step = attempt(lambda: _read_step(raw, steps), 0)
    parsed.state = replace(state, step=step)
    return parsed


def _read_source(raw: Mapping[str, str], parsed: Parsed, default: str = "seed") -> tuple[str, str | None, np.ndarray | None]:
    source = raw.get("source")
    if source is not None:
        if source == "seed" or (source == "seed3" and default == "seed3"):
            return source, None, None
        if source == "grid":
            return "grid", None, _read_grid(raw, parsed, default=kernels.SEED_INPUT)
        if source.startswith("image:"):
            return "image", _check_image_id(source[6:]), None
        raise FieldError("input", _("Choose an input from the list."))
    if raw.get("image"):
        return "image", _check_image_id(raw["image"]), None
    if raw.get("grid") is not None or any(_CELL_G.fullmatch(k) for k in raw):
        return "grid", None, _read_grid(raw, parsed, default=kernels.SEED_INPUT)
    preset = raw.get("preset", default) or default
    if default == "seed3":  # the 1×1 and separable convolutions also have a three-channel example
        if preset not in ("seed", "seed3"):
            raise FieldError("input", _("There is no input preset called “%(name)s”; there are “seed” and “seed3”.")
                             % {"name": preset[:40]})
    elif preset != "seed":
        raise FieldError("input", _("There is no input preset called “%(name)s”; the only one is “seed”.") % {"name": preset})
    return preset, None, None


def _check_image_id(image_id: str) -> str:
    if not images.is_image_id(image_id):
        raise FieldError("input", _("There is no image called “%(id)s”. Choose a sample or upload a picture.")
                         % {"id": image_id[:40]})
    return image_id


def _read_grid(raw: Mapping[str, str], parsed: Parsed, default: np.ndarray) -> np.ndarray:
    cells = {(int(m[1]), int(m[2])): v for k, v in raw.items() if (m := _CELL_G.fullmatch(k))}
    where = lambda i, j: _("input grid, row %(row)s, column %(col)s") % {"row": i + 1, "col": j + 1}  # noqa: E731
    if cells:
        parsed.grid_cells = cells
        h = max(i for i, _j in cells) + 1
        w = max(j for _i, j in cells) + 1
        if h > MAX_GRID or w > MAX_GRID:
            raise FieldError("grid", _("A typed grid can be at most %(max)s×%(max)s.") % {"max": MAX_GRID})
        values = [[0] * w for _r in range(h)]
        for (i, j), text in cells.items():
            if not text.strip():
                continue
            values[i][j] = _checked_number(text, cell=True, limit=MAX_ABS_INPUT, field_name="grid",
                                           where=lambda i=i, j=j: where(i, j))
        grid = _as_array(values, (h, w))
    elif raw.get("grid"):
        grid = _parse_rows(raw["grid"], where, MAX_ABS_INPUT, "grid")
    else:
        grid = default
    rows = _int_field(raw, "grid_rows", 1, MAX_GRID, grid.shape[0], N_(
        "The grid can have from %(min)s to %(max)s rows."))
    cols = _int_field(raw, "grid_cols", 1, MAX_GRID, grid.shape[1], N_(
        "The grid can have from %(min)s to %(max)s columns."))
    if (rows, cols) != grid.shape:
        # Growing keeps the typed values top-left and fills with zeros.
        out = np.zeros((rows, cols), dtype=grid.dtype)
        h, w = min(rows, grid.shape[0]), min(cols, grid.shape[1])
        out[:h, :w] = grid[:h, :w]
        grid = out
    if grid.shape[0] > MAX_GRID or grid.shape[1] > MAX_GRID:
        raise FieldError("grid", _("A typed grid can be at most %(max)s×%(max)s.") % {"max": MAX_GRID})
    grid = grid.copy()
    grid.flags.writeable = False
    return grid


def _read_kernel(raw: Mapping[str, str], C: int, parsed: Parsed) -> tuple[np.ndarray, tuple]:
    """The kernel: the editor's cells when the form sent them, else the ``kernel`` text; then
    the editor's size, filter count, preset and random choices, in that order."""
    prev_names: tuple = ()
    base = None
    if raw.get("kernel"):
        try:
            base, prev_names = parse_kernel(raw["kernel"], C)
        except FieldError:
            if not any(_CELL_W.fullmatch(k) for k in raw):
                raise
    cells = {tuple(int(g) for g in m.groups()): v for k, v in raw.items() if (m := _CELL_W.fullmatch(k))}
    from_form = bool(cells)
    if cells:
        parsed.kernel_cells = cells
        F = max(k[0] for k in cells) + 1
        Cc = max(k[1] for k in cells) + 1
        HH = max(k[2] for k in cells) + 1
        WW = max(k[3] for k in cells) + 1
        if F > MAX_FILTERS:
            raise FieldError("kernel", _("There are %(n)s filters; at most %(max)s are allowed.") % {"n": F, "max": MAX_FILTERS})
        _check_kernel_size((HH, WW))
        values = np.zeros((F, Cc, HH, WW)).tolist()
        for (f, c, i, j), text in cells.items():
            if not text.strip():
                continue
            values[f][c][i][j] = _checked_number(text, cell=True, limit=MAX_ABS_WEIGHT, field_name="kernel",
                                                 where=lambda f=f, c=c, i=i, j=j: where_kernel(f, F, c, Cc, i, j))
        k = np.array(_as_array(values, (F, Cc, HH, WW)))
        names = prev_names
    elif base is not None:
        k, names = np.array(base), prev_names
    else:
        k, names = np.array(kernels.SEED_KERNEL[None, None]), ("seed",)

    # The form adapts the kernel to a changed colour setting; a typed URL must match it.
    if k.shape[1] != C:
        if k.shape[1] == 1:
            k = np.repeat(k, C, axis=1)
        elif from_form:
            k = k[:, :1].repeat(C, axis=1)
        else:
            raise FieldError("kernel", _("The kernel has %(k)s channels but the input has %(c)s.") % {"k": k.shape[1], "c": C})

    ksize = raw.get("ksize")
    if ksize:
        K = _int_field(raw, "ksize", 1, MAX_KERNEL, 3, N_("The kernel size must be from %(min)s to %(max)s."))
        if k.shape[-2:] != (K, K):
            k = kernels.resize_kernel(k, K, K)
            names = ()
    F_wanted = _int_field(raw, "filters", 1, MAX_FILTERS, k.shape[0], N_(
        "The number of filters must be from %(min)s to %(max)s.")) if raw.get("filters") else k.shape[0]
    if F_wanted < k.shape[0]:
        k, names = k[:F_wanted], tuple(names[:F_wanted])
    elif F_wanted > k.shape[0]:
        # A new filter starts as a random one: something to look at, reproducible.
        extra = [np.broadcast_to(kernels.random_kernel(100 + f, k.shape[-2:]), k.shape[1:]) for f in range(k.shape[0], F_wanted)]
        k = np.concatenate([k, np.stack(extra).astype(k.dtype if k.dtype.kind == "f" else np.int64)])
    for f in range(k.shape[0]):
        choice = raw.get(f"use_{f}")
        if not choice:
            continue
        if choice not in kernels.PRESETS:
            raise FieldError("kernel", _("There is no kernel preset called “%(name)s”.") % {"name": choice})
        previous = prev_names[f] if f < len(prev_names) else None
        if from_form and choice == previous:
            continue  # the menu still shows the current preset: nothing was chosen
        p = kernels.preset(choice)
        if k.shape[0] == 1:
            k = np.broadcast_to(p, (1, k.shape[1]) + p.shape).copy()
        else:
            k = k.astype(np.result_type(k, p))
            k[f] = kernels.resize_kernel(p, *k.shape[-2:])
        names = tuple((choice if g == f else (names[g] if g < len(names) else None)) for g in range(k.shape[0]))
    if raw.get("random"):
        seed = _int_field(raw, "random", 0, 2**31 - 1, 0, N_("The random seed must be a whole number from %(min)s to %(max)s."))
        k = kernels.random_kernel(seed, k.shape)
        names = ()
    _check_kernel_size(k.shape[-2:])
    k = np.ascontiguousarray(k)
    if k.dtype.kind == "f" and np.all(k == np.round(k)):
        k = k.astype(np.int64)
    k.flags.writeable = False
    return k, _names_for(k, names)


def _names_for(k: np.ndarray, prefer: tuple) -> tuple:
    names = []
    for f in range(k.shape[0]):
        same = all(np.array_equal(k[f, 0], k[f, c]) for c in range(1, k.shape[1]))
        names.append(kernels.preset_name(k[f, 0], prefer[f] if f < len(prefer) else None) if same else None)
    return tuple(names)


def _read_bias(raw: Mapping[str, str], F: int, parsed: Parsed) -> tuple | None:
    cells = {int(k[2:]): v for k, v in raw.items() if re.fullmatch(r"b_\d", k)}
    if cells:
        parsed.bias_cells = [cells.get(f, "") for f in range(max(cells) + 1)]
        texts = [cells.get(f, "") for f in range(F)]
        cell = True
    else:
        text = (raw.get("bias") or "").strip()
        if not text:
            return None
        texts = text.split(",")
        if len(texts) == 1:
            texts = texts * F
        if len(texts) != F:
            raise FieldError("bias", _("Give one bias for every filter (%(f)s), or one for all of them.") % {"f": F})
        cell = False
    if not any(t.strip() for t in texts):
        return None
    out = []
    for f, t in enumerate(texts):
        if not t.strip():
            out.append(0)
            continue
        out.append(_checked_number(t, cell=cell, limit=MAX_ABS_INPUT, field_name="bias",
                                   where=lambda f=f: _("bias of filter %(f)s") % {"f": f + 1}))
    return tuple(out)


def _read_padding(raw: Mapping[str, str]) -> str | int:
    text = (raw.get("padding") or "valid").strip().lower()
    if text in ("valid", "same"):
        return text
    try:
        v = parse_number(text, cell=False)
    except ValueError:
        v = None
    if not isinstance(v, int) or not 0 <= v <= MAX_PADDING:
        raise FieldError("padding", _("The padding must be “valid”, “same” or a whole number from 0 to %(max)s.")
                         % {"max": MAX_PADDING})
    return "valid" if v == 0 else v


def _read_step(raw: Mapping[str, str], steps: int | None) -> int:
    text = raw.get("step")
    if text is None or text.strip() == "":
        return 0
    try:
        v = parse_number(text, cell=False)
    except ValueError:
        v = None
    if not isinstance(v, int) or v < 0:
        raise FieldError("step", _("The step must be a whole number, 0 or more."))
    if steps is not None and v >= steps:
        raise FieldError("step", _("There is no step %(step)s: with these settings there are %(n)s steps, numbered 0 to %(last)s.")
                         % {"step": v, "n": steps, "last": steps - 1})
    return v


def _check_fit(parsed: Parsed) -> None:
    s = parsed.state
    _C, H, W = parsed.x.shape
    HH, WW = s.kernel.shape[-2:]
    if s.op == "transposed":
        P = 0 if s.padding == "valid" else s.padding
        Ho, Wo = (H - 1) * s.stride - 2 * P + HH, (W - 1) * s.stride - 2 * P + WW
        if Ho < 1 or Wo < 1 or max(Ho, Wo) > MAX_TRANSPOSED_SIDE:
            parsed.fit = fit_report(s, H, W)
            parsed.errors["fit"] = parsed.fit["sentence"]
        else:
            parsed.geometry = SimpleNamespace(Ho=Ho, Wo=Wo, padding=((P, P), (P, P)), stride=(s.stride, s.stride))
        return
    try:
        parsed.geometry = conv_geometry(H, W, HH, WW, s.stride, s.padding, s.dilation)
    except OutputSizeError:
        parsed.fit = fit_report(s, H, W)
        parsed.errors["fit"] = parsed.fit["sentence"]


def _check_budget(parsed: Parsed, settings: Settings) -> None:
    """The page draws every filter's map at full resolution (the stored picture, not the
    working size): that computation must be within the limits of app/budget.py."""
    s = parsed.state
    C, H, W = parsed.x.shape
    if s.op == "transposed":
        return  # computed at the working size only, its output side already bounded
    if s.kind == "image":
        try:
            info = images.image_info(s.image, settings)
        except images.ImageError as exc:
            raise FieldError("input", exc.message) from None
        H, W = info.height, info.width
    HH, WW = s.kernel.shape[-2:]
    try:
        budget.check_conv(budget.conv_cost(C, H, W, s.F, HH, WW, s.stride, s.padding, s.dilation), settings,
                          answer_values=False)
    except budget.BudgetError as exc:
        raise FieldError("kernel", exc.message) from None


def fit_report(s: ConvState, H: int, W: int) -> dict:
    """The output-size formula for rows and columns with the numbers filled in, and a plain
    sentence when the kernel does not fit."""
    HH, WW = s.kernel.shape[-2:]
    if s.op == "transposed":
        return _transposed_fit_report(s, H, W)
    pad_rows = resolve_padding(s.padding, HH, s.dilation, s.stride, H)
    pad_cols = resolve_padding(s.padding, WW, s.dilation, s.stride, W)
    rows = output_size_formula(H, HH, s.stride, pad_rows, s.dilation)
    cols = output_size_formula(W, WW, s.stride, pad_cols, s.dilation)
    sentence = ""
    for n, k, pad, axis in ((H, HH, pad_rows, "rows"), (W, WW, pad_cols, "cols")):
        span = s.dilation * (k - 1) + 1
        if span > n + pad[0] + pad[1]:
            message = (N_("The kernel does not fit: with dilation %(d)s it covers %(span)s rows, but the padded input has only "
                          "%(padded)s (%(n)s + padding %(p)s). Use a smaller kernel or dilation, or more padding.")
                       if axis == "rows" else
                       N_("The kernel does not fit: with dilation %(d)s it covers %(span)s columns, but the padded input has only "
                          "%(padded)s (%(n)s + padding %(p)s). Use a smaller kernel or dilation, or more padding."))
            sentence = _(message) % {"d": s.dilation, "span": span, "padded": n + pad[0] + pad[1], "n": n, "p": pad[0] + pad[1]}
            break
    return {"rows": rows, "cols": cols, "sentence": sentence, "pad_rows": pad_rows, "pad_cols": pad_cols}

def _transposed_fit_report(s: ConvState, H: int, W: int) -> dict:
    """Ho = (H − 1)·S − 2P + K with the numbers, and a sentence when it is below 1 or too large."""
    HH, WW = s.kernel.shape[-2:]
    P = 0 if s.padding == "valid" else s.padding
    rows = transpose_output_size_formula(H, HH, s.stride, P)
    cols = transpose_output_size_formula(W, WW, s.stride, P)
    Ho, Wo = (H - 1) * s.stride - 2 * P + HH, (W - 1) * s.stride - 2 * P + WW
    sentence = ""
    if min(Ho, Wo) < 1:
        sentence = _("The padding cuts away the whole output: %(p)s rows and columns are removed on every side of "
                     "an output of %(full)s. Use less padding or a larger kernel or stride.") % {
            "p": P, "full": f"{(H - 1) * s.stride + HH}×{(W - 1) * s.stride + WW}"}
    elif max(Ho, Wo) > MAX_TRANSPOSED_SIDE:
        sentence = _("The output would be %(h)s×%(w)s; the stepper shows at most %(max)s rows and columns. Use a "
                     "smaller stride, kernel or working size.") % {"h": Ho, "w": Wo, "max": MAX_TRANSPOSED_SIDE}
    return {"rows": rows, "cols": cols, "sentence": sentence, "pad_rows": (P, P), "pad_cols": (P, P),
            "transposed": True}


def step_count(state: ConvState, x: np.ndarray, geometry: Any) -> int:
    """How many steps the stepper has: one per output value (conv, 1×1), per depthwise then
    pointwise value (separable), per input value and output map (transposed)."""
    C, H, W = x.shape
    if state.op == "separable":
        return (C + state.F) * geometry.Ho * geometry.Wo
    if state.op == "transposed":
        return state.F * C * H * W
    return state.F * geometry.Ho * geometry.Wo


# ------------------------------------------------------------------------------ the other kinds

# Default kernels per kind, for (one channel, three channels).
DEFAULT_KERNELS = {
    "pointwise": {False: "2|-1", True: "1/1/1|1/0/-1"},
    "separable": {False: "sobel_x", True: "sobel_x/sobel_y/laplacian"},
    "transposed": {False: "1,2,1;2,4,2;1,2,1", True: "1,2,1;2,4,2;1,2,1"},
}
DEFAULT_POINTWISE = {False: "1|-1", True: "1,1,1|1,0,-1"}
# What a change of kind in the form drops: the previous kind's kernel and the settings the
# new kind may not take; the input, stride and padding stay.
_KIND_SWITCH_DROPS = re.compile(r"(kernel|bias|dbias|pointwise|ksize|filters|random|dilation|mode|relu|use_\d+|b_\d+|"
                                r"w_\d+_\d+_\d+_\d+)")


def _switch_kind(raw: dict[str, str], op: str) -> None:
    """The form sends the kind it showed (``kind_was``): when the kind changed, the new kind
    starts from its own kernel and useful settings (a three-channel input for the 1×1 and the
    separable convolution, stride 2 and padding 1 for the transposed one)."""
    was = raw.get("kind_was")
    if was is None or was == op or was not in KINDS:
        return
    for name in [k for k in raw if _KIND_SWITCH_DROPS.fullmatch(k)]:
        del raw[name]
    if op in ("pointwise", "separable") and raw.get("source") == "seed":
        raw["source"] = "seed3"
    elif op in ("conv", "transposed") and raw.get("source") == "seed3":
        raw["source"] = "seed"
    if op == "transposed":
        raw["stride"], raw["padding"] = "2", "1"
    elif was == "transposed":
        raw["stride"], raw["padding"] = "1", "valid"


def _check_kind_kernel(op: str, k: np.ndarray, names: tuple) -> tuple[np.ndarray, tuple]:
    if op == "pointwise" and k.shape[-2:] != (1, 1):
        raise FieldError("kernel", _("A 1×1 convolution has 1×1 kernels (one weight per channel); this kernel is "
                                     "%(dims)s.") % {"dims": _dims(k.shape[-2:])})
    if op == "separable" and k.shape[0] != 1:
        raise FieldError("kernel", _("The depthwise step has one kernel per channel: give one filter (its channel "
                                     "kernels separated by “/”), not %(n)s.") % {"n": k.shape[0]})
    return k, names


def _parse_pointwise(text: str, C: int) -> np.ndarray:
    rows = [r for r in text.strip().split("|")]
    if len(rows) > MAX_FILTERS:
        raise FieldError("pointwise", _("There are %(n)s filters; at most %(max)s are allowed.")
                         % {"n": len(rows), "max": MAX_FILTERS})
    values = []
    for f, row in enumerate(rows):
        cells = row.split(",")
        if len(cells) != C:
            raise FieldError("pointwise", _("Pointwise filter %(f)s has %(got)s weights but the input has %(c)s "
                                            "channels: give one weight per channel.") % {"f": f + 1, "got": len(cells), "c": C})
        for c, cell in enumerate(cells):
            where = lambda f=f, c=c: _("pointwise filter %(f)s, weight %(c)s") % {"f": f + 1, "c": c + 1}  # noqa: E731
            if not cell.strip():
                raise FieldError("pointwise", _("A value is missing (%(where)s).") % {"where": where()})
            values.append(_checked_number(cell, cell=False, limit=MAX_ABS_WEIGHT, field_name="pointwise", where=where))
    return _as_array(values, (len(rows), C))


def _read_pointwise(raw: Mapping[str, str], C: int) -> np.ndarray:
    text = (raw.get("pointwise") or "").strip()
    return _parse_pointwise(text or DEFAULT_POINTWISE[C == 3], C)


def _read_dbias(raw: Mapping[str, str], C: int) -> tuple | None:
    text = (raw.get("dbias") or "").strip()
    if not text:
        return None
    texts = text.split(",")
    if len(texts) == 1:
        texts = texts * C
    if len(texts) != C:
        raise FieldError("dbias", _("Give one depthwise bias for every channel (%(c)s), or one for all of them.") % {"c": C})
    return tuple(_checked_number(t, cell=False, limit=MAX_ABS_INPUT, field_name="dbias",
                                 where=lambda c=c: _("depthwise bias of channel %(c)s") % {"c": c + 1})
                 for c, t in enumerate(texts))


def working_array(state: ConvState, settings: Settings, res: str) -> np.ndarray:
    """The input x (C, H, W): the working-size array (res "work") the stepper steps over, or
    the stored picture (res "full") the full-resolution result is computed on."""
    if state.kind == "seed":
        return kernels.SEED_INPUT[None]
    if state.kind == "seed3":
        return SEED3_INPUT
    if state.kind == "grid":
        return state.grid[None]
    try:
        return images.image_array(state.image, settings, state.size if res == "work" else None, state.color)
    except images.ImageError as exc:
        raise FieldError("input", exc.message) from None
