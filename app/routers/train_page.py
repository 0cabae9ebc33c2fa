"""Train a tiny CNN live (lesson section 9): set it up, watch it learn, compare runs, use it.

Routes (HTML; the JSON twins live in ``app/routers/train_api.py``):

- ``GET /train``: the page. The setup lives in the URL (``/train?dataset=digits&lr=0.01``,
  every field optional, defaults from ``core.train.DEFAULTS`` for the dataset), so a setup
  is a link. htmx asks for ``#train-summary`` when a field changes (parameter count and
  each layer's output shape) and for ``#train-setup`` when the dataset changes (the form
  again, with that dataset's defaults).
- ``POST /train/jobs``: start a job from the form; answers with the run panel.
- ``GET /train/jobs/{id}``: the run panel (htmx) or the page showing it.
- ``GET /train/jobs/{id}/events``: server-sent events for the run panel's live part:
  ``progress`` (at most ``MAX_UPDATES_PER_SECOND``) and, once the job has ended, one
  ``done``; each event's data is the HTML of ``#train-live``, swapped in by htmx's SSE
  extension, rendered once per update and language for all the screens watching the run
  (``app/routers/train_live.py``).
- ``DELETE /train/jobs/{id}``: stop; the model trained so far stays usable.
- ``POST /train/jobs/{id}/predict``: a drawn grid or a test image → probabilities and
  feature maps.
- ``POST /train/load``: an uploaded ``.npz`` becomes a (finished) run to use.
- ``POST /train/dataset``: an uploaded dataset ``.npz`` (app/datasets.py) is stored and
  opens ``/train?dataset=<id>``: the page names it and trains it; its label names replace
  the digits in the predictions, the confusion matrix and the misclassified list.

A job belongs to the browser session that started it; any other session gets a 404.
Pictures and curves are drawn by ``app/train_view.py``; the layer view and the "why" panel
have routers of their own (``train_inside.py``, ``train_why.py``).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response, StreamingResponse

from cnnlab.app import datasets as app_datasets
from cnnlab.app import i18n, numbers
from cnnlab.app import jobs as jobs_module
from cnnlab.app.api_schema import page_errors, redirect
from cnnlab.app.design import design as design_table
from cnnlab.app.budget import model_file_limit
from cnnlab.app.errors import InputError
from cnnlab.app.eventstream import Event, event_stream
from cnnlab.app.guards import page_status
from cnnlab.app.i18n import N_
from cnnlab.app.i18n import gettext as _
from cnnlab.app.layer_names import ACTIVATION_NAMES, LAYER_NAMES, layer_detail, layer_label
from cnnlab.app.lesson import nav_context
from cnnlab.app.ratelimit import address_key, limit
from cnnlab.app.routers.train_live import shared_render
from cnnlab.app.session import session_id
from cnnlab.app.settings import Settings, settings_for
from cnnlab.app.templating import base_context, env, render, render_text, request_locale, wants_fragment
from cnnlab.app.train_view import filter_pictures, plots, png_data_uri, run_series
from cnnlab.core import numfmt
from cnnlab.core.model import BLOCK_KEYS

router = APIRouter(tags=["train"])

# ------------------------------------------------------------------------------ limits
# The page paces its updates so a class can follow them (the job itself runs unpaced).
MAX_UPDATES_PER_SECOND = 5
# A fast run is replayed so that each epoch stays on screen at least this long.
MIN_SECONDS_PER_EPOCH = 0.6
# How many earlier runs of the same dataset share the curve plot with the current one.
COMPARE_RUNS = 2
MAX_MISCLASSIFIED = 12
# The held-out image whose feature maps the live view shows.
SAMPLE_INDEX = 0

DATASETS = {"digits": N_("8×8 digits (1,797 images)"), "mnist": N_("MNIST 28×28 (10,000-image subset)")}
OPTIMIZERS = {"sgd": N_("SGD"), "momentum": N_("SGD with momentum"), "adam": N_("Adam")}
POOLS = {"max": N_("Max"), "avg": N_("Average")}
STATUS_LABELS = {
    "queued": N_("Waiting for a free slot"),
    "running": N_("Training"),
    "done": N_("Finished"),
    "stopped": N_("Stopped"),
    "failed": N_("Failed"),
}
FINISHED = jobs_module.FINISHED
# Run colours in the curve plot (Okabe–Ito): current run first.
RUN_COLOURS = ("#0072b2", "#d55e00", "#009e73")

FIELD_LABELS = {
    "dataset": N_("Dataset"),
    "filters": N_("Filters"),
    "kernel": N_("Kernel size"),
    "padding": N_("Padding"),
    "stride": N_("Stride"),
    "pool": N_("Pooling"),
    "pool_size": N_("Pool size"),
    "blocks": N_("Conv blocks"),
    "filters2": N_("Filters (block 2)"),
    "kernel2": N_("Kernel size (block 2)"),
    "padding2": N_("Padding (block 2)"),
    "stride2": N_("Stride (block 2)"),
    "pool2": N_("Pooling (block 2)"),
    "pool_size2": N_("Pool size (block 2)"),
    "filters3": N_("Filters (block 3)"),
    "kernel3": N_("Kernel size (block 3)"),
    "padding3": N_("Padding (block 3)"),
    "stride3": N_("Stride (block 3)"),
    "pool3": N_("Pooling (block 3)"),
    "pool_size3": N_("Pool size (block 3)"),
    "hidden": N_("Hidden units"),
    "activation": N_("Activation"),
    "optimizer": N_("Optimizer"),
    "lr": N_("Learning rate"),
    "momentum": N_("Momentum"),
    "beta1": N_("β₁"),
    "beta2": N_("β₂"),
    "batch_size": N_("Batch size"),
    "epochs": N_("Epochs"),
    "seed": N_("Seed"),
    "train_size": N_("Training images"),
    "label_noise": N_("Label noise"),
    "weight_decay": N_("Weight decay (L2)"),
    "augment": N_("Augmentation"),
}
# The extra conv blocks' fields (TrainSpec's filters2 … pool_size3), block by block.
BLOCK_FIELDS = {b: tuple(f"{key}{b}" for key in BLOCK_KEYS) for b in (2, 3)}
BLOCK_CHOICES = {1: N_("1 block"), 2: N_("2 blocks"), 3: N_("3 blocks")}
# A ready design (the form's link "two conv blocks for MNIST"): conv 16@5×5 pad 2 → max 2 → conv
# 32@3×3 pad 1 → max 2 → dense 64 → 10, Adam. ≥ 98 % held-out on the MNIST subset within 60 s on
# two cores (benchmarks/bench_blocks.py; README "Speed"). With 8 and 16 filters it stays near 97.8 %.
TWO_BLOCKS_MNIST = {"dataset": "mnist", "blocks": 2, "filters": 16, "kernel": 5, "padding": 2, "pool": "max",
                    "pool_size": 2, "filters2": 32, "kernel2": 3, "padding2": 1, "pool2": "max", "pool_size2": 2,
                    "hidden": 64, "activation": "relu", "optimizer": "adam", "lr": 0.003, "batch_size": 32,
                    "epochs": 8, "lr_decay": 0.8}
# The overfitting lab's fields (TrainSpec's train_size, label_noise, weight_decay, augment).
OVERFIT_FIELDS = ("train_size", "label_noise", "weight_decay", "augment")
AUGMENT_CHOICES = {"on": N_("With augmentation"), "off": N_("Without augmentation")}
CHOICE_FIELDS = {"dataset": DATASETS, "pool": POOLS, "activation": ACTIVATION_NAMES, "optimizer": OPTIMIZERS,
                 "pool2": POOLS, "pool3": POOLS, "augment": AUGMENT_CHOICES}
FIELDS = ("dataset", "filters", "kernel", "padding", "stride", "pool", "pool_size", "blocks",
          *BLOCK_FIELDS[2], *BLOCK_FIELDS[3], "hidden", "activation",
          "optimizer", "lr", "momentum", "beta1", "beta2", "batch_size", "epochs", "seed", *OVERFIT_FIELDS)
# The form's number fields, as TrainSpec types them.
INT_FIELDS = tuple(name for name in FIELDS if jobs_module.TrainSpec.model_fields[name].annotation is int)
FLOAT_FIELDS = tuple(name for name in FIELDS if jobs_module.TrainSpec.model_fields[name].annotation is float)


# ============================================================================== setup


def defaults(dataset: str) -> dict[str, Any]:
    """The form's values for ``dataset`` from core.train.DEFAULTS, in FIELDS order."""
    # Fields without a per-dataset default (the extra blocks', stride): TrainSpec's own default.
    d = {**{name: field.default for name, field in jobs_module.TrainSpec.model_fields.items()},
         "dataset": dataset, **jobs_module.dataset_defaults(dataset)}
    d["augment"] = "on" if d["augment"] else "off"  # the form's choice (TrainSpec: a bool)
    return {name: d[name] for name in FIELDS}


class Setup:
    """The form's values, checked: ``values`` (typed, defaults filled in), ``errors``
    (field → translated message), ``changed`` (the fields that differ from the defaults:
    the canonical URL carries only those)."""

    def __init__(self, params: Mapping[str, str], settings: Settings | None = None) -> None:
        dataset = params.get("dataset", "digits")
        self.errors: dict[str, str] = {}
        self.settings = settings
        self.own: dict[str, Any] | None = None  # a dataset of one's own: its summary
        if app_datasets.is_dataset_id(dataset):
            try:
                self.own = app_datasets.dataset_summary(settings, dataset) if settings is not None else None
            except InputError as exc:
                self.errors["dataset"] = exc.message
                dataset = "digits"
            if settings is None:
                dataset = "digits"
        elif dataset not in DATASETS:
            self.errors["dataset"] = _("Unknown dataset “%(name)s”: choose 8×8 digits or MNIST.") % {"name": dataset[:40]}
            dataset = "digits"
        self.base = defaults(dataset)
        values = dict(self.base)
        self.raw: dict[str, str] = {}
        for name in FIELDS[1:]:
            text = params.get(name)
            if text is None or text.strip() == "":
                continue
            text = text.strip()
            self.raw[name] = text
            if name in CHOICE_FIELDS:
                if text not in CHOICE_FIELDS[name]:
                    self.errors[name] = _("“%(value)s” is not a choice for %(field)s.") % {
                        "value": text[:40], "field": _(FIELD_LABELS[name])}
                    continue
                values[name] = text
            else:
                try:
                    number = int(text) if name in INT_FIELDS else float(text.replace("−", "-"))
                    if isinstance(number, float) and not math.isfinite(number):
                        raise ValueError(text)
                except ValueError:
                    kind = _("a whole number") if name in INT_FIELDS else _("a number")
                    self.errors[name] = _("%(field)s must be %(kind)s.") % {"field": _(FIELD_LABELS[name]), "kind": kind}
                    continue
                values[name] = number
        self.values = values
        self.dataset = dataset
        self.spec = None
        if not self.errors:
            self.spec = spec_or_errors(values, self.errors, settings)
        self.model = jobs_module.build_model(self.spec) if self.spec is not None else None
        self.changed = {k: v for k, v in values.items() if k == "dataset" or v != self.base[k]}

    @property
    def ok(self) -> bool:
        return not self.errors and self.spec is not None

    def url(self) -> str:
        return "/train?" + urlencode({k: _fmt(v) for k, v in self.changed.items()})


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def spec_or_errors(values: Mapping[str, Any], errors: dict[str, str], settings: Settings | None = None):
    """A jobs.TrainSpec for the form's values, or None with ``errors`` filled (translated)."""
    try:
        return jobs_module.TrainSpec.model_validate(spec_fields(values), context={"settings": settings})
    except ValidationError as exc:
        for err in exc.errors():
            if err.get("loc"):
                errors[str(err["loc"][0])] = field_message(str(err["loc"][0]), err)
            else:  # the architecture as a whole: the message names the layer and the formula
                errors["architecture"] = str(err.get("ctx", {}).get("error") or err.get("msg"))
        return None


def spec_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The form's values as TrainSpec fields (only the optimizer's own hyperparameters)."""
    fields = {k: values[k] for k in FIELDS if k not in ("momentum", "beta1", "beta2")}
    if isinstance(fields.get("augment"), str):
        fields["augment"] = fields["augment"] == "on"
    if values["optimizer"] == "momentum":
        fields["momentum"] = values["momentum"]
    if values["optimizer"] == "adam":
        fields["beta1"] = values["beta1"]
        fields["beta2"] = values["beta2"]
    return fields


def bounds(name: str) -> tuple[Any, Any]:
    """(minimum, maximum) of a TrainSpec field from its constraints; None where unbounded."""
    info = jobs_module.TrainSpec.model_fields.get(name)
    low = high = None
    for item in getattr(info, "metadata", ()):
        for attr in ("ge", "gt"):
            if getattr(item, attr, None) is not None:
                low = getattr(item, attr)
        for attr in ("le", "lt"):
            if getattr(item, attr, None) is not None:
                high = getattr(item, attr)
    return low, high


def field_message(name: str, err: Mapping[str, Any]) -> str:
    label = _(FIELD_LABELS[name]) if name in FIELD_LABELS else name
    low, high = bounds(name)
    kind = err.get("type", "")
    if kind == "value_error" and (err.get("ctx") or {}).get("error"):  # our validators' own sentence
        return str(err["ctx"]["error"])
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and low is not None and high is not None:
        if kind == "greater_than" or (kind == "less_than" and isinstance(high, float)):
            return _("%(field)s must be more than %(min)s and at most %(max)s.") % {
                "field": label, "min": numbers.num(low, 6), "max": numbers.num(high, 6)}
        return _("%(field)s must be from %(min)s to %(max)s.") % {"field": label, "min": numbers.num(low, 6),
                                                                   "max": numbers.num(high, 6)}
    if kind in ("greater_than",):
        return _("%(field)s must be more than %(min)s.") % {"field": label, "min": numbers.num(low, 6)}
    return _("%(field)s: this value is not allowed.") % {"field": label}


def datasets_shape(name: str) -> tuple[int, int, int]:
    return jobs_module.input_shape(name)


def summary_rows(model) -> list[dict[str, Any]]:
    rows = []
    for layer, row in zip(model.layers, model.summary()):
        rows.append({"name": _(LAYER_NAMES.get(row["type"], row["type"])), "layer": layer_detail(layer.spec()),
                     "shape": "×".join(str(d) for d in row["output_shape"]), "n_params": row["n_params"]})
    return rows


def shown_layer_labels(model) -> list[str]:
    """The labels of the layers jobs.predict returns maps for (every layer but Flatten)."""
    return [layer_label(layer.spec()) for layer in model.layers if type(layer).__name__ != "Flatten"]


def own_dataset_label(summary: Mapping[str, Any]) -> str:
    """"Your dataset: 3 labels (circle, cross, line), 120 images"."""
    return _("Your dataset: %(n)s labels (%(names)s), %(images)s images") % {
        "n": len(summary["labels"]), "names": ", ".join(summary["labels"]), "images": numbers.count(summary["images"])}


def dataset_label(dataset: str, summary: Mapping[str, Any] | None = None) -> str:
    if summary is not None:
        return own_dataset_label(summary)
    if dataset in DATASETS:
        return _(DATASETS[dataset])
    return _("Your dataset")


def setup_context(setup: Setup) -> dict[str, Any]:
    v = setup.values
    field_bounds = {name: bounds(name) for name in INT_FIELDS + FLOAT_FIELDS}
    choices = {name: [(value, _(label)) for value, label in options.items()]
               for name, options in CHOICE_FIELDS.items()}
    if setup.own is not None:
        choices["dataset"].append((setup.dataset, own_dataset_label(setup.own)))
    return {
        "setup": setup,
        "v": v,
        "errors": setup.errors,
        "bounds": field_bounds,
        "labels": {k: _(label) for k, label in FIELD_LABELS.items()},
        "choices": choices,
        "summary": summary_rows(setup.model) if setup.model is not None else [],
        "setup_dataset": dataset_label(setup.dataset, setup.own),
        "own_dataset": setup.own,
        "dataset_problem": None,
        "setup_layers": [layer_label(layer.spec()) for layer in setup.model.layers] if setup.model is not None else [],
        "setup_label": run_label(v),
        "input_shape": "×".join(str(d) for d in datasets_shape(setup.dataset)),
        "n_params": setup.model.n_params if setup.model is not None else None,
        "design": design_table(setup.model) if setup.model is not None else None,
        "block_choices": [(b, _(label)) for b, label in BLOCK_CHOICES.items()],
        "block_fields": BLOCK_FIELDS,
        "two_blocks_url": "/train?" + urlencode({k: _fmt(v) for k, v in TWO_BLOCKS_MNIST.items()}),
        "train_count": jobs_module.spec.train_count(setup.dataset, setup.settings),
    }


# ============================================================================== runs


def runner(request: Request):
    return request.app.state.jobs


def find_job(request: Request, job_id: str):
    """The session's job ``job_id``; any other session (or an unknown id) gets a 404
    (``JobNotFound`` is an ``InputError``)."""
    return runner(request).get(session_id(request), job_id)


def spec_value(spec: Any, name: str, default: Any = None) -> Any:
    return getattr(spec, name, default) if not isinstance(spec, Mapping) else spec.get(name, default)


def run_label(spec: Any) -> str:
    optimizer = spec_value(spec, "optimizer", "adam")
    label = _("%(optimizer)s, learning rate %(lr)s, seed %(seed)s") % {
        "optimizer": _(OPTIMIZERS.get(optimizer, optimizer)), "lr": numbers.num(float(spec_value(spec, "lr", 0.0)), 6),
        "seed": spec_value(spec, "seed", 0)}
    return " · ".join([label, *overfit_label_parts(spec)])


def overfit_label_parts(spec: Any) -> list[str]:
    """The overfitting lab's settings that differ from the defaults, for telling runs apart:
    "100 images", "30 % noise", "L2 0.001", "no augmentation" (or "with augmentation")."""
    parts = []
    size = spec_value(spec, "train_size", 0) or 0
    if size:
        parts.append(_("%(n)s images") % {"n": numbers.count(size)})
    noise = spec_value(spec, "label_noise", 0.0) or 0.0
    if noise:
        parts.append(_("%(share)s noise") % {"share": numbers.pct(noise, 0 if round(noise * 100, 6).is_integer() else 1)})
    decay = spec_value(spec, "weight_decay", 0.0) or 0.0
    if decay:
        parts.append(_("L2 %(wd)s") % {"wd": numbers.num(decay, 6)})
    augment = spec_value(spec, "augment")
    if isinstance(augment, str):
        augment = augment == "on"
    dataset = spec_value(spec, "dataset", "digits")
    try:
        default = bool(jobs_module.dataset_defaults(dataset)["augment"])
    except (KeyError, TypeError):
        default = augment
    if augment is not None and augment != default:
        parts.append(_("with augmentation") if augment else _("no augmentation"))
    return parts


def run_gap(records: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The generalisation gap at the last epoch of ``records`` measured on the training
    images as trained: {"epoch", "train", "test", "points"} (accuracies and train − held-out
    in percentage points, as text), or None before the first epoch's end."""
    for r in reversed(records):
        if r.get("kind") == "epoch" and r.get("train_eval_accuracy") is not None and r.get("test_accuracy") is not None:
            points = 100 * (r["train_eval_accuracy"] - r["test_accuracy"])
            return {"epoch": r["epoch"], "train": numbers.pct(r["train_eval_accuracy"]),
                    "test": numbers.pct(r["test_accuracy"]), "value": points,
                    "points": _("%(points)s points") % {"points": numbers.num(points, 1, trim=False)}}
    return None


def _percent(value: float | None) -> str | None:
    return None if value is None or not math.isfinite(value) else numbers.pct(value)


def _clock(seconds: float | None) -> str | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class View:
    """What the page shows of a job: its records up to sequence number ``upto`` (None: all).

    The page replays a fast job at a pace a class can follow (see ``train_events``): until
    the replay has caught up, the run shows as running, with the metrics of the last record
    shown; once it has, the job's own status and final metrics.
    """

    def __init__(self, job, upto: int | None = None) -> None:
        records = job.records
        self.status = job.status
        self.metrics = dict(job.metrics or {})
        if upto is not None:
            shown = [r for r in records if r["seq"] <= upto]
            if len(shown) < len(records):
                self.status = "queued" if job.status == "queued" else "running"
                self.metrics = metrics_of(shown)
            records = shown
        self.records = records
        self.finished = self.status in FINISHED


def metrics_of(records: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The metrics as of the last of ``records`` (during a replay)."""
    out: dict[str, Any] = {}
    for r in records:
        out["train_accuracy"] = r.get("train_accuracy")
        if r.get("test_accuracy") is not None:
            out["test_accuracy"] = r["test_accuracy"]
    return out


def progress_context(job, view: View) -> dict[str, Any]:
    spec = job.spec
    records = view.records
    last = records[-1] if records else None
    epochs = int(spec_value(spec, "epochs", 1))
    if last is not None:
        per = last.get("batches_per_epoch") or 1
        total = epochs * per
        done = last.get("step", 0)
        fraction = 1.0 if view.status == "done" else min(done / total, 1.0)
        elapsed = last.get("elapsed") or 0.0
        left = elapsed / fraction * (1 - fraction) if 0 < fraction < 1 else (0.0 if fraction >= 1 else None)
        loss = last.get("loss")
        return {"fraction": fraction, "percent": round(100 * fraction), "epoch": last.get("epoch", 0), "epochs": epochs,
                "batch": last.get("batch", 0), "batches": per, "left": _clock(left) if view.status == "running" else None,
                "elapsed": f"{numbers.num(elapsed, 1, trim=False)} s" if elapsed < 60 else _clock(elapsed),
                "loss": numbers.num(loss, 3, trim=False) if loss is not None and math.isfinite(loss) else None}
    return {"fraction": 0.0, "percent": 0, "epoch": 0, "epochs": epochs, "batch": 0, "batches": None,
            "left": None, "elapsed": None, "loss": None}


def label_names(request: Request | None, dataset: str) -> list[str]:
    """What each class of ``dataset`` is called: the digits, or a dataset's own label names."""
    if not app_datasets.is_dataset_id(dataset):
        return [str(d) for d in range(10)]
    found = dataset_of(request, dataset)
    return list(found.label_names) if found is not None else []


def dataset_of(request: Request | None, dataset: str):
    """The core Dataset ``dataset``, or None when a dataset of one's own is gone."""
    try:
        return app_datasets.known_dataset(dataset, settings_for(request.app) if request is not None else None)
    except InputError:
        return None


def _name(names: list[str], k: int) -> str:
    return names[k] if 0 <= k < len(names) else str(k)


def confusion_context(confusion: Any, names: list[str] | None = None) -> dict[str, Any] | None:
    if confusion is None:
        return None
    m = np.asarray(confusion, dtype=np.int64)
    names = names or [str(k) for k in range(m.shape[0])]
    rows = []
    for t in range(m.shape[0]):
        row_total = int(m[t].sum()) or 1
        cells = []
        for p in range(m.shape[1]):
            n = int(m[t, p])
            level = 0 if n == 0 else min(5, 1 + int(5 * n / row_total))
            cells.append({"n": n, "cls": ("cm-hit" if t == p else "cm-miss") + f" cm{level}", "diag": t == p})
        rows.append({"label": _name(names, t), "cells": cells, "total": int(m[t].sum())})
    return {"rows": rows, "total": int(m.sum()), "right": int(np.trace(m)),
            "classes": [_name(names, c) for c in range(m.shape[1])]}


def misclassified_context(request: Request | None, dataset_name: str, items: Any) -> list[dict[str, Any]]:
    if not items:
        return []
    data = dataset_of(request, dataset_name)
    if data is None:
        return []
    names = list(data.label_names)
    out = []
    for item in list(items)[:MAX_MISCLASSIFIED]:
        index = int(item["index"])
        if not 0 <= index < len(data.y_test):
            continue
        out.append({"index": index, "true": _name(names, int(item["label"])),
                    "predicted": _name(names, int(item["predicted"])),
                    "src": png_data_uri(data.x_test[index, 0], False)})
    return out


def compare_runs(request: Request, job, view: View) -> list[dict[str, Any]]:
    """This run first, then the session's latest earlier runs on the same dataset."""
    dataset = spec_value(job.spec, "dataset")
    others = [j for j in runner(request).list(session_id(request))
              if j.id != job.id and spec_value(j.spec, "dataset") == dataset and j.records]
    others = others[-COMPARE_RUNS:][::-1]
    runs = []
    for i, j in enumerate([job] + others):
        records = view.records if j is job else j.records
        runs.append({"id": j.id, "label": run_label(j.spec), "colour": RUN_COLOURS[i % len(RUN_COLOURS)],
                     "series": run_series(records), "gap": run_gap(records),
                     "epochs": int(spec_value(j.spec, "epochs", 1)), "current": j is job})
    return runs


def sample_maps(job) -> dict[str, Any] | None:
    """Test image SAMPLE_INDEX and its first-layer feature maps (after the activation),
    through the model as it is now: they sharpen as the filters learn."""
    if job.model is None:
        return None
    try:
        result = jobs_module.predict(job, test_index=SAMPLE_INDEX)
    except (jobs_module.JobError, ValueError):
        return None
    layer = result["layers"][1]
    return {"input": png_data_uri(np.asarray(result["input"]), False), "label": result.get("true_label"),
            "layer": shown_layer_labels(job.model)[1], "pictures": map_pictures(layer), "ranges": map_ranges(layer)}


def live_context(request: Request, job, upto: int | None = None) -> dict[str, Any]:
    view = View(job, upto)
    metrics = view.metrics
    finished = view.finished
    runs = compare_runs(request, job, view)
    ctx = {
        "job": job,
        "status": view.status,
        "status_label": _(STATUS_LABELS.get(view.status, view.status)),
        "message": job.message if finished else None,
        "finished": finished,
        "progress": progress_context(job, view),
        "runs": runs,
        "gap": runs[0]["gap"] if runs else None,
        "plots": plots(runs),
        "filters": filter_pictures(job.filters),
        "sample": sample_maps(job),
        "test_accuracy": _percent(metrics.get("test_accuracy")),
        # Once an epoch has ended: measured on the training images as trained, like the held-out one
        # (the gap's numbers); before, the running share of the first epoch's batches.
        "train_accuracy": _percent(next((r["train_eval_accuracy"] for r in reversed(view.records)
                                         if r.get("kind") == "epoch" and r.get("train_eval_accuracy") is not None),
                                        metrics.get("train_accuracy"))),
        "images_per_second": metrics.get("images_per_second"),
        "confusion": (confusion_context(metrics.get("confusion"), label_names(request, spec_value(job.spec, "dataset")))
                      if finished else None),
        "misclassified": (misclassified_context(request, spec_value(job.spec, "dataset"), metrics.get("misclassified"))
                          if finished else []),
        "own": app_datasets.is_dataset_id(spec_value(job.spec, "dataset")),
        "queue_position": getattr(job, "queue_position", None),
        "error": job.error if finished else None,
    }
    return ctx


def run_context(request: Request, job, upto: int | None = None) -> dict[str, Any]:
    dataset = spec_value(job.spec, "dataset")
    data = dataset_of(request, dataset)
    test_size = data.x_test.shape[0] if data is not None else 0
    summary = None
    if app_datasets.is_dataset_id(dataset):
        try:
            summary = app_datasets.dataset_summary(settings_for(request.app), dataset)
        except InputError:
            summary = None
    ctx = live_context(request, job, upto)
    ctx.update({"run_label": run_label(job.spec), "grid": datasets_shape(dataset)[1], "test_size": test_size,
                "dataset_label": dataset_label(dataset, summary)})
    return ctx


# ============================================================================== routes

# Without htmx a form that started or loaded a run is redirected to the run's page.
_REDIRECT = redirect("Started or loaded: see the run's page (`Location`).")


def lesson_links(request: Request) -> dict[str, Any]:
    return {"lesson": nav_context(request.app, 9)}


def page_context(request: Request, setup: Setup, job=None, upto: int | None = None) -> dict[str, Any]:
    ctx = setup_context(setup)
    ctx.update(lesson_links(request))
    ctx.update({"run": job is not None, "oob": False, "settings_open": False})
    if job is not None:
        ctx.update(run_context(request, job, upto))
    return ctx


@router.get("/train", name="train", response_class=HTMLResponse, responses=page_errors(422))
def train_page(request: Request) -> Response:
    """The training page. Query parameters (all optional; defaults per dataset from
    core.train.DEFAULTS): ``dataset`` = ``digits`` | ``mnist``, ``filters``, ``kernel``,
    ``padding``, ``pool`` = ``max`` | ``avg``, ``pool_size``, ``hidden`` (0: none),
    ``activation`` = ``relu`` | ``sigmoid`` | ``tanh`` | ``leaky_relu``, ``optimizer`` =
    ``sgd`` | ``momentum`` | ``adam``, ``lr``, ``momentum``, ``beta1``, ``beta2``,
    ``batch_size``, ``epochs``, ``seed``. Bad values are shown next to their field."""
    setup = Setup(request.query_params, settings_for(request.app))
    target = request.headers.get("hx-target")
    headers = {}
    if wants_fragment(request):
        headers["HX-Push-Url"] = setup.url() if not setup.errors else str(request.url.path) + "?" + request.url.query
    block = {"train-summary": "summary", "train-setup": "setup"}.get(target or "", "content")
    ctx = page_context(request, setup)
    # The summary's swap carries the one-line setup too; a new dataset keeps the settings open.
    if wants_fragment(request):
        ctx.update({"oob": block == "summary", "settings_open": block == "setup"})
    return render(request, "train.html", ctx, fragment=block, headers=headers,
                  status_code=page_status(request, setup.errors))


@router.post("/train/jobs", name="train_start", response_class=HTMLResponse,
             responses={**_REDIRECT, **page_errors(400, 422, 429)})
async def train_start(request: Request) -> Response:
    """Start a run from the setup form (same fields as ``GET /train``); answers with the run panel."""
    form = await request.form()
    setup = Setup({k: v for k, v in form.items() if isinstance(v, str)}, settings_for(request.app))
    title = _("The training did not start")
    if not setup.ok or setup.spec is None:
        return _problem(request, title, list(setup.errors.values()), page_status(request, True))
    try:
        limit(request, "trainings")  # too many starts in a short time: 429, said in the run panel
        job = runner(request).submit(session_id(request), setup.spec, address_key(request))  # a JobError is an InputError
    except InputError as exc:
        return _problem(request, title, [exc.message], page_status(request, True, exc.status_code))
    if not wants_fragment(request):
        return Response(status_code=303, headers={"location": f"/train/jobs/{job.id}"})
    return await run_in_threadpool(_render_run, request, job, 0)


def _problem(request: Request, title: str, problems: list[str], status_code: int = 200) -> Response:
    """The run panel saying why no run started or loaded."""
    return render(request, "_train_problem.html", {"problems": problems, "title": title}, fragment=None,
                  status_code=status_code)


def _render_run(request: Request, job, upto: int | None = None) -> Response:
    setup = Setup(setup_params(job.spec), settings_for(request.app))
    return render(request, "train.html", page_context(request, setup, job, upto), fragment="run",
                  headers={"HX-Push-Url": f"/train/jobs/{job.id}"})


def setup_params(spec: Any) -> dict[str, str]:
    return {name: _fmt(spec_value(spec, name)) for name in FIELDS if spec_value(spec, name) is not None}


@router.get("/train/jobs/{job_id}", name="train_run", response_class=HTMLResponse, responses=page_errors(404))
async def train_run(request: Request, job_id: str) -> Response:
    """One run of this browser: its progress, curves, filters and, once finished, the
    confusion matrix and misclassified examples; the page with its setup filled in."""
    job = find_job(request, job_id)
    # A run still going is replayed from its start by the event stream.
    return await run_in_threadpool(_render_run, request, job, None if job.status in FINISHED else 0)


@router.delete("/train/jobs/{job_id}", name="train_stop", response_class=HTMLResponse,
               responses=page_errors(404))
async def train_stop(request: Request, job_id: str) -> Response:
    """Stop a run; the weights trained so far stay usable."""
    job = find_job(request, job_id)
    runner(request).cancel(session_id(request), job.id)
    return await run_in_threadpool(_render_live, request, job)


def _render_live(request: Request, job) -> Response:
    return render(request, "_train_live.html", {**live_context(request, job)}, fragment=None)


def live_html(request: Request, job, upto: int | None) -> str:
    ctx = base_context(request)
    with i18n.use_locale(ctx["locale"]):
        ctx.update(live_context(request, job, upto))
        return env.get_template("_train_live.html").render(ctx)


def next_shown(records: list[Mapping[str, Any]], shown: int) -> int:
    """The seq of the last record to show at the next update of a paced replay.

    A fast job (digits train at hundreds of batches per second) would be over before a
    class saw anything: the page shows at most 1/(MIN_SECONDS_PER_EPOCH · rate) of an
    epoch's records per update, so each epoch stays on screen at least MIN_SECONDS_PER_EPOCH.
    A slower job is shown as it goes.
    """
    ahead = [r for r in records if r["seq"] > shown]
    if not ahead:
        return shown
    last = records[-1]
    epochs_so_far = max((last["epoch"] - 1) + last["batch"] / (last.get("batches_per_epoch") or 1), 1e-9)
    per_epoch = len(records) / epochs_so_far
    step = max(1, math.ceil(per_epoch / (MIN_SECONDS_PER_EPOCH * MAX_UPDATES_PER_SECOND)))
    return ahead[min(step, len(ahead)) - 1]["seq"]


def _resume_from(last_id: str | None) -> int:
    """The record shown last before a reconnect (the events' ``id``), or 0: from the start."""
    return int(last_id) if last_id and last_id.isdigit() and len(last_id) < 12 else 0


@router.get("/train/jobs/{job_id}/events", name="train_events", responses={
    200: {"content": {"text/event-stream": {}}, "description": "`progress` events with the run's HTML, then `done`"},
    429: {"description": "too many event streams open"}})
async def train_events(request: Request, job_id: str) -> StreamingResponse:
    """Server-sent events: ``progress`` with the HTML of ``#train-live`` whenever the run
    changed (at most MAX_UPDATES_PER_SECOND), then one ``done`` when it has ended. Each
    event's ``id`` is the last record it shows: a reconnecting browser resumes there.

    A run this browser does not have (any more: the server was restarted, or it expired)
    gets one ``done`` saying so, and so does every run when the server stops."""
    sid = session_id(request)
    try:
        job = find_job(request, job_id)
    except jobs_module.JobNotFound:
        job = None
    jobs = runner(request)
    locale = request_locale(request)
    shown = 0  # the records shown so far: those with seq <= shown

    def ended(reason: str) -> Event:
        notice = render_text(request, "_train_ended.html", {"reason": reason})
        return Event("done", notice if job is None else notice + live_html(request, job, shown))

    async def produce(last_id: str | None) -> AsyncIterator[Event]:
        # Polling costs nothing and holds no worker thread per watching student
        # (Job.wait_for_change would block one).
        nonlocal shown
        if job is None:
            yield ended("gone")
            return
        shown = _resume_from(last_id)
        sent = None
        while True:
            jobs.touch(job.session)  # someone watches: the job is not abandoned
            # The version before the status: a job ending in between changes the version
            # again, so its ``done`` comes at the next poll instead of never.
            version = job.version
            records = job.records
            finished = job.status in FINISHED
            shown = next_shown(records, shown)
            caught_up = not records or shown >= records[-1]["seq"]
            state = (shown, version if caught_up else None)
            if state != sent:
                sent = state
                # Every stream of this job that reaches the same update shares one render.
                html = await shared_render(job, state, locale, functools.partial(live_html, request, job, shown))
                done = finished and caught_up
                yield Event("done" if done else "progress", html, id=str(shown))
                if done:
                    return
            await asyncio.sleep(1 / MAX_UPDATES_PER_SECOND)

    return event_stream(request, produce, lambda: ended("stopping"), session=sid)


def parse_grid(text: str, side: int) -> list[list[float]]:
    """``side``×``side`` comma-separated numbers in [0, 1], row by row → nested lists."""
    parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    if len(parts) != side * side:
        raise InputError(_("Draw a digit first: the drawing must be %(n)s×%(n)s values.") % {"n": side})
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(_("The drawing must be numbers from 0 to 1.")) from None
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in values):
        raise InputError(_("The drawing must be numbers from 0 to 1."))
    return [values[r * side:(r + 1) * side] for r in range(side)]


def map_ranges(layer: Mapping[str, Any]) -> list[dict[str, str]]:
    """Each channel's smallest and largest value, for its picture's text alternative."""
    values = np.asarray(layer["values"], dtype=np.float64)
    return [{"min": numfmt.significant(float(channel.min()), 3), "max": numfmt.significant(float(channel.max()), 3)}
            for channel in values]


def map_pictures(layer: Mapping[str, Any]) -> list[str]:
    """One picture per channel of a layer's output (C, H, W), one colour scale for all."""
    values = np.asarray(layer["values"], dtype=np.float64)
    scale = float(np.abs(values).max()) or 1.0
    diverging = bool(values.min() < 0)
    return [png_data_uri(channel, diverging, scale) for channel in values]


def prediction_context(result: Mapping[str, Any], dataset: str, labels: list[str],
                       names: list[str] | None = None, *, job_id: str | None = None,
                       hidden: Mapping[str, str] | None = None, filters: Any = None) -> dict[str, Any]:
    """``labels``: the shown layers' names (shown_layer_labels), in the order of result["layers"];
    ``names``: what each class is called (the digits when None). With ``job_id``, the maps and the
    first layer's ``filters`` (F, C, k, k) are buttons that open one enlarged (app/routers/train_inside.py),
    for the image in ``hidden`` ({"grid": …} or {"test_index": …})."""
    probabilities = [float(p) for p in result["probabilities"]]
    label = int(result["label"])
    names = names or [str(d) for d in range(len(probabilities))]
    bars = [{"digit": d, "name": _name(names, d), "p": p, "percent": numbers.pct(p),
             "width": max(0.0, min(100.0, 100 * p)), "top": d == label} for d, p in enumerate(probabilities)]
    maps = []
    # the last layer's output is the scores: the bars show them
    for layer, name in zip(result.get("layers", [])[:-1], labels):
        values = np.asarray(layer["values"])
        if values.ndim != 3:
            continue
        maps.append({"layer": name, "shape": "×".join(str(d) for d in layer["shape"]), "index": layer.get("index"),
                     "pictures": map_pictures(layer), "ranges": map_ranges(layer)})
    true_label = result.get("true_label")
    return {"bars": bars, "label": label, "label_name": _name(names, label), "true_label": true_label,
            "true_name": _name(names, int(true_label)) if true_label is not None else None,
            "input": png_data_uri(np.asarray(result["input"]), False), "maps": maps,
            "test_index": result.get("test_index"), "own": app_datasets.is_dataset_id(dataset),
            "job_id": job_id, "hidden": dict(hidden or {}),
            "filters": filter_pictures(filters) if job_id and filters is not None else []}


@router.post("/train/jobs/{job_id}/predict", name="train_predict", response_class=HTMLResponse,
             responses=page_errors(400, 404, 409, 422))
async def train_predict(request: Request, job_id: str) -> Response:
    """Classify a drawing (``grid``: side×side comma-separated values in [0, 1], row by row,
    ink = 1) or a held-out image (``test_index``) with the run's model as it is now."""
    job = find_job(request, job_id)
    form = await request.form()
    dataset = spec_value(job.spec, "dataset")
    side = datasets_shape(dataset)[1]
    test_index = None
    grid = None
    if str(form.get("test_index") or "").strip():
        try:
            test_index = int(str(form.get("test_index")).strip())
        except ValueError:
            raise InputError(_("The test image number must be a whole number.")) from None
    else:
        grid = parse_grid(str(form.get("grid") or ""), side)

    def make() -> Response:
        try:
            result = jobs_module.predict(job, grid, test_index=test_index)  # a JobError answers itself
        except ValueError as exc:
            raise InputError(str(exc)) from None
        hidden = {"test_index": str(test_index)} if test_index is not None else {"grid": str(form.get("grid") or "")}
        first = next((layer for layer in job.model.layers if type(layer).__name__ == "Conv2D"), None)
        ctx = prediction_context({**result, "test_index": test_index}, dataset, shown_layer_labels(job.model),
                                 label_names(request, dataset), job_id=job.id, hidden=hidden,
                                 filters=None if first is None else first.params["w"].tolist())
        return render(request, "_train_prediction.html", ctx, fragment=None)

    return await run_in_threadpool(make)


@router.post("/train/load", name="train_load", response_class=HTMLResponse,
             responses={**_REDIRECT, **page_errors(400, 422, 429)})
async def train_load(request: Request) -> Response:
    """A ``.npz`` saved from this page (``file``) becomes a finished run of this browser."""
    title = _("The file could not be loaded")
    try:
        limit(request, "uploads")  # before the body is read; 429 is said in the run panel
    except InputError as exc:
        return _problem(request, title, [exc.message], page_status(request, True, exc.status_code))
    form = await request.form(max_files=1, max_fields=8)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InputError(_("Choose a .npz file saved from this page."))
    cap = model_file_limit()  # the same cap as /api/train/load
    data = await upload.read(cap + 1)
    try:
        job = await run_in_threadpool(jobs_module.load_npz, session_id(request), data, max_bytes=cap,
                                      settings=settings_for(request.app))
    except jobs_module.JobError as exc:
        return _problem(request, title, [exc.message])
    runner(request).add_finished(job)
    if not wants_fragment(request):
        return Response(status_code=303, headers={"location": f"/train/jobs/{job.id}"})
    return await run_in_threadpool(_render_run, request, job)


@router.post("/train/dataset", name="train_dataset", response_class=HTMLResponse,
             responses={303: {"description": "stored: `/train?dataset=<id>` (`Location`)"}, **page_errors(400, 413, 422, 429)})
async def train_dataset(request: Request) -> Response:
    """A dataset ``.npz`` (``file``: images, labels, label_names; see app/datasets.py) is
    checked and stored, then ``/train?dataset=<id>`` trains it. A refused file: the page
    again, saying why next to the form."""
    settings = settings_for(request.app)
    try:
        limit(request, "uploads")  # before the body is read
        form = await request.form(max_files=1, max_fields=8)
        upload = form.get("file")
        if upload is None or isinstance(upload, str) or not (upload.filename or upload.size):
            raise InputError(_("Choose a dataset file (.npz) first."), field="file")
        data = await upload.read(app_datasets.MAX_DATASET_BYTES + 1)
        dataset_id = await run_in_threadpool(app_datasets.store_dataset, settings, data)
    except InputError as exc:
        setup = Setup({}, settings)
        ctx = page_context(request, setup)
        ctx.update({"dataset_problem": exc.message, "settings_open": True})
        return render(request, "train.html", ctx, status_code=page_status(request, True, exc.status_code))
    return Response(status_code=303, headers={"location": "/train?" + urlencode({"dataset": dataset_id})})
