"""Layers: objects that hold parameters and wrap the forward/backward pairs.

Every layer has
    params        dict name → array (float32), e.g. {"w": ..., "b": ...}; {} when it has none
    grads         dict with the same names and shapes, filled by backward()
    forward(x, train=True) -> out     train=False keeps no cache (nothing to backpropagate) and
                                      touches no layer state, so threads may evaluate one
                                      model at the same time (training is one thread's job)
    backward(dout, need_dx=True) -> dx
                                      stores grads, NEVER changes params (optimizers do that);
                                      need_dx=False lets a layer skip dx (returns None) when
                                      nobody needs it, e.g. the model's first layer
    output_shape(input_shape)         shapes WITHOUT the batch axis: (C, H, W) -> (F, Ho, Wo)
    n_params                          number of scalars in params
    spec()                            a JSON-able dict that layer_from_spec() turns back into
                                      the same layer (fresh weights), used by save/load

Convolution and pooling are computed by core.conv and core.pool; this module only
keeps their weights and caches.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from .activations import get_activation
from .conv import Workspace, conv_backward, conv_forward, output_size, resolve_padding
from .pool import pool_backward, pool_forward

__all__ = [
    "Layer",
    "Conv2D",
    "Pool2D",
    "Activation",
    "Flatten",
    "Dense",
    "LAYER_TYPES",
    "layer_from_spec",
]

DTYPE = np.float32


def _he_normal(rng, shape, fan_in):
    """Kaiming/He normal init: N(0, 2/fan_in), which keeps ReLU activations' variance
    roughly constant from layer to layer. float32, drawn from ``rng``."""
    if rng is None:
        rng = np.random.default_rng()
    w = rng.standard_normal(shape, dtype=DTYPE)
    w *= DTYPE(math.sqrt(2.0 / fan_in))
    return w


class Layer(ABC):
    """Base class: no parameters, shape-preserving. Subclasses override what differs."""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.cache = None

    def _init_grads(self):
        # Gradients live in fixed buffers so a reference taken once (by an optimizer,
        # or a page showing ∂L/∂w) stays valid after every backward pass.
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}

    def astype(self, dtype):
        """Convert params (and their grad buffers) to ``dtype``, e.g. float64 for gradient checks."""
        self.params = {name: p.astype(dtype) for name, p in self.params.items()}
        self._init_grads()
        return self

    @property
    def n_params(self):
        return sum(int(p.size) for p in self.params.values())

    @abstractmethod
    def forward(self, x, train=True):
        """The layer's output; in training mode it keeps what backward needs."""

    @abstractmethod
    def backward(self, dout, need_dx=True):
        """Store the parameters' gradients in ``grads``; return dx (None when not needed)."""

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def spec(self):
        return {"type": type(self).__name__}

    def describe(self):
        """A short human-readable name, e.g. "Conv2D 8@3×3 pad 1"."""
        return type(self).__name__

    def _need_cache(self):
        if self.cache is None:
            raise RuntimeError(f"{self.describe()}: backward() called without a forward(x, train=True) before it")
        return self.cache

    def __repr__(self):
        return f"<{self.describe()}>"


# ---------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------

class Conv2D(Layer):
    """C input channels → F filters of size k×k.

    params: w (F, C, HH, WW) with HH = WW = k, b (F,).
    forward: x (N, C, H, W) -> out (N, F, Ho, Wo),
             Ho = ⌊(H + P_total − D·(k−1) − 1)/S⌋ + 1 (core.conv.output_size), same for Wo.
    padding: int, "valid" or "same" (passed to core.conv as is).
    """

    def __init__(self, C, F, k, stride=1, padding=0, dilation=1, rng=None):
        super().__init__()
        self.C, self.F, self.k = int(C), int(F), int(k)
        # padding stays "same"/"valid" or becomes a plain int (JSON-able for the spec).
        self.stride, self.dilation = int(stride), int(dilation)
        self.padding = padding if isinstance(padding, str) else int(padding)
        if min(self.C, self.F, self.k, self.stride, self.dilation) < 1:
            raise ValueError(f"Conv2D needs C, F, k, stride, dilation ≥ 1; got C={C} F={F} k={k} "
                             f"stride={stride} dilation={dilation}")
        fan_in = self.C * self.k * self.k
        self.params = {"w": _he_normal(rng, (self.F, self.C, self.k, self.k), fan_in),
                       "b": np.zeros(self.F, dtype=DTYPE)}
        self._init_grads()
        # Scratch buffers reused from training step to step (im2col matrix, padded input).
        # Evaluation (train=False) allocates afresh: it must neither invalidate a training
        # cache nor race with another thread evaluating the same model.
        self._workspace = Workspace()

    def forward(self, x, train=True):
        N, C, H, W = x.shape
        if C != self.C:
            raise ValueError(f"{self.describe()} expects {self.C} input channels; got x of shape {x.shape}")
        out, cache = conv_forward(x, self.params["w"], self.params["b"], stride=self.stride,
                                  padding=self.padding, dilation=self.dilation,
                                  workspace=self._workspace if train else None)
        self.cache = cache if train else None
        return out

    def backward(self, dout, need_dx=True):
        dx, dw, db = conv_backward(dout, self._need_cache(), need_dx=need_dx)
        np.copyto(self.grads["w"], dw)
        np.copyto(self.grads["b"], db)
        return dx

    def output_shape(self, input_shape):
        C, H, W = input_shape
        if C != self.C:
            raise ValueError(f"{self.describe()} expects {self.C} input channels; got input shape {tuple(input_shape)}")
        pad_h = resolve_padding(self.padding, self.k, self.dilation, self.stride, H)
        pad_w = resolve_padding(self.padding, self.k, self.dilation, self.stride, W)
        Ho = output_size(H, self.k, self.stride, pad_h, self.dilation)
        Wo = output_size(W, self.k, self.stride, pad_w, self.dilation)
        return (self.F, Ho, Wo)

    def spec(self):
        return {"type": "Conv2D", "C": self.C, "F": self.F, "k": self.k, "stride": self.stride,
                "padding": self.padding, "dilation": self.dilation}

    def describe(self):
        extra = "".join(f" {name} {value}" for name, value, default in
                        (("stride", self.stride, 1), ("pad", self.padding, 0), ("dilation", self.dilation, 1))
                        if value != default)
        return f"Conv2D {self.F}@{self.k}\u00d7{self.k}{extra}"


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------

class Pool2D(Layer):
    """Max / average / global-average pooling, no parameters.

    forward: x (N, C, H, W) -> out (N, C, Ho, Wo), Ho = ⌊(H − size)/stride⌋ + 1
             (stride defaults to size); global_avg gives (N, C, 1, 1).
    """

    KINDS = ("max", "avg", "global_avg")

    def __init__(self, kind="max", size=2, stride=None):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown pooling {kind!r}; choose one of: {', '.join(self.KINDS)}")
        self.kind, self.size = kind, int(size)
        self.stride = None if stride is None else int(stride)
        # Buffers reused from training step to step, as in Conv2D: a fresh (64, 8, 28, 28)
        # dx and the pooling's planes cost page faults every step. Evaluation
        # (train=False) allocates afresh.
        self._workspace = Workspace()

    def forward(self, x, train=True):
        out, cache = pool_forward(x, kind=self.kind, size=self.size, stride=self.stride,
                                  workspace=self._workspace if train else None)
        self.cache = cache if train else None
        return out

    def backward(self, dout, need_dx=True):
        return pool_backward(dout, self._need_cache())

    def output_shape(self, input_shape):
        C, H, W = input_shape
        if self.kind == "global_avg":
            return (C, 1, 1)
        stride = self.size if self.stride is None else self.stride
        return (C, output_size(H, self.size, stride), output_size(W, self.size, stride))

    def spec(self):
        return {"type": "Pool2D", "kind": self.kind, "size": self.size, "stride": self.stride}

    def describe(self):
        if self.kind == "global_avg":
            return "Pool2D global_avg"
        stride = "" if self.stride in (None, self.size) else f" stride {self.stride}"
        return f"Pool2D {self.kind} {self.size}\u00d7{self.size}{stride}"


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------

class Activation(Layer):
    """An element-wise activation from core.activations by name; x and out: any shape (N, ...).

    In training (train=True) the output and dx are written into buffers this layer
    keeps, reused by the next training step: for a (64, 8, 28, 28) feature map, fresh
    arrays cost ~750 page faults (~1 ms) per step. So an output of forward(x) (and a
    dx of backward) stays valid only until the next training forward (backward) of this
    layer; copy it to keep it. forward(x, train=False) always returns a new array.
    """

    def __init__(self, name="relu", alpha=0.01):
        super().__init__()
        self.fn = get_activation(name)
        self.name = name
        self.alpha = float(alpha)
        if name == "leaky_relu" and not 0 <= self.alpha <= 1:
            raise ValueError(f"leaky_relu needs a slope 0 ≤ alpha ≤ 1; got {alpha}")
        self._buffers = {}

    def _buffer(self, role, like, *others):
        dtype = np.result_type(like, *others)
        key = (role, like.shape, dtype.str)
        buf = self._buffers.get(key)
        if buf is None:
            # A few shapes are enough (full batches and an epoch's smaller last batch);
            # more means the caller changes shapes all the time: start afresh.
            if len(self._buffers) >= 4:
                self._buffers.clear()
            buf = self._buffers[key] = np.empty(like.shape, dtype)
        return buf

    def forward(self, x, train=True):
        out = self._buffer("out", x) if train else None
        if self.name == "leaky_relu":
            out, cache = self.fn.forward(x, self.alpha, out=out)
        else:
            out, cache = self.fn.forward(x, out=out)
        self.cache = cache if train else None
        return out

    def backward(self, dout, need_dx=True):
        cache = self._need_cache()
        return self.fn.backward(dout, cache, out=self._buffer("dx", cache["out"], dout))

    def spec(self):
        spec = {"type": "Activation", "name": self.name}
        if self.name == "leaky_relu":
            spec["alpha"] = self.alpha
        return spec

    def describe(self):
        return self.name if self.name != "leaky_relu" else f"leaky_relu \u03b1={self.alpha:g}"


# ---------------------------------------------------------------------------
# Flatten and Dense
# ---------------------------------------------------------------------------

class Flatten(Layer):
    """x (N, C, H, W) -> out (N, C·H·W), a view whenever x is contiguous (no copy)."""

    def forward(self, x, train=True):
        self.cache = {"shape": x.shape} if train else None
        return x.reshape(x.shape[0], -1)

    def backward(self, dout, need_dx=True):
        return dout.reshape(self._need_cache()["shape"])

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)


# OpenBLAS computes a matrix product on the calling thread when M·N·K ≤ 4·65536 and wakes
# its worker threads above that. Waking them is cheap on an idle machine but costs
# milliseconds as soon as another process (a second training job, the web server)
# competes for the two cores: with one busy process, the tiny model's step went from
# 2 ms to 12–17 ms, and an MNIST epoch of the default model from 1 s to 5 s. So a
# training-sized product is cut into row blocks under the threshold (up to
# _SERIAL_CHUNKS of them); bigger products (evaluation batches) keep the threads.
_SERIAL_MNK = 4 * 65536
_SERIAL_CHUNKS = 64


def _matmul(a, b, out=None):
    """a (M, K) @ b (K, N) -> (M, N), written into ``out`` if given, in row blocks that
    OpenBLAS runs single-threaded when there are at most _SERIAL_CHUNKS of them."""
    M, K = a.shape
    N = b.shape[1]
    rows = max(1, _SERIAL_MNK // max(1, K * N))
    if rows >= M or -(-M // rows) > _SERIAL_CHUNKS:
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty((M, N), np.result_type(a, b))
    for i in range(0, M, rows):
        np.matmul(a[i:i + rows], b, out=out[i:i + rows])
    return out


class Dense(Layer):
    """Fully connected: out = x · w + b.

    params: w (D_in, D_out), b (D_out,)   (column j of w holds output unit j's weights)
    forward: x (N, D_in) -> out (N, D_out).
    """

    def __init__(self, D_in, D_out, rng=None):
        super().__init__()
        self.D_in, self.D_out = int(D_in), int(D_out)
        if min(self.D_in, self.D_out) < 1:
            raise ValueError(f"Dense needs D_in, D_out ≥ 1; got {D_in}, {D_out}")
        self.params = {"w": _he_normal(rng, (self.D_in, self.D_out), self.D_in),
                       "b": np.zeros(self.D_out, dtype=DTYPE)}
        self._init_grads()

    def forward(self, x, train=True):
        if x.ndim != 2 or x.shape[1] != self.D_in:
            raise ValueError(f"{self.describe()} expects x of shape (N, {self.D_in}); got {x.shape} "
                             f"(put a Flatten layer before it)")
        out = _matmul(x, self.params["w"])
        out += self.params["b"]
        self.cache = {"x": x} if train else None
        return out

    def backward(self, dout, need_dx=True):
        x = self._need_cache()["x"]
        _matmul(x.T, dout, out=self.grads["w"])
        np.sum(dout, axis=0, out=self.grads["b"])
        return _matmul(dout, self.params["w"].T) if need_dx else None

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.D_in,):
            raise ValueError(f"{self.describe()} expects input shape ({self.D_in},); got {tuple(input_shape)}")
        return (self.D_out,)

    def spec(self):
        return {"type": "Dense", "D_in": self.D_in, "D_out": self.D_out}

    def describe(self):
        return f"Dense {self.D_in}\u2192{self.D_out}"


# ---------------------------------------------------------------------------
# Rebuilding layers from their spec
# ---------------------------------------------------------------------------

LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, Pool2D, Activation, Flatten, Dense)}


def layer_from_spec(spec, rng=None):
    """The layer described by ``spec`` (a dict from Layer.spec()), with fresh weights from rng."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}")
    if kind in ("Conv2D", "Dense"):
        spec["rng"] = rng
    return LAYER_TYPES[kind](**spec)
