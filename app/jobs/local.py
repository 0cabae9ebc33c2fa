"""The in-process job queue (the default): each job trains in a process of its own
(core/train_worker.py), relayed into its Job by a thread of this server.

Sharing two cores with a class: at most ``max_running_jobs`` train at once, each in its own
process; up to ``max_queued_jobs`` more wait in line (first come, first served) and know
their place; beyond that, or beyond ``max_jobs_per_session`` unfinished jobs for one
browser, ``submit`` refuses with ``JobLimitError``. Each job stops by itself at
``job_time_cap_seconds``, and when nobody has asked about its session for
``job_abandon_seconds`` (a closed tab). Finished jobs are forgotten after
``job_ttl_seconds``, and a session keeps at most ``max_finished_jobs_per_session``.

A thread per job relays the records and weight snapshots its process sends into the Job
(``job.model`` is a copy in the server, updated every ~0.5 s and at the end) and tells it
when to stop; a process that hangs is killed (app/supervise.py).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

import cnnlab
from cnnlab.app.datasets import is_dataset_id
from cnnlab.app.i18n import N_, gettext
from cnnlab.app.jobs.job import ACTIVE, FINISHED, Job, JobLimitError, JobNotFound
from cnnlab.app.jobs.spec import TrainSpec, build_model, worker_job
from cnnlab.app.settings import Settings
from cnnlab.app.supervise import Watchdog, exit_reason

log = logging.getLogger(__name__)

__all__ = ["JobRunner", "LocalJobQueue", "seconds_text"]


class JobRunner:
    """Runs training jobs in background processes, a few at a time; see the module docstring."""

    def __init__(self, settings: Settings, *, clock=time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._threads: dict[str, threading.Thread] = {}
        self._seen: dict[str, float] = {}
        self._closed = False

    def __enter__(self) -> JobRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- the interface ------------------------------------------------------------

    def submit(self, session: str, spec: TrainSpec, address: str | None = None) -> Job:
        """Start ``spec`` now if a slot is free, else queue it; JobLimitError when full, or when
        the session or the client ``address`` already has as many unfinished jobs as it may
        (an address never holds every place: a script that drops its cookie cannot fill them)."""
        s = self.settings
        with self._lock:
            if self._closed:
                raise JobLimitError(gettext("The server is shutting down; try again in a moment."))
            self._touch(session)
            self._sweep()
            mine = [j for j in self._jobs.values() if j.session == session and j.status in ACTIVE]
            if len(mine) >= s.max_jobs_per_session:
                raise JobLimitError(gettext("You already have %(n)s trainings running or waiting; stop one or wait "
                                            "for it to finish.") % {"n": len(mine)})
            if address is not None and sum(1 for j in self._jobs.values()
                                           if j.address == address and j.status in ACTIVE) >= s.max_jobs_per_address:
                raise JobLimitError(gettext("Your network already has %(n)s trainings running or waiting; wait for "
                                            "one to finish.") % {"n": s.max_jobs_per_address})
            running = sum(1 for j in self._jobs.values() if j.status == "running")
            if running >= s.max_running_jobs and len(self._queue) >= s.max_queued_jobs:
                raise JobLimitError(gettext("The server is busy: %(running)s trainings are running and %(queued)s are "
                                            "waiting. Try again in a minute.")
                                    % {"running": running, "queued": len(self._queue)})
            job = Job(session, spec, clock=self._clock, address=address)
            self._jobs[job.id] = job
            self._queue.append(job)
            self._dispatch()
            return job

    def get(self, session: str, job_id: str) -> Job:
        """The session's job ``job_id``; JobNotFound for an unknown id or another session's."""
        with self._lock:
            self._sweep()
            job = self._jobs.get(job_id)
            if job is None or not secrets.compare_digest(job.session, session):
                raise JobNotFound()
            self._touch(session)
            return job

    def list(self, session: str) -> list[Job]:
        with self._lock:
            self._touch(session)
            self._sweep()
            return sorted((j for j in self._jobs.values() if j.session == session), key=lambda j: j.created_mono)

    def owner(self, job_id: str) -> str | None:
        """The session owning ``job_id``; None for an unknown (or forgotten) job."""
        with self._lock:
            self._sweep()
            job = self._jobs.get(job_id)
            return job.session if job is not None else None

    def cancel(self, session: str, job_id: str) -> Job:
        """Stop the job: a running one stops before its next batch (its model stays usable), a
        queued one leaves the queue. Stopping a finished job changes nothing."""
        with self._lock:
            job = self.get(session, job_id)
            self._stop(job, N_("Stopped on request."))
            return job

    def touch(self, session: str) -> None:
        """Someone from ``session`` is still there (a page or an event stream)."""
        with self._lock:
            self._touch(session)

    def last_seen(self, session: str) -> float | None:
        """When (runner clock) ``session`` last asked about its jobs or listened to a stream."""
        with self._lock:
            return self._seen.get(session)

    def add_finished(self, job: Job) -> Job:
        """Keep an already finished job (a loaded model) under its session."""
        with self._lock:
            self._jobs[job.id] = job
            self._touch(job.session)
            self._sweep()
            return job

    def sweep(self) -> int:
        """Forget finished jobs past ``job_ttl_seconds`` now (app/cleanup.py calls this, so
        they go even when nobody asks the runner anything); returns how many were forgotten."""
        with self._lock:
            before = len(self._jobs)
            self._sweep()
            return before - len(self._jobs)

    def datasets_in_use(self) -> set[str]:
        """The stored datasets (ids) that the jobs kept here (unfinished or not yet forgotten) name."""
        with self._lock:
            self._sweep()
            return {j.spec.dataset for j in self._jobs.values() if is_dataset_id(j.spec.dataset)}

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every job and wait for the threads to end."""
        with self._lock:
            self._closed = True
            for job in list(self._jobs.values()):
                self._stop(job, N_("Stopped: the server is shutting down."))
            threads = list(self._threads.values())
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- inside -----------------------------------------------------------------

    def _touch(self, session: str) -> None:
        self._seen[session] = self._clock()

    def _abandoned(self, job: Job, now: float) -> bool:
        return now - max(self._seen.get(job.session, 0.0), job.created_mono) > self.settings.job_abandon_seconds

    def _stop(self, job: Job, msgid: str, args: dict[str, Any] | None = None) -> None:
        """With the lock held."""
        if job.status == "queued":
            try:
                self._queue.remove(job)
            except ValueError:
                pass
            self._finish(job, "stopped", (msgid, args or {}))
            self._positions()
        elif job.status == "running":
            with job.cond:
                if job._message is None:
                    job._message = (msgid, args or {})
            job.stop_event.set()

    def _finish(self, job: Job, status: str, message: tuple[str, dict[str, Any]] | None) -> None:
        with job.cond:
            job.status = status
            if message is not None and (job._message is None or status == "failed"):
                job._message = message
            job.finished = time.time()
            job.finished_mono = self._clock()
            job.queue_position = None
            job._changed()

    def _positions(self) -> None:
        for i, job in enumerate(self._queue, start=1):
            if job.queue_position != i:
                job._set(queue_position=i)

    def _dispatch(self) -> None:
        """Start queued jobs while slots are free (lock held)."""
        now = self._clock()
        for job in [j for j in self._queue if self._abandoned(j, now)]:
            self._stop(job, N_("Stopped: nobody was watching it for %(seconds)s seconds."),
                       {"seconds": seconds_text(self.settings.job_abandon_seconds)})
        while self._queue and not self._closed:
            running = sum(1 for j in self._jobs.values() if j.status == "running")
            if running >= self.settings.max_running_jobs:
                break
            job = self._queue.popleft()
            with job.cond:
                job.status = "running"
                job.queue_position = None
                job.started = time.time()
                job.started_mono = self._clock()
                job._changed()
            thread = threading.Thread(target=self._run, args=(job,), name=f"train-{job.id[:6]}", daemon=True)
            self._threads[job.id] = thread
            thread.start()
        self._positions()

    def _sweep(self) -> None:
        """Forget old finished jobs; stop queued ones nobody watches (lock held)."""
        now = self._clock()
        ttl = self.settings.job_ttl_seconds
        for job in list(self._jobs.values()):
            if job.status in FINISHED and job.finished_mono is not None and now - job.finished_mono > ttl:
                del self._jobs[job.id]
        by_session: dict[str, list[Job]] = {}
        for job in self._jobs.values():
            if job.status in FINISHED:
                by_session.setdefault(job.session, []).append(job)
        keep = self.settings.max_finished_jobs_per_session
        for jobs in by_session.values():
            if len(jobs) > keep:
                jobs.sort(key=lambda j: j.finished_mono or 0.0)
                for job in jobs[:len(jobs) - keep]:
                    del self._jobs[job.id]
        live = {j.session for j in self._jobs.values()}
        for session in [s for s in self._seen if s not in live and now - self._seen[s] > ttl]:
            del self._seen[session]
        if any(self._abandoned(j, now) for j in self._queue):
            self._dispatch()

    def _should_stop(self, job: Job) -> bool:
        """Whether the job must stop now (its relay thread asks at least every RELAY_POLL_SECONDS)."""
        if job.stop_event.is_set():
            return True
        now = self._clock()
        s = self.settings
        if now - job.started_mono >= s.job_time_cap_seconds:
            with job.cond:
                job._message = job._message or (N_("Stopped: a training may last at most %(seconds)s seconds."),
                                                {"seconds": seconds_text(s.job_time_cap_seconds)})
            return True
        with self._lock:
            abandoned = self._abandoned(job, now)
        if abandoned:
            with job.cond:
                job._message = job._message or (N_("Stopped: nobody was watching it for %(seconds)s seconds."),
                                                {"seconds": seconds_text(s.job_abandon_seconds)})
            return True
        return False

    def _run(self, job: Job) -> None:
        """The job's thread: start the training process and relay what it sends to the job.

        The thread spends its time blocked on the pipe (no GIL held); the stop conditions are
        checked at least every RELAY_POLL_SECONDS and passed on through ``stop``.
        """
        spec = job.spec
        status, message = "failed", None
        msg_r, msg_w = os.pipe()
        stop_r, stop_w = os.pipe()
        receiver = Connection(msg_r, writable=False)
        proc = None
        stopped = False
        child_ends: tuple[int, ...] = (msg_w, stop_r)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cnnlab.core.train_worker", str(msg_w), str(stop_r), json.dumps(worker_job(spec, self.settings))],
                pass_fds=(msg_w, stop_r), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, close_fds=True, cwd=_PROJECT_ROOT, env=_WORKER_ENV)
            # Only the child keeps these ends: its exit (even a crash) then reads as EOF here.
            for fd in (msg_w, stop_r):
                os.close(fd)
            child_ends = ()
            with job.cond:
                job.pid = proc.pid
            watchdog = Watchdog(proc, silence_seconds=self.settings.job_silence_seconds,
                                grace_seconds=self.settings.job_stop_grace_seconds)
            while True:
                if not stopped and self._should_stop(job):
                    os.write(stop_w, b"x")
                    stopped = True
                    watchdog.stop_asked()
                if (message := watchdog.check()) is not None:
                    break
                if not receiver.poll(RELAY_POLL_SECONDS):
                    continue
                watchdog.heard()
                kind, *payload = receiver.recv()
                if kind == "records":
                    for record in payload[0]:
                        job._record(record)
                elif kind == "start":
                    model = build_model(spec)
                    with job.cond:
                        job.model = model
                        job.metrics.update(payload[0])
                elif kind == "weights":
                    _receive_weights(job, *payload)
                elif kind == "end":
                    status, final, weights, filters = payload
                    _receive_weights(job, weights, filters)
                    with job.cond:
                        job.metrics.update(final)
                        job._changed()
                    break
                elif kind == "error":
                    message = (N_("Training failed: %(error)s"), {"error": payload[0]})
                    break
        except EOFError:  # the process ended without a word: killed, or out of memory
            message = exit_reason(proc.wait(CHILD_EXIT_SECONDS) if proc is not None else None)
        except Exception as e:  # a job's failure is its own: report it, keep the server going
            log.exception("training job %s failed", job.id)
            message = (N_("Training failed: %(error)s"), {"error": str(e) or type(e).__name__})
        finally:
            receiver.close()
            for fd in (*child_ends, stop_w):  # closing stop_w also stops a child still running
                os.close(fd)
            if proc is not None:
                try:
                    proc.wait(CHILD_EXIT_SECONDS)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if status == "done":  # a stop asked for after the last batch came too late to matter
                with job.cond:
                    job._message = None
            with self._lock:
                self._threads.pop(job.id, None)
                self._finish(job, status, message)
                self._dispatch()


def seconds_text(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# --------------------------------------------------------------------------- the training process

# Training runs in a process of its own (core/train_worker.py), not in a thread of the
# server: a thread holds the GIL for most of every millisecond, and with four trainings the
# server's event loop waited hundreds of milliseconds for it (a /conv step took ~600 ms at
# p95 instead of ~6 ms). The process imports only numpy and the engine (~0.3 s to start)
# and runs at a lower priority, so pages are answered first.
RELAY_POLL_SECONDS = 0.1
CHILD_EXIT_SECONDS = 10.0
# `python -m cnnlab.core.train_worker` finds the engine from the folder holding the `cnnlab`
# package (site-packages, or a source checkout's root), whatever the server's working directory.
_PROJECT_ROOT = str(Path(cnnlab.__file__).resolve().parent.parent)
# One BLAS thread per training: several trainings share two cores, and each one's products
# are small (core/layers.py already keeps training-sized ones on the calling thread).
_WORKER_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _receive_weights(job: Job, weights: np.ndarray, filters: list) -> None:
    with job.cond:
        if job.model is not None:
            np.copyto(job.model.flat_params, weights)
        job.filters = filters



LocalJobQueue = JobRunner
