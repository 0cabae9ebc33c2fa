"""Data augmentation (core/augment.py): the affine maps move pixels where they say, read
paper outside the picture, keep values in range, repeat with the same generator, and the
training loop uses them on training batches only."""

import numpy as np
import pytest

from cnnlab.core.augment import affine_matrices, random_affine, warp
from cnnlab.core.datasets import load_digits
from cnnlab.core.train import DEFAULTS, default_setup, train


def images(n=4, size=7, seed=0):
    return np.random.default_rng(seed).random((n, 1, size, size)).astype(np.float32)


def identity(n):
    return np.tile(np.eye(2), (n, 1, 1)), np.zeros((n, 2))


def test_the_identity_map_changes_nothing():
    x = images()
    A, t = identity(4)
    out = warp(x, A, t)
    assert out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_array_equal(out, x)


def test_a_whole_pixel_shift_moves_the_picture_and_brings_in_paper():
    x = images()
    A, t = identity(4)
    t[:] = [1, -2]  # one row down, two columns left
    out = warp(x, A, t)
    np.testing.assert_array_equal(out[:, :, 1:, :-2], x[:, :, :-1, 2:])
    assert not out[:, :, 0, :].any() and not out[:, :, :, -2:].any()
    t[:] = [0, 40]  # out of the picture altogether
    assert not warp(x, A, t).any()


def test_a_quarter_turn_about_the_centre_is_rot90():
    x = images(size=7)
    A = np.tile([[0.0, -1.0], [1.0, 0.0]], (4, 1, 1))
    np.testing.assert_allclose(warp(x, A, np.zeros((4, 2))), np.rot90(x, 1, axes=(2, 3)), atol=1e-6)


def test_a_half_pixel_shift_averages_neighbours():
    x = np.zeros((1, 1, 5, 5), dtype=np.float32)
    x[0, 0, 2, 2] = 1
    A, t = identity(1)
    t[:] = [0, 0.5]
    out = warp(x, A, t)[0, 0]
    assert out[2, 2] == pytest.approx(0.5) and out[2, 3] == pytest.approx(0.5) and out.sum() == pytest.approx(1)


def test_random_maps_stay_within_their_ranges():
    A, t = affine_matrices(np.random.default_rng(1), 500, shift=2, rotate=10, scale=(0.9, 1.1), shear=0.2)
    assert np.abs(t).max() <= 2
    det = np.linalg.det(A)  # shear and rotation keep areas: the determinant is the zoom squared
    assert det.min() >= 0.9 ** 2 - 1e-9 and det.max() <= 1.1 ** 2 + 1e-9
    A, t = affine_matrices(np.random.default_rng(1), 2000, shift=2, rotate=10, scale=(0.9, 1.1), shear=0.2, share=0.3)
    unchanged = np.all(A == np.eye(2), axis=(1, 2)) & np.all(t == 0, axis=1)
    assert 0.65 < unchanged.mean() < 0.75


def test_random_affine_repeats_keeps_values_in_range_and_leaves_its_input_alone():
    x = images(n=32, size=8)
    before = x.copy()
    kwargs = dict(shift=0.5, rotate=10, scale=(0.9, 1.1), shear=0.25)
    a = random_affine(x, np.random.default_rng(3), **kwargs)
    b = random_affine(x, np.random.default_rng(3), **kwargs)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, before)
    assert a.min() >= 0 and a.max() <= 1 + 1e-6
    assert not np.array_equal(a, x)
    np.testing.assert_array_equal(random_affine(x, np.random.default_rng(3), **kwargs, share=0), x)


def test_training_augments_its_batches_only_when_asked():
    ds = load_digits()
    model, optimizer, kwargs = default_setup(ds)
    assert kwargs["augment"] == DEFAULTS["digits"]["augment"] and kwargs["augment"]["share"] < 1
    runs = {}
    for augment in (None, kwargs["augment"]):
        model, optimizer, kwargs = default_setup(ds)
        last = list(train(model, ds, optimizer, epochs=1, batch_size=64, seed=0, augment=augment))[-1]
        runs[augment is None] = (model.flat_params.copy(), last.test_accuracy)
    assert not np.array_equal(runs[True][0], runs[False][0])
    assert runs[False][1] > 0.5  # still learns
