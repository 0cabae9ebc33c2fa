"""A Sequential model: layers applied in order, and the tiny CNN the lab trains.

    x (N, C, H, W) -> layer 0 -> layer 1 -> ... -> logits (N, K)

Parameters are named "<layer index>.<param name>" ("0.w", "0.b", "4.w", ...). All of
them live in ONE flat float32 buffer (``flat_params``), each layer's arrays being
views into it, and likewise the gradients (``flat_grads``). Nothing changes for a
layer, but an optimizer can update every parameter of the model with a handful of
NumPy calls instead of a handful per array: for a model this small, the Python
overhead per call costs more than the arithmetic.

ReLU directly followed by max pooling is *computed* in the other order, pool first:
max and ReLU commute exactly (max(relu(a), relu(b)) = relu(max(a, b))), and the
gradients agree too (the window's first maximum is the same cell; where a window is
all ≤ 0 both orders send it zero), so logits and gradients are the same numbers, but
the ReLU then touches a quarter of the values: on a (64, 8, 28, 28) feature map that
saves ~0.35 ms of a ~2.5 ms training step. The layers, their shapes and summary() keep
the declared order; activations(x) gives each layer's output in that order.

save()/load() use .npz: one array per parameter plus "__spec__", the architecture
as JSON, so a file alone rebuilds the model.
"""

from __future__ import annotations

import json
import math

import numpy as np

from .layers import Activation, Conv2D, Dense, Flatten, Pool2D, layer_from_spec
from .losses import softmax

__all__ = ["Parameters", "Sequential", "tiny_cnn", "load_model"]

SPEC_KEY = "__spec__"


class Parameters(tuple):
    """A tuple of (name, param, grad) triples, plus the flat buffers they are views of.

    flat_params, flat_grads: (P,) where P = total number of parameters; None when the
    triples are not views of one buffer.
    """

    flat_params = None
    flat_grads = None


class Sequential:
    """Layers in order. input_shape (C, H, W) is optional; it lets summary() work without arguments."""

    def __init__(self, layers, input_shape=None, config=None):
        self.layers = list(layers)
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        # The builder's arguments (e.g. tiny_cnn's), kept for display and saved with the spec.
        self.config = dict(config) if config else {}
        self._order = self._execution_order()
        self._pack()

    # -- parameter storage -------------------------------------------------

    def _pack(self):
        """Copy every parameter into one flat buffer and make the layers' arrays views of it."""
        arrays = [p for layer in self.layers for p in layer.params.values()]
        dtype = np.result_type(*arrays) if arrays else np.dtype(np.float32)
        total = sum(p.size for p in arrays)
        self.flat_params = np.empty(total, dtype=dtype)
        self.flat_grads = np.zeros(total, dtype=dtype)
        triples = []
        offset = 0
        for i, layer in enumerate(self.layers):
            for name, p in list(layer.params.items()):
                view = self.flat_params[offset:offset + p.size].reshape(p.shape)
                view[...] = p
                gview = self.flat_grads[offset:offset + p.size].reshape(p.shape)
                layer.params[name] = view
                layer.grads[name] = gview
                triples.append((f"{i}.{name}", view, gview))
                offset += p.size
        self._parameters = Parameters(triples)
        self._parameters.flat_params = self.flat_params
        self._parameters.flat_grads = self.flat_grads

    def parameters(self):
        """(name, param, grad) for every parameter, in layer order: ("0.w", w, dw), ("0.b", b, db), ...

        The arrays are the live ones: optimizers update ``param`` in place. The same
        Parameters object is returned every time.
        """
        return self._parameters

    def astype(self, dtype):
        """Convert all parameters to ``dtype`` (float64 for gradient checks). Returns self."""
        for layer in self.layers:
            layer.astype(dtype)
        self._pack()
        return self

    @property
    def n_params(self):
        return int(self.flat_params.size)

    # -- forward / backward ------------------------------------------------

    def _execution_order(self):
        """Layer indices in the order they are computed: declared order, except that each
        relu → max-pool pair runs pool first (see the module docstring)."""
        layers, order, i = self.layers, [], 0
        while i < len(layers):
            if (i + 1 < len(layers) and isinstance(layers[i], Activation) and layers[i].name == "relu"
                    and isinstance(layers[i + 1], Pool2D) and layers[i + 1].kind == "max"):
                order += [i + 1, i]
                i += 2
            else:
                order.append(i)
                i += 1
        return order

    def forward(self, x, train=True):
        """x (N, C, H, W) -> logits (N, K). train=False keeps no caches."""
        for i in self._order:
            x = self.layers[i].forward(x, train)
        return x

    __call__ = forward

    def backward(self, dlogits, need_dx=True):
        """dlogits (N, K) -> dx (N, C, H, W); every layer's grads are filled on the way.

        need_dx=False skips the input gradient (returns None): training never uses it,
        and for a first conv layer it is the most expensive part of the backward pass.
        """
        d = dlogits
        order = self._order
        for i in reversed(order):
            d = self.layers[i].backward(d, need_dx or i != order[0])
        return d

    def activations(self, x):
        """Every layer's output for x (N, C, H, W), in declared order: [out_0, out_1, ...],
        fresh arrays (train=False), for showing what each layer does."""
        outs = []
        for layer in self.layers:
            x = layer.forward(x, train=False)
            outs.append(x)
        return outs

    def predict_proba(self, x, batch_size=1000):
        """x (N, C, H, W) -> class probabilities (N, K), computed in batches (no caches kept)."""
        N = x.shape[0]
        parts = [softmax(self.forward(x[i:i + batch_size], train=False)) for i in range(0, N, batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=self.flat_params.dtype)

    def predict(self, x, batch_size=1000):
        """x (N, C, H, W) -> predicted class (N,) int64."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    # -- shapes and summary ------------------------------------------------

    def _input_shape(self, input_shape):
        shape = input_shape if input_shape is not None else self.input_shape
        if shape is None:
            raise ValueError("this model was built without input_shape; pass input_shape=(C, H, W)")
        return tuple(int(d) for d in shape)

    def output_shapes(self, input_shape=None):
        """Each layer's output shape, without the batch axis: [(F, Ho, Wo), ...]."""
        shape = self._input_shape(input_shape)
        shapes = []
        for layer in self.layers:
            shape = tuple(layer.output_shape(shape))
            shapes.append(shape)
        return shapes

    def summary(self, input_shape=None):
        """One dict per layer: index, layer (short description), type, output_shape, n_params."""
        shapes = self.output_shapes(input_shape)
        return [
            {"index": i, "layer": layer.describe(), "type": type(layer).__name__,
             "output_shape": shape, "n_params": layer.n_params}
            for i, (layer, shape) in enumerate(zip(self.layers, shapes))
        ]

    def summary_text(self, input_shape=None):
        """summary() as a plain-text table, with the input and the total parameter count."""
        rows = self.summary(input_shape)
        lines = [f"{'#':>2}  {'layer':<24}{'output':<16}{'params':>8}",
                 f"{'':>2}  {'input':<24}{str(self._input_shape(input_shape)):<16}{'':>8}"]
        lines += [f"{r['index']:>2}  {r['layer']:<24}{str(r['output_shape']):<16}{r['n_params']:>8}" for r in rows]
        lines.append(f"{'':>2}  {'total':<24}{'':<16}{self.n_params:>8}")
        return "\n".join(lines)

    # -- save / load -------------------------------------------------------

    def spec(self):
        """The architecture as a JSON-able dict: input_shape, config, one spec per layer."""
        return {"input_shape": None if self.input_shape is None else list(self.input_shape),
                "config": self.config,
                "layers": [layer.spec() for layer in self.layers]}

    @classmethod
    def from_spec(cls, spec, seed=0):
        """A model with the architecture ``spec`` (from spec()) and fresh weights drawn from ``seed``."""
        rng = np.random.default_rng(seed)
        layers = [layer_from_spec(s, rng) for s in spec["layers"]]
        return cls(layers, input_shape=spec.get("input_shape"), config=spec.get("config"))

    def save(self, file):
        """Write the parameters and the architecture to ``file`` (a path or a binary file object) as .npz."""
        arrays = {name: p for name, p, _ in self.parameters()}
        np.savez(file, **{SPEC_KEY: np.array(json.dumps(self.spec()))}, **arrays)

    @classmethod
    def load(cls, file):
        """Rebuild a model saved by save(): same architecture, same parameters (bit for bit)."""
        with np.load(file, allow_pickle=False) as data:
            if SPEC_KEY not in data.files:
                raise ValueError("not a CNN Lab model file: it has no architecture spec")
            model = cls.from_spec(json.loads(str(data[SPEC_KEY])))
            dtypes = {data[name].dtype for name, _, _ in model.parameters() if name in data.files}
            if dtypes and dtypes != {model.flat_params.dtype}:
                model.astype(dtypes.pop())
            for name, p, _ in model.parameters():
                if name not in data.files:
                    raise ValueError(f"model file is missing parameter {name!r}")
                saved = data[name]
                if saved.shape != p.shape:
                    raise ValueError(f"parameter {name!r} has shape {saved.shape} in the file, "
                                     f"but the architecture needs {p.shape}")
                np.copyto(p, saved)
        return model

    def __repr__(self):
        return f"Sequential([{', '.join(layer.describe() for layer in self.layers)}])"


def load_model(file):
    """Sequential.load(file): a model rebuilt from a .npz written by Sequential.save."""
    return Sequential.load(file)


BLOCK_KEYS = ("filters", "kernel", "padding", "stride", "pool", "pool_size")


def tiny_cnn(input_shape=(1, 28, 28), filters=8, kernel=3, padding=1, pool="max", pool_size=2,
             hidden=0, activation="relu", classes=10, seed=0, stride=1, blocks=()):
    """conv → activation → pool → [conv → activation → (pool)] × len(blocks) → flatten
    → [dense hidden → activation] → dense classes.

    Block 1 is conv(kernel, filters, padding, stride) → activation → Pool2D(pool, pool_size),
    the pooling layer kept even when pool_size is 1 (a window of one cell: the identity), so
    a one-block model has the same layers as before. ``blocks``: the extra conv blocks, each
    a dict with keys filters, kernel, padding, stride, pool, pool_size (pool_size 1: no pooling
    layer in that block).

    input_shape: (C, H, W). Weights are He-initialised from np.random.default_rng(seed),
    drawn layer by layer in order, so the same arguments give bit-identical weights (a
    one-block model's the same as before blocks existed).
    """
    extra = [_block(b) for b in blocks]
    config = {"input_shape": list(input_shape), "filters": filters, "kernel": kernel, "padding": padding,
              "pool": pool, "pool_size": pool_size, "hidden": hidden, "activation": activation,
              "classes": classes, "seed": seed, "stride": stride, "blocks": extra}
    rng = np.random.default_rng(seed)
    C, H, W = input_shape
    layers = [Conv2D(C, filters, kernel, stride=stride, padding=padding, rng=rng), Activation(activation),
              Pool2D(pool, pool_size)]
    C = filters
    for b in extra:
        layers += [Conv2D(C, b["filters"], b["kernel"], stride=b["stride"], padding=b["padding"], rng=rng),
                   Activation(activation)]
        if b["pool_size"] > 1:
            layers.append(Pool2D(b["pool"], b["pool_size"]))
        C = b["filters"]
    layers.append(Flatten())
    shape = tuple(input_shape)
    for layer in layers:
        shape = layer.output_shape(shape)
    D = math.prod(shape)
    if hidden:
        layers += [Dense(D, hidden, rng=rng), Activation(activation)]
        D = hidden
    layers.append(Dense(D, classes, rng=rng))
    return Sequential(layers, input_shape=input_shape, config=config)


def _block(b):
    """An extra block's settings as a plain JSON-able dict (every key of BLOCK_KEYS)."""
    missing = [key for key in BLOCK_KEYS if key not in b]
    if missing:
        raise ValueError(f"a conv block needs {', '.join(BLOCK_KEYS)}; missing {', '.join(missing)}")
    out = {key: int(b[key]) for key in BLOCK_KEYS if key != "pool"}
    out["pool"] = str(b["pool"])
    return {key: out[key] for key in BLOCK_KEYS}
