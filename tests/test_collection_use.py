"""app/classroom/collection_use.py: the class's collection as downloads (.npz, zip of PNGs,
thumbnails), and end to end: a memory-store collection trains, and its model is tested."""

from __future__ import annotations

import csv
import io
import time
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from cnnlab.app.classroom import collection_use as use
from cnnlab.app.errors import InputError
from cnnlab.core import datasets as core_datasets

LABELS = ["círculo", "cruz", "a/b: ..", "CON", "A/B"]


# ------------------------------------------------------------------ drawings


def shape(kind: int, rng: np.random.Generator) -> bytes:
    """A 28×28 drawing (0 = paper, 255 = ink) of shape ``kind`` (0 ring, 1 cross, 2 bar),
    of a random size, shifted at random."""
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
    cy, cx = 14 + rng.integers(-3, 4), 14 + rng.integers(-3, 4)
    r = rng.uniform(6, 9)
    if kind == 0:
        ink = np.abs(np.hypot(yy - cy, xx - cx) - r) < 1.5
    elif kind == 1:
        ink = ((np.abs((yy - cy) - (xx - cx)) < 1.5) | (np.abs((yy - cy) + (xx - cx)) < 1.5)) \
              & (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
    else:
        ink = (np.abs(yy - cy) < 2) & (np.abs(xx - cx) < r)
    return (ink * 255).astype(np.uint8).tobytes()


def fake_store(labels, drawings):
    """A read-only stand-in for a CollectionStore: get and drawings."""
    counts = [sum(1 for d in drawings if d.label == k) for k in range(len(labels))]
    c = SimpleNamespace(code="ABCDEF", labels=list(labels), counts=counts, phase="collect", job_id=None)
    return SimpleNamespace(get=lambda code: c if code == "ABCDEF" else None,
                           drawings=lambda code, after_id=0: [d for d in drawings if d.id > after_id])


def drawing(i, label, grid):
    return SimpleNamespace(id=i, label=label, student=f"session-secret-{i}", seat=100 + i, grid=grid, at=1e9 + i)


@pytest.fixture
def collection():
    rng = np.random.default_rng(0)
    drawings = [drawing(i + 1, i % 3, shape(i % 3, rng)) for i in range(12)]
    drawings.append(drawing(13, 3, shape(0, rng)))  # "CON": one drawing only
    return fake_store(LABELS, drawings), drawings


# ------------------------------------------------------------------ downloads


def test_thumbnail_is_small_grey_and_ink_dark():
    grid = np.zeros((28, 28), np.uint8)
    grid[5:9, 10:20] = 255
    img = Image.open(io.BytesIO(use.thumbnail_png(grid.tobytes())))
    assert img.size == (56, 56) and img.mode == "L"
    a = np.asarray(img)
    assert a[0, 0] == 255 and a[10, 20] == 0 and a[17, 39] == 0 and a[18, 40] == 255
    assert Image.open(io.BytesIO(use.thumbnail_png(grid.tobytes(), scale=1))).size == (28, 28)
    with pytest.raises(ValueError):
        use.thumbnail_png(b"\x00" * 783)


def test_dataset_arrays(collection):
    store, drawings = collection
    images, labels, names = use.dataset_from_collection(store, "ABCDEF")
    assert images.dtype == np.uint8 and images.shape == (13, 28, 28)
    assert labels.tolist() == [d.label for d in drawings] and names == LABELS
    assert images[4].tobytes() == drawings[4].grid
    with pytest.raises(InputError) as e:
        use.dataset_from_collection(store, "ZZZZZZ")
    assert e.value.status_code == 404


def test_zip_has_a_folder_per_label_and_no_identity(collection):
    store, drawings = collection
    data = use.dataset_zip(store, "ABCDEF")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        folders = use.folder_names(LABELS)
        assert folders == ["círculo", "cruz", "a_b", "CON_", "A_B-2"]
        assert {n for n in names if n.endswith("/")} == {f + "/" for f in folders}
        rows = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode("utf-8"))))
        assert len(rows) == len(drawings) == sum(n.endswith(".png") for n in names)
        by_id = {d.id: d for d in drawings}
        for row in rows:
            folder, file = row["file"].split("/")
            d = by_id[int(file.removesuffix(".png"))]
            assert folder == folders[d.label] and row["label"] == LABELS[d.label] and int(row["index"]) == d.label
            img = Image.open(io.BytesIO(zf.read(row["file"])))
            assert img.size == (28, 28) and img.mode == "L"
            assert (255 - np.asarray(img)).tobytes() == d.grid  # ink dark on white, same grid
        everything = b"".join(zf.read(n) for n in names) + "".join(names).encode()
        for d in drawings:
            assert d.student.encode() not in everything and str(d.seat).encode() not in everything
        assert all(info.date_time == use.ZIP_DATE for info in zf.infolist())
    assert use.dataset_zip(store, "ABCDEF") == data  # the same drawings, the same bytes


def test_npz_round_trip(collection):
    store, drawings = collection
    data = use.dataset_npz(store, "ABCDEF")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        images, labels, names = npz["images"], npz["labels"], npz["label_names"]
    # "CON" has one drawing (the format needs 2 of a label), "A/B" none: both are left out.
    assert names.tolist() == LABELS[:3]
    kept = [d for d in drawings if d.label < 3]
    assert images.dtype == np.uint8 and images.shape == (len(kept), 28, 28)
    assert labels.tolist() == [d.label for d in kept]
    assert [im.tobytes() for im in images] == [d.grid for d in kept]
    ds = core_datasets.load_file(io.BytesIO(data), name="class")
    assert tuple(ds.label_names) == tuple(LABELS[:3])
    assert len(ds.y_train) + len(ds.y_test) == len(kept) and ds.image_shape == (1, 28, 28)


def test_npz_needs_two_labels():
    rng = np.random.default_rng(1)
    store = fake_store(["a", "b"], [drawing(1, 0, shape(0, rng)), drawing(2, 0, shape(0, rng)),
                                    drawing(3, 1, shape(1, rng))])
    with pytest.raises(InputError) as e:
        use.dataset_npz(store, "ABCDEF")
    assert e.value.status_code == 409


# ------------------------------------------------------------------ end to end (memory store, local job queue)


def _request(app, session: str):
    """A request of ``session``'s browser to ``app`` (what a route would be handed)."""
    from starlette.requests import Request

    return Request({"type": "http", "app": app, "method": "POST", "path": "/", "headers": [],
                    "client": ("127.0.0.1", 50000), "query_string": b"", "state": {"session_id": session}})


def test_train_then_test_end_to_end():
    from fastapi.testclient import TestClient

    from cnnlab.app.classroom.collection_store import collection_store_for
    from cnnlab.app.classroom.store import store_for
    from cnnlab.app.datasets import load_dataset
    from cnnlab.app.main import app
    from cnnlab.app.settings import settings_for

    with TestClient(app):
        room = store_for(app).create("0" * 64, time.time(), 100)
        code = room.code
        host = _request(app, "host-session")
        store = collection_store_for(app)
        store.open(code, ["ring", "cross", "bar"], 12, None, time.time())
        rng = np.random.default_rng(7)
        for i in range(35):
            kind = i % 3
            store.add(code, f"student-{i % 6}", 1 + i % 6, kind, shape(kind, rng), time.time(),
                      max_per_student=60, max_total=2000)
        assert store.undo(code, "student-4") == 35  # a cross
        for d in [d for d in store.drawings(code) if d.label == 2][4:]:
            assert store.remove(code, d.id)
        assert store.get(code).counts == [12, 11, 4]  # too few bars to train
        with pytest.raises(InputError) as e:
            use.start_training(host, code)
        assert e.value.status_code == 409 and "bar (4)" in e.value.message and "ring" not in e.value.message
        for _i in range(8):
            store.add(code, "student-9", 9, 2, shape(2, rng), time.time(), max_per_student=60, max_total=2000)
        with pytest.raises(InputError) as e:
            use.test_drawing(_request(app, "student-0"), code, "student-0", 1, 0, shape(0, rng))
        assert e.value.status_code == 409
        started = time.monotonic()
        job_id = use.start_training(host, code)
        c = store.get(code)
        assert c.phase == "train" and c.job_id == job_id
        job = app.state.jobs.get("host-session", job_id)  # the assistant's own job: /train's live view shows it
        with pytest.raises(InputError) as e:
            use.start_training(host, code)
        assert e.value.status_code == 409
        while store.get(code).phase == "train" and time.monotonic() - started < 60:
            time.sleep(0.05)
        assert job.status == "done", job.snapshot()
        assert store.get(code).phase == "test"  # moved on by the watcher
        right = 0
        for i in range(12):
            kind = i % 3
            answer = use.test_drawing(_request(app, "student-1"), code, "student-1", 2, kind, shape(kind, rng))
            assert len(answer["probabilities"]) == 3 and abs(sum(answer["probabilities"]) - 1) < 1e-4
            assert answer["right"] == (answer["predicted"] == kind) and answer["labels"] == ["ring", "cross", "bar"]
            right += answer["right"]
        assert right >= 9, right
        c = store.get(code)
        assert (c.right, c.fooled) == (right, 12 - right)
        with pytest.raises(InputError) as e:
            use.test_drawing(_request(app, "student-1"), code, "student-1", 2, 3, shape(0, rng))
        assert e.value.status_code == 422
        # The misclassified held-out drawings are named by drawing id (found by content), no seat.
        by_id = {d.id: d for d in store.drawings(code)}
        for m in use.misclassified(host, code):
            assert by_id[m["id"]].label == m["label"] != m["predicted"] and set(m) == {"id", "label", "predicted"}
        held_out = load_dataset(settings_for(app), job.spec.dataset)
        k = int(held_out.y_test[1])
        with job.cond:
            job.metrics["misclassified"] = [{"index": 1, "label": k, "predicted": (k + 1) % 3}]
        [m] = use.misclassified(host, code)
        assert m == {"id": m["id"], "label": k, "predicted": (k + 1) % 3}
        assert by_id[m["id"]].grid == np.rint(held_out.x_test[1, 0] * 255).astype(np.uint8).tobytes()
        # Without the watcher (a restarted server, another process), reading moves the phase on.
        store.set_phase(code, "train")
        assert use.refresh_phase(host, code).phase == "test"
        store.set_phase(code, "train", "a-job-long-gone")
        assert use.refresh_phase(host, code).phase == "collect"  # the assistant can train again
        store.delete(code)


def test_the_local_queue_names_a_jobs_owner_until_it_is_forgotten():
    from cnnlab.app.jobs import Job, JobRunner, TrainSpec
    from cnnlab.app.settings import Settings

    now = [1000.0]
    with JobRunner(Settings(job_ttl_seconds=60), clock=lambda: now[0]) as queue:
        job = Job("host-session", TrainSpec.model_validate({"dataset": "digits"}), clock=queue._clock)
        job.status, job.finished_mono = "done", now[0]
        queue.add_finished(job)
        app = SimpleNamespace(state=SimpleNamespace(jobs=queue))
        assert queue.owner(job.id) == "host-session" and queue.owner("no-such-job") is None
        assert use._job_of(app, job.id) is job
        now[0] += 61  # past job_ttl_seconds: forgotten, like get()
        assert queue.owner(job.id) is None and use._job_of(app, job.id) is None


def test_students_reach_the_assistants_job_in_valkey(redis_url):
    from cnnlab.app.jobs import TrainSpec
    from cnnlab.app.jobs.shared import RedisJobQueue
    from cnnlab.app.settings import Settings

    queue = RedisJobQueue(Settings(redis_url=redis_url))
    try:
        job = queue.submit("host-session", TrainSpec.model_validate({"dataset": "digits"}))
        app = SimpleNamespace(state=SimpleNamespace(jobs=queue))
        assert queue.owner(job.id) == "host-session" and queue.owner("no-such-job") is None
        other = RedisJobQueue(Settings(redis_url=redis_url))  # another web process
        try:
            assert other.owner(job.id) == "host-session"
        finally:
            other.shutdown()
        assert use._job_of(app, job.id).id == job.id
        assert use._job_of(app, "no-such-job") is None and use._job_of(app, None) is None
        queue.cancel("host-session", job.id)
    finally:
        queue.shutdown()
