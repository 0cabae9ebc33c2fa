"""The training job runner (app/jobs/local.py) on its own: queueing, limits, stopping, failures, determinism.

Jobs really train (the engine is never faked for a success path). Short jobs are digits, one
epoch; a "long" job is MNIST for 30 epochs, which every test stops long before it ends.
Waiting is bounded only so a broken runner fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from cnnlab.app.i18n import use_locale
from cnnlab.app.jobs import (ACTIVE, FINISHED, JobLimitError, JobNotFound, JobRunner, ModelFileError, TrainSpec,
                      export_npz, load_npz, predict)
from cnnlab.app.settings import Settings
from cnnlab.core import train as core_train

SHORT = {"dataset": "digits", "epochs": 1, "batch_size": 64}
LONG = {"dataset": "mnist", "epochs": 30}
GIVE_UP_SECONDS = 120


def spec(**fields) -> TrainSpec:
    return TrainSpec.model_validate({**SHORT, **fields})


def long_spec(**fields) -> TrainSpec:
    return TrainSpec.model_validate({**LONG, **fields})


def finish(job):
    version = -1
    give_up = time.monotonic() + GIVE_UP_SECONDS
    while job.status not in FINISHED and time.monotonic() < give_up:
        version = job.wait_for_change(version, timeout=1.0)
    assert job.status in FINISHED, f"job still {job.status}"
    return job


def started_training(job):
    """Wait until the job has taken at least one optimizer step."""
    version = -1
    give_up = time.monotonic() + GIVE_UP_SECONDS
    while not job.metrics.get("step") and job.status not in FINISHED and time.monotonic() < give_up:
        version = job.wait_for_change(version, timeout=1.0)
    assert job.metrics.get("step"), job.status
    return job


@pytest.fixture
def english():
    with use_locale("en"):
        yield


def test_defaults_come_from_the_dataset():
    digits = TrainSpec.model_validate({"dataset": "digits"})
    mnist = TrainSpec.model_validate({"dataset": "mnist"})
    d, m = core_train.DEFAULTS["digits"], core_train.DEFAULTS["mnist"]
    assert (digits.filters, digits.kernel, digits.lr, digits.epochs) == (
        d["model"]["filters"], d["model"]["kernel"], d["optimizer"]["lr"], d["epochs"])
    assert (mnist.filters, mnist.kernel, mnist.hidden, mnist.lr, mnist.batch_size) == (
        m["model"]["filters"], m["model"]["kernel"], m["model"]["hidden"], m["optimizer"]["lr"], m["batch_size"])
    assert TrainSpec.model_validate({"dataset": "mnist", "lr": 0.1}).lr == 0.1


@pytest.mark.parametrize("bad", [{"filters": 17}, {"lr": 0}, {"lr": 1.5}, {"epochs": 31}, {"dataset": "cifar"},
                                 {"batch_size": "10"}, {"beta2": 1.0}, {"kernel": 7, "padding": 0, "pool_size": 4},
                                 {"colour": "red"}])
def test_bad_specs_are_refused(bad, english):
    with pytest.raises(ValueError):
        TrainSpec.model_validate(bad)


def test_an_architecture_that_does_not_fit_says_the_formula(english):
    with pytest.raises(ValueError, match=r"pooling window does not fit.*⌊\(2 \+ 0 − 1·\(4 − 1\) − 1\)/4⌋ \+ 1 = 0"):
        TrainSpec.model_validate({"dataset": "digits", "kernel": 7, "padding": 0, "pool_size": 4})


def test_a_short_job_trains_and_reports(english):
    with JobRunner(Settings()) as runner:
        job = finish(runner.submit("s1", spec()))
    assert job.status == "done", job.message
    m = job.metrics
    assert m["epoch"] == 1 and m["step"] == m["batches_per_epoch"] == 23
    assert 0.5 < m["test_accuracy"] <= 1 and m["images_per_second"] > 0
    assert np.array(m["confusion"]).sum() == m["n_test"]
    kinds = [r["kind"] for r in job.records]
    assert kinds.count("epoch") == 1 and kinds.count("batch") == 23
    assert [r["seq"] for r in job.records] == sorted(r["seq"] for r in job.records)
    assert np.array(job.filters).shape == (16, 1, 3, 3)


def test_batch_records_are_thinned_but_epochs_kept():
    with JobRunner(Settings()) as runner:
        job = finish(runner.submit("s1", spec(epochs=4, batch_size=2)))  # 4 × 719 batches
    batches = [r for r in job.records if r["kind"] == "batch"]
    assert 200 <= len(batches) <= 400
    assert [r["epoch"] for r in job.records if r["kind"] == "epoch"] == [1, 2, 3, 4]
    steps = [r["step"] for r in batches]
    gaps = set(np.diff(steps))
    assert len(gaps) == 1  # evenly spaced


def test_jobs_beyond_max_running_queue_and_then_run(english):
    s = Settings(max_running_jobs=1, max_queued_jobs=2)
    with JobRunner(s) as runner:
        first = started_training(runner.submit("a", long_spec()))
        second = runner.submit("b", spec())
        third = runner.submit("c", spec(seed=1))
        assert (first.status, second.status, third.status) == ("running", "queued", "queued")
        assert (second.queue_position, third.queue_position) == (1, 2)
        with pytest.raises(JobLimitError, match="busy"):
            runner.submit("d", spec())
        runner.cancel("a", first.id)
        assert finish(second).status == "done"
        assert finish(third).status == "done"
        assert second.queue_position is None
        assert finish(first).status == "stopped"


def test_one_session_may_not_hog_the_machine(english):
    with JobRunner(Settings(max_jobs_per_session=1)) as runner:
        job = runner.submit("a", long_spec())
        with pytest.raises(JobLimitError, match="already have 1"):
            runner.submit("a", spec())
        other = runner.submit("b", spec())
        runner.cancel("a", job.id)
        assert finish(other).status == "done"


def test_one_address_may_not_hold_every_place(english):
    """Fresh sessions (a script that drops its cookie) from one address stop at its cap; the
    rest of the places stay for other addresses."""
    with JobRunner(Settings(max_jobs_per_session=3, max_jobs_per_address=2, max_running_jobs=1)) as runner:
        first = runner.submit("s1", long_spec(), "127.0.0.2")
        runner.submit("s2", long_spec(), "127.0.0.2")
        with pytest.raises(JobLimitError, match="network already has 2"):
            runner.submit("s3", spec(), "127.0.0.2")
        other = runner.submit("s4", spec(), "127.0.0.3")
        assert other.status in ("queued", "running")
        runner.cancel("s1", first.id)
        assert finish(first).status == "stopped"  # a finished job no longer counts
        runner.submit("s5", spec(), "127.0.0.2")


def test_cancel_a_queued_job_takes_it_out_of_line(english):
    with JobRunner(Settings(max_running_jobs=1)) as runner:
        first = runner.submit("a", long_spec())
        second = runner.submit("a", spec())
        third = runner.submit("a", spec(seed=2))
        assert third.queue_position == 2
        runner.cancel("a", second.id)
        assert second.status == "stopped" and second.model is None
        assert third.queue_position == 1
        assert second.message == "Stopped on request."
        runner.cancel("a", first.id)
        assert finish(third).status == "done"


def test_cancel_a_running_job_keeps_its_model_usable(english):
    with JobRunner(Settings()) as runner:
        job = started_training(runner.submit("a", long_spec()))
        runner.cancel("a", job.id)
        finish(job)
    assert job.status == "stopped" and job.message == "Stopped on request."
    assert 1 <= job.metrics["step"] < 30 * 125
    assert "test_accuracy" in job.metrics and len(job.metrics["confusion"]) == 10
    out = predict(job, test_index=0)
    assert sum(out["probabilities"]) == pytest.approx(1.0) and len(out["probabilities"]) == 10


def test_the_time_cap_stops_a_job_with_a_message(english):
    with JobRunner(Settings(job_time_cap_seconds=0.3)) as runner:
        job = finish(runner.submit("a", long_spec()))
    assert job.status == "stopped"
    assert job.message == "Stopped: a training may last at most 0.3 seconds."
    assert job.metrics["epoch"] < 30


def test_an_abandoned_job_is_stopped(english):
    with JobRunner(Settings(job_abandon_seconds=0.3)) as runner:
        job = finish(runner.submit("a", long_spec()))
    assert job.status == "stopped"
    assert job.message == "Stopped: nobody was watching it for 0.3 seconds."


def test_a_watched_job_is_not_abandoned():
    with JobRunner(Settings(job_abandon_seconds=2.0)) as runner:
        job = runner.submit("a", spec(epochs=3))
        while job.status not in FINISHED:
            runner.touch("a")  # as the event stream does while a tab listens
            job.wait_for_change(job.version, timeout=0.1)
        assert runner.last_seen("a") is not None and runner.last_seen("nobody") is None
    assert job.status == "done" and job.message is None


def test_another_sessions_job_is_not_found_like_an_unknown_id(english):
    with JobRunner(Settings()) as runner:
        job = runner.submit("owner", spec())
        with pytest.raises(JobNotFound) as foreign:
            runner.get("intruder", job.id)
        with pytest.raises(JobNotFound) as unknown:
            runner.get("intruder", "no-such-id")
        with pytest.raises(JobNotFound):
            runner.cancel("intruder", job.id)
        assert foreign.value.message == unknown.value.message
        assert runner.get("owner", job.id) is job
        assert runner.list("intruder") == [] and runner.list("owner") == [job]
        finish(job)


def test_a_failure_inside_a_job_fails_only_that_job(english):
    # A spec that skipped validation: the engine itself refuses it, inside the training process.
    broken_spec = TrainSpec.model_construct(**{**spec().model_dump(), "activation": "softplus"})
    with JobRunner(Settings()) as runner:
        broken = runner.submit("a", broken_spec)
        healthy = runner.submit("a", spec(seed=14))
        finish(broken)
        finish(healthy)
    assert broken.status == "failed"
    assert broken.error.startswith("Training failed: ") and "softplus" in broken.error
    assert healthy.status == "done" and healthy.error is None


def test_a_training_process_that_dies_fails_its_job_with_a_message(english):
    with JobRunner(Settings()) as runner:
        job = started_training(runner.submit("a", long_spec()))
        os.kill(job.pid, signal.SIGKILL)
        finish(job)
        other = finish(runner.submit("a", spec()))
    assert job.status == "failed"
    assert job.error == f"Training failed: the training process was ended by signal {signal.SIGKILL}."
    with use_locale("es"):  # all of it translated, the reason too (it used to stay in English)
        assert job.error == f"El entrenamiento falló: el proceso de entrenamiento fue terminado por la señal {signal.SIGKILL}."
    assert other.status == "done"


@pytest.mark.parametrize("settings, stop, reason", [
    # Silent (and not waiting for the CPU): a working process sends records many times a second.
    (dict(job_silence_seconds=2), False,
     "Training failed: the training process stopped responding for 2 seconds, so it was ended."),
    # Asked to stop (the Stop button) and still there after the grace period.
    (dict(job_stop_grace_seconds=2), True,
     "Training failed: the training process did not stop within 2 seconds of being asked to, so it was ended."),
])
def test_a_hung_training_process_is_killed_and_frees_its_slot(english, settings, stop, reason):
    with JobRunner(Settings(max_running_jobs=1, **settings)) as runner:
        job = started_training(runner.submit("a", long_spec()))
        pid = job.pid
        os.kill(pid, signal.SIGSTOP)  # hung: alive, holding its slot, answering nothing
        stopped_at = time.monotonic()
        if stop:
            runner.cancel("a", job.id)
        finish(job)
        took = time.monotonic() - stopped_at
        other = finish(runner.submit("b", spec()))  # the only slot is free again
    assert job.status == "failed" and job.error == reason
    assert took < 6, f"the hung process held its slot for {took:.1f} s"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
    assert other.status == "done"


def test_same_spec_and_seed_give_the_same_weights_and_curve():
    with JobRunner(Settings()) as runner:
        a, b, c = (runner.submit(s, spec(epochs=2, seed=seed)) for s, seed in (("x", 5), ("y", 5), ("z", 6)))
        for job in (a, b, c):
            finish(job)
    assert np.array_equal(a.model.flat_params, b.model.flat_params)
    curve = [(r["step"], r["loss"], r["test_accuracy"]) for r in a.records]
    assert curve == [(r["step"], r["loss"], r["test_accuracy"]) for r in b.records]
    assert not np.array_equal(a.model.flat_params, c.model.flat_params)


def test_finished_jobs_are_forgotten_after_their_time():
    now = [1000.0]
    with JobRunner(Settings(job_ttl_seconds=60, job_abandon_seconds=10**6), clock=lambda: now[0]) as runner:
        job = finish(runner.submit("a", spec()))
        assert runner.get("a", job.id) is job
        now[0] += 61
        with pytest.raises(JobNotFound):
            runner.get("a", job.id)


def test_a_session_keeps_only_its_latest_finished_jobs():
    with JobRunner(Settings(max_finished_jobs_per_session=2)) as runner:
        jobs = [finish(runner.submit("a", spec(seed=i))) for i in range(3)]
        assert runner.list("a") == jobs[1:]


def test_shutdown_stops_running_and_queued_jobs():
    runner = JobRunner(Settings(max_running_jobs=1))
    running = started_training(runner.submit("a", long_spec()))
    queued = runner.submit("b", spec())
    runner.shutdown()
    assert running.status == "stopped" and queued.status == "stopped"
    with pytest.raises(JobLimitError):
        runner.submit("c", spec())


def test_predict_reads_0_to_1_and_0_to_255_alike_and_resamples():
    with JobRunner(Settings()) as runner:
        job = finish(runner.submit("a", spec()))
    rng = np.random.default_rng(0)
    grid = rng.random((8, 8))
    unit = predict(job, grid.tolist())
    grey = predict(job, (grid * 255).tolist())
    assert np.allclose(unit["probabilities"], grey["probabilities"], atol=1e-5)
    assert sum(unit["probabilities"]) == pytest.approx(1.0)
    assert [layer["shape"] for layer in unit["layers"]] == [[16, 8, 8], [16, 8, 8], [16, 4, 4], [10]]
    big = predict(job, np.kron(grid, np.ones((7, 7)))[:28, :28].tolist(), maps=False)
    assert np.array(big["input"]).shape == (8, 8) and "layers" not in big
    for bad in ([[0.5] * 8] * 7, [[float("nan")] * 8] * 8, [["a"] * 8] * 8, [[-1] * 8] * 8):
        with pytest.raises(ValueError):
            predict(job, bad)


def test_weights_round_trip_and_bad_files_are_refused(english):
    with JobRunner(Settings()) as runner:
        job = finish(runner.submit("a", spec(dataset="mnist", epochs=1, filters=2, hidden=8, batch_size=256)))
    data = export_npz(job)
    loaded = load_npz("b", data)
    assert loaded.status == "done" and loaded.session == "b" and loaded.spec == job.spec
    assert np.array_equal(loaded.model.flat_params, job.model.flat_params)
    assert predict(loaded, test_index=7)["probabilities"] == predict(job, test_index=7)["probabilities"]
    for junk in (b"", b"not a zip", data[: len(data) // 2]):
        with pytest.raises(ModelFileError, match="not a CNN Lab model file"):
            load_npz("b", junk)
    with pytest.raises(ModelFileError, match="too large"):
        load_npz("b", data, max_bytes=100)


def test_a_model_file_outside_the_limits_is_refused_before_it_is_built(english):
    import io
    import json

    big = {"input_shape": [1, 28, 28], "config": {"input_shape": [1, 28, 28], "filters": 4096, "kernel": 3,
                                                  "padding": 1, "pool": "max", "pool_size": 2, "hidden": 0,
                                                  "activation": "relu", "classes": 10, "seed": 0}, "layers": []}
    buf = io.BytesIO()
    np.savez(buf, __spec__=np.array(json.dumps(big)))
    with pytest.raises(ModelFileError, match="outside this lab's limits"):
        load_npz("b", buf.getvalue())


def test_statuses_are_the_documented_ones():
    assert ACTIVE | FINISHED == {"queued", "running", "done", "stopped", "failed"}
