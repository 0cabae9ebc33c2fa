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

A dataset of one's own (a class's drawings, say) is a file in the format
``save_file`` writes and ``load_file`` reads back, checked: an ``.npz`` with
``images`` uint8 (N, 28, 28) (0 = paper, 255 = ink), ``labels`` int64 (N,) in
0 .. K-1 and ``label_names`` (K,) unicode, 2 ≤ K ≤ 10, names of 1 to 24
characters, N ≤ 5,000 and at least 2 images of every label. ``from_arrays``
makes the same ``Dataset`` from arrays in memory.
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import numpy as np

DATASETS = ("digits", "mnist")

# The largest raw pixel value of each source: dividing by it maps pixels to [0, 1].
_PIXEL_MAX = {"digits": 16.0, "mnist": 255.0}

# Any fixed number would do; changing it changes every split (tests pin the split).
_SPLIT_SEED = 20240611

# A dataset of one's own (see the module docstring).
OWN_SIDE = 28
MIN_LABELS, MAX_LABELS = 2, 10
MAX_LABEL_CHARS = 24
MAX_IMAGES = 5_000
MIN_PER_LABEL = 2
FILE_ARRAYS = ("images", "labels", "label_names")
# What a file's arrays may expand to: the largest dataset's images and labels, and room
# for the names and the .npy headers.
MAX_FILE_EXPANDED = MAX_IMAGES * (OWN_SIDE * OWN_SIDE + 8) + 64 * 1024
DIGIT_NAMES = tuple(str(d) for d in range(10))


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split of one image dataset.

    name:    "digits" or "mnist"
    x_train: float32 (N_train, 1, H, W), values in [0, 1]
    y_train: int64 (N_train,), class ids 0 .. classes-1
    x_test:  float32 (N_test, 1, H, W), values in [0, 1]
    y_test:  int64 (N_test,)
    classes: number of classes (10 digits; K for a dataset of one's own)
    label_names: what each class is called, ("0", ..., "9") for the digits

    H = W = 8 for "digits" and 28 for "mnist" and a dataset of one's own. The arrays
    are read-only; copy one (``x.copy()``) before changing it.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int = 10
    label_names: tuple[str, ...] = DIGIT_NAMES

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


# --------------------------------------------------------------------------- overfitting lab
# Fewer training images and wrong labels make a network learn its training set by heart:
# /train's overfitting lab. Both come from the run's seed (each from a generator of its
# own), so the same seed gives the same images and the same wrong labels.


def subset_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices into ``labels`` (int (N,)), stratified: class c gets its share
    n·n_c/N, rounded by largest remainder (ties: the lower class), so the counts add up to
    n exactly; which images, and their order, come from ``seed``. int64 (n,)."""
    (N,) = labels.shape
    if not 0 < n <= N:
        raise ValueError(f"a subset must have 1 to {N} images; got {n}")
    rng = np.random.default_rng([seed, 2])
    classes, counts = np.unique(labels, return_counts=True)
    quota = n * counts / N
    take = np.floor(quota).astype(np.int64)
    short = n - int(take.sum())
    take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    chosen = np.concatenate(picked).astype(np.int64)
    return chosen[rng.permutation(n)]


def noisy_labels(labels: np.ndarray, share: float, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(new labels, changed indices): round(share·N) labels, chosen from ``seed``, each
    replaced by a different class drawn uniformly from the other classes − 1. int64 (N,), (k,)."""
    (N,) = labels.shape
    if not 0 <= share <= 1:
        raise ValueError(f"the noisy share must be in [0, 1]; got {share}")
    rng = np.random.default_rng([seed, 3])
    k = int(round(share * N))
    changed = np.sort(rng.choice(N, size=k, replace=False)).astype(np.int64)
    new = labels.astype(np.int64, copy=True)
    new[changed] = (new[changed] + rng.integers(1, classes, size=k)) % classes
    new.flags.writeable = False
    return new, changed


def overfit_variant(dataset: Dataset, train_size: int = 0, label_noise: float = 0.0, seed: int = 0) -> Dataset:
    """``dataset`` with its training set cut to ``train_size`` images (0: all; subset_indices)
    and then ``label_noise`` of those training labels made wrong (noisy_labels). The held-out
    images and labels are the same arrays. Without either, ``dataset`` itself."""
    x, y = dataset.x_train, dataset.y_train
    if train_size and train_size != len(y):
        if train_size > len(y):
            raise ValueError(f"train_size {train_size} is more than the {len(y)} training images")
        idx = subset_indices(y, train_size, seed)
        x, y = x[idx], y[idx]
        x.flags.writeable = False
        y.flags.writeable = False
    if label_noise:
        y, _ = noisy_labels(y, label_noise, dataset.classes, seed)
    if x is dataset.x_train and y is dataset.y_train:
        return dataset
    return replace(dataset, x_train=x, y_train=y)


# --------------------------------------------------------------------------- datasets of one's own


class DatasetFileError(ValueError):
    """A dataset of one's own that is not in the format (see the module docstring).

    ``reason`` names what is wrong (one of "format", "too_big", "missing", "images", "labels",
    "names", "count", "per_label") and ``params`` its details, so a caller can say it in the
    reader's language; ``str(error)`` says it in English."""

    def __init__(self, reason: str, message: str, **params: Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.params = params


def check_arrays(images: Any, labels: Any, label_names: Any) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The three arrays of a dataset of one's own, checked and in their stored types.

    images: whole numbers 0..255, (N, 28, 28); labels: whole numbers (N,) in 0 .. K-1;
    label_names: K texts (a sequence or a (K,) unicode array).
    Returns images uint8 (N, 28, 28), labels int64 (N,), the names as a tuple of str.
    Raises DatasetFileError on anything else (floats, NaN, objects, wrong shapes, ...).
    """
    # The names first: the labels are checked against their number.
    if isinstance(label_names, np.ndarray):
        if label_names.dtype.kind != "U" or label_names.ndim != 1:
            raise DatasetFileError("names", "label_names must be a (K,) array of texts")
        names = tuple(str(n) for n in label_names.tolist())
    elif isinstance(label_names, Sequence) and not isinstance(label_names, (str, bytes)):
        if not all(isinstance(n, str) for n in label_names):
            raise DatasetFileError("names", "label_names must be texts")
        names = tuple(label_names)
    else:
        raise DatasetFileError("names", "label_names must be a sequence of texts")
    if not MIN_LABELS <= len(names) <= MAX_LABELS:
        raise DatasetFileError("names", f"a dataset has {MIN_LABELS} to {MAX_LABELS} labels, not {len(names)}",
                               n=len(names))
    for n in names:
        if not 1 <= len(n.strip()) <= MAX_LABEL_CHARS or len(n) > MAX_LABEL_CHARS or not n.isprintable():
            raise DatasetFileError("names", f"each label name has 1 to {MAX_LABEL_CHARS} printable characters; "
                                   f"got {n[:MAX_LABEL_CHARS + 1]!r}", n=len(names))
    if len({n.strip().casefold() for n in names}) != len(names):
        raise DatasetFileError("names", "two labels have the same name", n=len(names))
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype.kind not in "ui" or images.ndim != 3 or images.shape[1:] != (OWN_SIDE, OWN_SIDE):
        raise DatasetFileError("images", f"images must be whole numbers 0..255 of shape (N, {OWN_SIDE}, {OWN_SIDE}); "
                               f"got {images.dtype} {images.shape}")
    N = images.shape[0]
    if not 1 <= N <= MAX_IMAGES:
        raise DatasetFileError("count", f"a dataset has at most {MAX_IMAGES} images, not {N}", n=N)
    if images.dtype != np.uint8 and (images.min() < 0 or images.max() > 255):
        raise DatasetFileError("images", "images must be whole numbers 0..255")
    if labels.dtype.kind not in "ui" or labels.shape != (N,):
        raise DatasetFileError("labels", f"labels must be {N} whole numbers (one per image); "
                               f"got {labels.dtype} {labels.shape}", n=N)
    if labels.min() < 0 or labels.max() >= len(names):
        raise DatasetFileError("labels", f"labels must be 0 to {len(names) - 1}", n=N)
    labels = labels.astype(np.int64)
    counts = np.bincount(labels, minlength=len(names))
    for k, c in enumerate(counts):
        if c < MIN_PER_LABEL:
            raise DatasetFileError("per_label", f"label {names[k]!r} has {c} image(s); every label needs at least "
                                   f"{MIN_PER_LABEL}", label=names[k], n=int(c))
    return images.astype(np.uint8), labels, names


def from_arrays(name: str, images: np.ndarray, labels: np.ndarray, label_names: Sequence[str],
                test_fraction: float = 0.2) -> Dataset:
    """A ``Dataset`` of one's own from arrays (checked by ``check_arrays``).

    images: uint8 (N, 28, 28), 0 = paper, 255 = ink; labels (N,) in 0 .. K-1; label_names: K texts.
    Split like the shipped datasets (``stratified_split``: every label in both sets, the
    same split for the same arrays); x float32 (N, 1, 28, 28) in [0, 1], read-only.
    """
    images, labels, names = check_arrays(images, labels, label_names)
    train_idx, test_idx = stratified_split(labels, test_fraction)
    N = images.shape[0]
    x = (images.astype(np.float32) / np.float32(255.0)).reshape(N, 1, OWN_SIDE, OWN_SIDE)
    parts = [x[train_idx], labels[train_idx], x[test_idx], labels[test_idx]]
    for part in parts:
        part.flags.writeable = False
    return Dataset(name, *parts, classes=len(names), label_names=names)


def save_file(file: Any, images_uint8: np.ndarray, labels: np.ndarray, label_names: Sequence[str]) -> None:
    """Write a dataset of one's own to ``file`` (a path or a binary file object) as a
    compressed ``.npz`` that ``load_file`` reads back. Raises DatasetFileError (nothing
    written) when the arrays are not a dataset."""
    images, labels, names = check_arrays(images_uint8, labels, label_names)
    np.savez_compressed(file, images=images, labels=labels,
                        label_names=np.array(names, dtype=f"<U{max(len(n) for n in names)}"))


def _read_member(zf: zipfile.ZipFile, member: str) -> np.ndarray:
    """One .npy of the archive, its header read first: nothing is allocated for a shape the
    member cannot hold, and no object array is ever unpickled."""
    info = zf.getinfo(member)
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        if dtype.hasobject:
            raise ValueError("object arrays are not data")
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > info.file_size:
            raise ValueError("the array is larger than its member")
    with zf.open(info) as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def read_file(file: Any) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The checked arrays of a dataset file written by ``save_file`` (a path, a binary file
    object or bytes), never trusted: a zip of the three arrays expanding to at most
    MAX_FILE_EXPANDED bytes, no pickled objects, every array checked (``check_arrays``).
    Returns images uint8 (N, 28, 28), labels int64 (N,), label names, in the file's order.
    Raises DatasetFileError (a ValueError) saying what is wrong."""
    if isinstance(file, (bytes, bytearray, memoryview)):
        file = io.BytesIO(bytes(file))
    elif isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as fh:
            return read_file(io.BytesIO(fh.read()))
    try:
        with zipfile.ZipFile(file) as zf:
            members = {info.filename: info for info in zf.infolist()}
            if sum(info.file_size for info in members.values()) > MAX_FILE_EXPANDED:
                raise DatasetFileError("too_big", f"the file expands to more than {MAX_FILE_EXPANDED} bytes")
            missing = [a for a in FILE_ARRAYS if f"{a}.npy" not in members]
            if missing:
                raise DatasetFileError("missing", f"the file has no {', '.join(missing)}", names=", ".join(missing))
            arrays = {a: _read_member(zf, f"{a}.npy") for a in FILE_ARRAYS}
    except DatasetFileError:
        raise
    except Exception as e:  # noqa: BLE001 (not a zip, damaged, pickled objects, a bad .npy: not a dataset file)
        raise DatasetFileError("format", f"not a dataset file (.npz of images, labels, label_names): {e}") from None
    if arrays["images"].dtype != np.uint8:
        raise DatasetFileError("images", f"images must be uint8, not {arrays['images'].dtype}")
    return check_arrays(arrays["images"], arrays["labels"], arrays["label_names"])


def load_file(file: Any, name: str = "file") -> Dataset:
    """A dataset of one's own read from ``file`` (see ``read_file``), split as ``from_arrays``
    splits. Raises DatasetFileError (a ValueError) saying what is wrong."""
    return from_arrays(name, *read_file(file))
