"""What the /conv stepper shows for the kinds of convolution beyond the slides (issue 14): the
depthwise-separable convolution (its depthwise steps, then its pointwise steps) and the
transposed convolution (each input value scattered through the kernel into a larger output).
The 1×1 convolution is the ordinary stepper with a 1×1 kernel and its sum on one line
(app.conv_view.build_stepper). Every view is a record the same stepper template reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cnnlab.app.conv_state import NUMBERS_MAX_SIDE as NUMBERS_SIDE
from cnnlab.app.conv_state import ConvState
from cnnlab.app.conv_view import (
    Item,
    _label,
    channel_names,
    depthwise_map,
    feature_map,
    near_band,
    short_number,
    term_colour,
    tint_class,
    window_stepper,
)
from cnnlab.app.i18n import gettext as _
from cnnlab.core.conv import conv_step, format_factor, format_number
from cnnlab.core.conv_more import (
    conv_transpose_forward,
    depthwise_step,
    separable_counts,
    transpose_output_size_formula,
    transpose_step,
)

__all__ = ["build_stepper", "kind_panel"]


def build_stepper(state: ConvState, x: np.ndarray, geometry: Any) -> Item:
    if state.op == "separable":
        return _separable(state, x, geometry)
    return _transposed(state, x)


def _channel_label(names: tuple, c: int) -> str:
    return names[c] if names[c] else str(c + 1)


# ------------------------------------------------------------------------------ separable


def _separable(state: ConvState, x: np.ndarray, g: Any) -> Item:
    C = x.shape[0]
    F, Ho, Wo = state.F, g.Ho, g.Wo
    n_dw = C * Ho * Wo
    steps = (C + F) * Ho * Wo
    query = state.query()
    names = channel_names(C)
    d = depthwise_map(state, x, "work")
    dbias = None if state.dbias is None else np.array(state.dbias)
    if state.step < n_dw:
        st = depthwise_step(x, state.kernel[0], dbias, stride=state.stride, padding=state.padding,
                            dilation=state.dilation, step=state.step)
        view = window_stepper(
            state, x, st, d, channels=[st.filter], step=state.step, steps=steps, part="depthwise",
            input_src=lambda c: f"/conv/input.png?{query}&res=work&channel={c}",
            output_src=lambda f: f"/conv/output.png?{query}&res=work&part=depthwise&filter={f}",
            kernel_no="", map_labels=[_("Depthwise %(name)s") % {"name": _channel_label(names, c)} for c in range(C)])
        view.phase = "depthwise"
        where = _("channel %(name)s") % {"name": _channel_label(names, st.filter)}
        view.status = _("Depthwise phase, %(where)s · row %(row)s, column %(col)s") % {
            "where": where, "row": st.row + 1, "col": st.col + 1}
    else:
        bias = None if state.bias is None else np.array(state.bias)
        st = conv_step(d, state.pointwise[:, :, None, None], bias, step=state.step - n_dw)
        out = feature_map(state, x, "work")
        view = window_stepper(
            state, d, st, out, channels=range(C), step=state.step, steps=steps, part="pointwise",
            input_src=lambda c: f"/conv/output.png?{query}&res=work&part=depthwise&filter={c}",
            output_src=lambda f: f"/conv/output.png?{query}&res=work&filter={f}",
            first=n_dw, one_line=True)
        view.phase = "pointwise"
        for entry in view.channels:
            entry.input_label = _("Depthwise map")
        status = _("Pointwise phase (1×1)")
        if F > 1:
            status += " · " + _("filter %(f)s of %(n)s") % {"f": st.filter + 1, "n": F}
        view.status = status + " · " + _("row %(row)s, column %(col)s") % {"row": st.row + 1, "col": st.col + 1}
    view.phase_steps = n_dw
    return view


# ------------------------------------------------------------------------------ transposed


def _transposed(state: ConvState, x: np.ndarray) -> Item:
    C, H, W = x.shape
    w = np.asarray(state.kernel).transpose(1, 0, 2, 3)  # (C, F, HH, WW), conv_transpose2d's layout
    _C, F, HH, WW = w.shape
    S = state.stride
    P = 0 if state.padding == "valid" else state.padding
    bias = None if state.bias is None else np.array(state.bias)
    st = transpose_step(x, w, bias, stride=S, padding=P, step=state.step)
    _F, Ho, Wo = st.out_shape
    final = feature_map(state, x, "work")
    names = channel_names(C)
    query = state.query()
    ch = st.channel
    picture_input = H > NUMBERS_SIDE or W > NUMBERS_SIDE
    picture_output = Ho > NUMBERS_SIDE or Wo > NUMBERS_SIDE

    # The kernel's cells: weight, product and where each lands.
    terms = []
    for t in st.terms:
        terms.append(Item(i=t.kernel_row, j=t.kernel_col, tag=f"k-{t.kernel_row}-{t.kernel_col}",
                          colour=term_colour(t.kernel_row, t.kernel_col, HH, WW), term=t,
                          input=format_number(st.input), weight=format_number(t.weight),
                          product=format_number(t.product), pad=not t.inside))
    rows = [terms[i * WW:(i + 1) * WW] for i in range(HH)]
    entry = Item(c=ch, name=names[ch], rows=rows, terms=terms, table=None, picture=None, heads=None,
                 sum=None, sum_text="", input_label=None)
    if picture_input:
        entry.picture = Item(src=f"/conv/input.png?{query}&res=work&channel={ch}", width=W, height=H, x=0, y=0, W=W, H=H,
                             cells=[Item(x=st.col, y=st.row, colour="w", tag="in")],
                             box=Item(x=st.col, y=st.row, w=1, h=1))
    else:
        near_rows = near_band(H, st.row, st.row, 7)
        near_cols = near_band(W, st.col, st.col, 7)
        table = []
        for r in range(H):
            cells = []
            for q in range(W):
                here = (r, q) == (st.row, st.col)
                cells.append(Item(text=format_number(_plain(x[ch, r, q])), pad=False,
                                  far=near_cols is not None and q not in near_cols,
                                  colour="w" if here else None, tag="in" if here else None))
            table.append(Item(cells=cells, far=near_rows is not None and r not in near_rows, label=_label(r, H)))
        entry.table = table
        if near_rows is not None or near_cols is not None:
            entry.heads = Item(cols=[Item(label=_label(q, W), far=near_cols is not None and q not in near_cols)
                                     for q in range(W)])

    # The output maps: the current one holds the running values (the cells reached so far),
    # earlier ones their final values, later ones nothing yet.
    reached = _reached(C, H, W, HH, WW, S, P, ch, st.row, st.col)
    window = {(t.term.out_row, t.term.out_col): t for t in terms if t.term.inside}
    top_rows = [t.term.out_row for t in terms if t.term.inside] or [0]
    top_cols = [t.term.out_col for t in terms if t.term.inside] or [0]
    out_rows = near_band(Ho, min(top_rows), max(top_rows), 5)
    out_cols = near_band(Wo, min(top_cols), max(top_cols), 5)
    maps = []
    for f in range(F):
        first = f * C * H * W
        # A click on a large output picture goes to the input cell under it (static/js/conv.js
        # maps the click onto an H×W grid of steps from ``jump.first``).
        entry_map = Item(f=f, first=first, Ho=Ho, Wo=Wo, rows=None, picture=None, label=None,
                         jump=Item(first=first + (ch if f == st.filter else 0) * H * W, wo=W, ho=H))
        if picture_output:
            entry_map.picture = Item(src=f"/conv/output.png?{query}&res=work&filter={f}",
                                     masks=[] if f < st.filter else [Item(x=0, y=0, w=Wo, h=Ho)] if f > st.filter else [],
                                     current=Item(x=max(st.left, 0), y=max(st.top, 0),
                                                  w=min(st.left + WW, Wo) - max(st.left, 0),
                                                  h=min(st.top + HH, Ho) - max(st.top, 0)) if f == st.filter else None)
        else:
            values = st.running if f == st.filter else final[f].tolist()
            m = float(np.abs(final[f]).max())
            out_rows_list = []
            for r in range(Ho):
                cells = []
                for q in range(Wo):
                    i = min(max((r + P) // S, 0), H - 1)
                    j = min(max((q + P) // S, 0), W - 1)
                    target = ((f * C + (ch if f == st.filter else 0)) * H + i) * W + j
                    if f < st.filter or (f == st.filter and reached[r, q]):
                        status = "current" if f == st.filter and (r, q) in window else "done"
                    else:
                        status = "todo"
                    v = _plain(values[r][q])
                    term = window.get((r, q)) if f == st.filter else None
                    cells.append(Item(step=target, row=r, col=q, status=status,
                                      text=short_number(v) if status != "todo" else "", full=format_number(v),
                                      tint=tint_class(float(v), m) if status != "todo" else "",
                                      far=f == st.filter and out_cols is not None and q not in out_cols,
                                      tag=term.tag if term else None, colour=term.colour if term else None))
                out_rows_list.append(Item(cells=cells, far=f == st.filter and out_rows is not None and r not in out_rows))
            entry_map.rows = out_rows_list
        maps.append(entry_map)

    # The written step: each product added into its output cell, the running value before and after.
    pieces = []
    for t in terms:
        if pieces:
            pieces.append(Item(text="   ", tag=None))
        tm = t.term
        if tm.inside:
            text = f"{format_number(tm.before)} + {format_factor(st.input)}\u00b7{format_factor(tm.weight)} = {format_number(tm.after)}"
        else:
            text = f"{format_factor(st.input)}\u00b7{format_factor(tm.weight)} \u2716"
        pieces.append(Item(text=text, tag=t.tag, colour=t.colour, pad=not tm.inside))
    # i, j and the window's corner count from 0, as the formula (i·S − P, j·S − P) does.
    head = (f"x[{st.row}, {st.col}] = {format_number(st.input)} \u2192 "
            f"(i\u00b7S \u2212 P, j\u00b7S \u2212 P) = ({st.row}\u00b7{S} \u2212 {P}, {st.col}\u00b7{S} \u2212 {P}) = "
            f"({format_number(st.top)}, {format_number(st.left)})")
    start = None
    if st.step % (C * H * W) == 0:
        start = _("The output starts at the bias b = %(b)s.") % {"b": format_number(st.bias)} if st.bias is not None \
            else _("The output starts at 0.")
    dropped = any(not t.term.inside for t in terms)
    status = (_("input %(name)s, row %(row)s, column %(col)s") % {"name": names[ch], "row": st.row + 1, "col": st.col + 1}
              if names[ch] else _("input row %(row)s, column %(col)s") % {"row": st.row + 1, "col": st.col + 1})
    if F > 1:
        status += " → " + _("output %(f)s") % {"f": st.filter + 1}
    return Item(
        step=st.step, steps=st.steps, last=st.steps - 1, filter=st.filter, row=st.row, col=st.col,
        F=F, C=1, HH=HH, WW=WW, Ho=Ho, Wo=Wo, H=H, W=W, channels=[entry], maps=maps,
        picture_input=picture_input, picture_output=picture_output, stacked=True,
        sum=None, value=format_number(st.input), text=st.text, relu=False, relu_value="", bias=None, flipped=False,
        state_pairs=state.pairs(), one_line=False, op="transposed", phase=None, kernel_no=str(st.filter + 1) if F > 1 else "",
        status=status, scatter=Item(head=head, start=start, pieces=pieces, dropped=dropped,
                                    note=_("rows and columns counted from 0")),
    )


def _plain(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        f = float(v)
        return int(f) if f.is_integer() and abs(f) < 2**53 else f
    return v


def _reached(C: int, H: int, W: int, HH: int, WW: int, S: int, P: int, ch: int, row: int, col: int) -> np.ndarray:
    """Which output cells some step up to this one (of this output map) has added into: (Ho, Wo) bools."""
    mask = np.zeros((1, C, H, W))
    mask[0, :ch] = 1
    mask[0, ch].flat[:row * W + col + 1] = 1
    return conv_transpose_forward(mask, np.ones((C, 1, HH, WW)), None, stride=S, padding=P)[0, 0] > 0


# ------------------------------------------------------------------------------ the kind's panel


def kind_panel(state: ConvState, x: np.ndarray | None, geometry: Any) -> Item | None:
    """The lesson text of the kind shown, and its numbers: the 1×1 and separable convolutions'
    parameter counts beside the full convolution's, the transposed convolution's output size."""
    if state.op == "conv":
        return None
    panel = Item(op=state.op, counts=None, size=None)
    if x is None or geometry is None:
        return panel
    C, H, W = x.shape
    F = state.F
    HH, WW = state.kernel.shape[-2:]
    if state.op == "pointwise":
        panel.counts = Item(params=f"(1·1·{C} + 1)·{F} = {(C + 1) * F}",
                            mults=f"{C}·{F}·{geometry.Ho}·{geometry.Wo} = {C * F * geometry.Ho * geometry.Wo}")
    elif state.op == "separable":
        c = separable_counts(C, F, HH, WW, geometry.Ho, geometry.Wo)
        panel.counts = Item(**c, HH=HH, WW=WW, C=C, F=F)
    else:
        P = 0 if state.padding == "valid" else state.padding
        panel.size = Item(rows=transpose_output_size_formula(H, HH, state.stride, P),
                          cols=transpose_output_size_formula(W, WW, state.stride, P))
    return panel
