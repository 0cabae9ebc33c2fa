"""What every page's notebook is made of (nbformat), so each page's module only says what to compute.

A notebook is: a title and the page's address; markdown cells in the page's language; code cells
that recompute the page's numbers, first in plain NumPy, then with the engine (``import cnnlab``);
and a last cell that asserts both give the numbers the page showed, which the builder writes
into the notebook as literals (``PAGE``).

    nb = Notebook(_("Convolution, step 2"), "/conv?preset=seed&step=1")
    nb.markdown(_("…explanation…"))
    nb.code("x = " + literal(x))
    nb.expect("value", 87.0, numpy="by_hand", engine="step.value")
    return nb.build()

Nothing here runs the code: tests execute the notebooks (tests/notebookrun.py), in a kernel and in
process.
"""

from __future__ import annotations

import math
from typing import Any

import nbformat
import numpy as np

from cnnlab.app.i18n import gettext as _

__all__ = ["Notebook", "literal", "IMPORTS"]

# The first code cell of every notebook: nothing but NumPy and the engine.
IMPORTS = "import numpy as np\nimport cnnlab"

_KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _number(v: Any) -> str:
    """An exact Python literal for one number: integers as integers, floats by repr (round-trips)."""
    if isinstance(v, (bool, np.bool_)):
        return repr(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = float(v)
    if math.isnan(f) or math.isinf(f):
        return f"float({str(f)!r})"
    return repr(f)


def _nested(a: Any) -> str:
    if isinstance(a, (list, tuple)):
        return "[" + ", ".join(_nested(v) for v in a) + "]"
    return _number(a)


def literal(value: Any) -> str:
    """Python source that rebuilds ``value`` exactly: a number, a string, a list, or an array
    (``np.array([...], dtype=...)``, with its shape even when empty)."""
    if isinstance(value, np.ndarray):
        body = _nested(value.tolist())
        if value.size == 0:
            return f"np.zeros({value.shape!r}, dtype=np.{value.dtype.name})"
        return f"np.array({body}, dtype=np.{value.dtype.name})"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return _nested(list(value))
    return _number(value)


class Notebook:
    """A notebook being written: cells in order, then the page's numbers and the final check."""

    def __init__(self, title: str, page_url: str) -> None:
        self.cells: list[nbformat.NotebookNode] = []
        self.checks: list[tuple[str, Any, str, str, float]] = []
        intro = _("This notebook recomputes what CNN Lab showed at %(url)s: first with plain NumPy, "
                  "then with the lab's engine (`import cnnlab`), and its last cell checks that both "
                  "give the page's numbers. It needs nothing but NumPy and the engine "
                  "(`pip install cnnlab`).") % {"url": f"`{page_url}`"}
        self.markdown(f"# {title}\n\n{intro}")
        self.code(IMPORTS)

    def markdown(self, text: str) -> None:
        self.cells.append(nbformat.v4.new_markdown_cell(text.strip()))

    def code(self, source: str) -> None:
        self.cells.append(nbformat.v4.new_code_cell(source.strip()))

    def expect(self, name: str, page_value: Any, *, numpy: str, engine: str, tolerance: float = 1e-9) -> None:
        """The page showed ``page_value`` as ``name``; the expressions ``numpy`` and ``engine``
        (evaluated in the notebook after every other cell) must both equal it within ``tolerance``
        (relative and absolute)."""
        self.checks.append((name, page_value, numpy, engine, tolerance))

    def build(self) -> nbformat.NotebookNode:
        """The notebook, its last cell asserting every ``expect``."""
        if not self.checks:
            raise ValueError("a page's notebook must check at least one number")
        self.markdown("## " + _("Check: NumPy, the engine and the page agree"))
        page = "PAGE = {\n" + "".join(f"    {name!r}: {literal(value)},\n" for name, value, *rest in self.checks) + "}"
        asserts = [
            f"np.testing.assert_allclose({expr}, PAGE[{name!r}], rtol={tol!r}, atol={tol!r})"
            for name, _value, numpy_expr, engine_expr, tol in self.checks
            for expr in (numpy_expr, engine_expr)
        ]
        shown = _("The numbers the page showed")
        done = _("NumPy and the engine both give the page's numbers.")
        self.code("\n".join([f"# {shown}", page, *asserts, f"print({done!r})"]))
        nb = nbformat.v4.new_notebook(cells=self.cells)
        # Cell ids from their places, not random ones: the same state gives the same file, byte
        # for byte (the page's link and `cnnlab notebook` agree; two versions diff cleanly).
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"cell-{i}"
        nb.metadata["kernelspec"] = dict(_KERNEL)
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.validate(nb)
        return nb
