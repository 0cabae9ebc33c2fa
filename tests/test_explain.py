"""Why did it say 7? core/explain.py against central differences, PyTorch autograd and hooks,
and Grad-CAM against a direct NumPy implementation of its definition; then /train's "why"
panel and its JSON twin POST /api/train/{id}/why on a trained digits job."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.numbers import use_numbers
from cnnlab.app.routers.train_why import EXPLANATIONS
from cnnlab.core import explain, numfmt
from cnnlab.core.datasets import load as load_dataset
from cnnlab.core.layers import Activation, Conv2D, Dense, Flatten, Pool2D
from cnnlab.core.model import Sequential, load_model
from fastapi.testclient import TestClient
from pagecheck import soup, text, translated
from torch import nn

# ---------------------------------------------------------------------------
# Random small models, one to three conv blocks (built from core.layers)
# ---------------------------------------------------------------------------


def _model(design: str, seed: int) -> tuple[Sequential, tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    if design == "one block":
        shape = (1, 8, 8)
        layers = [Conv2D(1, 3, 3, padding=1, rng=rng), Activation("relu"), Pool2D("max", 2), Flatten(),
                  Dense(3 * 4 * 4, 10, rng=rng)]
    elif design == "two blocks, hidden layer":
        shape = (1, 12, 12)
        layers = [Conv2D(1, 4, 3, padding=1, rng=rng), Activation("relu"), Pool2D("max", 2),
                  Conv2D(4, 5, 3, padding=1, rng=rng), Activation("relu"), Pool2D("max", 2), Flatten(),
                  Dense(5 * 3 * 3, 6, rng=rng), Activation("tanh"), Dense(6, 4, rng=rng)]
    elif design == "two blocks, stride 2, avg, leaky, 2 channels":
        shape = (2, 14, 14)
        layers = [Conv2D(2, 3, 3, stride=2, padding=1, rng=rng), Activation("leaky_relu", alpha=0.1),
                  Pool2D("avg", 2), Conv2D(3, 4, 2, padding=0, rng=rng), Activation("relu"), Flatten(),
                  Dense(4 * 2 * 2, 5, rng=rng)]
    else:  # three blocks
        shape = (1, 16, 16)
        layers = [Conv2D(1, 3, 3, padding=1, rng=rng), Activation("sigmoid"), Pool2D("max", 2),
                  Conv2D(3, 4, 3, padding=1, rng=rng), Activation("relu"), Pool2D("max", 2),
                  Conv2D(4, 4, 3, padding=1, rng=rng), Activation("relu"), Flatten(), Dense(4 * 4 * 4, 3, rng=rng)]
    model = Sequential(layers, input_shape=shape).astype(np.float64)
    for _name, p, _g in model.parameters():  # non-zero biases, so they matter
        if p.ndim == 1:
            p[...] = rng.standard_normal(p.shape) * 0.1
    return model, shape


DESIGNS = ["one block", "two blocks, hidden layer", "two blocks, stride 2, avg, leaky, 2 channels", "three blocks"]


def _torch(model: Sequential) -> nn.Sequential:
    """The same network as torch modules, float64, the same weights."""
    mods = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            m = nn.Conv2d(layer.C, layer.F, layer.k, stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
            m.weight.data = torch.tensor(layer.params["w"])
            m.bias.data = torch.tensor(layer.params["b"])
        elif kind == "Pool2D":
            m = (nn.MaxPool2d if layer.kind == "max" else nn.AvgPool2d)(layer.size, layer.stride or layer.size)
        elif kind == "Activation":
            m = {"relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(),
                 "leaky_relu": nn.LeakyReLU(layer.alpha)}[layer.name]
        elif kind == "Flatten":
            m = nn.Flatten()
        else:
            m = nn.Linear(layer.D_in, layer.D_out)
            m.weight.data = torch.tensor(layer.params["w"].T.copy())
            m.bias.data = torch.tensor(layer.params["b"])
        mods.append(m)
    return nn.Sequential(*mods).double()


@pytest.mark.parametrize("design", DESIGNS)
def test_saliency_gradient_against_central_differences_and_autograd(design):
    model, shape = _model(design, seed=DESIGNS.index(design) + 1)
    rng = np.random.default_rng(10 + DESIGNS.index(design))
    x = rng.random((1, *shape))
    K = model.forward(x, train=False).shape[1]
    net = _torch(model)
    for k in range(K):
        score, dx = explain.class_score_gradient(model, x, k)
        xt = torch.tensor(x, requires_grad=True)
        logits = net(xt)
        logits[0, k].backward()
        where = f"{design}, class {k}"
        assert score == pytest.approx(float(logits[0, k].detach()), abs=1e-10), where
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=where)
        np.testing.assert_allclose(explain.saliency(model, x, k), np.abs(xt.grad.numpy()[0]).max(axis=0),
                                   rtol=1e-9, atol=1e-12, err_msg=where)
        np.testing.assert_allclose(explain.gradient_times_input(model, x, k), (xt.grad.numpy()[0] * x[0]).sum(axis=0),
                                   rtol=1e-9, atol=1e-12, err_msg=where)
    # central differences at random pixels, for one class
    k = int(rng.integers(K))
    _score, dx = explain.class_score_gradient(model, x, k)
    for _ in range(6):
        c, i, j = (int(rng.integers(n)) for n in shape)
        fd = explain.central_difference(model, x, k, c, i, j, h=1e-5)
        assert fd["estimate"] == pytest.approx(dx[0, c, i, j], abs=1e-7), f"{design}: pixel ({c}, {i}, {j})"
        assert fd["estimate"] == pytest.approx((fd["plus"] - fd["minus"]) / 2e-5)


def _direct_grad_cam(model: Sequential, x: np.ndarray, k: int, layer: int, h: float = 1e-6):
    """Grad-CAM straight from its definition: A = layer ``layer``'s output (declared order),
    ∂y^k/∂A_f[i, j] by central differences through the layers after it, α_f = mean_ij of them,
    relu(Σ_f α_f A_f)."""
    A = model.activations(x)[layer]

    def tail(a):
        for later in model.layers[layer + 1:]:
            a = later.forward(a, train=False)
        return a[0, k]

    dA = np.zeros_like(A)
    for index in np.ndindex(A.shape):
        plus, minus = A.copy(), A.copy()
        plus[index] += h
        minus[index] -= h
        dA[index] = (tail(plus) - tail(minus)) / (2 * h)
    alpha = dA[0].mean(axis=(1, 2))
    return alpha, np.maximum(np.tensordot(alpha, A[0], axes=1), 0), A[0]


def _torch_grad_cam(model: Sequential, x: np.ndarray, k: int, layer: int):
    """Grad-CAM as it is usually written in PyTorch: a forward hook keeps A, a tensor hook its
    gradient. Returns (α, map, upsampled, score)."""
    net = _torch(model)
    kept = {}

    def forward_hook(_module, _inputs, output):
        kept["A"] = output
        output.register_hook(lambda grad: kept.__setitem__("dA", grad))

    handle = net[layer].register_forward_hook(forward_hook)
    logits = net(torch.tensor(x))
    logits[0, k].backward()
    handle.remove()
    alpha = kept["dA"].mean(dim=(2, 3))
    cam = torch.relu((alpha[:, :, None, None] * kept["A"]).sum(dim=1, keepdim=True))
    up = torch.nn.functional.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
    return alpha[0].detach().numpy(), cam[0, 0].detach().numpy(), up[0, 0].detach().numpy(), float(logits[0, k].detach())


@pytest.mark.parametrize("design", DESIGNS)
def test_grad_cam_against_its_definition_and_torch_hooks(design):
    model, shape = _model(design, seed=20 + DESIGNS.index(design))
    rng = np.random.default_rng(30 + DESIGNS.index(design))
    x = rng.random((1, *shape))
    K = model.forward(x, train=False).shape[1]
    last_conv = max(i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2D))
    assert explain.grad_cam_layer(model) == last_conv + 1  # the activation after the last conv
    for k in range(K):
        # PyTorch, as drawn: ReLU zeros tie in a max-pool window, where ∂y/∂A is a choice (both
        # the engine and PyTorch give the window's first cell the gradient)
        cam = explain.grad_cam(model, x, k)
        alpha, cam_map, up, score = _torch_grad_cam(model, x, k, cam["layer"])
        where = f"{design}, class {k}"
        np.testing.assert_allclose(cam["weights"], alpha, rtol=1e-9, atol=1e-12, err_msg=where)
        np.testing.assert_allclose(cam["map"], cam_map, rtol=1e-9, atol=1e-12, err_msg=where)
        np.testing.assert_allclose(cam["upsampled"], up, rtol=1e-9, atol=1e-12, err_msg=where)
        assert cam["score"] == pytest.approx(score, abs=1e-10), where
    # The definition, by central differences through the layers after A: with the last conv's
    # biases raised, A > 0 everywhere (no ties), so every ∂y/∂A_f[i, j] exists
    model.layers[last_conv].params["b"][...] += 4.0
    assert model.activations(x)[last_conv + 1].min() > 0
    for k in range(K):
        cam = explain.grad_cam(model, x, k)
        alpha, direct, A = _direct_grad_cam(model, x, k, cam["layer"])
        where = f"{design}, class {k}, A > 0"
        np.testing.assert_allclose(cam["activations"], A, rtol=1e-12, atol=1e-12, err_msg=where)
        np.testing.assert_allclose(cam["weights"], alpha, rtol=1e-6, atol=1e-8, err_msg=where)
        np.testing.assert_allclose(cam["map"], direct, rtol=1e-6, atol=1e-8, err_msg=where)
    # another layer than the default: the first block's pooling output (a conv follows it)
    cam = explain.grad_cam(model, x, 0, layer=2)
    alpha, direct, _A = _direct_grad_cam(model, x, 0, 2)
    np.testing.assert_allclose(cam["weights"], alpha, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(cam["map"], direct, rtol=1e-6, atol=1e-8)


def test_explanations_leave_a_training_model_alone_when_given_a_copy_and_refuse_bad_input():
    model, shape = _model("one block", seed=3)
    x = np.random.default_rng(4).random((1, *shape))
    with pytest.raises(ValueError, match="class 10"):
        explain.saliency(model, x, 10)
    with pytest.raises(ValueError, match="one image"):
        explain.saliency(model, np.concatenate([x, x]), 0)
    with pytest.raises(ValueError, match="feature maps"):
        explain.grad_cam(model, x, 0, layer=3)  # Flatten's output
    no_conv = Sequential([Flatten(), Dense(64, 3)], input_shape=shape)
    with pytest.raises(ValueError, match="Conv2D"):
        explain.grad_cam(no_conv, x, 0)


# ---------------------------------------------------------------------------
# The panel and its JSON twin on a trained digits job
# ---------------------------------------------------------------------------

TEST_INDEX = 5


@pytest.fixture(scope="module")
def trained():
    """(client, job id, the job's model as float64, the digits) for a ~1 s digits run."""
    with TestClient(cnnlab_app) as client:
        r = client.post("/api/train", json={"dataset": "digits", "epochs": 2})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        give_up = time.monotonic() + 60
        while client.get(f"/api/train/{job_id}", params={"records": False}).json()["status"] in ("queued", "running"):
            assert time.monotonic() < give_up, "the digits run did not finish"
            time.sleep(0.05)
        import io
        model = load_model(io.BytesIO(client.get(f"/api/train/{job_id}/weights.npz").content)).astype(np.float64)
        yield client, job_id, model, load_dataset("digits")


def _es(v: float, digits: int = 4) -> str:
    with use_numbers("es"):
        return numfmt.significant(v, digits)


def test_json_twin_gives_core_explains_numbers_and_the_class_switch_changes_them(trained):
    client, job_id, model, data = trained
    x = data.x_test[TEST_INDEX:TEST_INDEX + 1].astype(np.float64)
    z = explain.scores(model, x)
    predicted = int(z.argmax())
    other = (predicted + 1) % 10
    for method, target in (("saliency", None), ("gradient_input", other), ("grad_cam", other), ("grad_cam", None)):
        body = {"test_index": TEST_INDEX, "method": method, "row": 3, "col": 4}
        if target is not None:
            body["target"] = target
        r = client.post(f"/api/train/{job_id}/why", json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        k = predicted if target is None else target
        assert (got["target"], got["label"], got["true_label"]) == (k, predicted, int(data.y_test[TEST_INDEX]))
        assert got["score"] == pytest.approx(z[k], abs=1e-9)
        np.testing.assert_allclose(got["probabilities"], explain.probabilities(model, x), atol=1e-12)
        if method == "saliency":
            expected = explain.saliency(model, x, k)
        elif method == "gradient_input":
            expected = explain.gradient_times_input(model, x, k)
        else:
            expected = explain.grad_cam(model, x, k)["upsampled"]
        np.testing.assert_allclose(got["map"], expected, atol=1e-12, err_msg=method)
        _s, dx = explain.class_score_gradient(model, x, k)
        px = got["pixel"]
        assert (px["row"], px["col"], px["clicked"]) == (3, 4, True)
        assert px["gradient"] == pytest.approx(dx[0, 0, 3, 4], abs=1e-12)
        fd = explain.central_difference(model, x, k, 0, 3, 4, h=px["h"])
        assert px["estimate"] == pytest.approx(fd["estimate"], abs=1e-12)
        # the check agrees with backprop, or the score has a kink there and both sides are given
        assert px["estimate"] == pytest.approx((px["left"] + px["right"]) / 2, abs=1e-9)
        assert px["kink"] == (abs(px["estimate"] - px["gradient"]) > 1e-4 * max(1, abs(px["gradient"])))
        assert px["kink"] == (abs(px["left"] - px["right"]) > 1e-6), px
        if method == "gradient_input":
            assert px["product"] == pytest.approx(x[0, 0, 3, 4] * dx[0, 0, 3, 4], abs=1e-12)
        if method == "grad_cam":
            cam = explain.grad_cam(model, x, k)
            np.testing.assert_allclose(got["grad_cam"]["weights"], cam["weights"], atol=1e-12)
            cell = px["cell"]
            i, j = cell["row"], cell["col"]
            assert cell["sum"] == pytest.approx(float(np.dot(cam["weights"], cam["activations"][:, i, j])), abs=1e-12)
            assert cell["value"] == pytest.approx(cam["map"][i, j], abs=1e-12)
    # the class switch: another class, another map
    a = client.post(f"/api/train/{job_id}/why", json={"test_index": TEST_INDEX}).json()
    b = client.post(f"/api/train/{job_id}/why", json={"test_index": TEST_INDEX, "target": other}).json()
    assert a["target"] == predicted and b["target"] == other
    assert not np.allclose(a["map"], b["map"])
    r = client.post("/api/train/nosuchjob/why", json={"test_index": 0})
    assert r.status_code == 404 and r.json()["detail"]
    schema = client.get("/openapi.json").json()["paths"]["/api/train/{job_id}/why"]["post"]
    assert {"404", "409", "422"} <= set(schema["responses"]) and "Grad-CAM" in schema["description"]
    # a drawn grid works as /predict's does; with no pixel given, the strongest one is written out
    grid = (data.x_test[TEST_INDEX, 0] * 255).round().tolist()
    c = client.post(f"/api/train/{job_id}/why", json={"grid": grid, "method": "saliency"}).json()
    assert c["pixel"]["clicked"] is False
    assert c["pixel"]["map_value"] == pytest.approx(np.max(c["map"]))


def test_the_panel_shows_the_overlay_legend_explanation_and_the_clicked_pixels_numbers(trained):
    client, job_id, model, data = trained
    x = data.x_test[TEST_INDEX:TEST_INDEX + 1].astype(np.float64)
    predicted = int(explain.scores(model, x).argmax())
    other = (predicted + 3) % 10
    # the prediction brings the panel's loader, for the same image
    r = client.post(f"/train/jobs/{job_id}/predict", data={"test_index": str(TEST_INDEX)}, headers={"HX-Request": "true"})
    loader = soup(r).select_one("form#train-why")
    assert loader["hx-post"] == f"/train/jobs/{job_id}/why" and loader["hx-trigger"] == "intersect once"
    assert loader.select_one("input[name=test_index]")["value"] == str(TEST_INDEX)

    def panel(**form):
        r = client.post(f"/train/jobs/{job_id}/why", data={"test_index": str(TEST_INDEX), **form}, headers={"HX-Request": "true"})
        assert r.status_code == 200, r.text
        return soup(r)

    page = panel()  # defaults: saliency, the predicted class, the strongest pixel
    assert page.select_one("select[name=target] option[selected]")["value"] == str(predicted)
    assert page.select_one("input[name=method][checked]")["value"] == "saliency"
    assert page.select_one("#train-why-map image")["href"].startswith("data:image/png;base64,")
    sal = explain.saliency(model, x, predicted)
    assert [text(s) for s in page.select(".why-legend__ends span")] == ["0", _es(sal.max(), 3)]
    explanation = text(page.select_one("#train-why-explain"))
    assert explanation == translated(EXPLANATIONS["saliency"], name=str(predicted)) and explanation.startswith("Saliencia")
    # another class, gradient × input, a clicked pixel: its numbers as the engine computes them
    page = panel(method="gradient_input", target=str(other), row="4", col="3")
    assert page.select_one("select[name=target] option[selected]")["value"] == str(other)
    _s, dx = explain.class_score_gradient(model, x, other)
    fd = explain.central_difference(model, x, other, 0, 4, 3, h=1e-3)
    assert text(page.select_one("#train-why-gradient")) == _es(dx[0, 0, 4, 3])
    assert text(page.select_one("#train-why-estimate")) == _es(fd["estimate"])
    assert text(page.select_one("#train-why-product")) == _es(x[0, 0, 4, 3] * dx[0, 0, 4, 3])
    gi = explain.gradient_times_input(model, x, other)
    m = _es(np.abs(gi).max(), 3)
    assert [text(s) for s in page.select(".why-legend__ends span")] == ["−" + m, "0", m]
    assert page.select_one("#train-why-map rect.why-map__mark")["x"] == "3"
    # Grad-CAM: the clicked cell's sum with its α's
    page = panel(method="grad_cam", target=str(other), row="4", col="3")
    cam = explain.grad_cam(model, x, other)
    h = cam["map"].shape[0]
    i, j = 4 * h // 8, 3 * h // 8
    assert text(page.select_one("#train-why-cell-sum")) == _es(float(np.dot(cam["weights"], cam["activations"][:, i, j])))
    assert len(page.select(".why-formula__alphas span")) == cam["weights"].size
    # a pixel where the score has a kink (a tie in a max-pooling window): both sides written out
    _s, dx = explain.class_score_gradient(model, x, predicted)
    kinks, smooth = [], []
    for i, j in np.ndindex(8, 8):
        fd = explain.central_difference(model, x, predicted, 0, i, j, h=1e-3)
        (kinks if abs(fd["estimate"] - dx[0, 0, i, j]) > 1e-4 * max(1, abs(dx[0, 0, i, j])) else smooth).append((i, j, fd))
    assert kinks and smooth
    i, j, fd = kinks[0]
    page = panel(row=str(i), col=str(j))
    note = text(page.select_one("#train-why-kink"))
    assert note.startswith("Los dos difieren") and _es(fd["right"]) in note and _es(fd["left"]) in note
    i, j, fd = smooth[0]
    page = panel(row=str(i), col=str(j))
    assert page.select_one("#train-why-kink") is None
    assert text(page.select_one("#train-why-estimate")) == _es(fd["estimate"])
    assert text(page.select_one("#train-why-gradient")) == _es(dx[0, 0, i, j])
    # a drawing (the pad's 8×8 values, as /predict takes them): the panel keeps it for the next request
    drawing = ",".join(f"{v:.4f}" for v in data.x_test[TEST_INDEX, 0].ravel())
    r = client.post(f"/train/jobs/{job_id}/why", data={"grid": drawing, "method": "saliency"}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and soup(r).select_one("#train-why-form input[name=grid]")["value"] == drawing
    # English
    r = client.post(f"/train/jobs/{job_id}/why?lang=en", data={"test_index": str(TEST_INDEX), "method": "grad_cam"},
                    headers={"HX-Request": "true"})
    assert "Grad-CAM looks at the last convolution layer" in text(soup(r).select_one("#train-why-explain"))


@pytest.mark.parametrize("body,field,es,en", [
    ({"target": 10}, "target", "La clase debe ser un número entero de 0 a 9.", "The class must be a whole number from 0 to 9."),
    ({"method": "lime"}, "method", "Método desconocido «lime»", "Unknown method “lime”"),
    ({"row": 8, "col": 0}, "row", "El píxel debe estar en una fila de 0 a 7", "The pixel must be a row from 0 to 7"),
    ({"row": 1, "col": -1}, "col", "El píxel debe estar en una fila de 0 a 7", "The pixel must be a row from 0 to 7"),
])
def test_bad_class_method_or_pixel_is_refused_with_a_message(trained, body, field, es, en):
    client, job_id, _model, _data = trained
    for lang, message in (("es", es), ("en", en)):
        r = client.post(f"/api/train/{job_id}/why?lang={lang}", json={"test_index": 0, **body})
        assert r.status_code == 422, r.text
        assert message in r.json()["detail"] and r.json().get("field") == field
        r = client.post(f"/train/jobs/{job_id}/why?lang={lang}", data={"test_index": "0", **{k: str(v) for k, v in body.items()}},
                        headers={"HX-Request": "true"})
        assert r.status_code == 422 and message in r.text
