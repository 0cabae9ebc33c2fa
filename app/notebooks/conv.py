"""The notebook of /conv: the page's input (the working-size array), kernels, bias and settings,
the current step's dot product by hand, the whole feature map with NumPy loops, then the engine
(``cnnlab.conv_step``, ``cnnlab.conv_forward``), and a check that all give the page's numbers.

The state is read by the page's own parser (``conv_state.read_state``), so the notebook has the
page's exact input and refuses what the page refuses, with the page's messages.
"""

from __future__ import annotations

import nbformat
import numpy as np
from starlette.requests import Request

from cnnlab.app import images
from cnnlab.app.conv_state import MODES, PRESET_LABELS, ConvState, Parsed, fit_report, read_state
from cnnlab.app.conv_view import channel_names, feature_map, shown_map
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.notebooks.cells import Notebook, literal
from cnnlab.app.settings import settings_for
from cnnlab.core.conv import conv_step, format_factor, format_number

__all__ = ["build", "build_from"]


def build(request: Request) -> nbformat.NotebookNode:
    parsed = read_state(request.query_params, settings_for(request.app))
    if not parsed.ok:
        raise InputError.of(parsed.errors)
    if parsed.state.op not in ("conv", "pointwise"):
        # The notebook writes out one window times one kernel; the separable and transposed
        # convolutions step differently (their JSON twins are /api/conv/separable and /transposed).
        raise InputError(_("The notebook covers the ordinary and the 1×1 convolution; for the depthwise-separable and "
                           "the transposed convolution use the stepper and its JSON twin (/api/conv/%(kind)s).")
                         % {"kind": parsed.state.op})
    return build_from(parsed)


def _input_label(s: ConvState) -> str:
    if s.kind == "seed":
        return _("The slides’ 5×5 matrix")
    if s.kind == "seed3":
        return _("A small picture with 3 channels (5×5×3)")
    if s.kind == "grid":
        return _("A grid I type")
    if s.image in images.SAMPLES:
        return _(images.SAMPLES[s.image].title)
    return _("My uploaded picture")


def _kernel_label(s: ConvState) -> str:
    labels = []
    for f in range(s.F):
        name = s.names[f] if f < len(s.names) else None
        labels.append(_(PRESET_LABELS[name]) if name in PRESET_LABELS else _("my own values"))
    return "; ".join(labels)


def _padding_text(s: ConvState) -> str:
    if s.padding == "valid":
        return _("valid (no padding)")
    if s.padding == "same":
        return _("same (output as large as the input, when S = 1)")
    return str(s.padding)


def _window_slice(start: str, D: int, K: int) -> str:
    """``r0:r0 + 3`` (or ``r0:r0 + 5:2`` with dilation 2): K cells, D apart, from ``start``."""
    return f"{start}:{start} + {D * (K - 1) + 1}" + (f":{D}" if D > 1 else "")


def build_from(parsed: Parsed) -> nbformat.NotebookNode:
    s = parsed.state
    x = np.array(parsed.x)
    C, H, W = x.shape
    F, _C, HH, WW = s.kernel.shape
    mode = MODES[s.mode]
    bias = None if s.bias is None else np.array(s.bias)
    st = conv_step(x, s.kernel, bias, stride=s.stride, padding=s.padding, dilation=s.dilation, mode=mode, step=s.step)
    out = np.array(feature_map(s, x, "work"))
    shown = shown_map(s, out)
    (pt, pb), (pl, pr) = st.padding
    S, D = s.stride, s.dilation
    names = channel_names(C)
    one = C == 1

    nb = Notebook(_("Kernels and convolution, step by step"), s.url(s.step or None))
    nb.markdown(_("The kernel slides across the input. At each position every input value in the window is "
                  "multiplied by the kernel weight on top of it, and the products are added up: that sum is one "
                  "number of the output."))

    # ---- the page's input, kernel and settings
    dims = f"{H}×{W}" + (" ×3" if C == 3 else "")
    lines = [f"- **{_('Input')}**: {_input_label(s)} ({dims})"]
    if s.kind == "image":
        lines.append(f"- **{_('Working size (pixels on the longest side)')}**: {s.size}")
        lines.append(f"- **{_('Colour')}**: " + (_("RGB (3 channels)") if C == 3 else _("Grayscale (1 channel)")))
    lines.append(f"- **{_('Kernel')}**: {_kernel_label(s)} ({HH}×{WW})")
    if F > 1:
        lines.append(f"- **{_('Filters')}**: {F}")
    if s.bias is not None:
        lines.append(f"- **{_('Bias b')}**: " + ", ".join(format_number(v) for v in s.bias))
    lines.append(f"- **{_('Stride S')}**: {S}")
    lines.append(f"- **{_('Padding P')}**: {_padding_text(s)}")
    lines.append(f"- **{_('Dilation D')}**: {D}")
    lines.append(f"- **{_('Operation')}**: "
                 + (_("Convolution (kernel flipped)") if s.mode == "conv" else _("Cross-correlation")))
    if s.relu:
        lines.append(f"- {_('Apply ReLU to the output: max(0, value)')}")
    nb.markdown("## " + _("Input, kernel and settings") + "\n\n" + "\n".join(lines))
    if s.kind == "image":
        nb.markdown(_("The page computes on the picture reduced to its working size: these are its pixel "
                      "values (0 to 255), channel by channel."))
    setup = [
        f"# x: {_('the input')} (C, H, W) = {x.shape}",
        "x = " + literal(x),
        f"# w: {_('the kernels')} (F, C, HH, WW) = {s.kernel.shape}",
        "w = " + literal(np.array(s.kernel)),
    ]
    if bias is None:
        setup.append(f"b = None  # {_('no bias')}")
    else:
        setup.append(f"b = {literal(bias)}  # {_('one bias per filter')}")
    setup += [
        f"S, D = {S}, {D}  # stride, dilation",
        f"padding = {literal(s.padding)}",
        f"mode = {literal(mode)}",
        "C, H, W = x.shape",
        "F, _, HH, WW = w.shape",
    ]
    nb.code("\n".join(setup))

    if s.mode == "conv":
        nb.markdown(_("Deep-learning libraries (PyTorch, TensorFlow) compute cross-correlation and call it "
                      "convolution; a true convolution first flips the kernel 180°, which changes nothing for "
                      "a symmetric kernel.")
                    + "\n\n" + _("So the kernel that slides over the input is `w` flipped 180° "
                                 "(upside down and left to right):"))
        nb.code(f"kernel = w[:, :, ::-1, ::-1]  # {_('(flipped 180°)')}\nprint(kernel)")
    else:
        nb.code(f"kernel = w  # {_('cross-correlation: the kernel as it is')}")

    # ---- output size and padding
    fit = fit_report(s, H, W)
    pad_rows = "2P" if pt == pb else "P_{top} + P_{bottom}"
    pad_cols = "2P" if pl == pr else "P_{left} + P_{right}"
    size_md = [
        "## " + _("Output size"),
        "",
        f"$H_o = \\lfloor (H + {pad_rows} - D\\cdot(K - 1) - 1)/S \\rfloor + 1$ = {fit['rows']}",
        "",
        f"$W_o = \\lfloor (W + {pad_cols} - D\\cdot(K - 1) - 1)/S \\rfloor + 1$ = {fit['cols']}",
    ]
    if pt or pb or pl or pr:
        size_md += ["", _("Padding adds zeros around the input: top %(top)s, bottom %(bottom)s, "
                          "left %(left)s, right %(right)s.")
                    % {"top": pt, "bottom": pb, "left": pl, "right": pr}]
    nb.markdown("\n".join(size_md))
    nb.code("\n".join([
        f"(pt, pb), (pl, pr) = ({pt}, {pb}), ({pl}, {pr})  # {_('padding: top, bottom, left, right')}",
        "xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr)))",
        "Ho = (H + pt + pb - D * (HH - 1) - 1) // S + 1",
        "Wo = (W + pl + pr - D * (WW - 1) - 1) // S + 1",
        "print(Ho, Wo)",
    ]))

    # ---- the current step by hand
    status = _("Step %(k)s of %(n)s") % {"k": st.step + 1, "n": st.steps}
    if F > 1:
        status += " · " + _("filter %(f)s of %(n)s") % {"f": st.filter + 1, "n": F}
    status += " · " + _("output row %(row)s, column %(col)s") % {"row": st.row + 1, "col": st.col + 1}
    status += f": **{format_number(st.value)}**"
    formula = ("$y[f, r, c] = \\sum_{ch,i,j} x_p[ch,\\ r S + i D,\\ c S + j D] \\cdot k[f, ch, i, j]"
               + (" + b_f$" if bias is not None else "$"))
    nb.markdown("## " + _("The current step by hand") + "\n\n" + status + "\n\n" + formula + "\n\n"
                + _("The window is the part of the padded input under the kernel; multiplied by the kernel cell "
                    "by cell, its products add up to the output number (rows and columns count from 0 in the code)."))
    ch = "0, " if one else ":, "
    kf = "kernel[f, 0]" if one else "kernel[f]"
    code = [
        f"f, row, col = {st.filter}, {st.row}, {st.col}  # step {st.step}",
        "r0, c0 = row * S, col * S",
        f"window = xp[{ch}{_window_slice('r0', D, HH)}, {_window_slice('c0', D, WW)}]",
        "print(window)",
        f"products = window * {kf}",
        "print(products)",
    ]
    if one:
        code.append(f"# {st.text}")
    else:
        for name, text in zip(names, st.channel_texts):
            code.append(f"# {name}: {text}")
        total = " + ".join(format_factor(v) for v in st.channel_sums)
        if bias is not None:
            total += f" + {format_factor(st.bias)}"
        code.append(f"# R + G + B{' + b' if bias is not None else ''} = {total} = {format_number(st.value)}")
        code.append("print(products.sum(axis=(1, 2)))  # R, G, B")
    code.append("value = products.sum()" + (" + b[f]" if bias is not None else ""))
    code.append("print(value)")
    if s.relu:
        code.append(f"# ReLU({format_number(st.value)}) = {format_number(max(st.value, 0))}")
        code.append("print(max(value, 0))")
    nb.code("\n".join(code))

    # ---- the whole operation
    nb.markdown("## " + _("The whole operation with NumPy loops") + "\n\n"
                + _("Every output position in turn, filter by filter and row by row, as the stepper goes: "
                    "%(n)s dot products.") % {"n": st.steps})
    whole = [
        "out = np.zeros((F, Ho, Wo))",
        "for f in range(F):",
        "    for row in range(Ho):",
        "        for col in range(Wo):",
        "            r0, c0 = row * S, col * S",
        f"            window = xp[:, {_window_slice('r0', D, HH)}, {_window_slice('c0', D, WW)}]",
        "            out[f, row, col] = (window * kernel[f]).sum()" + (" + b[f]" if bias is not None else ""),
        "print(out)",
    ]
    if s.relu:
        whole += ["out_relu = np.maximum(out, 0)  # ReLU", "print(out_relu)"]
    nb.code("\n".join(whole))

    # ---- the engine
    nb.markdown("## " + _("The same with the engine") + "\n\n"
                + _("`cnnlab.conv_step` writes out one position, as the stepper does; `cnnlab.conv_forward` "
                    "computes every position at once (im2col: every window becomes a column, then one matrix "
                    "product)."))
    nb.code("\n".join([
        f"step = cnnlab.conv_step(x, w, b, stride=S, padding=padding, dilation=D, mode=mode, step={st.step})",
        "print(step.text)",
        "engine_out, _cache = cnnlab.conv_forward(x[None], w, b, stride=S, padding=padding, dilation=D, mode=mode)",
        "engine_out = engine_out[0]  # (F, Ho, Wo)",
        "print(engine_out)",
    ]))

    nb.expect("step_value", st.value, numpy="value", engine="step.value")
    nb.expect("output", out, numpy="out", engine="engine_out")
    if s.relu:
        nb.expect("step_relu", max(st.value, 0), numpy="max(value, 0)", engine="max(step.value, 0)")
        nb.expect("output_relu", shown, numpy="out_relu", engine="np.maximum(engine_out, 0)")
    return nb.build()
