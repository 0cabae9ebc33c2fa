"""Using a class's collection: train on it, test the trained model, download it.

    dataset_from_collection(store, code)  -> images uint8 (N, 28, 28), labels int64 (N,), names
    start_training(request, code)         -> job id (the assistant's session owns the job)
    refresh_phase(request_or_app, code)   -> "train" becomes "test" once the job has ended
    test_drawing(request, code, student, seat, label, grid) -> probabilities, recorded in the tally
    misclassified(request, code)          -> the held-out drawings the model got wrong (no seats)
    dataset_npz(store, code) / dataset_zip(store, code) / thumbnail_png(grid)

When training ends, the phase becomes "test" in two ways: ``start_training`` starts a small
watcher thread that waits for the job and calls ``refresh_phase``; and ``test_drawing`` (and any
caller that reads the collection for a screen: the host's class stream, GET state) may call
``refresh_phase`` itself, which costs nothing unless the phase is "train" — so a restarted
server, or a web process that did not start the job, still moves on.

The job belongs to the assistant's browser session (its /train live view works as for any
job of theirs); students' tests reach it through the job's id kept in the collection.

Nothing here writes a student's session id or seat into a file: the downloads hold drawings,
labels and label names only.

Every function blocks (store and job-queue calls, files, a model's forward pass, Valkey in
shared mode): call them from a ``def`` route (FastAPI's thread pool) or ``anyio.to_thread``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import threading
import time
import unicodedata
import zipfile
from typing import Any

import numpy as np

from cnnlab.app import datasets as app_datasets
from cnnlab.app.classroom import collect
from cnnlab.app.classroom.collection import GRID, grid_bytes
from cnnlab.app.classroom.collection_store import NoCollection, collection_store_for
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.images import to_png
from cnnlab.app.jobs import ACTIVE, FINISHED, JobNotFound, TrainSpec
from cnnlab.app.ratelimit import address_key, limit
from cnnlab.app.session import session_id
from cnnlab.app.settings import settings_for
from cnnlab.core.datasets import save_file

log = logging.getLogger(__name__)

__all__ = ["MIN_PER_LABEL_TO_TRAIN", "dataset_from_collection", "dataset_npz", "dataset_zip", "folder_names",
           "misclassified", "refresh_phase", "start_training", "test_drawing", "thumbnail_png"]

# Training refuses until every label has this many drawings: with the 80/20 stratified split,
# 5 leave 4 to learn from and 1 held out. (The .npz format itself needs 2 per label.)
MIN_PER_LABEL_TO_TRAIN = 5
# The .npz download keeps labels with at least this many drawings (what core.datasets.load_file accepts).
MIN_PER_LABEL_TO_SAVE = 2
# The watcher gives up this long after the job's own time cap (the lazy refresh still works).
WATCH_MARGIN_SECONDS = 120.0
WATCH_POLL_SECONDS = 1.0
# The same fixed date on every zip entry: the archive says nothing about when anyone drew.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# ============================================================================== reading the collection


def _collection(store, code: str):
    c = store.get(code)
    if c is None:
        raise collect.no_collection()
    return c


def _drawings(store, code: str) -> list:
    """The collection's drawings in order; 404 when it was deleted meanwhile."""
    try:
        return store.drawings(code)
    except NoCollection:
        raise collect.no_collection() from None


def _arrays(drawings) -> tuple[np.ndarray, np.ndarray]:
    if not drawings:
        return np.zeros((0, GRID, GRID), np.uint8), np.zeros(0, np.int64)
    images = np.stack([np.frombuffer(d.grid, dtype=np.uint8).reshape(GRID, GRID) for d in drawings])
    labels = np.array([d.label for d in drawings], dtype=np.int64)
    return images, labels


def dataset_from_collection(store, code: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The class's drawings as arrays, in drawing order: images uint8 (N, 28, 28) (0 = paper,
    255 = ink), labels int64 (N,) indexing ``names`` (every label of the collection, even one
    with no drawing yet). 404 (InputError) when the class has no collection."""
    c = _collection(store, code)
    images, labels = _arrays(_drawings(store, code))
    return images, labels, list(c.labels)


# ============================================================================== downloads


def thumbnail_png(grid: bytes, scale: int = 2) -> bytes:
    """A drawing as a small PNG for screens: grey, ink dark on white, each cell ``scale``×``scale``
    pixels (56×56 by default)."""
    a = np.frombuffer(grid, dtype=np.uint8)
    if a.size != GRID * GRID:
        raise ValueError(f"a drawing has {GRID * GRID} bytes, got {a.size}")
    picture = 255 - a.reshape(GRID, GRID)
    if scale > 1:
        picture = np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)
    return to_png(np.ascontiguousarray(picture))


def dataset_npz(store, code: str) -> bytes:
    """The collection as the dataset file /train loads (core.datasets.save_file's format:
    images uint8 (N, 28, 28), labels, label_names). Labels with fewer than 2 drawings are left
    out (the format needs 2 of each) and the rest renumbered in order; a 409 (InputError) when
    fewer than 2 labels are left."""
    images, labels, names = dataset_from_collection(store, code)
    counts = np.bincount(labels, minlength=len(names))
    keep = [k for k in range(len(names)) if counts[k] >= MIN_PER_LABEL_TO_SAVE]
    if len(keep) < 2:
        raise InputError(_("To save the dataset, at least two labels need at least %(n)s drawings each.")
                         % {"n": MIN_PER_LABEL_TO_SAVE}, status_code=409)
    if len(keep) < len(names):
        new_index = np.full(len(names), -1, np.int64)
        new_index[keep] = np.arange(len(keep))
        chosen = np.isin(labels, keep)
        images, labels = images[chosen], new_index[labels[chosen]]
        names = [names[k] for k in keep]
    buf = io.BytesIO()
    save_file(buf, images, labels, names)
    return buf.getvalue()


# Names Windows refuses for a file or folder, whatever the extension.
_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                       *(f"LPT{i}" for i in range(1, 10))})
_UNSAFE = re.compile(r"[^\w\-]+")  # \w: letters and digits of any script, and "_"
MAX_FOLDER_CHARS = 40


def folder_names(labels: list[str]) -> list[str]:
    """A safe, distinct folder name for each label: letters, digits, "_" and "-" only (any
    other run of characters becomes "_"), no leading dot, not a name Windows reserves, at
    most 40 characters, distinct ignoring case ("label-3" for a label with nothing left)."""
    out: list[str] = []
    used: set[str] = set()
    for k, label in enumerate(labels):
        safe = _UNSAFE.sub("_", unicodedata.normalize("NFC", str(label))).strip("_-.")[:MAX_FOLDER_CHARS]
        if not safe:
            safe = f"label-{k}"
        if safe.upper() in _RESERVED:
            safe += "_"
        name, n = safe, 2
        while name.casefold() in used:
            name = f"{safe}-{n}"
            n += 1
        used.add(name.casefold())
        out.append(name)
    return out


def dataset_zip(store, code: str) -> bytes:
    """The collection as a zip of PNGs: ``<label folder>/<drawing id>.png`` (28×28 grey, ink
    dark on white; folder names from ``folder_names``, one folder per label, empty ones too)
    and ``labels.csv`` (columns file, label, index: the PNG's path, its label's text and its
    label's number). Nothing in it says who drew what, or when."""
    c = _collection(store, code)
    drawings = sorted(_drawings(store, code), key=lambda d: (d.label, d.id))
    folders = folder_names(list(c.labels))
    buf = io.BytesIO()
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["file", "label", "index"])
    with zipfile.ZipFile(buf, "w") as zf:
        for folder in folders:
            zf.writestr(zipfile.ZipInfo(f"{folder}/", date_time=ZIP_DATE), b"")
        for d in drawings:
            path = f"{folders[d.label]}/{d.id}.png"
            picture = 255 - np.frombuffer(d.grid, dtype=np.uint8).reshape(GRID, GRID)
            zf.writestr(zipfile.ZipInfo(path, date_time=ZIP_DATE), to_png(np.ascontiguousarray(picture)),
                        compress_type=zipfile.ZIP_STORED)  # a PNG is compressed already
            writer.writerow([path, c.labels[d.label], d.label])
        zf.writestr(zipfile.ZipInfo("labels.csv", date_time=ZIP_DATE), rows.getvalue().encode("utf-8"),
                    compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


# ============================================================================== the job


def _app(request_or_app):
    return getattr(request_or_app, "app", request_or_app)


def _job_of(request_or_app, job_id: str | None):
    """The collection's job (any session's), or None when it is gone (expired) or was never."""
    if not job_id:
        return None
    runner = _app(request_or_app).state.jobs
    # A queue's ``get`` answers only to the owner's session (ids cannot be probed); a class's
    # students reach the assistant's job through the id the collection keeps.
    owner = runner.owner(job_id)
    if owner is None:
        return None
    try:
        return runner.get(owner, job_id)
    except JobNotFound:
        return None


def start_training(request, code: str) -> str:
    """Train the lab's CNN on the class's drawings; returns the job's id.

    The drawings go into a dataset file (app.datasets.store_arrays, content-addressed), a
    TrainSpec(dataset=<its id>) goes to the app's job queue as the assistant's own training (the
    same rate limit, caps and errors as POST /api/train), and the collection's phase becomes
    "train" with the job's id. Refused (409) when the collection is closed, already training,
    or a label has fewer than MIN_PER_LABEL_TO_TRAIN drawings (the message names them).
    """
    store = collection_store_for(request)
    c = _collection(store, code)
    if c.phase == "closed":
        raise InputError(_("The collection is closed."), status_code=409)
    if c.phase == "train":
        job = _job_of(request, c.job_id)
        if job is not None and job.status in ACTIVE:
            raise InputError(_("The model is already training: wait for it to finish."), status_code=409)
    images, labels, names = dataset_from_collection(store, code)
    counts = np.bincount(labels, minlength=len(names))
    short = [f"{name} ({int(n)})" for name, n in zip(names, counts, strict=True) if n < MIN_PER_LABEL_TO_TRAIN]
    if short:
        raise InputError(_("To train, every label needs at least %(n)s drawings. Still short: %(labels)s.")
                         % {"n": MIN_PER_LABEL_TO_TRAIN, "labels": ", ".join(short)}, status_code=409)
    limit(request, "trainings")
    settings = settings_for(request.app)
    dataset_id = app_datasets.store_arrays(settings, images, labels, names)
    spec = TrainSpec.model_validate({"dataset": dataset_id}, context={"settings": settings})
    runner = request.app.state.jobs
    job = runner.submit(session_id(request), spec, address_key(request))
    collect.set_phase(request, code, "train", job.id)
    _watch(request.app, code, job)
    return job.id


def _watch(app, code: str, job) -> None:
    """A thread that moves the phase on when ``job`` ends (see the module docstring). While it
    waits, the job's session counts as watched: the class is waiting for it even when the
    projector shows no /train live view (a job nobody watches is stopped after
    ``job_abandon_seconds``); the job's own time cap still applies."""
    runner = app.state.jobs
    cap = float(getattr(runner.settings, "job_time_cap_seconds", 120.0))

    def run() -> None:
        give_up = time.monotonic() + cap + WATCH_MARGIN_SECONDS
        version = -1
        while job.status not in FINISHED and time.monotonic() < give_up:
            try:
                runner.touch(job.session)
            except Exception:  # the shared engine is away for a moment: the job's own checks decide
                log.debug("could not touch session of job %s", job.id, exc_info=True)
            version = job.wait_for_change(version, timeout=WATCH_POLL_SECONDS)
        try:
            refresh_phase(app, code)
        except InputError:  # the class ended meanwhile
            pass
        except Exception:
            log.exception("moving class %s's collection on after its training", code)

    threading.Thread(target=run, name=f"collection-{code}", daemon=True).start()


def refresh_phase(request_or_app, code: str):
    """The collection, moved on when its training has ended: "train" becomes "test" when the
    job is done or stopped with a model, "collect" when it failed or is gone (the assistant can
    train again). Returns the collection (None when there is none). Nothing is written unless
    the phase is "train" and the job has ended, so calling it often is cheap."""
    c = collection_store_for(request_or_app).get(code)
    if c is None or c.phase != "train":
        return c
    job = _job_of(request_or_app, c.job_id)
    if job is not None and job.status in ACTIVE:
        return c
    usable = job is not None and job.status in ("done", "stopped") and job.model is not None
    phase, job_id = ("test" if usable else "collect"), c.job_id

    def move_on(store):
        now = store.get(code)
        if now is None or now.phase != "train" or now.job_id != job_id:  # changed meanwhile: leave it
            return now
        return store.set_phase(code, phase, job_id)

    return collect.change(request_or_app, code, move_on)


def _not_testing(c) -> InputError:
    if c.phase == "collect":
        return InputError(_("The model has not been trained yet."), status_code=409)
    if c.phase == "train":
        return InputError(_("The model is still training: wait for it to finish."), status_code=409)
    return InputError(_("The collection is closed."), status_code=409)


def test_drawing(request, code: str, student: str, seat: int, label: int, grid: bytes | list) -> dict[str, Any]:
    """Ask the trained model about a student's drawing and count it in the tally.

    grid: 784 bytes, 0 (paper) .. 255 (ink), prepared by the phone like the pad's MNIST input
    (or the pad's 784 numbers in 0..1, checked by ``collection.grid_bytes``).
    Returns {"probabilities": K numbers, "predicted": k, "right": bool, "label": the meant
    label, "labels": the label names, "id": the test's number}. 409 outside the "test" phase or
    when the model is gone; 422 for a label or grid that is not the collection's.
    """
    c = refresh_phase(request, code)
    if c is None:
        raise collect.no_collection()
    if c.phase != "test":
        raise _not_testing(c)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(c.labels):
        raise InputError(_("This collection has no such label."), field="label")
    if isinstance(grid, list):
        grid = grid_bytes(grid)
    if not isinstance(grid, (bytes, bytearray)) or len(grid) != GRID * GRID:
        raise InputError(_("The drawing must be %(n)s×%(n)s values.") % {"n": GRID}, field="grid")
    job = _job_of(request, c.job_id)
    model = job.model if job is not None else None
    if model is None or tuple(model.input_shape) != (1, GRID, GRID):
        raise InputError(_("The trained model is no longer available: the assistant can train it again."),
                         status_code=409)
    x = (np.frombuffer(bytes(grid), dtype=np.uint8).astype(np.float32) / np.float32(255)).reshape(1, 1, GRID, GRID)
    p = model.predict_proba(x)[0].astype(np.float64)  # no caches: safe with other students at once
    if p.shape != (len(c.labels),):
        raise InputError(_("The trained model is no longer available: the assistant can train it again."),
                         status_code=409)
    predicted = int(p.argmax())
    record = collect.record_test(request, code, student, seat, label, predicted, bytes(grid))
    return {"probabilities": [round(float(v), 6) for v in p], "predicted": predicted, "right": predicted == label,
            "label": label, "labels": list(c.labels), "id": record.id}


def misclassified(request, code: str) -> list[dict[str, Any]]:
    """The held-out drawings the trained model got wrong (at most core.train_worker's
    MAX_MISCLASSIFIED), as [{"id": drawing id, "label": true, "predicted": k}] — no seat, no
    student. Empty until the job has ended. Found by content: the job's held-out images
    (its dataset file's split) matched to the collection's drawings of the same label, so a
    drawing removed since training is left out."""
    store = collection_store_for(request)
    c = store.get(code)
    if c is None or not c.job_id:
        return []
    job = _job_of(request, c.job_id)
    if job is None or job.status not in FINISHED:
        return []
    wrong = job.metrics.get("misclassified") or []
    if not wrong:
        return []
    try:
        dataset = app_datasets.load_dataset(settings_for(request.app), job.spec.dataset)
    except InputError:  # its file is gone from the server (swept): nothing to match
        return []
    ids: dict[tuple[bytes, int], list[int]] = {}
    for d in _drawings(store, code):
        ids.setdefault((bytes(d.grid), d.label), []).append(d.id)
    out = []
    for m in wrong:
        i = int(m["index"])
        if not 0 <= i < len(dataset.y_test):
            continue
        grid = np.rint(np.asarray(dataset.x_test[i, 0], np.float64) * 255).astype(np.uint8).tobytes()
        same = ids.get((grid, int(m["label"])))
        if same:  # identical drawings: each one named once
            out.append({"id": same.pop(0), "label": int(m["label"]), "predicted": int(m["predicted"])})
    return out
