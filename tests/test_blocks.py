"""Deeper CNNs: one to three conv blocks (core.model.tiny_cnn's ``stride`` and ``blocks``, TrainSpec's
blocks / filters2 … pool_size3, /train's design table and its JSON twin GET /api/train/design).

- The engine against PyTorch (float64) on eight designs that together use every block option
  (kernel 1–7, padding 0–3, stride 1–3, max and average pooling of size 1–4, a block without
  pooling, the four activations, with and without a hidden layer, 1–3 input channels):
  forward, every parameter's gradient and dx, one SGD and one Adam update; each layer's output
  shape and the parameter count.
- One-block models are what they were (weights bit for bit).
- Designs that cannot work are refused with the block and the formula, in Spanish and English,
  on the page, the API and the design twin; the twin's numbers are the model's.
- A two-block model trains through /api/train, saves, and loads back into /train.
"""

from __future__ import annotations

import hashlib
import io
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnnlab.app.jobs import TrainSpec, build_model
from cnnlab.app.jobs.spec import MAX_PARAMS, worker_job
from cnnlab.core.layers import Activation, Conv2D, Dense, Flatten, Pool2D
from cnnlab.core.losses import cross_entropy
from cnnlab.core.model import Sequential, tiny_cnn
from cnnlab.core.optim import SGD, Adam
from cnnlab.core.receptive import layer_fields
from tests.test_train_api import start, wait_done


def block(filters, kernel, padding, stride, pool, pool_size):
    return {"filters": filters, "kernel": kernel, "padding": padding, "stride": stride, "pool": pool,
            "pool_size": pool_size}


# (input_shape, tiny_cnn keyword arguments): together every option of a block.
DESIGNS = [
    ((1, 12, 12), dict(filters=4, kernel=3, padding=1, pool="max", pool_size=2, activation="relu",
                       blocks=[block(5, 3, 1, 1, "max", 2)])),
    ((2, 11, 11), dict(filters=3, kernel=2, padding=0, pool="avg", pool_size=2, activation="tanh", hidden=7,
                       blocks=[block(4, 3, 2, 2, "avg", 1), block(3, 1, 0, 1, "max", 2)])),
    ((1, 13, 13), dict(filters=3, kernel=5, padding=2, stride=2, pool="max", pool_size=1, activation="sigmoid",
                       blocks=[block(4, 3, 1, 1, "avg", 2)])),
    ((3, 9, 9), dict(filters=4, kernel=3, padding=3, stride=3, pool="max", pool_size=2, activation="leaky_relu",
                     hidden=5, blocks=[block(2, 2, 1, 1, "max", 1)])),
    ((1, 16, 16), dict(filters=2, kernel=7, padding=3, pool="max", pool_size=4, activation="relu", hidden=6,
                       blocks=[block(3, 6, 1, 1, "avg", 1)])),
    ((1, 14, 14), dict(filters=3, kernel=3, padding=1, pool="max", pool_size=2, activation="tanh",
                       blocks=[block(4, 3, 0, 1, "max", 3), block(2, 1, 1, 1, "avg", 2)])),
    ((2, 12, 12), dict(filters=3, kernel=4, padding=1, stride=2, pool="avg", pool_size=3, activation="leaky_relu",
                       blocks=[block(5, 2, 0, 1, "max", 1)])),
    ((1, 10, 10), dict(filters=2, kernel=1, padding=0, pool="avg", pool_size=2, activation="sigmoid", hidden=4,
                       blocks=[block(3, 5, 2, 3, "max", 2), block(2, 3, 1, 2, "avg", 1)])),
]
CLASSES = 4


def test_the_designs_use_every_block_option():
    blocks = [dict(filters=kw["filters"], kernel=kw["kernel"], padding=kw["padding"], stride=kw.get("stride", 1),
                   pool=kw["pool"], pool_size=kw["pool_size"]) for _shape, kw in DESIGNS]
    blocks += [b for _shape, kw in DESIGNS for b in kw["blocks"]]
    assert {b["kernel"] for b in blocks} == set(range(1, 8))
    assert {b["padding"] for b in blocks} == set(range(4))
    assert {b["stride"] for b in blocks} == {1, 2, 3}
    assert {b["pool_size"] for b in blocks} == {1, 2, 3, 4} and {b["pool"] for b in blocks} == {"max", "avg"}
    assert {kw["activation"] for _s, kw in DESIGNS} == {"relu", "sigmoid", "tanh", "leaky_relu"}
    assert {bool(kw.get("hidden")) for _s, kw in DESIGNS} == {True, False}
    assert {len(kw["blocks"]) + 1 for _s, kw in DESIGNS} == {2, 3}


def engine_model(shape, kw, seed):
    model = tiny_cnn(input_shape=shape, classes=CLASSES, seed=seed, **kw).astype(np.float64)
    rng = np.random.default_rng(seed + 100)
    for name, p, _g in model.parameters():  # the biases start at 0: give them values
        if name.endswith(".b"):
            p[...] = rng.normal(0, 0.3, p.shape)
    return model


def torch_forward(model, x, params):
    """The model's layers as PyTorch functions on ``params`` (name → tensor); every layer's output."""
    h, outs = x, []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Conv2D):
            h = TF.conv2d(h, params[f"{i}.w"], params[f"{i}.b"], stride=layer.stride, padding=layer.padding)
        elif isinstance(layer, Activation):
            h = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
                 "leaky_relu": lambda t, a=layer.alpha: TF.leaky_relu(t, a)}[layer.name](h)
        elif isinstance(layer, Pool2D):
            pool = TF.max_pool2d if layer.kind == "max" else TF.avg_pool2d
            h = pool(h, layer.size, layer.stride or layer.size)
        elif isinstance(layer, Flatten):
            h = h.reshape(len(h), -1)
        elif isinstance(layer, Dense):
            h = h @ params[f"{i}.w"] + params[f"{i}.b"]
        else:
            raise AssertionError(layer)
        outs.append(h)
    return outs


def close(a, b, what):
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11, err_msg=what)


@pytest.mark.parametrize("n", range(len(DESIGNS)))
def test_forward_backward_and_updates_match_pytorch(n):
    shape, kw = DESIGNS[n]
    model = engine_model(shape, kw, seed=n)
    rng = np.random.default_rng(n)
    x = rng.normal(size=(5, *shape))
    y = rng.integers(0, CLASSES, 5)

    params = {name: torch.tensor(p.copy(), requires_grad=True) for name, p, _g in model.parameters()}
    xt = torch.tensor(x, requires_grad=True)
    outs = torch_forward(model, xt, params)

    # shapes and parameter counts
    assert [tuple(o.shape[1:]) for o in outs] == model.output_shapes()
    assert model.n_params == sum(p.numel() for p in params.values())
    assert [layer.n_params for layer in model.layers] == [
        sum(params[k].numel() for k in params if k.split(".")[0] == str(i)) for i in range(len(model.layers))]

    # forward: every layer's output, then the logits of the training pass
    for i, (mine, theirs) in enumerate(zip(model.activations(x), outs)):
        close(mine, theirs, f"layer {i} ({model.layers[i].describe()})")
    logits = model.forward(x, train=True)
    close(logits, outs[-1], "logits")

    # backward: every parameter's gradient and dx
    loss, dlogits = cross_entropy(logits, y)
    dx = model.backward(dlogits, need_dx=True)
    torch_loss = TF.cross_entropy(outs[-1], torch.tensor(y))
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), rel=1e-12)
    for name, _p, g in model.parameters():
        close(g, params[name].grad, f"gradient of {name}")
    close(dx, xt.grad, "dx")

    # one update of each optimizer, from the same start
    for make_engine, make_torch in ((lambda: SGD(lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
                                    (lambda: Adam(lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-8))):
        mine = engine_model(shape, kw, seed=n)
        mine.forward(x)
        mine.backward(cross_entropy(mine.forward(x), y)[1], need_dx=False)
        make_engine().step(mine.parameters())
        theirs = {name: torch.tensor(p.copy(), requires_grad=True)
                  for name, p, _g in engine_model(shape, kw, seed=n).parameters()}
        optimizer = make_torch(list(theirs.values()))
        TF.cross_entropy(torch_forward(model, torch.tensor(x), theirs)[-1], torch.tensor(y)).backward()
        optimizer.step()
        for name, p, _g in mine.parameters():
            close(p, theirs[name], f"{type(optimizer).__name__} update of {name}")


def test_one_block_models_are_unchanged_bit_for_bit():
    """Hashes of the weights tiny_cnn drew before blocks existed (same arguments, same seed)."""
    def digest(**kw):
        return hashlib.sha256(tiny_cnn(**kw).flat_params.tobytes()).hexdigest()[:16]

    assert digest(input_shape=(1, 8, 8)) == "60aa76fada91e44a"
    assert digest(input_shape=(1, 28, 28), filters=8, hidden=32) == "9236fc427f60c6e3"
    assert digest(input_shape=(1, 28, 28), pool_size=1, activation="tanh", seed=3) == "041bf04d2d838724"
    spec = build_model(TrainSpec()).spec()
    assert [s["type"] for s in spec["layers"]] == ["Conv2D", "Activation", "Pool2D", "Flatten", "Dense"]
    assert worker_job(TrainSpec())["model"]["blocks"] == [] and worker_job(TrainSpec())["model"]["stride"] == 1


def test_a_deeper_model_saves_and_loads_with_its_blocks():
    shape, kw = DESIGNS[1]
    model = tiny_cnn(input_shape=shape, classes=CLASSES, seed=4, **kw)
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    again = Sequential.load(buffer)
    assert again.spec() == model.spec() and np.array_equal(again.flat_params, model.flat_params)
    assert again.config["blocks"] == kw["blocks"] and again.config["stride"] == 1
    # the saved config rebuilds the same model
    config = {k: v for k, v in again.config.items()}
    assert tiny_cnn(**{**config, "input_shape": tuple(config["input_shape"])}).spec() == model.spec()


SPECS = [
    dict(dataset="mnist", blocks=2, filters=8, kernel=5, padding=2, filters2=16, kernel2=3, padding2=1, hidden=64),
    dict(dataset="digits", blocks=3, filters=8, stride=1, kernel2=2, padding2=0, pool2="avg", pool_size2=1,
         kernel3=3, stride3=2, pool_size3=1, hidden=20, activation="tanh"),
    dict(dataset="mnist", blocks=3, filters=4, kernel=3, stride=2, padding=1, pool_size=1, filters2=6, kernel2=4,
         padding2=2, stride2=3, pool2="avg", pool_size2=2, filters3=32, kernel3=1, padding3=0, pool3="max",
         pool_size3=2),
]


@pytest.mark.parametrize("fields", SPECS)
def test_the_spec_the_model_and_the_design_twin_agree(client, fields):
    spec = TrainSpec(**fields)
    model = build_model(spec)
    shapes = model.output_shapes()
    flatten = next(i for i, layer in enumerate(model.layers) if isinstance(layer, Flatten))
    assert spec.output_shapes()[-1] == shapes[flatten - 1]  # the map the dense layers see
    assert spec.n_params() == model.n_params
    assert len([layer for layer in model.layers if isinstance(layer, Conv2D)]) == spec.blocks
    assert tiny_cnn(input_shape=model.input_shape, classes=10, **worker_job(spec)["model"]).spec() == model.spec()

    body = client.get("/api/train/design", params={**fields, "lang": "en"})
    assert body.status_code == 200, body.text
    design = body.json()
    assert design["total"] == model.n_params == sum(row["params"] for row in design["layers"])
    assert [tuple(row["shape"]) for row in design["layers"]] == shapes
    for row, layer in zip(design["layers"], model.layers):
        if isinstance(layer, Conv2D):
            assert row["params_formula"] == (f"(k·k·C + 1)·F = ({layer.k}·{layer.k}·{layer.C} + 1)·{layer.F} = "
                                             f"{layer.n_params:,}".replace(",", "\u202f"))
        elif isinstance(layer, Dense):
            D, U = layer.params["w"].shape
            numbers = [int(t.replace("\u202f", "")) for t in re.findall(r"[\d\u202f]+\d|\d",
                                                                              row["params_formula"].split(" = ", 1)[1])]
            assert numbers == [D, 1, U, (D + 1) * U]
        else:
            assert row["params"] == 0 and row["params_formula"] is None
        if isinstance(layer, (Conv2D, Pool2D)):  # the side's formula ends with the side
            assert row["shape_formula"].endswith(f"= {row['shape'][1]}")
    last_conv = max(i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2D))
    field = design["receptive_field"]
    assert field["layer"] == last_conv
    assert field["size"] == layer_fields(model)[last_conv].size and field["jump"] == layer_fields(model)[last_conv].jump
    for step in field["steps"]:
        assert step["r"] == step["r_prev"] + (step["k"] - 1) * step["j_prev"] and step["j"] == step["j_prev"] * step["s"]
        assert step["r_formula"] == f"{step['r_prev']} + ({step['k']} − 1)·{step['j_prev']} = {step['r']}"

    # the page shows the same table, and the setup is in its URL
    page = client.get("/train", params={**fields, "lang": "en"}, headers={"HX-Request": "true",
                                                                           "HX-Target": "train-summary"})
    assert page.status_code == 200
    from pagecheck import soup, text

    table = soup(page)
    assert table.select_one("#train-n-params")["data-n"] == str(model.n_params)
    rows = table.select(".train-layers tbody tr")[1:]
    assert [text(tr.select("td")[1]) for tr in rows] == ["×".join(map(str, s)) for s in shapes]
    assert f"{field['size']}×{field['size']}" in text(table.select_one("#train-receptive"))
    assert f"blocks={spec.blocks}" in page.headers["hx-push-url"]


BAD = [
    # (fields, Spanish, English)
    (dict(dataset="digits", blocks=3, kernel2=7, padding2=0),
     "Bloque 2: el kernel de 7×7 (stride 1, relleno 0) no cabe en el mapa de 4×4 que recibe: el tamaño de salida "
     "sería ⌊(4 + 0 − 1·(7 − 1) − 1)/1⌋ + 1 = −2.",
     "Block 2: the 7×7 kernel (stride 1, padding 0) does not fit the 4×4 map it gets: the output size would be "
     "⌊(4 + 0 − 1·(7 − 1) − 1)/1⌋ + 1 = −2."),
    (dict(dataset="digits", blocks=3, pool_size3=4),
     "Bloque 3: la ventana de pooling de 4×4 no cabe en el mapa de características de 2×2 que deja su convolución: "
     "el tamaño de salida sería ⌊(2 + 0 − 1·(4 − 1) − 1)/4⌋ + 1 = 0.",
     "Block 3: the 4×4 pooling window does not fit the 2×2 feature map left by its convolution: the output size "
     "would be ⌊(2 + 0 − 1·(4 − 1) − 1)/4⌋ + 1 = 0."),
    (dict(dataset="mnist", stride=3, kernel=7, padding=0, pool_size=4, blocks=2, kernel2=3, padding2=0),
     "Bloque 2: el kernel de 3×3 (stride 1, relleno 0) no cabe en el mapa de 2×2 que recibe",
     "Block 2: the 3×3 kernel (stride 1, padding 0) does not fit the 2×2 map it gets"),
    (dict(dataset="mnist", blocks=2, kernel=1, padding=3, pool_size=1, filters2=32, kernel2=1, padding2=3,
          pool_size2=1, hidden=128),
     # (1·1·1 + 1)·8 + (1·1·8 + 1)·32 + (32·40·40 + 1)·128 + (128 + 1)·10 = 6 555 322
     f"Esta red tendría 6\u202f555\u202f322 parámetros; este laboratorio entrena como máximo "
     f"{MAX_PARAMS:,}".replace(",", "\u202f"),
     "This network would have 6\u202f555\u202f322 parameters"),
]


@pytest.mark.parametrize(("fields", "es", "en"), BAD)
def test_a_design_that_cannot_work_is_refused_with_the_block_and_the_formula(client, fields, es, en):
    with pytest.raises(ValueError):
        TrainSpec(**fields)
    for lang, message in (("es", es), ("en", en)):
        started = client.post(f"/api/train?lang={lang}", json=fields)
        assert started.status_code == 422 and message in started.text, started.text
        twin = client.get("/api/train/design", params={**fields, "lang": lang})
        assert twin.status_code == 422 and twin.json()["detail"].startswith(message), twin.text
        page = client.get("/train", params={**fields, "lang": lang})
        assert page.status_code in (200, 422)
        from pagecheck import soup, text

        assert " ".join(message.split()) in text(soup(page).select_one(".train-problems"))


def test_the_parameter_cap_is_the_largest_one_block_network():
    """Deeper designs are held to the largest one-block network's parameters, so the saved-model
    size limit (app/budget.py, worked out from that network) holds for them too."""
    from cnnlab.app.budget import largest_model_spec

    assert MAX_PARAMS == largest_model_spec().n_params() == build_model(largest_model_spec()).n_params


def test_a_block_value_out_of_range_is_refused_by_name(client):
    twin = client.get("/api/train/design", params={"filters3": 40, "lang": "en"})
    assert twin.status_code == 422 and "Filters (block 3)" in twin.json()["detail"]
    assert client.get("/api/train/design", params={"blocks": "4", "lang": "es"}).json()["detail"] == \
        "Bloques convolucionales debe estar entre 1 y 3."
    assert client.get("/api/train/design", params={"pool2": "min"}).status_code == 422
    # one block: blocks 2 and 3 are checked but not used
    assert client.get("/api/train/design", params={"kernel2": 7}).json()["total"] == build_model(TrainSpec()).n_params


def test_the_form_shows_the_chosen_blocks_fields(client):
    from pagecheck import soup

    page = soup(client.get("/train?blocks=2&filters2=6&lang=en"))
    assert page.select_one("select[name=blocks] option[selected]")["value"] == "2"
    shown = {fs["data-block"]: fs.has_attr("hidden") for fs in page.select(".train-block")}
    assert shown == {"1": False, "2": False, "3": True}
    assert page.select_one("#train-filters2")["value"] == "6" and page.select_one("#train-stride")["max"] == "3"


def test_a_two_block_model_trains_saves_and_loads_back(client):
    fields = dict(dataset="digits", blocks=2, filters=8, filters2=12, kernel2=3, padding2=1, pool_size2=2,
                  epochs=2, lr=0.01)
    job = start(client, **fields)
    done = wait_done(client, job)
    assert done["status"] == "done", done
    assert done["metrics"]["test_accuracy"] > 0.6 and done["metrics"]["n_params"] == build_model(TrainSpec(**fields)).n_params
    saved = client.get(f"/api/train/{job}/weights.npz")
    assert saved.status_code == 200
    loaded = client.post("/api/train/load", files={"file": ("model.npz", saved.content)})
    assert loaded.status_code == 201, loaded.text
    again = client.get(f"/api/train/{loaded.json()['id']}", params={"records": False}).json()
    assert again["spec"]["blocks"] == 2 and again["spec"]["filters2"] == 12
    assert again["metrics"]["test_accuracy"] == pytest.approx(done["metrics"]["test_accuracy"])
    # a file with only the architecture (no saved TrainSpec) rebuilds the blocks from the model's config
    with np.load(io.BytesIO(saved.content)) as npz:
        arrays = {name: npz[name] for name in npz.files if name != "__trainspec__"}
    bare = io.BytesIO()
    np.savez(bare, **arrays)
    loaded = client.post("/api/train/load", files={"file": ("model.npz", bare.getvalue())})
    assert loaded.status_code == 201, loaded.text
    assert client.get(f"/api/train/{loaded.json()['id']}", params={"records": False}).json()["spec"]["blocks"] == 2


def test_the_run_notebook_rebuilds_a_three_block_forward_pass_in_numpy():
    """The /train run notebook (app/notebooks/train.py) recomputes the forward pass layer by
    layer in plain NumPy; for a 3-block model with a stride, a block without pooling and
    average pooling, its last cell asserts NumPy's and the engine's numbers agree."""
    from notebookrun import in_process

    from cnnlab.app.notebooks.train import model_notebook

    spec = TrainSpec(dataset="digits", blocks=3, filters=8, kernel2=2, padding2=0, pool2="avg", pool_size2=1,
                     stride3=2, kernel3=3, hidden=12, activation="tanh")
    model = build_model(spec)
    rng = np.random.default_rng(3)
    for _name, p, _g in model.parameters():
        p += rng.normal(0, 0.1, p.shape).astype(p.dtype)
    namespace = in_process(model_notebook(model, "digits", "/train"))
    assert namespace["n_params_numpy"] == model.n_params
    assert namespace["logits_numpy"].shape == (len(namespace["y_test"]), 10)
