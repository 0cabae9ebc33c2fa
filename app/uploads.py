"""Reading a multipart upload without trusting its size: the one reader every upload form and
the upload API use.

The body is refused before a byte is read when its declared length is over the cap, and cut
off just past the cap when it comes chunked with no length; the file part is read up to
``max_upload_bytes + 1`` bytes. Every failure is an ``ImageError`` (a translated 4xx).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from cnnlab.app import images
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.settings import Settings

CHUNK_BYTES = 64 * 1024
# Room for the multipart headers and the small text fields (``state``) around the file.
FORM_OVERHEAD_BYTES = 16 * 1024


@dataclass(frozen=True)
class UploadForm:
    data: bytes | None  # None when the form has no file part
    filename: str | None
    state: str  # the page's state (a query string) sent with the file, "" when absent


async def _capped(request: Request, limit: int, settings: Settings) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise images.too_many_bytes(settings)
        yield chunk


async def read_upload_form(request: Request, settings: Settings) -> UploadForm:
    """The form's file (field ``file``) and its ``state`` field, reading at most the cap."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise images.no_file_error()
    body_limit = settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise images.too_many_bytes(settings)  # refused before a byte of the body is read
    parser = MultiPartParser(request.headers, _capped(request, body_limit, settings),
                             max_files=1, max_fields=8, max_part_size=CHUNK_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException:
        raise images.no_file_error(400) from None
    try:
        state = form.get("state")
        state = state if isinstance(state, str) else ""
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return UploadForm(None, None, state)
        data = bytearray()
        cap = settings.max_upload_bytes
        while len(data) <= cap:
            chunk = await upload.read(min(CHUNK_BYTES, cap + 1 - len(data)))
            if not chunk:
                break
            data += chunk
        if len(data) > cap:
            raise images.too_many_bytes(settings)
        return UploadForm(bytes(data), upload.filename, state)
    finally:
        await form.close()


def page_state(request: Request, path: str) -> str:
    """The query string of page ``path`` the form was sent from (htmx's ``HX-Current-URL``,
    else ``Referer``), or "": the view to show again when the body is refused unread (too
    large, too many uploads), so the page keeps its picture and settings."""
    for header in ("hx-current-url", "referer"):
        url = urlsplit(request.headers.get(header, ""))
        if url.path == path and url.netloc == request.url.netloc:
            return url.query
    return ""


def picture_chosen(form: UploadForm) -> UploadForm:
    """``form`` when it carries a file. A page's upload button pressed before a file was chosen
    gets the person's words; the JSON API keeps its precise message about the multipart field."""
    if not form.data and not form.filename:  # a browser sends no file part, or a nameless empty one
        raise InputError(_("Choose a picture first."), field="file")
    return form


async def store_upload(form: UploadForm, settings: Settings) -> images.StoredImage:
    """Check and store the form's picture; a form without a file is refused like a bad one."""
    if form.data is None:
        raise images.no_file_error()
    # Decoding and resizing take tens of milliseconds: off the event loop.
    return await run_in_threadpool(images.save_upload, form.data, form.filename, settings)
