"""The notebook of /pool: the page's input (the grid it pools, ReLU applied when asked), the
current window by hand (max, with the cell that wins, or average), the whole pooled map with
NumPy loops, then the engine (``cnnlab.pool_step``, ``cnnlab.pool_forward``), and a check that
all give the page's numbers.

The state is read by the page's own parser (``lesson_pages.read_pool``), so the notebook has the
page's exact input, including a feature map carried over from /conv, and refuses what the page
refuses, with the page's messages.
"""

from __future__ import annotations

import nbformat
import numpy as np
from starlette.requests import Request

from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.notebooks.cells import Notebook, literal
from cnnlab.app.routers.lesson_pages import INPUTS, POOL_KINDS, PoolView, read_pool
from cnnlab.core.conv import format_number

__all__ = ["build", "build_from"]


def build(request: Request) -> nbformat.NotebookNode:
    view = read_pool(request.query_params, request)
    if view.errors or view.out is None:
        raise InputError.of(view.errors or {"input": _("Choose an input from the list.")})
    return build_from(view)


def build_from(view: PoolView) -> nbformat.NotebookNode:
    src = view.src
    x = np.array(src.x)
    C, H, W = x.shape
    kind = view.kind
    glob = kind == "global_avg"
    k = None if glob else view.size
    S = None if glob else (view.stride or view.size)
    st = view.step_at(view.step)
    out = np.array(view.out)
    _C, Ho, Wo = out.shape

    nb = Notebook(_("Pooling, step by step"), f"/pool?{view.query(view.step)}")
    nb.markdown(_("A window slides over the feature map and each position is summarised by one number: the largest "
                  "value (max pooling) or the mean (average pooling). Global average pooling takes the mean of the "
                  "whole map, one number per channel. The map gets smaller and has no weights to learn."))

    # ---- the page's input and settings
    lines = [f"- **{_('Input')}**: {_(INPUTS[src.kind])} ({H}×{W}" + (f"; {', '.join(src.names)}" if C > 1 else "") + ")"]
    if src.kind == "conv":
        lines.append(f"  (`/conv?{src.conv_query}`)")
    if src.relu:
        lines.append(f"- {_('Apply ReLU to the input first')}")
    lines.append(f"- **{_('Kind')}**: {_(POOL_KINDS[kind])}")
    if not glob:
        lines.append(f"- **{_('Window size')}**: {k}×{k}")
        lines.append(f"- **{_('Stride')}**: {S}")
    nb.markdown("## " + _("Input and settings") + "\n\n" + "\n".join(lines))
    setup = [f"# x: {_('the input')} (C, H, W) = {x.shape}", "x = " + literal(x)]
    if src.relu:
        setup.append(f"# {_('ReLU already applied: max(0, value)')}")
    setup.append(f"kind = {kind!r}")
    if not glob:
        setup.append(f"k, S = {k}, {S}  # {_('window size, stride')}")
    setup.append("C, H, W = x.shape")
    nb.code("\n".join(setup))

    # ---- output size
    if glob:
        nb.markdown("## " + _("Output size") + "\n\n"
                    + _("Global average: one number per channel, the mean of all %(n)s values (%(h)s×%(w)s → 1×1).")
                    % {"n": H * W, "h": H, "w": W})
        nb.code("Ho, Wo = 1, 1")
    else:
        nb.markdown("\n".join([
            "## " + _("Output size"), "",
            f"$H_o = \\lfloor (H - k)/S \\rfloor + 1$ = ⌊({H} − {k})/{S}⌋ + 1 = {Ho}", "",
            f"$W_o = \\lfloor (W - k)/S \\rfloor + 1$ = ⌊({W} − {k})/{S}⌋ + 1 = {Wo}", "",
            _("H = %(h)s, W = %(w)s, window k = %(k)s, stride S = %(s)s; pooling uses no padding.")
            % {"h": H, "w": W, "k": k, "s": S},
        ]))
        nb.code("Ho = (H - k) // S + 1\nWo = (W - k) // S + 1\nprint(Ho, Wo)")

    # ---- the current window by hand
    status = _("Step %(k)s of %(n)s") % {"k": st.step + 1, "n": st.steps}
    if C > 1:
        status += " · " + _("channel %(c)s of %(n)s") % {"c": st.channel + 1, "n": C}
    status += " · " + _("output row %(row)s, column %(col)s") % {"row": st.row + 1, "col": st.col + 1}
    status += f": **{format_number(st.value)}**"
    if kind == "max":
        explain = _("The window’s largest value wins: the first maximum in reading order (row by row). In "
                    "backpropagation it alone receives this output’s gradient; the other cells of the window get 0.")
    elif kind == "avg":
        explain = _("The average adds the window’s values and divides by their number; in backpropagation every "
                    "cell of the window gets an equal share of the gradient.")
    else:
        explain = _("Global average pooling: the mean of the whole channel.")
    nb.markdown("## " + _("The current step by hand") + "\n\n" + status + "\n\n" + explain + "\n\n"
                + _("Rows and columns count from 0 in the code."))
    code = [f"c, row, col = {st.channel}, {st.row}, {st.col}  # step {st.step}"]
    if glob:
        code.append("window = x[c]")
    else:
        code += ["r0, c0 = row * S, col * S", "window = x[c, r0:r0 + k, c0:c0 + k]"]
    code += ["print(window)", f"# {st.text}"]
    if kind == "max":
        code += [
            "value = window.max()",
            f"i, j = np.unravel_index(window.argmax(), window.shape)  # {_('the first maximum, row by row')}",
            f"winner = (int(r0 + i), int(c0 + j))  # {_('the cell that wins: input row, column')}",
            "print(value, winner)",
        ]
    else:
        code += ["value = window.sum() / window.size", "print(value)"]
    nb.code("\n".join(code))

    # ---- the whole pooling
    nb.markdown("## " + _("The whole pooling with NumPy loops") + "\n\n"
                + _("Every output position in turn, channel by channel and row by row, as the stepper goes: "
                    "%(n)s windows.") % {"n": st.steps})
    reduce = "max()" if kind == "max" else "mean()"
    if glob:
        window = "x[c]"
        loops = ["out = np.zeros((C, 1, 1))", "for c in range(C):", f"    out[c, 0, 0] = {window}.mean()"]
    else:
        loops = [
            "out = np.zeros((C, Ho, Wo))",
            "for c in range(C):",
            "    for row in range(Ho):",
            "        for col in range(Wo):",
            "            r0, c0 = row * S, col * S",
            f"            out[c, row, col] = x[c, r0:r0 + k, c0:c0 + k].{reduce}",
        ]
    nb.code("\n".join(loops + ["print(out)"]))

    # ---- the engine
    nb.markdown("## " + _("The same with the engine") + "\n\n"
                + _("`cnnlab.pool_step` writes out one window, as the stepper does; `cnnlab.pool_forward` pools "
                    "every window at once."))
    args = "kind" if glob else "kind, k, S"
    nb.code("\n".join([
        f"step = cnnlab.pool_step(x, {args}, step={st.step})",
        "print(step.text" + (", step.winner)" if kind == "max" else ")"),
        f"engine_out, _cache = cnnlab.pool_forward(x[None], {args})",
        "engine_out = engine_out[0]  # (C, Ho, Wo)",
        "print(engine_out)",
    ]))

    nb.expect("step_value", st.value, numpy="value", engine="step.value")
    if kind == "max":
        nb.expect("winner", list(st.winner), numpy="winner", engine="step.winner")
    nb.expect("output", out, numpy="out", engine="engine_out")
    return nb.build()
