"""Datasets of one's own (a class's drawings, a file loaded on /train): a small store.

    dataset_id = store_dataset(settings, data)          # an uploaded .npz, checked
    dataset_id = store_arrays(settings, images, labels, names)
    load_dataset(settings, "digits" | "mnist" | dataset_id) -> core.datasets.Dataset
    dataset_summary(settings, dataset_id) -> {"id", "labels", "images", "counts"}

A dataset is checked by ``core.datasets`` (format and limits in its docstring) and written
once, content-addressed, as ``<upload_dir>/datasets/<id>.npz`` with id = "set-" + 16 hex
digits of the SHA-256 of its arrays: the same drawings are the same id, whoever sends them,
and a file never changes once written (so a loaded one is cached by its id). The upload
folder is the one every web process and training worker of a deployment share, so any of
them finds a dataset by its id. Only files named by an id are ever created or deleted here;
past MAX_STORED_DATASETS the least recently stored ones are deleted.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
from cnnlab.app import numbers
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import N_
from cnnlab.app.i18n import gettext as _
from cnnlab.app.settings import Settings
from cnnlab.core import datasets as core_datasets

__all__ = [
    "DATASET_ID",
    "MAX_DATASET_BYTES",
    "dataset_classes",
    "dataset_file",
    "dataset_path",
    "dataset_summary",
    "is_dataset_id",
    "known_dataset",
    "load_dataset",
    "store_arrays",
    "store_dataset",
]

log = logging.getLogger(__name__)

DATASET_ID = re.compile(r"^set-[0-9a-f]{16}$")
# An uploaded dataset file: the largest dataset (5,000 images) stored without compression
# is about 4 MB.
MAX_DATASET_BYTES = 8 * 1024 * 1024
MAX_STORED_DATASETS = 500
FOLDER = "datasets"
_FILE = re.compile(r"set-[0-9a-f]{16}\.npz")

# What core.datasets.DatasetFileError's reasons say to a person.
_REASONS = {
    "format": N_("This is not a dataset file: it must be an .npz with images, labels and label_names."),
    "too_big": N_("The dataset is too large: at most %(n)s images of 28×28 pixels."),
    "missing": N_("The dataset file has no %(names)s."),
    "images": N_("The dataset's images must be 28×28 grey levels (whole numbers 0 to 255, uint8)."),
    "labels": N_("The dataset's labels must be one whole number per image, from 0 to the number of labels minus 1."),
    "names": N_("A dataset has 2 to 10 labels, each named by 1 to 24 characters, all different."),
    "count": N_("A dataset has 1 to %(n)s images."),
    "per_label": N_("The label “%(label)s” has %(count)s images: every label needs at least 2."),
}

# id -> the file it was found in, in this process: a spec or a model met without the
# settings at hand (a job's predict, a spec read back from JSON) still finds its dataset.
_known: dict[str, Path] = {}
_lock = threading.Lock()


def is_dataset_id(name: Any) -> bool:
    return isinstance(name, str) and DATASET_ID.fullmatch(name) is not None


def _folder(settings: Settings) -> Path:
    return Path(settings.upload_dir) / FOLDER


def dataset_path(settings: Settings, dataset_id: str) -> Path:
    """Where dataset ``dataset_id`` is (or would be) stored; ValueError for anything not an id."""
    if not is_dataset_id(dataset_id):
        raise ValueError(f"not a dataset id: {dataset_id[:40]!r}")
    return _folder(settings) / f"{dataset_id}.npz"


def _translated(error: core_datasets.DatasetFileError) -> InputError:
    params = dict(error.params)
    if error.reason in ("too_big", "count"):
        params = {"n": numbers.count(core_datasets.MAX_IMAGES)}
    if error.reason == "per_label":
        params = {"label": str(params.get("label", ""))[:core_datasets.MAX_LABEL_CHARS], "count": params.get("n", 0)}
    message = _(_REASONS.get(error.reason, _REASONS["format"]))
    try:
        message = message % params if "%(" in message else message
    except (KeyError, ValueError, TypeError):
        message = _(_REASONS["format"])
    return InputError(message, field="file", status_code=422)


def _digest(images: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> str:
    h = hashlib.sha256(b"cnnlab-dataset-1\0")
    h.update(json.dumps(list(names), ensure_ascii=False).encode())
    h.update(b"\0")
    h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    return "set-" + h.hexdigest()[:16]


def store_arrays(settings: Settings, images_uint8: Any, labels: Any, label_names: Any) -> str:
    """Check and store a dataset given as arrays (see core.datasets.check_arrays); its id.
    InputError 422 (translated) when they are not a dataset, 507 when the disk is full."""
    try:
        images, labels, names = core_datasets.check_arrays(images_uint8, labels, label_names)
    except core_datasets.DatasetFileError as e:
        raise _translated(e) from None
    dataset_id = _digest(images, labels, names)
    path = dataset_path(settings, dataset_id)
    try:
        _write(path, lambda fh: core_datasets.save_file(fh, images, labels, names))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("cannot store a dataset, the disk is full: %s", exc)
            raise InputError(_("The server's disk is full: the dataset could not be stored."), status_code=507) from None
        raise
    with _lock:
        _known[dataset_id] = path
    _sweep(settings)
    return dataset_id


def store_dataset(settings: Settings, data: bytes) -> str:
    """Check an uploaded dataset file (``data``: the .npz's bytes, at most MAX_DATASET_BYTES)
    and store it; its id. InputError 413 when too large, 422 (translated, saying what is
    wrong) when it is not a dataset."""
    if len(data) > MAX_DATASET_BYTES:
        raise InputError(_("The file is too large: at most %(mb)s MB.") % {"mb": MAX_DATASET_BYTES // 2**20},
                         field="file", status_code=413)
    try:
        images, labels, names = core_datasets.read_file(io.BytesIO(data))
    except core_datasets.DatasetFileError as e:
        log.info("refused a dataset file: %s", e)
        raise _translated(e) from None
    return store_arrays(settings, images, labels, names)


def _write(path: Path, write) -> None:
    """Write a file once, aside and renamed (a reader never sees half of it); a file already
    there (the same content: its name is its digest) only has its time renewed."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        os.utime(path)
        return
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sweep(settings: Settings) -> None:
    """Past MAX_STORED_DATASETS files, delete the least recently stored (ours only)."""
    try:
        with os.scandir(_folder(settings)) as entries:
            files = [(e.stat().st_mtime, e.path) for e in entries if _FILE.fullmatch(e.name) and e.is_file()]
    except OSError:
        return
    if len(files) <= MAX_STORED_DATASETS:
        return
    for _mtime, path in sorted(files)[:len(files) - MAX_STORED_DATASETS]:
        Path(path).unlink(missing_ok=True)


def dataset_file(settings: Settings | None, dataset_id: str) -> Path:
    """The file of stored dataset ``dataset_id`` for a training: in ``settings``' upload
    folder, or where this process found it when it is not there."""
    path = dataset_path(settings, dataset_id) if settings is not None else None
    if path is not None and path.is_file():
        return path
    with _lock:
        known = _known.get(dataset_id)
    if known is not None and known.is_file():
        return known
    if path is None:
        from cnnlab.app.settings import get_settings

        path = dataset_path(get_settings(), dataset_id)
    return path


def _missing(dataset_id: str) -> InputError:
    return InputError(_("This dataset is not on the server (any more): load its file again."), field="dataset",
                      status_code=404)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> core_datasets.Dataset:
    return core_datasets.load_file(path, name=Path(path).stem)


def _load_path(path: Path) -> core_datasets.Dataset:
    """The dataset in ``path``, cached: its name is its content's digest, so a file there
    now holds what it held before (FileNotFoundError when it was deleted)."""
    if not path.is_file():
        raise FileNotFoundError(path)
    return _load_cached(str(path))


def load_dataset(settings: Settings, name: str) -> core_datasets.Dataset:
    """The Dataset ``name`` names: "digits", "mnist" or the id of a stored dataset of one's own.
    InputError 404 (translated) when there is no such dataset."""
    if name in core_datasets.DATASETS:
        return core_datasets.load(name)
    if not is_dataset_id(name):
        raise _missing(str(name))
    path = dataset_path(settings, name)
    try:
        dataset = _load_path(path)
    except (FileNotFoundError, core_datasets.DatasetFileError):
        raise _missing(name) from None
    with _lock:
        _known[name] = path
    return dataset


def known_dataset(name: str, settings: Settings | None = None) -> core_datasets.Dataset:
    """``load_dataset`` for code without the settings at hand: a dataset of one's own is
    looked for where this process last found it, else in the settings' (or the
    environment's) upload folder."""
    if name in core_datasets.DATASETS:
        return core_datasets.load(name)
    if settings is None:
        with _lock:
            path = _known.get(name)
        if path is not None:
            try:
                return _load_path(path)
            except (FileNotFoundError, core_datasets.DatasetFileError):
                pass
        from cnnlab.app.settings import get_settings

        settings = get_settings()
    return load_dataset(settings, name)


def dataset_classes(name: str, settings: Settings | None = None) -> int:
    """How many classes dataset ``name`` has (10 for the shipped ones); InputError 404 when
    there is no such dataset."""
    if name in core_datasets.DATASETS:
        return 10
    return known_dataset(name, settings).classes


def dataset_summary(settings: Settings, name: str) -> dict[str, Any]:
    """{"id", "labels": [names], "images": N, "counts": [images per label]} of dataset ``name``."""
    dataset = load_dataset(settings, name)
    counts = np.bincount(np.concatenate([dataset.y_train, dataset.y_test]), minlength=dataset.classes)
    return {"id": name, "labels": list(dataset.label_names), "images": int(counts.sum()),
            "counts": [int(c) for c in counts]}
