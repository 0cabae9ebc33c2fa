"""core.pool: naive vs vectorised, gradients, the tie rule, the stepper, sizes."""

import numpy as np
import pytest

from cnnlab.core.conv import Workspace
from cnnlab.core.pool import (
    KINDS,
    pool_backward,
    pool_forward,
    pool_forward_naive,
    pool_step,
    pool_step_count,
)
from gradcheck import numeric_grad, rel_error

# (size, stride): tiling, overlapping (stride < size), gaps (stride > size), 1×1, the default
WINDOWS = [(2, 2), (3, 3), (2, 1), (3, 2), (3, 1), (2, 3), (1, 1), (4, 2), (2, None)]


def distinct_values(rng, shape):
    """Values at least 0.01 apart, so a ±1e-5 nudge never changes which cell is the max."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.01 + rng.uniform(-0.002, 0.002, n)).reshape(shape)


def test_naive_matches_vectorised():
    rng = np.random.default_rng(1)
    for kind in KINDS:
        for size, stride in WINDOWS:
            for H, W in ((8, 8), (9, 11), (5, 4)):
                if size > min(H, W):
                    continue
                x = rng.standard_normal((2, 3, H, W))
                out, _ = pool_forward(x, kind, size, stride)
                naive = pool_forward_naive(x, kind, size, stride)
                np.testing.assert_allclose(out, naive, rtol=1e-12, atol=1e-12,
                                           err_msg=f"{kind} {size} {stride} {H}×{W}")
                if kind == "global_avg":
                    assert out.shape == (2, 3, 1, 1)


def test_float32_stays_float32_and_ints_become_float64():
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    for kind in KINDS:
        out, cache = pool_forward(x, kind)
        assert out.dtype == np.float32
        assert pool_backward(np.ones_like(out), cache).dtype == np.float32
    out, _ = pool_forward(x.astype(np.int64), "avg")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[0, 0], [[2.5, 4.5], [10.5, 12.5]])


def test_gradients_on_random_shapes():
    rng = np.random.default_rng(2)
    for kind in KINDS:
        for size, stride in WINDOWS:
            N, C = rng.integers(1, 3, size=2)
            H, W = rng.integers(4, 8, size=2)
            x = distinct_values(rng, (N, C, H, W))
            out, cache = pool_forward(x, kind, size, stride)
            dout = rng.standard_normal(out.shape)
            dx = pool_backward(dout, cache)
            num = numeric_grad(lambda v: pool_forward(v, kind, size, stride)[0], x, dout)
            err = rel_error(dx, num)
            assert err < 1e-6, f"{kind} size {size} stride {stride} x {x.shape}: rel error {err:.2e}"


def test_gradient_check_catches_gradient_sent_to_every_tied_cell():
    # the prototype's bug: a tied max sending its gradient to all tied cells
    x = np.zeros((1, 1, 2, 2))
    out, cache = pool_forward(x, "max")
    dx = pool_backward(np.ones_like(out), cache)
    assert dx.sum() == 1


def backprop(x, size, stride, dout):
    x = np.asarray(x, dtype=np.float64)[None, None]
    out, cache = pool_forward(x, "max", size, stride)
    return out[0, 0], pool_backward(np.asarray(dout, dtype=np.float64)[None, None], cache)[0, 0]


def test_all_equal_window_sends_everything_to_the_first_cell():
    _, dx = backprop([[5, 5], [5, 5]], 2, 2, [[3]])
    np.testing.assert_array_equal(dx, [[3, 0], [0, 0]])


def test_tie_goes_to_the_first_cell_in_row_major_order():
    # the max 5 sits at (0, 1) and (1, 0): row-major order reaches (0, 1) first
    _, dx = backprop([[1, 5], [5, 0]], 2, 2, [[1]])
    np.testing.assert_array_equal(dx, [[0, 1], [0, 0]])
    _, dx = backprop([[0, 1, 1], [1, 0, 1], [1, 1, 1]], 3, 3, [[7]])
    np.testing.assert_array_equal(dx, [[0, 7, 0], [0, 0, 0], [0, 0, 0]])


def test_relu_background_ties_match_pytorch_by_hand():
    # a blank patch after ReLU: every window is all zeros; PyTorch gives each window's
    # gradient to its top-left cell (expected array written by hand)
    _, dx = backprop(np.zeros((4, 4)), 2, 2, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(dx, [[1, 0, 2, 0],
                                       [0, 0, 0, 0],
                                       [3, 0, 4, 0],
                                       [0, 0, 0, 0]])


def test_overlapping_windows_accumulate():
    # 2×2 windows, stride 1, on a 3×3 grid: the centre is in all four windows
    out, dx = backprop([[0, 0, 0], [0, 9, 0], [0, 0, 0]], 2, 1, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(out, [[9, 9], [9, 9]])
    np.testing.assert_array_equal(dx, [[0, 0, 0], [0, 10, 0], [0, 0, 0]])
    # all equal: each window gives to its own first cell
    _, dx = backprop(np.ones((3, 3)), 2, 1, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(dx, [[1, 2, 0], [3, 4, 0], [0, 0, 0]])


def test_uncovered_cells_get_no_gradient():
    # 5×5 with 2×2 windows, stride 2: the last row and column are in no window
    x = np.arange(25.0).reshape(5, 5)
    _, dx = backprop(x, 2, 2, [[1, 2], [3, 4]])
    expected = np.zeros((5, 5))
    expected[1, 1], expected[1, 3], expected[3, 1], expected[3, 3] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx, expected)
    # gaps between windows (stride 3 > size 2) get nothing either
    x = np.arange(36.0).reshape(6, 6)
    _, dx = backprop(x, 2, 3, [[1, 2], [3, 4]])
    expected = np.zeros((6, 6))
    expected[1, 1], expected[1, 4], expected[4, 1], expected[4, 4] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx, expected)


def test_avg_and_global_avg_backward_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    out, cache = pool_forward(x, "avg", 2)
    np.testing.assert_array_equal(out[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    dx = pool_backward(np.array([[[[4.0, 8.0], [0.0, 4.0]]]]), cache)
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1]])
    out, cache = pool_forward(x, "global_avg")
    assert out.shape == (1, 1, 1, 1) and out[0, 0, 0, 0] == 7.5
    np.testing.assert_array_equal(pool_backward(np.full((1, 1, 1, 1), 16.0), cache), np.ones((1, 1, 4, 4)))


def test_workspace_reuse_gives_the_same_numbers_and_refuses_stale_caches():
    rng = np.random.default_rng(4)
    for kind in KINDS:
        for size, stride in WINDOWS:
            ws = Workspace()
            for _ in range(3):  # buffers come back holding the last step's numbers
                x = distinct_values(rng, (2, 3, 7, 8)).astype(np.float32)
                out, cache = pool_forward(x, kind, size, stride, workspace=ws)
                ref_out, ref_cache = pool_forward(x, kind, size, stride)
                np.testing.assert_array_equal(out, ref_out)
                dout = rng.standard_normal(out.shape).astype(np.float32)
                dx = pool_backward(dout, cache)
                np.testing.assert_array_equal(dx, pool_backward(dout, ref_cache), err_msg=f"{kind} {size} {stride}")
            _, stale = pool_forward(x, kind, size, stride, workspace=ws)
            pool_forward(x, kind, size, stride, workspace=ws)
            with pytest.raises(RuntimeError, match="workspace"):
                pool_backward(dout, stale)


# ---------------------------------------------------------------------------
# The stepper
# ---------------------------------------------------------------------------

def test_max_step_text_and_winner():
    step = pool_step(np.array([[3, 7], [1, 7]]), "max", 2)
    assert step.text == "max(3, 7, 1, 7) = 7"
    assert step.value == 7 and type(step.value) is int
    assert step.winner == (0, 1)
    assert step.window == [[3, 7], [1, 7]]
    assert step.window_rows == [0, 1] and step.window_cols == [0, 1]


def test_avg_step_text():
    step = pool_step(np.array([[1, 2], [3, 4]]), "avg", 2)
    assert step.text == "(1 + 2 + 3 + 4) / 4 = 2.5"
    assert step.value == 2.5 and step.winner is None
    whole = pool_step(np.array([[1, 3], [3, 5]]), "avg", 2)
    assert whole.text == "(1 + 3 + 3 + 5) / 4 = 3" and type(whole.value) is int
    negative = pool_step(np.array([[-1.5, 2], [0.25, 4]]), "avg", 2)
    assert negative.text == "((−1.5) + 2 + 0.25 + 4) / 4 = 1.1875"
    assert pool_step(np.array([[-3, -7], [-1, -2]]), "max", 2).text == "max(−3, −7, −1, −2) = −1"


def test_global_avg_step():
    x = np.arange(6).reshape(2, 3)
    step = pool_step(x, "global_avg")
    assert step.text == "(0 + 1 + 2 + 3 + 4 + 5) / 6 = 2.5"
    assert step.steps == 1 and step.window_rows == [0, 1] and step.window_cols == [0, 1, 2]


def test_step_matches_forward_at_every_position():
    rng = np.random.default_rng(3)
    for kind in KINDS:
        for size, stride in [(2, 2), (3, 2), (2, 1), (2, 3)]:
            for integer in (True, False):
                x = rng.integers(0, 4, (2, 7, 6)) if integer else rng.standard_normal((2, 7, 6))
                out, cache = pool_forward(x[None], kind, size, stride)
                count = pool_step_count(x, kind, size, stride)
                assert count == out[0].size
                dx = pool_backward(np.ones_like(out), cache)[0] if kind == "max" else None
                for k in range(count):
                    step = pool_step(x, kind, size, stride, step=k)
                    expected = out[0, step.channel, step.row, step.col]
                    if integer and kind == "max":
                        assert type(step.value) is int
                    assert step.value == pytest.approx(expected, rel=1e-12), (kind, size, stride, k)
                    if kind == "max":
                        # the winner is a cell the backward pass sends gradient to
                        assert dx[step.channel][step.winner] >= 1, (size, stride, k)


def test_step_position_and_errors():
    x = np.arange(16).reshape(4, 4)
    assert pool_step(x, "max", 2, position=(0, 1, 1)).step == 3
    assert pool_step(x, "max", 2, position=(0, 1, 1)).value == 15
    with pytest.raises(ValueError, match="4 steps"):
        pool_step(x, "max", 2, step=4)
    with pytest.raises(ValueError, match="outside"):
        pool_step(x, "max", 2, position=(1, 0, 0))
    with pytest.raises(ValueError, match="either"):
        pool_step(x, "max", 2, step=0, position=(0, 0, 0))
    with pytest.raises(ValueError, match="NaN"):
        pool_step(x * np.nan, "max", 2)


# ---------------------------------------------------------------------------
# Sizes and settings
# ---------------------------------------------------------------------------

def test_output_size_and_bad_settings():
    out, _ = pool_forward(np.zeros((1, 1, 28, 28)), "max", 2)
    assert out.shape == (1, 1, 14, 14)
    out, _ = pool_forward(np.zeros((1, 1, 7, 9)), "max", 3, 2)
    assert out.shape == (1, 1, 3, 4)
    with pytest.raises(ValueError, match=r"⌊\(2 \+ 0 − 1·\(3 − 1\) − 1\)/3⌋ \+ 1 = 0"):
        pool_forward(np.zeros((1, 1, 2, 2)), "max", 3)
    for bad in (0, -2, 1.5, "2"):
        with pytest.raises(ValueError, match="stride"):
            pool_forward(np.zeros((1, 1, 4, 4)), "max", 2, bad)
        with pytest.raises(ValueError, match="pool size"):
            pool_forward(np.zeros((1, 1, 4, 4)), "max", bad)
    with pytest.raises(ValueError, match="kind"):
        pool_forward(np.zeros((1, 1, 4, 4)), "min")
    with pytest.raises(ValueError, match="shape"):
        pool_forward(np.zeros((4, 4)), "max")
    _, cache = pool_forward(np.zeros((1, 1, 4, 4)), "max")
    with pytest.raises(ValueError, match="dout"):
        pool_backward(np.zeros((1, 1, 3, 3)), cache)


# ---------------------------------------------------------------------------
# The tiled route (stride == size) against the strided route and a direct definition
# ---------------------------------------------------------------------------

def max_pool_backward_by_definition(x, dout, size, stride):
    """Each window's gradient to its first maximum in row-major order (np.argmax of the
    flattened window), windows one at a time."""
    N, C, Ho, Wo = dout.shape
    dx = np.zeros(x.shape, dout.dtype)
    for n in range(N):
        for c in range(C):
            for p in range(Ho):
                for q in range(Wo):
                    window = x[n, c, p * stride: p * stride + size, q * stride: q * stride + size]
                    i, j = divmod(int(np.argmax(window)), size)
                    dx[n, c, p * stride + i, q * stride + j] += dout[n, c, p, q]
    return dx


def tie_heavy_inputs(rng, shape, dtype):
    """Normal values, ReLU'd small integers (mostly 0: the blank background of a digit) and
    small integers (ties everywhere)."""
    return [rng.standard_normal(shape).astype(dtype),
            np.maximum(rng.integers(-3, 3, shape), 0).astype(dtype),
            rng.integers(0, 3, shape).astype(dtype)]


def run_pool(x, kind, size, stride, dout, workspace):
    out, cache = pool_forward(x, kind, size, stride, workspace=workspace)
    picks = None if kind != "max" else (cache.col_pick.copy(), cache.row_pick.copy())
    return out.copy(), pool_backward(dout, cache).copy(), picks, cache


def test_tiled_route_is_bit_identical_to_the_strided_route(monkeypatch):
    from cnnlab.core import pool
    rng = np.random.default_rng(14)
    tiled_runs = 0
    for trial in range(60):
        size = int(rng.integers(2, 5))
        N, C = (int(v) for v in rng.integers(1, 4, size=2))
        H, W = (int(v) for v in rng.integers(size, 12, size=2))   # divisible by size or not
        dtype = (np.float32, np.float64)[trial % 2]
        for x in tie_heavy_inputs(rng, (N, C, H, W), dtype):
            for kind in ("max", "avg"):
                Ho, Wo = H // size, W // size
                dout = rng.standard_normal((N, C, Ho, Wo)).astype(dtype)
                results = []
                for tiled in (True, False):
                    monkeypatch.setattr(pool, "_TILED", tiled)
                    ws = Workspace()
                    run_pool(x, kind, size, size, dout, ws)            # and again: buffers reused
                    *got, cache = run_pool(x, kind, size, size, dout, ws)
                    assert (cache.tiled is not None) == tiled
                    tiled_runs += tiled
                    results.append(got)
                (out, dx, picks), (out2, dx2, picks2) = results
                label = f"{kind} size {size} x {x.shape} {np.dtype(dtype).name}"
                assert out.dtype == dx.dtype == dtype, label
                np.testing.assert_array_equal(out, out2, err_msg=label)
                np.testing.assert_array_equal(dx, dx2, err_msg=label)
                if kind == "max":
                    np.testing.assert_array_equal(picks[0], picks2[0], err_msg=label)
                    np.testing.assert_array_equal(picks[1], picks2[1], err_msg=label)
    assert tiled_runs == 60 * 3 * 2


def test_both_routes_match_the_definition_with_ties(monkeypatch):
    """Max pooling, every window setting (stride == size takes the tiled route, the others
    the strided one; odd sizes leave cells out), against window-by-window loops."""
    from cnnlab.core import pool
    rng = np.random.default_rng(15)
    for size, stride in WINDOWS:
        for H, W in ((6, 6), (7, 9), (5, 4)):
            stride_ = size if stride is None else stride
            if size > min(H, W):
                continue
            for dtype in (np.float32, np.float64):
                for x in tie_heavy_inputs(rng, (2, 3, H, W), dtype):
                    for tiled in (True, False):
                        monkeypatch.setattr(pool, "_TILED", tiled)
                        out, cache = pool_forward(x, "max", size, stride, workspace=Workspace())
                        dout = rng.integers(1, 9, out.shape).astype(dtype)   # exact sums
                        dx = pool_backward(dout, cache)
                        label = f"size {size} stride {stride} {H}×{W} {np.dtype(dtype).name} tiled {tiled}"
                        np.testing.assert_array_equal(out, pool_forward_naive(x, "max", size, stride), label)
                        np.testing.assert_array_equal(dx, max_pool_backward_by_definition(x, dout, size, stride_),
                                                      label)


def test_tiled_route_workspace_follows_shape_changes_and_strided_inputs():
    rng = np.random.default_rng(16)
    ws = Workspace()
    for N, H in ((4, 8), (3, 8), (4, 6), (4, 8)):   # an epoch's smaller last batch, another size
        x = np.maximum(rng.integers(-2, 3, (N, 2, H, H)), 0).astype(np.float32)
        out, cache = pool_forward(x, "max", 2, workspace=ws)
        assert cache.tiled is not None
        dout = rng.standard_normal(out.shape).astype(np.float32)
        np.testing.assert_array_equal(out, pool_forward_naive(x, "max", 2))
        np.testing.assert_array_equal(pool_backward(dout, cache), max_pool_backward_by_definition(x, dout, 2, 2))
    # a non-contiguous input (a transposed view) takes the strided route, same numbers
    x = rng.standard_normal((2, 3, 8, 6)).transpose(0, 1, 3, 2)
    out, cache = pool_forward(x, "max", 2, workspace=ws)
    assert cache.tiled is None
    np.testing.assert_array_equal(out, pool_forward_naive(x, "max", 2))
    # a cache made stale by a later forward is still refused
    _, stale = pool_forward(np.ones((1, 1, 4, 4), np.float32), "max", 2, workspace=ws)
    pool_forward(np.ones((1, 1, 4, 4), np.float32), "max", 2, workspace=ws)
    with pytest.raises(RuntimeError, match="later forward"):
        pool_backward(np.ones((1, 1, 2, 2), np.float32), stale)


def test_tiled_route_same_bits_as_strided_route_and_rereads_a_reused_input(monkeypatch):
    """The tiled route copies x's window columns into contiguous planes before comparing
    (core/pool.py): outputs, picks and gradients keep the strided route's exact bits (signed
    zeros included), and a layer's input buffer refilled in place between steps is read
    afresh, not taken from the last step's copy."""
    from cnnlab.core import pool
    rng = np.random.default_rng(17)
    for shape in ((64, 8, 28, 28), (32, 8, 8, 8), (3, 2, 7, 9), (2, 3, 5, 4)):
        for dtype in (np.float32, np.float64):
            signed_zeros = np.where(rng.random(shape) < 0.5, -0.0, 0.0).astype(dtype)
            for x in tie_heavy_inputs(rng, shape, dtype) + [signed_zeros]:
                Ho, Wo = shape[2] // 2, shape[3] // 2
                dout = rng.standard_normal((shape[0], shape[1], Ho, Wo)).astype(dtype)
                results = []
                for tiled in (True, False):
                    monkeypatch.setattr(pool, "_TILED", tiled)
                    results.append(run_pool(x, "max", 2, 2, dout, Workspace())[:3])
                (out, dx, picks), (out2, dx2, picks2) = results
                label = f"{shape} {np.dtype(dtype).name}"
                assert out.tobytes() == out2.tobytes(), label
                assert dx.tobytes() == dx2.tobytes(), label
                assert picks[0].tobytes() == picks2[0].tobytes() and picks[1].tobytes() == picks2[1].tobytes(), label
    monkeypatch.setattr(pool, "_TILED", True)
    ws, x = Workspace(), np.empty((4, 3, 8, 6), np.float32)
    for trial in range(3):
        x[...] = tie_heavy_inputs(rng, x.shape, np.float32)[trial]   # same buffer, new numbers
        out, cache = pool_forward(x, "max", 2, workspace=ws)
        assert cache.tiled is not None
        dout = rng.integers(1, 9, out.shape).astype(np.float32)
        np.testing.assert_array_equal(out, pool_forward_naive(x, "max", 2))
        np.testing.assert_array_equal(pool_backward(dout, cache), max_pool_backward_by_definition(x, dout, 2, 2))
