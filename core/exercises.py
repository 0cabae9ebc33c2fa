"""Seeded practice exercises with worked solutions, in the style of the slides' example
(the 5×5 matrix and 3×3 kernel whose first two outputs are 78 and 87).

    ex = generate("conv_value", seed=42, level=1)   # same (kind, seed, level) → same exercise
    ex.givens                                        # what the student is shown (JSON-able)
    ex.answer, ex.tolerance                          # ndarray (shape () for one number); 0.0 = exact
    check(ex, [[...]])                               # Verdict(correct, wrong): wrong is per cell
    solution(ex)                                     # [SolutionStep]: the maths, step by step

Kinds (KINDS) and what the answer is:

    conv_value     one output value of a small convolution (exact integer)
    conv_output    the whole output map of a small convolution (exact integers)
    output_size    ⌊(H + 2P − D·(K − 1) − 1)/S⌋ + 1 (exact integer)
    pool           a max or average pooling output map (exact integers: averages are made whole)
    relu           ReLU of a map (exact integers)
    softmax        the probabilities q (reals, ± 0.01)
    cross_entropy  H(p, q) = −ln q_label for a one-hot p (real, ± 0.01, natural log)
    param_count    a conv layer's (K·K·C_in + 1)·F or a dense layer's (n_in + 1)·n_out (exact)
    sgd_step       w − lr·g (reals, ± 0.001)
    adam_step      one Adam update of w from (m, v, t) (reals, ± 0.001)

Levels 1–3 grow the sizes and add stride, padding, dilation, bias and channels.
The randomness is NumPy's PCG64 seeded with (seed, kind, level), so a seed in a URL gives
the same exercise to a whole class. Only NumPy and the standard library are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import numfmt
from .conv import conv_forward_naive, conv_step, output_size, output_size_formula
from .losses import log_softmax
from .losses import softmax as _softmax
from .pool import pool_forward_naive, pool_step

__all__ = ["KINDS", "LEVELS", "MAX_SEED", "TOLERANCES", "Exercise", "SolutionStep", "Verdict", "check",
           "format_value", "generate", "solution"]

KINDS: tuple[str, ...] = ("conv_value", "conv_output", "output_size", "pool", "relu", "softmax",
                          "cross_entropy", "param_count", "sgd_step", "adam_step")
LEVELS = (1, 2, 3)
MAX_SEED = 2**63 - 1

#: The tolerance of each kind: 0.0 means the answer is a whole number and must be exact.
TOLERANCES: dict[str, float] = {
    "conv_value": 0.0, "conv_output": 0.0, "output_size": 0.0, "pool": 0.0, "relu": 0.0,
    "softmax": 0.01, "cross_entropy": 0.01, "param_count": 0.0, "sgd_step": 0.001, "adam_step": 0.001,
}

MINUS = "\u2212"
DOT = "\u00b7"


@dataclass(frozen=True)
class Exercise:
    """One exercise. givens: plain Python lists/ints/floats (JSON-able), what the student is
    given; answer: always an ndarray (shape () for one number); tolerance: 0.0 = exact."""
    kind: str
    seed: int
    level: int
    givens: dict[str, Any]
    answer: np.ndarray
    tolerance: float


@dataclass(frozen=True)
class Verdict:
    """correct: every cell right; wrong: bool, the answer's shape, True where a cell is wrong."""
    correct: bool
    wrong: np.ndarray


@dataclass(frozen=True)
class SolutionStep:
    """One step of a worked solution.

    key: what the step does (a page turns it into a sentence in its own language; params
    fill that sentence), text: the maths with the numbers filled in (U+2212 minus, U+00B7
    dot), cells: the answer cells this step gives (indices into ex.answer; () for a
    number), window: for conv/pool, {"rows": [...], "cols": [...]} of the input cells used
    (conv rows/cols may lie in the padding: < 0 or ≥ H).
    """
    key: str
    text: str
    params: dict[str, Any] = field(default_factory=dict)
    cells: tuple = ()
    window: dict[str, list] | None = None


# ---------------------------------------------------------------------------
# Numbers as the page writes them
# ---------------------------------------------------------------------------

def format_value(v, digits=6):
    """Integers plainly; other values with up to ``digits`` significant digits (at most 12
    decimals), rounded half up, in fixed notation (0.00009, not 9e-05), no trailing zeros,
    U+2212 minus, never "−0", the page's decimal mark (core.numfmt)."""
    if isinstance(v, (bool, np.bool_)):
        v = int(v)
    if isinstance(v, (int, np.integer)):
        v = int(v)
        return f"{MINUS}{-v}" if v < 0 else str(v)
    v = float(v)
    if not math.isfinite(v):
        return "\u221e" if v > 0 else (f"{MINUS}\u221e" if v < 0 else "NaN")
    if v == 0:
        return "0"
    return numfmt.fixed(v, min(12, max(0, digits - 1 - math.floor(math.log10(abs(v))))))


def _f(v, digits=6):
    """format_value with negatives in parentheses, for products: 0.9·(−0.3)."""
    s = format_value(v, digits)
    return f"({s})" if s.startswith(MINUS) else s


def _r(v, digits=6):
    """v rounded to `digits` significant digits, as a Python float (what the page shows)."""
    v = float(v)
    if v == 0:
        return 0.0
    return float(round(v, digits - 1 - math.floor(math.log10(abs(v)))))


# ---------------------------------------------------------------------------
# Generators: one per kind, (rng, level) -> (givens, answer)
# ---------------------------------------------------------------------------

def _choice(rng, options):
    return options[int(rng.integers(len(options)))]


def _conv_settings(rng, level, whole_output):
    """Sizes and settings for a conv exercise whose output is small enough to work by hand."""
    while True:
        if level == 1:
            C, K, S, P, D, bias = 1, 3, 1, 0, 1, False
            H = 5 if not whole_output else _choice(rng, (4, 5))
        elif level == 2:
            C, D, bias = 1, 1, True
            K = _choice(rng, (2, 3))
            S, P = _choice(rng, ((1, 1), (2, 0), (2, 1)))
            H = int(rng.integers(4, 8))
        else:
            C, bias = 2, True
            K = _choice(rng, (2, 3))
            S, P, D = _choice(rng, ((1, 1, 1), (2, 1, 1), (1, 0, 2), (2, 0, 2), (1, 1, 2)))
            H = int(rng.integers(4, 7))
        Ho = output_size(H, K, S, P, D) if (H + 2 * P - D * (K - 1) - 1) >= 0 else 0
        if whole_output and 2 <= Ho <= 3:
            break
        if not whole_output and 2 <= Ho <= 5:
            break
    lo_x, hi_x = (0, 9) if level < 3 else (-3, 9)
    lo_w, hi_w = -2, 2
    x = rng.integers(lo_x, hi_x + 1, size=(C, H, H))
    w = rng.integers(lo_w, hi_w + 1, size=(C, K, K))
    while not np.any(w):                       # an all-zero kernel teaches nothing
        w = rng.integers(lo_w, hi_w + 1, size=(C, K, K))
    b = int(rng.integers(-3, 4)) if bias else None
    return x, w, b, S, P, D, Ho


def _conv_givens(x, w, b, S, P, D, Ho):
    return {"x": x.tolist(), "w": w.tolist(), "bias": b, "stride": S, "padding": P, "dilation": D,
            "out_shape": [Ho, Ho]}


def _conv_map(g):
    """The output map (Ho, Wo) of the givens' convolution, as int64."""
    x = np.asarray(g["x"], dtype=np.int64)[None]
    w = np.asarray(g["w"], dtype=np.int64)[None]
    b = None if g["bias"] is None else np.array([g["bias"]], dtype=np.int64)
    out = conv_forward_naive(x, w, b, g["stride"], g["padding"], g["dilation"])
    return np.rint(out[0, 0]).astype(np.int64)


def _gen_conv_value(rng, level):
    x, w, b, S, P, D, Ho = _conv_settings(rng, level, whole_output=False)
    g = _conv_givens(x, w, b, S, P, D, Ho)
    g["row"], g["col"] = int(rng.integers(Ho)), int(rng.integers(Ho))
    return g, np.asarray(_conv_map(g)[g["row"], g["col"]], dtype=np.int64)


def _gen_conv_output(rng, level):
    x, w, b, S, P, D, Ho = _conv_settings(rng, level, whole_output=True)
    g = _conv_givens(x, w, b, S, P, D, Ho)
    return g, _conv_map(g)


def _gen_output_size(rng, level):
    while True:
        if level == 1:
            n, k, p, s, d = int(rng.integers(5, 33)), _choice(rng, (3, 5)), int(rng.integers(0, 3)), 1, 1
        elif level == 2:
            n, k = int(rng.integers(7, 65)), _choice(rng, (2, 3, 5, 7))
            p, s, d = int(rng.integers(0, 4)), int(rng.integers(2, 5)), 1
        else:
            n, k = int(rng.integers(7, 65)), _choice(rng, (3, 5))
            p, s, d = int(rng.integers(0, 4)), int(rng.integers(1, 4)), int(rng.integers(2, 4))
        if n + 2 * p - d * (k - 1) - 1 >= 0:
            break
    return ({"n": n, "k": k, "padding": p, "stride": s, "dilation": d},
            np.asarray(output_size(n, k, s, p, d), dtype=np.int64))


def _gen_pool(rng, level):
    while True:
        kind = _choice(rng, ("max", "avg"))
        if level == 1:
            H, size, stride = 4, 2, 2
        elif level == 2:
            H = int(rng.integers(4, 7))
            size, stride = (2, 2) if kind == "avg" else _choice(rng, ((2, 2), (2, 1), (3, 1), (3, 2)))
        else:
            H = int(rng.integers(5, 8))
            size, stride = (_choice(rng, ((2, 2), (3, 3))) if kind == "avg"
                            else _choice(rng, ((3, 2), (2, 1), (3, 1))))
        if H >= size and 2 <= (H - size) // stride + 1 <= 3:
            break
    lo = 0 if level == 1 else (-5 if level == 2 else -9)
    x = rng.integers(lo, 10, size=(H, H))
    Ho = (H - size) // stride + 1
    if kind == "avg":
        # Make each (disjoint) window's sum a multiple of size², so the average is whole.
        n = size * size
        for i in range(Ho):
            for j in range(Ho):
                win = x[i * stride:i * stride + size, j * stride:j * stride + size]
                r = int(win.sum()) % n
                if r:
                    flat = win.reshape(-1)
                    can = np.flatnonzero(flat - r >= lo)
                    k = int(can[int(rng.integers(len(can)))]) if len(can) else 0
                    if len(can):
                        win[k // size, k % size] -= r
                    else:
                        win[k // size, k % size] += n - r
    out = pool_forward_naive(x[None, None].astype(np.float64), kind, size, stride)
    return ({"x": x.tolist(), "mode": kind, "size": size, "stride": stride, "out_shape": [Ho, Ho]},
            np.rint(np.asarray(out)[0, 0]).astype(np.int64))


def _gen_relu(rng, level):
    H, lo = {1: (3, 9), 2: (4, 20), 3: (5, 50)}[level]
    while True:
        x = rng.integers(-lo, lo + 1, size=(H, H))
        if (x < 0).sum() >= 2 and (x > 0).sum() >= 2:
            break
    if level > 1:
        x[int(rng.integers(H)), int(rng.integers(H))] = 0
    return {"x": x.tolist()}, np.maximum(x, 0).astype(np.int64)


def _logits(rng, level):
    if level == 1:
        return [int(v) for v in rng.integers(-2, 4, size=3)]
    if level == 2:
        return [int(v) for v in rng.integers(-3, 5, size=4)]
    return [float(v) / 2 for v in rng.integers(-6, 9, size=5)]


def _gen_softmax(rng, level):
    z = _logits(rng, level)
    return {"logits": z}, _softmax(np.asarray(z, dtype=np.float64))


def _gen_cross_entropy(rng, level):
    if level == 1:
        K = 3
        while True:
            cuts = np.sort(rng.choice(np.arange(5, 100, 5), size=K - 1, replace=False))
            q = np.diff(np.concatenate(([0], cuts, [100]))) / 100
            if np.all(q > 0):
                break
        q = [round(float(v), 2) for v in q]
        label = int(rng.integers(K))
        return {"q": q, "label": label}, np.asarray(-math.log(q[label]))
    z = _logits(rng, level)
    label = int(rng.integers(len(z)))
    log_q = log_softmax(np.asarray(z, dtype=np.float64))
    return {"logits": z, "label": label}, np.asarray(-float(log_q[label]))


def _gen_param_count(rng, level):
    if level == 1:
        if rng.integers(2):
            g = {"layer": "conv", "k": _choice(rng, (3, 5)), "c_in": _choice(rng, (1, 3)),
                 "filters": _choice(rng, (4, 8, 16, 32))}
        else:
            g = {"layer": "dense", "n_in": _choice(rng, (4, 10, 64, 100, 128)),
                 "n_out": _choice(rng, (2, 3, 10, 32))}
    elif level == 2:
        if rng.integers(2):
            g = {"layer": "conv", "k": _choice(rng, (1, 3, 5, 7)), "c_in": _choice(rng, (3, 8, 16, 32, 64)),
                 "filters": _choice(rng, (8, 16, 32, 64, 128))}
        else:
            s = _choice(rng, (4, 5, 7, 8))
            g = {"layer": "dense", "input_shape": [s, s, _choice(rng, (4, 8, 16, 32))],
                 "n_out": _choice(rng, (10, 32, 64, 128))}
    else:
        H = _choice(rng, (8, 10, 12, 14, 28, 32))
        k, stride, pad = _choice(rng, ((3, 1, 0), (3, 1, 1), (5, 1, 0), (3, 2, 1), (5, 2, 2)))
        g = {"layer": "dense_after_conv", "input_shape": [H, H, _choice(rng, (1, 3))], "k": k,
             "filters": _choice(rng, (4, 8, 16)), "stride": stride, "padding": pad,
             "n_out": _choice(rng, (10, 32, 64))}
    return g, np.asarray(_param_count(g), dtype=np.int64)


def _param_count(g):
    if g["layer"] == "conv":
        return (g["k"] * g["k"] * g["c_in"] + 1) * g["filters"]
    if g["layer"] == "dense":
        n_in = g["n_in"] if "n_in" in g else math.prod(g["input_shape"])
        return (n_in + 1) * g["n_out"]
    H, _, _ = g["input_shape"]
    Ho = output_size(H, g["k"], g["stride"], g["padding"])
    return (Ho * Ho * g["filters"] + 1) * g["n_out"]


def _weights(rng, n, decimals, lo=-1.0, hi=1.0):
    scale = 10 ** decimals
    vals = rng.integers(int(lo * scale), int(hi * scale) + 1, size=n) / scale
    return [round(float(v), decimals) for v in vals]


def _gen_sgd_step(rng, level):
    n = 1 if level == 1 else 3
    dec = 1 if level < 3 else 2
    w = _weights(rng, n, dec)
    g = _weights(rng, n, dec, -2.0, 2.0)
    lr = _choice(rng, (0.1, 0.5, 1.0) if level == 1 else (0.1, 0.01, 0.05, 0.2))
    answer = np.asarray(w, dtype=np.float64) - lr * np.asarray(g, dtype=np.float64)
    one = level == 1
    return ({"w": w[0] if one else w, "g": g[0] if one else g, "lr": lr},
            np.asarray(answer[0]) if one else answer)


ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def _adam_numbers(w, g, m, v, t, lr, beta1, beta2, eps):
    """One Adam update, written out: m, v, m̂, v̂ and the new w (arrays)."""
    m_new = beta1 * m + (1 - beta1) * g
    v_new = beta2 * v + (1 - beta2) * g * g
    m_hat = m_new / (1 - beta1 ** t)
    v_hat = v_new / (1 - beta2 ** t)
    return m_new, v_new, m_hat, v_hat, w - lr * m_hat / (np.sqrt(v_hat) + eps)


def _gen_adam_step(rng, level):
    n = 1 if level < 3 else 2
    t = 1 if level == 1 else int(rng.integers(2, 6))
    w = np.asarray(_weights(rng, n, 1))
    g = np.asarray([v if v != 0 else 0.5 for v in _weights(rng, n, 1, -2.0, 2.0)])
    m = np.zeros(n)
    v = np.zeros(n)
    for _ in range(t - 1):                     # the state a real run would have after t − 1 steps
        past = rng.integers(1, 21, size=n) * rng.choice((-1, 1), size=n) / 10
        m = ADAM["beta1"] * m + (1 - ADAM["beta1"]) * past
        v = ADAM["beta2"] * v + (1 - ADAM["beta2"]) * past * past
    m = np.asarray([_r(a, 4) for a in m])
    v = np.asarray([_r(a, 4) for a in v])
    lr = _choice(rng, (0.1, 0.05) if level > 1 else (0.1, 0.01))
    new = _adam_numbers(w, g, m, v, t, lr, **ADAM)[-1]
    one = n == 1
    pick = (lambda a: float(a[0])) if one else (lambda a: [float(e) for e in a])
    givens = {"w": pick(w), "g": pick(g), "m": pick(m), "v": pick(v), "t": t, "lr": lr, **ADAM}
    return givens, np.asarray(new[0]) if one else new


_GENERATORS = {
    "conv_value": _gen_conv_value, "conv_output": _gen_conv_output, "output_size": _gen_output_size,
    "pool": _gen_pool, "relu": _gen_relu, "softmax": _gen_softmax, "cross_entropy": _gen_cross_entropy,
    "param_count": _gen_param_count, "sgd_step": _gen_sgd_step, "adam_step": _gen_adam_step,
}


def _check_kind_level(kind, level):
    if kind not in KINDS:
        raise ValueError(f"unknown exercise kind {kind!r}; choose one of: {', '.join(KINDS)}.")
    if type(level) is not int or level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}; got {level!r}.")


def generate(kind: str, seed: int, level: int = 1) -> Exercise:
    """The exercise of this kind for (seed, level): the same arguments always give the same
    exercise. seed: a whole number 0 ≤ seed ≤ 2⁶³ − 1. ValueError on unknown kind/level/seed."""
    _check_kind_level(kind, level)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED}; got {seed!r}.")
    seed = int(seed)
    rng = np.random.default_rng([seed, KINDS.index(kind), level])
    givens, answer = _GENERATORS[kind](rng, level)
    answer = np.array(answer)  # a fresh array nobody else holds
    answer.setflags(write=False)
    return Exercise(kind=kind, seed=seed, level=level, givens=givens, answer=answer,
                    tolerance=TOLERANCES[kind])


# ---------------------------------------------------------------------------
# Checking an answer
# ---------------------------------------------------------------------------

def check(exercise: Exercise, answer) -> Verdict:
    """Cell-by-cell check of a student's answer (array-like, the shape of exercise.answer).

    A cell is right when |given − expected| ≤ tolerance (for tolerance 0: equal, up to
    float rounding, 1e-9). ValueError when the answer is not numbers, has the wrong shape,
    or holds NaN/∞.
    """
    try:
        a = np.asarray(answer, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("the answer must be numbers.") from None
    expected = np.asarray(exercise.answer, dtype=np.float64)
    if a.shape != expected.shape:
        raise ValueError(f"the answer must have shape {expected.shape}; got {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError("the answer contains NaN or infinity.")
    slack = exercise.tolerance + 1e-9 * np.maximum(1.0, np.abs(expected))
    wrong = ~(np.abs(a - expected) <= slack)
    return Verdict(correct=not bool(wrong.any()), wrong=wrong)


# ---------------------------------------------------------------------------
# Worked solutions
# ---------------------------------------------------------------------------

def _size_step(g):
    formula = output_size_formula(len(g["x"][0]), len(g["w"][0]), g["stride"], g["padding"], g["dilation"])
    return SolutionStep("conv_size", f"Ho = Wo = {formula}", {"size": g["out_shape"][0]})


def _conv_cell_steps(g, row, col, cells):
    x = np.asarray(g["x"], dtype=np.int64)
    w = np.asarray(g["w"], dtype=np.int64)
    b = None if g["bias"] is None else np.array([g["bias"]])
    cs = conv_step(x, w[None], b, g["stride"], g["padding"], g["dilation"], position=(0, row, col))
    window = {"rows": cs.window_rows, "cols": cs.window_cols}
    steps = []
    if x.shape[0] > 1:
        for c, text in enumerate(cs.channel_texts):
            steps.append(SolutionStep("conv_channel", text, {"row": row, "col": col, "channel": c + 1},
                                      (), window))
        parts = " + ".join(_f(s) for s in cs.channel_sums)
        if cs.bias is not None:
            parts += f" + {_f(cs.bias)}"
        steps.append(SolutionStep("conv_total", f"{parts} = {format_value(cs.value)}",
                                  {"row": row, "col": col}, cells, window))
    else:
        steps.append(SolutionStep("conv_dot", cs.text, {"row": row, "col": col}, cells, window))
    return steps


def _solve_conv_value(ex):
    g = ex.givens
    return [_size_step(g)] + _conv_cell_steps(g, g["row"], g["col"], ((),))


def _solve_conv_output(ex):
    g = ex.givens
    steps = [_size_step(g)]
    Ho, Wo = ex.answer.shape
    for i in range(Ho):
        for j in range(Wo):
            steps += _conv_cell_steps(g, i, j, ((i, j),))
    return steps


def _solve_output_size(ex):
    g = ex.givens
    text = output_size_formula(g["n"], g["k"], g["stride"], g["padding"], g["dilation"])
    steps = []
    if g["dilation"] > 1:
        span = g["dilation"] * (g["k"] - 1) + 1
        steps.append(SolutionStep("dilated_span", f"{g['dilation']}{DOT}({g['k']} {MINUS} 1) + 1 = {span}",
                                  {"span": span}))
    padded = g["n"] + 2 * g["padding"]
    steps.append(SolutionStep("padded_size", f"{g['n']} + 2{DOT}{g['padding']} = {padded}", {"padded": padded}))
    steps.append(SolutionStep("size_formula", text, {}, ((),)))
    return steps


def _solve_pool(ex):
    g = ex.givens
    x = np.asarray(g["x"], dtype=np.int64)
    H = x.shape[0]
    Ho = g["out_shape"][0]
    steps = [SolutionStep("pool_size", f"Ho = Wo = \u230a({H} {MINUS} {g['size']})/{g['stride']}\u230b + 1 = {Ho}",
                          {"size": Ho})]
    for i in range(Ho):
        for j in range(Ho):
            ps = pool_step(x, g["mode"], g["size"], g["stride"], position=(0, i, j))
            steps.append(SolutionStep("pool_window", ps.text, {"row": i, "col": j, "mode": g["mode"]},
                                      ((i, j),), {"rows": ps.window_rows, "cols": ps.window_cols}))
    return steps


def _solve_relu(ex):
    x = np.asarray(ex.givens["x"], dtype=np.int64)
    steps = []
    for i, line in enumerate(x):
        text = ",  ".join(f"max(0, {format_value(v)}) = {format_value(max(int(v), 0))}" for v in line)
        steps.append(SolutionStep("relu_row", text, {"row": i + 1}, tuple((i, j) for j in range(len(line)))))
    return steps


def _exp_text(z):
    return f"e^{_f(z)}"


def _softmax_steps(z, only=None):
    """exp, sum, and the quotient for every class (or only class `only`)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z)
    total = float(e.sum())
    steps = [
        SolutionStep("softmax_exp", ",  ".join(f"{_exp_text(v)} = "
                                               f"{format_value(_r(ev, 5))}" for v, ev in zip(_plain(z), e))),
        SolutionStep("softmax_sum", f"{' + '.join(format_value(_r(ev, 5)) for ev in e)} = "
                                    f"{format_value(_r(total, 5))}"),
    ]
    for k in range(len(z)) if only is None else (only,):
        q = float(e[k] / total)
        steps.append(SolutionStep("softmax_div", f"q{_sub(k)} = {format_value(_r(e[k], 5))} / "
                                                 f"{format_value(_r(total, 5))} = {format_value(round(q, 4))}",
                                  {"cls": k}, ((k,),) if only is None else ()))
    return steps


def _plain(z):
    """Whole floats as ints, so e^2 not e^2.0."""
    return [int(v) if float(v).is_integer() else float(v) for v in z]


_SUBSCRIPTS = str.maketrans("0123456789", "\u2080\u2081\u2082\u2083\u2084\u2085\u2086\u2087\u2088\u2089")


def _sub(k):
    return str(k).translate(_SUBSCRIPTS)


def _solve_softmax(ex):
    return _softmax_steps(ex.givens["logits"])


def _solve_cross_entropy(ex):
    g = ex.givens
    label = g["label"]
    steps = []
    if "q" in g:
        q = g["q"]
    else:
        steps = _softmax_steps(g["logits"], only=label)
        q = list(_softmax(np.asarray(g["logits"], dtype=np.float64)))
    K = len(q)
    inner = " + ".join(f"{1 if k == label else 0}{DOT}ln {format_value(_r(q[k], 4))}" for k in range(K))
    steps.append(SolutionStep("ce_sum", f"H(p, q) = {MINUS}({inner})", {"label": label}))
    steps.append(SolutionStep("ce_log", f"{MINUS}ln {format_value(_r(q[label], 4))} = "
                                        f"{format_value(round(float(ex.answer), 4))}", {"label": label}, ((),)))
    return steps


def _solve_param_count(ex):
    g = ex.givens
    total = int(ex.answer)
    if g["layer"] == "conv":
        return [SolutionStep("param_conv", f"({g['k']}{DOT}{g['k']}{DOT}{g['c_in']} + 1){DOT}{g['filters']} = {total}",
                             {}, ((),))]
    if g["layer"] == "dense":
        steps = []
        if "n_in" in g:
            n_in = g["n_in"]
        else:
            n_in = math.prod(g["input_shape"])
            steps.append(SolutionStep("param_flatten", f"n_in = {DOT.join(map(str, g['input_shape']))} = {n_in}",
                                      {"n_in": n_in}))
        steps.append(SolutionStep("param_dense", f"({n_in} + 1){DOT}{g['n_out']} = {total}", {}, ((),)))
        return steps
    H = g["input_shape"][0]
    Ho = output_size(H, g["k"], g["stride"], g["padding"])
    n_in = Ho * Ho * g["filters"]
    return [
        SolutionStep("conv_size", f"Ho = Wo = {output_size_formula(H, g['k'], g['stride'], g['padding'])}",
                     {"size": Ho}),
        SolutionStep("param_flatten", f"n_in = {Ho}{DOT}{Ho}{DOT}{g['filters']} = {n_in}", {"n_in": n_in}),
        SolutionStep("param_dense", f"({n_in} + 1){DOT}{g['n_out']} = {total}", {}, ((),)),
    ]


def _vector(v):
    return np.atleast_1d(np.asarray(v, dtype=np.float64))


def _solve_sgd_step(ex):
    g = ex.givens
    w, grad = _vector(g["w"]), _vector(g["g"])
    one = ex.answer.shape == ()
    steps = []
    for i in range(len(w)):
        new = float(np.atleast_1d(ex.answer)[i])
        steps.append(SolutionStep("sgd", f"{format_value(w[i])} {MINUS} {_f(g['lr'])}{DOT}{_f(grad[i])} = "
                                         f"{format_value(_r(new, 6))}", {"i": i + 1}, ((),) if one else ((i,),)))
    return steps


def _solve_adam_step(ex):
    g = ex.givens
    w, grad, m, v = (_vector(g[k]) for k in ("w", "g", "m", "v"))
    t, lr, b1, b2, eps = g["t"], g["lr"], g["beta1"], g["beta2"], g["eps"]
    m_new, v_new, m_hat, v_hat, new = _adam_numbers(w, grad, m, v, t, lr, b1, b2, eps)
    one = ex.answer.shape == ()
    steps = []
    for i in range(len(w)):
        cell = ((),) if one else ((i,),)
        p = {"i": i + 1}
        steps += [
            SolutionStep("adam_m", f"m = {_f(b1)}{DOT}{_f(m[i])} + {_f(_r(1 - b1))}{DOT}{_f(grad[i])} = "
                                   f"{format_value(_r(m_new[i]))}", p),
            SolutionStep("adam_v", f"v = {_f(b2)}{DOT}{_f(v[i])} + {_f(_r(1 - b2))}{DOT}{_f(grad[i])}\u00b2 = "
                                   f"{format_value(_r(v_new[i]))}", p),
            SolutionStep("adam_hat", f"m\u0302 = {format_value(_r(m_new[i]))} / (1 {MINUS} {_f(b1)}^{t}) = "
                                     f"{format_value(_r(m_hat[i]))},   "
                                     f"v\u0302 = {format_value(_r(v_new[i]))} / (1 {MINUS} {_f(b2)}^{t}) = "
                                     f"{format_value(_r(v_hat[i]))}", p),
            SolutionStep("adam_w", f"w = {format_value(w[i])} {MINUS} {_f(lr)}{DOT}{_f(_r(m_hat[i]))}"
                                   f" / (\u221a{format_value(_r(v_hat[i]))} + 10\u207b\u2078) = "
                                   f"{format_value(_r(new[i]))}", p, cell),
        ]
    return steps


_SOLVERS = {
    "conv_value": _solve_conv_value, "conv_output": _solve_conv_output, "output_size": _solve_output_size,
    "pool": _solve_pool, "relu": _solve_relu, "softmax": _solve_softmax, "cross_entropy": _solve_cross_entropy,
    "param_count": _solve_param_count, "sgd_step": _solve_sgd_step, "adam_step": _solve_adam_step,
}


def solution(exercise: Exercise) -> list[SolutionStep]:
    """The worked solution, step by step; the last step of each answer cell gives its value."""
    return _SOLVERS[exercise.kind](exercise)
