"""Security headers on every response, and cross-site writes refused.

``SecurityMiddleware`` is pure ASGI (like ``LocaleMiddleware``), so streamed responses and
server-sent events pass through untouched. It

- adds ``SECURITY_HEADERS`` to every response that does not set them itself: a strict
  Content-Security-Policy (scripts and styles only from this site, so no inline ``<script>``,
  no ``style=""`` and no ``on*=`` handlers in the pages), ``nosniff``, no framing, a
  same-origin opener and referrer, and no powerful browser features;
- refuses a state-changing request (POST, PUT, PATCH, DELETE) that another site made the
  browser send, with 403 and a translated message (JSON under ``/api``, a page otherwise).
  A request is cross-site when ``Sec-Fetch-Site`` says so (``cross-site``, ``same-site``), or,
  from a browser too old to send it, when its ``Origin`` (``null`` included) is not the
  address the request was sent to (``Host``). Requests with neither header (curl, scripts,
  the test client) are allowed: only browsers send them, and only browsers carry a victim's
  cookies. Session cookies are also ``SameSite=Lax`` (app/session.py).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cnnlab.app.errors import _error_page, is_api
from cnnlab.app.i18n import gettext as _

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "SecurityMiddleware", "add_security_headers", "is_cross_site"]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    # The older spelling of frame-ancestors 'none', for browsers that predate it.
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    # Nothing here needs the camera, the microphone, the position or a payment.
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def add_security_headers(headers: MutableHeaders) -> None:
    """Set every security header the response has not set itself."""
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers[name] = value


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None] | None:
    """``("example.org", 443)`` for ``example.org`` with scheme https; None when unreadable."""
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def is_cross_site(headers: Headers) -> bool:
    """True when a browser says (or shows, through ``Origin``) that another site sent this.

    The order is that of Go's ``http.CrossOriginProtection``: a browser's own
    ``Sec-Fetch-Site`` decides when present (pages cannot set it, and it stays right behind a
    proxy that rewrites ``Host``); older browsers are judged by ``Origin`` against ``Host``.
    """
    fetch_site = headers.get("sec-fetch-site", "").strip().lower()
    if fetch_site:
        return fetch_site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False  # not a browser, or an old one that sends neither: SameSite cookies remain
    origin = origin.strip()
    if origin.lower() == "null":  # sandboxed frames, data: pages, some redirects
        return True
    parts = urlsplit(origin)
    if parts.scheme not in _DEFAULT_PORTS:
        return True
    origin_at = _host_port(parts.netloc, parts.scheme)
    # The Host header has no scheme: a missing port means the origin's default one.
    host_at = _host_port(headers.get("host", ""), parts.scheme)
    return origin_at is None or origin_at != host_at


def _refusal(scope: Scope) -> Response:
    request = Request(scope)
    message = _("This request came from another site, so it was refused. Open CNN Lab's own page and try again there.")
    if is_api(request):
        return JSONResponse({"detail": message}, status_code=403)
    return _error_page(request, 403, _("Request refused"), message)


class SecurityMiddleware:
    """Security headers on every response; cross-site state-changing requests get a 403.

    Added inside ``LocaleMiddleware`` so the refusal is written in the request's language.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_security_headers(MutableHeaders(scope=message))
            await send(message)

        if scope["method"] in UNSAFE_METHODS and is_cross_site(Headers(scope=scope)):
            response = _refusal(scope)
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
