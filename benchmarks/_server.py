"""What the load benchmarks share: the real server on a free loopback port (waiting until it
answers, stopping it), and reading a stepper's form from a page."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(proc: subprocess.Popen, port: int, log: Path | None = None, timeout: float = 30.0) -> subprocess.Popen:
    """Returns ``proc`` once GET /healthz on ``port`` answers 200; exits the benchmark if the
    server exits first (with ``log``'s text when given) or does not answer within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}"
                             + (f":\n{log.read_text()}" if log else ""))
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return proc
            finally:
                conn.close()
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the server did not answer /healthz within {timeout:g} s")


def stop_server(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Sends ``sig`` (SIGINT: uvicorn shuts down as on Ctrl-C) and kills ``proc`` if it has not
    exited within ``timeout`` seconds."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


class StepperForm(HTMLParser):
    """The hidden state fields and ``data-steps`` of ``form#<form_id>`` (a stepper)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.fields: list[tuple[str, str]] = []
        self.steps: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and a.get("id") == self.form_id:
            self.inside = True
            self.steps = int(a.get("data-steps") or 0)
        elif self.inside and tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.fields.append((a["name"], a.get("value") or ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
