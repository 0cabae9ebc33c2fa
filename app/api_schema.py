"""How error answers are described in the OpenAPI schema (``/openapi.json``).

Every route declares the 4xx statuses it can answer, so a client (and the schema fuzz in
tests/test_schema_fuzz.py) knows them all. Under ``/api`` an error is JSON ``ErrorBody``
(app/errors.py makes it); pages answer with an HTML error page instead.

    @router.post("/api/thing", responses=api_errors(400, 403, 422))
    @router.get("/thing/{id}", responses=page_errors(404, 422))

Which status means what, everywhere:

- 400: the body is not what the route reads (JSON that does not parse, a broken multipart form);
- 403: a state-changing request that another site made a browser send (app/security.py);
- 404: no such thing, or not this browser session's (an image id, a training job);
- 409: not possible yet (a training that has no model to use or save);
- 413 / 415: an upload with too many bytes or pixels / not a picture (app/images.py);
- 422: a value that cannot be used; ``detail`` says why (``errors``: one entry per field);
- 429: too many requests from this browser session or address in a short time (app/ratelimit.py), or
  too many trainings running or waiting (app/jobs/);
- 503 / 507: an upload that cannot be stored: the upload folder is read-only / the disk is full.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

__all__ = [
    "DESCRIPTIONS", "PNG", "ErrorBody", "FieldError", "api_errors", "document_guards", "install_openapi",
    "page_errors", "redirect",
]


class FieldError(BaseModel):
    field: str = Field(description='the value at fault, e.g. "stride" or "kernel"; "" for the whole body')
    message: str = Field(description="what is wrong with it, in the request's language")
    type: str | None = Field(None, description="a machine-readable kind (pydantic's error type)")
    loc: list[str] = Field(default_factory=list, description='where it is: ["body", "stride"], ["query", "size"]')


class ErrorBody(BaseModel):
    """Every error answer under ``/api``."""

    detail: str = Field(description="a sentence a person can act on, in the request's language")
    field: str | None = Field(None, description="the value at fault, when there is one")
    errors: list[FieldError] | None = Field(None, description="with a validation error: one entry per value")


DESCRIPTIONS: dict[int, str] = {
    400: "The body cannot be read: JSON that does not parse, or a broken multipart form.",
    403: "Refused: another site made the browser send this request.",
    404: "No such item in this browser session (unknown or expired id).",
    409: "Not possible in the item's present state (a training with no model yet).",
    413: "Too many bytes, or too many pixels (decompression bomb).",
    415: "Not a picture, or a format other than PNG, JPEG, WebP, BMP, GIF.",
    422: "A value cannot be used; `detail` says why.",
    429: "Too many requests from this browser session or address in a short time; `detail` says how long to wait.",
    503: "The upload cannot be stored now: the server's upload folder is read-only.",
    507: "The upload cannot be stored: the server's disk is full.",
}
# What the middleware (app/guards.py, app/security.py) answers before any route runs.
GUARD_DESCRIPTIONS: dict[int, str] = {
    400: "A query parameter given twice with different values.",
    403: DESCRIPTIONS[403],
    413: "The request body is too large (bytes, or a JSON body's values and lists: app/budget.py).",
    414: "The query string is too long.",
}
# A body's own refusal before its route runs (app/budget.py).
BODY_400 = "A JSON body nested too deeply."


def _described(code: int, descriptions: dict[int, str]) -> str:
    return descriptions.get(code) or DESCRIPTIONS[code]


def api_errors(*codes: int, descriptions: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a JSON route: each code answers an ``ErrorBody``."""
    descriptions = descriptions or {}
    return {code: {"model": ErrorBody, "description": _described(code, descriptions)} for code in codes}


def page_errors(*codes: int, descriptions: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a page: each code answers an HTML error page."""
    descriptions = descriptions or {}
    return {
        code: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": _described(code, descriptions)}
        for code in codes
    }


def redirect(description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entry for a page that may answer ``303 See Other`` (``Location``)."""
    return {303: {"description": description}}


# ``responses=`` entry for a route whose answer is a PNG picture.
PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "The picture as PNG."}}


# --------------------------------------------------------------------------- the middleware's answers


def _error_body_schemas() -> dict[str, Any]:
    _, top = models_json_schema([(ErrorBody, "serialization")], ref_template="#/components/schemas/{model}")
    return top["$defs"]


def document_guards(schema: dict[str, Any]) -> dict[str, Any]:
    """Add to every operation of ``schema`` (in place) the statuses the middleware answers
    before its route runs: 414 for a long query string; on GET a parameter given twice (400);
    on other methods a JSON body nested too deeply (400), a cross-site request (403) and a
    body too large (413). Errors are
    ``ErrorBody`` JSON under ``/api``, pages otherwise. A route's own entry is kept."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in _error_body_schemas().items():
        components.setdefault(name, definition)
    for path, operations in schema.get("paths", {}).items():
        api = path == "/api" or path.startswith("/api/")
        for method, operation in operations.items():
            read = method in ("get", "head")
            codes = (400, 414) if read else (400, 403, 413, 414)
            responses = operation.setdefault("responses", {})
            for code in codes:
                content = ({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}} if api
                           else {"text/html": {"schema": {"type": "string"}}})
                description = BODY_400 if code == 400 and not read else GUARD_DESCRIPTIONS[code]
                responses.setdefault(str(code), {"description": description, "content": content})
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve ``app``'s schema with the middleware's answers documented (``document_guards``)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        return document_guards(build())  # FastAPI caches the schema; adding is idempotent

    app.openapi = openapi  # type: ignore[method-assign]
