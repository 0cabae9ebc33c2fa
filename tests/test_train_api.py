"""The training JSON API: start, watch (server-sent events), stop, predict, save and load, per browser."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from cnnlab.app.main import app as cnnlab_app
from cnnlab.core.train import DEFAULTS

GIVE_UP_SECONDS = 120


def wait_done(client, job_id):
    give_up = time.monotonic() + GIVE_UP_SECONDS
    while time.monotonic() < give_up:
        body = client.get(f"/api/train/{job_id}", params={"records": False}).json()
        if body["status"] not in ("queued", "running"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def start(client, **spec):
    r = client.post("/api/train", json=spec)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def events(client, job_id):
    """(event name, data) pairs of the job's event stream, read to its end."""
    out, name = [], None
    with client.stream("GET", f"/api/train/{job_id}/events", headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[len("data: "):])))
    return out


def test_the_digits_default_trains_to_95_percent(client):
    r = client.post("/api/train", json={"dataset": "digits"})
    assert r.status_code == 201
    assert r.json()["status"] in ("queued", "running") and len(r.json()["id"]) >= 16
    body = wait_done(client, r.json()["id"])
    assert body["status"] == "done" and body["error"] is None
    assert body["metrics"]["test_accuracy"] >= 0.95
    assert body["spec"]["epochs"] == DEFAULTS["digits"]["epochs"] and body["spec"]["optimizer"] == "adam"


def test_status_shows_spec_metrics_and_the_curve(client):
    job_id = start(client, dataset="digits", epochs=2, batch_size=128, optimizer="sgd", lr=0.1)
    wait_done(client, job_id)
    body = client.get(f"/api/train/{job_id}").json()
    assert {"id", "status", "spec", "metrics", "queue_position", "error", "records", "filters"} <= set(body)
    m = body["metrics"]
    assert {"loss", "train_accuracy", "test_accuracy", "test_loss", "epoch", "step", "elapsed", "images_per_second",
            "confusion", "misclassified"} <= set(m)
    assert [r["epoch"] for r in body["records"] if r["kind"] == "epoch"] == [1, 2]
    assert body["spec"]["optimizer"] == "sgd" and body["spec"]["lr"] == 0.1
    listed = client.get("/api/train").json()["jobs"]
    assert [j["id"] for j in listed] == [job_id]


def test_the_event_stream_gives_progress_then_a_final_event(client):
    job_id = start(client, dataset="digits", epochs=3)
    stream = events(client, job_id)
    names = [name for name, _ in stream]
    assert names[-1] == "done" and set(names[:-1]) == {"progress"} and len(names) >= 2
    final = stream[-1][1]
    assert final["final"] is True and final["metrics"]["test_accuracy"] >= 0.9
    records = [r for _, data in stream for r in data["records"]]
    assert [r["seq"] for r in records] == sorted({r["seq"] for r in records})  # each record sent once
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]
    assert all({"status", "epoch", "batch", "loss", "accuracy", "test_accuracy", "elapsed", "eta"} <= set(data)
               for _, data in stream)


def test_delete_stops_a_job_and_its_model_answers(client):
    job_id = start(client, dataset="mnist", epochs=30)
    r = client.delete(f"/api/train/{job_id}")
    assert r.status_code == 200 and r.json()["id"] == job_id
    body = wait_done(client, job_id)
    assert body["status"] == "stopped"
    assert body["message"] == "Detenido a petición."
    grid = [[0.0] * 28 for _ in range(28)]
    r = client.post(f"/api/train/{job_id}/predict", json={"grid": grid, "maps": False})
    assert r.status_code == 200, r.text
    assert sum(r.json()["probabilities"]) == pytest.approx(1.0)


def test_predict_gives_probabilities_and_feature_maps(client):
    job_id = start(client, dataset="digits")
    wait_done(client, job_id)
    grid = [[0] * 8 for _ in range(8)]
    for row in range(1, 7):
        grid[row][4] = 255  # a vertical stroke in 0..255 grey levels
    r = client.post(f"/api/train/{job_id}/predict", json={"grid": grid})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["probabilities"]) == 10 and sum(body["probabilities"]) == pytest.approx(1.0)
    assert body["label"] == max(range(10), key=body["probabilities"].__getitem__)
    assert [layer["shape"] for layer in body["layers"]] == [[16, 8, 8], [16, 8, 8], [16, 4, 4], [10]]
    sample = client.post(f"/api/train/{job_id}/predict", json={"test_index": 0, "maps": False}).json()
    assert sample["true_label"] in range(10) and len(sample["input"]) == 8


@pytest.mark.parametrize("body", [{"grid": [[0] * 7] * 8}, {"grid": [[0] * 9] * 9}, {"grid": "text"},
                                  {"grid": [["a"] * 8] * 8}, {"grid": [[300] * 8] * 8}, {}, {"test_index": 10**6}])
def test_bad_grids_are_refused(client, body):
    job_id = start(client, dataset="digits", epochs=1)
    wait_done(client, job_id)
    r = client.post(f"/api/train/{job_id}/predict?lang=en", json=body)
    assert r.status_code == 422 and r.json()["detail"]


def test_a_nan_grid_is_refused(client):
    job_id = start(client, dataset="digits", epochs=1)
    wait_done(client, job_id)
    content = '{"grid": [' + ",".join(["[NaN, 0, 0, 0, 0, 0, 0, 0]"] * 8) + "]}"
    r = client.post(f"/api/train/{job_id}/predict", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_weights_download_and_load_give_the_same_predictions(client):
    job_id = start(client, dataset="digits", epochs=2)
    wait_done(client, job_id)
    w = client.get(f"/api/train/{job_id}/weights.npz")
    assert w.status_code == 200 and w.headers["content-type"] == "application/octet-stream"
    assert w.headers["content-disposition"].startswith("attachment;")
    r = client.post("/api/train/load", files={"file": ("model.npz", w.content, "application/octet-stream")})
    assert r.status_code == 201, r.text
    loaded = r.json()["id"]
    assert loaded != job_id and client.get(f"/api/train/{loaded}").json()["status"] == "done"
    grid = {"grid": [[(r * 8 + c) % 17 / 16 for c in range(8)] for r in range(8)], "maps": False}
    a = client.post(f"/api/train/{job_id}/predict", json=grid).json()
    b = client.post(f"/api/train/{loaded}/predict", json=grid).json()
    assert a["probabilities"] == b["probabilities"]


def test_a_bad_model_file_is_refused_with_a_message(client):
    r = client.post("/api/train/load?lang=en", files={"file": ("model.npz", b"PK\x03\x04 nothing", "application/octet-stream")})
    assert r.status_code == 422
    assert "not a CNN Lab model file" in r.json()["detail"]


@pytest.mark.parametrize(("spec", "field"), [
    ({"filters": 99}, "filters"), ({"lr": 0}, "lr"), ({"lr": -1}, "lr"), ({"epochs": 0}, "epochs"),
    ({"dataset": "cifar"}, "dataset"), ({"batch_size": "10"}, "batch_size"),
])
def test_bad_specs_get_422_with_a_message(client, spec, field):
    r = client.post("/api/train?lang=en", json=spec)
    assert r.status_code == 422
    assert r.json()["detail"].startswith(f"{field}: ")


def test_a_kernel_too_large_for_8x8_explains_the_formula(client):
    r = client.post("/api/train?lang=en", json={"dataset": "digits", "kernel": 7, "padding": 0, "pool_size": 4})
    assert r.status_code == 422
    assert "does not fit" in r.json()["detail"] and "⌋ + 1 = 0" in r.json()["detail"]


def test_messages_in_spanish_and_english(client):
    es = client.post("/api/train", json={"filters": 99}).json()["detail"]
    en = client.post("/api/train?lang=en", json={"filters": 99}).json()["detail"]
    assert es == "filters: Debe ser como máximo 16." and en == "filters: Must be at most 16."
    fit_es = client.post("/api/train?lang=es", json={"kernel": 7, "padding": 0, "pool_size": 4}).json()["detail"]
    assert fit_es.startswith("La ventana de pooling de 4×4 no cabe")
    missing = client.get("/api/train/nope?lang=en").json()["detail"]
    assert missing == "There is no training job with this id in this browser (it may have expired)."
    assert client.get("/api/train/nope?lang=es").json()["detail"].startswith("No hay ningún entrenamiento")


def test_another_browser_gets_404_for_the_job(client):
    job_id = start(client, dataset="digits", epochs=1)
    assert "cnnlab_session" in client.cookies
    other = TestClient(cnnlab_app)  # its own cookie jar: another browser (the app is already started)
    for method, path in (("get", ""), ("get", "/events"), ("delete", ""), ("get", "/weights.npz")):
        r = getattr(other, method)(f"/api/train/{job_id}{path}")
        assert r.status_code == 404, (method, path)
    assert other.post(f"/api/train/{job_id}/predict", json={"test_index": 0}).status_code == 404
    assert client.get(f"/api/train/{job_id}").status_code == 200


def test_a_tampered_session_cookie_is_a_new_session(client):
    job_id = start(client, dataset="digits", epochs=1)
    value = client.cookies["cnnlab_session"]
    client.cookies.set("cnnlab_session", value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    r = client.get(f"/api/train/{job_id}")
    assert r.status_code == 404
    assert "cnnlab_session=" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]


def test_too_many_jobs_get_429(client):
    ids = [start(client, dataset="mnist", epochs=30, seed=i) for i in range(3)]
    r = client.post("/api/train?lang=en", json={"dataset": "digits"})
    assert r.status_code == 429 and "already have 3" in r.json()["detail"]
    for job_id in ids:
        client.delete(f"/api/train/{job_id}")


def test_the_api_is_in_the_openapi_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/train", "/api/train/{job_id}", "/api/train/{job_id}/events", "/api/train/{job_id}/predict",
                 "/api/train/{job_id}/weights.npz", "/api/train/load"):
        assert path in paths
    assert paths["/api/train"]["post"]["tags"] == ["train"]
