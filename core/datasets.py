"""The real datasets shipped with CNN Lab, ready for a NumPy CNN.

Two collections of handwritten digits live in ``core/data/`` (built once by
``scripts/build_datasets.py``; see ``core/data/README.md`` for sources and licences):

- ``"digits"``: 1,797 images of 8x8 pixels, each pixel a count 0..16 (UCI
  optical digits, as packaged by scikit-learn). Small enough to train in seconds.
- ``"mnist"``: 10,000 MNIST images of 28x28 pixels, grey levels 0..255.

Every loader returns a ``Dataset`` whose images are float32 ``(N, 1, H, W)`` in
[0, 1] and whose labels are int64 ``(N,)``, split into train and test sets the
same way on every call and every machine. Arrays are read-only because they are
shared by every caller through a cache.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

DATASETS = ("digits", "mnist")

# The largest raw pixel value of each source: dividing by it maps pixels to [0, 1].
_PIXEL_MAX = {"digits": 16.0, "mnist": 255.0}

# Any fixed number would do; changing it changes every split (tests pin the split).
_SPLIT_SEED = 20240611


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split of one image dataset.

    name:    "digits" or "mnist"
    x_train: float32 (N_train, 1, H, W), values in [0, 1]
    y_train: int64 (N_train,), class ids 0 .. classes-1
    x_test:  float32 (N_test, 1, H, W), values in [0, 1]
    y_test:  int64 (N_test,)
    classes: number of classes (10 digits)

    H = W = 8 for "digits" and 28 for "mnist". The arrays are read-only; copy one
    (``x.copy()``) before changing it.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int = 10

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, C, H, W = self.x_train.shape
        return C, H, W

    def __repr__(self) -> str:
        C, H, W = self.image_shape
        return (f"Dataset(name={self.name!r}, train={len(self.y_train)}, "
                f"test={len(self.y_test)}, image=({C}, {H}, {W}), classes={self.classes})")


# --------------------------------------------------------------------------- raw data


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


@functools.lru_cache(maxsize=None)
def load_raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The shipped images and labels in source order, as stored.

    Returns images uint8 (N, H, W) (digits: 0..16, mnist: 0..255) and labels
    int64 (N,), both read-only. Index i is the same picture on every machine,
    so it can name an image in the interface.
    """
    _check_name(name)
    with resources.files(__package__).joinpath("data").joinpath(f"{name}.npz").open("rb") as fh:
        with np.load(fh, allow_pickle=False) as npz:
            images = npz["images"]
            labels = npz["labels"].astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


# --------------------------------------------------------------------------- split


def _hashed_order(N: int, seed: int) -> np.ndarray:
    """A fixed pseudo-random permutation of 0 .. N-1, int64 (N,).

    The keys are the SplitMix64 sequence for ``seed`` (output i mixes
    seed + (i+1)·golden), so the order is pure wrap-around integer arithmetic and
    never depends on a NumPy version's random streams.
    """
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (np.arange(N, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return np.argsort(z, kind="stable")


def stratified_split(labels: np.ndarray, test_fraction: float = 0.2,
                     seed: int = _SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split of indices.

    labels: int (N,). Returns train_idx, test_idx: int64 (N_train,), (N_test,),
    disjoint, together covering 0 .. N-1. Class c sends round(n_c * test_fraction)
    of its n_c images to the test set (at least one, and at least one stays in
    training). Both index arrays come in a fixed pseudo-random order, so classes
    are interleaved and the first k training images are a fair sample.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    (N,) = labels.shape
    pick = _hashed_order(N, seed)
    is_test = np.zeros(N, dtype=bool)
    for c in np.unique(labels):
        members = pick[labels[pick] == c]
        n_test = min(max(round(len(members) * test_fraction), 1), len(members) - 1)
        is_test[members[:n_test]] = True
    # A second, independent order for the output: reusing `pick` would start the
    # training set with whichever classes filled their test quota first.
    order = _hashed_order(N, seed + 1)
    return order[~is_test[order]].astype(np.int64), order[is_test[order]].astype(np.int64)


def split_indices(name: str, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``load_raw(name)`` of the train and test images.

    Returns train_idx int64 (N_train,), test_idx int64 (N_test,), read-only.
    ``load(name).x_test[k]`` is ``load_raw(name)[0][test_idx[k]]`` scaled to [0, 1].
    """
    return _split_cached(name, float(test_fraction))


@functools.lru_cache(maxsize=None)
def _split_cached(name: str, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    _, labels = load_raw(name)
    train_idx, test_idx = stratified_split(labels, test_fraction)
    train_idx.flags.writeable = False
    test_idx.flags.writeable = False
    return train_idx, test_idx


# --------------------------------------------------------------------------- loaders


@functools.lru_cache(maxsize=None)
def _dataset(name: str, test_fraction: float) -> Dataset:
    images, labels = load_raw(name)
    train_idx, test_idx = split_indices(name, test_fraction)
    N, H, W = images.shape
    # float32 halves memory against float64 and is what the engine trains in.
    x = (images.astype(np.float32) / np.float32(_PIXEL_MAX[name])).reshape(N, 1, H, W)
    parts = [x[train_idx], labels[train_idx], x[test_idx], labels[test_idx]]
    for part in parts:
        part.flags.writeable = False
    return Dataset(name, *parts)


def load_digits(test_fraction: float = 0.2) -> Dataset:
    """The 8x8 UCI digits: 1,797 images, pixels 0..16 divided by 16.

    With the default test_fraction=0.2: x_train float32 (1438, 1, 8, 8),
    y_train int64 (1438,), x_test float32 (359, 1, 8, 8), y_test int64 (359,).
    """
    return _dataset("digits", float(test_fraction))


def load_mnist(test_fraction: float = 0.2) -> Dataset:
    """10,000 MNIST digits: 28x28 images, grey levels 0..255 divided by 255.

    With the default test_fraction=0.2: x_train float32 (8000, 1, 28, 28),
    y_train int64 (8000,), x_test float32 (2000, 1, 28, 28), y_test int64 (2000,).
    """
    return _dataset("mnist", float(test_fraction))


def load(name: str, test_fraction: float = 0.2) -> Dataset:
    """Load a dataset by name, one of ``DATASETS`` ("digits", "mnist")."""
    _check_name(name)
    return _dataset(name, float(test_fraction))
