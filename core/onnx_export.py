"""A Sequential model as an ONNX graph: opens in Netron, runs in ONNX Runtime.

    >>> import cnnlab
    >>> model = cnnlab.tiny_cnn(input_shape=(1, 8, 8))
    >>> proto = cnnlab.to_onnx(model)                     # onnx.ModelProto
    >>> [node.op_type for node in proto.graph.node]
    ['Conv', 'Relu', 'MaxPool', 'Flatten', 'Gemm', 'Softmax']

The graph takes one input and gives two outputs:

    image          float32 (N, C, H, W), N symbolic ("N"); the lab feeds pixels in 0..1, ink bright
    logits         float32 (N, K), the last layer's output (what ``model.forward`` returns)
    probabilities  float32 (N, K), Softmax(logits) over axis 1 (what ``model.predict_proba`` returns)

Each layer becomes one ONNX operator (opset ``OPSET``), in the declared order:

    Conv2D(C→F, k, stride S, padding, dilation D)
        → Conv(W (F, C, k, k), B (F,), kernel_shape [k, k], strides [S, S], dilations [D, D],
               pads [top, left, bottom, right]); an int padding P gives [P, P, P, P]; "valid" and
               "same" are resolved to numbers here with the engine's own rule
               (core.conv.resolve_padding, TensorFlow's: an odd extra cell goes bottom/right), so
               no auto_pad is left for a runtime to interpret differently. The engine correlates
               (no kernel flip), as ONNX Conv does.
    Pool2D max / avg (size s, stride t, default t = s)
        → MaxPool / AveragePool(kernel_shape [s, s], strides [t, t], no pads, ceil_mode 0):
          the engine's Ho = ⌊(H − s)/t⌋ + 1 drops the rows and columns a whole window does not
          cover, which is ONNX's floor mode; with no padding count_include_pad changes nothing.
    Pool2D global_avg → GlobalAveragePool.
    Activation relu / sigmoid / tanh / leaky_relu(α)
        → Relu / Sigmoid / Tanh / LeakyRelu(alpha=α). The engine's leaky ReLU is max(x, α·x)
          for 0 ≤ α ≤ 1, the same function as ONNX's (x ≥ 0 ? x : α·x).
    Flatten → Flatten(axis=1): row-major (C, H, W) → C·H·W, as NumPy's reshape.
    Dense(D_in→D_out) → Gemm(x, W (D_in, D_out), b): x·W + b (transB = 0: the engine already
          stores W as (D_in, D_out)).

The engine computes a ReLU directly followed by a max pool in the other order (core.model's
docstring); the two orders give the same numbers, so the file keeps the declared order, the
one Netron should show. Parameters are written as float32 (the engine trains in float32; a
model converted to float64 for a gradient check is written as float32 too). Every node's
doc_string is the layer's description (``Conv2D 8@3×3 pad 1``), the intermediate tensors carry
their shapes, and the architecture (``model.spec()``) is stored as metadata "cnnlab.spec", so
Netron shows the model as the lab describes it.

Nothing here needs the web app; ``onnx`` is imported by this module only (it takes ~1 s to
import, so ``cnnlab.to_onnx`` loads it on first use).
"""

from __future__ import annotations

import io
import json
import os
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .conv import resolve_padding
from .layers import Activation, Conv2D, Dense, Flatten, Pool2D
from .model import Sequential

__all__ = ["IR_VERSION", "OPSET", "onnx_bytes", "save_onnx", "to_onnx"]

# Opset 17 (ONNX 1.12, 2022) has every operator used here in its current form (Softmax over
# one axis since opset 13); IR version 8 is the one that goes with it. ONNX Runtime has run
# both since 1.12, and Netron reads them.
OPSET = 17
IR_VERSION = 8

INPUT, LOGITS, PROBABILITIES = "image", "logits", "probabilities"
BATCH = "N"

_ACTIVATION_OPS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "leaky_relu": "LeakyRelu"}


def _version():
    try:
        return version("cnnlab")
    except PackageNotFoundError:  # not installed (a source checkout): the file is still valid without it
        return ""


def _float32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _layer_nodes(i, layer, x, y, shape):
    """The node(s) computing ``layer`` (index i) from tensor x into tensor y, and their
    initializers. shape: the layer's input shape (C, H, W) or (D,), without the batch axis."""
    prefix = f"{i}"
    doc = f"layer {i}: {layer.describe()}"
    if isinstance(layer, Conv2D):
        _, H, W = shape
        top, bottom = resolve_padding(layer.padding, layer.k, layer.dilation, layer.stride, H)
        left, right = resolve_padding(layer.padding, layer.k, layer.dilation, layer.stride, W)
        w, b = f"{prefix}.w", f"{prefix}.b"
        inits = [numpy_helper.from_array(_float32(layer.params["w"]), w),
                 numpy_helper.from_array(_float32(layer.params["b"]), b)]
        node = helper.make_node("Conv", [x, w, b], [y], name=f"{prefix}_conv", doc_string=doc,
                                kernel_shape=[layer.k, layer.k], strides=[layer.stride] * 2,
                                dilations=[layer.dilation] * 2, pads=[int(top), int(left), int(bottom), int(right)],
                                group=1)
        return [node], inits
    if isinstance(layer, Pool2D):
        if layer.kind == "global_avg":
            return [helper.make_node("GlobalAveragePool", [x], [y], name=f"{prefix}_pool", doc_string=doc)], []
        if layer.kind not in ("max", "avg"):
            raise ValueError(f"cannot export layer {i} ({layer.describe()}) to ONNX: unknown pooling {layer.kind!r}")
        stride = layer.size if layer.stride is None else layer.stride
        attrs = {"kernel_shape": [layer.size] * 2, "strides": [stride] * 2, "pads": [0, 0, 0, 0], "ceil_mode": 0}
        if layer.kind == "avg":
            attrs["count_include_pad"] = 0
        op = "MaxPool" if layer.kind == "max" else "AveragePool"
        return [helper.make_node(op, [x], [y], name=f"{prefix}_pool", doc_string=doc, **attrs)], []
    if isinstance(layer, Activation):
        op = _ACTIVATION_OPS.get(layer.name)
        if op is None:
            raise ValueError(f"cannot export layer {i} ({layer.describe()}) to ONNX: unknown activation "
                             f"{layer.name!r}; known: {', '.join(_ACTIVATION_OPS)}")
        attrs = {"alpha": float(layer.alpha)} if op == "LeakyRelu" else {}
        return [helper.make_node(op, [x], [y], name=f"{prefix}_{layer.name}", doc_string=doc, **attrs)], []
    if isinstance(layer, Flatten):
        return [helper.make_node("Flatten", [x], [y], name=f"{prefix}_flatten", doc_string=doc, axis=1)], []
    if isinstance(layer, Dense):
        w, b = f"{prefix}.w", f"{prefix}.b"
        inits = [numpy_helper.from_array(_float32(layer.params["w"]), w),
                 numpy_helper.from_array(_float32(layer.params["b"]), b)]
        node = helper.make_node("Gemm", [x, w, b], [y], name=f"{prefix}_dense", doc_string=doc + " (x·W + b)",
                                alpha=1.0, beta=1.0, transA=0, transB=0)
        return [node], inits
    raise ValueError(f"cannot export layer {i} ({layer!r}, a {type(layer).__name__}) to ONNX: "
                     f"known layers are Conv2D, Pool2D, Activation, Flatten and Dense")


def to_onnx(model: Sequential, *, name: str = "cnnlab", input_shape=None) -> onnx.ModelProto:
    """``model`` as an ONNX model: input "image" (N, C, H, W), outputs "logits" and
    "probabilities" (N, K); see the module docstring for the layer mapping.

    input_shape (C, H, W): needed only when the model was built without one. The
    parameters are copied at this moment (a training that goes on changes nothing here).
    Raises ValueError for a layer (or pooling, activation) ONNX has no mapping for here,
    or a model whose last layer does not give (N, K).
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"to_onnx needs a cnnlab Sequential model; got {type(model).__name__}")
    shape = model._input_shape(input_shape)
    if len(shape) != 3:
        raise ValueError(f"the model's input must be (C, H, W); got {shape}")
    shapes = model.output_shapes(shape)
    if not model.layers or len(shapes[-1]) != 1:
        raise ValueError(f"the model must end in a (N, K) output (Flatten, Dense) to export it; "
                         f"its output is {shapes[-1] if shapes else shape} per image")
    nodes, inits, value_info = [], [], []
    x, in_shape = INPUT, shape
    for i, (layer, out_shape) in enumerate(zip(model.layers, shapes)):
        last = i == len(model.layers) - 1
        y = LOGITS if last else f"{i}.out"
        layer_nodes, layer_inits = _layer_nodes(i, layer, x, y, in_shape)
        nodes += layer_nodes
        inits += layer_inits
        if not last:
            value_info.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [BATCH, *out_shape],
                                                            doc_string=f"output of {layer.describe()}"))
        x, in_shape = y, out_shape
    K = shapes[-1][0]
    nodes.append(helper.make_node("Softmax", [LOGITS], [PROBABILITIES], name="softmax", axis=1,
                                  doc_string="q_k = e^(z_k − max z) / Σ_j e^(z_j − max z) over the classes"))
    C, H, W = shape
    image = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [BATCH, C, H, W], doc_string=(
        f"{C}×{H}×{W} images, float32; the lab's datasets hold pixels in 0..1, ink bright on a dark background"))
    logits = helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, [BATCH, K],
                                           doc_string="one score per class (the last layer's output)")
    probs = helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [BATCH, K],
                                          doc_string="softmax of the logits: each row sums to 1")
    summary = "\n".join(f"{i}: {layer.describe()} → {out}" for i, (layer, out) in enumerate(zip(model.layers, shapes)))
    graph = helper.make_graph(nodes, name, [image], [logits, probs], initializer=inits, value_info=value_info,
                              doc_string=f"CNN Lab model, input {C}×{H}×{W}, {model.n_params} parameters:\n{summary}")
    proto = helper.make_model(graph, producer_name="CNN Lab", producer_version=_version(),
                              opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              doc_string=("A convolutional network trained with CNN Lab's NumPy engine. "
                                          "Input 'image' (N, C, H, W); outputs 'logits' and 'probabilities' (N, K)."))
    onnx.helper.set_model_props(proto, {"cnnlab.spec": json.dumps(model.spec(), ensure_ascii=False),
                                        "cnnlab.layers": summary})
    return proto


def onnx_bytes(model: Sequential, *, name: str = "cnnlab", input_shape=None) -> bytes:
    """to_onnx(model) serialized: the bytes of a .onnx file."""
    return to_onnx(model, name=name, input_shape=input_shape).SerializeToString()


def save_onnx(model: Sequential, file, *, name: str = "cnnlab", input_shape=None) -> None:
    """Write to_onnx(model) to ``file``: a path, or a binary file object."""
    data = onnx_bytes(model, name=name, input_shape=input_shape)
    if isinstance(file, (str, os.PathLike)):
        with open(file, "wb") as f:
            f.write(data)
    elif isinstance(file, io.TextIOBase):
        raise TypeError("save_onnx needs a path or a binary file object (open it with 'wb')")
    else:
        file.write(data)
