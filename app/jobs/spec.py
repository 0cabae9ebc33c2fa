"""What to train: TrainSpec (dataset, architecture, optimizer, schedule) and the model it builds.

``dataset`` is "digits", "mnist" or the id of a dataset of one's own (app/datasets.py:
28×28 drawings of K labels): trained with OWN_DEFAULTS (the MNIST architecture, a schedule
for a few hundred drawings) and ``classes`` = K, read from its file. Validate a spec with
``context={"settings": settings}`` to look the dataset up in those settings' upload folder
(without it: where this process last found it, else the environment's settings).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cnnlab.app import datasets as app_datasets
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext
from cnnlab.core import train as core_train
from cnnlab.core.conv import OutputSizeError, output_size
from cnnlab.core.model import Sequential, tiny_cnn

__all__ = ["INPUT_SHAPES", "OWN_DEFAULTS", "TrainSpec", "build_model", "dataset_defaults", "input_shape",
           "train_defaults", "worker_job"]

# Image shape (C, H, W) of each dataset; the model's input. A dataset of one's own: 28×28.
INPUT_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28)}
OWN_SHAPE = (1, 28, 28)
DATASET_PATTERN = r"^(digits|mnist|set-[0-9a-f]{16})$"

# A dataset of one's own (core.train.DEFAULTS' shape): the MNIST network, and a schedule for
# a class's few hundred drawings: 120 shapes reach ~95 % held-out in under a second, 5,000
# drawings train in ~10 s. Drawings are few and made by few hands: half of each batch is
# moved, turned, resized and slanted a little, so a new drawing is read right wherever and
# however it was drawn (tests/test_datasets_own.py).
OWN_DEFAULTS = {
    "model": dict(core_train.DEFAULTS["mnist"]["model"]),
    "optimizer": {"name": "adam", "lr": 0.005},
    "epochs": 15,
    "batch_size": 16,
    "lr_decay": 0.85,
    "seed": 0,
    "augment": {"shift": 2.0, "rotate": 12, "scale": (0.85, 1.15), "shear": 0.25, "share": 0.5},
}


def input_shape(dataset: str) -> tuple[int, int, int]:
    if app_datasets.is_dataset_id(dataset):
        return OWN_SHAPE
    return INPUT_SHAPES[dataset]


def train_defaults(dataset: str) -> dict[str, Any]:
    """core.train.DEFAULTS[dataset], or OWN_DEFAULTS for a dataset of one's own."""
    return OWN_DEFAULTS if app_datasets.is_dataset_id(dataset) else core_train.DEFAULTS[dataset]


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """core.train.DEFAULTS for ``dataset`` (OWN_DEFAULTS for an id), flattened into TrainSpec's fields."""
    d = train_defaults(dataset)
    m, opt = d["model"], d["optimizer"]
    return {
        "filters": m["filters"], "kernel": m["kernel"], "padding": m["padding"], "pool": m["pool"],
        "pool_size": m["pool_size"], "hidden": m["hidden"], "activation": m["activation"],
        "optimizer": opt["name"], "lr": opt["lr"], "beta1": opt.get("beta1", 0.9),
        "beta2": opt.get("beta2", 0.999), "momentum": opt.get("momentum", 0.9),
        "batch_size": d["batch_size"], "epochs": d["epochs"], "seed": d["seed"], "lr_decay": d["lr_decay"],
    }


_DIGITS = dataset_defaults("digits")
_Float = dict(strict=True, allow_inf_nan=False)


class TrainSpec(BaseModel):
    """What to train: dataset, architecture, optimizer, schedule. Every field has a default:
    the dataset's defaults (core.train.DEFAULTS), so ``{"dataset": "mnist"}`` alone trains
    the MNIST default. The schema shows the digits defaults."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    dataset: str = Field("digits", json_schema_extra={"pattern": DATASET_PATTERN}, description=(
        "8×8 digits (1,797 images), the 28×28 MNIST subset (10,000), or the id of a dataset of one's own "
        "(POST /api/datasets)"))
    filters: int = Field(_DIGITS["filters"], ge=1, le=16, description="filters of the convolution layer")
    kernel: int = Field(_DIGITS["kernel"], ge=1, le=7, description="kernel side k (k×k)")
    padding: int = Field(_DIGITS["padding"], ge=0, le=3, description="zero cells added on each side")
    pool: Literal["max", "avg"] = Field(_DIGITS["pool"])
    pool_size: int = Field(_DIGITS["pool_size"], ge=1, le=4, description="pooling window side, also its stride")
    hidden: int = Field(_DIGITS["hidden"], ge=0, le=128, description="units of a hidden dense layer; 0: none")
    activation: Literal["relu", "sigmoid", "tanh", "leaky_relu"] = Field(_DIGITS["activation"])
    optimizer: Literal["sgd", "momentum", "adam"] = Field(_DIGITS["optimizer"])
    lr: float = Field(_DIGITS["lr"], gt=0, le=1, description="learning rate", **_Float)
    beta1: float = Field(_DIGITS["beta1"], ge=0, lt=1, description="Adam: decay of the mean of the gradients", **_Float)
    beta2: float = Field(_DIGITS["beta2"], ge=0, lt=1, description="Adam: decay of the mean of their squares", **_Float)
    momentum: float = Field(_DIGITS["momentum"], ge=0, lt=1, description="momentum: decay of the velocity", **_Float)
    batch_size: int = Field(_DIGITS["batch_size"], ge=1, le=512)
    epochs: int = Field(_DIGITS["epochs"], ge=1, le=30)
    seed: int = Field(_DIGITS["seed"], ge=0, le=2**31 - 1, description="initial weights and shuffling order")
    lr_decay: float = Field(_DIGITS["lr_decay"], gt=0, le=1, description="the learning rate is multiplied by this after each epoch", **_Float)
    classes: int = Field(10, ge=2, le=10, description=(
        "classes the network tells apart: 10 for the digits; a dataset of one's own: its number of labels "
        "(set from its file)"))

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, value: str) -> str:
        if value in core_train.DEFAULTS or app_datasets.is_dataset_id(value):
            return value
        raise PydanticCustomError("literal_error", "Input should be {expected}",
                                  {"expected": "'digits', 'mnist' or a dataset's id ('set-' and 16 hex digits)"})

    @model_validator(mode="before")
    @classmethod
    def _dataset_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        unknown = sorted(str(key) for key in data if key not in cls.model_fields)
        if unknown:
            raise ValueError(gettext("Unknown setting: %(names)s. Known settings: %(known)s.")
                             % {"names": ", ".join(unknown), "known": ", ".join(cls.model_fields)})
        dataset = data.get("dataset", "digits")
        if isinstance(dataset, str) and dataset in core_train.DEFAULTS:
            return {**dataset_defaults(dataset), **data, "classes": 10}
        if app_datasets.is_dataset_id(dataset):
            settings = (info.context or {}).get("settings") if isinstance(info.context, dict) else None
            try:
                classes = app_datasets.dataset_classes(dataset, settings)
            except InputError as e:
                # Read back from JSON where the file is not (yet) to be seen: the number of
                # classes checked when the spec was made stands; the training finds the file.
                if settings is None and isinstance(data.get("classes"), int):
                    return {**dataset_defaults(dataset), **data}
                raise ValueError(e.message) from None
            return {**dataset_defaults(dataset), **data, "classes": classes}
        return data

    @model_validator(mode="after")
    def _fits(self) -> TrainSpec:
        self.output_shapes()
        return self

    def output_shapes(self) -> list[tuple[int, ...]]:
        """(C, H, W) of the input, then after the convolution and after the pooling; raises
        ValueError (translated, with the formula) when the architecture does not fit."""
        C, H, W = input_shape(self.dataset)
        try:
            Ho = output_size(H, self.kernel, pad=self.padding)
        except OutputSizeError as e:
            raise ValueError(gettext("The %(k)s×%(k)s kernel does not fit the %(n)s×%(n)s image with padding %(p)s: "
                                     "the output size would be %(formula)s.")
                             % {"k": self.kernel, "n": H, "p": self.padding, "formula": e.formula}) from None
        try:
            Hp = output_size(Ho, self.pool_size, stride=self.pool_size)
        except OutputSizeError as e:
            raise ValueError(gettext("The %(s)s×%(s)s pooling window does not fit the %(n)s×%(n)s feature map left by the "
                                     "convolution: the output size would be %(formula)s.")
                             % {"s": self.pool_size, "n": Ho, "formula": e.formula}) from None
        return [(C, H, W), (self.filters, Ho, Ho), (self.filters, Hp, Hp)]

    def optimizer_settings(self) -> dict[str, float]:
        if self.optimizer == "adam":
            return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2}
        if self.optimizer == "momentum":
            return {"lr": self.lr, "momentum": self.momentum}
        return {"lr": self.lr}


def build_model(spec: TrainSpec) -> Sequential:
    """A fresh tiny CNN for ``spec``: weights drawn from spec.seed (same spec ⇒ same weights)."""
    return tiny_cnn(input_shape=input_shape(spec.dataset), filters=spec.filters, kernel=spec.kernel,
                    padding=spec.padding, pool=spec.pool, pool_size=spec.pool_size, hidden=spec.hidden,
                    activation=spec.activation, classes=spec.classes, seed=spec.seed)


def worker_job(spec: TrainSpec, settings: Any = None) -> dict[str, Any]:
    """The JSON job core.train_worker trains (same spec ⇒ same job ⇒ same run). A dataset of
    one's own comes with its file (in ``settings``' upload folder) and its augmentation."""
    job: dict[str, Any] = {}
    if app_datasets.is_dataset_id(spec.dataset):
        augment = OWN_DEFAULTS["augment"]
        job = {"dataset_file": str(app_datasets.dataset_file(settings, spec.dataset)),
               "augment": {**augment, "scale": list(augment["scale"])}}
    return {
        **job,
        "dataset": spec.dataset,
        "model": {"filters": spec.filters, "kernel": spec.kernel, "padding": spec.padding, "pool": spec.pool,
                  "pool_size": spec.pool_size, "hidden": spec.hidden, "activation": spec.activation,
                  "seed": spec.seed},
        "optimizer": {"name": spec.optimizer, **spec.optimizer_settings()},
        "epochs": spec.epochs, "batch_size": spec.batch_size, "seed": spec.seed, "lr_decay": spec.lr_decay,
    }
