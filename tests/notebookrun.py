"""Running generated notebooks in tests: in a real kernel (nbclient + ipykernel) or in process.

``in_kernel(nb)`` executes every cell as Jupyter would and raises on the first failing cell;
``in_process(nb)`` exec()s the code cells in one namespace and returns it (fast: for checking a
notebook's numbers against a page's JSON twin on many states).
"""

from __future__ import annotations

import contextlib
import io

import nbformat
from nbclient import NotebookClient


def parse(body: bytes | str) -> nbformat.NotebookNode:
    nb = nbformat.reads(body if isinstance(body, str) else body.decode("utf-8"), as_version=4)
    nbformat.validate(nb)
    return nb


def in_kernel(nb: nbformat.NotebookNode, cwd: str, timeout: int = 120) -> nbformat.NotebookNode:
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
    return nb


def in_process(nb: nbformat.NotebookNode) -> dict:
    namespace: dict = {"__name__": "__notebook__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                exec(compile(cell.source, f"<cell {i}>", "exec"), namespace)
    return namespace


def outputs_text(nb: nbformat.NotebookNode) -> str:
    """Everything the executed cells printed."""
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))
