"""What a training worker runs (shared mode): ``cnnlab worker``, or ``python -m cnnlab.app.jobs.worker``.

    CNNLAB_REDIS_URL=redis://valkey:6379/0 cnnlab worker

An RQ worker on the ``cnnlab-training`` queue. RQ forks a work horse per job; ``train``
runs in it and trains as core/train_worker.py does (same datasets, augmentation, final
metrics and filters), keeping the curve in a ``Job`` of its own (the same record and metrics
logic as the in-process queue) and writing it to the job's hash (app/jobs/store.py): records
and metrics at most every RECORDS_EVERY_SECONDS, weights every WEIGHTS_EVERY_SECONDS and at
the end, each write bumping the version and waking the web processes.

It stops before the next batch when the job's stop flag is set (looked at every
STOP_CHECK_SECONDS), at the job's time cap, and when its session has not been seen for the
abandon time (the limits are the submitting web process's, stored with the job). A thread of
the horse writes the job's heartbeat every HEARTBEAT_SECONDS: a horse that dies without a
word is found by the web processes (``job_lost_seconds``). The horse dies with its worker
(PR_SET_PDEATHSIG on Linux). Each worker keeps its entry in ``cnnlab:workers`` alive, so web
processes can tell queued jobs whether any worker is there at all.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import redis
from rq import Worker, get_current_job

from cnnlab.app import backend
from cnnlab.app.i18n import N_
from cnnlab.app.jobs import store
from cnnlab.app.jobs.job import Job
from cnnlab.app.jobs.local import seconds_text
from cnnlab.app.jobs.spec import TrainSpec, build_model, worker_job
from cnnlab.app.settings import Settings
from cnnlab.app.supervise import die_with_parent, exit_reason
from cnnlab.core import train as core_train
from cnnlab.core.train_worker import filters_of, final_metrics, job_dataset, job_optimizer, lower_priority

__all__ = ["main", "train", "on_stopped"]

log = logging.getLogger(__name__)

RECORDS_EVERY_SECONDS = 0.1
WEIGHTS_EVERY_SECONDS = 0.5
STOP_CHECK_SECONDS = 0.05
HEARTBEAT_SECONDS = 1.0
# A worker's entry in cnnlab:workers is renewed this often and lasts this long.
ALIVE_EVERY_SECONDS = 2.0
ALIVE_FOR_SECONDS = 6.0
RESTART_SECONDS = 1.0
END_RETRY_SECONDS = 10.0
UNSUBSCRIBE_WAIT_SECONDS = 0.2
# The worker's process id, for its horses (``python -m`` runs this file as __main__, while RQ
# imports app.jobs.worker: a module global would not be shared).
WORKER_PID_ENV = "CNNLAB_WORKER_PID"


class _Gone(Exception):
    """The job no longer runs in Valkey (failed as lost, or expired): stop without a word."""


# --------------------------------------------------------------------------- the horse


def train(job_id: str) -> None:
    """The RQ job: train ``job_id`` (in the work horse)."""
    # A killed worker leaves no training behind: its horse gets SIGKILL (its job is then lost).
    worker_pid = os.environ.get(WORKER_PID_ENV)
    die_with_parent(signal.SIGKILL, int(worker_pid) if worker_pid else None)
    lower_priority()  # as core/train_worker.py: pages sharing the host come first
    try:
        training = Training(get_current_job().connection, job_id)
    except _Gone:  # expired while it waited
        return
    training.run()


class Training:
    def __init__(self, r: redis.Redis, job_id: str) -> None:
        self.r, self.id = r, job_id
        self.scripts = store.Scripts(r)
        self.key, self.channel = store.job_key(job_id), store.channel(job_id)
        session, spec, limits, created = r.hmget(self.key, "session", "spec", "limits", "created")
        if session is None:
            raise _Gone()
        self.session = session.decode()
        self.spec = TrainSpec.model_validate_json(spec)
        self.limits = json.loads(limits or "{}")
        self.created = float(created or time.time())
        self.message: tuple[str, dict[str, Any]] | None = None
        self.pushed_seq, self.batch_every = 0, 1
        self.checked, self.stopping = 0.0, False
        self.ended = threading.Event()

    def abandoned(self) -> bool:
        seen = self.r.get(store.seen_key(self.session))
        if time.time() - max(float(seen or 0.0), self.created) > self.limits["abandon"]:
            self.message = (N_("Stopped: nobody was watching it for %(seconds)s seconds."),
                            {"seconds": seconds_text(self.limits["abandon"])})
            return True
        return False

    def run(self) -> None:
        if self.abandoned():  # waited in line after its tab was closed
            self.scripts.finish(self.id, "stopped", self.message, self.limits["ttl"], expect="queued")
            return
        if not self.scripts.start(keys=[self.key], args=[self.channel, repr(time.time()), socket.gethostname(),
                                                                  os.getpid()]):
            return  # stopped while it waited
        beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        beat.start()
        try:
            status, job, model = self._train()
            self._end(status, job, model)
        except _Gone:
            log.info("job %s ended elsewhere; training stopped", self.id)
        except Exception as e:  # the job's failure is its own: report it, keep the worker going
            log.exception("training job %s failed", self.id)
            why = (N_("Training failed: %(error)s"), {"error": str(e) or type(e).__name__})
            self.scripts.finish(self.id, "failed", why, self.limits["ttl"])
        finally:
            self.ended.set()

    def _end(self, status: str, job: Job, model: Any) -> None:
        """The last records, weights and metrics, then the status: retried while Valkey is away
        for a moment (the trained model is worth a few seconds' wait)."""
        give_up = time.monotonic() + END_RETRY_SECONDS
        while True:
            try:
                self._flush(job, model, weights=True, strict=True)
                self.scripts.finish(self.id, status, self.message if status == "stopped" else None,
                                    self.limits["ttl"], {"metrics": json.dumps(job.metrics),
                                                         "filters": json.dumps(filters_of(model))})
                return
            except backend.SharedStoreDown:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.5)

    def _heartbeat(self) -> None:
        while not self.ended.wait(HEARTBEAT_SECONDS):
            try:
                self.scripts.heartbeat(keys=[self.key], args=[repr(time.time())])
            except redis.exceptions.RedisError:
                log.warning("job %s: could not write its heartbeat", self.id)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self.began >= self.limits["time_cap"]:
            self.message = self.message or (N_("Stopped: a training may last at most %(seconds)s seconds."),
                                            {"seconds": seconds_text(self.limits["time_cap"])})
            return True
        if not self.stopping and now - self.checked >= STOP_CHECK_SECONDS:
            self.checked = now
            try:
                self.stopping = self.r.hget(self.key, "stop") == b"1" or self.abandoned()
            except backend.SharedStoreDown:  # asked again in a moment
                pass
        return self.stopping

    def _train(self) -> tuple[str, Job, Any]:
        spec, plan = self.spec, worker_job(self.spec, Settings())  # a dataset of one's own: in the shared upload folder
        dataset, augment = job_dataset(plan)
        model = build_model(spec)
        optimizer = job_optimizer(plan)  # with its weight decay
        job = Job(self.session, spec, job_id=self.id)  # keeps the curve as the in-process queue does
        job.metrics.update({"n_train": len(dataset.y_train), "n_params": model.n_params})
        self.began = time.monotonic()
        self._flush(job, model, weights=True)
        status = "done"
        records_at = weights_at = time.monotonic()
        for progress in core_train.train(model, dataset, optimizer, epochs=plan["epochs"],
                                         batch_size=plan["batch_size"], seed=plan["seed"],
                                         should_stop=self.should_stop, lr_decay=plan["lr_decay"],
                                         augment=augment):
            if progress.kind == "stopped":
                status = "stopped"
            job._record(progress.to_dict())
            now = time.monotonic()
            if progress.kind == "epoch" or now - weights_at >= WEIGHTS_EVERY_SECONDS:
                self._flush(job, model, weights=True)
                records_at = weights_at = now
            elif progress.kind != "batch" or now - records_at >= RECORDS_EVERY_SECONDS:
                self._flush(job, model)
                records_at = now
        job.metrics.update(final_metrics(model, dataset))
        return status, job, model

    def _flush(self, job: Job, model: Any, *, weights: bool = False, strict: bool = False) -> None:
        """Write the records not written yet (all of them once they were thinned), the metrics
        and, with ``weights``, the weights and filters. Valkey away: the next write catches up
        (``strict``: raise)."""
        records = job.records
        if job._batch_every != self.batch_every:
            mode, new = "replace", records
        else:
            mode, new = "append", [r for r in records if r["seq"] > self.pushed_seq]
        fields: list[Any] = ["metrics", json.dumps(job.metrics)]
        if weights:
            fields += ["weights", store.npy(model.flat_params), "filters", json.dumps(filters_of(model))]
        try:
            version = self.scripts.update(keys=[self.key, store.records_key(self.id)], args=[
                self.channel, mode, len(new), *(json.dumps(r) for r in new), *fields])
        except backend.SharedStoreDown:
            if strict:
                raise
            log.warning("job %s: could not write its progress", self.id)
            return
        if int(version) < 0:
            raise _Gone()
        self.batch_every = job._batch_every
        if records:
            self.pushed_seq = records[-1]["seq"]


# --------------------------------------------------------------------------- the worker


def _ttl(connection: redis.Redis, job_id: str) -> float:
    limits = connection.hget(store.job_key(job_id), "limits")
    return json.loads(limits)["ttl"] if limits else Settings().job_ttl_seconds


def on_stopped(job: Any, connection: redis.Redis, *args: Any) -> None:
    """RQ killed the horse on request (a stop not obeyed within the grace): the job ends
    "stopped", with the weights it last wrote."""
    store.Scripts(connection).finish(job.id, "stopped", (N_("Stopped on request."), {}), _ttl(connection, job.id))


def _horse_killed(job: Any, _pid: int, status: int, _rusage: Any) -> None:
    """The horse died without finishing its job (killed, out of memory)."""
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    store.Scripts(job.connection).finish(job.id, "failed", exit_reason(code), _ttl(job.connection, job.id))


class TrainingWorker(Worker):
    """RQ's forking worker. Its warm shutdown (the first SIGTERM or Ctrl+C) also asks the job
    it trains to stop, so the job ends "stopped" with its model within a second instead of
    holding the shutdown for up to the time cap. While Valkey is away it retries at least
    every ``max_connection_wait_time`` seconds (RQ's default backs off to a minute)."""

    max_connection_wait_time = 2.0
    shutting_down = False

    def unsubscribe(self) -> None:
        """As RQ's, with a bounded wait: redis-py 8's PubSubWorkerThread.stop() joins its
        thread without a limit, and once unsubscribed that thread sleeps out RQ's 60 s poll
        (a stopped worker hung for up to a minute). The thread is a daemon: left, it ends
        by itself."""
        if self.pubsub_thread:
            self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
            self.pubsub.unsubscribe()
            self.pubsub_thread.stop(timeout=UNSUBSCRIBE_WAIT_SECONDS)
            self.pubsub.close()

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()
        self.shutting_down = True
        # This process's own record of what it runs: no Valkey read in a signal handler (one
        # failing while Valkey is away would be taken for a lost connection and retried).
        running = list(self.executions.values())
        if not running:
            return
        job_id = running[0].job_id
        try:
            store.Scripts(self.connection).ask_stop(keys=[store.job_key(job_id)], args=[
                store.channel(job_id), store.message_json((N_("Stopped: the server is shutting down."), {})),
                repr(time.time())])
        except redis.exceptions.RedisError:
            log.warning("could not ask job %s to stop", job_id)


def _keep_alive(r: redis.Redis, name: str, stop: threading.Event) -> None:
    while True:
        try:
            now = time.time()
            with r.pipeline() as p:
                p.zadd(store.WORKERS_KEY, {name: now + ALIVE_FOR_SECONDS})
                p.zremrangebyscore(store.WORKERS_KEY, "-inf", now)
                p.execute()
        except redis.exceptions.RedisError:
            log.warning("could not renew this worker's entry")
        if stop.wait(ALIVE_EVERY_SECONDS):
            return


def main(argv: list[str] | None = None) -> int:
    """``cnnlab worker [--burst] [--name NAME]``: train jobs until stopped (SIGTERM: after
    the current job; twice: now)."""
    parser = argparse.ArgumentParser(prog="cnnlab worker", description="Train the jobs of every CNN Lab web process "
                                     "that shares CNNLAB_REDIS_URL.")
    parser.add_argument("--burst", action="store_true", help="quit when the queue is empty")
    parser.add_argument("--name", help="the worker's name (default: host and process id)")
    args = parser.parse_args(argv)
    url = backend.redis_url(Settings())
    if url is None:
        print("cnnlab worker: set CNNLAB_REDIS_URL to the Valkey/Redis server the web processes use.",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ[WORKER_PID_ENV] = str(os.getpid())
    # A connection of its own: RQ lengthens its reply timeout for the queue's blocking pop.
    r = redis.Redis.from_url(url, socket_connect_timeout=backend.CONNECT_TIMEOUT_SECONDS)
    name = args.name or f"{socket.gethostname()}.{os.getpid()}"
    stop = threading.Event()
    alive = threading.Thread(target=_keep_alive, args=(r, name, stop), name="alive", daemon=True)
    alive.start()
    try:
        for attempt in itertools.count():
            # A new RQ name after a restart: the last one may still be registered.
            worker = TrainingWorker([store.QUEUE_NAME], connection=r, name=f"{name}.{attempt}" if attempt else name,
                                    work_horse_killed_handler=_horse_killed)
            try:
                worker.work(burst=args.burst, logging_level="INFO")
            except backend.SharedStoreDown:  # Valkey was away when the worker registered
                pass
            if args.burst or worker.shutting_down:
                break
            # RQ's loop ends on a lost connection it did not expect: start again, as a new worker.
            log.warning("the worker stopped without being asked to; starting again in %s s", RESTART_SECONDS)
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
            if stop.wait(RESTART_SECONDS):
                break
    finally:
        stop.set()
        alive.join(5)
        try:
            r.zrem(store.WORKERS_KEY, name)
        except redis.exceptions.RedisError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
