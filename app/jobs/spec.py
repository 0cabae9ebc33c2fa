"""What to train: TrainSpec (dataset, architecture, optimizer, schedule) and the model it builds."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cnnlab.app.i18n import gettext
from cnnlab.core import train as core_train
from cnnlab.core.conv import OutputSizeError, output_size
from cnnlab.core.model import Sequential, tiny_cnn

__all__ = ["INPUT_SHAPES", "TrainSpec", "build_model", "dataset_defaults", "input_shape", "worker_job"]

# Image shape (C, H, W) of each dataset; the model's input.
INPUT_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28)}


def input_shape(dataset: str) -> tuple[int, int, int]:
    return INPUT_SHAPES[dataset]


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """core.train.DEFAULTS for ``dataset``, flattened into TrainSpec's fields."""
    d = core_train.DEFAULTS[dataset]
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

    dataset: Literal["digits", "mnist"] = Field("digits", description="8×8 digits (1,797 images) or the 28×28 MNIST subset (10,000)")
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

    @model_validator(mode="before")
    @classmethod
    def _dataset_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unknown = sorted(str(key) for key in data if key not in cls.model_fields)
        if unknown:
            raise ValueError(gettext("Unknown setting: %(names)s. Known settings: %(known)s.")
                             % {"names": ", ".join(unknown), "known": ", ".join(cls.model_fields)})
        dataset = data.get("dataset", "digits")
        if isinstance(dataset, str) and dataset in core_train.DEFAULTS:
            return {**dataset_defaults(dataset), **data}
        return data

    @model_validator(mode="after")
    def _fits(self) -> TrainSpec:
        self.output_shapes()
        return self

    def output_shapes(self) -> list[tuple[int, ...]]:
        """(C, H, W) of the input, then after the convolution and after the pooling; raises
        ValueError (translated, with the formula) when the architecture does not fit."""
        C, H, W = INPUT_SHAPES[self.dataset]
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
    return tiny_cnn(input_shape=INPUT_SHAPES[spec.dataset], filters=spec.filters, kernel=spec.kernel,
                    padding=spec.padding, pool=spec.pool, pool_size=spec.pool_size, hidden=spec.hidden,
                    activation=spec.activation, classes=10, seed=spec.seed)


def worker_job(spec: TrainSpec) -> dict[str, Any]:
    """The JSON job core.train_worker trains (same spec ⇒ same job ⇒ same run)."""
    return {
        "dataset": spec.dataset,
        "model": {"filters": spec.filters, "kernel": spec.kernel, "padding": spec.padding, "pool": spec.pool,
                  "pool_size": spec.pool_size, "hidden": spec.hidden, "activation": spec.activation,
                  "seed": spec.seed},
        "optimizer": {"name": spec.optimizer, **spec.optimizer_settings()},
        "epochs": spec.epochs, "batch_size": spec.batch_size, "seed": spec.seed, "lr_decay": spec.lr_decay,
    }
