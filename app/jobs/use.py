"""Using a trained model: predict a drawn or test image, save it as .npz, load one back."""

from __future__ import annotations

import io
import json
import logging
import math
import time
import zipfile
from typing import Any

import numpy as np

from cnnlab.app import datasets as app_datasets
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import N_, gettext
from cnnlab.app.jobs.job import Job, JobStateError, ModelFileError
from cnnlab.app.jobs.spec import INPUT_SHAPES, OWN_SHAPE, TrainSpec, build_model
from cnnlab.core.losses import softmax
from cnnlab.core.model import SPEC_KEY, Sequential
from cnnlab.core.train_worker import filters_of, final_metrics

log = logging.getLogger(__name__)

__all__ = ["export_npz", "export_onnx", "load_npz", "predict", "predict_input", "MAX_MODEL_FILE_EXPANDED", "LOAD_EVAL_BATCH", "TRAINSPEC_KEY"]

# A .npz upload may expand to at most this many bytes (the largest lab model is 9 MB: app/budget.py).
MAX_MODEL_FILE_EXPANDED = 16 * 1024 * 1024
# A loaded model is evaluated in the server's own process: the largest one's layers hold
# ~220 KB per 28×28 image, so 100 images at a time keep it near 25 MB (1,000: +300 MB).
LOAD_EVAL_BATCH = 100
TRAINSPEC_KEY = "__trainspec__"


def _grid_array(grid: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """A drawn digit as the model's input (1, C, H, W), float32 in [0, 1].

    grid: H×W nested lists, 8×8 or 28×28, ink bright on a dark background (as both datasets
    store digits). Values in 0..1 are taken as they are; a grid whose largest value is above
    1 is read as 0..255 grey levels and divided by 255. A grid of the other size is
    resampled (area average) to the model's size.
    """
    if not isinstance(grid, list) or not grid or not all(isinstance(row, list) for row in grid):
        raise ValueError(gettext("The grid must be a list of rows of numbers."))
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(gettext("grid[%(i)s][%(j)s] is not a number.") % {"i": i, "j": j})
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(gettext("grid[%(i)s][%(j)s] is not a finite number (NaN or infinity).") % {"i": i, "j": j})
            if not 0 <= v <= 255:  # also keeps a 400-digit integer from overflowing float64 below
                raise ValueError(gettext("The grid's values must be between 0 and 1 (or 0 and 255)."))
    n = len(grid)
    if any(len(row) != n for row in grid) or n not in (8, 28):
        raise ValueError(gettext("The grid must be 8×8 or 28×28 numbers; got %(h)s rows of %(w)s.")
                         % {"h": n, "w": "/".join(sorted({str(len(r)) for r in grid}))})
    a = np.array(grid, dtype=np.float64)
    if a.min() < 0 or a.max() > 255:
        raise ValueError(gettext("The grid's values must be between 0 and 1 (or 0 and 255)."))
    if a.max() > 1:
        a = a / 255.0
    C, H, W = shape
    if a.shape != (H, W):
        a = _resample(a, H)
    return np.ascontiguousarray(np.broadcast_to(a.astype(np.float32), (1, C, H, W)))


def _resample(a: np.ndarray, n: int) -> np.ndarray:
    """Area-average resampling of a square (m, m) array to (n, n): each output cell is the
    mean of the input it covers, fractional cells weighted by their covered part."""
    m = a.shape[0]
    edges = np.linspace(0, m, n + 1)
    weights = np.zeros((n, m))
    for i in range(n):
        lo, hi = edges[i], edges[i + 1]
        for j in range(int(lo), min(m, math.ceil(hi))):
            weights[i, j] = min(hi, j + 1) - max(lo, j)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ a @ weights.T


def predict_input(job: Job, model: Sequential, grid: Any = None,
                  test_index: int | None = None) -> tuple[np.ndarray, int | None]:
    """The image predict() classifies, (1, C, H, W), and its true label (test images only).
    Raises ValueError for a bad grid or test index."""
    if test_index is not None:
        dataset = app_datasets.known_dataset(job.spec.dataset)  # an InputError 404 when it is gone
        if not 0 <= test_index < len(dataset.y_test):
            raise ValueError(gettext("The test image number must be between 0 and %(last)s.")
                             % {"last": len(dataset.y_test) - 1})
        return np.ascontiguousarray(dataset.x_test[test_index:test_index + 1]), int(dataset.y_test[test_index])
    return _grid_array(grid, tuple(model.input_shape)), None


def predict(job: Job, grid: Any = None, *, test_index: int | None = None, maps: bool = True) -> dict[str, Any]:
    """Classify one image with the job's model (as trained so far).

    grid: see _grid_array; or test_index: an image of the dataset's test set.
    Returns probabilities (one per class, summing to 1), label, the input (H×W in [0, 1]) and, with
    ``maps``, every layer's output (Flatten left out) as {"layer", "shape", "values"}.
    Raises JobStateError when the job has no model yet, ValueError for a bad grid or index.
    """
    model = job.model
    if model is None:
        raise JobStateError(gettext("This training has no model yet: wait until it starts."))
    x, true_label = predict_input(job, model, grid, test_index)
    outs = model.activations(x)
    p = softmax(outs[-1][0].astype(np.float64))
    out: dict[str, Any] = {"probabilities": p.tolist(), "label": int(p.argmax()),
                           "input": np.round(x[0, 0].astype(np.float64), 4).tolist()}
    if true_label is not None:
        out["true_label"] = true_label
    if maps:
        out["layers"] = [{"layer": layer.describe(), "shape": list(o.shape[1:]), "index": i,
                          "values": np.round(o[0].astype(np.float64), 4).tolist()}
                         for i, (layer, o) in enumerate(zip(model.layers, outs)) if type(layer).__name__ != "Flatten"]
    return out


def _snapshot(job: Job) -> Sequential:
    """A copy of the job's model taken at one moment (a running job's weights change under the worker)."""
    model = job.model
    if model is None:
        raise JobStateError(gettext("This training has no model yet: wait until it starts."))
    copy = Sequential.from_spec(model.spec()).astype(model.flat_params.dtype)
    with job.cond:
        copy.flat_params[...] = model.flat_params
    return copy


def export_npz(job: Job) -> bytes:
    """The job's model as .npz: core.model's format (parameters + "__spec__") plus the
    TrainSpec, so a file alone rebuilds the model and its settings."""
    model = _snapshot(job)
    buf = io.BytesIO()
    np.savez(buf, **{SPEC_KEY: np.array(json.dumps(model.spec())),
                     TRAINSPEC_KEY: np.array(json.dumps(job.spec.model_dump()))},
             **{name: p for name, p, _ in model.parameters()})
    return buf.getvalue()


def export_onnx(job: Job) -> bytes:
    """The job's model as ONNX (core/onnx_export.py). The onnx package takes ~1 s to import,
    so it is imported only when a file is asked for."""
    from cnnlab.core.onnx_export import onnx_bytes

    return onnx_bytes(_snapshot(job), name=f"cnnlab-{job.spec.dataset}")


def _bad_file(detail: str | None = None) -> ModelFileError:
    message = gettext("This is not a CNN Lab model file (.npz saved by this page).")
    return ModelFileError(f"{message} {detail}" if detail else message)


def load_npz(session: str, data: bytes, *, max_bytes: int | None = None, settings: Any = None) -> Job:
    """A finished ("done") job holding the model in ``data`` (from export_npz).

    The file is never trusted: its architecture must be one this lab can train (checked as a
    TrainSpec before anything is built), the model is rebuilt by tiny_cnn and must have the
    same layers, and every parameter must have the right shape and be finite. A model of a
    dataset of one's own (its TrainSpec names a stored dataset's id) loads when that dataset
    is on this server (looked up in ``settings``' upload folder): its K labels from the file.
    Raises ModelFileError with a translated message.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise ModelFileError(gettext("The file is too large: at most %(mb)s MB.") % {"mb": round(max_bytes / 2**20, 1)})
    buf = io.BytesIO(data)
    if not zipfile.is_zipfile(buf):
        raise _bad_file()
    try:
        with zipfile.ZipFile(buf) as zf:
            if sum(info.file_size for info in zf.infolist()) > MAX_MODEL_FILE_EXPANDED:
                raise _bad_file()
        buf.seek(0)
        with np.load(buf, allow_pickle=False) as npz:
            files = set(npz.files)
            if SPEC_KEY not in files:
                raise _bad_file()
            arch = json.loads(str(npz[SPEC_KEY]))
            saved_spec = json.loads(str(npz[TRAINSPEC_KEY])) if TRAINSPEC_KEY in files else {}
            spec = _spec_from_file(arch, saved_spec, settings)
            model = build_model(spec)
            if model.spec()["layers"] != arch.get("layers"):
                raise _bad_file()
            for name, p, _ in model.parameters():
                if name not in files:
                    raise _bad_file(gettext("Parameter %(name)s is missing.") % {"name": name})
                saved = npz[name]
                if saved.shape != p.shape or saved.dtype.kind != "f" or not np.all(np.isfinite(saved)):
                    raise _bad_file(gettext("Parameter %(name)s is not the right shape or has values that are not "
                                            "numbers.") % {"name": name})
                np.copyto(p, saved.astype(p.dtype))
    except ModelFileError:
        raise
    except Exception:  # any damage in an uploaded file is a bad file, not a server error
        log.info("refused a model file", exc_info=True)
        raise _bad_file() from None
    job = Job(session, spec)
    job.model = model
    job.status = "done"
    job.started = job.finished = time.time()
    job.started_mono = job.finished_mono = time.monotonic()
    job._message = (N_("Loaded from a file."), {})
    job.metrics["n_params"] = model.n_params
    dataset = app_datasets.known_dataset(spec.dataset, settings)  # checked above: it is there
    job.metrics.update(final_metrics(model, dataset, batch_size=LOAD_EVAL_BATCH))
    job.filters = filters_of(model)
    return job


def _spec_from_file(arch: dict, saved: dict, settings: Any = None) -> TrainSpec:
    config = arch.get("config") or {}
    shape = tuple(config.get("input_shape") or arch.get("input_shape") or ())
    saved = saved if isinstance(saved, dict) else {}
    own = saved.get("dataset")
    if app_datasets.is_dataset_id(own):  # trained on a dataset of one's own: K labels, from its file
        try:
            classes = app_datasets.dataset_classes(own, settings)
        except InputError:
            raise ModelFileError(gettext("This model was trained on a dataset that is not on this server: load "
                                         "that dataset's file first, then the model.")) from None
        if shape != OWN_SHAPE or config.get("classes") != classes:
            raise _bad_file(gettext("Its model is not for the 28×28 drawings of its dataset's %(n)s labels.")
                            % {"n": classes})
        dataset = own
    else:
        dataset = next((name for name, s in INPUT_SHAPES.items() if s == shape), None)
        if dataset is None or config.get("classes", 10) != 10:
            raise _bad_file(gettext("Its model is not for 8×8 digits or 28×28 MNIST images."))
    fields = {key: config[key] for key in ("filters", "kernel", "padding", "pool", "pool_size", "hidden",
                                           "activation", "seed", "stride") if key in config}
    blocks = config.get("blocks") or []
    if isinstance(blocks, list) and blocks:  # a deeper model: its extra blocks as filters2 … pool_size3
        fields["blocks"] = len(blocks) + 1
        for number, block in enumerate(blocks, start=2):
            if not isinstance(block, dict):
                raise _bad_file(gettext("Its architecture is outside this lab's limits."))
            fields.update({f"{key}{number}": value for key, value in block.items()})
    extra = {key: value for key, value in (saved if isinstance(saved, dict) else {}).items()
             if key in TrainSpec.model_fields and key not in fields and key != "dataset"}
    try:
        return TrainSpec.model_validate({**extra, **fields, "dataset": dataset}, context={"settings": settings})
    except Exception:
        raise _bad_file(gettext("Its architecture is outside this lab's limits.")) from None
