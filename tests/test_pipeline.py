"""core.pipeline: the numbers of /pipeline, recomputed here independently.

The forward pass, softmax, cross-entropy, ∂L/∂w for one weight (also by a central
difference of the loss) and both updates (SGD, Adam at t = 1) are written out in plain
NumPy/Python below, without calling the engine's code paths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnlab.core import pipeline
from cnnlab.core.datasets import load


def plain_forward(x, w, b, dense_w, dense_b):
    """conv (padding 1) → ReLU → max pool 2 → dense, four loops at a time: logits (10,)."""
    F = w.shape[0]
    H, W = x.shape[1:]
    xp = np.zeros((H + 2, W + 2))
    xp[1:-1, 1:-1] = x[0]
    out = np.zeros((F, H, W))
    for f in range(F):
        for r in range(H):
            for c in range(W):
                out[f, r, c] = sum(xp[r + i, c + j] * w[f, 0, i, j] for i in range(3) for j in range(3)) + b[f]
    a = np.where(out > 0, out, 0.0)
    pooled = np.array([[[max(a[f, 2 * r + i, 2 * c + j] for i in range(2) for j in range(2))
                         for c in range(W // 2)] for r in range(H // 2)] for f in range(F)])
    h = pooled.reshape(-1)
    z = [sum(h[i] * dense_w[i, k] for i in range(len(h))) + dense_b[k] for k in range(dense_w.shape[1])]
    return out, a, pooled, np.array(z)


def plain_loss(z, target):
    exps = [math.exp(v) for v in z]
    q = [e / sum(exps) for e in exps]
    return -math.log(q[target]), q


@pytest.fixture(scope="module")
def weights():
    return pipeline.pretrained_weights()


@pytest.fixture(scope="module")
def run(weights):
    x, label = pipeline.digit_image(4)
    return pipeline.run(x, label)


def test_the_trained_weights_are_rounded_and_classify_held_out_digits(weights):
    for a in (weights.w, weights.b, weights.dense_w, weights.dense_b):
        assert np.array_equal(a, np.round(a, 2))
    assert weights.w.shape == (3, 1, 3, 3) and weights.dense_w.shape == (48, 10)
    ds = load("digits")
    right = sum(int(np.argmax(plain_forward(ds.x_test[n].astype(np.float64), weights.w, weights.b,
                                             weights.dense_w, weights.dense_b)[3]) == ds.y_test[n])
                for n in range(60))
    assert right >= 50
    assert weights.test_accuracy > 0.85
    assert pipeline.pretrained_weights() is weights  # trained once per process


def test_every_intermediate_matches_a_plain_forward_pass(run, weights):
    out, a, pooled, z = plain_forward(run.x, weights.w, weights.b, weights.dense_w, weights.dense_b)
    np.testing.assert_allclose(run.out, out, atol=1e-12)
    np.testing.assert_allclose(run.a, a, atol=1e-12)
    np.testing.assert_allclose(run.pooled, pooled, atol=1e-12)
    np.testing.assert_allclose(run.h, pooled.reshape(-1), atol=1e-12)
    np.testing.assert_allclose(run.z, z, atol=1e-12)


def test_softmax_and_cross_entropy_recomputed_by_hand(run):
    loss, q = plain_loss(list(run.z), run.target)
    np.testing.assert_allclose(run.q, q, rtol=1e-12)
    assert run.loss == pytest.approx(loss, rel=1e-12)
    assert run.target == 9 and run.predicted == 9
    # Another true class: the loss is −log of that class's probability.
    other = pipeline.run(run.x, 3)
    assert other.loss == pytest.approx(-math.log(q[3]), rel=1e-12)
    assert other.loss > run.loss


def test_the_explanations_write_the_same_numbers(run):
    conv = pipeline.explain_conv(run, 0, 2, 3)
    assert conv.value == pytest.approx(run.out[0, 2, 3], abs=1e-12)
    assert conv.text.endswith(f"= {pipeline.format_number(run.out[0, 2, 3])}")
    assert conv.text.count("·") == 9
    relu = pipeline.explain_relu(run, 0, 3, 0)
    assert relu.startswith("max(0, −") and relu.endswith("= 0")  # out[0, 3, 0] is negative
    pool = pipeline.explain_pool(run, 0, 1, 1)
    assert pool.value == max(run.a[0, 2:4, 2:4].reshape(-1)) and pool.text.startswith("max(")
    logit = pipeline.explain_logit(run, 9)
    assert len(logit.shown) == pipeline.LOGIT_TERMS_SHOWN and "…" in logit.text
    assert math.fsum(t[3] for t in logit.shown) + logit.rest + logit.bias == pytest.approx(run.z[9], abs=1e-12)
    prob = pipeline.explain_prob(run, 9)
    assert prob.exps[9] / prob.total == pytest.approx(run.q[9], rel=1e-12)
    assert prob.text.startswith("e^") and prob.text.endswith(pipeline.format_number(run.q[9]))
    loss = pipeline.explain_loss(run)
    assert loss.loss == pytest.approx(run.loss, rel=1e-12)
    assert loss.text.startswith("−(0·ln") and "1·ln" in loss.text


def _loss_with(weights, x, target, f, i, j, delta):
    w = np.array(weights.w)
    w[f, 0, i, j] += delta
    return plain_loss(list(plain_forward(x, w, weights.b, weights.dense_w, weights.dense_b)[3]), target)[0]


@pytest.mark.parametrize("f, i, j", [(0, 1, 1), (1, 0, 2), (2, 2, 0)])
def test_weight_gradient_is_the_sum_over_positions_and_matches_a_central_difference(run, weights, f, i, j):
    g = pipeline.weight_gradient(run, f, 0, i, j)
    # By hand: dL/dz = q − p, back through the dense layer, the max pool, the ReLU, then the
    # sum over every output position of dL/dout · the input under the weight there.
    _out, a, _pooled, z = plain_forward(run.x, weights.w, weights.b, weights.dense_w, weights.dense_b)
    _loss, q = plain_loss(list(z), run.target)
    dz = np.array(q) - np.eye(10)[run.target]
    dpooled = (weights.dense_w @ dz).reshape(3, 4, 4)
    dout = np.zeros((3, 8, 8))
    for r in range(4):
        for c in range(4):
            window = a[f, 2 * r:2 * r + 2, 2 * c:2 * c + 2]
            wi, wj = divmod(int(np.argmax(window)), 2)
            if window[wi, wj] > 0:
                dout[f, 2 * r + wi, 2 * c + wj] = dpooled[f, r, c]
    xp = np.pad(run.x[0], 1)
    by_hand = sum(dout[f, r, c] * xp[r + i, c + j] for r in range(8) for c in range(8))
    assert g.value == pytest.approx(by_hand, abs=1e-12)
    assert g.value == pytest.approx(run.dw[f, 0, i, j], abs=1e-12)
    assert len(g.terms) == 64
    assert math.fsum(t.product for t in g.nonzero) == pytest.approx(g.value, abs=1e-15)
    assert g.text.endswith(f"= {pipeline.format_number(g.value)}")
    eps = 1e-6
    numeric = (_loss_with(weights, run.x, run.target, f, i, j, eps)
               - _loss_with(weights, run.x, run.target, f, i, j, -eps)) / (2 * eps)
    assert g.value == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_sgd_and_adam_first_steps_written_out_by_hand(run):
    f, i, j, lr = 0, 1, 1, 0.1
    sgd, adam = pipeline.updates(run, f, 0, i, j, lr)
    g = float(run.dw[f, 0, i, j])
    w = float(run.weights.w[f, 0, i, j])
    assert sgd["g"] == g and sgd["old"] == w
    assert sgd["new"] == pytest.approx(w - lr * g, rel=1e-12)
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = (1 - b1) * g
    v = (1 - b2) * g * g
    m_hat = m / (1 - b1 ** 1)
    v_hat = v / (1 - b2 ** 1)
    step = lr * m_hat / (math.sqrt(v_hat) + eps)
    assert adam["t"] == 1
    assert adam["m"] == pytest.approx(m, rel=1e-12)
    assert adam["v"] == pytest.approx(v, rel=1e-12)
    assert adam["m_hat"] == pytest.approx(m_hat, rel=1e-12)
    assert adam["v_hat"] == pytest.approx(v_hat, rel=1e-12)
    assert adam["step"] == pytest.approx(step, rel=1e-9)
    assert adam["new"] == pytest.approx(w - step, rel=1e-9)
    # At t = 1 Adam's step is about lr whatever g is.
    assert abs(adam["step"]) == pytest.approx(lr, rel=1e-6)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="index"):
        pipeline.digit_image(10_000)
    x, _label = pipeline.digit_image(0)
    with pytest.raises(ValueError, match="target"):
        pipeline.run(x, 10)
    with pytest.raises(ValueError, match="outside"):
        pipeline.weight_gradient(pipeline.run(x, 0), 3, 0, 0, 0)
