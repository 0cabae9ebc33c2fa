"""core/conv_more.py against PyTorch (float64) on random shapes, strides and paddings: the 1×1
convolution vs conv2d, depthwise vs grouped conv2d (groups=C), separable vs grouped conv2d then
a 1×1 conv2d, transposed vs conv_transpose2d; and the step views: every step's value (or, for
the transposed convolution, every step's products added up) gives the forward pass's output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as tf
from cnnlab.core import conv_more as cm
from cnnlab.core.conv import conv_geometry

RNG_SEEDS = range(12)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_pointwise_is_a_1x1_conv2d(seed):
    rng = np.random.default_rng(seed)
    N, C, H, W, F = rng.integers(1, 3), rng.integers(1, 5), rng.integers(1, 9), rng.integers(1, 9), rng.integers(1, 5)
    x, w, b = rng.normal(size=(N, C, H, W)), rng.normal(size=(F, C)), rng.normal(size=F)
    want = tf.conv2d(t(x), t(w)[:, :, None, None], t(b)).numpy()
    np.testing.assert_allclose(cm.pointwise_forward(x, w, b), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cm.pointwise_forward(x, w[:, :, None, None]), want - b[None, :, None, None], atol=1e-12)


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_depthwise_and_separable_are_grouped_conv2d_then_1x1(seed):
    rng = np.random.default_rng(100 + seed)
    N, C, F = rng.integers(1, 3), rng.integers(1, 5), rng.integers(1, 5)
    HH, WW = rng.integers(1, 4), rng.integers(1, 4)
    S, P, D = rng.integers(1, 4), rng.integers(0, 3), rng.integers(1, 3)
    H = rng.integers(D * (HH - 1) + 1, 10)
    W = rng.integers(D * (WW - 1) + 1, 10)
    x, dw, db = rng.normal(size=(N, C, H, W)), rng.normal(size=(C, HH, WW)), rng.normal(size=C)
    pw, pb = rng.normal(size=(F, C)), rng.normal(size=F)
    d_want = tf.conv2d(t(x), t(dw)[:, None], t(db), stride=int(S), padding=int(P), dilation=int(D), groups=int(C))
    out_want = tf.conv2d(d_want, t(pw)[:, :, None, None], t(pb)).numpy()
    d = cm.depthwise_forward(x, dw, db, stride=S, padding=P, dilation=D)
    np.testing.assert_allclose(d, d_want.numpy(), rtol=1e-10, atol=1e-10, err_msg=f"{(N, C, H, W, HH, WW, S, P, D)}")
    out, d2 = cm.separable_forward(x, dw, db, pw, pb, stride=S, padding=P, dilation=D)
    np.testing.assert_allclose(out, out_want, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(d, d2)


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_transposed_is_conv_transpose2d(seed):
    rng = np.random.default_rng(200 + seed)
    N, C, F = rng.integers(1, 3), rng.integers(1, 4), rng.integers(1, 4)
    H, W, HH, WW = rng.integers(1, 7), rng.integers(1, 7), rng.integers(1, 5), rng.integers(1, 5)
    S = int(rng.integers(1, 4))
    P = int(rng.integers(0, max(1, min((H - 1) * S + HH, (W - 1) * S + WW) // 2)))
    x, w, b = rng.normal(size=(N, C, H, W)), rng.normal(size=(C, F, HH, WW)), rng.normal(size=F)
    want = tf.conv_transpose2d(t(x), t(w), t(b), stride=S, padding=P).numpy()
    got = cm.conv_transpose_forward(x, w, b, stride=S, padding=P)
    assert got.shape == want.shape == (N, F, cm.transpose_output_size(H, HH, S, P), cm.transpose_output_size(W, WW, S, P))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=f"{(N, C, H, W, F, HH, WW, S, P)}")


def test_transposed_output_size_formula_and_refusal():
    assert cm.transpose_output_size(5, 3, 2, 1) == 9
    assert cm.transpose_output_size_formula(5, 3, 2, 1) == "(5 \u2212 1)\u00b72 \u2212 2\u00b71 + 3 = 9"
    with pytest.raises(cm.TransposeSizeError) as e:
        cm.transpose_output_size(1, 1, 1, 1)
    assert e.value.formula.endswith("= \u22121")
    with pytest.raises(ValueError, match="channels"):
        cm.conv_transpose_forward(np.zeros((1, 2, 3, 3)), np.zeros((3, 1, 2, 2)))
    with pytest.raises(ValueError, match="channels"):
        cm.depthwise_forward(np.zeros((1, 2, 3, 3)), np.zeros((3, 2, 2)))


def test_pointwise_steps_give_the_output_exactly():
    rng = np.random.default_rng(7)
    x, w, b = rng.integers(-9, 10, (3, 4, 5)), rng.integers(-3, 4, (2, 3)), rng.integers(-5, 6, 2)
    out = cm.pointwise_forward(x[None], w, b)[0]
    for k in range(out.size):
        st = cm.pointwise_step(x, w, b, step=k)
        assert isinstance(st.value, int) and st.value == out[st.filter, st.row, st.col]
        assert st.text.endswith(f"= {st.value}".replace("-", "\u2212"))
        assert [tm.input for tm in st.terms] == x[:, st.row, st.col].tolist()
    # the written sum: input·weight for every channel, then the bias
    st = cm.pointwise_step(np.array([[[2]], [[5]], [[7]]]), np.array([[1, 0, -1]]), np.array([1]), step=0)
    assert st.text == "2·1 + 5·0 + 7·(−1) + 1 = −4"


@pytest.mark.parametrize("exact", [True, False])
def test_separable_steps_give_both_outputs(exact):
    rng = np.random.default_rng(8)
    C, F, H, W = 3, 2, 5, 6
    if exact:
        x, dw, db = rng.integers(0, 10, (C, H, W)), rng.integers(-2, 3, (C, 3, 3)), rng.integers(-2, 3, C)
        pw, pb = rng.integers(-2, 3, (F, C)), rng.integers(-2, 3, F)
    else:
        x, dw, db = rng.normal(size=(C, H, W)), rng.normal(size=(C, 3, 3)), rng.normal(size=C)
        pw, pb = rng.normal(size=(F, C)), rng.normal(size=F)
    out, d = cm.separable_forward(x[None], dw, db, pw, pb, stride=2, padding=1)
    g = conv_geometry(H, W, 3, 3, 2, 1)
    n_dw = C * g.Ho * g.Wo
    got_d, got_out = np.zeros_like(d[0]), np.zeros_like(out[0])
    for k in range((C + F) * g.Ho * g.Wo):
        st = cm.separable_step(x, dw, db, pw, pb, stride=2, padding=1, step=k)
        assert st.phase == ("depthwise" if k < n_dw else "pointwise") and st.depthwise_steps == n_dw
        i = st.inner
        if st.phase == "depthwise":
            assert {tm.channel for tm in i.terms} == {i.filter}
            got_d[i.filter, i.row, i.col] = i.value
        else:
            got_out[i.filter, i.row, i.col] = i.value
        assert isinstance(i.value, int) == exact
    np.testing.assert_allclose(got_d, d[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_out, out[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_transposed_steps_scatter_into_the_output(seed):
    """The products of every step, added into their cells (after the bias), give the output; the
    running map after a filter's last step is that filter's output; before/after chain up."""
    rng = np.random.default_rng(300 + seed)
    exact = seed % 2 == 0
    C, F, H, W, HH, WW = rng.integers(1, 3), rng.integers(1, 3), rng.integers(2, 5), rng.integers(2, 5), 3, 2
    S, P = int(rng.integers(1, 4)), int(rng.integers(0, 2))
    if exact:
        x, w, b = rng.integers(-5, 6, (C, H, W)), rng.integers(-3, 4, (C, F, HH, WW)), rng.integers(-3, 4, F)
    else:
        x, w, b = rng.normal(size=(C, H, W)), rng.normal(size=(C, F, HH, WW)), rng.normal(size=F)
    out = cm.conv_transpose_forward(x[None], w, b, stride=S, padding=P)[0]
    total = np.zeros_like(out) + np.asarray(b, dtype=np.float64)[:, None, None]
    steps = F * C * H * W
    for k in range(steps):
        st = cm.transpose_step(x, w, b, stride=S, padding=P, step=k)
        assert st.steps == steps and (st.top, st.left) == (st.row * S - P, st.col * S - P)
        for tm in st.terms:
            assert tm.product == st.input * tm.weight
            if tm.inside:
                total[st.filter, tm.out_row, tm.out_col] += tm.product
                assert tm.after == tm.before + tm.product
                assert st.running[tm.out_row][tm.out_col] == tm.after
            else:
                assert not (0 <= tm.out_row < out.shape[1] and 0 <= tm.out_col < out.shape[2])
        if (k + 1) % (C * H * W) == 0:  # the filter's last step: the running map is its output
            np.testing.assert_allclose(np.array(st.running, dtype=np.float64), out[st.filter], rtol=1e-12, atol=1e-12)
            if exact:
                assert all(isinstance(v, int) for row in st.running for v in row)
    np.testing.assert_allclose(total, out, rtol=1e-12, atol=1e-12)


def test_separable_counts():
    c = cm.separable_counts(C=3, F=8, HH=3, WW=3, Ho=30, Wo=30)
    assert c["params_full"] == (3 * 3 * 3 + 1) * 8 == 224
    assert c["params_separable"] == 3 * 3 * 3 + 3 + (3 + 1) * 8 == 62
    assert c["mults_separable"] == 27 * 900 + 24 * 900
    # the counts are PyTorch's: a Conv2d and a depthwise Conv2d + 1×1 Conv2d, all with biases
    full = torch.nn.Conv2d(3, 8, 3)
    sep = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, groups=3), torch.nn.Conv2d(3, 8, 1))
    assert sum(p.numel() for p in full.parameters()) == c["params_full"]
    assert sum(p.numel() for p in sep.parameters()) == c["params_separable"]
