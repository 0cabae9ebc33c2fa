"""A model as ONNX (core/onnx_export.py, GET /api/train/{id}/model.onnx): a valid file whose
probabilities in ONNX Runtime are the engine's, for every architecture the lab trains."""

from __future__ import annotations

import io
import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

import cnnlab
from cnnlab.app.jobs import Job, TrainSpec
from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.session import unsign
from cnnlab.app.settings import settings_for
from cnnlab.core.layers import Activation, Conv2D, Dense, Flatten, Layer, Pool2D
from cnnlab.core.model import Sequential
from cnnlab.core.onnx_export import IR_VERSION, OPSET, onnx_bytes, save_onnx, to_onnx
from tests.test_train_api import start, wait_done

ATOL = 1e-5
N_IMAGES = 100


def session(data: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # these models are tiny: threads only wait for each other
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run(data: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits, probabilities = session(data).run(["logits", "probabilities"], {"image": x})
    return logits, probabilities


def assert_same(model: Sequential, x: np.ndarray, *, full_check: bool = True) -> None:
    proto = to_onnx(model)
    onnx.checker.check_model(proto, full_check=full_check)
    logits, probabilities = run(proto.SerializeToString(), x)
    expected = model.predict_proba(x)
    assert probabilities.shape == expected.shape == (len(x), 10)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=ATOL, err_msg=repr(model))
    if x.shape[-1] <= 8:  # the logits too, where the engine's second pass is cheap
        z = model.forward(x, train=False)
        np.testing.assert_allclose(logits, z, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(z).max())),
                                   err_msg=repr(model))


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(cnnlab.load_dataset(name).x_test[:N_IMAGES]) for name in ("digits", "mnist")}


def lab_specs():
    """Every architecture the training form allows, in two sweeps per dataset: every
    (kernel, padding, pool size) TrainSpec accepts, each with the next of the 16 (pool,
    activation, hidden) combinations in turn, so that sweep also covers all 16 many times;
    filters vary too."""
    kinds = list(itertools.product(("max", "avg"), ("relu", "sigmoid", "tanh", "leaky_relu"), (0, 12)))
    specs = []
    for dataset in ("digits", "mnist"):
        n = 0
        for kernel, padding, pool_size in itertools.product(range(1, 8), range(4), range(1, 5)):
            pool, activation, hidden = kinds[n % len(kinds)]
            try:
                spec = TrainSpec(dataset=dataset, kernel=kernel, padding=padding, pool_size=pool_size, pool=pool,
                                 activation=activation, hidden=hidden, filters=(1, 4, 16)[n % 3], seed=n)
            except ValueError:  # the kernel or the pooling window does not fit: the lab refuses it
                continue
            specs.append(spec)
            n += 1
    return specs


def test_the_sweep_covers_everything_the_form_allows():
    specs = lab_specs()
    for dataset in ("digits", "mnist"):
        mine = [s for s in specs if s.dataset == dataset]
        assert {(s.pool, s.activation, bool(s.hidden)) for s in mine} == set(
            itertools.product(("max", "avg"), ("relu", "sigmoid", "tanh", "leaky_relu"), (False, True)))
        assert {s.kernel for s in mine} == set(range(1, 8)) and {s.padding for s in mine} == set(range(4))
        assert {s.pool_size for s in mine} == set(range(1, 5))
    # Maps the window does not tile (7×7 pooled by 2, 8×8 by 3) are where floor and ceil differ.
    assert any(s.output_shapes()[1][1] % s.pool_size for s in specs)


def test_every_lab_architecture_gives_the_engines_probabilities(images):
    from cnnlab.app.jobs import build_model

    rng = np.random.default_rng(16)
    for spec in lab_specs():
        model = build_model(spec)
        for name, p, _ in model.parameters():  # the biases start at 0: give them values to export
            if name.endswith(".b"):
                p[...] = rng.normal(0, 0.2, p.shape)
        assert_same(model, images[spec.dataset], full_check=spec.seed < 3)


def test_a_trained_model_gives_the_engines_probabilities(images):
    data = cnnlab.load_dataset("digits")
    model = cnnlab.tiny_cnn(input_shape=(1, 8, 8), filters=6, hidden=16)
    list(cnnlab.train(model, data, cnnlab.Adam(lr=0.01), epochs=1, batch_size=64, seed=0))
    assert_same(model, images["digits"])
    _, probabilities = run(onnx_bytes(model), data.x_test)
    assert (probabilities.argmax(axis=1) == data.y_test).mean() > 0.5


def test_what_the_library_allows_beyond_the_form(images):
    """'same' padding with a stride (asymmetric pads), dilation, an even kernel, overlapping and
    global pooling, two convolutions, a float64 model: all mapped with the engine's numbers."""
    rng = np.random.default_rng(3)
    x = images["mnist"][:20]
    model = Sequential([
        Conv2D(1, 5, 4, stride=2, padding="same", dilation=2, rng=rng), Activation("leaky_relu", alpha=0.2),
        Pool2D("max", 3, stride=2), Conv2D(5, 10, 3, padding="valid", rng=rng), Activation("tanh"),
        Pool2D("global_avg"), Flatten(),
    ], input_shape=(1, 28, 28))
    assert_same(model, x)
    model = Sequential([Conv2D(1, 3, 2, stride=3, padding=2, rng=rng), Activation("sigmoid"),
                        Pool2D("avg", 2, stride=1), Flatten(), Dense(3 * 10 * 10, 10, rng=rng)],
                       input_shape=(1, 28, 28)).astype(np.float64)
    _, probabilities = run(onnx_bytes(model), x)
    np.testing.assert_allclose(probabilities, model.predict_proba(x), rtol=0, atol=ATOL)


def test_the_file_describes_itself_for_netron():
    model = cnnlab.tiny_cnn(input_shape=(1, 8, 8), pool="avg", pool_size=3, activation="leaky_relu", hidden=5)
    proto = to_onnx(model, name="digits-model")
    assert proto.producer_name == "CNN Lab" and proto.ir_version == IR_VERSION
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    graph = proto.graph
    assert graph.name == "digits-model"
    assert [node.op_type for node in graph.node] == ["Conv", "LeakyRelu", "AveragePool", "Flatten", "Gemm",
                                                     "LeakyRelu", "Gemm", "Softmax"]
    assert [node.doc_string for node in graph.node][:3] == [
        "layer 0: Conv2D 8@3×3 pad 1", "layer 1: leaky_relu α=0.01", "layer 2: Pool2D avg 3×3"]
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input]
    assert [v.name for v in graph.input] == ["image"] and dims == [["N", 1, 8, 8]]
    assert [v.name for v in graph.output] == ["logits", "probabilities"]
    assert "Conv2D 8@3×3 pad 1" in graph.doc_string
    props = {p.key: p.value for p in proto.metadata_props}
    assert '"Conv2D"' in props["cnnlab.spec"]
    # The batch is symbolic: any number of images runs.
    for n in (1, 7):
        assert run(proto.SerializeToString(), np.zeros((n, 1, 8, 8), np.float32))[1].shape == (n, 10)


def test_save_onnx_writes_a_file_and_the_front_door_has_it(tmp_path):
    model = cnnlab.tiny_cnn(input_shape=(1, 8, 8))
    path = tmp_path / "m.onnx"
    cnnlab.save_onnx(model, path)
    buf = io.BytesIO()
    save_onnx(model, buf)
    assert path.read_bytes() == buf.getvalue() == cnnlab.to_onnx(model).SerializeToString()
    assert onnx.load(str(path)).graph.node[0].op_type == "Conv"


def test_an_unknown_layer_is_refused_with_a_message():
    class Double(Layer):
        def forward(self, x, train=True):
            return 2 * x

        def backward(self, dout, need_dx=True):
            return 2 * dout

    rng = np.random.default_rng(0)
    model = Sequential([Conv2D(1, 2, 3, rng=rng), Double(), Flatten(), Dense(72, 10, rng=rng)], input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"layer 1 .*Double.* to ONNX"):
        to_onnx(model)
    with pytest.raises(ValueError, match="input_shape"):
        to_onnx(Sequential([Flatten(), Dense(64, 10, rng=rng)]))


# ---------------------------------------------------------------- HTTP ----------


def test_the_trained_model_downloads_as_onnx_and_answers_like_the_engine(client, html):
    job_id = start(client, dataset="digits", epochs=1)
    assert wait_done(client, job_id)["status"] == "done"
    r = client.get(f"/api/train/{job_id}/model.onnx")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == f'attachment; filename="cnnlab-digits-{job_id[:8]}.onnx"'
    onnx.checker.check_model(onnx.load_from_string(r.content), full_check=True)
    npz = client.get(f"/api/train/{job_id}/weights.npz")  # the .npz still downloads
    assert npz.status_code == 200 and npz.headers["content-disposition"].endswith('.npz"')
    engine = cnnlab.load_model(io.BytesIO(npz.content))
    x = cnnlab.load_dataset("digits").x_test[:N_IMAGES]
    _, probabilities = run(r.content, x)
    np.testing.assert_allclose(probabilities, engine.predict_proba(x), rtol=0, atol=ATOL)
    for i in (0, 1):
        api = client.post(f"/api/train/{job_id}/predict", json={"test_index": i, "maps": False}).json()
        np.testing.assert_allclose(probabilities[i], api["probabilities"], rtol=0, atol=ATOL)
    # The run's page offers it beside the .npz, labelled in the page's language.
    page = html(client.get(f"/train/jobs/{job_id}"))
    link = page.select_one("a#train-download-onnx")
    assert link["href"] == f"/api/train/{job_id}/model.onnx" and link.has_attr("download")
    assert link.get_text(strip=True) == "Modelo (ONNX, se abre en Netron)"
    assert page.select_one("a#train-download")["href"].endswith("/weights.npz")
    english = html(client.get(f"/train/jobs/{job_id}?lang=en")).select_one("a#train-download-onnx")
    assert english.get_text(strip=True) == "Model (ONNX, opens in Netron)"


def test_unknown_jobs_404_and_jobs_without_a_model_409_with_a_message(client):
    r = client.get("/api/train/nope/model.onnx?lang=en")
    assert r.status_code == 404
    assert r.json()["detail"] == "There is no training job with this id in this browser (it may have expired)."
    job_id = start(client, dataset="digits", epochs=1)
    other = TestClient(cnnlab_app)  # another browser
    assert other.get(f"/api/train/{job_id}/model.onnx").status_code == 404
    wait_done(client, job_id)
    # A run stopped while queued has no model: as weights.npz, a 409 that says so.
    sid = unsign(client.cookies["cnnlab_session"], settings_for(cnnlab_app))
    empty = Job(sid, TrainSpec())
    empty.status = "stopped"
    cnnlab_app.state.jobs.add_finished(empty)
    for path in ("model.onnx", "weights.npz"):
        for lang, message in (("es", "Este entrenamiento aún no tiene modelo: espera a que empiece."),
                              ("en", "This training has no model yet: wait until it starts.")):
            r = client.get(f"/api/train/{empty.id}/{path}?lang={lang}")
            assert r.status_code == 409 and r.json()["detail"] == message


def test_the_route_is_in_the_openapi_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"200", "404", "409"} <= set(paths["/api/train/{job_id}/model.onnx"]["get"]["responses"])


def test_deeper_designs_give_the_engines_probabilities(images):
    """Two and three conv blocks (issue 14): random designs the form allows, with strides,
    blocks without pooling and both pooling kinds, each exported and run by ONNX Runtime."""
    from cnnlab.app.jobs import build_model

    rng = np.random.default_rng(14)
    checked = 0
    while checked < 6:
        blocks = int(rng.integers(2, 4))
        fields = {"dataset": ("digits", "mnist")[checked % 2], "blocks": blocks, "seed": checked,
                  "kernel": int(rng.integers(1, 6)), "padding": int(rng.integers(0, 3)),
                  "stride": int(rng.integers(1, 3)), "pool_size": int(rng.integers(1, 3)),
                  "pool": str(rng.choice(["max", "avg"])), "filters": int(rng.integers(1, 9)),
                  "activation": ("relu", "sigmoid", "tanh", "leaky_relu")[checked % 4],
                  "hidden": int(rng.choice([0, 9]))}
        for b in range(2, blocks + 1):
            fields.update({f"filters{b}": int(rng.integers(1, 9)), f"kernel{b}": int(rng.integers(1, 5)),
                           f"padding{b}": int(rng.integers(0, 3)), f"stride{b}": int(rng.integers(1, 3)),
                           f"pool{b}": str(rng.choice(["max", "avg"])), f"pool_size{b}": int(rng.integers(1, 3))})
        try:
            spec = TrainSpec(**fields)
        except ValueError:  # a map would shrink below 1×1: the lab refuses it
            continue
        model = build_model(spec)
        for name, p, _ in model.parameters():
            if name.endswith(".b"):
                p[...] = rng.normal(0, 0.2, p.shape)
        assert_same(model, images[spec.dataset], full_check=checked < 2)
        checked += 1
