"""The exercise engine (core/exercises.py): every kind's answer recomputed independently
(plain loops and math, or the engine's own layers: conv_forward, pool_forward,
relu_forward, cross_entropy, SGD/Adam), seeded reproducibility, the checker."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cnnlab.core import exercises as exmod
from cnnlab.core.activations import relu_forward
from cnnlab.core.conv import conv_forward
from cnnlab.core.exercises import KINDS, LEVELS, Exercise, check, generate, solution
from cnnlab.core.losses import cross_entropy
from cnnlab.core.optim import SGD, Adam
from cnnlab.core.pool import pool_forward

SEEDS = range(40)


# ------------------------------------------------------------------ independent answers

def loop_conv(x, w, b, stride, pad, dil):
    """Plain loops over a zero-padded copy: out[i, j] = Σ_c Σ_a Σ_b x[c, iS + aD, jS + bD]·w[c, a, b] + b."""
    C, H, W = len(x), len(x[0]), len(x[0][0])
    K = len(w[0])
    P = [[[0] * (W + 2 * pad) for _ in range(H + 2 * pad)] for _ in range(C)]
    for c in range(C):
        for i in range(H):
            for j in range(W):
                P[c][i + pad][j + pad] = x[c][i][j]
    span = dil * (K - 1) + 1
    Ho = (H + 2 * pad - span) // stride + 1
    Wo = (W + 2 * pad - span) // stride + 1
    out = [[0] * Wo for _ in range(Ho)]
    for i in range(Ho):
        for j in range(Wo):
            s = 0 if b is None else b
            for c in range(C):
                for a in range(K):
                    for bb in range(K):
                        s += P[c][i * stride + a * dil][j * stride + bb * dil] * w[c][a][bb]
            out[i][j] = s
    return out


def loop_pool(x, mode, size, stride):
    H = len(x)
    Ho = (H - size) // stride + 1
    out = []
    for i in range(Ho):
        row = []
        for j in range(Ho):
            vals = [x[i * stride + a][j * stride + b] for a in range(size) for b in range(size)]
            row.append(max(vals) if mode == "max" else sum(vals) / len(vals))
        out.append(row)
    return out


def expected(ex: Exercise):
    """The answer recomputed without core/exercises.py."""
    g = ex.givens
    k = ex.kind
    if k in ("conv_value", "conv_output"):
        out = loop_conv(g["x"], g["w"], g["bias"], g["stride"], g["padding"], g["dilation"])
        if k == "conv_value":
            return out[g["row"]][g["col"]]
        return out
    if k == "output_size":
        return (g["n"] + 2 * g["padding"] - g["dilation"] * (g["k"] - 1) - 1) // g["stride"] + 1
    if k == "pool":
        return loop_pool(g["x"], g["mode"], g["size"], g["stride"])
    if k == "relu":
        return [[max(0, v) for v in row] for row in g["x"]]
    if k == "softmax":
        e = [math.exp(z) for z in g["logits"]]
        return [v / sum(e) for v in e]
    if k == "cross_entropy":
        if "q" in g:
            return -math.log(g["q"][g["label"]])
        e = [math.exp(z) for z in g["logits"]]
        return -math.log(e[g["label"]] / sum(e))
    if k == "param_count":
        if g["layer"] == "conv":
            return (g["k"] ** 2 * g["c_in"] + 1) * g["filters"]
        if g["layer"] == "dense":
            n_in = g.get("n_in") or math.prod(g["input_shape"])
            return (n_in + 1) * g["n_out"]
        H = g["input_shape"][0]
        Ho = (H + 2 * g["padding"] - g["k"]) // g["stride"] + 1
        return (Ho * Ho * g["filters"] + 1) * g["n_out"]
    if k == "sgd_step":
        if isinstance(g["w"], list):
            return [w - g["lr"] * d for w, d in zip(g["w"], g["g"])]
        return g["w"] - g["lr"] * g["g"]
    if k == "adam_step":
        def one(w, d, m, v):
            m = g["beta1"] * m + (1 - g["beta1"]) * d
            v = g["beta2"] * v + (1 - g["beta2"]) * d * d
            mh = m / (1 - g["beta1"] ** g["t"])
            vh = v / (1 - g["beta2"] ** g["t"])
            return w - g["lr"] * mh / (math.sqrt(vh) + g["eps"])
        if isinstance(g["w"], list):
            return [one(*a) for a in zip(g["w"], g["g"], g["m"], g["v"])]
        return one(g["w"], g["g"], g["m"], g["v"])
    raise AssertionError(k)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_answer_recomputed_by_loops(kind, level):
    for seed in SEEDS:
        ex = generate(kind, seed, level)
        want = np.asarray(expected(ex), dtype=np.float64)
        assert ex.answer.shape == want.shape, (kind, seed, level)
        np.testing.assert_allclose(ex.answer.astype(np.float64), want, rtol=0, atol=1e-9,
                                   err_msg=f"{kind} seed={seed} level={level} givens={ex.givens}")
        # whole-number kinds are exact integers; real kinds carry a tolerance
        if ex.tolerance == 0:
            assert ex.answer.dtype.kind == "i"
        else:
            assert ex.answer.dtype.kind == "f"


@pytest.mark.parametrize("level", LEVELS)
def test_conv_and_pool_and_relu_agree_with_the_engine_layers(level):
    for seed in SEEDS:
        ex = generate("conv_output", seed, level)
        g = ex.givens
        b = np.array([g["bias"] or 0.0])
        out, _ = conv_forward(np.array(g["x"], float)[None], np.array(g["w"], float)[None], b,
                              g["stride"], g["padding"], g["dilation"])
        np.testing.assert_array_equal(out[0, 0], ex.answer)

        ex = generate("pool", seed, level)
        g = ex.givens
        out, _ = pool_forward(np.array(g["x"], float)[None, None], g["mode"], g["size"], g["stride"])
        np.testing.assert_array_equal(out[0, 0], ex.answer)

        ex = generate("relu", seed, level)
        np.testing.assert_array_equal(relu_forward(np.array(ex.givens["x"], float))[0], ex.answer)


@pytest.mark.parametrize("level", LEVELS)
def test_losses_and_optimizers_agree_with_the_engine(level):
    for seed in SEEDS:
        ex = generate("cross_entropy", seed, level)
        g = ex.givens
        if "logits" in g:
            loss = cross_entropy(np.array([g["logits"]], float), np.array([g["label"]]))
            loss = loss[0] if isinstance(loss, tuple) else loss
            assert float(loss) == pytest.approx(float(ex.answer), abs=1e-9)

        ex = generate("sgd_step", seed, level)
        g = ex.givens
        w = np.atleast_1d(np.array(g["w"], float))
        SGD(g["lr"]).step([("w", w, np.atleast_1d(np.array(g["g"], float)))])
        np.testing.assert_allclose(w, np.atleast_1d(ex.answer), atol=1e-12)

        ex = generate("adam_step", seed, level)
        g = ex.givens
        w = np.atleast_1d(np.array(g["w"], float))
        opt = Adam(g["lr"], g["beta1"], g["beta2"], g["eps"])
        # put the optimizer in the state the exercise gives: t − 1 steps done, moments m, v
        opt.step([("w", w.copy(), np.zeros_like(w))])
        st = opt.state["w"]
        st["m"][...] = np.atleast_1d(g["m"])
        st["v"][...] = np.atleast_1d(g["v"])
        opt.t = g["t"] - 1
        opt.step([("w", w, np.atleast_1d(np.array(g["g"], float)))])
        np.testing.assert_allclose(w, np.atleast_1d(ex.answer), atol=1e-12)


# ------------------------------------------------------------------ seeds and levels

def _key(ex):
    return json.dumps(ex.givens, sort_keys=True)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_exercise_and_different_seeds_differ(kind):
    for level in LEVELS:
        a, b = generate(kind, 1234, level), generate(kind, 1234, level)
        assert _key(a) == _key(b)
        np.testing.assert_array_equal(a.answer, b.answer)
        distinct = {_key(generate(kind, s, level)) for s in range(30)}
        assert len(distinct) >= 20, (kind, level, len(distinct))
        assert _key(generate(kind, 1, level)) != _key(generate(kind, 2, level))


def test_the_kinds_do_not_share_a_random_stream():
    """Seed 5 of one kind is not seed 5 of another in disguise (same sizes, same numbers)."""
    a = generate("conv_value", 5).givens["x"]
    b = generate("conv_output", 5).givens["x"]
    assert a != b


def test_generation_is_stable_across_runs():
    """A seed shared in class on Monday gives the same exercise on Tuesday: pinned values."""
    ex = generate("conv_value", 7, 1)
    assert ex.givens["x"][0][0] == [7, 8, 7, 4, 7]
    assert ex.givens["w"][0] == [[-1, 1, 2], [1, -2, -2], [-1, -2, 0]]
    assert (ex.givens["row"], ex.givens["col"], int(ex.answer)) == (1, 1, -32)


def test_levels_grow():
    for seed in range(20):
        one, three = generate("conv_value", seed, 1).givens, generate("conv_value", seed, 3).givens
        assert len(one["x"]) == 1 and len(three["x"]) == 2          # channels at level 3
        assert (one["stride"], one["padding"], one["dilation"]) == (1, 0, 1)
        assert one["bias"] is None and three["bias"] is not None
        two = generate("conv_output", seed, 2).givens
        assert (two["stride"], two["padding"]) != (1, 0)
        assert generate("output_size", seed, 3).givens["dilation"] >= 2
        assert np.shape(generate("relu", seed, 1).answer) == (3, 3)
        assert np.shape(generate("relu", seed, 3).answer) == (5, 5)
    sizes = {generate("conv_output", s, lv).answer.shape for s in range(40) for lv in LEVELS}
    assert sizes <= {(2, 2), (3, 3)}


def test_level_1_conv_matches_the_slides_shape():
    """Level 1 is the slides' exercise: a 5×5 matrix, a 3×3 kernel, no padding, stride 1."""
    for s in range(10):
        g = generate("conv_value", s, 1).givens
        assert np.shape(g["x"]) == (1, 5, 5) and np.shape(g["w"]) == (1, 3, 3)
        assert g["out_shape"] == [3, 3]


def test_average_pooling_always_comes_out_whole():
    seen = 0
    for lv in LEVELS:
        for s in range(60):
            ex = generate("pool", s, lv)
            if ex.givens["mode"] == "avg":
                seen += 1
                raw = np.array(loop_pool(ex.givens["x"], "avg", ex.givens["size"], ex.givens["stride"]))
                assert np.all(raw == np.round(raw))
    assert seen > 30


def test_givens_are_plain_json():
    for kind in KINDS:
        for lv in LEVELS:
            ex = generate(kind, 3, lv)
            assert json.loads(json.dumps(ex.givens)) == ex.givens


@pytest.mark.parametrize("bad", [("nope", 1, 1), ("relu", 1, 0), ("relu", 1, 4), ("relu", -1, 1),
                                 ("relu", 1.5, 1), ("relu", True, 1), ("relu", 2**63, 1), ("relu", 1, "2")])
def test_generate_refuses_bad_arguments(bad):
    kind, seed, level = bad
    with pytest.raises(ValueError):
        generate(kind, seed, level)


def test_the_answer_cannot_be_changed():
    ex = generate("relu", 1)
    with pytest.raises(ValueError):
        ex.answer[0, 0] = 99


# ------------------------------------------------------------------ the checker

def test_check_exact_marks_the_wrong_cells():
    ex = generate("conv_output", 11, 2)
    ans = ex.answer.copy()
    assert check(ex, ans).correct
    assert not check(ex, ans).wrong.any()
    bad = ans.copy()
    bad[0, 1] += 1
    bad[-1, -1] -= 5
    v = check(ex, bad.tolist())
    assert not v.correct
    assert v.wrong.shape == ex.answer.shape and v.wrong.dtype == bool
    assert sorted(zip(*np.nonzero(v.wrong))) == sorted([(0, 1), (ans.shape[0] - 1, ans.shape[1] - 1)])
    # integers are exact: 0.4 off is wrong, even though it rounds to the right number
    near = ans.astype(float)
    near[1, 0] += 0.4
    assert check(ex, near).wrong.tolist() == (np.arange(ans.size).reshape(ans.shape) == ans.shape[1]).tolist()


def test_check_tolerance_is_inclusive_and_stated():
    ex = generate("softmax", 4, 2)
    assert ex.tolerance == 0.01
    q = ex.answer
    inside = q + np.array([0.0099, -0.0099, 0.005, -0.01])[: q.size]
    assert check(ex, inside).correct
    outside = q.copy()
    outside[2] += 0.0102
    v = check(ex, outside)
    assert not v.correct and v.wrong.tolist() == [False, False, True] + [False] * (q.size - 3)
    # two decimals, as a student writes them, always pass
    assert check(ex, np.round(q, 2)).correct


def test_check_scalar_answers():
    ex = generate("cross_entropy", 9, 1)
    assert ex.answer.shape == ()
    assert check(ex, round(float(ex.answer), 2)).correct
    assert check(ex, str(round(float(ex.answer), 3))).correct
    v = check(ex, float(ex.answer) + 0.02)
    assert not v.correct and v.wrong.shape == () and bool(v.wrong)
    ex = generate("output_size", 9, 2)
    assert check(ex, int(ex.answer)).correct
    assert not check(ex, int(ex.answer) + 1).correct


@pytest.mark.parametrize("answer, message", [
    ([[1, 2], [3]], "numbers"),
    ("abc", "numbers"),
    ([1, 2, 3], "shape"),
    ([[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 1, 1]], "shape"),
    ([[float("nan"), 0, 0], [0, 0, 0], [0, 0, 0]], "NaN"),
    ([[float("inf"), 0, 0], [0, 0, 0], [0, 0, 0]], "infinity"),
])
def test_check_refuses_bad_answers(answer, message):
    ex = generate("relu", 2, 1)   # 3×3
    with pytest.raises(ValueError, match=message):
        check(ex, answer)


# ------------------------------------------------------------------ worked solutions

@pytest.mark.parametrize("kind", KINDS)
def test_solution_fills_every_cell_with_its_value(kind):
    for level in LEVELS:
        for seed in range(8):
            ex = generate(kind, seed, level)
            steps = solution(ex)
            assert steps and all(s.key and s.text for s in steps)
            cells = [c for s in steps for c in s.cells]
            want = {()} if ex.answer.shape == () else {tuple(i) for i in np.ndindex(ex.answer.shape)}
            assert set(cells) == want
            # the step that gives a cell ends with that cell's value (rounded as shown)
            for s in steps:
                if len(s.cells) == 1:
                    shown = s.text.rsplit("= ", 1)[1].replace("\u2212", "-")
                    value = float(ex.answer[s.cells[0]])
                    assert float(shown) == pytest.approx(value, abs=1e-4), (kind, s.text, value)


def test_solution_writes_the_dot_product_like_the_slides():
    """The slides' own numbers through the solution writer: 35·(−2) + … = 78."""
    x = [[35, 40, 41, 45, 50], [40, 40, 42, 46, 52], [42, 46, 50, 55, 55],
         [48, 52, 56, 58, 60], [56, 60, 65, 70, 75]]
    w = [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]
    g = {"x": [x], "w": [w], "bias": None, "stride": 1, "padding": 0, "dilation": 1,
         "out_shape": [3, 3], "row": 0, "col": 0}
    ex = Exercise("conv_value", 0, 1, g, np.asarray(78), 0.0)
    step = solution(ex)[-1]
    assert step.text == ("35·(−2) + 40·(−1) + 41·0 + 40·(−1) + 40·1 + 42·1 + 42·0 + 46·1 + 50·2 = 78")
    assert step.window == {"rows": [0, 1, 2], "cols": [0, 1, 2]}
    g = dict(g, col=1)
    assert solution(Exercise("conv_value", 0, 1, g, np.asarray(87), 0.0))[-1].text.endswith("= 87")


def test_format_value():
    f = exmod.format_value
    assert [f(3), f(-3), f(0.5), f(-0.00009), f(2.0), f(-0.0), f(1 / 3)] == \
        ["3", "\u22123", "0.5", "\u22120.00009", "2", "0", "0.333333"]
