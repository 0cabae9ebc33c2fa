"""What to train: TrainSpec (dataset, architecture, optimizer, schedule) and the model it builds.

``dataset`` is "digits", "mnist" or the id of a dataset of one's own (app/datasets.py:
28×28 drawings of K labels): trained with OWN_DEFAULTS (the MNIST architecture, a schedule
for a few hundred drawings) and ``classes`` = K, read from its file. Validate a spec with
``context={"settings": settings}`` to look the dataset up in those settings' upload folder
(without it: where this process last found it, else the environment's settings).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cnnlab.app import datasets as app_datasets
from cnnlab.app.errors import InputError
from cnnlab.app import numbers as numfmt
from cnnlab.app.i18n import gettext
from cnnlab.core import datasets as core_datasets
from cnnlab.core import train as core_train
from cnnlab.core.conv import OutputSizeError, output_size
from cnnlab.core.model import BLOCK_KEYS, Sequential, tiny_cnn

__all__ = ["INPUT_SHAPES", "MAX_PARAMS", "OWN_DEFAULTS", "TrainSpec", "build_model", "dataset_defaults", "input_shape",
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
        "augment": d.get("augment") is not None,  # the overfitting lab's switch: on where the dataset is augmented
    }


_DIGITS = dataset_defaults("digits")


def _largest_one_block() -> int:
    """The parameters of the largest one-block network the form allows (MNIST, 16 filters, a
    1×1 kernel with padding 3 and no pooling: a 16×34×34 map, 128 hidden units). Deeper designs
    are held to it, so the saved-model size limit (app/budget.py) and the training times stay
    those of the one-block lab."""
    best = 0
    for k in range(1, 8):
        for p in range(0, 4):
            for s in range(1, 5):
                side = (28 + 2 * p - k + 1) // s
                if side >= 1:
                    best = max(best, (k * k + 1) * 16 + (16 * side * side + 1) * 128 + 129 * 10)
    return best


MAX_PARAMS = _largest_one_block()
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
    stride: int = Field(1, ge=1, le=3, description="step of the convolution's window, in cells")
    pool: Literal["max", "avg"] = Field(_DIGITS["pool"])
    pool_size: int = Field(_DIGITS["pool_size"], ge=1, le=4, description="pooling window side, also its stride")
    blocks: int = Field(1, ge=1, le=3, description=(
        "conv blocks (conv → activation → pooling), one after the other; block 2 and 3 are set by "
        "filters2 … pool_size2 and filters3 … pool_size3 (ignored, but checked, when there are fewer blocks)"))
    filters2: int = Field(16, ge=1, le=32, description="block 2: filters of its convolution")
    kernel2: int = Field(3, ge=1, le=7, description="block 2: kernel side k (k×k)")
    padding2: int = Field(1, ge=0, le=3, description="block 2: zero cells added on each side")
    stride2: int = Field(1, ge=1, le=3, description="block 2: step of the convolution's window")
    pool2: Literal["max", "avg"] = Field("max", description="block 2: pooling kind")
    pool_size2: int = Field(2, ge=1, le=4, description="block 2: pooling window side, also its stride; 1: no pooling")
    filters3: int = Field(16, ge=1, le=32, description="block 3: filters of its convolution")
    kernel3: int = Field(3, ge=1, le=7, description="block 3: kernel side k (k×k)")
    padding3: int = Field(1, ge=0, le=3, description="block 3: zero cells added on each side")
    stride3: int = Field(1, ge=1, le=3, description="block 3: step of the convolution's window")
    pool3: Literal["max", "avg"] = Field("max", description="block 3: pooling kind")
    pool_size3: int = Field(2, ge=1, le=4, description="block 3: pooling window side, also its stride; 1: no pooling")
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
    # The overfitting lab (/train): fewer images, wrong labels, L2 weight decay, augmentation.
    train_size: int = Field(0, ge=0, le=60000, description=(
        "training images used: 0 = all of the dataset's training set; else a subset of that many, "
        "stratified by class and drawn from the seed (at most the training set's size)"))
    label_noise: float = Field(0.0, ge=0, le=0.5, description=(
        "share of the TRAINING labels (after train_size) replaced by a different, random class, chosen from "
        "the seed; held-out labels are never changed"), **_Float)
    weight_decay: float = Field(0.0, ge=0, le=0.1, description=(
        "L2 weight decay λ: the loss gets + λ/2·Σw² over the convolution and dense weights (not the biases), "
        "their gradient + λ·w, with every optimizer (as torch.optim's weight_decay; not AdamW's decoupled "
        "decay)"), **_Float)
    augment: bool = Field(True, description=(
        "move, turn, resize and slant half of each training batch a little at random (the dataset's "
        "augmentation; MNIST: shifts of up to 1.75 pixels, turns of up to 10°). Default: the dataset's "
        "(digits and a dataset of one's own: on; MNIST: off)"))

    @field_validator("train_size")
    @classmethod
    def _train_size_fits(cls, value: int, info: ValidationInfo) -> int:
        dataset = info.data.get("dataset")
        if not value or not isinstance(dataset, str):
            return value
        settings = (info.context or {}).get("settings") if isinstance(info.context, dict) else None
        count = train_count(dataset, settings)
        if count is not None and value > count:
            raise ValueError(gettext("This dataset has %(count)s training images: use at most %(count)s, "
                                     "or 0 for all of them.") % {"count": numfmt.count(count)})
        return value

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
        n = self.n_params()
        if n > MAX_PARAMS:
            raise ValueError(gettext("This network would have %(n)s parameters; this lab trains at most %(max)s (the "
                                     "largest one-block network). Use fewer filters or hidden units, or more pooling.")
                             % {"n": numfmt.count(n), "max": numfmt.count(MAX_PARAMS)})
        return self

    def conv_blocks(self) -> list[dict[str, Any]]:
        """Every conv block in use, block 1 first: {"filters", "kernel", "padding", "stride", "pool",
        "pool_size"} (core.model.tiny_cnn's ``blocks`` are the ones after the first)."""
        out = [{"filters": self.filters, "kernel": self.kernel, "padding": self.padding, "stride": self.stride,
                "pool": self.pool, "pool_size": self.pool_size}]
        for b in range(2, self.blocks + 1):
            out.append({key: getattr(self, f"{key}{b}") for key in BLOCK_KEYS})
        return out

    def output_shapes(self) -> list[tuple[int, ...]]:
        """(C, H, W) of the input, then after each block's convolution and after its pooling
        (block 1 always has its pooling layer; blocks 2 and 3 only when pool_size > 1); the last
        is the map the dense layers see. Raises ValueError (translated, naming the block, with
        the formula and its numbers) when a map would shrink below 1×1."""
        C, H, W = input_shape(self.dataset)
        shapes: list[tuple[int, ...]] = [(C, H, W)]
        plain = self.blocks == 1 and self.stride == 1  # today's one-block model: today's messages
        for number, b in enumerate(self.conv_blocks(), start=1):
            try:
                Ho = output_size(H, b["kernel"], stride=b["stride"], pad=b["padding"])
            except OutputSizeError as e:
                if plain:
                    message = gettext("The %(k)s×%(k)s kernel does not fit the %(n)s×%(n)s image with padding %(p)s: "
                                      "the output size would be %(formula)s.")
                else:
                    message = gettext("Block %(b)s: the %(k)s×%(k)s kernel (stride %(s)s, padding %(p)s) does not fit "
                                      "the %(n)s×%(n)s map it gets: the output size would be %(formula)s.")
                raise ValueError(message % {"b": number, "k": b["kernel"], "n": H, "p": b["padding"], "s": b["stride"],
                                            "formula": e.formula}) from None
            shapes.append((b["filters"], Ho, Ho))
            if number == 1 or b["pool_size"] > 1:
                try:
                    Hp = output_size(Ho, b["pool_size"], stride=b["pool_size"])
                except OutputSizeError as e:
                    if plain:
                        message = gettext("The %(s)s×%(s)s pooling window does not fit the %(n)s×%(n)s feature map "
                                          "left by the convolution: the output size would be %(formula)s.")
                    else:
                        message = gettext("Block %(b)s: the %(s)s×%(s)s pooling window does not fit the %(n)s×%(n)s "
                                          "feature map left by its convolution: the output size would be %(formula)s.")
                    raise ValueError(message % {"b": number, "s": b["pool_size"], "n": Ho,
                                                "formula": e.formula}) from None
                shapes.append((b["filters"], Hp, Hp))
                Ho = Hp
            H = W = Ho
        return shapes

    def n_params(self) -> int:
        """The network's parameters: (k·k·C + 1)·F per convolution, (D + 1)·U per dense layer."""
        shapes = self.output_shapes()
        C, n = shapes[0][0], 0
        for b in self.conv_blocks():
            n += (b["kernel"] * b["kernel"] * C + 1) * b["filters"]
            C = b["filters"]
        D = math.prod(shapes[-1])
        if self.hidden:
            n += (D + 1) * self.hidden
            D = self.hidden
        return n + (D + 1) * self.classes

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
                    activation=spec.activation, classes=spec.classes, seed=spec.seed, stride=spec.stride,
                    blocks=spec.conv_blocks()[1:])


def train_count(dataset: str, settings: Any = None) -> int | None:
    """How many training images ``dataset`` has (None: a dataset of one's own not to be found)."""
    if dataset in core_datasets.DATASETS:
        return len(core_datasets.split_indices(dataset)[0])
    try:
        return len(app_datasets.known_dataset(dataset, settings).y_train)
    except InputError:
        return None


def augment_kwargs(dataset: str, on: bool) -> dict[str, Any] | None:
    """core.augment.random_affine's keyword arguments for a run with augmentation ``on``
    (JSON-able: the scale as a list), None when off: the dataset's own augmentation
    (core.train.DEFAULTS, OWN_DEFAULTS), or core.train.AUGMENT_ON where it has none."""
    if not on:
        return None
    augment = train_defaults(dataset).get("augment") or core_train.AUGMENT_ON[dataset]
    return {**augment, "scale": list(augment["scale"])}


def worker_job(spec: TrainSpec, settings: Any = None) -> dict[str, Any]:
    """The JSON job core.train_worker trains (same spec ⇒ same job ⇒ same run). A dataset of
    one's own comes with its file (in ``settings``' upload folder) and its augmentation."""
    job: dict[str, Any] = {}
    if app_datasets.is_dataset_id(spec.dataset):
        job = {"dataset_file": str(app_datasets.dataset_file(settings, spec.dataset))}
    return {
        **job,
        "dataset": spec.dataset,
        "model": {"filters": spec.filters, "kernel": spec.kernel, "padding": spec.padding, "pool": spec.pool,
                  "pool_size": spec.pool_size, "hidden": spec.hidden, "activation": spec.activation,
                  "seed": spec.seed, "stride": spec.stride, "blocks": spec.conv_blocks()[1:]},
        "optimizer": {"name": spec.optimizer, **spec.optimizer_settings()},
        "epochs": spec.epochs, "batch_size": spec.batch_size, "seed": spec.seed, "lr_decay": spec.lr_decay,
        "train_size": spec.train_size, "label_noise": spec.label_noise, "weight_decay": spec.weight_decay,
        "augment": augment_kwargs(spec.dataset, spec.augment),
    }
