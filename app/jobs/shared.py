"""The shared job queue: jobs kept in Valkey/Redis (app/jobs/store.py), trained by RQ workers
(app/jobs/worker.py, ``cnnlab worker``), watched from any web process.

Each web process keeps a mirror of the jobs it was asked about: a ``Job`` (the class the
routes read) refreshed from the job's hash when the Hub delivers a wake-up for it (in a
thread of its own, coalesced: many wake-ups while a refresh runs make one more), every
``MIRROR_REFRESH_SECONDS`` while the job is unfinished, and on ``get()``. A mirror rebuilds
``job.model`` from the stored weights when they change, so predict and export work in
every web process. A mirror's ``version`` is its own counter (it also changes when the
queue position or the "no worker" message does), so it only means something to readers of
the same process, as the event streams are.

Caps are kept by one script across every web process (store.py); a job whose worker stopped
sending its heartbeat for ``job_lost_seconds`` is marked failed by whichever process sees it
first (the script finishes a job once).
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import threading
import time
from typing import Any

import numpy as np
import redis
from rq import Queue
from rq.callbacks import Callback
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError

from cnnlab.app import backend
from cnnlab.app.datasets import is_dataset_id
from cnnlab.app.i18n import N_, gettext
from cnnlab.app.jobs import store
from cnnlab.app.jobs.job import ACTIVE, FINISHED, Job, JobLimitError, JobNotFound
from cnnlab.app.jobs.local import seconds_text
from cnnlab.app.jobs.spec import TrainSpec, build_model
from cnnlab.app.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["RedisJobQueue", "NO_WORKER", "LOST"]

NO_WORKER = N_("No training worker is running: the training will start when one is.")
LOST = N_("Training failed: the worker running it stopped.")
STOPPED = N_("Stopped on request.")
# Unfinished mirrors are read again this often even without a wake-up (lost jobs, positions).
MIRROR_REFRESH_SECONDS = 1.0
# touch() writes the session's time at most this often per process.
TOUCH_EVERY_SECONDS = 1.0
# RQ kills a job this long after its own time cap (the worker stops it at the cap itself).
RQ_TIMEOUT_MARGIN_SECONDS = 60
_FIELDS = ("session", "address", "spec", "status", "created", "started", "finished", "version", "message",
           "metrics", "filters", "heartbeat", "wver", "rgen", "stop", "stop_at")


class _Mirror(Job):
    """A job shown from its hash in Valkey, and which of the hash's versions it shows."""

    def __init__(self, session: str, spec: TrainSpec, *, address: str | None, job_id: str) -> None:
        super().__init__(session, spec, address=address, job_id=job_id)
        self.hash_version = self.weights_version = self.records_generation = -1
        self.refresh_lock = threading.Lock()


class RedisJobQueue:
    """The JobQueue (app/jobs/queue.py) of several web processes sharing one Valkey/Redis."""

    def __init__(self, settings: Settings, *, hub: backend.Hub | None = None) -> None:
        self.settings = settings
        self.r = backend.client(settings)
        self.scripts = store.Scripts(self.r)
        self.rq = Queue(store.QUEUE_NAME, connection=self.r)
        self._lock = threading.Lock()
        self._mirrors: dict[str, _Mirror] = {}
        self._pending: set[str] = set()
        self._wake = threading.Event()
        self._touched: dict[str, float] = {}
        self._workers_at = (0.0, 0)
        self._closed = False
        self._timers: list[threading.Timer] = []
        self._killed: dict[str, float] = {}
        self._thread = threading.Thread(target=self._refresher, name="cnnlab-job-mirrors", daemon=True)
        self._thread.start()
        if hub is not None:
            self.attach(hub)

    def attach(self, hub: backend.Hub) -> None:
        """Refresh mirrors when the Hub hears of their job (a prefix with no id: all of them)."""
        hub.listen(backend.WAKE + "job:", self._on_wake)

    # -- the interface ------------------------------------------------------------

    def submit(self, session: str, spec: TrainSpec, address: str | None = None) -> Job:
        s = self.settings
        if self._closed:
            raise JobLimitError(gettext("The server is shutting down; try again in a moment."))
        self.touch(session, force=True)
        job = Job(session, spec, address=address)
        pairs = [x for item in store.queued_fields(job, s).items() for x in item]
        keys = [store.job_key(job.id), store.ACTIVE_KEY, store.ACTIVE_SESSION_KEY + session,
                store.ACTIVE_ADDRESS_KEY + (address or ""), store.QUEUED_KEY, store.session_jobs_key(session)]
        answer = self.scripts.submit(keys=keys, args=[
            job.id, s.max_jobs_per_session, s.max_jobs_per_address if address else 0, s.max_queued_jobs,
            self.live_workers(fresh=True), repr(job.created), int(2 * s.job_ttl_seconds * 1000) + 60_000, *pairs])
        code = int(answer[0])
        if code == 1:
            raise JobLimitError(gettext("You already have %(n)s trainings running or waiting; stop one or wait "
                                        "for it to finish.") % {"n": int(answer[1])})
        if code == 2:
            raise JobLimitError(gettext("Your network already has %(n)s trainings running or waiting; wait for "
                                        "one to finish.") % {"n": s.max_jobs_per_address})
        if code == 3:
            raise JobLimitError(gettext("The server is busy: %(running)s trainings are running and %(queued)s are "
                                        "waiting. Try again in a minute.")
                                % {"running": int(answer[1]), "queued": int(answer[2])})
        try:
            self.rq.enqueue("cnnlab.app.jobs.worker.train", job.id, job_id=job.id, result_ttl=0,
                            failure_ttl=int(s.job_ttl_seconds),
                            job_timeout=int(s.job_time_cap_seconds) + RQ_TIMEOUT_MARGIN_SECONDS,
                            on_stopped=Callback("cnnlab.app.jobs.worker.on_stopped"))
        except Exception as e:
            self.scripts.finish(job.id, "failed", (N_("Training failed: %(error)s"), {"error": str(e)}),
                                s.job_ttl_seconds)
            raise
        return self._mirror(job.id, session)

    def get(self, session: str, job_id: str) -> Job:
        job = self._mirror(job_id, session)
        self.touch(session)
        return job

    def list(self, session: str) -> list[Job]:
        self.touch(session)
        self._trim(session)
        jobs = []
        for job_id in self.r.zrange(store.session_jobs_key(session), 0, -1):
            try:
                jobs.append(self._mirror(job_id.decode(), session))
            except JobNotFound:  # expired since
                self.r.zrem(store.session_jobs_key(session), job_id)
        return jobs

    def owner(self, job_id: str) -> str | None:
        """The session owning ``job_id`` (its hash's "session"); None for an unknown or expired job."""
        return store.decode(self.r.hget(store.job_key(job_id), "session")) or None

    def cancel(self, session: str, job_id: str) -> Job:
        job = self.get(session, job_id)
        if job.status == "queued":
            if self.scripts.finish(job_id, "stopped", (STOPPED, {}), self.settings.job_ttl_seconds, expect="queued"):
                try:
                    self.rq.remove(job_id)
                except Exception:  # the worker that took it meanwhile sees it stopped and skips it
                    log.debug("could not remove %s from the RQ queue", job_id, exc_info=True)
        state = self.scripts.ask_stop(keys=[store.job_key(job_id)], args=[
            store.channel(job_id), store.message_json((STOPPED, {})), repr(time.time())])
        if state in (b"running", "running"):
            timer = threading.Timer(self.settings.job_stop_grace_seconds, self._kill_if_running, args=(job_id,))
            timer.daemon = True
            timer.start()
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        self._refresh(job)
        return job

    def touch(self, session: str, *, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._touched.get(session, 0.0) < TOUCH_EVERY_SECONDS:
            return
        self._touched[session] = now
        self.r.set(store.seen_key(session), repr(now), px=int(2 * self.settings.job_ttl_seconds * 1000))

    def last_seen(self, session: str) -> float | None:
        value = self.r.get(store.seen_key(session))
        return float(value) if value else None

    def add_finished(self, job: Job) -> Job:
        """Store a loaded model's job (already finished) so every web process serves it."""
        ttl = int(self.settings.job_ttl_seconds * 1000)
        with self.r.pipeline() as p:
            p.hset(store.job_key(job.id), mapping=store.finished_fields(job))
            p.pexpire(store.job_key(job.id), ttl)
            p.zadd(store.session_jobs_key(job.session), {job.id: job.created})
            p.pexpire(store.session_jobs_key(job.session), 2 * ttl + 60_000)
            p.execute()
        self.touch(job.session, force=True)
        self._trim(job.session)
        return job  # every process (this one too) mirrors it from Valkey when asked

    def sweep(self) -> int:
        """Fail lost jobs, stop queued jobs nobody watches, kill horses that ignore a stop, and
        forget mirrors whose job expired; returns how many mirrors were forgotten."""
        for job_id in [m.decode() for m in self.r.smembers(store.ACTIVE_KEY)]:
            try:
                self._check(job_id, self._read(job_id))
            except Exception:
                log.exception("sweeping job %s", job_id)
        with self._lock:
            ids = list(self._mirrors)
        gone = [job_id for job_id, exists in zip(ids, self._exist(ids)) if not exists]
        self._killed = {job_id: at for job_id, at in self._killed.items() if job_id not in gone}
        with self._lock:
            for job_id in gone:
                self._mirrors.pop(job_id, None)
        return len(gone)

    def datasets_in_use(self) -> set[str]:
        """The stored datasets (ids) that the jobs kept in Valkey name, whichever process
        submitted them (a job's hash lives until job_ttl_seconds after it finished)."""
        keys = list(self.r.scan_iter(match=store.JOB + "*", count=1000, _type="hash"))
        if not keys:
            return set()
        with self.r.pipeline(transaction=False) as p:
            for key in keys:
                p.hget(key, "spec")
            specs = p.execute()
        found = set()
        for spec in specs:
            try:
                dataset = json.loads(spec).get("dataset") if spec else None
            except (ValueError, AttributeError):
                continue
            if is_dataset_id(dataset):
                found.add(dataset)
        return found

    def shutdown(self, timeout: float = 10.0) -> None:
        """Jobs belong to the workers and outlive this process; only its threads end."""
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        self._wake.set()
        self._thread.join(timeout)

    def __enter__(self) -> RedisJobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def live_workers(self, *, fresh: bool = False) -> int:
        at, n = self._workers_at
        if fresh or time.monotonic() - at > 0.5:
            n = store.live_workers(self.r)
            self._workers_at = (time.monotonic(), n)
        return n

    # -- mirrors ------------------------------------------------------------------

    def _mirror(self, job_id: str, session: str) -> _Mirror:
        with self._lock:
            job = self._mirrors.get(job_id)
        if job is not None:
            if not secrets.compare_digest(job.session, session):
                raise JobNotFound()
            if not self._refresh(job, weights=False):  # expired (job_ttl_seconds) or trimmed
                with self._lock:
                    self._mirrors.pop(job_id, None)
                raise JobNotFound()
            return job
        data = self._read(job_id)
        if data is None or not secrets.compare_digest(data["session"] or "", session):
            raise JobNotFound()
        job = _Mirror(session, TrainSpec.model_validate_json(data["spec"]), address=data["address"] or None,
                      job_id=job_id)
        with self._lock:
            job = self._mirrors.setdefault(job_id, job)
        with job.refresh_lock:
            self._apply(job, data)
        return job

    def _read(self, job_id: str, n_records: int = 0) -> dict[str, Any] | None:
        with self.r.pipeline(transaction=True) as p:
            p.hmget(store.job_key(job_id), *_FIELDS)
            p.lrange(store.records_key(job_id), n_records, -1)
            p.zrank(store.QUEUED_KEY, job_id)
            values, records, rank = p.execute()
        data = dict(zip(_FIELDS, (store.decode(v) for v in values)))
        if data["status"] is None:
            return None
        data["records"], data["from"], data["rank"] = records, n_records, rank
        return data

    def _refresh(self, job: _Mirror, *, weights: bool = True) -> bool:
        """Read the job's hash again; False when it is gone (the mirror keeps what it showed).
        Without ``weights`` (a request, maybe on the event loop), a running job's model is
        left to the refresher thread (a wake-up or a second away)."""
        with job.refresh_lock:  # one refresh at a time appends records once
            with job.cond:
                n = len(job._batch_records)
            data = self._read(job.id, n)
            if data is not None and int(data["rgen"] or 0) != job.records_generation:
                data = self._read(job.id, 0)
            if data is None:
                return False
            self._apply(job, data, weights=weights)
            return True

    def _apply(self, job: _Mirror, data: dict[str, Any], *, weights: bool = True) -> None:
        data = self._check(job.id, data) or data
        status = data["status"]
        position = data["rank"] + 1 if data["rank"] is not None and status == "queued" else None
        message = json.loads(data["message"]) if data["message"] else None
        if status == "queued" and message is None and self.live_workers() == 0:
            message = [NO_WORKER, {}]
        version = int(data["version"] or 0)
        wver, rgen = int(data["wver"] or 0), int(data["rgen"] or 0)
        fetch = wver != job.weights_version and (weights or job.model is None or status in FINISHED)
        blob = self.r.hget(store.job_key(job.id), "weights") if fetch else None
        model = None
        if blob is not None:
            model = job.model or build_model(job.spec)
            flat = np.load(io.BytesIO(blob), allow_pickle=False)
        with job.cond:
            changed = (version != job.hash_version or position != job.queue_position
                       or (tuple(message) if message else None) != job._message)
            if version != job.hash_version:
                job.hash_version = version
                job.status = status
                job.created = float(data["created"] or job.created)
                job.started = float(data["started"]) if data["started"] else None
                job.finished = float(data["finished"]) if data["finished"] else None
                job.metrics = json.loads(data["metrics"] or "{}")
                if data["filters"]:
                    job.filters = json.loads(data["filters"])
                records = [json.loads(r) for r in data["records"]]
                if rgen != job.records_generation or data["from"] == 0:
                    job._batch_records = records
                else:
                    job._batch_records = job._batch_records + records
                job.records_generation = rgen
            if blob is not None:
                np.copyto(model.flat_params, flat)
                job.model = model
                job.weights_version = wver
            job.queue_position = position
            job._message = (message[0], message[1]) if message else None
            if changed:
                job._changed()

    def _check(self, job_id: str, data: dict[str, Any] | None) -> dict[str, Any] | None:
        """A running job without a heartbeat for job_lost_seconds is failed (once, by whoever
        sees it first); one asked to stop that still runs after the grace is killed; a queued
        one nobody watches is stopped. Returns the data read again when it changed it."""
        if data is None or data["status"] in FINISHED:
            return None
        s, now = self.settings, time.time()
        if data["status"] == "running" and float(data["heartbeat"] or 0) < now - s.job_lost_seconds:
            if self.scripts.finish(job_id, "failed", (LOST, {}), s.job_ttl_seconds,
                                   lost_before=now - s.job_lost_seconds):
                log.warning("training job %s lost its worker", job_id)
                self._kill(job_id)
            return self._read(job_id)
        overdue = data["stop"] == "1" and now - float(data["stop_at"]) > s.job_stop_grace_seconds
        if data["status"] == "running" and overdue:
            if now - self._killed.get(job_id, 0.0) > s.job_stop_grace_seconds:  # once per grace, not per read
                self._killed[job_id] = now
                self._kill(job_id)
            return None
        if data["status"] == "queued":
            seen = max(self.last_seen(data["session"]) or 0.0, float(data["created"] or 0))
            if now - seen > s.job_abandon_seconds:
                why = N_("Stopped: nobody was watching it for %(seconds)s seconds.")
                self.scripts.finish(job_id, "stopped", (why, {"seconds": seconds_text(s.job_abandon_seconds)}),
                                    s.job_ttl_seconds, expect="queued")
                return self._read(job_id)
        return None

    def _kill_if_running(self, job_id: str) -> None:
        if self.r.hget(store.job_key(job_id), "status") == b"running":
            self._kill(job_id)

    def _kill(self, job_id: str) -> None:
        try:
            send_stop_job_command(self.r, job_id)
        except (InvalidJobOperation, NoSuchJobError):
            pass

    def _exist(self, ids: list[str]) -> list[bool]:
        with self.r.pipeline(transaction=False) as p:
            for job_id in ids:
                p.exists(store.job_key(job_id))
            return [bool(x) for x in p.execute()]

    def _trim(self, session: str) -> None:
        """A session keeps at most max_finished_jobs_per_session finished jobs."""
        ids = [m.decode() for m in self.r.zrange(store.session_jobs_key(session), 0, -1)]
        if len(ids) <= self.settings.max_finished_jobs_per_session:
            return
        with self.r.pipeline(transaction=False) as p:
            for job_id in ids:
                p.hget(store.job_key(job_id), "status")
            statuses = [store.decode(x) for x in p.execute()]
        done = [i for i, st in zip(ids, statuses) if st in FINISHED]
        drop = done[:max(0, len(done) - self.settings.max_finished_jobs_per_session)]
        if drop:
            with self.r.pipeline() as p:
                p.zrem(store.session_jobs_key(session), *drop)
                for job_id in drop:
                    p.delete(store.job_key(job_id), store.records_key(job_id))
                p.execute()
            with self._lock:
                for job_id in drop:
                    self._mirrors.pop(job_id, None)

    def _on_wake(self, channel: str, _data: bytes) -> None:
        """On the event loop: note which mirror to refresh; the refresher thread reads it."""
        job_id = channel[len(backend.WAKE + "job:"):]
        with self._lock:
            if not job_id:
                self._pending.update(self._mirrors)
            elif job_id in self._mirrors:
                self._pending.add(job_id)
            else:
                return
        self._wake.set()

    def _refresher(self) -> None:
        """Refresh the mirrors woken up; every MIRROR_REFRESH_SECONDS, also every unfinished one."""
        polled = time.monotonic()
        while not self._closed:
            self._wake.wait(max(0.0, polled + MIRROR_REFRESH_SECONDS - time.monotonic()))
            self._wake.clear()
            with self._lock:
                pending, self._pending = self._pending, set()
                if time.monotonic() >= polled + MIRROR_REFRESH_SECONDS:
                    polled = time.monotonic()
                    pending |= {i for i, j in self._mirrors.items() if j.status in ACTIVE}
                jobs = [self._mirrors[i] for i in pending if i in self._mirrors]
            for job in jobs:
                if self._closed:
                    return
                try:
                    self._refresh(job)
                except redis.exceptions.RedisError:
                    log.debug("could not refresh job %s", job.id, exc_info=True)
                except Exception:
                    log.exception("refreshing job %s", job.id)
