"""/train's layer view over HTTP: the JSON twin (/api/train/{id}/layers), the page's fragment
(/train/jobs/{id}/inside), the prediction panel's buttons and /pipeline's receptive-field frame,
on digits jobs trained through /api/train (one block, and two blocks). Values are compared
with model.activations of the job's own weights (downloaded as .npz), boxes and steps with
core.receptive."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pagecheck import soup

from cnnlab.app.jobs import JobRunner, _grid_array
from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.routers.pipeline import FIELD_MODEL
from cnnlab.app.settings import settings_for
from cnnlab.core import datasets
from cnnlab.core.losses import softmax
from cnnlab.core.model import Sequential
from cnnlab.core.receptive import cell_box, field_steps, layer_fields

HX = {"HX-Request": "true"}
TEST_INDEX = 7


@pytest.fixture(scope="module")
def lab():
    """A client with two finished digits jobs: the default model and a two-block one."""
    with TestClient(cnnlab_app) as client:
        ids = {"one": client.post("/api/train", json={"dataset": "digits", "epochs": 1}).json()["id"],
               "two": client.post("/api/train", json={"dataset": "digits", "epochs": 1, "blocks": 2, "filters2": 4,
                                                      "kernel2": 3, "padding2": 0, "pool_size2": 1}).json()["id"]}
        give_up = time.monotonic() + 60
        models = {}
        for name, job in ids.items():
            while client.get(f"/api/train/{job}").json()["status"] != "done":
                assert time.monotonic() < give_up, client.get(f"/api/train/{job}").json()
                time.sleep(0.05)
            models[name] = Sequential.load(io.BytesIO(client.get(f"/api/train/{job}/weights.npz").content))
        yield client, ids, models


def test_the_twin_gives_every_layer_its_values_and_field(lab):
    client, ids, models = lab
    x = datasets.load("digits").x_test[TEST_INDEX:TEST_INDEX + 1]
    for name in ("one", "two"):
        model = models[name]
        body = client.get(f"/api/train/{ids[name]}/layers?test_index={TEST_INDEX}").json()
        outs = model.activations(x)
        fields = layer_fields(model)
        assert len(body["layers"]) == len(model.layers) == len(outs)
        for i, layer in enumerate(body["layers"]):
            assert layer["index"] == i and layer["layer"] == model.layers[i].describe()
            assert layer["shape"] == list(outs[i].shape[1:])
            np.testing.assert_array_equal(np.array(layer["values"]), outs[i][0].astype(np.float64))
            assert layer["field"] == {"size": fields[i].size, "jump": fields[i].jump, "start": fields[i].start}
        np.testing.assert_allclose(body["probabilities"], softmax(outs[-1][0].astype(np.float64)), atol=1e-12)
        np.testing.assert_array_equal(np.array(body["filters"]["w"]), model.layers[0].params["w"])
        assert body["true_label"] == int(datasets.load("digits").y_test[TEST_INDEX])
        assert "cell" not in body
    # The two-block model's last conv block sees more: 3 → 4 (pool) → 4 + 2·2 = 8 pixels.
    assert [f.size for f in layer_fields(models["two"])][:5] == [3, 3, 4, 8, 8]


def test_a_cell_s_box_steps_and_value(lab):
    client, ids, models = lab
    x = datasets.load("digits").x_test[TEST_INDEX:TEST_INDEX + 1]
    rng = np.random.default_rng(0)
    for name in ("one", "two"):
        model = models[name]
        outs = model.activations(x)
        for layer, out in enumerate(outs):
            if out.ndim == 4:
                C, H, W = out.shape[1:]
                cells = {(0, 0), (H - 1, W - 1), (int(rng.integers(H)), int(rng.integers(W)))}
                channel = int(rng.integers(C))
            else:
                cells, channel = {(0, out.shape[1] - 1)}, 0
            for row, col in cells:
                query = f"test_index={TEST_INDEX}&layer={layer}&row={row}&col={col}&channel={channel}"
                cell = client.get(f"/api/train/{ids[name]}/layers?{query}").json()["cell"]
                assert cell["box"] == list(cell_box(model, layer, row, col)), (name, layer, row, col)
                assert cell["steps"] == field_steps(model, layer)
                expected = out[0, channel, row, col] if out.ndim == 4 else out[0, col]
                assert cell["value"] == float(expected)
    # Flatten and Dense: the whole picture.
    last = len(models["one"].layers) - 1
    cell = client.get(f"/api/train/{ids['one']}/layers?test_index=0&layer={last}&row=0&col=9").json()["cell"]
    assert cell["box"] == [0, 0, 7, 7]


def test_the_twin_takes_a_drawn_grid(lab):
    client, ids, models = lab
    rng = np.random.default_rng(1)
    for side in (8, 28):
        grid = rng.uniform(0, 1, (side, side)).round(3).tolist()
        body = client.post(f"/api/train/{ids['two']}/layers",
                           json={"grid": grid, "layer": 3, "row": 1, "col": 0, "channel": 1}).json()
        outs = models["two"].activations(_grid_array(grid, (1, 8, 8)))
        for i, layer in enumerate(body["layers"]):
            np.testing.assert_array_equal(np.array(layer["values"]), outs[i][0].astype(np.float64))
        # block 2's conv (3×3, no padding) on the 4×4 pooled map: rows −1 + 1·2 = 1 … 1 + 8 − 1 = 8 → 7
        assert body["cell"]["box"] == list(cell_box(models["two"], 3, 1, 0)) == [1, 0, 7, 6]
        assert body["cell"]["value"] == float(outs[3][0, 1, 1, 0])
        assert "true_label" not in body


@pytest.mark.parametrize(("query", "status", "es", "en"), [
    ("test_index=1&layer=99&row=0&col=0", 422, "No hay capa 99", "There is no layer 99"),
    ("test_index=1&layer=0&row=0&col=8", 422, "no hay celda (0, 8)", "there is no cell (0, 8)"),
    ("test_index=1&layer=0&row=0&col=0&channel=99", 422, "no hay mapa 99", "there is no map 99"),
    ("test_index=1&layer=0", 422, "Indica layer, row y col juntos", "Give layer, row and col together"),
    ("test_index=100000", 422, "entre 0 y 358", "between 0 and 358"),
    ("test_index=uno", 422, "número entero", "whole number"),
    ("", 422, "obligatorio", "required"),
])
def test_the_twin_refuses_bad_input_in_both_languages(lab, query, status, es, en):
    client, ids, _models = lab
    for lang, words in (("es", es), ("en", en)):
        r = client.get(f"/api/train/{ids['one']}/layers?{query}&lang={lang}")
        assert r.status_code == status and words in r.json()["detail"], (lang, r.text)


def test_the_twin_refuses_unknown_jobs_and_bad_bodies(lab):
    client, ids, _models = lab
    r = client.get("/api/train/no-such-job/layers?test_index=0&lang=es")
    assert r.status_code == 404 and "No hay ningún entrenamiento" in r.json()["detail"]
    both = client.post(f"/api/train/{ids['one']}/layers?lang=en", json={"grid": [[0] * 8] * 8, "test_index": 1})
    assert both.status_code == 422 and "not both" in both.json()["detail"]
    small = client.post(f"/api/train/{ids['one']}/layers?lang=en", json={"grid": [[0] * 5] * 5})
    assert small.status_code == 422 and "8×8 or 28×28" in small.json()["detail"]
    assert client.post("/api/train/no-such-job/layers", json={"test_index": 0}).status_code == 404


def numbers_of(table) -> list[list[float]]:
    return [[float(td.get_text(strip=True).replace("\u2212", "-").replace(",", ".")) for td in tr.select("td")]
            for tr in table.select("tr")[1:]]


def test_the_fragment_shows_a_map_s_values_and_frames_a_cell(lab):
    client, ids, models = lab
    x = datasets.load("digits").x_test[TEST_INDEX:TEST_INDEX + 1]
    # The pooled map 1 of the default model: 4×4 numbers, two decimals, no cell yet.
    page = soup(client.post(f"/train/jobs/{ids['one']}/inside?lang=es", headers=HX,
                            data={"test_index": str(TEST_INDEX), "pick": "map-2-1"}))
    pooled = models["one"].activations(x)[2][0, 1]
    np.testing.assert_allclose(numbers_of(page.select_one("#train-inside-values")), pooled, atol=0.005 + 1e-9)
    assert page.select_one("#train-inside-frame") is None and page.select_one("#train-inside-empty")
    # A cell of the two-block model's block-2 conv (layer 3): framed where cell_box says, 4 steps written.
    for row, col in ((0, 0), (1, 1)):
        page = soup(client.post(f"/train/jobs/{ids['two']}/inside?lang=es", headers=HX,
                                data={"test_index": str(TEST_INDEX), "layer": "3", "channel": "2", "cell": f"{row}-{col}"}))
        frame = page.select_one("#train-inside-frame")
        t, left, b, r = cell_box(models["two"], 3, row, col)
        assert (int(frame["y"]), int(frame["x"]), int(frame["height"]), int(frame["width"])) == \
            (t, left, b - t + 1, r - left + 1)
        steps = [li.get_text(" ", strip=True) for li in page.select("#train-inside-steps li")]
        assert len(steps) == 4
        assert "r = 4 + (3 \u2212 1)\u00b72 = 8" in steps[3] and "j = 2\u00b71 = 2" in steps[3]
        text = page.select_one("#train-inside-field").get_text(" ", strip=True)
        assert f"filas {t + 1}–{b + 1} y las columnas {left + 1}–{r + 1}" in text and "8×8 píxeles" in text
    # A first-layer filter: its k×k weights.
    page = soup(client.post(f"/train/jobs/{ids['one']}/inside", headers=HX, data={"test_index": "0", "pick": "filter-3"}))
    np.testing.assert_allclose(numbers_of(page.select_one("#train-inside-values")),
                               models["one"].layers[0].params["w"][3, 0], atol=0.005 + 1e-7)
    # A drawn grid works the same way.
    grid = ",".join(["0"] * 27 + ["1"] * 10 + ["0"] * 27)
    page = soup(client.post(f"/train/jobs/{ids['one']}/inside", headers=HX, data={"grid": grid, "pick": "map-0-0"}))
    assert page.select_one("#train-inside-map") is not None


@pytest.mark.parametrize(("data", "es", "en"), [
    ({"test_index": "0", "pick": "map-99-0"}, "No hay capa 99", "There is no layer 99"),
    ({"test_index": "0", "pick": "map-4-0"}, "no mapas", "not maps"),
    ({"test_index": "0", "pick": "filter-99"}, "filtros 1 a", "filters 1 to"),
    ({"test_index": "0", "pick": "nada"}, "Elige un mapa", "Pick a map"),
    ({"test_index": "0", "layer": "0", "cell": "a-b"}, "Elige una celda", "Pick a cell"),
    ({"test_index": "0", "layer": "2", "cell": "4-0"}, "no hay celda (4, 0)", "there is no cell (4, 0)"),
    ({"test_index": "9999"}, "entre 0 y 358", "between 0 and 358"),
    ({"grid": "1,2"}, "8×8", "8×8"),
])
def test_the_fragment_refuses_bad_input(lab, data, es, en):
    client, ids, _models = lab
    for lang, words in (("es", es), ("en", en)):
        r = client.post(f"/train/jobs/{ids['one']}/inside?lang={lang}", headers=HX, data=data)
        assert r.status_code == 422 and words in r.text, (lang, r.text[:400])
    assert client.post("/train/jobs/no-such-job/inside", headers=HX, data=data).status_code == 404


def test_the_prediction_panel_makes_every_map_and_filter_a_button(lab):
    client, ids, models = lab
    page = soup(client.post(f"/train/jobs/{ids['two']}/predict", data={"test_index": "3"}, headers=HX))
    values = {b["value"] for b in page.select("#train-maps-form button[name=pick]")}
    model = models["two"]
    shapes = model.output_shapes()
    expected = {f"map-{i}-{c}" for i, s in enumerate(shapes) if len(s) == 3 for c in range(s[0])}
    expected |= {f"filter-{f}" for f in range(model.layers[0].F)}
    assert values == expected
    form = page.select_one("#train-maps-form")
    assert form["hx-post"] == f"/train/jobs/{ids['two']}/inside" and form.select_one("input[name=test_index]")["value"] == "3"


def test_pipeline_frames_the_clicked_cell_s_field(client):
    explain = {**HX, "HX-Target": "pipeline-explain"}
    for show, layer, (f, r, c) in (("pool-2-3-3", 2, (2, 3, 3)), ("relu-0-0-5", 1, (0, 0, 5)), ("conv-1-4-4", 0, (1, 4, 4))):
        page = soup(client.get(f"/pipeline?show={show}", headers=explain))
        t, left, b, rr = cell_box(FIELD_MODEL, layer, r, c)
        framed = [i for i, td in enumerate(page.select("#pl-input td")) if "fld" in td.get("class", [])]
        assert framed == [y * 8 + x for y in range(t, b + 1) for x in range(left, rr + 1)], show
        assert page.select_one("#pl-input-wrap")["hx-swap-oob"] == "true"
        assert len(page.select("#pl-field-steps li")) == layer + 1
        size = layer_fields(FIELD_MODEL)[layer].size
        assert f"{size}×{size} píxeles" in page.select_one("#pl-field").get_text(" ", strip=True)
    page = soup(client.get("/pipeline?show=logit-3", headers=explain))
    assert page.select_one("#pl-field") is None and not page.select("#pl-input td.fld")


class QueueOnlyRunner(JobRunner):
    """The real runner's bookkeeping, but no job ever starts (as in test_schema_fuzz.py)."""

    def _dispatch(self) -> None:
        self._positions()


def test_a_job_without_a_model_yet_is_a_409(lab):
    client, _ids, _models = lab
    real = client.app.state.jobs
    client.app.state.jobs = fake = QueueOnlyRunner(settings_for(client.app))
    try:
        job = client.post("/api/train", json={"dataset": "digits", "epochs": 1}).json()["id"]
        r = client.get(f"/api/train/{job}/layers?test_index=0&lang=es")
        assert r.status_code == 409 and "aún no tiene modelo" in r.json()["detail"], r.text
        r = client.post(f"/train/jobs/{job}/inside?lang=en", headers=HX, data={"test_index": "0", "pick": "map-0-0"})
        assert r.status_code == 409 and "no model yet" in r.text
    finally:
        client.app.state.jobs = real
        fake.shutdown()


def test_layer_view_bodies_are_refused_by_size_before_they_are_parsed(client):
    rows = b"[0]," * 20_000  # 80 KB: more than any drawn digit
    for path in ("/api/train/nojob/layers", "/train/jobs/nojob/inside"):
        r = client.post(path + "?lang=en", content=b'{"grid": [' + rows[:-1] + b"]}",
                        headers={"content-type": "application/json"})
        assert r.status_code == 413 and "at most 32 KB are accepted here" in r.text
