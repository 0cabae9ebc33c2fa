"""``/notebook/<page>?<the page's query>``: the page at that state as a runnable ``.ipynb``."""

from __future__ import annotations

import nbformat
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from cnnlab.app.api_schema import page_errors
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.notebooks import BUILDERS

router = APIRouter()

MEDIA_TYPE = "application/x-ipynb+json"


@router.get("/notebook/{page}", name="notebook", response_class=Response,
            responses={200: {"content": {MEDIA_TYPE: {"schema": {"type": "object"}}},
                             "description": "A Jupyter notebook (nbformat 4) that recomputes the page."},
                       **page_errors(404, 422)})
async def notebook(request: Request, page: str) -> Response:
    """The notebook of ``/<page>`` with the same query (``/notebook/conv?preset=seed&step=1``):
    ``page`` is one of conv, pool, activation, pipeline, practice, train. Its cells recompute the
    page's numbers in plain NumPy and with the engine, and its last cell asserts both equal what
    the page showed. A state the page refuses is refused here with the page's message."""
    build = BUILDERS.get(page)
    if build is None:
        raise InputError(_("There is no notebook for “%(page)s”: pages with one are %(pages)s.")
                         % {"page": page, "pages": ", ".join(BUILDERS)}, status_code=404)
    nb = await run_in_threadpool(build, request)
    return Response(nbformat.writes(nb), media_type=MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="cnnlab-{page}.ipynb"'})
