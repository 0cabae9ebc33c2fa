"""Activations, softmax and cross-entropy: gradients by central differences, stability
for huge logits, and H(p, q) = −Σ p(x) log q(x) recomputed with plain Python loops."""

import math
import warnings
import zlib

import numpy as np
import pytest

from cnnlab.core.activations import ACTIVATIONS, get_activation
from cnnlab.core.losses import cross_entropy, cross_entropy_terms, log_softmax, softmax
from gradcheck import check_gradient


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 4, 5)])
def test_activation_gradient_matches_central_differences(name, shape):
    rng = np.random.default_rng(zlib.crc32(f"{name}{shape}".encode()))
    act = get_activation(name)
    x = rng.standard_normal(shape) * 3
    # Keep away from the kink at 0 of relu / leaky_relu, where the derivative jumps.
    x[np.abs(x) < 1e-3] = 0.5
    upstream = rng.standard_normal(shape)

    out, cache = act.forward(x)
    dx = act.backward(upstream, cache)
    check_gradient(dx, lambda: act.forward(x)[0], x, f"{name} on shape {shape}", dout=upstream, tol=1e-7)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_keeps_float32(name):
    act = get_activation(name)
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    out, cache = act.forward(x)
    dx = act.backward(np.ones_like(x), cache)
    assert out.dtype == np.float32 and dx.dtype == np.float32, f"{name}: out {out.dtype}, dx {dx.dtype}"
    assert out.shape == x.shape and dx.shape == x.shape


def test_activation_values():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    assert ACTIVATIONS["relu"].forward(x)[0].tolist() == [0, 0, 0, 0.5, 2.0]
    assert np.allclose(ACTIVATIONS["leaky_relu"].forward(x)[0], [-0.02, -0.005, 0, 0.5, 2.0])
    assert np.allclose(ACTIVATIONS["leaky_relu"].forward(x, 0.2)[0], [-0.4, -0.1, 0, 0.5, 2.0])
    assert np.allclose(ACTIVATIONS["sigmoid"].forward(x)[0], [1 / (1 + math.exp(-v)) for v in x])
    assert np.allclose(ACTIVATIONS["tanh"].forward(x)[0], np.tanh(x))
    # ReLU's gradient at exactly 0 is 0 (PyTorch's choice).
    assert ACTIVATIONS["relu"].backward(np.ones(5), ACTIVATIONS["relu"].forward(x)[1]).tolist() == [0, 0, 0, 1, 1]


def test_sigmoid_is_stable_for_huge_inputs():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            out, cache = ACTIVATIONS["sigmoid"].forward(x)
            dx = ACTIVATIONS["sigmoid"].backward(np.ones_like(x), cache)
    assert out.tolist() == [0.0, pytest.approx(0.0, abs=1e-20), 0.5, 1.0, 1.0]
    assert np.all(np.isfinite(dx))


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="relu"):
        get_activation("swish")


# ---------------------------------------------------------------------------
# Softmax
# ---------------------------------------------------------------------------

def test_softmax_rows_sum_to_one_on_vectors_and_matrices():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5, 10)).astype(np.float32)
    q = softmax(z)
    assert q.shape == (5, 10) and q.dtype == np.float32
    assert np.allclose(q.sum(axis=1), 1, atol=1e-6)
    assert np.allclose(softmax(z[2]), q[2])
    assert np.allclose(q, np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-5)


def test_softmax_is_stable_for_huge_logits():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise", under="ignore"):
            q = softmax(np.array([1000.0, -1000.0]))
            q2 = softmax(np.array([[1000.0, 1000.0, -1000.0]]))
            lq = log_softmax(np.array([1000.0, -1000.0]))
    assert q.tolist() == [1.0, 0.0]
    assert np.allclose(q2, [[0.5, 0.5, 0.0]])
    assert lq.tolist() == [0.0, -2000.0]


# ---------------------------------------------------------------------------
# Cross-entropy
# ---------------------------------------------------------------------------

def slide_cross_entropy(logits_row, p_row):
    """H(p, q) = −Σ_x p(x) log q(x) of the slides, with q = softmax written as loops."""
    exps = [math.exp(z) for z in logits_row]
    total = sum(exps)
    q = [e / total for e in exps]
    return -sum(p * math.log(qx) for p, qx in zip(p_row, q))


def test_cross_entropy_matches_the_slide_formula_written_as_loops():
    rng = np.random.default_rng(2)
    N, K = 6, 10
    logits = rng.standard_normal((N, K)) * 2
    labels = rng.integers(0, K, N)
    soft = rng.random((N, K))
    soft /= soft.sum(axis=1, keepdims=True)
    for target, p in ((labels, np.eye(K)[labels]), (soft, soft)):
        expected = sum(slide_cross_entropy(logits[n].tolist(), p[n].tolist()) for n in range(N)) / N
        loss, _ = cross_entropy(logits, target)
        assert loss == pytest.approx(expected, rel=1e-12)
    for n in range(N):
        terms = cross_entropy_terms(logits[n], soft[n])
        assert terms.loss == pytest.approx(slide_cross_entropy(logits[n].tolist(), soft[n].tolist()), rel=1e-12)


def test_cross_entropy_from_one_hot_equals_from_labels():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((8, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    loss_l, d_l = cross_entropy(logits, labels)
    loss_p, d_p = cross_entropy(logits, np.eye(10, dtype=np.float32)[labels])
    assert loss_l == pytest.approx(loss_p, rel=1e-6)
    assert np.allclose(d_l, d_p, atol=1e-7)
    assert d_l.dtype == np.float32 and d_l.shape == (8, 10)


@pytest.mark.parametrize("target_kind", ["labels", "one-hot", "soft"])
def test_cross_entropy_gradient_matches_central_differences(target_kind):
    rng = np.random.default_rng(4)
    N, K = 4, 5
    logits = rng.standard_normal((N, K))
    labels = rng.integers(0, K, N)
    target = {"labels": labels, "one-hot": np.eye(K)[labels],
              "soft": rng.dirichlet(np.ones(K), N)}[target_kind]
    _, dlogits = cross_entropy(logits, target)
    check_gradient(dlogits, lambda: cross_entropy(logits, target)[0], logits,
                   f"cross-entropy with {target_kind} targets, logits {logits.shape}", tol=1e-7)
    q = softmax(logits)
    p = np.eye(K)[labels] if target_kind == "labels" else target
    assert np.allclose(dlogits, (q - p) / N)


def test_cross_entropy_is_finite_for_huge_logits():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise", under="ignore"):
            right, d_right = cross_entropy(np.array([[1000.0, -1000.0]]), np.array([0]))
            wrong, d_wrong = cross_entropy(np.array([[1000.0, -1000.0]]), np.array([1]))
            one_hot, _ = cross_entropy(np.array([[1000.0, -1000.0]]), np.array([[0.0, 1.0]]))
    assert right == 0.0 and wrong == 2000.0 and one_hot == 2000.0
    assert d_right.tolist() == [[0.0, 0.0]] and d_wrong.tolist() == [[1.0, -1.0]]


def test_cross_entropy_single_example():
    z = np.array([1.0, 2.0, 3.0])
    loss, d = cross_entropy(z, 2)
    assert d.shape == (3,)
    assert loss == pytest.approx(-math.log(math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3))))
    loss_p, d_p = cross_entropy(z, np.array([0.0, 0.0, 1.0]))
    assert loss_p == pytest.approx(loss) and np.allclose(d, d_p)


@pytest.mark.parametrize("target", [np.array([0, 10]), np.array([-1, 0]), np.zeros((2, 3)), np.zeros(3, dtype=int)])
def test_cross_entropy_rejects_bad_targets(target):
    with pytest.raises(ValueError, match="label|target"):
        cross_entropy(np.zeros((2, 10)), target)


def test_cross_entropy_terms_written_out():
    terms = cross_entropy_terms(np.array([1.0, 2.0, 3.0]), 2)
    assert [t.p for t in terms.terms] == [0, 0, 1]
    assert sum(t.q for t in terms.terms) == pytest.approx(1)
    assert terms.loss == pytest.approx(cross_entropy(np.array([[1.0, 2.0, 3.0]]), np.array([2]))[0])
    assert terms.text == "\u2212(0\u00b7ln 0.09 + 0\u00b7ln 0.245 + 1\u00b7ln 0.665) = 0.408"
    assert [t.term for t in terms.terms][:2] == [0.0, 0.0]
