"""Jinja2 rendering: one URL answers with the full page or, for htmx, one block of it.

A page template extends ``base.html`` and wraps each swappable part in a named block
holding one element with a stable id::

    {% block content %}
      <form hx-get="/pool" hx-target="#pool-stepper" hx-swap="outerHTML">...</form>
      {% block stepper %}<section id="pool-stepper">...</section>{% endblock %}
    {% endblock %}

and the route hands the block's name to ``render``::

    @router.get("/pool", name="pool")
    def pool_page(request: Request, size: int = 2):
        step = pool_step(...)
        return render(request, "pool.html", {"step": step}, fragment="stepper")

A normal request gets the whole page; an ``HX-Request`` gets only ``{% block stepper %}``
(rendered from the same template, so the markup lives in one place). Every response carries
``Vary: HX-Request, Cookie`` so a cache never serves one for the other.
A block sees the context passed to ``render`` but not ``{% set %}`` variables defined
outside it: compute such values in the route.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from cnnlab.app import i18n, numbers

_PACKAGE_DIR = Path(__file__).resolve().parent


def _asset_dir(name: str) -> Path:
    """Find ``templates/`` or ``static/``.

    An installed wheel carries them inside the package (``setup.py`` copies them there);
    a source checkout or editable install keeps them at the repository root.
    """
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"cannot find the {name}/ folder next to {_PACKAGE_DIR}")


TEMPLATES_DIR = _asset_dir("templates")
STATIC_DIR = _asset_dir("static")

VARY = "HX-Request, Cookie"


def _make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html", "xml"]),
        # A misspelt variable should fail the test that renders it, not print nothing.
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # Collapse whitespace inside {% trans %} so the msgid does not depend on indentation.
    env.policies["ext.i18n.trimmed"] = True
    env.filters.update(numbers.FILTERS)
    env.install_gettext_callables(  # type: ignore[attr-defined]
        i18n.gettext,
        i18n.ngettext,
        newstyle=True,
        pgettext=i18n.pgettext,
        npgettext=i18n.npgettext,
    )
    return env


env = _make_environment()


def wants_fragment(request: Request) -> bool:
    """True for an htmx request that swaps part of the page.

    Boosted links and history restores replace the whole body, so they get the full page.
    """
    headers = request.headers
    return (
        headers.get("hx-request") == "true"
        and headers.get("hx-boosted") != "true"
        and headers.get("hx-history-restore-request") != "true"
    )


def request_locale(request: Request) -> str:
    return getattr(request.state, "locale", i18n.get_locale())


def lang_url(request: Request, locale: str) -> str:
    """This page's path and query with ``lang`` set: switching language keeps the state."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    params.append(("lang", locale))
    return f"{request.url.path}?{urlencode(params)}"


def locale_links(request: Request, query: str, path: str | None = None) -> list[dict[str, Any]]:
    """Language links to ``path?query`` (by default this request's path): for a page whose
    state is the address htmx pushed, not the request's own."""
    locale = request_locale(request)
    base = f"{path or request.url.path}?{query}{'&' if query else ''}"
    return [{"code": code, "name": i18n.LANGUAGE_NAMES[code], "url": f"{base}lang={code}", "current": code == locale}
            for code in i18n.LOCALES]


def base_context(request: Request) -> dict[str, Any]:
    locale = request_locale(request)
    return {
        "request": request,
        "locale": locale,
        "locales": [
            {"code": code, "name": i18n.LANGUAGE_NAMES[code], "url": lang_url(request, code), "current": code == locale}
            for code in i18n.LOCALES
        ],
        "url": lambda name, **params: str(request.app.url_path_for(name, **params)),
        "static": lambda path: str(request.app.url_path_for("static", path=path)),
    }


def render_block(template: Template, block: str, context: Mapping[str, Any]) -> str:
    """Render one named block of ``template`` on its own (what jinja2-fragments does)."""
    try:
        block_render = template.blocks[block]
    except KeyError:
        raise LookupError(f"template {template.name!r} has no block {block!r}") from None
    return env.concat(block_render(template.new_context(dict(context))))  # type: ignore[attr-defined]


def render_text(request: Request, template_name: str, context: Mapping[str, Any] | None = None, *,
                block: str | None = None) -> str:
    """``template_name`` (or only its ``block``) as HTML text, in the request's language."""
    ctx = base_context(request)
    ctx.update(context or {})
    with i18n.use_locale(ctx["locale"]):
        template = env.get_template(template_name)
        return render_block(template, block, ctx) if block is not None else template.render(ctx)


def render(
    request: Request,
    template_name: str,
    context: Mapping[str, Any] | None = None,
    *,
    fragment: str | None = "content",
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """The full page, or only block ``fragment`` when htmx asks (``fragment=None``: always full)."""
    block = fragment if fragment is not None and wants_fragment(request) else None
    html = render_text(request, template_name, context, block=block)
    response = HTMLResponse(html, status_code=status_code, headers=dict(headers or {}))
    add_vary(response, VARY)
    return response


def add_vary(response: HTMLResponse, value: str) -> None:
    present = [v.strip().lower() for v in response.headers.get("vary", "").split(",") if v.strip()]
    missing = [v.strip() for v in value.split(",") if v.strip().lower() not in present]
    if missing:
        response.headers["vary"] = ", ".join(filter(None, [response.headers.get("vary", "")] + missing))
