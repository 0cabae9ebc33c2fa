"""core.receptive: receptive fields checked by perturbing one input pixel, and by hand.

Change one input pixel: every output cell that changes must have that pixel inside its
cell_box. For a stack of convolutions with positive weights (no activation, no pooling),
the box is also tight: a pixel at each corner of an unclipped box does change the cell.
"""

import numpy as np
import pytest

from cnnlab.core.layers import Activation, Conv2D, Dense, Flatten, Pool2D
from cnnlab.core.model import Sequential, tiny_cnn
from cnnlab.core.receptive import Field, cell_box, field_steps, layer_fields


def random_model(rng, C=2, H=None, W=None, flat=True):
    """2–3 blocks conv (random k, stride, padding incl. "same", dilation) → activation →
    pool (random size/stride, or none), sized so every map stays ≥ 1."""
    for _ in range(200):
        H = H or int(rng.integers(14, 23))
        W = W or H
        layers, shape, ok = [], (C, H, W), True
        for _b in range(int(rng.integers(2, 4))):
            k = int(rng.integers(1, 4))
            stride = int(rng.integers(1, 3))
            dilation = int(rng.choice([1, 1, 2]))
            padding = rng.choice(["same", 0, 1, 2]) if stride == 1 else rng.choice([0, 1, "same"])
            padding = padding if padding == "same" else int(padding)
            F = int(rng.integers(1, 4))
            block = [Conv2D(shape[0], F, k, stride=stride, padding=padding, dilation=dilation, rng=rng),
                     Activation(str(rng.choice(["relu", "tanh", "leaky_relu"])))]
            pool = rng.choice(["none", "max", "avg"])
            if pool != "none":
                size = int(rng.integers(2, 4))
                block.append(Pool2D(str(pool), size, stride=int(rng.integers(1, size + 1))))
            try:
                for layer in block:
                    shape = layer.output_shape(shape)
            except ValueError:
                ok = False
                break
            layers += block
        if ok:
            if flat:
                if rng.random() < 0.3:
                    layers.append(Pool2D("global_avg"))
                    shape = (shape[0], 1, 1)
                D = int(np.prod(shape))
                layers += [Flatten(), Dense(D, 3, rng=rng)]
            return Sequential(layers, input_shape=(C, H, W)).astype(np.float64)
        H = W = None
    raise AssertionError("no model fits")


def changed_cells(model, x, y0, x0, delta=1.0):
    before = model.activations(x)
    x2 = x.copy()
    x2[0, :, y0, x0] += delta
    after = model.activations(x2)
    return [np.abs(a - b)[0] > 1e-12 for a, b in zip(before, after)]


def test_perturbation_stays_inside_the_box():
    rng = np.random.default_rng(14)
    checked = 0
    for trial in range(12):
        non_square = trial % 4 == 3
        model = random_model(rng, H=int(rng.integers(14, 20)) if non_square else None,
                             W=int(rng.integers(12, 22)) if non_square else None)
        C, H, W = model.input_shape
        x = rng.standard_normal((1, C, H, W))
        for _ in range(4):
            y0, x0 = int(rng.integers(0, H)), int(rng.integers(0, W))
            for li, ch in enumerate(changed_cells(model, x, y0, x0)):
                if ch.ndim == 1:         # flat: the box is the whole (clipped) field
                    for u in np.flatnonzero(ch):
                        t, left, b, r = cell_box(model, li, 0, int(u))
                        assert t <= y0 <= b and left <= x0 <= r
                    continue
                for _f, row, col in zip(*np.nonzero(ch)):
                    t, left, b, r = cell_box(model, li, int(row), int(col))
                    assert t <= y0 <= b and left <= x0 <= r, (
                        f"{model!r}: layer {li} cell ({row}, {col}) changed by pixel ({y0}, {x0}) "
                        f"outside its box {(t, left, b, r)}")
                    checked += 1
    assert checked > 500


def test_conv_stack_box_is_tight():
    """Positive weights and inputs, convolutions only: both corners of every unclipped box
    change the cell, and the pixels just outside it do not."""
    rng = np.random.default_rng(3)
    for _ in range(6):
        C, H = 1, int(rng.integers(16, 24))
        layers, shape = [], (C, H, H)
        for _b in range(3):
            k, s = int(rng.integers(2, 4)), int(rng.integers(1, 3))
            d = int(rng.choice([1, 2])) if s == 1 else 1
            conv = Conv2D(shape[0], 1, k, stride=s, padding=int(rng.integers(0, 2)), dilation=d, rng=rng)
            try:
                new = conv.output_shape(shape)
            except ValueError:
                break
            conv.params["w"][...] = np.abs(conv.params["w"]) + 0.1
            layers.append(conv)
            shape = new
        model = Sequential(layers, input_shape=(C, H, H)).astype(np.float64)
        li = len(layers) - 1
        x = rng.uniform(0.5, 1.0, (1, C, H, H))
        out_h = model.output_shapes()[li][1]
        field = layer_fields(model)[li]
        for row in range(out_h):
            top = field.start + row * field.jump
            if top < 0 or top + field.size > H:
                continue            # clipped: a corner may be padding
            col = row
            t, left, b, r = cell_box(model, li, row, col)
            assert (b - t + 1, r - left + 1) == (field.size, field.size)
            for (py, px) in ((t, left), (b, r), (t, r), (b, left)):
                assert changed_cells(model, x, py, px)[li][0, row, col], (model, li, row, (py, px))
            for (py, px) in ((t - 1, left), (b + 1, r), (t, left - 1), (b, r + 1)):
                if 0 <= py < H and 0 <= px < H:
                    assert not changed_cells(model, x, py, px)[li][0, row, col]


def test_hand_worked_example():
    # conv 3×3 pad 1 → relu → max 2 → conv 3×3 pad 1 → max 2 → flatten → dense, on 28×28:
    #   r: 1 → 3 → 3 → 3 + (2 − 1)·1 = 4 → 4 + (3 − 1)·2 = 8 → 8 + (2 − 1)·2 = 10
    #   j: 1 → 1 → 1 → 1·2 = 2 → 2 → 2·2 = 4;  start: 0 − 1 = −1, −1, −1, −1 − 1·2 = −3, −3
    rng = np.random.default_rng(0)
    model = Sequential([Conv2D(1, 4, 3, padding=1, rng=rng), Activation("relu"), Pool2D("max", 2),
                        Conv2D(4, 4, 3, padding=1, rng=rng), Pool2D("max", 2), Flatten(),
                        Dense(4 * 7 * 7, 10, rng=rng)], input_shape=(1, 28, 28))
    fields = layer_fields(model)
    assert [(f.size, f.jump, f.start) for f in fields[:5]] == [(3, 1, -1), (3, 1, -1), (4, 2, -1), (8, 2, -3),
                                                                (10, 4, -3)]
    assert all(isinstance(f, Field) for f in fields)
    steps = field_steps(model, 4)
    assert len(steps) == 5
    assert steps[3] == {**steps[3], "index": 3, "layer": "Conv2D 4@3\u00d73 pad 1", "k": 3, "s": 1,
                        "r_prev": 4, "j_prev": 2, "r": 8, "j": 2}
    for s in steps:
        assert s["r"] == s["r_prev"] + (s["k"] - 1) * s["j_prev"] and s["j"] == s["j_prev"] * s["s"]
    # cell (1, 2) of layer 4: rows −3 + 1·4 = 1 … 1 + 10 − 1 = 10, columns −3 + 2·4 = 5 … 14
    assert cell_box(model, 4, 1, 2) == (1, 5, 10, 14)
    assert cell_box(model, 4, 0, 0) == (0, 0, 6, 6)          # −3 … 6, clipped at 0
    assert cell_box(model, 4, 6, 6) == (21, 21, 27, 27)       # 21 … 30, clipped at 27
    # Flatten and Dense see the whole input
    assert cell_box(model, 6, 0, 9) == (0, 0, 27, 27)
    # dilation 2, stride 2 and "same" padding: k_eff = 2·(3 − 1) + 1 = 5
    m2 = Sequential([Conv2D(1, 1, 3, dilation=2, padding="same", rng=rng),
                     Conv2D(1, 1, 3, stride=2, rng=rng)], input_shape=(1, 9, 9))
    assert [(f.size, f.jump, f.start) for f in layer_fields(m2)] == [(5, 1, -2), (7, 2, -2)]
    assert field_steps(m2, 0)[0]["k"] == 5
    # global average pooling: the whole map
    m3 = Sequential([Conv2D(1, 2, 3, rng=rng), Pool2D("global_avg")], input_shape=(1, 8, 8))
    assert layer_fields(m3)[1].size == 8 and cell_box(m3, 1, 0, 0) == (0, 0, 7, 7)
    # the lab's default model
    assert [f.size for f in layer_fields(tiny_cnn())][:3] == [3, 3, 4]


def test_out_of_range_refused():
    model = tiny_cnn(input_shape=(1, 8, 8))
    for args in ((9, 0, 0), (-1, 0, 0), (0, 8, 0), (0, 0, -1), (2, 4, 0), (4, 1, 0), (4, 0, 10)):
        with pytest.raises(ValueError):
            cell_box(model, *args)
    with pytest.raises(ValueError):
        field_steps(model, 99)
