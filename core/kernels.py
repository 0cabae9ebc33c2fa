"""Named kernels and the slides' worked example, as plain NumPy arrays.

The classic image-processing kernels a student meets first (the ones Setosa's "Image
Kernels" shows), the 5×5 matrix and 3×3 kernel of the slides ("Ayudantía 13", section
"Kernels"), and two helpers the stepper's kernel editor needs: a seeded random kernel with
small integers (so the written-out sums stay readable) and a centred resize.

Every kernel here is (HH, WW). A filter for a C-channel input is (C, HH, WW) and a bank of
F filters (F, C, HH, WW), as in ``core.conv``.

A curiosity worth telling a class: the slides' kernel is exactly the classic *emboss*
kernel, which is why its output brightens edges running from top-left to bottom-right.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SEED_INPUT",
    "SEED_KERNEL",
    "PRESETS",
    "preset",
    "preset_name",
    "random_kernel",
    "resize_kernel",
]


def _frozen(rows, dtype=np.int64) -> np.ndarray:
    a = np.array(rows, dtype=dtype)
    a.flags.writeable = False
    return a


# The slides' worked example: position (0, 0) gives 78, the next position 87.
SEED_INPUT = _frozen([
    [35, 40, 41, 45, 50],
    [40, 40, 42, 46, 52],
    [42, 46, 50, 55, 55],
    [48, 52, 56, 58, 60],
    [56, 60, 65, 70, 75],
])

SEED_KERNEL = _frozen([
    [-2, -1, 0],
    [-1, 1, 1],
    [0, 1, 2],
])

# Insertion order is the order a menu lists them in. Blurs are floats (their weights sum to
# 1, so the picture keeps its brightness); the rest are integers, so sums print as integers.
PRESETS: dict[str, np.ndarray] = {
    "seed": SEED_KERNEL,
    "identity": _frozen([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
    "box_blur": _frozen(np.full((3, 3), 1 / 9), dtype=np.float64),
    "gaussian": _frozen(np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16, dtype=np.float64),
    "sharpen": _frozen([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "sobel_x": _frozen([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    "sobel_y": _frozen([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
    "laplacian": _frozen([[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
    "emboss": SEED_KERNEL,
    "outline": _frozen([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]),
}


def preset(name: str) -> np.ndarray:
    """A writable copy of preset ``name`` (HH, WW). KeyError names the known presets."""
    try:
        return PRESETS[name].copy()
    except KeyError:
        raise KeyError(f"unknown kernel preset {name!r}; known: {', '.join(PRESETS)}") from None


def preset_name(kernel, prefer: str | None = None) -> str | None:
    """The name of the preset equal to ``kernel`` (HH, WW), or None.

    Two names can share one kernel ("seed" and "emboss"): ``prefer`` wins when it matches,
    so a kernel chosen as "emboss" keeps that name.
    """
    k = np.asarray(kernel)
    candidates = ([prefer] if prefer in PRESETS else []) + list(PRESETS)
    for name in candidates:
        p = PRESETS[name]
        if p.shape == k.shape and np.array_equal(p, k):
            return name
    return None


def random_kernel(seed: int, shape: tuple[int, ...], low: int = -2, high: int = 2) -> np.ndarray:
    """Integers drawn uniformly from low..high (both included), reproducible from ``seed``.

    Small integers keep a written-out dot product short enough to read aloud.
    """
    rng = np.random.default_rng(seed)
    return rng.integers(low, high + 1, size=shape, dtype=np.int64)


def resize_kernel(kernel, HH: int, WW: int) -> np.ndarray:
    """``kernel`` (..., hh, ww) grown with zeros or cropped to (..., HH, WW), keeping its centre.

    Zero rows/columns change nothing in the dot product except how far the window reaches,
    so a 3×3 Sobel grown to 5×5 still detects the same edges. When the difference is odd
    the extra row/column goes to the bottom/right, as "same" padding does.
    """
    k = np.asarray(kernel)
    hh, ww = k.shape[-2:]
    if HH < 1 or WW < 1:
        raise ValueError(f"a kernel needs at least one row and one column; got {HH}×{WW}.")
    out = np.zeros(k.shape[:-2] + (HH, WW), dtype=k.dtype)
    # Offsets of the old kernel inside the new one (negative: the old one is cropped).
    # Growing then shrinking by the same amount gives the original kernel back.
    top = (HH - hh) // 2 if HH >= hh else -((hh - HH) // 2)
    left = (WW - ww) // 2 if WW >= ww else -((ww - WW) // 2)
    src_r0, src_c0 = max(0, -top), max(0, -left)
    dst_r0, dst_c0 = max(0, top), max(0, left)
    rows = min(hh - src_r0, HH - dst_r0)
    cols = min(ww - src_c0, WW - dst_c0)
    out[..., dst_r0:dst_r0 + rows, dst_c0:dst_c0 + cols] = k[..., src_r0:src_r0 + rows, src_c0:src_c0 + cols]
    return out
