"""Train one tiny CNN in a process of its own, reporting on a pipe:

    python -m core.train_worker MSG_FD STOP_FD JOB_JSON

JOB_JSON: {"dataset": "digits"|"mnist", "model": tiny_cnn's keyword arguments (without
input_shape and classes), "optimizer": {"name": ..., hyperparameters}, "epochs",
"batch_size", "seed", "lr_decay"}. The dataset's augmentation (core.train.DEFAULTS) applies to
every run on it, default or not: it is part of how that dataset is shown to a network.
A dataset of one's own comes as {"dataset": its id, "dataset_file": the path of its .npz
(core.datasets.load_file), "augment": random_affine's keyword arguments or null}.
The overfitting lab's keys (app/jobs/spec.py worker_job; each optional): "augment" (the
kwargs or null: overrides the dataset's default), "train_size" (0: every training image,
else a stratified subset of that many, from the seed), "label_noise" (that share of the
training labels made wrong, from the seed) and "weight_decay" (L2, core.optim).

MSG_FD is the write end of a pipe, used as a multiprocessing Connection (pickled tuples):
    ("start", {"n_train", "n_params"})
    ("records", [Progress.to_dict(), ...])            bundled, at most RECORDS_EVERY_SECONDS apart
    ("weights", flat_params (P,), filters (F,C,k,k))  every WEIGHTS_EVERY_SECONDS and every epoch
    ("end", status "done"|"stopped", final metrics, flat_params, filters)
    ("error", message)
STOP_FD is the read end of another pipe: anything written to it, or its closing (the
server went away), stops the training before its next batch; the model trained so far is
still evaluated and sent.

Why a process: a web server's training thread would hold the GIL most of the time and
make every page wait for it. This process runs with the idle scheduling policy where the
system has one (Linux), else at the lowest nice level, so a page never waits for training:
with nice 10, four trainings on two cores still put 440 ms on the p95 of a /conv step. Only numpy and the standard library are imported: it starts quickly.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from multiprocessing.connection import Connection

import numpy as np

from . import datasets
from . import train as core_train
from .model import tiny_cnn
from .optim import make_optimizer

NICE = 19
WEIGHTS_EVERY_SECONDS = 0.5
RECORDS_EVERY_SECONDS = 0.05
MAX_MISCLASSIFIED = 12


def filters_of(model) -> list:
    """The first layer's filters (F, C, k, k) as rounded nested lists, for display."""
    return np.round(model.layers[0].params["w"].astype(np.float64), 4).tolist()


def final_metrics(model, dataset, batch_size=1000) -> dict:
    """Held-out accuracy and loss, the confusion matrix and a few misclassified test images,
    evaluated ``batch_size`` images at a time."""
    result = core_train.evaluate(model, dataset.x_test, dataset.y_test, batch_size=batch_size, classes=dataset.classes)
    predicted = result.predicted
    wrong = np.flatnonzero(predicted != dataset.y_test)[:MAX_MISCLASSIFIED]
    return {
        "test_accuracy": result.accuracy, "test_loss": result.loss, "confusion": result.confusion.tolist(),
        "misclassified": [{"index": int(i), "label": int(dataset.y_test[i]), "predicted": int(predicted[i])}
                          for i in wrong],
        "n_test": result.n,
    }


def job_dataset(job: dict):
    """The job's Dataset (its training set cut to "train_size" and "label_noise" of its
    labels made wrong, from the job's seed) and its augmentation (train's ``augment``)."""
    if job.get("dataset_file"):
        dataset = datasets.load_file(job["dataset_file"], name=job["dataset"])
        augment = job.get("augment")
    else:
        dataset = datasets.load(job["dataset"])
        augment = job["augment"] if "augment" in job else core_train.DEFAULTS[job["dataset"]]["augment"]
    if augment and "scale" in augment:
        augment = {**augment, "scale": tuple(augment["scale"])}
    dataset = datasets.overfit_variant(dataset, train_size=int(job.get("train_size") or 0),
                                       label_noise=float(job.get("label_noise") or 0.0), seed=int(job["seed"]))
    return dataset, augment


def job_optimizer(job: dict):
    """The job's optimizer, with its L2 weight decay ("weight_decay", default 0)."""
    return make_optimizer(**job["optimizer"], weight_decay=float(job.get("weight_decay") or 0.0))


def run(job: dict, conn: Connection, stop_fd: int) -> None:
    def should_stop() -> bool:
        return bool(select.select([stop_fd], [], [], 0)[0])

    dataset, augment = job_dataset(job)
    model = tiny_cnn(input_shape=dataset.image_shape, classes=dataset.classes, **job["model"])
    optimizer = job_optimizer(job)
    conn.send(("start", {"n_train": len(dataset.y_train), "n_params": model.n_params}))
    conn.send(("weights", model.flat_params, filters_of(model)))
    status, pending = "done", []
    sent_records = sent_weights = time.monotonic()
    for progress in core_train.train(model, dataset, optimizer, epochs=job["epochs"], batch_size=job["batch_size"],
                                     seed=job["seed"], should_stop=should_stop, lr_decay=job["lr_decay"],
                                     augment=augment):
        if progress.kind == "stopped":
            status = "stopped"
        pending.append(progress.to_dict())
        now = time.monotonic()
        if progress.kind != "batch" or now - sent_records >= RECORDS_EVERY_SECONDS:
            conn.send(("records", pending))
            pending, sent_records = [], now
        if progress.kind == "epoch" or now - sent_weights >= WEIGHTS_EVERY_SECONDS:
            conn.send(("weights", model.flat_params, filters_of(model)))
            sent_weights = now
    if pending:
        conn.send(("records", pending))
    conn.send(("end", status, final_metrics(model, dataset), model.flat_params, filters_of(model)))


def lower_priority() -> None:
    """This process trains after everything else: the idle scheduling policy, else the
    lowest nice level (see the module docstring)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed
        try:
            os.nice(NICE)
        except OSError:
            pass


def main(argv: list[str]) -> int:
    msg_fd, stop_fd, job = int(argv[0]), int(argv[1]), json.loads(argv[2])
    lower_priority()
    conn = Connection(msg_fd, readable=False)
    try:
        run(job, conn, stop_fd)
    except Exception as e:  # reported to the server, which marks the job failed
        try:
            conn.send(("error", str(e) or type(e).__name__))
        except OSError:  # the server is gone: nobody to tell
            pass
        return 1
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
