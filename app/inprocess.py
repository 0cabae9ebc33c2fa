"""Asking the app itself, in this process: one ASGI request and its whole answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

__all__ = ["asgi_get"]


async def asgi_get(app: Any, path: str, query: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> tuple[int, dict[str, str], bytes]:
    """One GET request through the ASGI ``app``, in this process: (status, headers, body).

    No lifespan, no socket: for what the app already holds or computes in a request (a page's
    notebook for ``cnnlab notebook``, a stepper fragment a class stream sends to its phones)."""
    given = {name for name, _ in headers}
    defaults = [(name, value) for name, value in ((b"host", b"127.0.0.1:8000"), (b"user-agent", b"cnnlab"))
                if name not in given]
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 0),
        "root_path": "", "path": unquote(path), "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [*defaults, *headers],
    }
    status = 0
    response_headers: dict[str, str] = {}
    body: list[bytes] = []
    answered = asyncio.Event()
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.update((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in message["headers"])
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    await app(scope, receive, send)
    return status, response_headers, b"".join(body)
