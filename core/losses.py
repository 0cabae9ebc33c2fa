"""Softmax and cross-entropy, the loss of the slides:

    H(p, q) = −Σ_{x ∈ classes} p(x) · log q(x)

p is the true distribution (one-hot for a label, or any probability vector) and
q = softmax(logits) is the model's prediction. The loss is computed from the
logits through log-softmax, log q = z − max(z) − log Σ e^(z − max(z)), so no
exponential overflows and log(0) is never taken, even for logits like ±1000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import numfmt

__all__ = [
    "softmax",
    "log_softmax",
    "cross_entropy",
    "CrossEntropyTerm",
    "CrossEntropyTerms",
    "cross_entropy_terms",
]


def softmax(logits):
    """q_k = e^(z_k − max z) / Σ_j e^(z_j − max z) along the last axis.

    logits: (K,) or (N, K). Returns q: the same shape and dtype, each row sums to 1.
    Subtracting the row maximum changes nothing mathematically (it cancels in the
    ratio) but keeps every exponent ≤ 0, so e^(...) ≤ 1 never overflows.
    """
    z = np.asarray(logits)
    if not np.issubdtype(z.dtype, np.floating):
        z = z.astype(np.float64)
    e = z - z.max(axis=-1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def log_softmax(logits):
    """log q_k = (z_k − max z) − log Σ_j e^(z_j − max z) along the last axis.

    logits: (K,) or (N, K). Returns log q: the same shape and dtype, every entry
    finite for finite logits (the largest logit's term is log(1 + small) ≥ 0 inside
    the log, so the sum is ≥ 1 and its log never hits log(0)).
    """
    z = np.asarray(logits)
    if not np.issubdtype(z.dtype, np.floating):
        z = z.astype(np.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _target_as_probabilities(target, N, K, dtype):
    """Integer labels (N,) become one-hot rows; a (N, K) matrix is checked and returned.

    Returns (p, labels): p is (N, K) or None when labels are given (the label path
    never builds the one-hot matrix: it only indexes), labels is (N,) int or None.
    """
    t = np.asarray(target)
    if t.dtype.kind in "iu" and t.shape == (N,):
        # Seen as unsigned, a negative label is huge: one max() checks both ends.
        unsigned = t.view(np.dtype(f"u{t.itemsize}")) if t.dtype.kind == "i" else t
        if N and unsigned.max() >= K:
            raise ValueError(f"labels must be in 0..{K - 1} for {K} classes; got {t.min()}..{t.max()}")
        return None, t
    if t.shape == (N, K):
        return t.astype(dtype, copy=False), None
    raise ValueError(
        f"target must be integer labels of shape ({N},) or probabilities of shape ({N}, {K}); "
        f"got {t.dtype} array of shape {t.shape}"
    )


def cross_entropy(logits, target):
    """Mean cross-entropy H(p, softmax(logits)) over the batch, and its gradient.

    logits: (N, K) scores, or (K,) for a single example.
    target: integer labels (N,) (a scalar int for a (K,) logit vector) or a
            probability / one-hot matrix p (N, K) ((K,) for a single example).
    Returns (loss, dlogits): loss a Python float,
            loss = (1/N) Σ_n −Σ_k p_nk · log q_nk,
            dlogits = (q − p) / N, the logits' shape and dtype.
    """
    z = np.asarray(logits)
    single = z.ndim == 1
    if single:
        z = z[None, :]
        t = np.asarray(target)
        target = t[None] if t.ndim == 0 or t.shape == (z.shape[1],) else t
    if z.ndim != 2:
        raise ValueError(f"logits must have shape (N, K) or (K,); got shape {np.shape(logits)}")
    N, K = z.shape
    if z.dtype.kind != "f":
        z = z.astype(np.float64)
    p, labels = _target_as_probabilities(target, N, K, z.dtype)

    # Softmax and log-softmax from one exponential: q = e / s, log q = shifted − log s.
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    dlogits = e
    dlogits /= s
    log_s = np.log(s)
    if labels is not None:
        # Only log q at the labels is needed: Σ_n log q[n, y_n] = Σ_n shifted[n, y_n] − Σ_n log s_n.
        rows = np.arange(N)
        picked = shifted[rows, labels]
        loss = (float(log_s.sum()) - float(picked.sum())) / N
        dlogits[rows, labels] -= 1
    else:
        # p·log q with p = 0 contributes exactly 0 because log q is always finite.
        shifted -= log_s
        loss = -float(np.einsum("nk,nk->", p, shifted, dtype=np.float64)) / N
        dlogits -= p
    dlogits /= N
    return loss, (dlogits[0] if single else dlogits)


# ---------------------------------------------------------------------------
# The terms of −Σ p log q, for a page to write out
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CrossEntropyTerm:
    """One class's share of H(p, q): term = −p · log q."""

    cls: int
    logit: float
    p: float
    q: float
    log_q: float
    term: float


@dataclass(frozen=True)
class CrossEntropyTerms:
    """H(p, q) for one example, class by class.

    terms: K CrossEntropyTerm; loss: their sum; text: the sum written out, e.g.
    ``−(0·ln 0.02 + 1·ln 0.91 + 0·ln 0.07) = 0.094`` (U+00B7 middle dot, U+2212 minus).
    """

    terms: list
    loss: float
    text: str


def _fmt(v, digits):
    """A number for the written-out sum: integers without ".0", the rest to ``digits``
    significant digits (core.numfmt: rounded half up, the page's decimal mark, U+2212 minus)."""
    if float(v).is_integer():
        return numfmt.fixed(v, 0)
    return numfmt.significant(v, digits)


def cross_entropy_terms(logits, target, digits=3):
    """The per-class terms of H(p, q) = −Σ_k p_k log q_k for ONE example.

    logits: (K,). target: an int label or a probability vector p (K,).
    Returns CrossEntropyTerms whose loss equals cross_entropy(logits, target)[0].
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 1:
        raise ValueError(f"cross_entropy_terms takes one example's logits of shape (K,); got {z.shape}")
    (K,) = z.shape
    t = np.asarray(target)
    if t.ndim == 0:
        label = int(t)
        if not 0 <= label < K:
            raise ValueError(f"label must be in 0..{K - 1} for {K} classes; got {label}")
        p = np.zeros(K)
        p[label] = 1.0
    elif t.shape == (K,):
        p = t.astype(np.float64)
    else:
        raise ValueError(f"target must be an int label or probabilities of shape ({K},); got shape {t.shape}")

    log_q = log_softmax(z)
    q = np.exp(log_q)
    terms = [
        CrossEntropyTerm(cls=k, logit=float(z[k]), p=float(p[k]), q=float(q[k]),
                         log_q=float(log_q[k]), term=float(-p[k] * log_q[k]) + 0.0)
        for k in range(K)
    ]
    loss = math.fsum(term.term for term in terms)
    # ln, not log: the loss uses the natural logarithm, and a calculator's "log" key is base 10
    inner = " + ".join(f"{_fmt(term.p, digits)}\u00b7ln {_fmt(term.q, digits)}" for term in terms)
    text = f"\u2212({inner}) = {_fmt(loss, digits)}"
    return CrossEntropyTerms(terms=terms, loss=loss, text=text)
