"""Why did the network answer that? Saliency, gradient × input and Grad-CAM.

For one image x (1, C, H, W) and a class k, the class's score is its logit
z_k = model(x)[0, k] (before the softmax: the softmax of one class also depends on the
others, the logit is the class's own evidence).

    saliency(x)[i, j]             = max_c |∂z_k/∂x[c, i, j]|         (Simonyan et al., 2013)
    gradient_times_input(x)[i, j] = Σ_c x[c, i, j] · ∂z_k/∂x[c, i, j]
    grad_cam:  A = the output of a layer (F, h, w), by default the last Conv2D's activation,
               α_f = (1 / (h·w)) · Σ_ij ∂z_k/∂A_f[i, j]                (Selvaraju et al., 2017)
               map = relu(Σ_f α_f · A_f)  (h, w), stretched to (H, W) bilinearly

Everything here runs the model's layers ONE BY ONE in their declared order, with
train=True (to keep the caches backward needs), and backpropagates through them in
reverse. core.model.Sequential.forward computes relu → max-pool as pool-then-relu (the same
numbers, see its docstring), so the relu's own output, Grad-CAM's A, exists only when the
layers run in the declared order.

The functions change the layers' caches and gradient buffers: pass a COPY of a model that
is training (app/jobs/use.py ``_snapshot``), never the live one. In float64 (model.astype)
the gradients agree with central differences to ~1e-8.
"""

from __future__ import annotations

import numpy as np

from .layers import Activation, Conv2D
from .losses import softmax

__all__ = [
    "METHODS",
    "central_difference",
    "class_score_gradient",
    "grad_cam",
    "grad_cam_layer",
    "gradient_times_input",
    "gradient_times_input_of",
    "probabilities",
    "saliency",
    "saliency_of",
    "scores",
    "upsample_bilinear",
]

METHODS = ("saliency", "gradient_input", "grad_cam")


# ---------------------------------------------------------------------------
# Forward and backward, layer by layer
# ---------------------------------------------------------------------------

def _check(x):
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"explanations take one image x of shape (1, C, H, W); got {x.shape}")


def _check_class(logits, k):
    K = logits.shape[1]
    if not 0 <= int(k) < K:
        raise ValueError(f"class {k} is not one of the model's classes 0..{K - 1}")


def _forward(model, x, keep=None):
    """Run the layers in declared order with train=True: logits (1, K), and a copy of layer
    ``keep``'s output (layers may reuse their output buffers, so it is copied)."""
    kept = None
    for i, layer in enumerate(model.layers):
        x = layer.forward(x, train=True)
        if i == keep:
            kept = np.array(x, copy=True)
    return x, kept


def _backward(model, k, logits, stop=-1):
    """Backpropagate d z_k: returns the gradient with respect to the OUTPUT of layer ``stop``
    (stop=-1: the input x)."""
    d = np.zeros_like(logits)
    d[0, int(k)] = 1
    for i in range(len(model.layers) - 1, stop, -1):
        d = model.layers[i].backward(d, need_dx=True)
    return np.array(d, copy=True)


def scores(model, x):
    """The logits z (K,) for one image x (1, C, H, W) (no caches kept)."""
    return model.forward(x, train=False)[0]


def class_score_gradient(model, x, k):
    """(score, dx): z_k for the image x (1, C, H, W) and ∂z_k/∂x, shape (1, C, H, W)."""
    _check(x)
    logits, _ = _forward(model, x)
    _check_class(logits, k)
    dx = _backward(model, k, logits)
    return float(logits[0, int(k)]), dx


def saliency(model, x, k):
    """|∂z_k/∂x| (H, W): the largest over the input's channels."""
    _score, dx = class_score_gradient(model, x, k)
    return saliency_of(dx)


def gradient_times_input(model, x, k):
    """Σ_c x · ∂z_k/∂x (H, W): signed, what each pixel's own value adds along the gradient."""
    _score, dx = class_score_gradient(model, x, k)
    return gradient_times_input_of(x, dx)


def saliency_of(dx):
    """saliency's map from a gradient dx (1, C, H, W) already computed."""
    return np.abs(dx[0]).max(axis=0)


def gradient_times_input_of(x, dx):
    """gradient_times_input's map from the image x and its gradient dx, both (1, C, H, W)."""
    return (dx[0] * x[0]).sum(axis=0)


# ---------------------------------------------------------------------------
# Grad-CAM
# ---------------------------------------------------------------------------

def grad_cam_layer(model):
    """The default Grad-CAM layer: the activation right after the last Conv2D (or the
    Conv2D itself when no activation follows it)."""
    convs = [i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2D)]
    if not convs:
        raise ValueError("Grad-CAM needs a model with a Conv2D layer")
    i = convs[-1]
    if i + 1 < len(model.layers) and isinstance(model.layers[i + 1], Activation):
        return i + 1
    return i


def upsample_bilinear(a, H, W):
    """(h, w) -> (H, W) by bilinear interpolation between cell centres (half-pixel
    centres, clamped at the edges: torch's interpolate(mode="bilinear", align_corners=False))."""
    a = np.asarray(a, dtype=np.float64)
    h, w = a.shape

    def weights(n_out, n_in):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, None)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        t = src - i0
        m = np.zeros((n_out, n_in))
        np.add.at(m, (np.arange(n_out), i0), 1 - t)
        np.add.at(m, (np.arange(n_out), i1), t)
        return m

    return weights(H, h) @ a @ weights(W, w).T


def grad_cam(model, x, k, layer=None):
    """Grad-CAM of class k for the image x (1, C, H, W) on the output A (F, h, w) of ``layer``
    (default: grad_cam_layer(model)).

    Returns {"layer": index, "score": z_k, "activations": A (F, h, w),
    "gradients": ∂z_k/∂A (F, h, w), "weights": α (F,), "sum": Σ_f α_f A_f (h, w),
    "map": relu of it (h, w), "upsampled": map stretched to (H, W)}.
    """
    _check(x)
    layer = grad_cam_layer(model) if layer is None else int(layer)
    if not 0 <= layer < len(model.layers) - 1:
        raise ValueError(f"Grad-CAM's layer must be one of 0..{len(model.layers) - 2}; got {layer}")
    logits, A = _forward(model, x, keep=layer)
    _check_class(logits, k)
    if A.ndim != 4:
        raise ValueError(f"Grad-CAM needs a layer with feature maps (F, h, w); layer {layer} gives {A.shape[1:]}")
    dA = _backward(model, k, logits, stop=layer)[0]
    A = A[0]
    alpha = dA.mean(axis=(1, 2))
    total = np.tensordot(alpha, A, axes=1)
    cam = np.maximum(total, 0)
    return {"layer": layer, "score": float(logits[0, int(k)]), "activations": A, "gradients": dA,
            "weights": alpha, "sum": total, "map": cam, "upsampled": upsample_bilinear(cam, x.shape[2], x.shape[3])}


# ---------------------------------------------------------------------------
# The check a student can do by hand
# ---------------------------------------------------------------------------

def central_difference(model, x, k, c, i, j, h=1e-3):
    """∂z_k/∂x[c, i, j] estimated as (z_k(x + h·e) − z_k(x − h·e)) / 2h, e the unit image at
    (c, i, j). Returns {"h", "score": z_k(x), "plus", "minus", "estimate", "right": (plus −
    score)/h, "left": (score − minus)/h}. Use a float64 model: in float32 the difference of
    two nearby scores loses most of its digits.

    Where the score has a kink at x the one-sided slopes differ and no derivative exists: a
    max-pooling window whose largest values tie (equal cells, as on a blank background: the
    pixel then decides which cell wins), or a ReLU input at exactly 0. Backpropagation then
    gives one choice of slope (the window's first maximum, as PyTorch), the central
    difference the mean of the two sides.
    """
    xp = np.array(x, copy=True)
    xp[0, c, i, j] += h
    xm = np.array(x, copy=True)
    xm[0, c, i, j] -= h
    score = float(scores(model, x)[int(k)])
    plus = float(scores(model, xp)[int(k)])
    minus = float(scores(model, xm)[int(k)])
    return {"h": h, "score": score, "plus": plus, "minus": minus, "estimate": (plus - minus) / (2 * h),
            "right": (plus - score) / h, "left": (score - minus) / h}


def probabilities(model, x):
    """softmax of the logits (K,) for one image, float64."""
    return softmax(scores(model, x).astype(np.float64))
