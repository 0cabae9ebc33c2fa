"""CNN Lab's engine: convolutional neural networks in plain NumPy, every number inspectable.

    >>> import numpy as np
    >>> import cnnlab
    >>> x = np.array(cnnlab.SEED_INPUT, dtype=float)    # the slides' 5×5 example, (H, W)
    >>> w = np.array(cnnlab.SEED_KERNEL, dtype=float)   # its 3×3 kernel
    >>> out, cache = cnnlab.conv_forward(x[None, None], w[None, None], np.zeros(1))
    >>> out[0, 0, 0, :2].tolist()
    [78.0, 87.0]
    >>> cnnlab.conv_step(x, w, step=1).text            # one output position, term by term
    '40·(−2) + 41·(−1) + 45·0 + 40·(−1) + 42·1 + 46·1 + 46·0 + 50·1 + 55·2 = 87'
    >>> data = cnnlab.load_dataset("digits")           # 8×8 digits, shipped with the package
    >>> model = cnnlab.tiny_cnn(input_shape=data.x_train.shape[1:])
    >>> progress = list(cnnlab.train(model, data, cnnlab.Adam(lr=0.01), epochs=2, batch_size=32, seed=0))
    >>> cnnlab.evaluate(model, data.x_test, data.y_test).accuracy > 0.8
    True

The names below are the library's API (README, "The engine as a library"); the modules behind
them are ``cnnlab.core.*`` (conv, pool, activations, losses, layers, model, optim, train,
datasets, kernels, pipeline). The web app is ``cnnlab.app``; ``cnnlab`` on the command line
serves it, trains (``cnnlab train``) and writes notebooks (``cnnlab notebook``).
"""

from cnnlab.core.activations import ACTIVATIONS, get_activation
from cnnlab.core.conv import (conv_backward, conv_forward, conv_forward_naive, conv_step, conv_step_count,
                              output_size)
from cnnlab.core.datasets import Dataset
from cnnlab.core.datasets import load as load_dataset
from cnnlab.core.kernels import PRESETS, SEED_INPUT, SEED_KERNEL, preset
from cnnlab.core.layers import Activation, Conv2D, Dense, Flatten, Pool2D
from cnnlab.core.losses import cross_entropy, log_softmax, softmax
from cnnlab.core.model import Sequential, load_model, tiny_cnn
from cnnlab.core.optim import SGD, Adam, Momentum, make_optimizer
from cnnlab.core.pool import pool_backward, pool_forward, pool_forward_naive, pool_step, pool_step_count
from cnnlab.core.train import evaluate, train

__all__ = [
    "ACTIVATIONS", "get_activation",
    "conv_forward", "conv_forward_naive", "conv_backward", "conv_step", "conv_step_count", "output_size",
    "pool_forward", "pool_forward_naive", "pool_backward", "pool_step", "pool_step_count",
    "softmax", "log_softmax", "cross_entropy",
    "Conv2D", "Pool2D", "Activation", "Flatten", "Dense", "Sequential", "tiny_cnn", "load_model",
    "SGD", "Momentum", "Adam", "make_optimizer", "train", "evaluate",
    "Dataset", "load_dataset", "PRESETS", "SEED_INPUT", "SEED_KERNEL", "preset",
    "to_onnx", "save_onnx",
]


def __getattr__(name):
    # cnnlab.to_onnx / cnnlab.save_onnx (core.onnx_export) load the onnx package, ~1 s to
    # import, only when first used.
    if name in ("to_onnx", "save_onnx"):
        from cnnlab.core import onnx_export
        return getattr(onnx_export, name)
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
