"""Translations: gettext catalogs compiled in memory from the shipped ``.po`` files.

Message ids are English; ``app/locale/es/LC_MESSAGES/messages.po`` holds the Spanish text
(the English catalog is empty on purpose: an untranslated msgid is already English).

Marking strings:
- templates: ``{{ _("Pooling") }}``, ``{{ _("Step %(k)s of %(n)s", k=k, n=n) }}`` or
  ``{% trans %}...{% endtrans %}``;
- Python: ``from app.i18n import gettext as _`` inside a request, or ``N_("...")`` for
  module-level text that is translated later (``_(item.title)`` in the template).

The locale of a request is chosen by ``LocaleMiddleware`` (``?lang=`` then the cookie then
the default, never Accept-Language: the course is taught in Spanish) and kept in a context
variable, so ``gettext`` works anywhere below the request without passing it around.
"""

from __future__ import annotations

import contextvars
import io
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cnnlab.app.numbers import use_numbers
from cnnlab.app.settings import settings_for

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"
LOCALES = ("es", "en")
LANGUAGE_NAMES = {"es": "Español", "en": "English"}

_current_locale: contextvars.ContextVar[str] = contextvars.ContextVar("cnnlab_locale", default="es")


def po_path(locale: str) -> Path:
    return LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"


@lru_cache(maxsize=len(LOCALES))
def get_translations(locale: str) -> Translations:
    """Read ``locale``'s .po file and compile it in memory (no .mo build step at install).

    Fuzzy entries are left out, as ``msgfmt`` does: a guess is not a translation.
    """
    if locale not in LOCALES:
        raise ValueError(f"unsupported locale {locale!r}; expected one of {LOCALES}")
    with po_path(locale).open("rb") as fh:
        catalog = read_po(fh, locale=locale, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(fp=buf, domain=DOMAIN)


def get_locale() -> str:
    return _current_locale.get()


@contextmanager
def use_locale(locale: str) -> Iterator[None]:
    """Translate everything inside the block into ``locale``, numbers included (tests and
    background jobs)."""
    token = _current_locale.set(locale)
    try:
        with use_numbers(locale):
            yield
    finally:
        _current_locale.reset(token)


def gettext(message: str) -> str:
    return get_translations(get_locale()).ugettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return get_translations(get_locale()).ungettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    return get_translations(get_locale()).upgettext(context, message)


def npgettext(context: str, singular: str, plural: str, n: int) -> str:
    return get_translations(get_locale()).unpgettext(context, singular, plural, n)


def N_(message: str) -> str:
    """Mark ``message`` for extraction without translating it yet."""
    return message


def negotiate_locale(query_lang: str | None, cookie_lang: str | None, default: str) -> tuple[str, bool]:
    """Pick the locale: ``?lang=`` first, then the cookie, then ``default``.

    Returns ``(locale, remember)``; ``remember`` is true when the query parameter chose it and
    the cookie should be (re)set.
    """
    if query_lang in LOCALES:
        return query_lang, True
    if cookie_lang in LOCALES:
        return cookie_lang, False
    return default, False


class LocaleMiddleware:
    """Sets the request's locale (context variable and ``request.state.locale``).

    A pure ASGI middleware rather than ``BaseHTTPMiddleware``: the route then runs in the
    same context, so the context variable is visible to it, and streaming responses
    (server-sent events) are passed through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = settings_for(scope["app"])
        query_lang = _first(parse_qs(scope.get("query_string", b"").decode("latin-1")).get("lang"))
        cookie_lang = _cookie(scope, settings.locale_cookie)
        locale, remember = negotiate_locale(query_lang, cookie_lang, settings.default_locale)
        scope.setdefault("state", {})["locale"] = locale

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if remember:
                    headers.append(
                        "set-cookie",
                        f"{settings.locale_cookie}={locale}; Max-Age={settings.locale_cookie_max_age}; "
                        "Path=/; SameSite=Lax; HttpOnly",
                    )
                if "content-language" not in headers:
                    headers["content-language"] = locale
            await send(message)

        token = _current_locale.set(locale)
        # A page writes numbers the locale's way (0,5 in Spanish); the JSON API keeps a
        # decimal point in its texts, like its numbers.
        numbers_locale = None if scope.get("path", "").startswith("/api/") else locale
        try:
            with use_numbers(numbers_locale):
                await self.app(scope, receive, send_with_cookie)
        finally:
            _current_locale.reset(token)


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except CookieError:  # a malformed Cookie header must not break the page
                continue
            if name in jar:
                return jar[name].value
    return None
