"""One training job as the routes read it: status, metrics, records, filters, model, message.

Its writer (app/jobs/local.py's relay thread, app/jobs/shared.py's mirror refresh, or
app/jobs/worker.py's training) changes it under ``cond`` and bumps ``version``; readers take
``cond`` or use snapshot(). Messages that outlive the request (why a job stopped or failed)
are kept as English msgids with their arguments and translated when read.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from typing import Any

from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext
from cnnlab.app.jobs.spec import TrainSpec
from cnnlab.core.model import Sequential

__all__ = ["ACTIVE", "FINISHED", "MAX_BATCH_RECORDS", "Job", "JobError", "JobLimitError", "JobNotFound",
           "JobStateError", "ModelFileError"]

ACTIVE = frozenset({"queued", "running"})
FINISHED = frozenset({"done", "stopped", "failed"})

# The curve keeps every epoch and about this many batches, thinned evenly as training goes.
MAX_BATCH_RECORDS = 400


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

    def __init__(self, session: str, spec: TrainSpec, *, clock=time.monotonic, address: str | None = None,
                 job_id: str | None = None) -> None:
        self.id = job_id or secrets.token_urlsafe(12)
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

