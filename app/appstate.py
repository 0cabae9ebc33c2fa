"""One shared object per app (the class store, the event-stream registry…), made on first use.

The app's ``state`` is shared by the event loop and worker threads (sync routes, the cleanup
sweep), so the first use is made under a lock: two threads never make two of them. The lock
is reentrant: making one may make another first (Valkey's class store needs the app's Hub).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.RLock()


def shared(app: Any, name: str, make: Callable[[], T]) -> T:
    """``app.state.<name>``, made with ``make()`` the first time it is asked for."""
    found = getattr(app.state, name, None)
    if found is None:
        with _lock:
            found = getattr(app.state, name, None)
            if found is None:
                found = make()
                setattr(app.state, name, found)
    return found
