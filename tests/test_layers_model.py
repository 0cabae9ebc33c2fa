"""Layers and the Sequential model: gradients by central differences (float64), shapes,
seeded initialisation, parameter names and counts, save/load."""

import io
import json

import numpy as np
import pytest

from cnnlab.core.layers import Activation, Conv2D, Dense, Flatten, Pool2D, layer_from_spec
from cnnlab.core.losses import cross_entropy
from cnnlab.core.model import Sequential, load_model, tiny_cnn
from gradcheck import check_gradient


def check_layer(layer, x, what):
    """Gradient of sum(out · upstream) w.r.t. x and every parameter."""
    rng = np.random.default_rng(0)
    layer.astype(np.float64)
    upstream = rng.standard_normal(layer.forward(x).shape)
    dx = layer.backward(upstream)

    def out():
        return layer.forward(x, train=False)

    check_gradient(dx, out, x, f"{what}: dx", dout=upstream)
    for name, p in layer.params.items():
        check_gradient(layer.grads[name], out, p, f"{what}: d{name} {p.shape}", dout=upstream)


# ---------------------------------------------------------------------------
# Layers one by one
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("N,D_in,D_out", [(1, 1, 1), (4, 6, 3), (3, 10, 7)])
def test_dense_gradients(N, D_in, D_out):
    rng = np.random.default_rng(N * 100 + D_in)
    layer = Dense(D_in, D_out, rng=rng)
    layer.params["b"][...] = rng.standard_normal(D_out)
    check_layer(layer, rng.standard_normal((N, D_in)), f"Dense({D_in}, {D_out}) N={N}")


@pytest.mark.parametrize("N,D_in,D_out", [(64, 1568, 10), (200, 3136, 10), (64, 1568, 64)])
def test_dense_at_training_sizes_matches_plain_products(N, D_in, D_out):
    """Sizes where Dense cuts its products into row blocks (see core.layers._matmul)."""
    rng = np.random.default_rng(6)
    layer = Dense(D_in, D_out, rng=rng)
    layer.params["b"][...] = rng.standard_normal(D_out)
    x = rng.random((N, D_in), dtype=np.float32)
    dout = rng.standard_normal((N, D_out)).astype(np.float32)
    out = layer.forward(x)
    dx = layer.backward(dout)
    w, b = layer.params["w"].astype(np.float64), layer.params["b"].astype(np.float64)
    x64, d64 = x.astype(np.float64), dout.astype(np.float64)
    what = f"Dense({D_in}, {D_out}) on N={N}"
    assert out.dtype == dx.dtype == np.float32, what
    np.testing.assert_allclose(out, x64 @ w + b, rtol=1e-4, atol=1e-4, err_msg=what)
    np.testing.assert_allclose(dx, d64 @ w.T, rtol=1e-4, atol=1e-4, err_msg=what)
    np.testing.assert_allclose(layer.grads["w"], x64.T @ d64, rtol=1e-4, atol=1e-3, err_msg=what)
    np.testing.assert_allclose(layer.grads["b"], d64.sum(axis=0), rtol=1e-4, atol=1e-4, err_msg=what)


def test_flatten_gradient_and_shapes():
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    layer = Flatten()
    out = layer.forward(x)
    assert out.shape == (2, 60) and np.shares_memory(out, x)
    assert layer.output_shape((3, 4, 5)) == (60,)
    check_layer(layer, x, "Flatten")


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "leaky_relu"])
def test_activation_layer_gradient(name):
    x = np.random.default_rng(2).standard_normal((2, 3, 4))
    x[np.abs(x) < 1e-3] = 0.3
    check_layer(Activation(name), x, f"Activation({name})")


@pytest.mark.parametrize("C,F,k,stride,padding,dilation,H,W", [
    (1, 2, 3, 1, 1, 1, 5, 5),
    (2, 3, 3, 2, 0, 1, 7, 6),
    (2, 2, 2, 1, "same", 1, 5, 4),
    (1, 2, 3, 1, 2, 2, 6, 6),
])
def test_conv2d_layer_wires_conv_forward_backward(C, F, k, stride, padding, dilation, H, W):
    rng = np.random.default_rng(3)
    layer = Conv2D(C, F, k, stride=stride, padding=padding, dilation=dilation, rng=rng)
    layer.params["b"][...] = rng.standard_normal(F)
    x = rng.standard_normal((2, C, H, W))
    what = f"Conv2D(C={C}, F={F}, k={k}, stride={stride}, padding={padding}, dilation={dilation}) on {x.shape}"
    assert layer.forward(x).shape[1:] == layer.output_shape((C, H, W)), what
    check_layer(layer, x, what)


@pytest.mark.parametrize("kind,size,stride", [("max", 2, None), ("avg", 2, 1), ("max", 3, 2), ("global_avg", 2, None)])
def test_pool2d_layer_wires_pool_forward_backward(kind, size, stride):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 6, 7))
    layer = Pool2D(kind, size, stride)
    assert layer.forward(x).shape[1:] == layer.output_shape((3, 6, 7))
    assert layer.n_params == 0 and layer.params == {}
    check_layer(layer, x, f"Pool2D({kind}, size={size}, stride={stride}) on {x.shape}")


def test_backward_stores_grads_and_never_changes_params():
    rng = np.random.default_rng(5)
    layer = Dense(4, 3, rng=rng)
    before = {n: p.copy() for n, p in layer.params.items()}
    layer.forward(rng.standard_normal((2, 4)).astype(np.float32))
    layer.backward(np.ones((2, 3), dtype=np.float32))
    assert all(np.array_equal(before[n], p) for n, p in layer.params.items())
    assert layer.grads["b"].tolist() == [2.0, 2.0, 2.0]


def test_backward_without_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match="forward"):
        Dense(2, 2, rng=np.random.default_rng(0)).backward(np.ones((1, 2)))
    layer = Activation("relu")
    layer.forward(np.ones((1, 2)), train=False)      # evaluation keeps no cache
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((1, 2)))


def test_wrong_input_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="3 input channels"):
        Conv2D(3, 4, 3, rng=np.random.default_rng(0)).forward(np.zeros((1, 1, 5, 5), np.float32))
    with pytest.raises(ValueError, match="Flatten"):
        Dense(8, 2, rng=np.random.default_rng(0)).forward(np.zeros((1, 2, 2, 2), np.float32))
    with pytest.raises(ValueError):
        Pool2D("median")


def test_he_init_scale_and_zero_bias():
    conv = Conv2D(16, 64, 3, rng=np.random.default_rng(0))
    dense = Dense(800, 200, rng=np.random.default_rng(0))
    assert conv.params["w"].std() == pytest.approx(np.sqrt(2 / (16 * 9)), rel=0.03)
    assert dense.params["w"].std() == pytest.approx(np.sqrt(2 / 800), rel=0.03)
    assert abs(dense.params["w"].mean()) < 0.01 * np.sqrt(2 / 800) * 10
    for layer in (conv, dense):
        assert layer.params["w"].dtype == np.float32 and not layer.params["b"].any()
        assert layer.n_params == sum(p.size for p in layer.params.values())


def test_layer_spec_roundtrip():
    rng = np.random.default_rng(0)
    for layer in [Conv2D(2, 4, 3, stride=2, padding="same", dilation=1, rng=rng), Pool2D("avg", 3, 2),
                  Activation("leaky_relu", alpha=0.2), Flatten(), Dense(5, 6, rng=rng)]:
        spec = json.loads(json.dumps(layer.spec()))
        again = layer_from_spec(spec, np.random.default_rng(1))
        assert again.spec() == layer.spec() and type(again) is type(layer)


# ---------------------------------------------------------------------------
# The whole model
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("pool,activation,hidden", [("max", "relu", 5), ("avg", "tanh", 0)])
def test_sequential_end_to_end_gradient(pool, activation, hidden):
    model = tiny_cnn(input_shape=(2, 6, 6), filters=3, kernel=3, padding=1, pool=pool, pool_size=2,
                     hidden=hidden, activation=activation, classes=4, seed=7).astype(np.float64)
    rng = np.random.default_rng(8)
    for _, p, _ in model.parameters():
        p += rng.standard_normal(p.shape) * 0.1      # non-zero biases too
    x = rng.standard_normal((3, 2, 6, 6))
    y = np.array([0, 3, 1])

    loss, dlogits = cross_entropy(model.forward(x), y)
    dx = model.backward(dlogits)

    def f():
        return cross_entropy(model.forward(x, train=False), y)[0]

    what = f"{model!r} ({pool}, {activation}, hidden={hidden}) on x {x.shape}"
    check_gradient(dx, f, x, f"{what}: dx")
    for name, p, g in model.parameters():
        check_gradient(g, f, p, f"{what}: d{name} {p.shape}")


def test_relu_then_max_pool_computed_pool_first_gives_the_same_numbers():
    """Sequential runs relu → max-pool as pool → relu (cheaper); outputs and gradients must
    be bit for bit those of the declared order, including windows that are all ≤ 0."""
    model = tiny_cnn(input_shape=(1, 8, 8), filters=4, seed=3)
    assert model._execution_order() == [0, 2, 1, 3, 4]
    model.layers[0].params["b"][:2] = -3.0          # two channels mostly ≤ 0: dead windows
    rng = np.random.default_rng(9)
    x = rng.random((6, 1, 8, 8), dtype=np.float32)
    x[0] = 0.0                                        # a blank image: every window ties
    y = rng.integers(0, 10, 6)

    logits = model.forward(x)
    _, dlogits = cross_entropy(logits, y)
    dx = model.backward(dlogits)
    fused = {name: g.copy() for name, _, g in model.parameters()}

    a = x
    for layer in model.layers:                        # declared order, by hand
        a = layer.forward(a)
    assert np.array_equal(a, logits)
    d = dlogits
    for layer in reversed(model.layers):
        d = layer.backward(d)
    assert np.array_equal(d, dx)
    for name, _, g in model.parameters():
        assert np.array_equal(g, fused[name]), name
    assert np.array_equal(model.activations(x)[-1], logits)


def test_tiny_cnn_layout_names_counts_and_shapes():
    model = tiny_cnn()
    assert [type(layer).__name__ for layer in model.layers] == ["Conv2D", "Activation", "Pool2D", "Flatten", "Dense"]
    names = [name for name, _, _ in model.parameters()]
    assert names == ["0.w", "0.b", "4.w", "4.b"]
    shapes = {name: p.shape for name, p, _ in model.parameters()}
    assert shapes == {"0.w": (8, 1, 3, 3), "0.b": (8,), "4.w": (8 * 14 * 14, 10), "4.b": (10,)}
    assert model.n_params == 8 * 9 + 8 + 1568 * 10 + 10
    rows = model.summary()
    assert [r["output_shape"] for r in rows] == [(8, 28, 28), (8, 28, 28), (8, 14, 14), (1568,), (10,)]
    assert [r["n_params"] for r in rows] == [80, 0, 0, 0, 15690]
    assert "15770" in model.summary_text()
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    logits = model.forward(x)
    assert logits.shape == (2, 10) and logits.dtype == np.float32
    model.backward(np.ones_like(logits))
    assert all(g.dtype == np.float32 for _, _, g in model.parameters())


def test_hidden_layer_and_output_shapes_follow_the_forward_pass():
    model = tiny_cnn(input_shape=(3, 9, 7), filters=4, kernel=5, padding=0, pool="avg", pool_size=2,
                     hidden=12, activation="sigmoid", classes=3)
    x = np.zeros((2, 3, 9, 7), dtype=np.float32)
    shapes = []
    for layer in model.layers:
        x = layer.forward(x)
        shapes.append(x.shape[1:])
    assert shapes == model.output_shapes()
    assert [name for name, _, _ in model.parameters()] == ["0.w", "0.b", "4.w", "4.b", "6.w", "6.b"]


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = tiny_cnn(seed=11, hidden=16), tiny_cnn(seed=11, hidden=16), tiny_cnn(seed=12, hidden=16)
    for (n, pa, _), (_, pb, _), (_, pc, _) in zip(a.parameters(), b.parameters(), c.parameters()):
        assert np.array_equal(pa, pb), n
        if n.endswith("w"):
            assert not np.array_equal(pa, pc), n


def test_parameters_are_views_of_the_flat_buffer():
    model = tiny_cnn(input_shape=(1, 8, 8))
    params = model.parameters()
    assert params is model.parameters()
    assert sum(p.size for _, p, _ in params) == model.flat_params.size == model.n_params
    model.flat_params[:] = 0.5
    assert all((p == 0.5).all() for _, p, _ in params)
    assert all(layer.params[k] is p for layer in model.layers for k, p in layer.params.items()
               if any(p is q for _, q, _ in params))


def test_predict_proba_rows_are_distributions():
    model = tiny_cnn(input_shape=(1, 8, 8))
    x = np.random.default_rng(0).random((7, 1, 8, 8), dtype=np.float32)
    proba = model.predict_proba(x, batch_size=3)
    assert proba.shape == (7, 10) and np.allclose(proba.sum(axis=1), 1, atol=1e-6)
    assert model.predict(x).tolist() == proba.argmax(axis=1).tolist()


@pytest.mark.parametrize("to_path", [True, False])
def test_save_load_roundtrip_gives_identical_predictions(tmp_path, to_path):
    model = tiny_cnn(input_shape=(1, 8, 8), hidden=6, activation="leaky_relu", seed=4)
    for _, p, _ in model.parameters():
        p += np.random.default_rng(1).standard_normal(p.shape).astype(np.float32)
    target = tmp_path / "model.npz" if to_path else io.BytesIO()
    model.save(target)
    if not to_path:
        target.seek(0)
    loaded = load_model(target) if to_path else Sequential.load(target)
    assert loaded.spec() == model.spec()
    for (n, p, _), (_, q, _) in zip(model.parameters(), loaded.parameters()):
        assert np.array_equal(p, q) and p.dtype == q.dtype, n
    x = np.random.default_rng(2).random((5, 1, 8, 8), dtype=np.float32)
    assert np.array_equal(model.predict_proba(x), loaded.predict_proba(x))


def test_loading_a_file_without_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, w=np.zeros(3))
    with pytest.raises(ValueError, match="architecture"):
        load_model(path)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_two_block_training_steps_match_pytorch(dtype):
    """Three training steps (forward, cross-entropy, backward, Adam) of a two-block CNN
    against torch.nn with the same weights: the tiled max pool, the dx of the second conv
    (computed as a convolution) and the rest of the step. Blank margins in the pictures make
    tied windows (every cell = the bias, or 0 after ReLU)."""
    import torch
    from cnnlab.core.optim import Adam
    rng = np.random.default_rng(14)
    layers = [Conv2D(1, 4, 3, padding=1, rng=rng), Activation("relu"), Pool2D("max", 2),
              Conv2D(4, 6, 3, padding=1, rng=rng), Activation("relu"), Pool2D("max", 2), Flatten(),
              Dense(6 * 3 * 3, 10, rng=rng)]
    model = Sequential(layers, input_shape=(1, 12, 12)).astype(dtype)
    x = np.zeros((5, 1, 12, 12), dtype)
    x[:, :, 3:9, 2:10] = rng.random((5, 1, 6, 8))
    y = rng.integers(0, 10, 5)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(54, 10)).to(torch.float64 if dtype == np.float64
                                                                          else torch.float32)
    pairs = [(layers[0], net[0]), (layers[3], net[3]), (layers[7], net[7])]
    with torch.no_grad():
        for layer, m in pairs:
            w = layer.params["w"]
            m.weight.copy_(torch.from_numpy(w.T.copy() if isinstance(layer, Dense) else w))
            m.bias.copy_(torch.from_numpy(layer.params["b"]))
    optimizer, torch_optimizer = Adam(lr=0.01), torch.optim.Adam(net.parameters(), lr=0.01)
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-6)
    for _ in range(3):
        loss, dlogits = cross_entropy(model.forward(x), y)
        model.backward(dlogits, need_dx=False)
        torch_optimizer.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        torch_loss.backward()
        np.testing.assert_allclose(loss, torch_loss.item(), **tol)
        for layer, m in pairs:
            gw = m.weight.grad.numpy()
            np.testing.assert_allclose(layer.grads["w"], gw.T if isinstance(layer, Dense) else gw, **tol,
                                       err_msg=layer.describe())
            np.testing.assert_allclose(layer.grads["b"], m.bias.grad.numpy(), **tol, err_msg=layer.describe())
        optimizer.step(model.parameters())
        torch_optimizer.step()
    for layer, m in pairs:
        w = m.weight.detach().numpy()
        np.testing.assert_allclose(layer.params["w"], w.T if isinstance(layer, Dense) else w, **tol)
