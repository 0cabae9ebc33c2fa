"""Every failure becomes a clear message in the request's language, never a stack trace.

Under ``/api`` the answer is JSON ``{"detail": "<readable message>"}`` with a 4xx status
(validation errors add ``"errors"``: one entry per field). Pages get ``error.html``.

Routes that check input themselves raise ``InputError(_("..."))``: the same handlers turn
it into a 422 JSON body or an error page.

With a shared engine (``CNNLAB_REDIS_URL``), a Valkey that cannot be reached (redis-py's
``ConnectionError`` or ``TimeoutError``, raised by any route, store or middleware) is a 503
with ``Retry-After`` and a sentence saying so, never a 500: code lets those propagate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, PlainTextResponse, Response

from cnnlab.app.i18n import N_, gettext, use_locale
from cnnlab.app.templating import render, request_locale

log = logging.getLogger(__name__)


# Valkey cannot be reached (the same pair as app/backend.SharedStoreDown; not imported from
# there, which imports the settings and the app state).
SHARED_STORE_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Seconds a client is told to wait: a restarted Valkey is back within moments.
SHARED_STORE_RETRY_SECONDS = 5


class InputError(Exception):
    """Bad input a person can fix; ``message`` is already translated."""

    def __init__(self, message: str, *, field: str | None = None, status_code: int = 422,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status_code = status_code
        self.headers = headers or {}  # e.g. Retry-After on a 429

    @classmethod
    def of(cls, errors: dict[str, str]) -> "InputError":
        """A page's messages (field → message, already translated) as one refusal naming the first field."""
        return cls("; ".join(errors.values()), field=next(iter(errors)))


def is_api(request: Request) -> bool:
    path = request.url.path
    return path == "/api" or path.startswith("/api/")


# Pydantic's messages are English; these cover what a person can type into a form or a URL.
_VALIDATION_MESSAGES = {
    "missing": N_("This value is required."),
    "json_invalid": N_("The body is not valid JSON (the error is at character %(position)s)."),
    "int_parsing": N_("Enter a whole number."),
    "int_type": N_("Enter a whole number."),
    "int_from_float": N_("Enter a whole number."),
    "float_parsing": N_("Enter a number."),
    "float_type": N_("Enter a number."),
    "list_type": N_("Enter a list of numbers."),
    "finite_number": N_("Enter a finite number (not NaN or infinity)."),
    "bool_parsing": N_("Enter true or false."),
    "greater_than": N_("Must be greater than %(gt)s."),
    "greater_than_equal": N_("Must be at least %(ge)s."),
    "less_than": N_("Must be less than %(lt)s."),
    "less_than_equal": N_("Must be at most %(le)s."),
    "literal_error": N_("Must be one of: %(expected)s."),
    "enum": N_("Must be one of: %(expected)s."),
    "string_too_short": N_("Too short: at least %(min_length)s characters."),
    "string_too_long": N_("Too long: at most %(max_length)s characters."),
    "string_pattern_mismatch": N_("This value is not one of the accepted ones."),
    "too_short": N_("Too few values: at least %(min_length)s."),
    "too_long": N_("Too many values: at most %(max_length)s."),
}


def describe_validation_errors(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ``{"field", "message", "type", "loc"}`` per error, the message in the current locale."""
    described = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ())]
        # ("query", "stride") -> "stride"; a body error keeps its path inside the body.
        field = ".".join(loc[1:] if loc and loc[0] in {"query", "path", "body", "header", "cookie"} else loc)
        if err.get("type") == "json_invalid":
            # ("body", 35): the position of the error in the body, not a field.
            err = {**err, "ctx": {**(err.get("ctx") or {}), "position": field}}
            field = ""
        template = _VALIDATION_MESSAGES.get(err.get("type", ""))
        if err.get("type") == "value_error" and "error" in (err.get("ctx") or {}):
            # Our own validators raise ValueError with a sentence already in the request's
            # language; pydantic would prefix it with "Value error, ".
            message = str(err["ctx"]["error"])
        elif template is None:
            message = str(err.get("msg", ""))
        else:
            ctx = {key: str(value) for key, value in (err.get("ctx") or {}).items()}
            try:
                message = gettext(template) % ctx
            except (KeyError, ValueError):
                message = str(err.get("msg", ""))
        described.append({"field": field, "message": message, "type": err.get("type"), "loc": loc})
    return described


def _error_page(request: Request, status_code: int, title: str, message: str, items: Sequence[dict[str, Any]] = ()) -> Response:
    try:
        return render(
            request,
            "error.html",
            {"status_code": status_code, "title": title, "message": message, "items": list(items)},
            fragment="content",
            status_code=status_code,
        )
    except Exception:  # the error page itself must never turn into a 500 with a trace
        log.exception("error page failed to render")
        return PlainTextResponse(f"{status_code} {title}\n{message}\n", status_code=status_code)


async def validation_error_handler(request: Request, exc: RequestValidationError) -> Response:
    with use_locale(request_locale(request)):
        items = describe_validation_errors(exc.errors())
        if is_api(request):
            detail = "; ".join(f"{item['field']}: {item['message']}" if item["field"] else item["message"] for item in items)
            return JSONResponse({"detail": detail, "errors": items}, status_code=422)
        return _error_page(
            request,
            422,
            gettext("Some values are not valid"),
            gettext("Please correct these values and try again:"),
            items,
        )


async def input_error_handler(request: Request, exc: InputError) -> Response:
    with use_locale(request_locale(request)):
        if is_api(request):
            body: dict[str, Any] = {"detail": exc.message}
            if exc.field:
                body["field"] = exc.field
            return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
        # A rate limit (app/ratelimit.py), a missing thing or a refusal is not a wrong value: say what it is.
        title = gettext(_INPUT_ERROR_TITLES.get(exc.status_code, N_("Some values are not valid")))
        response = _error_page(request, exc.status_code, title, exc.message)
        response.headers.update(exc.headers)
        return response


_INPUT_ERROR_TITLES = {
    403: N_("Not allowed"),
    404: N_("Not found"),
    429: N_("Too many requests"),
    503: N_("The server cannot store this now"),
    507: N_("The server cannot store this now"),
}


# FastAPI's and Starlette's own English details, said in the request's language under /api.
_FRAMEWORK_DETAILS = {
    "There was an error parsing the body": N_("The request body cannot be read: send JSON in UTF-8, or a multipart form."),
    "Not Found": N_("There is no page at this address."),
    "Method Not Allowed": N_("This address does not accept that kind of request."),
}


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> Response:
    headers = getattr(exc, "headers", None)
    with use_locale(request_locale(request)):
        if is_api(request):
            detail = exc.detail
            if isinstance(detail, str) and detail in _FRAMEWORK_DETAILS:
                detail = gettext(_FRAMEWORK_DETAILS[detail])
            return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)
        default_phrase = _phrase(exc.status_code)
        custom = exc.detail if isinstance(exc.detail, str) and exc.detail != default_phrase else None
        if exc.status_code == 404:
            title, message = gettext("Page not found"), gettext("There is no page at this address.")
        elif exc.status_code == 405:
            title, message = gettext("Method not allowed"), gettext("This address does not accept that kind of request.")
        else:
            title, message = gettext("Something went wrong"), gettext("The request could not be completed.")
        response = _error_page(request, exc.status_code, title, custom or message)
        if headers:
            response.headers.update(headers)
        return response


def _shared_store_down(request: Request) -> Response:
    with use_locale(request_locale(request)):
        message = gettext("The shared store of the server is not answering; try again in a few seconds.")
        headers = {"Retry-After": str(SHARED_STORE_RETRY_SECONDS)}
        if is_api(request):
            return JSONResponse({"detail": message}, status_code=503, headers=headers)
        response = _error_page(request, 503, gettext("Unavailable for a moment"), message)
        response.headers.update(headers)
        return response


async def shared_store_down_handler(request: Request, exc: Exception) -> Response:
    log.warning("the shared store is not answering (%s %s): %s", request.method, request.url.path, exc)
    return _shared_store_down(request)


async def server_error_handler(request: Request, exc: Exception) -> Response:
    # Starlette logs the exception and re-raises it after this response is sent. This answer is
    # sent from outside every middleware, so it carries the security headers itself.
    from cnnlab.app.security import add_security_headers

    if isinstance(exc, SHARED_STORE_DOWN):  # raised in a middleware, outside the routes' handlers
        response = _shared_store_down(request)
        add_security_headers(response.headers)
        return response
    with use_locale(request_locale(request)):
        if is_api(request):
            response: Response = JSONResponse(
                {"detail": gettext("Internal error: the server could not complete the request.")}, status_code=500)
        else:
            response = _error_page(
                request,
                500,
                gettext("Something went wrong"),
                gettext("The server could not complete the request. Please try again."),
            )
    add_security_headers(response.headers)
    return response


def _phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return ""


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(InputError, input_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error_handler)  # type: ignore[arg-type]
    for exc_type in SHARED_STORE_DOWN:
        app.add_exception_handler(exc_type, shared_store_down_handler)
    app.add_exception_handler(Exception, server_error_handler)


__all__ = ["SHARED_STORE_DOWN", "InputError", "describe_validation_errors", "install_error_handlers", "is_api"]
