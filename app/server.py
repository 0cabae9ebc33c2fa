"""How ``cnnlab`` serves the app: uvicorn, plus what it lacks for a room of phones on Wi-Fi.

- **Timeouts for every connection** (``GuardedH11Protocol``). uvicorn closes a keep-alive
  connection only once it has answered something on it, and has no timeout for reading a
  request: a socket that never sends a byte, or sends half the headers, or half a body,
  was kept for ever. Here a silent connection closes after ``timeout_keep_alive_seconds``,
  a request's headers must be whole ``timeout_request_headers_seconds`` after its first
  byte (sending them a byte at a time does not help), and its body may pause at most
  ``timeout_request_body_seconds``. Streams being answered are not touched.
- **Connections are capped** at ``max_connections`` in all (never more than the open-file
  limit allows) and ``max_connections_per_address`` per client address (a trusted proxy
  is not capped: it carries many clients). A connection past a cap is answered 503 and
  closed at once, before its request is read, so it costs one file for an instant.
- **The open-file limit** is raised to its hard limit at start (``raise_open_file_limit``).
- **A log that cannot flood** (``RepeatFilter``): the same warning or error is written at
  most ``REPEATS_PER_SECOND`` times a second, then counted, and the count is written once.
- **Shutdown** (``Server``): on SIGTERM or Ctrl-C every event stream ends within moments
  with a last event saying so (app/eventstream.py), instead of uvicorn waiting for screens
  that never close; whatever still hangs is cancelled after ``GRACEFUL_SHUTDOWN_SECONDS``.
- **Several web processes** (``Supervisor``, ``cnnlab --workers N``): a parent binds the
  socket once and runs N children, each the guarded server above on that socket (the kernel
  spreads connections between them); a child that dies is replaced; SIGTERM or Ctrl-C stops
  them all. They share state through Valkey (app/backend.py), so N > 1 needs
  ``CNNLAB_REDIS_URL`` (app/cli.py checks it).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import logging.config
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import h11
import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

from cnnlab.app.clientaddr import is_trusted
from cnnlab.app.eventstream import stop_streams
from cnnlab.app.settings import Settings, get_settings
from cnnlab.app.supervise import die_with_parent

log = logging.getLogger("uvicorn.error")

# Files the process needs besides connections: its own, uploads, two pipes per training.
FILES_RESERVED = 64
GRACEFUL_SHUTDOWN_SECONDS = 3
REPEATS_PER_SECOND = 3

REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
           b"connection: close\r\ncontent-length: %d\r\n\r\n%s")
REFUSED_TEXT = ("Demasiadas conexiones abiertas; inténtalo de nuevo en un momento.\n"
                "Too many connections are open; try again in a moment.\n").encode()


# ============================================================================== open files


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # not allowed here: keep what there is
            pass
    return soft


def connection_cap(settings: Settings, open_files: int) -> int:
    """At most ``max_connections``, and never so many that the process runs out of files."""
    return max(1, min(settings.max_connections, open_files - FILES_RESERVED))


# ============================================================================== connections


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with read timeouts and connection caps (module docstring)."""

    # Set by ``make_server`` before the first connection.
    limits: Settings
    max_connections: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timer: asyncio.TimerHandle | None = None
        self.reading_headers = False
        self.address: str | None = None  # counted against its address while open

    # -- opening and closing ----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        by_address = _counts(self.server_state)
        address = self.client[0] if self.client else "unknown"
        capped = not is_trusted(address, self.limits.trusted_proxies)
        if len(self.connections) > self.max_connections or (
                capped and by_address[address] >= self.limits.max_connections_per_address):
            log.warning("Refused a connection from %s: too many connections open", address)
            transport.write(REFUSED % (len(REFUSED_TEXT), REFUSED_TEXT))
            transport.close()
            return
        self.address = address
        by_address[address] += 1
        # uvicorn arms this only after a response: a connection that never sent a byte stayed.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        if self.address is not None:
            by_address = _counts(self.server_state)
            by_address[self.address] -= 1
            if by_address[self.address] <= 0:
                del by_address[self.address]
            self.address = None
        super().connection_lost(exc)

    # -- reading a request --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            self._stop_read_timer()
        elif self.conn.their_state is h11.IDLE:
            # Part of a request's headers is here: all of them are due by a fixed deadline,
            # however slowly they trickle in.
            if not self.reading_headers:
                self._start_read_timer(self.limits.timeout_request_headers_seconds)
                self.reading_headers = True
        elif self.conn.their_state is h11.SEND_BODY:
            # A body may take long (a photo over poor Wi-Fi) but not stop: each piece re-arms.
            self.reading_headers = False
            self._start_read_timer(self.limits.timeout_request_body_seconds)
        else:
            self._stop_read_timer()

    def on_response_complete(self) -> None:
        self.reading_headers = False
        super().on_response_complete()

    def _start_read_timer(self, seconds: float) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
        self.read_timer = self.loop.call_later(seconds, self._read_timed_out, seconds)

    def _stop_read_timer(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None
        self.reading_headers = False

    def _read_timed_out(self, seconds: float) -> None:
        self.read_timer = None
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return
        if self.flow.read_paused:  # we stopped reading (the app is behind), not the client
            self._start_read_timer(seconds)
            return
        self.transport.close()


def _counts(server_state: Any) -> Counter[str]:
    """Open connections per client address, kept beside uvicorn's set of connections."""
    counts = getattr(server_state, "cnnlab_by_address", None)
    if counts is None:
        counts = server_state.cnnlab_by_address = Counter()
    return counts


# ============================================================================== the log


class RepeatFilter(logging.Filter):
    """At most ``per_second`` warnings or errors a second with the same logger, level,
    message and exception type; the rest are dropped, and how many is said once the second is
    over. Information (the access log) always passes."""

    def __init__(self, per_second: int = REPEATS_PER_SECOND) -> None:
        super().__init__()
        self.per_second = per_second
        self._lock = threading.Lock()
        self._second = 0
        self._seen: Counter[tuple] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg), record.exc_info[0] if record.exc_info else None)
        second = int(time.monotonic())
        with self._lock:
            dropped = 0
            if second != self._second:
                dropped = sum(n - self.per_second for n in self._seen.values() if n > self.per_second)
                self._second = second
                self._seen.clear()
            self._seen[key] += 1
            allowed = self._seen[key] <= self.per_second
        if dropped:
            logging.getLogger("cnnlab.log").warning("%d repeated log messages were not written", dropped)
        return allowed


def logging_config() -> dict[str, Any]:
    """uvicorn's logging, with every handler behind one RepeatFilter; records of other
    loggers (asyncio, the app) go to the same stderr handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"repeats": {"()": RepeatFilter}}
    for handler in config["handlers"].values():
        handler["filters"] = ["repeats"]
    config["root"] = {"handlers": ["default"], "level": "WARNING"}
    return config


# ============================================================================== the server


class Server(uvicorn.Server):
    """uvicorn's server; at shutdown, the app's event streams end first."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.cnnlab_app = app

    async def shutdown(self, sockets: Any = None) -> None:
        stop_streams(self.cnnlab_app)
        await super().shutdown(sockets)


def make_server(app: Any, host: str, port: int, settings: Settings | None = None) -> Server:
    """The server ``cnnlab`` runs: ``app`` on ``host:port`` with the guards above."""
    settings = settings or get_settings()
    GuardedH11Protocol.limits = settings
    GuardedH11Protocol.max_connections = connection_cap(settings, raise_open_file_limit())
    config = uvicorn.Config(
        app, host=host, port=port, http=GuardedH11Protocol, log_config=logging_config(),
        timeout_keep_alive=settings.timeout_keep_alive_seconds,  # type: ignore[arg-type]
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # app/clientaddr.py decides whose X-Forwarded-For to believe (CNNLAB_TRUSTED_PROXIES);
        # uvicorn's own would believe any client on 127.0.0.1.
        proxy_headers=False,
    )
    return Server(config, app)


# ============================================================================== several processes

# A child that exits this soon after its start failed to start (a bad setting, the app cannot
# be imported): starting it again would fail the same way, so everything stops.
STARTUP_SECONDS = 10.0
# After SIGTERM, each child has its graceful shutdown and this much more before it is killed.
STOP_MARGIN_SECONDS = 5.0


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket every child serves (bound once, here, by the parent)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cnnlab: error: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve_child(fd: int, host: str, port: int) -> None:
    """One web process of ``Supervisor``: the app and the guarded server, on the listening
    socket inherited as file descriptor ``fd``."""
    sock = socket.socket(fileno=fd)
    try:
        from cnnlab.app.main import app

        make_server(app, host, port).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the terminal; the parent stops the rest
        pass


class Supervisor:
    """``workers`` web processes on ``host:port`` (module docstring)."""

    def __init__(self, host: str, port: int, workers: int) -> None:
        self.host, self.port, self.workers = host, port, workers
        self.stopping = threading.Event()
        self.children: list[tuple[subprocess.Popen, float]] = []

    def _start_child(self, sock: socket.socket) -> tuple[subprocess.Popen, float]:
        # A fresh interpreter per child (nothing of this process is inherited but the socket),
        # whatever script started this one.
        code = f"from cnnlab.app.server import serve_child; serve_child({sock.fileno()}, {self.host!r}, {self.port})"
        child = subprocess.Popen([sys.executable, "-c", code], pass_fds=[sock.fileno()], preexec_fn=lambda: die_with_parent(signal.SIGTERM))
        log.info("Started web process [%d]", child.pid)
        return child, time.monotonic()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stopping.set()

    def run(self) -> int:
        """Serve until SIGTERM or Ctrl-C; the exit code (0, or 1 when a child could not start)."""
        logging.config.dictConfig(logging_config())
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        sock = bind_socket(self.host, self.port)
        log.info("Supervisor [%d]: %d web processes on http://%s:%d", os.getpid(), self.workers, self.host, self.port)
        code = 0
        try:
            self.children = [self._start_child(sock) for _ in range(self.workers)]
            while not self.stopping.wait(0.5):
                for index, (child, started) in enumerate(self.children):
                    if child.poll() is None:
                        continue
                    if time.monotonic() - started < STARTUP_SECONDS:
                        log.error("Web process [%d] exited with code %s while starting; stopping",
                                  child.pid, child.returncode)
                        code = 1
                        self.stopping.set()
                        break
                    log.warning("Web process [%d] exited with code %s; starting another",
                                child.pid, child.returncode)
                    self.children[index] = self._start_child(sock)
        finally:
            self._stop_children()
            sock.close()
        log.info("Supervisor [%d]: stopped", os.getpid())
        return code

    def _stop_children(self) -> None:
        for child, _ in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)  # each shuts down as a single server does
        deadline = time.monotonic() + GRACEFUL_SHUTDOWN_SECONDS + STOP_MARGIN_SECONDS
        for child, _ in self.children:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("Web process [%d] did not stop in time; killed", child.pid)
                child.kill()
                child.wait()
