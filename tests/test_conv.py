"""core.conv: the seed's worked example, naive vs vectorised, the stepper, gradients, padding."""

import numpy as np
import pytest

from cnnlab.core import conv
from cnnlab.core.conv import (
    OutputSizeError,
    Workspace,
    conv_backward,
    conv_forward,
    conv_forward_naive,
    conv_step,
    conv_step_count,
    format_factor,
    format_number,
    output_size,
    output_size_formula,
    resolve_padding,
)
from gradcheck import numeric_grad, rel_error

# The slides' 5×5 input and 3×3 kernel ("Kernels" section of the seed).
SEED_X = [
    [35, 40, 41, 45, 50],
    [40, 40, 42, 46, 52],
    [42, 46, 50, 55, 55],
    [48, 52, 56, 58, 60],
    [56, 60, 65, 70, 75],
]
SEED_K = [
    [-2, -1, 0],
    [-1, 1, 1],
    [0, 1, 2],
]
SEED_TEXT_0 = "35·(−2) + 40·(−1) + 41·0 + 40·(−1) + 40·1 + 42·1 + 42·0 + 46·1 + 50·2 = 78"
SEED_TEXT_1 = "40·(−2) + 41·(−1) + 45·0 + 40·(−1) + 42·1 + 46·1 + 46·0 + 50·1 + 55·2 = 87"


def seed_by_hand(kernel=SEED_K):
    """The 3×3 valid output worked out with plain Python sums, as on the slide."""
    return [[sum(SEED_X[r + i][c + j] * kernel[i][j] for i in range(3) for j in range(3))
             for c in range(3)] for r in range(3)]


# ---------------------------------------------------------------------------
# The seed's worked example
# ---------------------------------------------------------------------------

def test_seed_example_by_hand_is_the_slide():
    expected = seed_by_hand()
    assert expected[0][0] == 78
    assert expected[0][1] == 87


@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.float32])
def test_seed_example_forward_and_naive(dtype):
    x = np.array(SEED_X, dtype=dtype)[None, None]
    w = np.array(SEED_K, dtype=dtype)[None, None]
    expected = np.array(seed_by_hand(), dtype=np.float64)[None, None]
    out, _ = conv_forward(x, w, None)
    assert out.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(conv_forward_naive(x, w, None), expected)
    assert out[0, 0, 0, 0] == 78 and out[0, 0, 0, 1] == 87


@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.int32])
def test_seed_example_steps(dtype):
    x = np.array(SEED_X, dtype=dtype)
    w = np.array(SEED_K, dtype=dtype)
    expected = seed_by_hand()
    first, second = conv_step(x, w, step=0), conv_step(x, w, step=1)
    assert first.text == SEED_TEXT_0
    assert second.text == SEED_TEXT_1
    assert first.value == 78 and type(first.value) is int
    assert second.value == 87 and type(second.value) is int
    assert first.steps == 9 == conv_step_count(x, w)
    for k in range(9):
        step = conv_step(x, w, step=k)
        assert (step.filter, step.row, step.col) == (0, k // 3, k % 3)
        assert step.value == expected[k // 3][k % 3]
        assert type(step.value) is int
        assert all(type(t.input) is int and type(t.weight) is int and type(t.product) is int for t in step.terms)


def test_seed_step_terms_and_window():
    step = conv_step(np.array(SEED_X), np.array(SEED_K), position=(0, 0, 1))
    assert step.step == 1
    assert step.window_rows == [0, 1, 2] and step.window_cols == [1, 2, 3]
    assert [t.input for t in step.terms] == [40, 41, 45, 40, 42, 46, 46, 50, 55]
    assert [t.weight for t in step.terms] == [-2, -1, 0, -1, 1, 1, 0, 1, 2]
    assert [(t.row, t.col) for t in step.terms[:3]] == [(0, 1), (0, 2), (0, 3)]
    assert not any(t.padding for t in step.terms)
    assert step.channel_sums == [87] and step.bias is None


def test_seed_step_with_bias_and_padding():
    x, w = np.array(SEED_X), np.array(SEED_K)
    step = conv_step(x, w, b=[-3], padding=1, step=0)
    # the window hangs over the top-left corner: rows/cols −1, 0, 1
    assert step.window_rows == [-1, 0, 1] and step.window_cols == [-1, 0, 1]
    assert step.padded_rows == [0, 1, 2] and step.padded_cols == [0, 1, 2]
    assert [t.padding for t in step.terms] == [True, True, True, True, False, False, True, False, False]
    by_hand = 35 * 1 + 40 * 1 + 40 * 1 + 40 * 2 - 3
    assert step.value == by_hand and type(step.value) is int
    assert step.text == f"0·(−2) + 0·(−1) + 0·0 + 0·(−1) + 35·1 + 40·1 + 0·0 + 40·1 + 40·2 + (−3) = {by_hand}"
    assert step.steps == 25


def test_step_text_for_fractions_is_compact():
    x = np.array(SEED_X, dtype=np.float64) / 10
    w = np.array(SEED_K, dtype=np.float64)
    step = conv_step(x, w)
    assert type(step.value) is float
    assert step.value == pytest.approx(7.8)
    assert step.text == "3.5·(−2) + 4·(−1) + 4.1·0 + 4·(−1) + 4·1 + 4.2·1 + 4.2·0 + 4.6·1 + 5·2 = 7.8"


def test_negative_first_factor_in_parentheses():
    step = conv_step(np.array([[-2, 3]]), np.array([[4, -5]]))
    assert step.text == "(−2)·4 + 3·(−5) = −23"


def test_format_number():
    assert format_number(78) == "78"
    assert format_number(78.0000001) == "78"
    assert format_number(np.float32(0.78431374)) == "0.7843"
    assert format_number(2.5) == "2.5"
    assert format_number(-1) == "−1"
    assert format_number(-0.0) == "0"
    assert format_number(-1e-15) == "0"
    assert format_number(-1e-9) == "−1e−9"
    assert format_number(3e-5) == "3e−5"
    assert format_factor(-1) == "(−1)"
    assert format_factor(2) == "2"


# ---------------------------------------------------------------------------
# Naive vs vectorised, stepper vs vectorised
# ---------------------------------------------------------------------------

PADDINGS = [0, 1, 2, "valid", "same", ((1, 0), (0, 2))]


def random_configs(seed, count, small=False):
    """Random (shapes, settings) whose kernel fits; even and 1×1 kernels included."""
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        N, C, F = rng.integers(1, 3 if small else 4, size=3)
        H, W = rng.integers(3, 7 if small else 10, size=2)
        HH, WW = rng.choice([1, 2, 3, 4], size=2)
        cfg = dict(N=int(N), C=int(C), F=int(F), H=int(H), W=int(W), HH=int(HH), WW=int(WW),
                   stride=int(rng.integers(1, 4)), padding=PADDINGS[rng.integers(len(PADDINGS))],
                   dilation=int(rng.integers(1, 4)), mode=conv.MODES[rng.integers(2)],
                   bias=bool(rng.integers(2)))
        try:
            conv.conv_geometry(cfg["H"], cfg["W"], cfg["HH"], cfg["WW"], cfg["stride"], cfg["padding"],
                               cfg["dilation"])
        except OutputSizeError:
            continue
        configs.append(cfg)
    return configs


def make_arrays(cfg, rng):
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"]))
    w = rng.standard_normal((cfg["F"], cfg["C"], cfg["HH"], cfg["WW"]))
    b = rng.standard_normal(cfg["F"]) if cfg["bias"] else None
    return x, w, b


def settings(cfg):
    return dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], mode=cfg["mode"])


def test_random_configs_cover_what_they_claim():
    configs = random_configs(1, 40)
    assert {c["mode"] for c in configs} == set(conv.MODES)
    assert {c["stride"] for c in configs} == {1, 2, 3}
    assert {c["dilation"] for c in configs} == {1, 2, 3}
    assert {str(c["padding"]) for c in configs} == {str(p) for p in PADDINGS}
    assert any(c["HH"] == c["WW"] == 1 for c in configs)
    assert any(c["HH"] % 2 == 0 for c in configs)


def test_naive_matches_vectorised_on_random_configs():
    rng = np.random.default_rng(2)
    for cfg in random_configs(1, 40):
        x, w, b = make_arrays(cfg, rng)
        out, _ = conv_forward(x, w, b, **settings(cfg))
        naive = conv_forward_naive(x, w, b, **settings(cfg))
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, naive, rtol=1e-12, atol=1e-12, err_msg=str(cfg))


def test_float32_stays_float32():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = np.zeros(4, np.float32)
    out, cache = conv_forward(x, w, b, padding=1)
    assert out.dtype == np.float32
    dx, dw, db = conv_backward(np.ones_like(out), cache)
    assert dx.dtype == dw.dtype == db.dtype == np.float32
    np.testing.assert_allclose(out, conv_forward_naive(x.astype(np.float64), w.astype(np.float64), b, padding=1),
                               rtol=1e-5, atol=1e-5)


def test_convolution_mode_flips_the_kernel():
    x = np.array(SEED_X)[None, None]
    flipped = [row[::-1] for row in SEED_K[::-1]]
    expected = np.array(seed_by_hand(flipped), dtype=np.float64)[None, None]
    out, _ = conv_forward(x, np.array(SEED_K)[None, None], None, mode="convolution")
    np.testing.assert_array_equal(out, expected)
    step = conv_step(np.array(SEED_X), np.array(SEED_K), mode="convolution")
    assert step.value == expected[0, 0, 0, 0]
    # the first window cell meets the kernel's last cell
    assert (step.terms[0].kernel_row, step.terms[0].kernel_col, step.terms[0].weight) == (2, 2, 2)
    with pytest.raises(ValueError, match="mode"):
        conv_forward(x, np.array(SEED_K)[None, None], None, mode="correlation")


def test_step_matches_forward_at_every_position():
    rng = np.random.default_rng(4)
    cases = [
        dict(C=2, F=2, H=6, W=7, HH=3, WW=3, stride=1, padding="same", dilation=1, mode="cross-correlation"),
        dict(C=3, F=2, H=7, W=6, HH=2, WW=3, stride=2, padding=1, dilation=2, mode="convolution"),
        dict(C=1, F=3, H=5, W=5, HH=4, WW=2, stride=1, padding=((2, 1), (0, 1)), dilation=1, mode="convolution"),
        dict(C=2, F=1, H=8, W=5, HH=1, WW=1, stride=3, padding="valid", dilation=1, mode="cross-correlation"),
    ]
    for cfg in cases:
        kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], mode=cfg["mode"])
        for integer in (False, True):
            shape_x, shape_w = (cfg["C"], cfg["H"], cfg["W"]), (cfg["F"], cfg["C"], cfg["HH"], cfg["WW"])
            if integer:
                x, w, b = rng.integers(-9, 10, shape_x), rng.integers(-3, 4, shape_w), rng.integers(-5, 6, cfg["F"])
            else:
                x, w, b = rng.standard_normal(shape_x), rng.standard_normal(shape_w), rng.standard_normal(cfg["F"])
            out, _ = conv_forward(x[None], w, b, **kw)
            count = conv_step_count(x, w, cfg["stride"], cfg["padding"], cfg["dilation"])
            assert count == out[0].size, cfg
            for k in range(count):
                step = conv_step(x, w, b, step=k, **kw)
                expected = out[0, step.filter, step.row, step.col]
                assert step.out_shape == out.shape[1:]
                assert len(step.terms) == cfg["C"] * cfg["HH"] * cfg["WW"]
                if integer:
                    assert type(step.value) is int and step.value == expected, (cfg, k)
                else:
                    assert step.value == pytest.approx(expected, rel=1e-12, abs=1e-12), (cfg, k)
                assert sum(step.channel_sums) + step.bias == pytest.approx(step.value)
                for t in step.terms:
                    inside = 0 <= t.row < cfg["H"] and 0 <= t.col < cfg["W"]
                    assert t.padding is (not inside)
                    assert t.input == (x[t.channel, t.row, t.col] if inside else 0)


def test_step_position_and_errors():
    x, w = np.array(SEED_X), np.array(SEED_K)
    assert conv_step(x, w, position=(0, 2, 1)).step == 7
    with pytest.raises(ValueError, match="9 steps"):
        conv_step(x, w, step=9)
    with pytest.raises(ValueError, match="outside"):
        conv_step(x, w, position=(0, 3, 0))
    with pytest.raises(ValueError, match="either"):
        conv_step(x, w, step=0, position=(0, 0, 0))
    with pytest.raises(ValueError, match="NaN"):
        conv_step(x * np.nan, w)
    with pytest.raises(ValueError, match="channels"):
        conv_step(np.zeros((2, 5, 5)), np.zeros((1, 3, 3, 3)))


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------

def check_conv_gradients(cfg, rng, need_dx=True):
    x, w, b = make_arrays(cfg, rng)
    kw = settings(cfg)
    out, cache = conv_forward(x, w, b, **kw)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv_backward(dout, cache, need_dx=need_dx)
    if need_dx:
        num = numeric_grad(lambda v: conv_forward(v, w, b, **kw)[0], x, dout)
        assert rel_error(dx, num) < 1e-6, f"dx wrong for {cfg}: rel error {rel_error(dx, num):.2e}"
    else:
        assert dx is None
    num = numeric_grad(lambda v: conv_forward(x, v, b, **kw)[0], w, dout)
    assert rel_error(dw, num) < 1e-6, f"dw wrong for {cfg}: rel error {rel_error(dw, num):.2e}"
    if b is None:
        assert db is None, cfg
    else:
        num = numeric_grad(lambda v: conv_forward(x, w, v, **kw)[0], b, dout)
        assert rel_error(db, num) < 1e-6, f"db wrong for {cfg}: rel error {rel_error(db, num):.2e}"
    return dx, dw, db


def test_gradients_on_random_configs():
    rng = np.random.default_rng(5)
    configs = random_configs(6, 24, small=True)
    assert {c["mode"] for c in configs} == set(conv.MODES)
    for cfg in configs:
        check_conv_gradients(cfg, rng)


def test_gradients_with_the_tiny_model_layer_and_no_dx():
    cfg = dict(N=2, C=1, F=3, H=6, W=6, HH=3, WW=3, stride=1, padding=1, dilation=1, mode="cross-correlation",
               bias=True)
    check_conv_gradients(cfg, np.random.default_rng(7), need_dx=False)


def test_gradient_check_catches_a_wrong_gradient():
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((2, 2, 3, 3))
    out, cache = conv_forward(x, w, None)
    dout = rng.standard_normal(out.shape)
    _, dw, _ = conv_backward(dout, cache)
    num = numeric_grad(lambda v: conv_forward(x, v, None)[0], w, dout)
    assert rel_error(dw, num) < 1e-6
    wrong = dw.copy()
    wrong[1, 0, 2, 1] *= 1.01
    assert rel_error(wrong, num) > 1e-6
    # a kernel flipped the wrong way round is caught too
    assert rel_error(dw[:, :, ::-1, ::-1], num) > 1e-2


def test_banded_path_matches_whole_batch_path(monkeypatch):
    """Large inputs run im2col in cache-sized pieces (groups of images, bands of rows) and
    cut dw's inner dimension; shrink the thresholds so small arrays take those paths."""
    rng = np.random.default_rng(9)
    pieced = 0
    for cfg in random_configs(10, 10, small=True):
        x, w, b = make_arrays(cfg, rng)
        kw = settings(cfg)
        out, cache = conv_forward(x, w, b, **kw)
        dout = rng.standard_normal(out.shape)
        expected = conv_backward(dout, cache)
        K1 = cfg["C"] * cfg["HH"] * cfg["WW"] + 1
        row_bytes = K1 * out.shape[3] * 8
        for whole, band, piece in [(0, row_bytes * out.shape[2], 7), (0, row_bytes, 3), (0, 2 * row_bytes, 5)]:
            with monkeypatch.context() as m:
                m.setattr(conv, "_WHOLE_BATCH_BYTES", whole)
                m.setattr(conv, "_BAND_BYTES", band)
                m.setattr(conv, "_DW_PIECE", piece)
                out2, cache2 = conv_forward(x, w, b, **kw)
                pieced += cache2.cols is None
                got = conv_backward(dout, cache2)
            np.testing.assert_allclose(out2, out, rtol=1e-12, atol=1e-12, err_msg=str(cfg))
            for name, g, e in zip(("dx", "dw", "db"), got, expected):
                if e is None:
                    assert g is None
                else:
                    np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12, err_msg=f"{name} {cfg} {band}")
    assert pieced >= 15  # most of the 30 runs really were cut into pieces


@pytest.mark.parametrize("pieces", [False, True])
def test_workspace_reuse_gives_the_same_numbers_and_refuses_stale_caches(monkeypatch, pieces):
    if pieces:
        monkeypatch.setattr(conv, "_WHOLE_BATCH_BYTES", 0)
        monkeypatch.setattr(conv, "_BAND_BYTES", 1)
    rng = np.random.default_rng(11)
    ws = Workspace()
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    for _ in range(3):
        x = rng.standard_normal((3, 2, 7, 7)).astype(np.float32)
        out, cache = conv_forward(x, w, b, padding=1, workspace=ws)
        ref_out, ref_cache = conv_forward(x, w, b, padding=1)
        np.testing.assert_array_equal(out, ref_out)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        for got, ref in zip(conv_backward(dout, cache), conv_backward(dout, ref_cache)):
            np.testing.assert_array_equal(got, ref)
    _, stale = conv_forward(x, w, b, padding=1, workspace=ws)
    conv_forward(x, w, b, padding=1, workspace=ws)
    with pytest.raises(RuntimeError, match="workspace"):
        conv_backward(dout, stale)
    # same padded shape, different border: the old border must not leak in
    for padding in (((1, 1), (1, 1)), ((2, 0), (0, 2)), ((0, 2), (2, 0))):
        got, _ = conv_forward(x, w, b, padding=padding, workspace=ws)
        np.testing.assert_array_equal(got, conv_forward(x, w, b, padding=padding)[0], err_msg=str(padding))


def test_overlapping_windows_accumulate_in_dx():
    # stride 1, 2×2 kernel of ones: the centre of a 3×3 input sits in all four windows
    x = np.zeros((1, 1, 3, 3))
    out, cache = conv_forward(x, np.ones((1, 1, 2, 2)), None)
    dx, _, _ = conv_backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(dx[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


# ---------------------------------------------------------------------------
# Output size and padding
# ---------------------------------------------------------------------------

def test_output_size_formula():
    assert output_size(5, 3) == 3
    assert output_size(28, 3, 1, 1) == 28
    assert output_size(7, 3, stride=2) == 3
    assert output_size(7, 3, stride=2, pad=(0, 1)) == 3
    assert output_size(10, 3, dilation=2) == 6
    assert output_size(5, 3, 1, 0) == (5 + 0 - 1 * (3 - 1) - 1) // 1 + 1
    assert output_size_formula(5, 3) == "⌊(5 + 0 − 1·(3 − 1) − 1)/1⌋ + 1 = 3"


def test_kernel_larger_than_padded_input_says_so_with_the_formula():
    with pytest.raises(OutputSizeError) as info:
        output_size(2, 5)
    message = str(info.value)
    assert "⌊(2 + 0 − 1·(5 − 1) − 1)/1⌋ + 1 = −2" in message
    assert "padded input" in message
    assert info.value.size == -2 and info.value.k == 5
    with pytest.raises(ValueError, match=r"⌊\(3 \+ 2 − 2·\(4 − 1\) − 1\)/1⌋ \+ 1 = −1"):
        conv_forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 4, 4)), None, padding=1, dilation=2)
    with pytest.raises(ValueError, match="does not fit"):
        conv_step(np.zeros((2, 2)), np.zeros((3, 3)))


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_bad_stride_is_rejected(bad):
    with pytest.raises(ValueError, match="stride"):
        output_size(5, 3, stride=bad)
    with pytest.raises(ValueError, match="stride"):
        conv_forward(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), None, stride=bad)


def test_bad_dilation_padding_and_sizes_are_rejected():
    with pytest.raises(ValueError, match="dilation"):
        output_size(5, 3, dilation=0)
    with pytest.raises(ValueError, match="padding"):
        output_size(5, 3, pad=-1)
    with pytest.raises(ValueError, match="padding"):
        resolve_padding("full", 3)
    with pytest.raises(ValueError, match="top, bottom"):
        conv_forward(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), None, padding=(1, 2))
    with pytest.raises(ValueError, match="kernel size"):
        output_size(5, 0)
    with pytest.raises(ValueError, match="channels"):
        conv_forward(np.zeros((1, 2, 5, 5)), np.zeros((1, 3, 3, 3)), None)
    with pytest.raises(ValueError, match="b must have shape"):
        conv_forward(np.zeros((1, 1, 5, 5)), np.zeros((2, 1, 3, 3)), np.zeros(3))


def test_resolve_padding():
    assert resolve_padding(2, 3) == (2, 2)
    assert resolve_padding("valid", 5) == (0, 0)
    assert resolve_padding((1, 0), 3) == (1, 0)
    assert resolve_padding("same", 3) == (1, 1)
    assert resolve_padding("same", 4) == (1, 2)  # the extra one at the bottom/right
    assert resolve_padding("same", 3, dilation=2) == (2, 2)
    # stride 2: out = ⌈n/2⌉, total = (out − 1)·2 + 3 − n
    assert resolve_padding("same", 3, stride=2, n=7) == (1, 1)  # out 4, total 6 + 3 − 7 = 2
    assert resolve_padding("same", 3, stride=2, n=8) == (0, 1)  # out 4, total 6 + 3 − 8 = 1
    assert resolve_padding("same", 1, stride=2, n=8) == (0, 0)  # total would be −1: clipped to 0
    with pytest.raises(ValueError, match="pass n"):
        resolve_padding("same", 3, stride=2)


def test_same_keeps_the_size_for_odd_and_even_kernels():
    rng = np.random.default_rng(12)
    for k in range(1, 7):
        for dilation in (1, 2):
            for H, W in ((7, 7), (6, 9)):
                x = rng.standard_normal((1, 2, H, W))
                out, _ = conv_forward(x, rng.standard_normal((3, 2, k, k)), None, padding="same", dilation=dilation)
                assert out.shape == (1, 3, H, W), (k, dilation, H, W)
    out, _ = conv_forward(rng.standard_normal((1, 1, 7, 8)), rng.standard_normal((1, 1, 3, 3)), None,
                          stride=2, padding="same")
    assert out.shape == (1, 1, 4, 4)


def test_same_with_an_even_kernel_pads_bottom_right_like_a_manual_pad():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 2, 6, 5))
    w = rng.standard_normal((3, 2, 4, 4))
    b = rng.standard_normal(3)
    manual = np.pad(x, ((0, 0), (0, 0), (1, 2), (1, 2)))
    expected = conv_forward_naive(manual, w, b)
    same, _ = conv_forward(x, w, b, padding="same")
    np.testing.assert_allclose(same, expected, rtol=1e-12, atol=1e-12)
    explicit, _ = conv_forward(x, w, b, padding=((1, 2), (1, 2)))
    np.testing.assert_allclose(explicit, expected, rtol=1e-12, atol=1e-12)
    # and not top/left
    wrong = conv_forward_naive(np.pad(x, ((0, 0), (0, 0), (2, 1), (2, 1))), w, b)
    assert not np.allclose(same, wrong)


def test_dx_by_convolution_matches_the_scatter_path(monkeypatch):
    """With stride 1 and no dilation, dx is computed as a convolution of dout (flipped,
    transposed kernel); the k² strided scatter-adds remain for the other settings. Both must
    agree: float64 to 1e-12, float32 within rounding (the sums run in another order)."""
    rng = np.random.default_rng(14)
    fits_really = conv._dx_by_convolution_fits
    took = 0
    for trial in range(40):
        C, F, N = (int(v) for v in rng.integers(1, 5, size=3))
        HH, WW = (int(v) for v in rng.choice([1, 2, 3, 4, 5], size=2))
        H, W = (int(v) for v in rng.integers(max(HH, WW), 12, size=2))
        padding = [0, 1, 2, "same", "valid", ((0, 2), (1, 0)), ((4, 1), (0, 0))][trial % 7]
        mode = conv.MODES[trial % 2]
        dtype = (np.float64, np.float32)[(trial // 2) % 2]
        try:
            conv.conv_geometry(H, W, HH, WW, 1, padding, 1)
        except OutputSizeError:
            continue
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        w = rng.standard_normal((F, C, HH, WW)).astype(dtype)
        b = rng.standard_normal(F).astype(dtype)
        results = []
        for fits in (fits_really, lambda *a: False):
            monkeypatch.setattr(conv, "_dx_by_convolution_fits", fits)
            ws = Workspace()
            out, cache = conv_forward(x, w, b, padding=padding, mode=mode, workspace=ws)
            dout = np.random.default_rng(trial).standard_normal(out.shape).astype(dtype)
            got = conv_backward(dout, cache)
            out2, cache2 = conv_forward(x, w, b, padding=padding, mode=mode, workspace=ws)   # buffers reused
            got2 = conv_backward(dout, cache2)
            np.testing.assert_array_equal(out2, out)
            for g, g2 in zip(got, got2):
                np.testing.assert_array_equal(g2, g)
            results.append([a.copy() for a in got])
        took += fits_really(cache.geometry, HH, WW)
        (dx, dw, db), (dx_ref, dw_ref, db_ref) = results
        assert dx.dtype == dx_ref.dtype == dtype and dx.shape == x.shape
        tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dx, dx_ref, **tol, err_msg=f"{padding} {HH}×{WW} {mode}")
        np.testing.assert_array_equal(dw, dw_ref)
        np.testing.assert_array_equal(db, db_ref)
    assert took >= 20   # most configurations really took the new route
