"""The notebook of /activation: the page's feature map through the chosen activation function.

It reads the page's query with the page's own parsing (``activation_numbers``, as the JSON twin
does), so a state the page refuses is refused here with the same message. The
notebook holds the page's input map as a literal (whatever its source: the example, the slides'
matrix, a typed grid or /conv's feature map), adds the page's bias when the page added one,
computes the first value by hand, the whole map with NumPy, then with the engine
(``cnnlab.get_activation``), and checks both against the numbers the page showed.
"""

from __future__ import annotations

from urllib.parse import urlencode

import nbformat
from starlette.requests import Request

from cnnlab.app import numbers
from cnnlab.app.i18n import gettext as _
from cnnlab.app.layer_names import activation_name
from cnnlab.app.notebooks.cells import Notebook, literal
from cnnlab.app.routers.lesson_pages import INPUTS, LEAKY_ALPHA, activation_numbers
from cnnlab.core.conv import format_number

__all__ = ["build"]

# The function and its derivative in LaTeX (the page prints core.activations' plain-text forms).
FORMULAS = {
    "relu": (r"f(x) = \max(0, x)", r"f'(x) = [x > 0]"),
    "sigmoid": (r"f(x) = \sigma(x) = \dfrac{1}{1 + e^{-x}}", r"f'(x) = \sigma(x)\,(1 - \sigma(x))"),
    "tanh": (r"f(x) = \tanh(x) = \dfrac{e^{x} - e^{-x}}{e^{x} + e^{-x}}", r"f'(x) = 1 - \tanh(x)^2"),
    "leaky_relu": (r"f(x) = \max(\alpha x, x)", r"f'(x) = [x > 0] + \alpha\,[x \le 0]"),
}

# One value by hand (x0 is a Python float), then the whole map in plain NumPy.
BY_HAND = {
    "relu": "y0 = max(0.0, x0)",
    "leaky_relu": "y0 = x0 if x0 > 0 else alpha * x0",
    "sigmoid": "with np.errstate(over=\"ignore\"):  # e^(−x) overflows to inf for x < −709: 1/(1 + inf) = 0\n"
               "    y0 = 1 / (1 + np.exp(-x0))",
    "tanh": "with np.errstate(over=\"ignore\"):  # (e^x − e^−x)/(e^x + e^−x) = 1 − 2/(e^(2x) + 1), no inf/inf\n"
            "    y0 = 1 - 2 / (np.exp(2 * x0) + 1)",
}
WHOLE = {
    "relu": "y_numpy = np.maximum(x, 0)",
    "leaky_relu": "y_numpy = np.where(x > 0, x, alpha * x)",
    "sigmoid": "with np.errstate(over=\"ignore\"):\n    y_numpy = 1 / (1 + np.exp(-x))",
    "tanh": "with np.errstate(over=\"ignore\"):\n    y_numpy = 1 - 2 / (np.exp(2 * x) + 1)",
}


def build(request: Request) -> nbformat.NotebookNode:
    # The page's numbers, computed as the page computes them.
    src, fn, x, bias, y = activation_numbers(request)
    name = activation_name(fn)
    pairs = list(src.pairs) + ([("fn", fn)] if fn != "relu" else [])

    nb = Notebook(_("ReLU and other activation functions"), f"/activation?{urlencode(pairs)}")
    nb.markdown(_("After a convolution (or a dense layer) every value goes through a non-linear function. "
                  "ReLU keeps positive values and turns negative ones into 0; sigmoid and tanh squash every "
                  "value into a fixed range. Without this step, stacked layers would still compute one linear "
                  "function."))

    # The input map, as the page had it.
    lines = [f"## {_('Input')}: {_(INPUTS[src.kind])}"]
    if src.relu:
        lines.append("- " + _("Apply ReLU to the input first"))
    if src.names:
        lines.append("- " + ", ".join(src.names))
    nb.markdown("\n\n".join(lines))
    source = [f"x = {literal(src.x)}  # (C, H, W)"]
    if bias is not None:
        source.append(f"bias = {literal(bias)}")
        source.append("x = x.astype(np.float64) + bias")
    else:
        source.append("x = x.astype(np.float64)")
    if fn == "leaky_relu":
        source.append(f"alpha = {literal(LEAKY_ALPHA)}")
    source.append(f"fn = {fn!r}")
    source.append("x")
    if bias is not None:
        nb.markdown(_("This map has no negative values, so ReLU would change nothing. A convolution layer adds "
                      "its bias before the activation: here b = %(b)s (minus the map’s mean) is added to every "
                      "value first, so “Before” is the map + b.") % {"b": format_number(bias)})
    nb.code("\n".join(source))

    # The function.
    formula, derivative = FORMULAS[fn]
    text = [f"## {name}", f"$${formula}$$", f"$${derivative}$$"]
    if fn == "leaky_relu":
        text.append(_("Here the slope for negative values is α = %(a)s.") % {"a": numbers.num(LEAKY_ALPHA, 4)})
    nb.markdown("\n\n".join(text))

    # One value by hand: the page's example line.
    first, first_out = float(x.flat[0]), float(y.flat[0])
    example = f"{name}({format_number(_whole(first))}) = {format_number(_whole(first_out))}"
    nb.markdown("### " + _("The first value by hand, as the page writes it: %(example)s") % {"example": f"`{example}`"})
    nb.code("x0 = float(x[0, 0, 0])\n" + BY_HAND[fn] + "\ny0")

    # The whole map with NumPy, then with the engine.
    nb.markdown("### " + _("The whole map with NumPy"))
    nb.code(WHOLE[fn] + "\ny_numpy")
    nb.markdown("### " + _("The same with the engine") + f": `cnnlab.get_activation({fn!r})`")
    args = "x, alpha" if fn == "leaky_relu" else "x"
    nb.code(f"act = cnnlab.get_activation(fn)\ny_engine, cache = act.forward({args})\ny_engine")
    nb.markdown(_("%(n)s negative values went in; %(z)s values are 0 after the function.")
                % {"n": int((x < 0).sum()), "z": int((y == 0).sum())})

    nb.expect("first", first_out, numpy="y0", engine="y_engine[0, 0, 0]")
    nb.expect("after", y, numpy="y_numpy", engine="y_engine")
    return nb.build()


def _whole(v: float) -> int | float:
    return int(v) if v.is_integer() else v
