"""Central-difference gradient checking, shared by the engine's tests.

    from gradcheck import check_gradient, numeric_grad, rel_error

numeric_grad(f, x, dout) is ∂(Σ f(x)·dout)/∂x estimated one element at a time as
(f(x + h) − f(x − h))·dout / 2h, in float64 (CS231n's eval_numerical_gradient_array).
"""

import numpy as np


def numeric_grad(f, x, dout, h=1e-5):
    """Numerical gradient of Σ f(x)·dout with respect to x.

    f: a function of x returning an array shaped like dout (it is called with x itself,
    changed in place and restored afterwards, so it may also close over x and ignore its
    argument). x: a float64 array. dout: the upstream gradient. Returns an array shaped like x.
    """
    if x.dtype != np.float64:
        raise TypeError(f"gradient checks need float64 to be meaningful; x is {x.dtype}")
    dout = np.asarray(dout, dtype=np.float64)
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = np.array(f(x), dtype=np.float64, copy=True)
        x[i] = old - h
        minus = np.array(f(x), dtype=np.float64, copy=True)
        x[i] = old
        grad[i] = np.sum((plus - minus) * dout) / (2 * h)
        it.iternext()
    return grad


def rel_error(a, b):
    """Largest difference relative to the size of the gradients:
    max|a − b| / max(max|a|, max|b|, 1e-12).

    Measured against the whole array's scale rather than element by element, so entries
    that are legitimately near zero (where float64 noise dominates) cannot fail a correct
    gradient, while any entry wrong by more than the tolerance times the scale still does.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), 1e-12)
    return float(np.max(np.abs(a - b))) / scale


def check_gradient(analytic, f, x, what, dout=1.0, tol=1e-6):
    """Compare an analytic gradient with numeric_grad's central differences of Σ f()·dout w.r.t. x
    (f reads x, which numeric_grad nudges in place); the message names shapes and settings."""
    numeric = numeric_grad(lambda _: f(), x, dout)
    assert analytic.shape == numeric.shape, f"{what}: gradient shape {analytic.shape} != {numeric.shape}"
    err = rel_error(analytic, numeric)
    assert err < tol, f"{what}: analytic and numeric gradients differ, relative error {err:.3g} (x {x.shape})"
