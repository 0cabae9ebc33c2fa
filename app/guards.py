"""Limits every request meets before a route sees it, and the status of a page with bad values.

``RequestGuard`` (pure ASGI, inside the locale and session middleware so its messages are in
the request's language):

- a query string longer than ``MAX_QUERY_BYTES`` is refused with 414: no page state comes
  near it (the largest /conv form, 4 filters × 3 channels × 7×7 cells, is about 15 KB);
- a query parameter given twice with *different* values (``?stride=1&stride=0``) is refused
  with 400 on GET/HEAD, instead of silently taking one of them (Starlette keeps the last,
  the locale middleware the first);
- a body declared (``Content-Length``) larger than ``body_limit`` is refused with 413 before
  a byte is read; a chunked body without a length is counted while the route reads it and
  cut off with the same 413 just past the limit. Upload routes cap their own bodies sooner
  (app/uploads.py); a multipart body refused here gets their message about the file.

``page_status(request, errors)``: a page whose state has errors answers 422 with the page
and the messages next to their controls; an htmx request keeps 200, because htmx 2 only
swaps 2xx responses (the messages must replace the old view).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from fastapi import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cnnlab.app.errors import InputError, input_error_handler
from cnnlab.app.i18n import gettext as _
from cnnlab.app.i18n import use_locale
from cnnlab.app.images import too_many_bytes
from cnnlab.app.settings import Settings, settings_for
from cnnlab.app.templating import request_locale, wants_fragment

__all__ = ["MAX_BODY_BYTES", "MAX_QUERY_BYTES", "BodyTooLarge", "RequestGuard", "body_limit", "page_status"]

MAX_QUERY_BYTES = 32 * 1024
# JSON bodies: a 1024×1024 input grid of small integers is about 5 MB.
MAX_BODY_BYTES = 16 * 1024 * 1024


def body_limit(settings: Settings) -> int:
    """The most bytes any request body may have (uploads are capped sooner by app/uploads.py)."""
    return max(MAX_BODY_BYTES, settings.max_upload_bytes + 64 * 1024)


def page_status(request: Request, errors: Mapping[str, str] | bool, status_code: int = 422) -> int:
    """``status_code`` for a full page showing bad values; 200 for htmx (which swaps only 2xx)."""
    return status_code if errors and not wants_fragment(request) else 200


class BodyTooLarge(HTTPException):
    """Raised while a route reads a chunked body past the limit; FastAPI passes HTTPExceptions
    through its body parsing untouched, so the app's handler answers 413 with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


def _duplicate(query: str) -> str | None:
    seen: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in seen and seen[key] != value:
            return key
        seen.setdefault(key, value)
    return None


class RequestGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        locale = request_locale(request)
        query = scope.get("query_string", b"")
        problem: tuple[str, int] | None = None
        with use_locale(locale):
            if len(query) > MAX_QUERY_BYTES:
                problem = (_("The address is too long: at most %(limit)s characters after the “?” are accepted.")
                           % {"limit": MAX_QUERY_BYTES}, 414)
            elif scope["method"] in ("GET", "HEAD") and (name := _duplicate(query.decode("latin-1"))) is not None:
                problem = (_("The parameter “%(name)s” appears more than once with different values; give it once.")
                           % {"name": name[:40]}, 400)
            settings = settings_for(scope["app"])
            limit = body_limit(settings)
            if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
                # Only upload forms send multipart: a body this large is a file over the upload
                # cap, said as a file a little over the cap is (app/uploads.py).
                too_large = too_many_bytes(settings).message
            else:
                too_large = (_("The request is too large: at most %(limit)s MB are accepted.")
                             % {"limit": limit // (1024 * 1024)})
            declared = request.headers.get("content-length", "")
            if problem is None and declared.isdigit() and int(declared) > limit:
                problem = (too_large, 413)
        if problem is not None:
            response = await input_error_handler(request, InputError(problem[0], status_code=problem[1]))
            await response(scope, receive, send)
            return
        if declared:
            await self.app(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(too_large)
            return message

        await self.app(scope, counted, send)
