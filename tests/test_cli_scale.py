"""`cnnlab` for a whole course (app/cli.py, app/server.Supervisor): its start-up checks, and
`--workers N` as N real web processes on one port that stop together.

Which process answered a request is read from the kernel, not from the app: the server side
of the request's connection is a socket that exactly one process holds (/proc, Linux).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.serverproc import ROOT, child_env, free_port

KEY_MESSAGE = "CNNLAB_SECRET_KEY must be set too"
START_SECONDS = 60.0


def run(args: list[str], tmp_path: Path, *, command: list[str] | None = None, **settings: str):
    env = child_env(tmp_path, settings)
    env.pop("CNNLAB_SECRET_KEY", None)
    if "CNNLAB_SECRET_KEY" in settings:
        env["CNNLAB_SECRET_KEY"] = settings["CNNLAB_SECRET_KEY"]
    return subprocess.run((command or [sys.executable, "-m", "cnnlab"]) + args, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# ---------------------------------------------------------------- start-up checks ----------


def cnnlab_commands() -> list[list[str]]:
    """`python -m app`, and the installed `cnnlab` script when it is there."""
    commands = [[sys.executable, "-m", "cnnlab"]]
    script = Path(sys.executable).parent / "cnnlab"
    if script.exists() or shutil.which("cnnlab"):
        commands.append([str(script) if script.exists() else shutil.which("cnnlab")])
    return commands


@pytest.mark.parametrize("command", cnnlab_commands(), ids=lambda c: Path(c[-1]).name)
def test_a_shared_store_without_a_secret_key_is_refused(tmp_path, command):
    result = run(["--port", str(free_port())], tmp_path, command=command,
                 CNNLAB_REDIS_URL="redis://127.0.0.1:6399/0")
    line = one_line_error(result)
    assert "CNNLAB_REDIS_URL" in line and KEY_MESSAGE in line


def test_an_empty_secret_key_is_refused_too(tmp_path):
    line = one_line_error(run(["--port", str(free_port())], tmp_path, CNNLAB_REDIS_URL="redis://127.0.0.1:6399/0",
                              CNNLAB_SECRET_KEY=""))
    assert KEY_MESSAGE in line


def test_several_workers_need_a_shared_store(tmp_path):
    line = one_line_error(run(["--port", str(free_port()), "--workers", "2"], tmp_path, CNNLAB_REDIS_URL=""))
    assert "--workers needs CNNLAB_REDIS_URL" in line


def test_a_training_worker_needs_a_shared_store(tmp_path):
    line = one_line_error(run(["worker", "--burst"], tmp_path, CNNLAB_REDIS_URL=""))
    assert "cnnlab worker needs CNNLAB_REDIS_URL" in line


def test_a_bad_setting_is_one_line_too(tmp_path):
    line = one_line_error(run(["--port", str(free_port())], tmp_path, CNNLAB_MAX_CLASSES="lots"))
    assert line.startswith("cnnlab: error: CNNLAB_MAX_CLASSES")


# ---------------------------------------------------------------- --workers 2 ----------


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def socket_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server's end of the loopback connection from ``client_port``."""
    want_local, want_remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want_local and fields[2] == want_remote:
            return fields[9]
    return None


def holder(inode: str, candidates: set[int]) -> int | None:
    target = f"socket:[{inode}]"
    for pid in candidates:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    return pid
            except OSError:
                continue
    return None


def answered_by(port: int, children: set[int]) -> int | None:
    """GET /healthz on a new connection; the pid of the process that holds its server end."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b'{"status":"ok"}'
        inode = socket_inode(port, conn.sock.getsockname()[1])  # the connection is still open
        return holder(inode, children) if inode else None
    finally:
        conn.close()


def test_two_web_processes_answer_on_one_port_and_stop_together(tmp_path, redis_url):
    port = free_port()
    env = child_env(tmp_path, {"CNNLAB_REDIS_URL": redis_url, "CNNLAB_SECRET_KEY": "one key"})
    log = open(tmp_path / "cnnlab.log", "wb")
    parent = subprocess.Popen([sys.executable, "-m", "cnnlab", "--port", str(port), "--workers", "2"], cwd=ROOT,
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_SECONDS
        pids: set[int] = set()
        children: set[int] = set()
        while time.monotonic() < deadline and len(pids) < 2:
            assert parent.poll() is None, (tmp_path / "cnnlab.log").read_text()
            children = children_of(parent.pid)
            try:
                pid = answered_by(port, children)
            except OSError:  # not listening yet
                time.sleep(0.1)
                continue
            if pid is not None:
                pids.add(pid)
        log_text = (tmp_path / "cnnlab.log").read_text()
        assert len(children) == 2 and pids == children, (pids, children, log_text)
        assert parent.pid not in pids  # the parent only supervises

        started = time.monotonic()
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(15) == 0
        stopped_in = time.monotonic() - started
        assert not any(alive(pid) for pid in children)
        assert stopped_in < 8, stopped_in
        log_text = (tmp_path / "cnnlab.log").read_text()
        assert "Traceback" not in log_text, log_text
        assert log_text.count("Finished server process") == 2, log_text
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        for pid in children_of(parent.pid):
            os.kill(pid, signal.SIGKILL)
        log.close()
