"""Datasets of one's own: the .npz format (core/datasets.py), the store (app/datasets.py),
training one through the API and showing it on /train with its label names."""

from __future__ import annotations

import io
import json
import time
import zipfile

import numpy as np
import pytest
from cnnlab.app import datasets as app_datasets
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import use_locale
from cnnlab.app.jobs import TrainSpec, build_model, input_shape
from cnnlab.app.jobs.spec import worker_job
from cnnlab.app.settings import Settings
from cnnlab.core import datasets

NAMES = ["círculo", "cruz", "línea"]
GIVE_UP_SECONDS = 60


def shapes(n_per: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Circles, crosses and lines drawn with NumPy, ``n_per`` of each, of random sizes and
    stroke widths, moved up to 3 pixels: images uint8 (3·n_per, 28, 28), labels, names."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
    images, labels = [], []
    for k in range(3):
        for _ in range(n_per):
            cy, cx = 14 + rng.uniform(-3, 3, 2)
            r, w = rng.uniform(6, 10), rng.uniform(1.2, 2.2)
            dy, dx = yy - cy, xx - cx
            if k == 0:
                d = np.abs(np.hypot(dy, dx) - r)
            elif k == 1:
                d = np.minimum(np.abs(dy - dx), np.abs(dy + dx)) / np.sqrt(2)
                d = np.where(np.maximum(np.abs(dy), np.abs(dx)) <= r, d, 99)
            else:
                a = rng.uniform(0, np.pi)
                d = np.abs(dy * np.cos(a) - dx * np.sin(a))
                d = np.where(np.abs(dy * np.sin(a) + dx * np.cos(a)) <= r, d, 99)
            images.append(np.clip(255 * (1.5 - d / w), 0, 255).astype(np.uint8))
            labels.append(k)
    return np.array(images), np.array(labels, dtype=np.int64), list(NAMES)


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(upload_dir=tmp_path / "uploads")


# --------------------------------------------------------------------------- core


def test_a_file_round_trips_and_splits_every_label():
    images, labels, names = shapes(10)
    buf = io.BytesIO()
    datasets.save_file(buf, images, labels, names)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        assert sorted(zf.namelist()) == ["images.npy", "label_names.npy", "labels.npy"]
    loaded = datasets.load_file(buf.getvalue(), name="shapes")
    direct = datasets.from_arrays("shapes", images, labels, names)
    assert loaded.label_names == tuple(NAMES) and loaded.classes == 3 and loaded.image_shape == (1, 28, 28)
    assert len(loaded.y_train) + len(loaded.y_test) == 30
    for a, b in [(loaded.x_train, direct.x_train), (loaded.y_test, direct.y_test)]:
        assert np.array_equal(a, b) and not a.flags.writeable
    assert loaded.x_train.dtype == np.float32 and 0 <= loaded.x_train.min() and loaded.x_train.max() <= 1
    assert sorted(np.bincount(loaded.y_test).tolist()) == [2, 2, 2]  # stratified: 20 % of each label
    # The pixels come back exactly; the shipped datasets keep their digits.
    back = np.rint(np.concatenate([loaded.x_train, loaded.x_test])[:, 0] * 255).astype(np.uint8)
    assert sorted(map(bytes, back)) == sorted(map(bytes, images))
    assert datasets.load("digits").label_names == tuple("0123456789")


def _bad(**change):
    images, labels, names = shapes(3)
    arrays = {"images": images, "labels": labels, "label_names": names}
    arrays.update(change)
    return arrays


NAN_IMAGES = np.full((9, 28, 28), np.nan)


@pytest.mark.parametrize("arrays, reason", [
    (_bad(images=np.zeros((9, 28, 28), dtype=np.float32)), "images"),          # floats
    (_bad(images=NAN_IMAGES), "images"),                                        # NaN
    (_bad(images=np.zeros((9, 28, 27), dtype=np.uint8)), "images"),            # wrong shape
    (_bad(images=np.zeros((9, 784), dtype=np.uint8)), "images"),
    (_bad(labels=np.zeros(8, dtype=np.int64)), "labels"),                       # one label short
    (_bad(labels=np.array([0, 1, 2] * 3, dtype=np.float64)), "labels"),        # float labels
    (_bad(labels=np.array([0, 1, 3] * 3)), "labels"),                          # out of range
    (_bad(label_names=["a"], labels=np.zeros(9, dtype=np.int64)), "names"),    # K = 1
    (_bad(label_names=[str(i) for i in range(11)]), "names"),                  # K = 11
    (_bad(label_names=["a", "b", "x" * 25]), "names"),                          # a name too long
    (_bad(label_names=["a", "b", " "]), "names"),                               # an empty name
    (_bad(label_names=["a", "b", "A"]), "names"),                               # the same name twice
    (_bad(labels=np.array([0, 0, 0, 1, 1, 1, 1, 1, 2])), "per_label"),          # a label with 1 image
    (_bad(images=np.zeros((5001, 28, 28), dtype=np.uint8), labels=np.arange(5001) % 3), "count"),
])
def test_what_is_not_a_dataset_is_refused(arrays, reason):
    with pytest.raises(datasets.DatasetFileError) as caught:
        datasets.from_arrays("x", arrays["images"], arrays["labels"], arrays["label_names"])
    assert caught.value.reason == reason
    with pytest.raises(ValueError):
        datasets.save_file(io.BytesIO(), arrays["images"], arrays["labels"], arrays["label_names"])


def test_a_file_is_never_trusted():
    images, labels, names = shapes(3)
    good = {"images": images, "labels": labels, "label_names": np.array(names)}
    cases = {
        "format": [b"not a zip", npz_bytes(**{**good, "label_names": np.array(names, dtype=object)})],  # pickled
        "missing": [npz_bytes(images=images, labels=labels)],
        "images": [npz_bytes(**{**good, "images": images.astype(np.int16)})],
    }
    # A member whose header claims more than the member holds (nothing is allocated for it).
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 28, 28)})
    cases["format"].append(_replace_member(npz_bytes(**good), "images.npy", header.getvalue() + b"\0" * 64))
    # A zip bomb: expands past what the largest dataset needs.
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images.npy", b"\0" * (datasets.MAX_FILE_EXPANDED + 1))
    cases["too_big"] = [bomb.getvalue()]
    for reason, files in cases.items():
        for data in files:
            with pytest.raises(datasets.DatasetFileError) as caught:
                datasets.load_file(data)
            assert caught.value.reason == reason, (reason, caught.value)


def _replace_member(data: bytes, member: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, content if info.filename == member else src.read(info))
    return out.getvalue()


# --------------------------------------------------------------------------- the store


def test_the_store_is_content_addressed(settings):
    images, labels, names = shapes(5)
    first = app_datasets.store_arrays(settings, images, labels, names)
    assert app_datasets.DATASET_ID.fullmatch(first)
    path = settings.upload_dir / "datasets" / f"{first}.npz"
    assert path.is_file() and app_datasets.dataset_path(settings, first) == path
    # The same arrays, as a compressed or a plain file, with int32 labels: the same id, one file.
    plain = npz_bytes(images=images, labels=labels.astype(np.int32), label_names=np.array(names))
    assert app_datasets.store_dataset(settings, plain) == first
    assert [p.name for p in (settings.upload_dir / "datasets").iterdir()] == [path.name]
    other = app_datasets.store_arrays(settings, images[::-1].copy(), labels[::-1].copy(), names)
    assert other != first
    assert app_datasets.dataset_summary(settings, first) == {"id": first, "labels": NAMES, "images": 15,
                                                             "counts": [5, 5, 5]}
    assert app_datasets.load_dataset(settings, first).label_names == tuple(NAMES)
    assert app_datasets.load_dataset(settings, "mnist").classes == 10
    for missing in ("set-0000000000000000", "../../etc/passwd", "cifar"):
        with pytest.raises(InputError) as caught:
            app_datasets.load_dataset(settings, missing)
        assert caught.value.status_code == 404


def test_the_store_refuses_in_the_readers_language(settings):
    images, labels, names = shapes(3)
    one_circle = labels.copy()
    one_circle[:2] = 1
    with use_locale("es"), pytest.raises(InputError) as caught:
        app_datasets.store_arrays(settings, images, one_circle, names)
    assert caught.value.status_code == 422
    assert caught.value.message == "La etiqueta «círculo» tiene 1 imágenes: cada etiqueta necesita al menos 2."
    with use_locale("en"), pytest.raises(InputError) as caught:
        app_datasets.store_dataset(settings, b"PK\x03\x04 nothing")
    assert caught.value.message.startswith("This is not a dataset file")
    with pytest.raises(InputError) as caught:
        app_datasets.store_dataset(settings, b"\0" * (app_datasets.MAX_DATASET_BYTES + 1))
    assert caught.value.status_code == 413
    assert not (settings.upload_dir / "datasets").exists() or not list((settings.upload_dir / "datasets").iterdir())


def test_a_spec_for_a_dataset_of_ones_own(settings):
    dataset_id = app_datasets.store_arrays(settings, *shapes(4))
    spec = TrainSpec.model_validate({"dataset": dataset_id, "classes": 7}, context={"settings": settings})
    assert spec.classes == 3 and input_shape(dataset_id) == (1, 28, 28)
    assert (spec.filters, spec.kernel, spec.hidden) == (8, 5, 64)  # the MNIST network
    assert build_model(spec).layers[-1].params["w"].shape[-1] == 3
    job = worker_job(spec, settings)
    assert job["dataset_file"] == str(app_datasets.dataset_path(settings, dataset_id)) and job["augment"]
    assert "dataset_file" not in worker_job(TrainSpec(dataset="digits"))
    assert TrainSpec.model_validate({"dataset": "digits", "classes": 3}).classes == 10
    with use_locale("en"), pytest.raises(ValueError, match="not on the server"):
        TrainSpec.model_validate({"dataset": "set-00000000000000ff"}, context={"settings": settings})
    with pytest.raises(ValueError):
        TrainSpec.model_validate({"dataset": "set-XYZ"})


# --------------------------------------------------------------------------- HTTP


def _upload(client, data: bytes, url: str = "/api/datasets", **kwargs):
    return client.post(url, files={"file": ("shapes.npz", data, "application/octet-stream")}, **kwargs)


def _shapes_file(n_per: int = 40, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    datasets.save_file(buf, *shapes(n_per, seed))
    return buf.getvalue()


def test_a_class_dataset_trains_through_the_api_and_shows_its_labels(client, html):
    bad = _upload(client, npz_bytes(images=np.zeros((4, 28, 28)), labels=np.arange(4) % 2,
                                    label_names=np.array(["a", "b"])), url="/api/datasets?lang=en")  # English from now on
    assert bad.status_code == 422 and "28×28 grey levels" in bad.json()["detail"]
    assert client.get("/api/datasets/set-0123456789abcdef").status_code == 404

    r = _upload(client, _shapes_file())
    assert r.status_code == 201, r.text
    summary = r.json()
    assert summary["labels"] == NAMES and summary["images"] == 120 and summary["counts"] == [40, 40, 40]
    assert client.get(f"/api/datasets/{summary['id']}").json() == summary

    started = time.monotonic()
    r = client.post("/api/train", json={"dataset": summary["id"], "epochs": 8})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    give_up = time.monotonic() + GIVE_UP_SECONDS
    while (body := client.get(f"/api/train/{job_id}", params={"records": False}).json())["status"] in ("queued", "running"):
        assert time.monotonic() < give_up
        time.sleep(0.05)
    assert body["status"] == "done", body
    assert body["spec"]["classes"] == 3 and body["spec"]["dataset"] == summary["id"]
    m = body["metrics"]
    assert m["test_accuracy"] >= 0.8, m  # chance is 1/3
    assert np.array(m["confusion"]).shape == (3, 3) and m["n_test"] == 24
    assert time.monotonic() - started < 20

    # A new drawing of a circle (another seed) is read as one.
    circle = shapes(1, seed=7)[0][0] / 255.0
    answer = client.post(f"/api/train/{job_id}/predict", json={"grid": circle.tolist(), "maps": False}).json()
    assert len(answer["probabilities"]) == 3 and answer["label"] == 0

    # The page names the dataset and puts the label names in the confusion matrix.
    page = html(client.get(f"/train/jobs/{job_id}"))
    heads = [th.get_text(strip=True) for th in page.select("#train-confusion thead th")][1:]
    rows = [th.get_text(strip=True) for th in page.select("#train-confusion tbody th")]
    assert heads == rows == NAMES
    assert "Your dataset: 3 labels (círculo, cruz, línea), 120 images" in page.select_one(".train-run__label").get_text()
    assert page.select_one("#train-pad")["data-grid"] == "28"
    shown = html(client.post(f"/train/jobs/{job_id}/predict", data={"test_index": "0"}))
    assert [th.get_text(strip=True) for th in shown.select("#train-bars th")] == NAMES
    assert shown.select_one("#train-predicted").get_text(strip=True) in NAMES


def test_the_load_dataset_form_opens_it_on_train_or_says_why_not(client, html):
    r = _upload(client, _shapes_file(5), url="/train/dataset", follow_redirects=False)
    assert r.status_code == 303
    dataset_id = r.headers["location"].split("dataset=")[1]
    assert app_datasets.DATASET_ID.fullmatch(dataset_id)
    page = html(client.get(r.headers["location"]))  # Spanish: the default
    assert "Tu conjunto de datos: 3 etiquetas (círculo, cruz, línea), 15 imágenes" in page.select_one("#train-brief").get_text()
    assert page.select_one("#train-dataset option[selected]")["value"] == dataset_id
    assert page.select_one("input[name=dataset]")["value"] == dataset_id

    # A file of one label: refused, the page says why in its language.
    one = npz_bytes(images=np.zeros((4, 28, 28), dtype=np.uint8), labels=np.zeros(4, dtype=np.int64),
                    label_names=np.array(["sol"]))
    r = _upload(client, one, url="/train/dataset", follow_redirects=False)
    assert r.status_code == 422
    problem = html(r).select_one("#train-dataset-problem").get_text(strip=True)
    assert problem == ("Un conjunto de datos tiene de 2 a 10 etiquetas, cada una con un nombre de 1 a 24 caracteres, "
                       "todos distintos.")
    gone = html(client.get("/train?dataset=set-00000000000000aa"))
    assert "no está (ya) en el servidor" in gone.get_text()
    assert json.loads(json.dumps(app_datasets.dataset_summary(Settings(), dataset_id)))["images"] == 15


def test_a_training_worker_trains_it_from_the_shared_upload_folder(redis_url, tmp_path):
    """Shared mode: the web process stores the dataset in the upload folder it shares with
    the workers; a real ``cnnlab worker`` (another process) finds it there by its id."""
    from cnnlab.app.jobs import FINISHED
    from cnnlab.app.jobs.shared import RedisJobQueue

    from tests.serverproc import WorkerProcess

    settings = Settings(redis_url=redis_url, upload_dir=tmp_path / "uploads")
    dataset_id = app_datasets.store_arrays(settings, *shapes(20))
    worker = WorkerProcess(tmp_path, CNNLAB_REDIS_URL=redis_url).start(wait=False)  # its upload folder: tmp_path/uploads
    queue = RedisJobQueue(settings)
    try:
        spec = TrainSpec.model_validate({"dataset": dataset_id, "epochs": 8}, context={"settings": settings})
        job_id = queue.submit("s1", spec, "10.0.0.1").id
        give_up = time.monotonic() + GIVE_UP_SECONDS
        while (job := queue.get("s1", job_id)).status not in FINISHED:
            assert time.monotonic() < give_up, worker.log()
            time.sleep(0.05)
        assert job.status == "done", (job.message, worker.log())
        assert np.array(job.metrics["confusion"]).shape == (3, 3) and job.metrics["test_accuracy"] >= 0.8
        assert job.model.layers[-1].params["w"].shape[-1] == 3
    finally:
        queue.shutdown()
        worker.kill()


# --------------------------------------------------------------------------- a model of one's own dataset


def _model_file(spec: TrainSpec, **trainspec) -> bytes:
    """A model file (use.export_npz) of an untrained model of ``spec``; ``trainspec`` changes
    the TrainSpec written in it."""
    from cnnlab.app.jobs import Job, export_npz
    from cnnlab.app.jobs.use import TRAINSPEC_KEY

    job = Job("a", spec)
    job.model, job.status = build_model(spec), "done"
    data = export_npz(job)
    if not trainspec:
        return data
    with np.load(io.BytesIO(data)) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays[TRAINSPEC_KEY] = np.array(json.dumps({**json.loads(str(arrays[TRAINSPEC_KEY])), **trainspec}))
    return npz_bytes(**arrays)


def test_a_model_of_a_dataset_of_ones_own_loads_back_where_the_dataset_is(settings, tmp_path):
    from cnnlab.app.jobs import ModelFileError, load_npz

    dataset_id = app_datasets.store_arrays(settings, *shapes(4))
    spec = TrainSpec.model_validate({"dataset": dataset_id}, context={"settings": settings})
    data = _model_file(spec)
    loaded = load_npz("b", data, settings=settings)
    assert loaded.status == "done" and loaded.spec == spec and loaded.spec.classes == 3
    assert np.array(loaded.metrics["confusion"]).shape == (3, 3)
    # Not on this server: refused, saying why in the reader's language.
    elsewhere = Settings(upload_dir=tmp_path / "elsewhere")
    with use_locale("en"), pytest.raises(ModelFileError, match="trained on a dataset that is not on this server"):
        load_npz("b", data, settings=elsewhere)
    with use_locale("es"), pytest.raises(ModelFileError, match="no está en este servidor"):
        load_npz("b", data, settings=elsewhere)
    # A file naming another dataset (2 labels) than its network's 3 outputs is not a model of it.
    two = app_datasets.store_arrays(settings, *(a[:8] if i < 2 else a[:2] for i, a in enumerate(shapes(4))))
    with use_locale("en"), pytest.raises(ModelFileError, match="2 labels"):
        load_npz("b", _model_file(spec, dataset=two), settings=settings)


def test_a_model_of_a_dataset_of_ones_own_loads_through_the_api(client):
    dataset_id = _upload(client, _shapes_file(5)).json()["id"]
    spec = TrainSpec.model_validate({"dataset": dataset_id})
    data = _model_file(spec)
    r = client.post("/api/train/load", files={"file": ("model.npz", data, "application/octet-stream")})
    assert r.status_code == 201, r.text
    assert client.get(f"/api/train/{r.json()['id']}").json()["spec"]["classes"] == 3
    r = client.post("/api/train/load?lang=en", files={"file": ("m.npz", _model_file(spec, dataset="set-00000000000000ab"),
                                                                "application/octet-stream")})
    assert r.status_code == 422 and "not on this server" in r.json()["detail"]
