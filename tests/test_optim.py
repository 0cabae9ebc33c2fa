"""Each optimizer's first updates against its formula written out by hand (float64
Python arithmetic), and explain() reporting those same numbers."""

import math

import numpy as np
import pytest

from cnnlab.core.model import tiny_cnn
from cnnlab.core.optim import SGD, Adam, Momentum, make_optimizer

# Three different gradients for a 2×2 parameter, so each step of the recurrences matters.
W0 = [[0.5, -1.25], [2.0, 0.0]]
GRADS = [
    [[0.1, -0.2], [0.3, 0.0]],
    [[-0.4, 0.05], [0.3, 1.5]],
    [[0.2, 0.2], [-0.6, -0.01]],
]


def run(opt, dtype=np.float64):
    """Apply GRADS with ``opt`` to a fresh W0; return (params after each step, explain of [1, 0] each step)."""
    w = np.array(W0, dtype=dtype)
    g = np.zeros_like(w)
    history, explained = [], []
    for grad in GRADS:
        g[...] = grad
        opt.step([("w", w, g)])
        history.append(w.copy())
        explained.append(opt.explain("w", (1, 0)))
    return history, explained


def test_sgd_first_three_updates_by_hand():
    lr = 0.1
    history, explained = run(SGD(lr))
    w = [row[:] for row in W0]
    for t, grad in enumerate(GRADS):
        for i in range(2):
            for j in range(2):
                w[i][j] = w[i][j] - lr * grad[i][j]
        np.testing.assert_allclose(history[t], w, rtol=0, atol=1e-15, err_msg=f"step {t + 1}")
        e = explained[t]
        assert e["t"] == t + 1 and e["lr"] == lr and e["index"] == (1, 0)
        assert e["g"] == grad[1][0]
        assert e["step"] == pytest.approx(lr * grad[1][0])
        assert e["new"] == w[1][0] and e["old"] - e["step"] == pytest.approx(e["new"])


def test_momentum_first_three_updates_by_hand():
    lr, mu = 0.1, 0.9
    history, explained = run(Momentum(lr, momentum=mu))
    w = [row[:] for row in W0]
    v = [[0.0, 0.0], [0.0, 0.0]]
    for t, grad in enumerate(GRADS):
        v_prev = v[1][0]
        for i in range(2):
            for j in range(2):
                v[i][j] = mu * v[i][j] - lr * grad[i][j]      # v ← μ·v − lr·g
                w[i][j] = w[i][j] + v[i][j]                   # w ← w + v
        np.testing.assert_allclose(history[t], w, rtol=0, atol=1e-15, err_msg=f"step {t + 1}")
        e = explained[t]
        assert e["g"] == grad[1][0] and e["momentum"] == mu
        assert e["v_prev"] == pytest.approx(v_prev, abs=1e-15)
        assert e["v"] == pytest.approx(v[1][0], abs=1e-15)
        assert e["new"] == pytest.approx(w[1][0], abs=1e-15)
    # After two identical gradients the velocity is −lr·g·(1 + μ): the "momentum" builds up.
    opt, w1, g1 = Momentum(0.1, 0.9), np.zeros(1), np.ones(1)
    opt.step([("w", w1, g1)])
    opt.step([("w", w1, g1)])
    assert opt.explain("w", 0)["v"] == pytest.approx(-0.1 * 1.9)


def test_adam_first_three_updates_by_hand():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    history, explained = run(Adam(lr, b1, b2, eps))
    w = [row[:] for row in W0]
    m = [[0.0, 0.0], [0.0, 0.0]]
    v = [[0.0, 0.0], [0.0, 0.0]]
    for t0, grad in enumerate(GRADS):
        t = t0 + 1
        for i in range(2):
            for j in range(2):
                m[i][j] = b1 * m[i][j] + (1 - b1) * grad[i][j]
                v[i][j] = b2 * v[i][j] + (1 - b2) * grad[i][j] ** 2
                m_hat = m[i][j] / (1 - b1 ** t)
                v_hat = v[i][j] / (1 - b2 ** t)
                w[i][j] = w[i][j] - lr * m_hat / (math.sqrt(v_hat) + eps)
        np.testing.assert_allclose(history[t0], w, rtol=1e-12, atol=1e-15, err_msg=f"step {t}")
        e = explained[t0]
        assert e["t"] == t and e["g"] == grad[1][0]
        assert e["m"] == pytest.approx(m[1][0], rel=1e-12)
        assert e["v"] == pytest.approx(v[1][0], rel=1e-12)
        assert e["m_hat"] == pytest.approx(m[1][0] / (1 - b1 ** t), rel=1e-12)
        assert e["v_hat"] == pytest.approx(v[1][0] / (1 - b2 ** t), rel=1e-12)
        assert e["step"] == pytest.approx(e["lr"] * e["m_hat"] / (math.sqrt(e["v_hat"]) + eps), rel=1e-12)
        assert e["new"] == pytest.approx(w[1][0], rel=1e-12)


@pytest.mark.parametrize("g", [0.3, -2.0, 1e-3])
def test_adam_first_step_is_lr_times_sign_thanks_to_bias_correction(g):
    # m = (1−β1)·g and v = (1−β2)·g², so m̂ = g and v̂ = g²: step = lr·g/(|g| + ε) ≈ lr·sign(g).
    # Without the correction the step would be lr·0.1·g/(√0.001·|g|) ≈ 3.16·lr·sign(g).
    lr, eps = 0.01, 1e-8
    opt = Adam(lr=lr, eps=eps)
    w, grad = np.array([1.0]), np.array([g])
    opt.step([("w", w, grad)])
    e = opt.explain("w", 0)
    expected = lr * g / (abs(g) + eps)
    assert e["step"] == pytest.approx(expected, rel=1e-12)
    assert e["m_hat"] == pytest.approx(g, rel=1e-12) and e["v_hat"] == pytest.approx(g * g, rel=1e-12)
    assert w[0] == pytest.approx(1.0 - expected, rel=1e-12)
    assert abs(e["step"]) == pytest.approx(lr, rel=1e-4)


def test_adam_in_float32_agrees_with_the_float64_formula():
    history32, _ = run(Adam(0.01), dtype=np.float32)
    history64, _ = run(Adam(0.01), dtype=np.float64)
    assert history32[-1].dtype == np.float32
    assert np.allclose(history32[-1], history64[-1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_whole_model_update_equals_array_by_array_update(name):
    """model.parameters() lets the optimizer update one flat buffer; element for element it must
    be the same arithmetic as updating each array on its own."""
    fused_model, plain_model = tiny_cnn((1, 8, 8), seed=3), tiny_cnn((1, 8, 8), seed=3)
    fused_opt, plain_opt = make_optimizer(name, lr=0.05), make_optimizer(name, lr=0.05)
    rng = np.random.default_rng(0)
    for _ in range(3):
        for (_, _, g1), (_, _, g2) in zip(fused_model.parameters(), plain_model.parameters()):
            g1[...] = g2[...] = rng.standard_normal(g1.shape).astype(np.float32)
        fused_opt.step(fused_model.parameters())
        plain_opt.step([(n, p, g) for n, p, g in plain_model.parameters()])   # a list: no flat buffer
    for (n, p1, _), (_, p2, _) in zip(fused_model.parameters(), plain_model.parameters()):
        assert np.array_equal(p1, p2), f"{name}: parameter {n} differs between fused and per-array updates"
    assert fused_opt.explain("4.w", (3, 7)) == plain_opt.explain("4.w", (3, 7))
    assert fused_opt.explain("0.b", 5)["index"] == (5,)


def test_step_reads_gradients_and_never_changes_them():
    w, g = np.ones(3), np.array([1.0, 2.0, 3.0])
    Adam(0.1).step([("w", w, g)])
    assert g.tolist() == [1.0, 2.0, 3.0] and not np.array_equal(w, np.ones(3))


def test_explain_errors_are_clear():
    opt = SGD(0.1)
    with pytest.raises(ValueError, match="step"):
        opt.explain("w", 0)
    opt.step([("w", np.zeros(3), np.ones(3))])
    with pytest.raises(ValueError, match="unknown parameter"):
        opt.explain("nope", 0)
    with pytest.raises(ValueError, match="out of range"):
        opt.explain("w", 3)


@pytest.mark.parametrize("bad", [dict(name="sgd", lr=0), dict(name="adam", lr=0.1, beta1=1.0),
                                 dict(name="momentum", lr=0.1, momentum=-0.5), dict(name="rmsprop", lr=0.1)])
def test_bad_hyperparameters_are_rejected(bad):
    with pytest.raises(ValueError):
        make_optimizer(**bad)


def test_spec_rebuilds_the_same_optimizer():
    opt = Adam(lr=0.003, beta2=0.99)
    again = make_optimizer(**opt.spec())
    assert isinstance(again, Adam) and again.hyperparameters() == opt.hyperparameters()
