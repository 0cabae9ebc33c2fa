"""Training images varied a little each time they are seen: data augmentation.

    xb = random_affine(xb, rng, shift=0.5, rotate=10, scale=(0.9, 1.1), shear=0.25, share=0.5)

A share ``share`` of the images (the others stay as they are) is each moved by its own
random affine map about the image's centre: a horizontal shear (a slant: the column moves
by shear·row) of up to ``shear`` either way, a rotation of up to ``rotate`` degrees either
way, a zoom by a factor drawn from ``scale``, then a shift of up to ``shift`` pixels along
each axis. Pixels are read back by bilinear interpolation, and paper (0) comes in at the
borders. A network that sees its digits slightly slanted, turned, resized and moved every
epoch learns what stays the same, so a digit written by another hand still reads right.
"""

from __future__ import annotations

import numpy as np

__all__ = ["affine_matrices", "warp", "random_affine"]


def affine_matrices(rng, n, shift, rotate, scale, shear, share=1.0):
    """n random maps as (n, 2, 2) matrices A and (n, 2) shifts t, in (row, col) order:
    an image point p (relative to the centre) goes to A·p + t. Each map is drawn with
    probability ``share``; the others are the identity (A = I, t = 0)."""
    angle = np.radians(rng.uniform(-rotate, rotate, n))
    zoom = rng.uniform(scale[0], scale[1], n)
    slant = rng.uniform(-shear, shear, n)
    t = rng.uniform(-shift, shift, (n, 2))
    cos, sin = np.cos(angle), np.sin(angle)
    # Rotation R (rows point down, columns right) after the shear S = [[1, 0], [slant, 1]]
    # (col += slant·row), all zoomed.
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    sh = np.zeros((n, 2, 2))
    sh[:, 0, 0] = sh[:, 1, 1] = 1
    sh[:, 1, 0] = slant
    A = zoom[:, None, None] * (rot @ sh)
    unchanged = rng.random(n) >= share
    A[unchanged] = np.eye(2)
    t[unchanged] = 0
    return A, t


def warp(x, A, t):
    """Images x (N, C, H, W) moved by the maps A (N, 2, 2), t (N, 2) about their centres:
    out[n, :, p] = x[n, :, A⁻¹(p − t)] (bilinear, 0 outside). Same shape and dtype as x."""
    N, C, H, W = x.shape
    rows, cols = np.mgrid[:H, :W].astype(x.dtype)
    pr = rows.ravel()[None] - x.dtype.type((H - 1) / 2) - t[:, :1].astype(x.dtype)  # (N, HW)
    pc = cols.ravel()[None] - x.dtype.type((W - 1) / 2) - t[:, 1:].astype(x.dtype)
    inv = np.linalg.inv(A).astype(x.dtype)[:, :, :, None]  # (N, 2, 2, 1)
    src_r = inv[:, 0, 0] * pr + inv[:, 0, 1] * pc + x.dtype.type((H - 1) / 2)
    src_c = inv[:, 1, 0] * pr + inv[:, 1, 1] * pc + x.dtype.type((W - 1) / 2)
    r0 = np.floor(src_r)
    c0 = np.floor(src_c)
    fr = src_r - r0
    fc = src_c - c0
    # Two rows and columns of paper around each image, and every corner read clipped into
    # them: a point outside the picture reads 0 without a mask per corner.
    Hp, Wp = H + 4, W + 4
    padded = np.zeros((N, C, Hp, Wp), dtype=x.dtype)
    padded[:, :, 2:-2, 2:-2] = x
    r = np.clip(r0.astype(np.int64), -2, H) + 2
    c = np.clip(c0.astype(np.int64), -2, W) + 2
    base = (np.arange(N * C) * (Hp * Wp)).reshape(N, C, 1)
    top_left = base + (r * Wp + c)[:, None, :]  # (N, C, HW) into padded.ravel()
    flat = padded.ravel()
    out = (np.take(flat, top_left) * ((1 - fr) * (1 - fc))[:, None]
           + np.take(flat, top_left + 1) * ((1 - fr) * fc)[:, None]
           + np.take(flat, top_left + Wp) * (fr * (1 - fc))[:, None]
           + np.take(flat, top_left + Wp + 1) * (fr * fc)[:, None])
    return out.reshape(N, C, H, W)


def random_affine(x, rng, shift=0.0, rotate=0.0, scale=(1.0, 1.0), shear=0.0, share=1.0):
    """x (N, C, H, W) with each image moved by its own random map (see the module docstring);
    rng: a np.random.Generator. A new array; x is not changed."""
    A, t = affine_matrices(rng, x.shape[0], shift, rotate, scale, shear, share)
    return warp(x, A, t)
