"""Who may do what in a class: join codes, the assistant's secret, and the views a class can
be shown.

The code is read off a projector and typed on a phone; everyone in the room knows it. The
assistant's control is bound to their browser by a secret (an unguessable token in an
HttpOnly cookie named after the class); the store keeps only its SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request

from cnnlab.app.classroom.room import Room
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.lesson import SECTIONS

__all__ = ["CODE_ALPHABET", "CODE_LENGTH", "clean_view", "code_ok", "host_cookie", "is_host", "new_code",
           "new_secret", "normalise_code"]

# Codes are read off a projector and typed on a phone: no 0/O, 1/I/L.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
# Six characters: 31⁶ ≈ 888 million codes, so that guessing one of the classes open, at the
# failed-look-up throttle (README, "Security"), takes longer than a school term.
CODE_LENGTH = 6
MAX_VIEW_LENGTH = 4096
# The pages a class can be shown: the lesson's pages (and the home page).
VIEW_PATHS = frozenset({"/"} | {s.path for s in SECTIONS})


# ============================================================================== codes and secrets


def new_code() -> str:
    """A fresh random join code (the store checks that it is free)."""
    return "".join(secrets.choice(CODE_ALPHABET) for _i in range(CODE_LENGTH))


def normalise_code(text: str) -> str:
    """What a person typed -> a code to look up ("k7qx2 " -> "K7QX2")."""
    return "".join(text.split()).upper()[:16]


def code_ok(code: str) -> bool:
    return len(code) == CODE_LENGTH and all(c in CODE_ALPHABET for c in code)


def new_secret() -> tuple[str, str]:
    """(token for the assistant's cookie, its hash for the store)."""
    token = secrets.token_urlsafe(32)
    return token, _hash(token)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def host_cookie(code: str) -> str:
    return f"cnnlab_class_{code}"


def is_host(request: Request, room: Room) -> bool:
    token = request.cookies.get(host_cookie(room.code))
    return bool(token) and hmac.compare_digest(_hash(token), room.secret_hash)


# ============================================================================== views


def clean_view(url: str) -> str:
    """A view the class can be shown: a same-site path of a lesson page and its query,
    without ``lang`` (every student keeps their own language). Anything else: a 422."""
    url = (url or "").strip()
    if not url or len(url) > MAX_VIEW_LENGTH:
        raise InputError(_("The page address is missing or too long."), field="url")
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not url.startswith("/") or url.startswith("//") or "\\" in url:
        raise InputError(_("Only an address of this site (a path starting with “/”) can be shown to the class."),
                         field="url")
    if parts.path not in VIEW_PATHS:
        raise InputError(_("Only the lesson's pages can be shown to the class."), field="url")
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "lang"]
    return parts.path + (f"?{urlencode(pairs)}" if pairs else "")
