"""Periodic cleanup (app/cleanup.py): expired uploads and finished jobs go away on their own,
with no upload and no request about jobs to trigger it."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cnnlab.app import cleanup
from cnnlab.app.jobs import Job, JobNotFound, JobRunner, TrainSpec, build_model
from cnnlab.app.main import app
from cnnlab.app.settings import Settings, get_settings

UPLOAD_NAME = "0123456789abcdef0123456789abcdef.png"


def finished_job(runner: JobRunner, session: str) -> Job:
    """A finished job as a loaded model is: no training process involved."""
    job = Job(session, TrainSpec.model_validate({"dataset": "digits"}), clock=runner._clock)
    job.status = "done"
    job.finished = time.time()
    job.finished_mono = runner._clock()
    return runner.add_finished(job)


def aged(path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_runner_sweep_forgets_only_expired_finished_jobs():
    now = [1000.0]
    runner = JobRunner(Settings(job_ttl_seconds=60, job_abandon_seconds=10**6), clock=lambda: now[0])
    old = finished_job(runner, "a")
    now[0] += 40
    young = finished_job(runner, "a")
    assert runner.sweep() == 0
    now[0] += 21  # old: 61 s after it finished; young: 21 s
    assert runner.sweep() == 1
    with pytest.raises(JobNotFound):
        runner.get("a", old.id)
    assert runner.get("a", young.id) is young
    now[0] += 40
    assert runner.sweep() == 1
    assert runner.list("a") == []


def test_sweep_once_deletes_expired_uploads_and_forgets_jobs(tmp_path):
    now = [0.0]
    settings = Settings(upload_dir=tmp_path, upload_ttl_seconds=30, job_ttl_seconds=30)
    runner = JobRunner(settings, clock=lambda: now[0])
    finished_job(runner, "s")
    expired, fresh, foreign = tmp_path / UPLOAD_NAME, tmp_path / ("f" * 32 + ".png"), tmp_path / "notes.txt"
    for path in (expired, fresh, foreign):
        path.write_bytes(b"x")
    aged(expired, 31)
    aged(foreign, 3600)  # not a name of ours: never deleted
    now[0] += 31
    assert cleanup.sweep_once(settings, runner) == cleanup.Swept(uploads=1, jobs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, foreign.name])
    assert cleanup.sweep_once(settings, runner) == cleanup.Swept(uploads=0, jobs=0)


def test_interval_is_at_most_half_of_either_time_to_live():
    assert cleanup.cleanup_interval(Settings()) == 60.0
    assert cleanup.cleanup_interval(Settings(upload_ttl_seconds=10)) == 5.0
    assert cleanup.cleanup_interval(Settings(job_ttl_seconds=3)) == 1.5
    assert cleanup.cleanup_interval(Settings(cleanup_interval_seconds=0.5)) == 0.5


def test_the_running_app_sweeps_without_any_request(tmp_path):
    short = Settings(upload_dir=tmp_path, upload_ttl_seconds=2, job_ttl_seconds=2, cleanup_interval_seconds=0.05)
    app.dependency_overrides[get_settings] = lambda: short
    expired = tmp_path / UPLOAD_NAME
    expired.write_bytes(b"x")
    aged(expired, 60)
    try:
        with TestClient(app):
            runner: JobRunner = app.state.jobs
            job = finished_job(runner, "nobody-asks")
            # Finished long ago by the runner's clock (the runner keeps the settings it was made
            # with, which may be another test's when an earlier lifespan is still running).
            job.finished_mono -= runner.settings.job_ttl_seconds + 60
            deadline = time.monotonic() + 10
            while (expired.exists() or job.id in runner._jobs) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not expired.exists(), "the expired upload is still there"
            assert job.id not in runner._jobs, "the expired job is still kept"
    finally:
        app.dependency_overrides.clear()


def _datasets(settings: Settings, n: int) -> list[str]:
    """``n`` different small datasets stored in ``settings``' upload folder; their ids."""
    from cnnlab.app.datasets import store_arrays

    rng = np.random.default_rng(0)
    return [store_arrays(settings, rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), np.array([0, 0, 1, 1]),
                         ["a", "b"]) for _ in range(n)]


def test_unused_datasets_expire_unless_a_job_still_uses_them(tmp_path):
    from cnnlab.app.datasets import dataset_path

    now = [0.0]
    settings = Settings(upload_dir=tmp_path, upload_ttl_seconds=30, job_ttl_seconds=30)
    runner = JobRunner(settings, clock=lambda: now[0])
    stored_again, used, unused, fresh = _datasets(settings, 4)
    job = Job("s", TrainSpec.model_validate({"dataset": used}, context={"settings": settings}), clock=runner._clock)
    job.status, job.finished_mono = "done", runner._clock()
    runner.add_finished(job)
    assert runner.datasets_in_use() == {used}
    foreign = dataset_path(settings, used).parent / "notes.npz"
    foreign.write_bytes(b"x")
    for path in (dataset_path(settings, used), dataset_path(settings, unused), dataset_path(settings, stored_again),
                 foreign):
        aged(path, 31)
    assert _datasets(settings, 1) == [stored_again]  # the same drawings stored again: used again
    assert cleanup.sweep_once(settings, runner) == cleanup.Swept(uploads=0, jobs=0, datasets=1)
    left = {p.name for p in foreign.parent.iterdir()}
    assert left == {f"{i}.npz" for i in (used, stored_again, fresh)} | {"notes.npz"}
    now[0] += 31  # the job is forgotten: nothing uses its dataset any more
    assert cleanup.sweep_once(settings, runner) == cleanup.Swept(uploads=0, jobs=1, datasets=1)
    assert not dataset_path(settings, used).exists() and runner.datasets_in_use() == set()


def test_the_shared_queue_names_the_datasets_of_every_processs_jobs(redis_url, tmp_path):
    from cnnlab.app.jobs.shared import RedisJobQueue

    settings = Settings(redis_url=redis_url, upload_dir=tmp_path)
    queued, loaded, _unused = _datasets(settings, 3)  # the third: no job names it
    one, other = RedisJobQueue(settings), RedisJobQueue(settings)
    try:
        one.submit("s", TrainSpec.model_validate({"dataset": queued}, context={"settings": settings}))  # no worker: queued
        job = Job("s", TrainSpec.model_validate({"dataset": loaded}, context={"settings": settings}))
        job.status, job.model = "done", build_model(job.spec)  # a loaded model
        one.add_finished(job)
        one.submit("t", TrainSpec.model_validate({"dataset": "digits"}))
        assert other.datasets_in_use() == {queued, loaded}
    finally:
        one.shutdown()
        other.shutdown()
