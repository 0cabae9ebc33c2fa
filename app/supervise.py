"""Watching a training process (app/jobs/local.py runs one per job): one that hangs is killed.

A worker stopped by a signal (SIGSTOP) or stuck in a system call holds a training slot for
ever unless someone ends it. ``Watchdog`` is asked by the job's relay thread at every poll:
a process that has sent nothing for ``job_silence_seconds`` while not even waiting for the
CPU (a working one sends records many times a second; one that only waits its turn, as
trainings do under the idle scheduling policy on a busy machine, is not hung), or that has
not ended ``job_stop_grace_seconds`` after it was asked to stop (the time cap, a Stop
button, the server shutting down), is killed with SIGKILL, which even a stopped process
cannot ignore; its job fails with a reason.

Reasons are English msgids with arguments (``N_``), translated when read, like every job
message: a student reading in Spanish never sees English.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from typing import Any

from cnnlab.app.i18n import N_

Reason = tuple[str, dict[str, Any]]


def _seconds(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _waits_for_cpu(pid: int) -> bool:
    """Whether the process is running or runnable (Linux: state R in /proc/<pid>/stat).
    Elsewhere nothing says so, and silence alone decides."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"R"
    except (OSError, IndexError):
        return False


def exit_reason(code: int | None) -> Reason:
    """Why a job failed whose process ended without a word (killed, or out of memory)."""
    if code is not None and code < 0:
        return N_("Training failed: the training process was ended by signal %(signal)s."), {"signal": -code}
    return N_("Training failed: the training process ended unexpectedly (exit code %(code)s)."), {"code": code}


class Watchdog:
    def __init__(self, proc: subprocess.Popen, *, silence_seconds: float, grace_seconds: float,
                 clock=time.monotonic) -> None:
        self.proc = proc
        self.silence_seconds = silence_seconds
        self.grace_seconds = grace_seconds
        self._clock = clock
        self.quiet_since: float | None = None  # silent and not waiting for the CPU since then
        self.stop_asked_at: float | None = None

    def heard(self) -> None:
        """The process sent something: it is alive."""
        self.quiet_since = None

    def stop_asked(self) -> None:
        if self.stop_asked_at is None:
            self.stop_asked_at = self._clock()

    def check(self) -> Reason | None:
        """None while the process behaves; otherwise kill it and say why."""
        now = self._clock()
        if self.stop_asked_at is not None and now - self.stop_asked_at > self.grace_seconds:
            reason = (N_("Training failed: the training process did not stop within %(seconds)s seconds of being "
                         "asked to, so it was ended."), {"seconds": _seconds(self.grace_seconds)})
        elif _waits_for_cpu(self.proc.pid):
            self.quiet_since = None
            return None
        elif self.quiet_since is None:
            self.quiet_since = now
            return None
        elif now - self.quiet_since > self.silence_seconds:
            reason = (N_("Training failed: the training process stopped responding for %(seconds)s seconds, so it "
                         "was ended."), {"seconds": _seconds(self.silence_seconds)})
        else:
            return None
        self.proc.kill()
        return reason


PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int, parent_pid: int | None = None) -> None:
    """In a child: receive ``sig`` when the parent dies, even by SIGKILL (Linux; elsewhere
    nothing). With ``parent_pid``, a parent that died before this call ends the child now."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
