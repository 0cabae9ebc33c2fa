"""The whole chain for ONE image, every intermediate kept, every number explainable.

    x (1, 8, 8) → conv 3@3×3 pad 1 → out (3, 8, 8) → ReLU → a (3, 8, 8) → max pool 2
      → pooled (3, 4, 4) → flatten → h (48,) → dense → z (10,) → softmax → q (10,)
      → cross-entropy H(p, q) against a one-hot p (the chosen true label)

and back: dz = q − p → dh → dpooled → da (max pool routes to the window's winner) →
dout (ReLU lets through where out > 0) → dw = Σ over output positions.

The weights are the lab's tiny CNN for the 8×8 digits, trained for a few epochs the first
time they are asked for (well under a second) and kept for the life of the process, then
rounded to two decimals: a student can redo every product by hand, and the rounding costs
no accuracy on the held-out digits (tests pin it). Everything is computed in float64 with
the engine's own functions (conv_forward/backward, relu, pool_forward/backward, softmax,
cross_entropy), so the page shows what the engine computes.

    run(x, target)                       -> Pipeline (every array, forward and backward)
    explain_conv / explain_relu / explain_pool / explain_logit / explain_prob / explain_loss
    weight_gradient(p, f, c, i, j)       -> WeightGradient (∂L/∂w as a sum over positions)
    updates(p, f, c, i, j, lr)           -> (SGD explain dict, Adam explain dict), one step each
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from . import numfmt
from .activations import relu_backward, relu_forward
from .conv import conv_backward, conv_forward, conv_step, format_factor, format_number
from .datasets import load
from .losses import cross_entropy, cross_entropy_terms, softmax
from .model import tiny_cnn
from .optim import SGD, Adam
from .pool import pool_backward, pool_forward, pool_step
from .train import train

__all__ = [
    "CLASSES",
    "FILTERS",
    "KERNEL",
    "LOGIT_TERMS_SHOWN",
    "PADDING",
    "POOL",
    "GradientTerm",
    "LogitExplanation",
    "Pipeline",
    "ProbExplanation",
    "WeightGradient",
    "Weights",
    "digit_image",
    "explain_conv",
    "explain_logit",
    "explain_loss",
    "explain_pool",
    "explain_prob",
    "explain_relu",
    "pretrained_weights",
    "run",
    "updates",
    "weight_gradient",
]

DOT = "\u00b7"

# Three 3×3 filters: few enough that every feature map fits on a screen next to the others.
FILTERS, KERNEL, PADDING, POOL, CLASSES = 3, 3, 1, 2, 10
TRAIN = {"epochs": 4, "batch_size": 32, "lr_decay": 0.8, "seed": 0, "lr": 0.02}
DECIMALS = 2
# A dense dot product has 48 terms; the explanation writes out the largest ones.
LOGIT_TERMS_SHOWN = 6


@dataclass(frozen=True)
class Weights:
    """w (F, 1, 3, 3), b (F,): the conv layer; dense_w (D, K), dense_b (K,) with D = F·4·4.
    float64, read-only. test_accuracy: the rounded model's share of held-out digits right."""

    w: np.ndarray
    b: np.ndarray
    dense_w: np.ndarray
    dense_b: np.ndarray
    test_accuracy: float


def _frozen(a, decimals=None):
    a = np.array(a, dtype=np.float64)
    if decimals is not None:
        # Rounded again in float64: float32's 0.94 is 0.9399999976 in float64.
        np.round(a, decimals, out=a)
    a.flags.writeable = False
    return a


@functools.cache
def pretrained_weights() -> Weights:
    """Train the digits CNN (conv 3@3×3 → relu → max 2 → dense 10) once per process and
    round its weights to DECIMALS places (see the module docstring for why)."""
    ds = load("digits")
    model = tiny_cnn(input_shape=ds.image_shape, filters=FILTERS, kernel=KERNEL, padding=PADDING,
                     pool="max", pool_size=POOL, classes=CLASSES, seed=0)
    optimizer = Adam(lr=TRAIN["lr"])
    for _record in train(model, ds, optimizer, epochs=TRAIN["epochs"], batch_size=TRAIN["batch_size"],
                         seed=TRAIN["seed"], lr_decay=TRAIN["lr_decay"]):
        pass
    np.round(model.flat_params, DECIMALS, out=model.flat_params)
    conv, dense = model.layers[0], model.layers[-1]
    logits = model.forward(ds.x_test, train=False)
    accuracy = float(np.mean(logits.argmax(axis=1) == ds.y_test))
    return Weights(w=_frozen(conv.params["w"], DECIMALS), b=_frozen(conv.params["b"], DECIMALS),
                   dense_w=_frozen(dense.params["w"], DECIMALS), dense_b=_frozen(dense.params["b"], DECIMALS),
                   test_accuracy=accuracy)


def digit_image(index: int) -> tuple[np.ndarray, int]:
    """Held-out digit ``index`` of the digits test split: x (1, 8, 8) float64 in [0, 1], its label."""
    ds = load("digits")
    N = len(ds.y_test)
    if not 0 <= index < N:
        raise ValueError(f"index must be in 0..{N - 1}; got {index}")
    return _frozen(ds.x_test[index]), int(ds.y_test[index])


@dataclass(frozen=True)
class Pipeline:
    """One image through the network, forward and backward. Shapes (F = 3, K = 10):

    x (1, 8, 8); target: the true class (p is its one-hot); weights: Weights.
    out (F, 8, 8) conv output, a (F, 8, 8) after ReLU, pooled (F, 4, 4), h (48,) flattened,
    z (K,) logits, q (K,) softmax, loss: H(p, q).
    dz (K,) = q − p; dh (48,); dpooled (F, 4, 4); da (F, 8, 8); dout (F, 8, 8) = ∂L/∂out;
    dw (F, 1, 3, 3), db (F,): the conv layer's gradients (conv_backward).
    """

    x: np.ndarray
    target: int
    weights: Weights
    out: np.ndarray
    a: np.ndarray
    pooled: np.ndarray
    h: np.ndarray
    z: np.ndarray
    q: np.ndarray
    loss: float
    dz: np.ndarray
    dh: np.ndarray
    dpooled: np.ndarray
    da: np.ndarray
    dout: np.ndarray
    dw: np.ndarray
    db: np.ndarray

    @property
    def p(self) -> np.ndarray:
        onehot = np.zeros(len(self.z))
        onehot[self.target] = 1.0
        return onehot

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.q))


def run(x, target, weights: Weights | None = None) -> Pipeline:
    """Forward and backward of one image x (1, H, W) (or (H, W)) against class ``target``."""
    weights = weights or pretrained_weights()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.shape != (weights.w.shape[1], 8, 8):
        raise ValueError(f"x must be one 8×8 digit of shape (1, 8, 8); got {x.shape}")
    K = weights.dense_b.shape[0]
    if not 0 <= int(target) < K:
        raise ValueError(f"target must be in 0..{K - 1}; got {target}")
    target = int(target)
    out, conv_cache = conv_forward(x[None], weights.w, weights.b, padding=PADDING)
    a, relu_cache = relu_forward(out)
    pooled, pool_cache = pool_forward(a, "max", POOL)
    h = pooled.reshape(-1)
    z = h @ weights.dense_w + weights.dense_b
    q = softmax(z)
    loss, dz = cross_entropy(z, target)
    dh = weights.dense_w @ dz
    dpooled = dh.reshape(pooled.shape)
    da = pool_backward(dpooled, pool_cache)
    dout = relu_backward(da, relu_cache)
    _dx, dw, db = conv_backward(dout, conv_cache)
    return Pipeline(x=_frozen(x), target=target, weights=weights, out=_frozen(out[0]), a=_frozen(a[0]),
                    pooled=_frozen(pooled[0]), h=_frozen(h), z=_frozen(z), q=_frozen(q), loss=float(loss),
                    dz=_frozen(dz), dh=_frozen(dh), dpooled=_frozen(dpooled[0]), da=_frozen(da[0]),
                    dout=_frozen(dout[0]), dw=_frozen(dw), db=_frozen(db))


# ---------------------------------------------------------------------------
# Explaining one number
# ---------------------------------------------------------------------------

def explain_conv(p: Pipeline, f: int, row: int, col: int):
    """The conv output out[f, row, col] as its dot product (a core.conv.ConvStep)."""
    return conv_step(p.x, p.weights.w, p.weights.b, padding=PADDING, position=(f, row, col))


def explain_relu(p: Pipeline, f: int, row: int, col: int) -> str:
    """``max(0, −0.31) = 0``: the ReLU of out[f, row, col] (``max(0; −0,31)`` where the
    decimal mark is a comma)."""
    v, r = p.out[f, row, col], p.a[f, row, col]
    return f"max(0{numfmt.list_separator([v])}{format_number(v)}) = {format_number(r)}"


def explain_pool(p: Pipeline, f: int, row: int, col: int):
    """pooled[f, row, col] as the maximum of its window (a core.pool.PoolStep)."""
    return pool_step(p.a, "max", POOL, position=(f, row, col))


@dataclass(frozen=True)
class LogitExplanation:
    """z[k] = Σ_i h[i]·W[i, k] + b[k]. terms: (i, h[i], W[i, k], product) for all D inputs;
    shown: the LOGIT_TERMS_SHOWN largest |product| in input order; rest: the sum of the
    others; text: the shown terms, "…" and the bias, with the full sum's value."""

    k: int
    terms: list
    shown: list
    rest: float
    hidden: int
    bias: float
    value: float
    text: str


def explain_logit(p: Pipeline, k: int) -> LogitExplanation:
    w, b = p.weights.dense_w, p.weights.dense_b
    terms = [(i, float(p.h[i]), float(w[i, k]), float(p.h[i] * w[i, k])) for i in range(len(p.h))]
    biggest = set(sorted(range(len(terms)), key=lambda i: -abs(terms[i][3]))[:LOGIT_TERMS_SHOWN])
    shown = [terms[i] for i in sorted(biggest)]
    rest = math.fsum(t[3] for t in terms if t[0] not in biggest)
    hidden = len(terms) - len(shown)
    parts = [f"{format_factor(hi)}{DOT}{format_factor(wi)}" for _i, hi, wi, _prod in shown]
    if hidden:
        parts.append("…")
    parts.append(format_factor(float(b[k])))
    value = float(p.z[k])
    return LogitExplanation(k=k, terms=terms, shown=shown, rest=rest, hidden=hidden, bias=float(b[k]),
                            value=value, text=f"{' + '.join(parts)} = {format_number(value)}")


@dataclass(frozen=True)
class ProbExplanation:
    """q[k] = e^{z_k} / Σ_j e^{z_j}. exps: e^{z_j} for every class (the logits here are far
    from overflow; the engine's softmax subtracts max z first, which cancels in the ratio);
    total: their sum; text: ``e^{2.31} / (e^{…} + …) = 10.07 / 15.21 = 0.6621``."""

    k: int
    exps: list
    total: float
    value: float
    text: str


def explain_prob(p: Pipeline, k: int) -> ProbExplanation:
    exps = [math.exp(float(z)) for z in p.z]
    total = math.fsum(exps)
    denominator = " + ".join(f"e^{format_factor(float(z))}" for z in p.z)
    value = float(p.q[k])
    text = (f"e^{format_factor(float(p.z[k]))} / ({denominator}) = {format_number(exps[k])} / "
            f"{format_number(total)} = {format_number(value)}")
    return ProbExplanation(k=k, exps=exps, total=total, value=value, text=text)


def explain_loss(p: Pipeline):
    """H(p, q) = −Σ p(x) log q(x) class by class (core.losses.CrossEntropyTerms)."""
    return cross_entropy_terms(p.z, p.target, digits=4)


# ---------------------------------------------------------------------------
# Backprop to one kernel weight, and one update of it
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GradientTerm:
    """One output position (row, col) where weight w[f, c, i, j] was used: the gradient
    arriving there (∂L/∂out[f, row, col]) times the input under the weight, x[c, row+i−P,
    col+j−P] (0 in the padding; in_row/in_col in unpadded coordinates)."""

    row: int
    col: int
    grad: float
    in_row: int
    in_col: int
    padding: bool
    input: float
    product: float


@dataclass(frozen=True)
class WeightGradient:
    """∂L/∂w[f, c, i, j] = Σ_(row, col) ∂L/∂out[f, row, col] · x[c, row+i−P, col+j−P].

    terms: Ho·Wo GradientTerms (every position: parameter sharing); nonzero: those whose
    product is not 0; value: their sum (equals conv_backward's dw[f, c, i, j]); text: the
    nonzero terms written out, ``= total``."""

    f: int
    c: int
    i: int
    j: int
    weight: float
    terms: list
    nonzero: list
    value: float
    text: str


def weight_gradient(p: Pipeline, f: int, c: int, i: int, j: int) -> WeightGradient:
    F, C, HH, WW = p.weights.w.shape
    if not (0 <= f < F and 0 <= c < C and 0 <= i < HH and 0 <= j < WW):
        raise ValueError(f"weight {(f, c, i, j)} is outside w of shape {(F, C, HH, WW)}")
    _F, Ho, Wo = p.dout.shape
    _C, H, W = p.x.shape
    terms = []
    for row in range(Ho):
        for col in range(Wo):
            r, q = row + i - PADDING, col + j - PADDING
            inside = 0 <= r < H and 0 <= q < W
            value = float(p.x[c, r, q]) if inside else 0.0
            g = float(p.dout[f, row, col])
            terms.append(GradientTerm(row, col, g, r, q, not inside, value, g * value))
    nonzero = [t for t in terms if t.product != 0]
    total = math.fsum(t.product for t in terms)
    written = " + ".join(f"{format_factor(t.grad)}{DOT}{format_factor(t.input)}" for t in nonzero) or "0"
    return WeightGradient(f=f, c=c, i=i, j=j, weight=float(p.weights.w[f, c, i, j]), terms=terms,
                          nonzero=nonzero, value=total, text=f"{written} = {format_number(total)}")


def updates(p: Pipeline, f: int, c: int, i: int, j: int, lr: float) -> tuple[dict, dict]:
    """One SGD step and one Adam step (fresh state, t = 1) on the conv weights with the
    pipeline's gradient, both with learning rate ``lr``; each optimizer's explain() of
    element (f, c, i, j): g, old, new, and Adam's m, v, m̂, v̂, step."""
    explained = []
    for optimizer in (SGD(lr), Adam(lr)):
        w = np.array(p.weights.w)
        optimizer.step([("w", w, np.array(p.dw))])
        explained.append(optimizer.explain("w", (f, c, i, j)))
    return explained[0], explained[1]
