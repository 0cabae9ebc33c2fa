"""A browser session: a random id in a signed cookie, so training jobs belong to one browser.

``session_id(request)`` gives the id from the ``cnnlab_session`` cookie when its signature
checks out, otherwise a new one, which ``SessionMiddleware`` (pure ASGI, like
``LocaleMiddleware``) sets on the response (HttpOnly, SameSite=Lax, path /, no expiry: it
ends with the browser, and jobs end long before that anyway).

The id is ``secrets.token_urlsafe(16)``, signed with ``settings.secret_key`` by itsdangerous;
a tampered or foreign cookie is simply replaced by a new session. Nothing is stored server
side: the id only names whose jobs are whose.
"""

from __future__ import annotations

import secrets

from itsdangerous import BadSignature, Signer
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cnnlab.app.i18n import _cookie
from cnnlab.app.settings import Settings, settings_for

__all__ = ["SessionMiddleware", "session_id", "new_session_id", "sign", "unsign"]

_SALT = "cnnlab-session"
# Set in the request state when this request made the session: the response carries its cookie.
_NEW = "session_new"


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


def _signer(settings: Settings) -> Signer:
    return Signer(settings.secret_key.get_secret_value(), salt=_SALT)


def sign(sid: str, settings: Settings) -> str:
    return _signer(settings).sign(sid).decode("ascii")


def unsign(value: str | None, settings: Settings) -> str | None:
    """The session id in a cookie value, or None when it is missing or its signature is wrong."""
    if not value:
        return None
    try:
        return _signer(settings).unsign(value).decode("ascii")
    except (BadSignature, UnicodeError):
        return None


def _cookie_header(sid: str, settings: Settings) -> str:
    return f"{settings.session_cookie}={sign(sid, settings)}; Path=/; SameSite=Lax; HttpOnly"


class SessionMiddleware:
    """Puts the browser's session id, when its cookie is valid, in ``scope["state"]["session_id"]``.

    A session is only created when something needs one (``session_id(request)``): pages that
    never ask send no cookie. A new id is then sent back as a cookie on that response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = settings_for(scope["app"])
        state = scope.setdefault("state", {})
        sid = unsign(_cookie(scope, settings.session_cookie), settings)
        if sid is not None:
            state["session_id"] = sid

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and state.get(_NEW):
                MutableHeaders(scope=message).append("set-cookie", _cookie_header(state["session_id"], settings))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def session_id(request: Request) -> str:
    """The request's session id: the cookie's, or a new one that SessionMiddleware sends back
    as a cookie with this response."""
    sid = getattr(request.state, "session_id", None)
    if sid is None:
        sid = new_session_id()
        request.state.session_id = sid
        setattr(request.state, _NEW, True)
    return sid
