"""Training jobs: a spec, a background process that trains, and what a page needs to watch it.

    runner = JobRunner(settings)          # one per app: app.state.jobs (made in the lifespan)
    job = runner.submit(session, TrainSpec.model_validate({"dataset": "digits"}))
    version = 0
    while job.status in ACTIVE:
        version = job.wait_for_change(version, timeout=15)
        ...job.snapshot()...              # status, metrics, records so far
    predict(job, grid)                    # the trained (or stopped) model answers

Sharing two cores with a class: at most ``max_running_jobs`` train at once, each in its own
process; up to ``max_queued_jobs`` more wait in line (first come, first served) and know
their place; beyond that, or beyond ``max_jobs_per_session`` unfinished jobs for one
browser, ``submit`` refuses with ``JobLimitError``. Each job stops by itself at
``job_time_cap_seconds``, and when nobody has asked about its session for
``job_abandon_seconds`` (a closed tab). Finished jobs are forgotten after
``job_ttl_seconds``, and a session keeps at most ``max_finished_jobs_per_session``.

A job belongs to the browser session that made it: ``get`` answers ``JobNotFound`` for an
unknown id and for another session's id alike, so ids cannot be probed.

Processes: each job trains in a process of its own (core/train_worker.py), so the
server's event loop never waits for a training's GIL; a thread per job relays the records
and weight snapshots it sends into the Job (``job.model`` is a copy in the server, updated
every ~0.5 s and at the end) and tells it when to stop; a process that hangs is killed
(app/supervise.py). Readers take ``job.cond``.
Messages that outlive the request (why a job stopped or failed) are kept as English msgids
with their arguments and translated when read, in the reader's language.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import secrets
import subprocess
import sys
import threading
import time
import zipfile
from collections import deque
from pathlib import Path
from multiprocessing.connection import Connection
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.errors import InputError
from app.i18n import N_, gettext
from app.settings import Settings
from app.supervise import Watchdog, exit_reason
from core import datasets
from core import train as core_train
from core.conv import OutputSizeError, output_size
from core.losses import softmax
from core.model import SPEC_KEY, Sequential, tiny_cnn
from core.train_worker import filters_of, final_metrics

log = logging.getLogger(__name__)

__all__ = [
    "ACTIVE", "FINISHED", "TrainSpec", "Job", "JobRunner", "JobError", "JobLimitError",
    "JobNotFound", "JobStateError", "ModelFileError", "predict", "export_npz", "load_npz",
    "input_shape", "build_model", "dataset_defaults",
]

ACTIVE = frozenset({"queued", "running"})
FINISHED = frozenset({"done", "stopped", "failed"})

# Image shape (C, H, W) of each dataset; the model's input.
INPUT_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28)}

# The curve keeps every epoch and about this many batches, thinned evenly as training goes.
MAX_BATCH_RECORDS = 400
# A .npz upload may expand to at most this many bytes (the largest lab model is 9 MB: app/budget.py).
MAX_MODEL_FILE_EXPANDED = 16 * 1024 * 1024
# A loaded model is evaluated in the server's own process: the largest one's layers hold
# ~220 KB per 28×28 image, so 100 images at a time keep it near 25 MB (1,000: +300 MB).
LOAD_EVAL_BATCH = 100
TRAINSPEC_KEY = "__trainspec__"


def input_shape(dataset: str) -> tuple[int, int, int]:
    return INPUT_SHAPES[dataset]


# --------------------------------------------------------------------------- the spec


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """core.train.DEFAULTS for ``dataset``, flattened into TrainSpec's fields."""
    d = core_train.DEFAULTS[dataset]
    m, opt = d["model"], d["optimizer"]
    return {
        "filters": m["filters"], "kernel": m["kernel"], "padding": m["padding"], "pool": m["pool"],
        "pool_size": m["pool_size"], "hidden": m["hidden"], "activation": m["activation"],
        "optimizer": opt["name"], "lr": opt["lr"], "beta1": opt.get("beta1", 0.9),
        "beta2": opt.get("beta2", 0.999), "momentum": opt.get("momentum", 0.9),
        "batch_size": d["batch_size"], "epochs": d["epochs"], "seed": d["seed"], "lr_decay": d["lr_decay"],
    }


_DIGITS = dataset_defaults("digits")
_Float = dict(strict=True, allow_inf_nan=False)


class TrainSpec(BaseModel):
    """What to train: dataset, architecture, optimizer, schedule. Every field has a default:
    the dataset's defaults (core.train.DEFAULTS), so ``{"dataset": "mnist"}`` alone trains
    the MNIST default. The schema shows the digits defaults."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    dataset: Literal["digits", "mnist"] = Field("digits", description="8×8 digits (1,797 images) or the 28×28 MNIST subset (10,000)")
    filters: int = Field(_DIGITS["filters"], ge=1, le=16, description="filters of the convolution layer")
    kernel: int = Field(_DIGITS["kernel"], ge=1, le=7, description="kernel side k (k×k)")
    padding: int = Field(_DIGITS["padding"], ge=0, le=3, description="zero cells added on each side")
    pool: Literal["max", "avg"] = Field(_DIGITS["pool"])
    pool_size: int = Field(_DIGITS["pool_size"], ge=1, le=4, description="pooling window side, also its stride")
    hidden: int = Field(_DIGITS["hidden"], ge=0, le=128, description="units of a hidden dense layer; 0: none")
    activation: Literal["relu", "sigmoid", "tanh", "leaky_relu"] = Field(_DIGITS["activation"])
    optimizer: Literal["sgd", "momentum", "adam"] = Field(_DIGITS["optimizer"])
    lr: float = Field(_DIGITS["lr"], gt=0, le=1, description="learning rate", **_Float)
    beta1: float = Field(_DIGITS["beta1"], ge=0, lt=1, description="Adam: decay of the mean of the gradients", **_Float)
    beta2: float = Field(_DIGITS["beta2"], ge=0, lt=1, description="Adam: decay of the mean of their squares", **_Float)
    momentum: float = Field(_DIGITS["momentum"], ge=0, lt=1, description="momentum: decay of the velocity", **_Float)
    batch_size: int = Field(_DIGITS["batch_size"], ge=1, le=512)
    epochs: int = Field(_DIGITS["epochs"], ge=1, le=30)
    seed: int = Field(_DIGITS["seed"], ge=0, le=2**31 - 1, description="initial weights and shuffling order")
    lr_decay: float = Field(_DIGITS["lr_decay"], gt=0, le=1, description="the learning rate is multiplied by this after each epoch", **_Float)

    @model_validator(mode="before")
    @classmethod
    def _dataset_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unknown = sorted(str(key) for key in data if key not in cls.model_fields)
        if unknown:
            raise ValueError(gettext("Unknown setting: %(names)s. Known settings: %(known)s.")
                             % {"names": ", ".join(unknown), "known": ", ".join(cls.model_fields)})
        dataset = data.get("dataset", "digits")
        if isinstance(dataset, str) and dataset in core_train.DEFAULTS:
            return {**dataset_defaults(dataset), **data}
        return data

    @model_validator(mode="after")
    def _fits(self) -> TrainSpec:
        self.output_shapes()
        return self

    def output_shapes(self) -> list[tuple[int, ...]]:
        """(C, H, W) of the input, then after the convolution and after the pooling; raises
        ValueError (translated, with the formula) when the architecture does not fit."""
        C, H, W = INPUT_SHAPES[self.dataset]
        try:
            Ho = output_size(H, self.kernel, pad=self.padding)
        except OutputSizeError as e:
            raise ValueError(gettext("The %(k)s×%(k)s kernel does not fit the %(n)s×%(n)s image with padding %(p)s: "
                                     "the output size would be %(formula)s.")
                             % {"k": self.kernel, "n": H, "p": self.padding, "formula": e.formula}) from None
        try:
            Hp = output_size(Ho, self.pool_size, stride=self.pool_size)
        except OutputSizeError as e:
            raise ValueError(gettext("The %(s)s×%(s)s pooling window does not fit the %(n)s×%(n)s feature map left by the "
                                     "convolution: the output size would be %(formula)s.")
                             % {"s": self.pool_size, "n": Ho, "formula": e.formula}) from None
        return [(C, H, W), (self.filters, Ho, Ho), (self.filters, Hp, Hp)]

    def optimizer_settings(self) -> dict[str, float]:
        if self.optimizer == "adam":
            return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2}
        if self.optimizer == "momentum":
            return {"lr": self.lr, "momentum": self.momentum}
        return {"lr": self.lr}


def build_model(spec: TrainSpec) -> Sequential:
    """A fresh tiny CNN for ``spec``: weights drawn from spec.seed (same spec ⇒ same weights)."""
    return tiny_cnn(input_shape=INPUT_SHAPES[spec.dataset], filters=spec.filters, kernel=spec.kernel,
                    padding=spec.padding, pool=spec.pool, pool_size=spec.pool_size, hidden=spec.hidden,
                    activation=spec.activation, classes=10, seed=spec.seed)


# --------------------------------------------------------------------------- errors


class JobError(InputError):
    """A request about jobs that cannot be met; ``message`` is already translated. An
    ``InputError``, so a route may let it through: the error handlers answer its status."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=type(self).status_code)


class JobLimitError(JobError):
    status_code = 429


class JobNotFound(JobError):
    status_code = 404

    def __init__(self) -> None:
        super().__init__(gettext("There is no training job with this id in this browser (it may have expired)."))


class JobStateError(JobError):
    status_code = 409


class ModelFileError(JobError):
    status_code = 422


# --------------------------------------------------------------------------- a job


def _finite(value: Any) -> Any:
    """JSON has no NaN: a not-yet-known number becomes None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Job:
    """One training run. Its relay thread writes; readers take ``cond`` (or use snapshot())."""

    def __init__(self, session: str, spec: TrainSpec, *, clock=time.monotonic, address: str | None = None) -> None:
        self.id = secrets.token_urlsafe(12)
        self.session = session
        self.address = address  # the client's, for the per-address cap (JobRunner.submit)
        self.spec = spec
        self.status = "queued"
        self._clock = clock
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.created_mono = clock()
        self.started_mono: float | None = None
        self.finished_mono: float | None = None
        self.model: Sequential | None = None
        self.metrics: dict[str, Any] = {}
        self.filters: list | None = None
        self.queue_position: int | None = None
        self.version = 0
        self.cond = threading.Condition()
        self.stop_event = threading.Event()
        self.pid: int | None = None  # the training process, while there is one
        # (English msgid, arguments): why the job stopped or failed, translated when read.
        self._message: tuple[str, dict[str, Any]] | None = None
        self._epoch_records: list[dict] = []
        self._batch_records: list[dict] = []
        self._batch_every = 1
        self._batches_seen = 0
        self._seq = 0

    # -- reading ---------------------------------------------------------------

    @property
    def message(self) -> str | None:
        """Why the job stopped or failed, in the current request's language."""
        if self._message is None:
            return None
        msgid, args = self._message
        return gettext(msgid) % args if args else gettext(msgid)

    @property
    def error(self) -> str | None:
        return self.message if self.status == "failed" else None

    @property
    def records(self) -> list[dict]:
        """Progress.to_dict() of every epoch and of up to ~MAX_BATCH_RECORDS batches (evenly
        thinned), in order, each with a ``seq`` number that only grows."""
        with self.cond:
            return sorted(self._epoch_records + self._batch_records, key=lambda r: r["seq"])

    def records_since(self, seq: int) -> list[dict]:
        return [r for r in self.records if r["seq"] > seq]

    def snapshot(self, records: bool = False) -> dict[str, Any]:
        """The job as the API shows it (JSON-able)."""
        with self.cond:
            out = {
                "id": self.id, "status": self.status, "spec": self.spec.model_dump(),
                "metrics": dict(self.metrics), "queue_position": self.queue_position,
                "error": self.error, "message": self.message, "version": self.version,
                "created": self.created, "started": self.started, "finished": self.finished,
            }
            if records:
                out["records"] = self.records
                out["filters"] = self.filters
        return out

    def wait_for_change(self, version: int, timeout: float | None = None) -> int:
        """Block until the job's version differs from ``version`` (or ``timeout`` seconds
        pass, or the job is finished); returns the current version."""
        with self.cond:
            self.cond.wait_for(lambda: self.version != version or self.status in FINISHED, timeout)
            return self.version

    # -- writing (runner and relay thread) --------------------------------------

    def _changed(self) -> None:
        """Call with ``cond`` held."""
        self.version += 1
        self.cond.notify_all()

    def _set(self, **fields: Any) -> None:
        with self.cond:
            for key, value in fields.items():
                setattr(self, key, value)
            self._changed()

    def _record(self, record: dict) -> None:
        """Add one Progress.to_dict() and update the metrics (relay thread)."""
        record = {key: _finite(value) for key, value in record.items()}
        with self.cond:
            self._seq += 1
            record["seq"] = self._seq
            if record["kind"] == "epoch":
                self._epoch_records.append(record)
            elif record["kind"] == "batch":
                self._batches_seen += 1
                if self._batches_seen % self._batch_every == 0:
                    self._batch_records.append(record)
                    if len(self._batch_records) > MAX_BATCH_RECORDS:
                        self._batch_records = self._batch_records[1::2]
                        self._batch_every *= 2
            self._update_metrics(record)
            self._changed()

    def _update_metrics(self, r: dict) -> None:
        m = self.metrics
        for key in ("epoch", "epochs", "batch", "batches_per_epoch", "step", "loss", "epoch_loss",
                    "train_accuracy", "lr"):
            if r.get(key) is not None:
                m[key] = r[key]
        if r.get("test_accuracy") is not None:
            m["test_accuracy"] = r["test_accuracy"]
            m["test_loss"] = r["test_loss"]
        elapsed = r.get("elapsed") or 0.0
        m["elapsed"] = elapsed
        n_train = m.get("n_train", 0)
        bpe, epochs = r.get("batches_per_epoch") or 1, r.get("epochs") or 1
        done_batches = (r["epoch"] - 1) * bpe + r["batch"]
        images = (r["epoch"] - 1) * n_train + min(r["batch"] * self.spec.batch_size, n_train)
        m["images"] = images
        m["images_per_second"] = images / elapsed if elapsed > 0 else None
        m["progress"] = done_batches / (epochs * bpe)
        remaining = elapsed / done_batches * (epochs * bpe - done_batches) if done_batches else None
        m["eta"] = remaining


# --------------------------------------------------------------------------- the runner


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
                       {"seconds": _seconds(self.settings.job_abandon_seconds)})
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
                                                {"seconds": _seconds(s.job_time_cap_seconds)})
            return True
        with self._lock:
            abandoned = self._abandoned(job, now)
        if abandoned:
            with job.cond:
                job._message = job._message or (N_("Stopped: nobody was watching it for %(seconds)s seconds."),
                                                {"seconds": _seconds(s.job_abandon_seconds)})
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
                [sys.executable, "-m", "core.train_worker", str(msg_w), str(stop_r), json.dumps(_worker_job(spec))],
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


def _seconds(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# --------------------------------------------------------------------------- the training process

# Training runs in a process of its own (core/train_worker.py), not in a thread of the
# server: a thread holds the GIL for most of every millisecond, and with four trainings the
# server's event loop waited hundreds of milliseconds for it (a /conv step took ~600 ms at
# p95 instead of ~6 ms). The process imports only numpy and the engine (~0.3 s to start)
# and runs at a lower priority, so pages are answered first.
RELAY_POLL_SECONDS = 0.1
CHILD_EXIT_SECONDS = 10.0
# `python -m core.train_worker` finds the engine from here even without an installed package.
_PROJECT_ROOT = str(Path(core_train.__file__).resolve().parent.parent)
# One BLAS thread per training: several trainings share two cores, and each one's products
# are small (core/layers.py already keeps training-sized ones on the calling thread).
_WORKER_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _worker_job(spec: TrainSpec) -> dict[str, Any]:
    """The JSON job core.train_worker trains (same spec ⇒ same job ⇒ same run)."""
    return {
        "dataset": spec.dataset,
        "model": {"filters": spec.filters, "kernel": spec.kernel, "padding": spec.padding, "pool": spec.pool,
                  "pool_size": spec.pool_size, "hidden": spec.hidden, "activation": spec.activation,
                  "seed": spec.seed},
        "optimizer": {"name": spec.optimizer, **spec.optimizer_settings()},
        "epochs": spec.epochs, "batch_size": spec.batch_size, "seed": spec.seed, "lr_decay": spec.lr_decay,
    }


def _receive_weights(job: Job, weights: np.ndarray, filters: list) -> None:
    with job.cond:
        if job.model is not None:
            np.copyto(job.model.flat_params, weights)
        job.filters = filters


# --------------------------------------------------------------------------- using a model


def _grid_array(grid: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """A drawn digit as the model's input (1, C, H, W), float32 in [0, 1].

    grid: H×W nested lists, 8×8 or 28×28, ink bright on a dark background (as both datasets
    store digits). Values in 0..1 are taken as they are; a grid whose largest value is above
    1 is read as 0..255 grey levels and divided by 255. A grid of the other size is
    resampled (area average) to the model's size.
    """
    if not isinstance(grid, list) or not grid or not all(isinstance(row, list) for row in grid):
        raise ValueError(gettext("The grid must be a list of rows of numbers."))
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(gettext("grid[%(i)s][%(j)s] is not a number.") % {"i": i, "j": j})
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(gettext("grid[%(i)s][%(j)s] is not a finite number (NaN or infinity).") % {"i": i, "j": j})
            if not 0 <= v <= 255:  # also keeps a 400-digit integer from overflowing float64 below
                raise ValueError(gettext("The grid's values must be between 0 and 1 (or 0 and 255)."))
    n = len(grid)
    if any(len(row) != n for row in grid) or n not in (8, 28):
        raise ValueError(gettext("The grid must be 8×8 or 28×28 numbers; got %(h)s rows of %(w)s.")
                         % {"h": n, "w": "/".join(sorted({str(len(r)) for r in grid}))})
    a = np.array(grid, dtype=np.float64)
    if a.min() < 0 or a.max() > 255:
        raise ValueError(gettext("The grid's values must be between 0 and 1 (or 0 and 255)."))
    if a.max() > 1:
        a = a / 255.0
    C, H, W = shape
    if a.shape != (H, W):
        a = _resample(a, H)
    return np.ascontiguousarray(np.broadcast_to(a.astype(np.float32), (1, C, H, W)))


def _resample(a: np.ndarray, n: int) -> np.ndarray:
    """Area-average resampling of a square (m, m) array to (n, n): each output cell is the
    mean of the input it covers, fractional cells weighted by their covered part."""
    m = a.shape[0]
    edges = np.linspace(0, m, n + 1)
    weights = np.zeros((n, m))
    for i in range(n):
        lo, hi = edges[i], edges[i + 1]
        for j in range(int(lo), min(m, math.ceil(hi))):
            weights[i, j] = min(hi, j + 1) - max(lo, j)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ a @ weights.T


def predict(job: Job, grid: Any = None, *, test_index: int | None = None, maps: bool = True) -> dict[str, Any]:
    """Classify one image with the job's model (as trained so far).

    grid: see _grid_array; or test_index: an image of the dataset's test set.
    Returns probabilities (10, summing to 1), label, the input (H×W in [0, 1]) and, with
    ``maps``, every layer's output (Flatten left out) as {"layer", "shape", "values"}.
    Raises JobStateError when the job has no model yet, ValueError for a bad grid or index.
    """
    model = job.model
    if model is None:
        raise JobStateError(gettext("This training has no model yet: wait until it starts."))
    shape = tuple(model.input_shape)
    true_label = None
    if test_index is not None:
        dataset = datasets.load(job.spec.dataset)
        if not 0 <= test_index < len(dataset.y_test):
            raise ValueError(gettext("The test image number must be between 0 and %(last)s.")
                             % {"last": len(dataset.y_test) - 1})
        x = np.ascontiguousarray(dataset.x_test[test_index:test_index + 1])
        true_label = int(dataset.y_test[test_index])
    else:
        x = _grid_array(grid, shape)
    outs = model.activations(x)
    p = softmax(outs[-1][0].astype(np.float64))
    out: dict[str, Any] = {"probabilities": p.tolist(), "label": int(p.argmax()),
                           "input": np.round(x[0, 0].astype(np.float64), 4).tolist()}
    if true_label is not None:
        out["true_label"] = true_label
    if maps:
        out["layers"] = [{"layer": layer.describe(), "shape": list(o.shape[1:]),
                          "values": np.round(o[0].astype(np.float64), 4).tolist()}
                         for layer, o in zip(model.layers, outs) if type(layer).__name__ != "Flatten"]
    return out


def export_npz(job: Job) -> bytes:
    """The job's model as .npz: core.model's format (parameters + "__spec__") plus the
    TrainSpec, so a file alone rebuilds the model and its settings."""
    model = job.model
    if model is None:
        raise JobStateError(gettext("This training has no model yet: wait until it starts."))
    with job.cond:  # a running job's weights change under the worker; copy them at one moment
        arrays = {name: p.copy() for name, p, _ in model.parameters()}
    buf = io.BytesIO()
    np.savez(buf, **{SPEC_KEY: np.array(json.dumps(model.spec())),
                     TRAINSPEC_KEY: np.array(json.dumps(job.spec.model_dump()))}, **arrays)
    return buf.getvalue()


def _bad_file(detail: str | None = None) -> ModelFileError:
    message = gettext("This is not a CNN Lab model file (.npz saved by this page).")
    return ModelFileError(f"{message} {detail}" if detail else message)


def load_npz(session: str, data: bytes, *, max_bytes: int | None = None) -> Job:
    """A finished ("done") job holding the model in ``data`` (from export_npz).

    The file is never trusted: its architecture must be one this lab can train (checked as a
    TrainSpec before anything is built), the model is rebuilt by tiny_cnn and must have the
    same layers, and every parameter must have the right shape and be finite.
    Raises ModelFileError with a translated message.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise ModelFileError(gettext("The file is too large: at most %(mb)s MB.") % {"mb": round(max_bytes / 2**20, 1)})
    buf = io.BytesIO(data)
    if not zipfile.is_zipfile(buf):
        raise _bad_file()
    try:
        with zipfile.ZipFile(buf) as zf:
            if sum(info.file_size for info in zf.infolist()) > MAX_MODEL_FILE_EXPANDED:
                raise _bad_file()
        buf.seek(0)
        with np.load(buf, allow_pickle=False) as npz:
            files = set(npz.files)
            if SPEC_KEY not in files:
                raise _bad_file()
            arch = json.loads(str(npz[SPEC_KEY]))
            saved_spec = json.loads(str(npz[TRAINSPEC_KEY])) if TRAINSPEC_KEY in files else {}
            spec = _spec_from_file(arch, saved_spec)
            model = build_model(spec)
            if model.spec()["layers"] != arch.get("layers"):
                raise _bad_file()
            for name, p, _ in model.parameters():
                if name not in files:
                    raise _bad_file(gettext("Parameter %(name)s is missing.") % {"name": name})
                saved = npz[name]
                if saved.shape != p.shape or saved.dtype.kind != "f" or not np.all(np.isfinite(saved)):
                    raise _bad_file(gettext("Parameter %(name)s is not the right shape or has values that are not "
                                            "numbers.") % {"name": name})
                np.copyto(p, saved.astype(p.dtype))
    except ModelFileError:
        raise
    except Exception:  # any damage in an uploaded file is a bad file, not a server error
        log.info("refused a model file", exc_info=True)
        raise _bad_file() from None
    job = Job(session, spec)
    job.model = model
    job.status = "done"
    job.started = job.finished = time.time()
    job.started_mono = job.finished_mono = time.monotonic()
    job._message = (N_("Loaded from a file."), {})
    job.metrics["n_params"] = model.n_params
    job.metrics.update(final_metrics(model, datasets.load(spec.dataset), batch_size=LOAD_EVAL_BATCH))
    job.filters = filters_of(model)
    return job


def _spec_from_file(arch: dict, saved: dict) -> TrainSpec:
    config = arch.get("config") or {}
    shape = tuple(config.get("input_shape") or arch.get("input_shape") or ())
    dataset = next((name for name, s in INPUT_SHAPES.items() if s == shape), None)
    if dataset is None or config.get("classes", 10) != 10:
        raise _bad_file(gettext("Its model is not for 8×8 digits or 28×28 MNIST images."))
    fields = {key: config[key] for key in ("filters", "kernel", "padding", "pool", "pool_size", "hidden",
                                           "activation", "seed") if key in config}
    extra = {key: value for key, value in (saved if isinstance(saved, dict) else {}).items()
             if key in TrainSpec.model_fields and key not in fields and key != "dataset"}
    try:
        return TrainSpec.model_validate({**extra, **fields, "dataset": dataset})
    except Exception:
        raise _bad_file(gettext("Its architecture is outside this lab's limits.")) from None
