"""Optimizers: the only code that changes parameters.

    opt.step(params_and_grads)   params_and_grads: iterable of (name, param, grad),
                                 e.g. model.parameters(); each param is updated in place.
    opt.explain(name, index)     the numbers of the last update of ONE element, as a dict,
                                 so a page can write the update out.

The update rules, for every element w with gradient g at step t = 1, 2, ...:

    SGD        w ← w − lr·g
    Momentum   v ← μ·v − lr·g ;  w ← w + v               (v starts at 0; the "classic"
               form with the learning rate inside v, as in CS231n; PyTorch puts lr outside)
    Adam       m ← β1·m + (1 − β1)·g ;  v ← β2·v + (1 − β2)·g²       (m, v start at 0)
               m̂ = m / (1 − β1^t) ;  v̂ = v / (1 − β2^t)               (bias correction)
               w ← w − lr·m̂ / (√v̂ + ε)

L2 weight decay (``weight_decay`` = λ > 0, every rule): the rule above runs on
g + λ·w instead of g for the weights of convolution and dense layers (parameters named
"….w"; biases, "….b", are not decayed), i.e. on the gradient of the loss plus λ/2·Σw².
This is L2 regularisation as torch.optim's ``weight_decay`` (added to the gradient before
momentum / Adam's moments), not AdamW's decoupled decay. ``penalty(params)`` is λ/2·Σw².

When the triples are views of one flat buffer (model.parameters() provides
``flat_params``/``flat_grads``) the update runs once over the whole buffer; the
result is the same, element for element, as updating array by array.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "OPTIMIZERS", "decays", "make_optimizer"]


def decays(name):
    """Whether weight decay applies to parameter ``name``: weights ("0.w"), not biases ("0.b")."""
    return str(name).rsplit(".", 1)[-1] == "w"


class Optimizer(ABC):
    """Shared bookkeeping: the step counter, per-array state, and what explain() reads."""

    name = "optimizer"

    def __init__(self, lr, weight_decay=0.0):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0; got {lr}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be ≥ 0; got {weight_decay}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.t = 0
        self._last_lr = self.lr         # the lr of the last update (a schedule may change self.lr)
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self._layout_of = None          # the params_and_grads object the layout was built for
        self._slots = []                # (key, param, grad): what step() actually updates
        self._where: dict[str, tuple] = {}   # name -> (key, offset, shape) for explain()
        self._decay: dict[str, tuple] = {}   # key -> (mask or 0/1, scratch): weight decay's g + λ·w

    # -- layout ------------------------------------------------------------

    def _layout(self, params_and_grads):
        if params_and_grads is self._layout_of:
            return
        triples = list(params_and_grads)
        flat_p = getattr(params_and_grads, "flat_params", None)
        flat_g = getattr(params_and_grads, "flat_grads", None)
        if flat_p is not None and flat_g is not None:
            # The model already keeps params/grads in one buffer; update that buffer.
            self._slots = [("*", flat_p, flat_g)]
            base = flat_p.__array_interface__["data"][0]
            self._where = {name: ("*", (p.__array_interface__["data"][0] - base) // p.itemsize, p.shape)
                           for name, p, _ in triples}
            if self.weight_decay:
                mask = np.zeros_like(flat_p)
                for name, p, _ in triples:
                    if decays(name):
                        offset = self._where[name][1]
                        mask[offset:offset + p.size] = 1
                self._decay = {"*": (mask, np.empty_like(flat_p))}
        else:
            self._slots = [(name, p, g) for name, p, g in triples]
            self._where = {name: (name, 0, p.shape) for name, p, _ in triples}
            if self.weight_decay:
                self._decay = {name: (None, np.empty_like(p)) for name, p, _ in triples if decays(name)}
        # Only a re-usable container (model.parameters() returns the same object each
        # time) can be recognised next step; a generator is laid out afresh every step.
        self._layout_of = params_and_grads if isinstance(params_and_grads, tuple) else None

    def _buffers(self, key, p, names):
        """State arrays for slot ``key``, created as zeros the first time (or if p's shape changed)."""
        st = self.state.get(key)
        if st is None or st["old"].shape != p.shape or st["old"].dtype != p.dtype:
            st = {n: np.zeros_like(p) for n in names}
            self.state[key] = st
        return st

    def step(self, params_and_grads):
        """One update of every (name, param, grad); params change in place, grads are only read."""
        self._layout(params_and_grads)
        self.t += 1
        self._last_lr = self.lr
        for key, p, g in self._slots:
            if self.weight_decay and key in self._decay:
                mask, g_decayed = self._decay[key]
                if g_decayed.shape != p.shape or g_decayed.dtype != p.dtype:
                    raise ValueError("the parameters changed shape: make a new optimizer")
                # g + λ·w (only where the mask is 1): the gradient of loss + λ/2·Σw²
                np.multiply(p, self.weight_decay, out=g_decayed)
                if mask is not None:
                    g_decayed *= mask
                g_decayed += g
                g = g_decayed
            self._update(key, p, g)

    def penalty(self, params_and_grads):
        """λ/2·Σw² over the decayed weights (0.0 without weight decay): what the decay adds to the loss."""
        if not self.weight_decay:
            return 0.0
        total = sum(float(np.dot(p.reshape(-1), p.reshape(-1))) for name, p, _ in params_and_grads if decays(name))
        return 0.5 * self.weight_decay * total

    @abstractmethod
    def _update(self, key, p, g):
        """Apply this rule to one parameter slot, in place."""

    # -- explain -----------------------------------------------------------

    def explain(self, name, index):
        """The last update of element ``index`` of parameter ``name``.

        index: an int (flat, row-major) or a tuple into the parameter's shape.
        Always has: optimizer, name, index (tuple), t, lr, g (the gradient used), old (the
        value before), new (the value after); plus each rule's own terms: SGD and Adam
        report ``step`` (new = old − step), Momentum reports v_prev and v (new = old + v).
        """
        if self.t == 0:
            raise ValueError("no update yet: call step() first")
        try:
            key, offset, shape = self._where[name]
        except KeyError:
            raise ValueError(f"unknown parameter {name!r}; known: {', '.join(self._where)}") from None
        try:
            idx = np.unravel_index(index, shape) if np.ndim(index) == 0 else tuple(index)
            flat = offset + int(np.ravel_multi_index(idx, shape))
        except (ValueError, TypeError):
            raise ValueError(f"index {index} is out of range for {name!r} of shape {shape}") from None
        st = self.state[key]
        values = {k: float(a.reshape(-1)[flat]) for k, a in st.items()}
        param = next(p for k, p, _ in self._slots if k == key)
        info = {"optimizer": self.name, "name": name, "index": tuple(int(i) for i in idx),
                "t": self.t, "lr": self._last_lr}
        info.update(self._explain(values))
        # The parameter itself, not old − step recomputed here: what the model now holds.
        info["new"] = float(param.reshape(-1)[flat])
        return info

    @abstractmethod
    def _explain(self, values):
        """This rule's own terms of the last update, from the state's values at one element."""

    def hyperparameters(self):
        return {"lr": self.lr, **self._decay_setting()}

    def _decay_setting(self):
        return {"weight_decay": self.weight_decay} if self.weight_decay else {}

    def spec(self):
        """{"name": ..., hyperparameters...}: make_optimizer(**spec) builds a fresh copy."""
        return {"name": self.name, **self.hyperparameters()}

    def __repr__(self):
        args = ", ".join(f"{k}={v:g}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Plain gradient descent: w ← w − lr·g."""

    name = "sgd"

    def _update(self, key, p, g):
        st = self._buffers(key, p, ("g", "old", "step"))
        np.copyto(st["g"], g)
        np.copyto(st["old"], p)
        np.multiply(g, self.lr, out=st["step"])
        p -= st["step"]

    def _explain(self, v):
        return {"g": v["g"], "old": v["old"], "step": v["step"]}


class Momentum(Optimizer):
    """Classic momentum: v ← μ·v − lr·g ; w ← w + v (v starts at 0)."""

    name = "momentum"

    def __init__(self, lr, momentum=0.9, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {momentum}")
        self.momentum = float(momentum)

    def _update(self, key, p, g):
        st = self._buffers(key, p, ("g", "old", "v_prev", "v"))
        np.copyto(st["g"], g)
        np.copyto(st["old"], p)
        # The two velocity buffers swap roles instead of copying v into v_prev.
        st["v_prev"], st["v"] = st["v"], st["v_prev"]
        np.multiply(st["v_prev"], self.momentum, out=st["v"])
        st["v"] -= self.lr * g
        p += st["v"]

    def _explain(self, v):
        return {"momentum": self.momentum, "g": v["g"], "v_prev": v["v_prev"], "v": v["v"],
                "old": v["old"]}

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, **self._decay_setting()}


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba, 2015, Algorithm 1)."""

    name = "adam"

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1); got {beta1}, {beta2}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0; got {eps}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _update(self, key, p, g):
        st = self._buffers(key, p, ("g", "old", "m_prev", "v_prev", "m", "v", "step"))
        b1, b2 = self.beta1, self.beta2
        np.copyto(st["g"], g)
        np.copyto(st["old"], p)
        st["m_prev"], st["m"] = st["m"], st["m_prev"]
        st["v_prev"], st["v"] = st["v"], st["v_prev"]
        m, v, step = st["m"], st["v"], st["step"]
        # m = β1·m_prev + (1 − β1)·g   (step is scratch space here)
        np.multiply(st["m_prev"], b1, out=m)
        np.multiply(g, 1 - b1, out=step)
        m += step
        # v = β2·v_prev + (1 − β2)·g²
        np.multiply(st["v_prev"], b2, out=v)
        np.multiply(g, g, out=step)
        step *= 1 - b2
        v += step
        # step = lr · m̂ / (√v̂ + ε), with m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t)
        bc1 = 1 - b1 ** self.t
        bc2 = 1 - b2 ** self.t
        np.divide(v, bc2, out=step)
        np.sqrt(step, out=step)
        step += self.eps
        np.divide(m, step, out=step)
        step *= self.lr / bc1
        p -= step

    def _explain(self, v):
        bc1 = 1 - self.beta1 ** self.t
        bc2 = 1 - self.beta2 ** self.t
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps, "g": v["g"],
                "m_prev": v["m_prev"], "v_prev": v["v_prev"], "m": v["m"], "v": v["v"],
                "bias_correction1": bc1, "bias_correction2": bc2,
                "m_hat": v["m"] / bc1, "v_hat": v["v"] / bc2,
                "old": v["old"], "step": v["step"]}

    def hyperparameters(self):
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps, **self._decay_setting()}


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name, **hyperparameters):
    """An optimizer by name ("sgd", "momentum", "adam") with the given hyperparameters."""
    try:
        cls = OPTIMIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}") from None
    return cls(**hyperparameters)
