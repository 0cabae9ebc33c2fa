"""A real cnnlab server in a child process, started as the README starts it (``python -m app``,
the ``cnnlab`` command's code): for tests that need its start-up path, signals, a restart
on the same port, or limits of its own (settings through ``CNNLAB_*`` variables, an
open-file limit). Its upload and data folders are the test's own; its log is a file.

    with CnnlabProcess(tmp_path, CNNLAB_TIMEOUT_KEEP_ALIVE_SECONDS="1") as server:
        server.url("/healthz")
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CnnlabProcess:
    def __init__(self, workdir: Path, *, port: int | None = None, open_files: tuple[int, int] | None = None,
                 **settings: str) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.open_files = open_files
        self.env = {**os.environ, "CNNLAB_UPLOAD_DIR": str(self.workdir / "uploads"),
                    "CNNLAB_DATA_DIR": str(self.workdir / "data"), **settings}
        self.env.pop("CNNLAB_SECRET_KEY", None)
        self.log_path = self.workdir / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> CnnlabProcess:
        limits = self.open_files

        def before_exec() -> None:
            if limits is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)

        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(self.port)], cwd=ROOT,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=before_exec)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url("/healthz"), timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the server did not answer within {START_SECONDS:g} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> float:
        """Send ``sig``; the seconds until the process exited (killed after ``timeout``)."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return time.monotonic() - start

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> CnnlabProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
