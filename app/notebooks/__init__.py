"""Every lesson page as a runnable notebook: "Abrir como notebook" / "Open as notebook".

``BUILDERS[page](request)`` reads the page's own query (the same parameters, the same refusals as
the page) and returns an ``nbformat`` notebook that recomputes what the page showed (see
``cells.Notebook``). ``/notebook/<page>?<the page's query>`` serves it (app/routers/notebooks.py);
``cnnlab notebook "/conv?preset=seed"`` writes the same file from the command line.
"""

from __future__ import annotations

from collections.abc import Callable

import nbformat
from starlette.requests import Request

from cnnlab.app.notebooks import activation, conv, pipeline, pool, practice, train

__all__ = ["BUILDERS", "Builder"]

Builder = Callable[[Request], nbformat.NotebookNode]

BUILDERS: dict[str, Builder] = {
    "conv": conv.build,
    "pool": pool.build,
    "activation": activation.build,
    "pipeline": pipeline.build,
    "practice": practice.build,
    "train": train.build,
}
