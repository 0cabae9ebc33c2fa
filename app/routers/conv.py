"""The convolution stepper: a kernel stepping across the seed's matrix, a typed grid or a
picture, every dot product written out (lesson sections 3 and 4).

The whole view lives in the URL, so every view is a link (see ``conv_page`` for the
format). One URL answers three ways:

- a normal request: the full page;
- an htmx request aimed at ``#conv-stepper`` (a step: next, previous, a clicked output
  cell): only the stepper, which is one ``conv_step`` on the working-size array plus a
  lookup in a cached feature map;
- any other htmx request (a changed setting): the stepper, the settings and the pictures
  (``#conv-lab``), with ``HX-Push-Url`` set to the tidy (canonical) address.

Bad values never give a 500: the page is rendered (status 200, so htmx swaps it) with a
translated message next to the control, and a kernel that does not fit gets the output-size
formula with the numbers filled in.
"""

from __future__ import annotations

import math
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlencode

import numpy as np
from fastapi import APIRouter, Depends, Request
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app import images
from app.errors import InputError
from app.i18n import N_, gettext as _
from app.lesson import SECTIONS, is_served
from app.settings import Settings, get_settings, settings_for
from app.templating import add_vary, render, wants_fragment
from core import kernels
from core.conv import (
    OutputSizeError,
    conv_forward,
    conv_geometry,
    conv_step,
    format_factor,
    format_number,
    output_size_formula,
    resolve_padding,
)

router = APIRouter(tags=["conv"])

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
CHUNK_BYTES = 64 * 1024
FORM_OVERHEAD_BYTES = 16 * 1024

MODES = {"xcorr": "cross-correlation", "conv": "convolution"}
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
_FORM_ONLY = re.compile(r"(source|ksize|filters|random|grid_rows|grid_cols|use_\d+|b_\d+|w_\d+_\d+_\d+_\d+|g_\d+_\d+)")
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

    kind: "seed" | "grid" | "image"; image: sample name or upload id; grid: (h, w) typed
    values; size: working size (longest side, images only); color: "gray" | "rgb";
    kernel: (F, C, HH, WW); names: per filter, the preset it equals (or None);
    bias: F numbers or None; padding: "valid" | "same" | int; mode: "xcorr" | "conv".
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

    @property
    def channels(self) -> int:
        return 3 if self.kind == "image" and self.color == "rgb" else 1

    @property
    def F(self) -> int:
        return self.kernel.shape[0]

    def pairs(self) -> list[tuple[str, str]]:
        """The canonical query parameters, step excluded (defaults left out)."""
        out: list[tuple[str, str]] = []
        if self.kind == "seed":
            out.append(("preset", "seed"))
        elif self.kind == "grid":
            out.append(("grid", format_grid(self.grid)))
        else:
            out += [("image", self.image), ("size", str(self.size)), ("color", self.color)]
        out.append(("kernel", format_kernel(self.kernel, self.names)))
        if self.bias is not None:
            out.append(("bias", ",".join(_ascii_number(b) for b in self.bias)))
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
        if self.kind == "seed":
            return ("seed",)
        if self.kind == "grid":
            return ("grid", self.grid.shape, self.grid.dtype.str, self.grid.tobytes())
        return ("image", self.image, self.size if res == "work" else None, self.color)

    def compute_key(self, res: str) -> tuple:
        k = self.kernel
        return (self.source_key(res), k.shape, k.dtype.str, k.tobytes(), self.bias, self.stride,
                self.padding, self.dilation, self.mode)


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


def _ascii_number(v: float | int) -> str:
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


def _where_kernel(f: int, F: int, c: int, C: int, i: int, j: int) -> str:
    parts = []
    if F > 1:
        parts.append(_("filter %(n)s") % {"n": f + 1})
    if C > 1:
        parts.append(_("channel %(name)s") % {"name": CHANNEL_NAMES_RGB[c] if C == 3 else c + 1})
    parts.append(_("row %(row)s, column %(col)s") % {"row": i + 1, "col": j + 1})
    return _("kernel, %(place)s") % {"place": ", ".join(parts)}


# ------------------------------------------------------------------------------ text formats


def format_grid(a: np.ndarray) -> str:
    return ";".join(",".join(_ascii_number(v) for v in row) for row in a.tolist())


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
            try:
                v = parse_number(cell, cell=False)
            except ValueError as exc:
                raise FieldError(field_name, _number_message(str(exc), cell.strip(), what(i, j))) from None
            if abs(v) > limit:
                raise FieldError(field_name, _("%(value)s is too large (%(where)s): values must be between −%(limit)s and %(limit)s.")
                                 % {"value": cell.strip(), "where": what(i, j), "limit": limit})
            values.append(v)
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
                    raise FieldError("kernel", _number_message("nan", token, _where_kernel(f, F, c, C, 0, 0)))
                if token.lower() not in kernels.PRESETS:
                    raise FieldError("kernel", _("There is no kernel preset called “%(name)s”.") % {"name": token})
                name = token.lower()
                chans.append(kernels.PRESETS[name])
            else:
                chans.append(_parse_rows(token, lambda i, j, f=f, c=c: _where_kernel(f, F, c, C, i, j),
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

    # ---- the input
    kind, image, grid = attempt(lambda: _read_source(raw, parsed), ("seed", None, None))
    values.update(kind=kind, image=image, grid=grid)
    values["size"] = attempt(lambda: _int_field(raw, "size", MIN_SIZE, MAX_SIZE, DEFAULT_SIZE, N_(
        "The working size must be a whole number from %(min)s to %(max)s pixels.")), DEFAULT_SIZE)
    color = raw.get("color", "gray") or "gray"
    if color not in ("gray", "rgb"):
        errors["color"] = _("The colour must be “gray” or “rgb”.")
        color = "gray"
    values["color"] = color
    C = 3 if kind == "image" and color == "rgb" else 1

    # ---- the kernel and bias
    kernel, names = attempt(lambda: _read_kernel(raw, C, parsed), (kernels.SEED_KERNEL[None, None].repeat(C, 1), ("seed",)))
    values.update(kernel=kernel, names=names)
    values["bias"] = attempt(lambda: _read_bias(raw, kernel.shape[0], parsed))

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

    state = ConvState(**values)
    parsed.state = state

    # ---- the pixels, then whether the kernel fits, then the step
    if "input" not in errors and "grid" not in errors:
        parsed.x = attempt(lambda: working_array(state, settings, "work"))
    if parsed.x is not None and not {"kernel", "stride", "dilation", "padding"} & errors.keys():
        _check_fit(parsed)
    steps = None
    if parsed.geometry is not None:
        steps = state.F * parsed.geometry.Ho * parsed.geometry.Wo
    step = attempt(lambda: _read_step(raw, steps), 0)
    parsed.state = replace(state, step=step)
    return parsed


def _read_source(raw: Mapping[str, str], parsed: Parsed) -> tuple[str, str | None, np.ndarray | None]:
    source = raw.get("source")
    if source is not None:
        if source == "seed":
            return "seed", None, None
        if source == "grid":
            return "grid", None, _read_grid(raw, parsed, default=kernels.SEED_INPUT)
        if source.startswith("image:"):
            return "image", _check_image_id(source[6:]), None
        raise FieldError("input", _("Choose an input from the list."))
    if raw.get("image"):
        return "image", _check_image_id(raw["image"]), None
    if raw.get("grid") is not None or any(_CELL_G.fullmatch(k) for k in raw):
        return "grid", None, _read_grid(raw, parsed, default=kernels.SEED_INPUT)
    preset = raw.get("preset", "seed") or "seed"
    if preset != "seed":
        raise FieldError("input", _("There is no input preset called “%(name)s”; the only one is “seed”.") % {"name": preset})
    return "seed", None, None


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
            try:
                v = parse_number(text, cell=True)
            except ValueError as exc:
                raise FieldError("grid", _number_message(str(exc), text.strip(), where(i, j))) from None
            if abs(v) > MAX_ABS_INPUT:
                raise FieldError("grid", _("%(value)s is too large (%(where)s): values must be between −%(limit)s and %(limit)s.")
                                 % {"value": text.strip(), "where": where(i, j), "limit": MAX_ABS_INPUT})
            values[i][j] = v
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
            try:
                v = parse_number(text, cell=True)
            except ValueError as exc:
                raise FieldError("kernel", _number_message(str(exc), text.strip(), _where_kernel(f, F, c, Cc, i, j))) from None
            if abs(v) > MAX_ABS_WEIGHT:
                raise FieldError("kernel", _("%(value)s is too large (%(where)s): values must be between −%(limit)s and %(limit)s.")
                                 % {"value": text.strip(), "where": _where_kernel(f, F, c, Cc, i, j), "limit": MAX_ABS_WEIGHT})
            values[f][c][i][j] = v
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
        where = _("bias of filter %(f)s") % {"f": f + 1}
        if not t.strip():
            out.append(0)
            continue
        try:
            v = parse_number(t, cell=cell)
        except ValueError as exc:
            raise FieldError("bias", _number_message(str(exc), t.strip(), where)) from None
        if abs(v) > MAX_ABS_INPUT:
            raise FieldError("bias", _("%(value)s is too large (%(where)s): values must be between −%(limit)s and %(limit)s.")
                             % {"value": t.strip(), "where": where, "limit": MAX_ABS_INPUT})
        out.append(v)
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
    try:
        parsed.geometry = conv_geometry(H, W, HH, WW, s.stride, s.padding, s.dilation)
    except OutputSizeError:
        parsed.fit = fit_report(s, H, W)
        parsed.errors["fit"] = parsed.fit["sentence"]


def fit_report(s: ConvState, H: int, W: int) -> dict:
    """The output-size formula for rows and columns with the numbers filled in, and a plain
    sentence when the kernel does not fit."""
    HH, WW = s.kernel.shape[-2:]
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


# ============================================================================== arrays and caches


class _LRU:
    """A thread-safe least-recently-used map bounded by the bytes of its values (arrays or
    bytes, or what ``size`` says): a full-resolution feature map of a large upload can weigh
    tens of megabytes."""

    def __init__(self, max_bytes: int, size: Callable[[Any], int] | None = None) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        if size is not None:
            self._size = size

    @staticmethod
    def _size(value: Any) -> int:
        return value.nbytes if isinstance(value, np.ndarray) else len(value)

    def get_or_make(self, key: tuple, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        # Made outside the lock: two requests may both compute it once, never block each other.
        value = make()
        size = self._size(value)
        if size > self.max_bytes:
            return value
        with self._lock:
            if key not in self._items:
                self._items[key] = value
                self._bytes += size
            while self._bytes > self.max_bytes:
                _key, evicted = self._items.popitem(last=False)
                self._bytes -= self._size(evicted)
        return value


_maps = _LRU(192 * 1024 * 1024)
_pngs = _LRU(48 * 1024 * 1024)
# Formatting a number costs a few microseconds and a grid holds hundreds of them, the same
# at every step of a view; each kept text is counted as 64 bytes.
TEXT_BYTES = 64
_texts = _LRU(16 * 1024 * 1024, size=lambda texts: TEXT_BYTES * texts["count"])


def working_array(state: ConvState, settings: Settings, res: str) -> np.ndarray:
    """The input x (C, H, W): the working-size array (res "work") the stepper steps over, or
    the stored picture (res "full") the full-resolution result is computed on."""
    if state.kind == "seed":
        return kernels.SEED_INPUT[None]
    if state.kind == "grid":
        return state.grid[None]
    try:
        return images.image_array(state.image, settings, state.size if res == "work" else None, state.color)
    except images.ImageError as exc:
        raise FieldError("input", exc.message) from None


def feature_map(state: ConvState, x: np.ndarray, res: str) -> np.ndarray:
    """conv_forward of x with the state's kernel: (F, Ho, Wo), cached (the step never pays for it)."""

    def make() -> np.ndarray:
        bias = None if state.bias is None else np.array(state.bias, dtype=np.float64)
        out, _cache = conv_forward(x[None], state.kernel, bias, stride=state.stride, padding=state.padding,
                                   dilation=state.dilation, mode=MODES[state.mode])
        out = out[0]
        out.flags.writeable = False
        return out

    return _maps.get_or_make(state.compute_key(res), make)


def shown_map(state: ConvState, out: np.ndarray) -> np.ndarray:
    return np.maximum(out, 0) if state.relu else out


# ------------------------------------------------------------------------------ pictures


POSITIVE = np.array([33, 102, 172], dtype=np.float64)  # blue
NEGATIVE = np.array([178, 24, 43], dtype=np.float64)  # red
CHANNEL_TINTS = {"R": (1.0, 0.0, 0.0), "G": (0.0, 0.75, 0.0), "B": (0.0, 0.0, 1.0)}


def colourize(a: np.ndarray) -> tuple[np.ndarray, dict]:
    """(H, W) values -> (H, W, 3) uint8 and its legend.

    With negative values: diverging, white at 0, blue for positive and red for negative,
    symmetric so equal sizes get equal depth. Otherwise grayscale from 0 (black) to the
    largest value (white), which is how a filtered photo naturally looks.
    """
    lo, hi = float(a.min()), float(a.max())
    if lo < 0:
        m = max(-lo, hi) or 1.0
        t = (a / m)[..., None]
        white = np.full(3, 255.0)
        rgb = np.where(t >= 0, white + (POSITIVE - white) * t, white + (NEGATIVE - white) * (-t))
        legend = {"kind": "diverging", "lo": -m, "hi": m}
    else:
        m = hi or 1.0
        rgb = np.repeat((a / m * 255.0)[..., None], 3, axis=2)
        legend = {"kind": "gray", "lo": 0.0, "hi": m}
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8), legend


def _enlarge(rgb: np.ndarray) -> np.ndarray:
    """Nearest-neighbour enlargement to about PICTURE_SIDE pixels (whole-number factor)."""
    factor = max(1, math.ceil(PICTURE_SIDE / max(rgb.shape[:2])))
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else rgb


def _png(rgb: np.ndarray) -> bytes:
    return images.to_png(Image.fromarray(np.ascontiguousarray(rgb)))


def input_picture(x: np.ndarray, channel: int | None, names: tuple) -> np.ndarray:
    """The input as (H, W, 3) uint8: one channel tinted with its colour, or all of them.

    A typed grid or the seed can hold any numbers: they are scaled from their minimum to
    their maximum so the picture shows their pattern.
    """
    a = x.astype(np.float64)
    if x.dtype != np.uint8:
        lo, hi = a.min(), a.max()
        a = (a - lo) / ((hi - lo) or 1.0) * 255.0
    if channel is None:
        rgb = a.transpose(1, 2, 0) if a.shape[0] == 3 else np.repeat(a[0][..., None], 3, axis=2)
    else:
        tint = CHANNEL_TINTS.get(names[channel], (1.0, 1.0, 1.0)) if len(names) == 3 else (1.0, 1.0, 1.0)
        rgb = a[channel][..., None] * np.array(tint)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


# ============================================================================== the view


def channel_names(C: int) -> tuple:
    return CHANNEL_NAMES_RGB if C == 3 else ("",)


def short_number(v: float | int) -> str:
    """A number for a grid cell: at most two decimals (the written sum keeps four)."""
    if isinstance(v, (int, np.integer)) or float(v).is_integer():
        return format_number(int(round(float(v))) if not isinstance(v, (int, np.integer)) else int(v))
    s = f"{float(v):.2f}".rstrip("0").rstrip(".")
    if s in ("0", "-0"):
        return format_number(v)
    return s.replace("-", "\u2212")


def tint_class(v: float, m: float) -> str:
    if m <= 0 or v == 0:
        return "v0"
    level = max(1, min(TINT_LEVELS, round(abs(v) / m * TINT_LEVELS)))
    return f"v{level}" if v > 0 else f"vn{level}"


def term_colour(i: int, j: int, HH: int, WW: int) -> int | str:
    """A colour per kernel cell up to 3×3; larger kernels get one window colour (a patchwork
    of repeated colours would mislead) and rely on hover highlighting."""
    return i * WW + j if HH * WW <= TERM_COLOURS else "w"


class Item(SimpleNamespace):
    """A record the stepper template reads (``cell.text``). Jinja looks ``a.b`` up as an
    attribute first and only then as a key, so on a dict every lookup fails once before it
    succeeds; a step does thousands of them, and records cut the rendering time by about a third."""


def grid_texts(state: ConvState, x: np.ndarray, out: np.ndarray, numbers_in: bool, numbers_out: bool) -> dict:
    """The numbers the stepper's grids show, formatted once per view: every step of a view
    shows the same values and only marks different cells.

    x: (C, H, W), out: (F, Ho, Wo) as shown (ReLU applied). "input": per channel, rows of
    texts (when the input is drawn as numbers); "output": per filter, rows of (short text,
    full text, tint class) (when the output is drawn as numbers).
    """

    def make() -> dict:
        texts: dict[str, Any] = {"input": None, "output": None, "count": 0}
        if numbers_in:
            texts["input"] = [[[format_number(v) for v in row] for row in channel] for channel in x.tolist()]
            texts["count"] += x.size
        if numbers_out:
            texts["output"] = []
            for f in range(out.shape[0]):
                m = float(np.abs(out[f]).max())
                texts["output"].append([[(short_number(v), format_number(v), tint_class(float(v), m)) for v in row]
                                        for row in out[f]])
            texts["count"] += 3 * out.size
        return texts

    return _texts.get_or_make((state.compute_key("work"), state.relu, numbers_in, numbers_out), make)


def build_stepper(state: ConvState, x: np.ndarray, geometry: Any) -> Item:
    """Everything the stepper block shows for the current step (records of ``Item``)."""
    C, H, W = x.shape
    F, _C, HH, WW = state.kernel.shape
    Ho, Wo = geometry.Ho, geometry.Wo
    steps = F * Ho * Wo
    bias = None if state.bias is None else np.array(state.bias)
    st = conv_step(x, state.kernel, bias, stride=state.stride, padding=state.padding, dilation=state.dilation,
                   mode=MODES[state.mode], step=state.step)
    out = shown_map(state, feature_map(state, x, "work"))
    (pt, pb), (pl, pr) = st.padding
    names = channel_names(C)
    picture_input = H + pt + pb > NUMBERS_MAX_SIDE or W + pl + pr > NUMBERS_MAX_SIDE
    picture_output = Ho > NUMBERS_MAX_SIDE or Wo > NUMBERS_MAX_SIDE
    texts = grid_texts(state, x, out, not picture_input, not picture_output)
    query = state.query()

    # One entry per (channel, window position): the colour and the numbers of each term.
    per_channel = []
    for c in range(C):
        terms = st.terms[c * HH * WW:(c + 1) * HH * WW]
        cells = {}
        grid_terms = []
        for n, t in enumerate(terms):
            i, j = divmod(n, WW)
            tag = f"{c}-{i}-{j}"
            colour = term_colour(i, j, HH, WW)
            grid_terms.append(Item(i=i, j=j, tag=tag, colour=colour, term=t,
                                   input=format_number(t.input), weight=format_number(t.weight),
                                   product=format_number(t.product), pad=t.padding))
            cells[(t.row, t.col)] = grid_terms[-1]
        rows = [grid_terms[i * WW:(i + 1) * WW] for i in range(HH)]
        entry = Item(c=c, name=names[c], rows=rows, terms=grid_terms, table=None, picture=None,
                     sum=st.channel_sums[c], sum_text=format_number(st.channel_sums[c]))
        if picture_input:
            entry.picture = Item(
                src=f"/conv/input.png?{query}&res=work&channel={c}",
                width=W + pl + pr, height=H + pt + pb, x=pl, y=pt, W=W, H=H,
                cells=[Item(x=t.term.col + pl, y=t.term.row + pt, colour=t.colour, tag=t.tag) for t in grid_terms],
                box=Item(x=min(st.window_cols) + pl, y=min(st.window_rows) + pt,
                         w=max(st.window_cols) - min(st.window_cols) + 1, h=max(st.window_rows) - min(st.window_rows) + 1),
            )
        else:
            table = []
            values = texts["input"][c]
            for r in range(-pt, H + pb):
                row = []
                for q in range(-pl, W + pr):
                    inside = 0 <= r < H and 0 <= q < W
                    term = cells.get((r, q))
                    row.append(Item(text=values[r][q] if inside else "0", pad=not inside,
                                    colour=term.colour if term else None, tag=term.tag if term else None))
                table.append(row)
            entry.table = table
        per_channel.append(entry)

    # The output maps: cells before this step are filled in, the current one is marked.
    maps = []
    for f in range(F):
        first = f * Ho * Wo
        entry = Item(f=f, first=first, Ho=Ho, Wo=Wo, rows=None, picture=None)
        if picture_output:
            done_rows = 0 if f > st.filter else (Ho if f < st.filter else st.row)
            entry.picture = Item(
                src=f"/conv/output.png?{query}&res=work&filter={f}",
                masks=_masks(f, st, Ho, Wo),
                current=Item(x=st.col, y=st.row) if f == st.filter else None,
                done_rows=done_rows,
            )
        else:
            rows = []
            values = texts["output"][f]
            for r in range(Ho):
                row = []
                for q in range(Wo):
                    k = first + r * Wo + q
                    short, full, tint = values[r][q]
                    status = "done" if k < st.step else ("current" if k == st.step else "todo")
                    row.append(Item(step=k, row=r, col=q, status=status, text=short if status != "todo" else "",
                                    full=full, tint=tint if status != "todo" else ""))
                rows.append(row)
            entry.rows = rows
        maps.append(entry)

    sum_line = _sum_parts(st, per_channel, C)
    value = st.value
    return Item(
        step=st.step, steps=steps, last=steps - 1, filter=st.filter, row=st.row, col=st.col,
        F=F, C=C, HH=HH, WW=WW, Ho=Ho, Wo=Wo, H=H, W=W,
        channels=per_channel, maps=maps, picture_input=picture_input, picture_output=picture_output,
        sum=sum_line, value=format_number(value), text=st.text,
        relu=state.relu, relu_value=format_number(max(value, 0)),
        bias=None if st.bias is None else format_factor(st.bias), flipped=state.mode == "conv",
        state_pairs=state.pairs(),
    )


def _masks(f: int, st: Any, Ho: int, Wo: int) -> list[Item]:
    """Rectangles hiding the cells not computed yet (in cell units)."""
    if f < st.filter:
        return []
    if f > st.filter:
        return [Item(x=0, y=0, w=Wo, h=Ho)]
    masks = []
    if st.col + 1 < Wo:
        masks.append(Item(x=st.col + 1, y=st.row, w=Wo - st.col - 1, h=1))
    if st.row + 1 < Ho:
        masks.append(Item(x=0, y=st.row + 1, w=Wo, h=Ho - st.row - 1))
    return masks


def _piece(text: str, **marks: Any) -> Item:
    """One piece of the written sum; ``tag``/``colour`` link a term to its cells."""
    return Item(**{"text": text, "tag": None, "colour": None, "pad": False, "channel": None, "bias": False, **marks})


def _sum_parts(st: Any, per_channel: list, C: int) -> Item:
    """The written sum as coloured pieces: for one channel the slides' line; for several,
    one line per channel and then ``R + G + B + b = value``."""
    lines = []
    for entry in per_channel:
        pieces = []
        for n, t in enumerate(entry.terms):
            if n:
                pieces.append(_piece(" + "))
            pieces.append(_piece(f"{format_factor(t.term.input)}\u00b7{format_factor(t.term.weight)}",
                                 colour=t.colour, tag=t.tag, pad=t.pad))
        lines.append(Item(name=entry.name, pieces=pieces, sum=entry.sum_text))
    total = []
    if C > 1:
        for n, entry in enumerate(per_channel):
            if n:
                total.append(_piece(" + "))
            total.append(_piece(format_factor(entry.sum), channel=entry.name))
        if st.bias is not None:
            total.append(_piece(" + "))
            total.append(_piece(format_factor(st.bias), bias=True))
    return Item(lines=lines, total=total)


# ------------------------------------------------------------------------------ the settings form


def build_form(parsed: Parsed, settings: Settings) -> dict:
    s = parsed.state
    raw = parsed.raw
    F, C, HH, WW = s.kernel.shape
    channel_labels = channel_names(C)
    # The editor shows what was typed when a cell was refused, so it can be corrected.
    filters = []
    cells = parsed.kernel_cells if "kernel" in parsed.errors and parsed.kernel_cells else None
    if cells:
        F = max(k[0] for k in cells) + 1
        C = max(k[1] for k in cells) + 1
        HH = max(k[2] for k in cells) + 1
        WW = max(k[3] for k in cells) + 1
        channel_labels = channel_names(C)
    for f in range(F):
        chans = []
        for c in range(C):
            rows = []
            for i in range(HH):
                row = []
                for j in range(WW):
                    if cells is not None:
                        text = cells.get((f, c, i, j), "")
                        bad = _bad_number(text)
                    else:
                        text, bad = _ascii_number(s.kernel[f, c, i, j]).replace("-", "\u2212"), False
                    row.append({"name": f"w_{f}_{c}_{i}_{j}", "value": text, "bad": bad, "colour": term_colour(i, j, HH, WW),
                                "label": _where_kernel(f, F, c, C, i, j)})
                rows.append(row)
            chans.append({"c": c, "name": channel_labels[c], "rows": rows})
        name = s.names[f] if f < len(s.names) and cells is None else None
        bias_text = ""
        if parsed.bias_cells is not None and "bias" in parsed.errors:
            bias_text = parsed.bias_cells[f] if f < len(parsed.bias_cells) else ""
        elif s.bias is not None:
            bias_text = _ascii_number(s.bias[f]).replace("-", "\u2212")
        filters.append({"f": f, "channels": chans, "preset": name or "", "bias": bias_text,
                        "bias_bad": "bias" in parsed.errors and _bad_number(bias_text)})
    presets = [{"value": name, "label": _(label)} for name, label in PRESET_LABELS.items()]

    grid_rows = None
    if s.kind == "grid":
        grid_cells = parsed.grid_cells if "grid" in parsed.errors and parsed.grid_cells else None
        g = s.grid
        h, w = (max(i for i, _j in grid_cells) + 1, max(j for _i, j in grid_cells) + 1) if grid_cells else g.shape
        grid_rows = []
        for i in range(h):
            row = []
            for j in range(w):
                if grid_cells is not None:
                    text = grid_cells.get((i, j), "")
                else:
                    text = _ascii_number(g[i, j]).replace("-", "\u2212")
                row.append({"name": f"g_{i}_{j}", "value": text, "bad": grid_cells is not None and _bad_number(text),
                            "label": _("input grid, row %(row)s, column %(col)s") % {"row": i + 1, "col": j + 1}})
            grid_rows.append(row)

    sources = [{"value": "seed", "label": _("The slides’ 5×5 matrix")},
               {"value": "grid", "label": _("A grid I type")}]
    for name, sample in images.SAMPLES.items():
        sources.append({"value": f"image:{name}", "label": _(sample.title), "licence": _(sample.licence)})
    current_source = {"seed": "seed", "grid": "grid"}.get(s.kind, f"image:{s.image}")
    if s.kind == "image" and s.image not in images.SAMPLES:
        sources.append({"value": current_source, "label": _("My uploaded picture")})
    if {"input", "grid"} & parsed.errors.keys() and raw.get("source") is None and s.kind == "seed":
        current_source = ""  # the menu must not pretend a valid choice was made

    licence = None
    if s.kind == "image" and s.image in images.SAMPLES:
        licence = _(images.SAMPLES[s.image].licence)

    paddings = [{"value": "valid", "label": _("valid (no padding)")}, {"value": "same", "label": _("same (output as large as the input, when S = 1)")}]
    paddings += [{"value": str(p), "label": str(p)} for p in range(1, MAX_PADDING + 1)]
    ksize_value = str(HH) if HH == WW else ""
    random_seed = zlib.crc32(format_kernel(s.kernel, s.names).encode()) % 1_000_000 + 1
    return {
        "source": current_source, "sources": sources, "licence": licence,
        "size": raw.get("size", str(s.size)) if "size" in parsed.errors else str(s.size),
        "min_size": MIN_SIZE, "max_size": MAX_SIZE,
        "color": s.color, "is_image": s.kind == "image", "is_grid": s.kind == "grid",
        "grid_rows": grid_rows, "grid_h": s.grid.shape[0] if s.kind == "grid" else 0,
        "grid_w": s.grid.shape[1] if s.kind == "grid" else 0, "max_grid": MAX_GRID,
        "filters": filters, "F": F, "HH": HH, "WW": WW, "ksize": ksize_value, "max_kernel": MAX_KERNEL,
        "max_filters": MAX_FILTERS, "presets": presets, "kernel_text": format_kernel(s.kernel, s.names),
        "random_seed": random_seed,
        "stride": _raw_or(parsed, "stride", s.stride), "strides": [str(v) for v in range(1, MAX_STRIDE + 1)],
        "dilation": _raw_or(parsed, "dilation", s.dilation), "dilations": [str(v) for v in range(1, MAX_DILATION + 1)],
        "padding": _raw_or(parsed, "padding", s.padding), "paddings": paddings,
        "mode": s.mode, "relu": s.relu, "errors": parsed.errors,
        "state_query": s.query(),
    }


def _raw_or(parsed: Parsed, name: str, value: object) -> str:
    if name in parsed.errors:
        return parsed.raw.get(name, "")
    return str(value)


def _bad_number(text: str) -> bool:
    if not text.strip():
        return False
    try:
        parse_number(text, cell=True)
    except ValueError:
        return True
    return False


def build_result(parsed: Parsed, settings: Settings) -> dict | None:
    """The pictures: the input and each filter's full-resolution feature map."""
    s = parsed.state
    try:
        full = working_array(s, settings, "full")
        out = shown_map(s, feature_map(s, full, "full"))
    except (FieldError, ValueError):
        return None
    _C, H, W = full.shape
    query = s.query()
    maps = []
    for f in range(out.shape[0]):
        _rgb, legend = colourize(out[f])
        maps.append({"f": f, "src": f"/conv/output.png?{query}&res=full&filter={f}",
                     "lo": format_number(_round4(legend["lo"])), "hi": format_number(_round4(legend["hi"])),
                     "kind": legend["kind"], "Ho": out.shape[1], "Wo": out.shape[2], "name": s.names[f] if f < len(s.names) else None})
    return {"input_src": f"/conv/input.png?{query}&res=full", "H": H, "W": W, "C": full.shape[0], "maps": maps}


def _round4(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(v, 4)


def formula_view(parsed: Parsed) -> dict | None:
    """Ho and Wo with the formula written out, for the geometry panel."""
    if parsed.x is None or {"kernel", "stride", "dilation", "padding"} & parsed.errors.keys():
        return None
    _C, H, W = parsed.x.shape
    report = parsed.fit or fit_report(parsed.state, H, W)
    HH, WW = parsed.state.kernel.shape[-2:]
    return {"rows": report["rows"], "cols": report["cols"], "H": H, "W": W, "HH": HH, "WW": WW,
            "pad_rows": report["pad_rows"], "pad_cols": report["pad_cols"], "fits": parsed.fit is None,
            "sentence": report["sentence"]}


def lesson_links() -> dict:
    return {"prev": next(s for s in SECTIONS if s.number == 2), "next": next(s for s in SECTIONS if s.number == 5)}


def _locales(request: Request, state_query: str | None) -> list[dict] | None:
    """Language links that keep the state (also on the upload route, whose own URL is a POST)."""
    from app import i18n
    from app.templating import request_locale

    if state_query is None:
        return None
    locale = request_locale(request)
    return [{"code": code, "name": i18n.LANGUAGE_NAMES[code],
             "url": f"/conv?{state_query}{'&' if state_query else ''}lang={code}", "current": code == locale}
            for code in i18n.LOCALES]


# ============================================================================== routes


def _render_conv(request: Request, parsed: Parsed, settings: Settings, *, block: str,
                 extra_headers: Mapping[str, str] | None = None, upload_error: str | None = None) -> HTMLResponse:
    s = parsed.state
    stepper = None
    if parsed.ok:
        stepper = build_stepper(s, parsed.x, parsed.geometry)
    context: dict[str, Any] = {"stepper": stepper, "errors": dict(parsed.errors), "fit": parsed.fit}
    step_query = s.query(step=s.step or None) if parsed.ok else urlencode(list(parsed.raw.items()))
    if block != "stepper":
        context["form"] = build_form(parsed, settings)
        if upload_error:
            # Shown next to the upload control only: the stepper and its state stay as they were.
            context["form"]["errors"] = {**parsed.errors, "upload": upload_error}
        context["formula"] = formula_view(parsed)
        context["result"] = build_result(parsed, settings) if parsed.ok else None
        links = lesson_links()
        context["prev_section"] = links["prev"] if is_served(request.app, links["prev"].path) else None
        context["next_section"] = links["next"] if is_served(request.app, links["next"].path) else None
        context["error_list"] = [(name, msg) for name, msg in context["errors"].items()]
    locales = _locales(request, step_query)
    if locales:
        context["locales"] = locales
    fragment = block if block == "stepper" else "lab"
    response = render(request, "conv.html", context, fragment=fragment, headers=extra_headers)
    add_vary(response, "HX-Target")
    return response


@router.get("/conv", name="conv", response_class=HTMLResponse)
async def conv_page(request: Request) -> Response:
    """The convolution stepper. Every parameter is optional; the defaults are the slides' example.

    Input (one of):
      ``preset=seed``   the slides' 5×5 matrix (the default);
      ``image=ID``      a sample name (``camera``, ``chelsea``, …) or an upload id, with
                        ``size`` = working size 5–32 (longest side, default 10) and
                        ``color`` = ``gray`` | ``rgb``;
      ``grid=ROWS``     typed values: rows separated by ``;``, values by ``,``
                        (``grid=1,2,3;4,5,6``), at most 10×10.
    Kernel:
      ``kernel=K``      filters separated by ``|`` (at most 4); in a filter, one kernel for all
                        channels or one per channel separated by ``/``; a kernel is a preset
                        name (seed, identity, box_blur, gaussian, sharpen, sobel_x, sobel_y,
                        laplacian, emboss, outline) or rows ``;`` values ``,``, 1×1 to 7×7.
                        ``kernel=sobel_x|1,0,-1;2,0,-2;1,0,-1`` is two filters.
      ``bias=B``        one number for every filter, or one per filter separated by ``,``.
    Where the kernel goes: ``stride`` 1–8, ``padding`` = ``valid`` | ``same`` | 0–8,
      ``dilation`` 1–4, ``mode`` = ``xcorr`` (cross-correlation, default) | ``conv``
      (convolution: the kernel flipped 180°), ``relu=1`` (apply ReLU to the output).
    ``step``: the output position, 0-based, row-major over filters, rows, columns.
    Negative numbers may use ``-`` or ``−``. The settings form also sends its editor cells
    (``w_f_c_i_j``, ``g_i_j``, ``b_f``) and choices (``source``, ``ksize``, ``filters``,
    ``use_f``, ``random``); they are folded into the canonical parameters above.
    """
    settings = settings_for(request.app)
    if wants_fragment(request) and request.headers.get("hx-target") == "conv-stepper":
        # A step (→, ←, a clicked cell) reads the arrays the page load cached, runs one
        # conv_step and renders the stepper: a few milliseconds, never a full-resolution
        # map. Handed to a worker thread, it costs more than the step itself once a class
        # steps at once, the threads queueing for the GIL (benchmarks/bench_stepper_load.py);
        # so it runs here. Only after a cache eviction does a step decode its picture again
        # (up to ~30 ms for a 1024-pixel upload), and then once.
        return _conv_view(request, settings)
    # The page and the settings may decode a picture and compute a full-resolution map.
    return await run_in_threadpool(_conv_view, request, settings)


def _conv_view(request: Request, settings: Settings) -> Response:
    parsed = read_state(request.query_params, settings)
    form_submission = any(_FORM_ONLY.fullmatch(k) for k in request.query_params)
    htmx = wants_fragment(request)
    if form_submission and parsed.ok and not htmx:
        return RedirectResponse(parsed.state.url(parsed.state.step or None), status_code=303)
    block = "stepper" if htmx and request.headers.get("hx-target") == "conv-stepper" and parsed.ok else "lab"
    headers = {}
    if htmx and block == "lab" and parsed.ok:
        headers["HX-Push-Url"] = parsed.state.url(parsed.state.step or None)
    return _render_conv(request, parsed, settings, block=block, extra_headers=headers)


def _png_state(request: Request, settings: Settings) -> Parsed:
    parsed = read_state(request.query_params, settings)
    if not parsed.ok:
        raise InputError("; ".join(parsed.errors.values()))
    return parsed


def _png_response(content: bytes) -> Response:
    return Response(content, media_type="image/png",
                    headers={"cache-control": PNG_CACHE_CONTROL, "x-content-type-options": "nosniff"})


def _res(request: Request) -> str:
    res = request.query_params.get("res", "full")
    if res not in ("work", "full"):
        raise InputError(_("The resolution must be “work” or “full”."))
    return res


@router.get("/conv/output.png", name="conv_output_png", response_class=Response)
def conv_output_png(request: Request, settings: Settings = Depends(get_settings)) -> Response:
    """One filter's feature map as a picture (same parameters as /conv, plus ``filter``
    (0-based) and ``res`` = ``full`` (the stored picture, default) | ``work`` (the working
    size, enlarged)). Diverging blue–white–red when there are negative values, else gray."""
    parsed = _png_state(request, settings)
    s = parsed.state
    res = _res(request)
    f = _int_or_error(request.query_params.get("filter", "0"), 0, s.F - 1, N_("The filter must be from %(min)s to %(max)s."))

    def make() -> bytes:
        x = parsed.x if res == "work" else working_array(s, settings, "full")
        out = shown_map(s, feature_map(s, x, res))[f]
        rgb, _legend = colourize(out)
        if res == "work":  # drawn under the stepper's grid; full-resolution pictures keep their size
            rgb = _enlarge(rgb)
        return _png(rgb)

    return _png_response(_pngs.get_or_make(("out", res, s.compute_key(res), s.relu, f), make))


@router.get("/conv/input.png", name="conv_input_png", response_class=Response)
def conv_input_png(request: Request, settings: Settings = Depends(get_settings)) -> Response:
    """The input as a picture (same parameters as /conv, plus ``res`` and ``channel``: a
    channel index shows that channel alone, tinted; none shows the whole picture)."""
    parsed = _png_state(request, settings)
    s = parsed.state
    res = _res(request)
    x = parsed.x if res == "work" else working_array(s, settings, "full")
    channel_text = request.query_params.get("channel")
    channel = None if channel_text in (None, "") else _int_or_error(
        channel_text, 0, x.shape[0] - 1, N_("The channel must be from %(min)s to %(max)s."))

    def make() -> bytes:
        rgb = input_picture(x, channel, channel_names(x.shape[0]))
        if res == "work":  # drawn under the stepper's grid; full-resolution pictures keep their size
            rgb = _enlarge(rgb)
        return _png(rgb)

    return _png_response(_pngs.get_or_make(("in", s.source_key(res), res, channel), make))


def _int_or_error(text: str, lo: int, hi: int, message: str) -> int:
    try:
        v = parse_number(text, cell=False)
    except ValueError:
        v = None
    if not isinstance(v, int) or not lo <= v <= hi:
        raise InputError(_(message) % {"min": lo, "max": hi})
    return v


async def _read_upload_form(request: Request, settings: Settings) -> tuple[bytes | None, str]:
    """(file bytes or None, the ``state`` field), reading at most the upload limit."""
    body_limit = settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise images.too_many_bytes(settings)

    async def capped():
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise images.too_many_bytes(settings)
            yield chunk

    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise images.no_file_error()
    parser = MultiPartParser(request.headers, capped(), max_files=1, max_fields=8, max_part_size=CHUNK_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException:
        raise images.no_file_error(400) from None
    try:
        state = form.get("state")
        state = state if isinstance(state, str) else ""
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return None, state
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise images.too_many_bytes(settings)
        return data, state
    finally:
        await form.close()


@router.post("/conv/upload", name="conv_upload", response_class=HTMLResponse)
async def conv_upload(request: Request, settings: Settings = Depends(get_settings)) -> Response:
    """The page's upload form (multipart: ``file`` and ``state``, the current query string).

    Success: the stepper on the new picture (a redirect, or for htmx the lab fragment with
    ``HX-Push-Url``). A bad file: the same view as before with the message next to the
    upload control; nothing else changes.
    """
    state_text = ""
    error = None
    stored = None
    try:
        data, state_text = await _read_upload_form(request, settings)
        if data is None:
            raise images.no_file_error()
        stored = await run_in_threadpool(images.save_upload, data, None, settings)
    except InputError as exc:
        error = exc.message
    params = dict(parse_qsl(state_text, keep_blank_values=True))
    if stored is not None:
        params.pop("step", None)
        for name in ("preset", "grid", "source"):
            params.pop(name, None)
        params["image"] = stored.id
        params.setdefault("size", str(DEFAULT_SIZE))
        params.setdefault("color", "gray")
    parsed = await run_in_threadpool(read_state, params, settings)
    htmx = wants_fragment(request)
    if stored is not None and parsed.ok and not htmx:
        return RedirectResponse(parsed.state.url(), status_code=303)
    headers = {"HX-Push-Url": parsed.state.url()} if stored is not None and parsed.ok else {}
    return await run_in_threadpool(
        lambda: _render_conv(request, parsed, settings, block="lab", extra_headers=headers, upload_error=error))
