"""The secret key kept between restarts: made once, random, in a file only its user can read.

Sessions, practice scores and picture ids are signed with it, so a key that changed with
every start would reset them all. ``stored_key(folder)`` reads ``folder/secret_key``, or
makes it (32 random bytes, URL-safe, mode 0600) when it is not there yet. The folder and the
file must belong to this user and be closed to others: a key another user could read or
plant would let them forge cookies, so such a folder is a start-up error, not a warning.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

KEY_FILE = "secret_key"
MIN_KEY_CHARS = 32


class UnsafeKeyFile(RuntimeError):
    """The key's folder or file is open to other users, or damaged."""


def _check_private(st: os.stat_result, path: Path, closed_bits: int) -> None:
    if st.st_uid != os.geteuid() or st.st_mode & closed_bits:
        raise UnsafeKeyFile(
            f"{path} must belong to this user and be closed to others (mode {stat.filemode(st.st_mode)}); "
            "fix it, or set CNNLAB_DATA_DIR to a private folder or CNNLAB_SECRET_KEY.")


def stored_key(folder: Path) -> str:
    """The key in ``folder/secret_key``, made on first use."""
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(os.stat(folder), folder, 0o022)
    path = folder / KEY_FILE
    if not os.path.lexists(path):
        # Written whole under another name, then linked: a process starting at the same time
        # sees either no key or the complete one, and the first link wins.
        tmp = folder / f".{KEY_FILE}.{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_urlsafe(32))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, encoding="ascii") as src:
        _check_private(os.fstat(src.fileno()), path, 0o077)
        key = src.read().strip()
    if len(key) < MIN_KEY_CHARS:
        raise UnsafeKeyFile(f"{path} holds no usable key; delete it and a new one is made at the next start.")
    return key
