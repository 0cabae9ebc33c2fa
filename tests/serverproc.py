"""A real cnnlab server in a child process, started as the README starts it (``python -m app``,
the ``cnnlab`` command's code): for tests that need its start-up path, signals, a restart
on the same port, or limits of its own (settings through ``CNNLAB_*`` variables, an
open-file limit). Its upload and data folders are the test's own; its log is a file.

    with CnnlabProcess(tmp_path, CNNLAB_TIMEOUT_KEEP_ALIVE_SECONDS="1") as server:
        server.url("/healthz")

``WorkerProcess`` is a training worker (``python -m app.jobs.worker``) the same way, for
the shared-engine tests (tests/test_scaleout.py). Settings passed in win over the caller's
environment, ``CNNLAB_SECRET_KEY`` included (processes that share one pass the same).
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


def child_env(workdir: Path, settings: dict[str, str]) -> dict[str, str]:
    """The environment of a child: this one's, the test's folders, then ``settings``. A
    ``CNNLAB_SECRET_KEY`` of the caller's own environment is left out (the child keeps its
    own key in its data folder), but one passed in ``settings`` wins: processes that must
    agree on signed cookies are given the same one."""
    env = {**os.environ, "CNNLAB_UPLOAD_DIR": str(workdir / "uploads"), "CNNLAB_DATA_DIR": str(workdir / "data")}
    env.pop("CNNLAB_SECRET_KEY", None)
    if settings.get("CNNLAB_REDIS_URL"):  # `cnnlab` then requires one key, the same in every process
        env["CNNLAB_SECRET_KEY"] = "test-key-shared-by-every-process"
    env.update(settings)
    return env


class CnnlabProcess:
    def __init__(self, workdir: Path, *, port: int | None = None, open_files: tuple[int, int] | None = None,
                 **settings: str) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.open_files = open_files
        self.env = child_env(self.workdir, settings)
        self.log_path = self.workdir / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, wait: bool = True) -> CnnlabProcess:
        limits = self.open_files

        def before_exec() -> None:
            if limits is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)

        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "--port", str(self.port)], cwd=ROOT,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=before_exec)
        if not wait:  # several started at once: wait_ready() each afterwards
            return self
        return self.wait_ready()

    def wait_ready(self) -> CnnlabProcess:
        """Wait until the started server answers /healthz (it failed to start: RuntimeError)."""
        assert self.proc is not None
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

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (by default kill -9) and wait until the process has exited."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def __enter__(self) -> CnnlabProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


class WorkerProcess:
    """A training worker in a child process, started as the README starts one
    (``python -m app.jobs.worker``, the code of ``cnnlab worker``), on ``CNNLAB_REDIS_URL``
    (required in ``settings``). Environment as ``CnnlabProcess``'s; its log is a file.

    It runs in a process group of its own, and ``kill()`` signals the whole group: a worker
    that trains in a forked child (RQ's work horse) dies with it, as on a machine that goes
    away.

        with WorkerProcess(tmp_path, CNNLAB_REDIS_URL=url) as worker:
            ...
            worker.kill()           # kill -9, mid-job
    """

    count = 0

    def __init__(self, workdir: Path, **settings: str) -> None:
        if not settings.get("CNNLAB_REDIS_URL"):
            raise ValueError("a worker needs CNNLAB_REDIS_URL")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = child_env(self.workdir, settings)
        WorkerProcess.count += 1
        self.log_path = self.workdir / f"worker-{os.getpid()}-{WorkerProcess.count}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def registered(self) -> bool:
        """The worker has registered itself in Valkey (RQ's list of workers)."""
        import redis
        from rq import Worker

        connection = redis.Redis.from_url(self.env["CNNLAB_REDIS_URL"], socket_timeout=2, socket_connect_timeout=1)
        try:
            return any(w.pid == self.pid for w in Worker.all(connection=connection))
        except redis.exceptions.RedisError:
            return False
        finally:
            connection.close()

    def start(self, wait: bool = True) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "cnnlab.app.jobs.worker"], cwd=ROOT, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self.wait_ready() if wait else self

    def wait_ready(self) -> WorkerProcess:
        """Wait until the started worker has registered (it failed to start: RuntimeError)."""
        assert self.proc is not None
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.proc.returncode}:\n{self.log()}")
            if self.registered():
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the worker did not register within {START_SECONDS:g} s:\n{self.log()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (by default kill -9) to the worker's process group; wait until the
        worker has exited."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:  # the group is gone already
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
