"""The shared job queue (app/jobs/shared.py) with real RQ workers (app/jobs/worker.py) on a
real Valkey: two RedisJobQueue instances stand for two web processes.

Workers are real ``python -m cnnlab.app.jobs.worker`` processes, killed at the end of their test
(their horses die with them). Short jobs are digits, one epoch; a "long" one is MNIST for
30 epochs, which every test stops long before it ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cnnlab.app.backend import Hub
from cnnlab.app.i18n import use_locale
from cnnlab.app.jobs import FINISHED, Job, JobLimitError, JobNotFound, TrainSpec, build_model, export_npz, load_npz, predict
from cnnlab.app.jobs import store
from cnnlab.app.jobs import JobRunner
from cnnlab.app.jobs.shared import RedisJobQueue
from cnnlab.app.jobs.worker import Training
from cnnlab.app.main import create_app
from cnnlab.app.settings import Settings, get_settings
from tests.serverproc import WorkerProcess

SHORT = {"dataset": "digits", "epochs": 1, "batch_size": 64}
LONG = {"dataset": "mnist", "epochs": 30}


def spec(**fields) -> TrainSpec:
    return TrainSpec.model_validate({**SHORT, **fields})


def long_spec() -> TrainSpec:
    return TrainSpec.model_validate(LONG)


def wait_until(check: Callable[[], object], timeout: float, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def alive(worker: WorkerProcess, r) -> WorkerProcess:
    """``worker`` once its entry among the live workers is there (what the queue counts)."""
    assert wait_until(lambda: not worker.alive() or store.live_workers(r) > 0, 20), "no worker came"
    assert worker.alive(), f"the worker exited:\n{worker.log()}"
    return worker


@pytest.fixture
def english():
    with use_locale("en"):
        yield


@pytest.fixture
def settings(redis_url) -> Settings:
    return Settings(redis_url=redis_url)


@pytest.fixture
def queues(settings) -> Iterator[tuple[RedisJobQueue, RedisJobQueue]]:
    a, b = RedisJobQueue(settings), RedisJobQueue(settings)
    yield a, b
    a.shutdown()
    b.shutdown()


@pytest.fixture
def workers(redis_url, tmp_path) -> Iterator[Callable[[], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(tmp_path, CNNLAB_REDIS_URL=redis_url).start(wait=False)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def hub(redis_url) -> Iterator[Hub]:
    """A web process's Hub, on an event loop of its own."""
    loop = asyncio.new_event_loop()
    hub = Hub(redis_url)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> asyncio.Task:
        return asyncio.create_task(hub.run())

    async def stop(task: asyncio.Task) -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    task = asyncio.run_coroutine_threadsafe(start(), loop).result(5)
    assert wait_until(lambda: hub.connected.is_set(), 5)
    yield hub
    asyncio.run_coroutine_threadsafe(stop(task), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def finish(queue: RedisJobQueue, session: str, job_id: str, timeout: float = 60) -> Job:
    job = wait_until(lambda: (j := queue.get(session, job_id)).status in FINISHED and j, timeout)
    assert job, f"job still {queue.get(session, job_id).status}"
    return job


def stepping(queue: RedisJobQueue, session: str, job_id: str) -> Job:
    job = wait_until(lambda: (j := queue.get(session, job_id)).metrics.get("step") and j, 60)
    assert job and job.status == "running", queue.get(session, job_id).status
    return job


def test_a_worker_trains_a_job_that_every_web_process_sees(settings, workers, hub, english):
    web1, web2 = RedisJobQueue(settings), RedisJobQueue(settings, hub=hub)
    worker = alive(workers(), web1.r)
    submitted = web1.submit("s1", spec(), "10.0.0.1")
    watched = web2.get("s1", submitted.id)  # from here on, only the Hub's wake-ups refresh it
    version = -1
    deadline = time.monotonic() + 60
    while watched.status not in FINISHED and time.monotonic() < deadline:
        version = watched.wait_for_change(version, timeout=1.0)
    assert watched.status == "done", watched.message
    job = web1.get("s1", submitted.id)
    for seen in (watched, job):
        m = seen.metrics
        assert m["epoch"] == 1 and m["step"] == m["batches_per_epoch"] == 23
        assert 0.5 < m["test_accuracy"] <= 1 and np.array(m["confusion"]).sum() == m["n_test"]
        kinds = [r["kind"] for r in seen.records]
        assert kinds.count("epoch") == 1 and kinds.count("batch") == 23
        assert [r["seq"] for r in seen.records] == list(range(1, 25))
        assert np.array(seen.filters).shape == (16, 1, 3, 3)
    assert np.array_equal(watched.model.flat_params, job.model.flat_params)
    assert predict(watched, test_index=7) == predict(job, test_index=7)
    assert export_npz(watched) == export_npz(job)
    assert [j.id for j in web2.list("s1")] == [job.id]
    with pytest.raises(JobNotFound):
        web2.get("someone else", job.id)
    assert worker.proc.poll() is None
    web1.shutdown()
    web2.shutdown()


def test_a_stopped_job_stops_within_a_second(queues, workers, english):
    web1, web2 = queues
    alive(workers(), web1.r)
    job = web1.submit("a", long_spec())
    stepping(web2, "a", job.id)
    asked = time.monotonic()
    web2.cancel("a", job.id)
    stopped = wait_until(lambda: web1.get("a", job.id).status in FINISHED, 5, every=0.01)
    took = time.monotonic() - asked
    job = web1.get("a", job.id)
    assert stopped and job.status == "stopped" and job.message == "Stopped on request."
    assert took < 1.0, f"the job stopped {took:.2f} s after it was asked to"
    assert job.metrics["test_accuracy"] is not None and job.metrics["step"] < 30 * job.metrics["batches_per_epoch"]
    assert sum(predict(job, test_index=0)["probabilities"]) == pytest.approx(1.0)
    print(f"stop latency: {took * 1000:.0f} ms")


def test_a_worker_told_to_shut_down_stops_its_job_first(queues, workers, english):
    web1, _ = queues
    worker = alive(workers(), web1.r)
    job = stepping(web1, "a", web1.submit("a", long_spec()).id)
    worker.proc.send_signal(signal.SIGTERM)  # docker stop, systemctl stop
    job = finish(web1, "a", job.id, timeout=5)
    assert job.status == "stopped" and job.message == "Stopped: the server is shutting down."
    assert worker.proc.wait(5) == 0
    assert wait_until(lambda: store.live_workers(web1.r) == 0, 1)


def test_a_horse_that_ignores_the_stop_is_killed_after_the_grace(redis_url, workers, english):
    # A stopped horse writes no heartbeat either: lost only long after the grace, so on a busy
    # machine the kill's "stopped" is not overtaken by the lost-worker sweep's "failed".
    web = RedisJobQueue(Settings(redis_url=redis_url, job_stop_grace_seconds=1, job_lost_seconds=30))
    alive(workers(), web.r)
    job = stepping(web, "a", web.submit("a", long_spec()).id)
    pid = int(web.r.hget(store.job_key(job.id), "pid"))
    os.kill(pid, signal.SIGSTOP)  # deaf to the stop flag, heartbeat and all
    web.cancel("a", job.id)
    job = finish(web, "a", job.id, timeout=8)
    assert job.status == "stopped" and job.message == "Stopped on request."
    assert job.model is not None and job.metrics["step"] > 0  # the last weights it wrote
    assert wait_until(lambda: not _alive(pid), 5), "the horse is still there"
    web.shutdown()


def test_a_queued_job_can_be_stopped_and_leaves_the_rq_queue(queues, english):
    web1, web2 = queues
    job = web1.submit("a", spec())
    assert web1.rq.count == 1
    assert web2.cancel("a", job.id).status == "stopped"
    job = web1.get("a", job.id)
    assert job.status == "stopped" and job.message == "Stopped on request." and job.queue_position is None
    assert web1.rq.count == 0
    assert web1.cancel("a", job.id).status == "stopped"  # stopping a finished job changes nothing


def test_caps_hold_across_web_processes(redis_url, english):
    s = Settings(redis_url=redis_url, max_jobs_per_session=2, max_jobs_per_address=3, max_queued_jobs=4)
    web1, web2 = RedisJobQueue(s), RedisJobQueue(s)
    # Many submissions at once from both processes for one session: exactly its cap get in.
    accepted, refused = [], []

    def submit(web):
        try:
            accepted.append(web.submit("same", spec(), "10.0.0.1"))
        except JobLimitError:
            refused.append(1)

    threads = [threading.Thread(target=submit, args=(web,)) for web in (web1, web2) * 6]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(accepted), len(refused)) == (2, 10)
    web2.submit("other", spec(), "10.0.0.1")
    with pytest.raises(JobLimitError, match="network already has 3"):
        web1.submit("third", spec(), "10.0.0.1")
    web1.submit("fourth", spec(), "10.0.0.2")  # 4 waiting, no worker: the line is full
    with pytest.raises(JobLimitError, match="0 trainings are running and 4 are waiting"):
        web2.submit("fifth", spec(), "10.0.0.3")
    web1.cancel("fourth", web1.list("fourth")[0].id)
    assert web2.submit("fifth", spec(), "10.0.0.3").queue_position == 4
    assert [web1.get("same", j.id).queue_position for j in accepted] in ([1, 2], [2, 1])
    web1.shutdown()
    web2.shutdown()


def test_without_a_worker_a_queued_job_says_so_and_runs_when_one_comes(queues, workers, english):
    web1, web2 = queues
    job = web1.submit("a", spec())
    waiting = web2.get("a", job.id)
    assert waiting.status == "queued" and waiting.queue_position == 1
    assert waiting.message == "No training worker is running: the training will start when one is."
    with use_locale("es"):
        assert waiting.message.startswith("No hay ningún trabajador de entrenamiento en marcha")
    workers()
    job = finish(web2, "a", job.id)
    assert job.status == "done" and job.message is None


def test_a_killed_worker_fails_its_job_and_a_new_worker_takes_the_next(queues, workers, english):
    web1, web2 = queues
    first = alive(workers(), web1.r)
    job = stepping(web1, "a", web1.submit("a", long_spec()).id)
    pid = int(web1.r.hget(store.job_key(job.id), "pid"))
    first.proc.kill()
    killed = time.monotonic()
    job = finish(web2, "a", job.id, timeout=15)
    took = time.monotonic() - killed
    assert job.status == "failed" and job.error == "Training failed: the worker running it stopped."
    assert took < 10, f"the lost job was failed after {took:.1f} s"
    assert wait_until(lambda: not _alive(pid), 5), "the horse outlived its worker"
    assert web1.r.hget(store.job_key(job.id), "status") == b"failed"
    print(f"lost job failed after {took:.1f} s")
    workers()
    nxt = finish(web1, "a", web1.submit("a", spec()).id)
    assert nxt.status == "done"


def test_a_loaded_model_is_served_by_every_web_process(queues, english):
    web1, web2 = queues
    source = Job("x", spec())
    source.model = build_model(source.spec)
    loaded = web1.add_finished(load_npz("b", export_npz(source)))
    seen = web2.get("b", loaded.id)
    assert seen.status == "done" and seen.message == "Loaded from a file."
    assert seen.spec == loaded.spec and seen.metrics["test_accuracy"] == loaded.metrics["test_accuracy"]
    assert np.array_equal(seen.model.flat_params, source.model.flat_params)
    assert predict(seen, test_index=3) == predict(source, test_index=3)
    assert [j.id for j in web2.list("b")] == [loaded.id]
    assert web2.r.pttl(store.job_key(loaded.id)) > 0  # forgotten after job_ttl_seconds


def test_a_finished_job_is_forgotten_everywhere_after_its_time(redis_url):
    short = Settings(redis_url=redis_url, job_ttl_seconds=0.3)
    web1, web2 = RedisJobQueue(short), RedisJobQueue(short)
    source = Job("x", spec())
    source.model = build_model(source.spec)
    loaded = web1.add_finished(load_npz("b", export_npz(source)))
    assert web2.get("b", loaded.id).status == "done"
    time.sleep(0.4)
    for web in (web1, web2):  # each keeps a mirror of it: neither answers for it any more
        with pytest.raises(JobNotFound):
            web.get("b", loaded.id)
        assert web.list("b") == []
    web1.shutdown()
    web2.shutdown()


def test_thinned_records_reach_every_mirror_as_the_in_process_queue_keeps_them(queues):
    """600 batches: the curve is thinned (the stored list rewritten) while another web process
    keeps reading it; the end result is the in-process queue's curve, record for record."""
    web1, web2 = queues
    thin = spec(batch_size=3)
    job_id = web1.submit("a", thin).id
    reading = threading.Event()

    def read() -> None:
        while not reading.is_set():
            web2.get("a", job_id)
            time.sleep(0.005)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        Training(web1.r, job_id).run()  # what a work horse runs, here in-process
    finally:
        reading.set()
        reader.join()
    with JobRunner(Settings()) as runner:
        local = runner.submit("a", thin)
        while local.status not in FINISHED:
            local.wait_for_change(local.version, timeout=1)
    shared = web2.get("a", job_id)
    assert shared.status == local.status == "done"
    curve = [(r["seq"], r["kind"], r["step"], r["loss"]) for r in local.records]
    assert 200 < len(curve) < 400
    assert [(r["seq"], r["kind"], r["step"], r["loss"]) for r in shared.records] == curve
    assert [(r["seq"], r["step"]) for r in web1.get("a", job_id).records] == [c[:3:2] for c in curve]


def test_the_app_in_shared_mode_streams_a_job_a_worker_trains(redis_url, workers, english):
    """Through the real app (its lifespan makes the RedisJobQueue and runs the Hub): the
    event stream ends with the job a worker trained, and the model answers."""
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: Settings(redis_url=redis_url)
    workers()
    with TestClient(app) as client:
        assert isinstance(app.state.jobs, RedisJobQueue)
        r = client.post("/api/train", json={**SHORT, "epochs": 2})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        stream = []
        with client.stream("GET", f"/api/train/{job_id}/events", headers={"Accept": "text/event-stream"}) as r:
            name = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[len("event: "):]
                elif line.startswith("data: "):
                    stream.append((name, json.loads(line[len("data: "):])))
        assert stream[-1][0] == "done" and stream[-1][1]["metrics"]["test_accuracy"] > 0.5
        records = [rec for _, data in stream for rec in data["records"]]
        assert [rec["epoch"] for rec in records if rec["kind"] == "epoch"] == [1, 2]
        assert [rec["seq"] for rec in records] == list(range(1, len(records) + 1))
        r = client.post(f"/api/train/{job_id}/predict", json={"test_index": 5})
        assert r.status_code == 200 and sum(r.json()["probabilities"]) == pytest.approx(1.0)


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
