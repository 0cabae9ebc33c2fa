"""What the convolution stepper shows for a state: the working-size arrays and feature maps
(cached), the pictures, the stepper's cells and written-out sums, the settings form.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from cnnlab.app import images
from cnnlab.app.conv_state import (
    CHANNEL_NAMES_RGB,
    KINDS,
    MAX_DILATION,
    MAX_FILTERS,
    MAX_GRID,
    MAX_KERNEL,
    MAX_PADDING,
    MAX_SIZE,
    MAX_STRIDE,
    MIN_SIZE,
    MODES,
    NUMBERS_MAX_SIDE,
    PICTURE_SIDE,
    PRESET_LABELS,
    TERM_COLOURS,
    TINT_LEVELS,
    ConvState,
    FieldError,
    Parsed,
    ascii_number,
    fit_report,
    format_kernel,
    format_pointwise,
    parse_number,
    where_kernel,
    working_array,
)
from cnnlab.app.i18n import gettext as _
from cnnlab.app.settings import Settings
from cnnlab.core import numfmt
from cnnlab.core.conv import (
    conv_forward,
    conv_step,
    format_factor,
    format_number,
)
from cnnlab.core.conv_more import conv_transpose_forward, depthwise_output, separable_forward

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
png_cache = _LRU(48 * 1024 * 1024)
# Formatting a number costs a few microseconds and a grid holds hundreds of them, the same
# at every step of a view; each kept text is counted as 64 bytes.
TEXT_BYTES = 64
_texts = _LRU(16 * 1024 * 1024, size=lambda texts: TEXT_BYTES * texts["count"])



def feature_map(state: ConvState, x: np.ndarray, res: str) -> np.ndarray:
    """conv_forward of x with the state's kernel: (F, Ho, Wo), cached (the step never pays for it)."""

    def make() -> np.ndarray:
        bias = None if state.bias is None else np.array(state.bias, dtype=np.float64)
        if state.op == "separable":
            out, _d = separable_forward(x[None], state.kernel[0], _floats(state.dbias), state.pointwise, bias,
                                        stride=state.stride, padding=state.padding, dilation=state.dilation)
        elif state.op == "transposed":
            out = conv_transpose_forward(x[None], np.asarray(state.kernel).transpose(1, 0, 2, 3), bias,
                                         stride=state.stride, padding=0 if state.padding == "valid" else state.padding)
        else:  # the ordinary and the 1×1 convolution
            out, _cache = conv_forward(x[None], state.kernel, bias, stride=state.stride, padding=state.padding,
                                       dilation=state.dilation, mode=MODES[state.mode])
        out = out[0]
        out.flags.writeable = False
        return out

    return _maps.get_or_make(state.compute_key(res), make)


def depthwise_map(state: ConvState, x: np.ndarray, res: str) -> np.ndarray:
    """The separable convolution's depthwise output (C, Ho, Wo), cached; int64 when whole."""

    def make() -> np.ndarray:
        d = depthwise_output(x, state.kernel[0], _floats(state.dbias), stride=state.stride, padding=state.padding,
                             dilation=state.dilation)
        d.flags.writeable = False
        return d

    return _maps.get_or_make(("depthwise",) + state.compute_key(res), make)


def _floats(values: tuple | None) -> np.ndarray | None:
    return None if values is None else np.array(values)


def shown_map(state: ConvState, out: np.ndarray) -> np.ndarray:
    return np.maximum(out, 0) if state.relu else out


# ------------------------------------------------------------------------------ pictures


POSITIVE = np.array([33, 102, 172], dtype=np.float64)  # blue
NEGATIVE = np.array([178, 24, 43], dtype=np.float64)  # red
CHANNEL_TINTS = {"R": (1.0, 0.0, 0.0), "G": (0.0, 0.75, 0.0), "B": (0.0, 0.0, 1.0)}


def legend_of(a: np.ndarray) -> dict:
    """The colour scale ``colourize`` uses for ``a``: diverging (symmetric) with negative
    values, else gray from 0 to the largest value."""
    lo, hi = float(a.min()), float(a.max())
    if lo < 0:
        m = max(-lo, hi) or 1.0
        return {"kind": "diverging", "lo": -m, "hi": m}
    return {"kind": "gray", "lo": 0.0, "hi": hi or 1.0}


def colourize(a: np.ndarray) -> tuple[np.ndarray, dict]:
    """(H, W) values -> (H, W, 3) uint8 and its legend.

    With negative values: diverging, white at 0, blue for positive and red for negative,
    symmetric so equal sizes get equal depth. Otherwise grayscale from 0 (black) to the
    largest value (white), which is how a filtered photo naturally looks.
    """
    legend = legend_of(a)
    m = legend["hi"]
    if legend["kind"] == "diverging":
        t = (a / m)[..., None]
        white = np.full(3, 255.0)
        rgb = np.where(t >= 0, white + (POSITIVE - white) * t, white + (NEGATIVE - white) * (-t))
    else:
        rgb = np.repeat((a / m * 255.0)[..., None], 3, axis=2)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8), legend


def enlarge(rgb: np.ndarray) -> np.ndarray:
    """Nearest-neighbour enlargement to about PICTURE_SIDE pixels (whole-number factor)."""
    factor = max(1, math.ceil(PICTURE_SIDE / max(rgb.shape[:2])))
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else rgb


def png_bytes(rgb: np.ndarray) -> bytes:
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
    s = numfmt.fixed(v, 2)
    return format_number(v) if s == "0" else s


def tint_class(v: float, m: float) -> str:
    if m <= 0 or v == 0:
        return "v0"
    level = max(1, min(TINT_LEVELS, round(abs(v) / m * TINT_LEVELS)))
    return f"v{level}" if v > 0 else f"vn{level}"


# Projector mode shows at most this many rows and columns of a grid of numbers: the ones
# around the current window (or output cell), with their row and column numbers; the
# stylesheet hides the rest there (.is-far), so the working set fits one screen.
NEAR_SIDE = 7


def near_band(total: int, lo: int, hi: int, side: int) -> range | None:
    """The rows (or columns) of ``total`` that projector mode keeps: ``side`` of them, or all
    of lo..hi if more, centred on lo..hi and kept inside the grid; None when all of them fit."""
    n = max(side, hi - lo + 1)
    if total <= n:
        return None
    start = min(max(lo - (n - (hi - lo + 1)) // 2, 0), total - n)
    return range(start, start + n)


def term_colour(i: int, j: int, HH: int, WW: int) -> int | str:
    """A colour per kernel cell up to 3×3; larger kernels get one window colour (a patchwork
    of repeated colours would mislead) and rely on hover highlighting."""
    return i * WW + j if HH * WW <= TERM_COLOURS else "w"


class Item(SimpleNamespace):
    """A record the stepper template reads (``cell.text``). Jinja looks ``a.b`` up as an
    attribute first and only then as a key, so on a dict every lookup fails once before it
    succeeds; a step does thousands of them, and records cut the rendering time by about a third."""


def grid_texts(state: ConvState, x: np.ndarray, out: np.ndarray, numbers_in: bool, numbers_out: bool,
               part: str = "") -> dict:
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

    key = (state.compute_key("work"), state.relu, numbers_in, numbers_out) + ((part,) if part else ())
    return _texts.get_or_make(key, make)


def build_stepper(state: ConvState, x: np.ndarray, geometry: Any) -> Item:
    """Everything the stepper block shows for the current step (records of ``Item``)."""
    if state.op in ("separable", "transposed"):
        from cnnlab.app import conv_more_view

        return conv_more_view.build_stepper(state, x, geometry)
    bias = None if state.bias is None else np.array(state.bias)
    st = conv_step(x, state.kernel, bias, stride=state.stride, padding=state.padding, dilation=state.dilation,
                   mode=MODES[state.mode], step=state.step)
    out = shown_map(state, feature_map(state, x, "work"))
    query = state.query()
    return window_stepper(
        state, x, st, out, channels=range(x.shape[0]), step=state.step, steps=state.F * geometry.Ho * geometry.Wo,
        part="", input_src=lambda c: f"/conv/input.png?{query}&res=work&channel={c}",
        output_src=lambda f: f"/conv/output.png?{query}&res=work&filter={f}",
        one_line=state.op == "pointwise", relu=state.relu)


def window_stepper(state: ConvState, x: np.ndarray, st: Any, out: np.ndarray, *, channels: Any, step: int, steps: int,
                   part: str, input_src: Callable[[int], str], output_src: Callable[[int], str], first: int = 0,
                   one_line: bool = False, relu: bool = False, kernel_no: str | None = None,
                   map_labels: list[str] | None = None) -> Item:
    """The stepper of one window times a kernel (a ConvStep ``st`` whose terms come channel by
    channel from ``channels`` of x (C, H, W)), beside the maps ``out`` (F, Ho, Wo) being filled
    in. ``step``/``steps``: the page's step numbers; ``first``: the page's step of out's first
    cell (the separable convolution's pointwise steps come after its depthwise ones); ``part``
    keeps the formatted numbers of different grids apart in the cache; ``one_line``: the
    1×1 convolution's sum w_1·x_1 + … + w_C·x_C + b on one line, a colour per channel."""
    C, H, W = x.shape
    F = out.shape[0]
    HH = len(st.window_rows)
    WW = len(st.window_cols)
    Ho, Wo = out.shape[1:]
    (pt, pb), (pl, pr) = st.padding
    names = channel_names(C)
    picture_input = H + pt + pb > NUMBERS_MAX_SIDE or W + pl + pr > NUMBERS_MAX_SIDE
    picture_output = Ho > NUMBERS_MAX_SIDE or Wo > NUMBERS_MAX_SIDE
    texts = grid_texts(state, x, out, not picture_input, not picture_output, part=part)

    # Projector mode keeps the input's rows and columns around the window; a colour picture has
    # three rows of grids beside its output, so it keeps only the window.
    shown_channels = list(channels)
    several = len(shown_channels) > 1
    near_side = NEAR_SIDE if not several else 1
    near_rows = near_band(H + pt + pb, min(st.padded_rows), max(st.padded_rows), near_side)
    near_cols = near_band(W + pl + pr, min(st.padded_cols), max(st.padded_cols), near_side)

    # One entry per (channel, window position): the colour and the numbers of each term.
    per_channel = []
    for n, c in enumerate(shown_channels):
        terms = st.terms[n * HH * WW:(n + 1) * HH * WW]
        cells = {}
        grid_terms = []
        for m, t in enumerate(terms):
            i, j = divmod(m, WW)
            tag = f"{c}-{i}-{j}"
            colour = c if one_line and C <= TERM_COLOURS else term_colour(i, j, HH, WW)
            grid_terms.append(Item(i=i, j=j, tag=tag, colour=colour, term=t,
                                   input=format_number(t.input), weight=format_number(t.weight),
                                   product=format_number(t.product), pad=t.padding))
            cells[(t.row, t.col)] = grid_terms[-1]
        rows = [grid_terms[i * WW:(i + 1) * WW] for i in range(HH)]
        entry = Item(c=c, name=names[c], rows=rows, terms=grid_terms, table=None, picture=None, heads=None,
                     sum=st.channel_sums[n], sum_text=format_number(st.channel_sums[n]), input_label=None)
        if picture_input:
            # The window's numbers with the input's row and column numbers (1 = the first).
            entry.heads = Item(rows=[_label(row[0].term.row, H) for row in rows],
                               cols=[_label(t.term.col, W) for t in rows[0]])
            entry.picture = Item(
                src=input_src(c),
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
                                    far=near_cols is not None and q + pl not in near_cols,
                                    colour=term.colour if term else None, tag=term.tag if term else None))
                table.append(Item(cells=row, far=near_rows is not None and r + pt not in near_rows, label=_label(r, H)))
            entry.table = table
            if near_rows is not None or near_cols is not None:
                entry.heads = Item(cols=[Item(label=_label(q, W), far=near_cols is not None and q + pl not in near_cols)
                                         for q in range(-pl, W + pr)])
        per_channel.append(entry)

    # The output maps: cells before this step are filled in, the current one is marked.
    # Projector mode keeps 5 rows and columns around the current cell (it goes under the
    # kernel), 3 for a colour picture (it goes beside three rows of grids).
    out_side = 5 if not several else 3
    out_rows = near_band(Ho, st.row, st.row, out_side)
    out_cols = near_band(Wo, st.col, st.col, out_side)
    maps = []
    for f in range(F):
        start = first + f * Ho * Wo
        entry = Item(f=f, first=start, Ho=Ho, Wo=Wo, rows=None, picture=None,
                     label=map_labels[f] if map_labels else None, jump=None)
        if picture_output:
            done_rows = 0 if f > st.filter else (Ho if f < st.filter else st.row)
            entry.picture = Item(
                src=output_src(f),
                masks=_masks(f, st, Ho, Wo),
                current=Item(x=st.col, y=st.row, w=1, h=1) if f == st.filter else None,
                done_rows=done_rows,
            )
        else:
            rows = []
            values = texts["output"][f]
            for r in range(Ho):
                row = []
                for q in range(Wo):
                    k = start + r * Wo + q
                    short, full, tint = values[r][q]
                    status = "done" if k < step else ("current" if k == step else "todo")
                    row.append(Item(step=k, row=r, col=q, status=status, text=short if status != "todo" else "",
                                    full=full, tint=tint if status != "todo" else "",
                                    far=out_cols is not None and q not in out_cols, tag=None, colour=None))
                rows.append(Item(cells=row, far=out_rows is not None and r not in out_rows))
            entry.rows = rows
        maps.append(entry)

    sum_line = _sum_parts(st, per_channel, 1 if one_line else len(shown_channels), one_line=one_line)
    value = st.value
    return Item(
        step=step, steps=steps, last=steps - 1, filter=st.filter, row=st.row, col=st.col,
        F=F, C=len(shown_channels), HH=HH, WW=WW, Ho=Ho, Wo=Wo, H=H, W=W,
        channels=per_channel, maps=maps, picture_input=picture_input, picture_output=picture_output,
        # Projector mode puts the output under the kernel (app.css) when it is more than three
        # rows tall or the input more than five columns wide: one line would not fit the screen.
        stacked=picture_input or picture_output or min(Ho, out_side) > 3
        or len(near_cols or range(W + pl + pr)) > 5,
        sum=sum_line, value=format_number(value), text=st.text,
        relu=relu, relu_value=format_number(max(value, 0)),
        bias=None if st.bias is None else format_factor(st.bias), flipped=state.mode == "conv",
        state_pairs=state.pairs(), one_line=one_line, op=state.op, scatter=None, phase=None, status=None,
        kernel_no=(str(st.filter + 1) if F > 1 else "") if kernel_no is None else kernel_no,
    )


def _label(index: int, size: int) -> str:
    """A row or column's number as the captions count (1 = the first); none on the padding."""
    return str(index + 1) if 0 <= index < size else ""


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


def _sum_parts(st: Any, per_channel: list, C: int, one_line: bool = False) -> Item:
    """The written sum as coloured pieces: for one channel the slides' line; for several,
    one line per channel and then ``R + G + B + b = value``; ``one_line``: every channel's
    terms on one line (the 1×1 convolution's w_1·x_1 + … + w_C·x_C + b)."""
    lines = []
    if one_line:
        pieces = []
        for entry in per_channel:
            for t in entry.terms:
                if pieces:
                    pieces.append(_piece(" + "))
                pieces.append(_piece(f"{format_factor(t.term.input)}\u00b7{format_factor(t.term.weight)}",
                                     colour=t.colour, tag=t.tag, pad=t.pad))
        return Item(lines=[Item(name=None, pieces=pieces, sum=format_number(st.value))], total=[])
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


def build_form(parsed: Parsed) -> dict:
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
                        text, bad = ascii_number(s.kernel[f, c, i, j]).replace("-", "\u2212"), False
                    row.append({"name": f"w_{f}_{c}_{i}_{j}", "value": text, "bad": bad, "colour": term_colour(i, j, HH, WW),
                                "label": where_kernel(f, F, c, C, i, j)})
                rows.append(row)
            chans.append({"c": c, "name": channel_labels[c], "rows": rows})
        name = s.names[f] if f < len(s.names) and cells is None else None
        bias_text = ""
        if parsed.bias_cells is not None and "bias" in parsed.errors:
            bias_text = parsed.bias_cells[f] if f < len(parsed.bias_cells) else ""
        elif s.bias is not None:
            bias_text = ascii_number(s.bias[f]).replace("-", "\u2212")
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
                    text = ascii_number(g[i, j]).replace("-", "\u2212")
                row.append({"name": f"g_{i}_{j}", "value": text, "bad": grid_cells is not None and _bad_number(text),
                            "label": _("input grid, row %(row)s, column %(col)s") % {"row": i + 1, "col": j + 1}})
            grid_rows.append(row)

    sources = [{"value": "seed", "label": _("The slides’ 5×5 matrix")}]
    if s.op in ("pointwise", "separable"):
        sources.append({"value": "seed3", "label": _("A small picture with 3 channels (5×5×3)")})
    sources.append({"value": "grid", "label": _("A grid I type")})
    for name, sample in images.SAMPLES.items():
        sources.append({"value": f"image:{name}", "label": _(sample.title), "licence": _(sample.licence)})
    current_source = {"seed": "seed", "seed3": "seed3", "grid": "grid"}.get(s.kind, f"image:{s.image}")
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
        "op": s.op, "kinds": [{"value": k, "label": _(label)} for k, label in KINDS.items()],
        "pointwise": _raw_or(parsed, "pointwise", format_pointwise(s.pointwise) if s.pointwise is not None else ""),
        "dbias": _raw_or(parsed, "dbias", ",".join(ascii_number(v) for v in s.dbias) if s.dbias else ""),
        "bias_text": _raw_or(parsed, "bias", ",".join(ascii_number(v) for v in s.bias) if s.bias else ""),
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
    res = "work" if s.op == "transposed" else "full"  # a transposed output grows with the stride
    try:
        full = parsed.x if res == "work" else working_array(s, settings, "full")
        out = shown_map(s, feature_map(s, full, res))
    except (FieldError, ValueError):
        return None
    _C, H, W = full.shape
    query = s.query()
    maps = []
    for f in range(out.shape[0]):
        legend = legend_of(out[f])  # the picture itself is drawn by /conv/output.png
        maps.append({"f": f, "src": f"/conv/output.png?{query}&res={res}&filter={f}",
                     "lo": format_number(_round4(legend["lo"])), "hi": format_number(_round4(legend["hi"])),
                     "kind": legend["kind"], "Ho": out.shape[1], "Wo": out.shape[2], "name": s.names[f] if f < len(s.names) else None,
                     # The picture's text alternative: its smallest and largest numbers.
                     "min": format_number(_round4(float(out[f].min()))), "max": format_number(_round4(float(out[f].max())))})
    return {"input_src": f"/conv/input.png?{query}&res={res}", "H": H, "W": W, "C": full.shape[0], "maps": maps}


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
            "sentence": report["sentence"], "transposed": report.get("transposed", False)}


