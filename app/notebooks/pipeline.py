"""The notebook of /pipeline: one digit through the whole network, forward and backward.

It reads the page's query with the page's own parser (``read_state``) and computes the page's
numbers the way the page does (``_compute``: a held-out digit, or a sample picture / upload
brought to 8×8), so a state the page refuses is refused here with the same message. The
notebook holds the digit and the network's weights as literals and recomputes, in plain NumPy:
the convolution as explicit window dot products, ReLU, max pooling, the dense layer, softmax
and the cross-entropy H(p, q); the number the page explains (``show``), written out; then
∂L/∂w of the page's kernel weight by the chain rule (and a central-difference check), one SGD
step and one Adam step (t = 1). Then the same with the engine's front door (conv_forward,
get_activation, pool_forward, softmax, cross_entropy, pool_backward, conv_backward, SGD, Adam)
and the page's own engine module ``cnnlab.core.pipeline`` (not on the front door) for the sum
the page writes out. The last cell checks both against the page's numbers.
"""

from __future__ import annotations

import nbformat
from starlette.requests import Request

from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.notebooks.cells import Notebook, literal
from cnnlab.app.routers.pipeline import _ascii, _compute, explain_view, read_state
from cnnlab.app.settings import settings_for
from cnnlab.core import pipeline as engine
from cnnlab.core.conv import format_number

__all__ = ["build"]

FENCE = "```"


def _factor(v: float) -> str:
    """A literal that reads as a factor: negatives in parentheses."""
    text = literal(float(v))
    return f"({text})" if text.startswith("-") else text


def build(request: Request) -> nbformat.NotebookNode:
    state, errors = read_state(request.query_params)
    if not errors:
        p, real, state = _compute(state, settings_for(request.app), errors)
    if errors:
        raise InputError.of(errors)
    f, i, j = state.weight
    g = engine.weight_gradient(p, f, 0, i, j)
    sgd, adam = engine.updates(p, f, 0, i, j, state.lr)
    P, K = engine.PADDING, engine.KERNEL
    weights = p.weights

    nb = Notebook(_("The whole network, number by number"), state.url())
    nb.markdown(_("One handwritten 8×8 digit goes through a small trained network: convolution with three 3×3 "
                  "filters, ReLU, max pooling, a dense layer, softmax and the cross-entropy loss; then the gradient "
                  "flows back to one kernel weight and updates it. The network was trained on the other digits for "
                  "a few seconds (it gets %(acc)s %% of the held-out digits right); its weights are rounded to two "
                  "decimals so every product can be checked by hand.")
                % {"acc": format_number(round(100 * weights.test_accuracy, 1))})

    # ------------------------------------------------------------------ step 1: input, kernels
    if state.image:
        digit = _("Your picture, shrunk to 8×8.")
    else:
        digit = f"{_('Digit no.')} {state.index} ({_('label %(k)s') % {'k': real}})"
    nb.markdown(f"## {_('Step 1 · The input and the kernels')}\n\n"
                f"- {digit}\n- {_('True class')}: {p.target}\n- {_('Learning rate η')}: {format_number(state.lr)}\n\n"
                + _("Padding 1 (a ring of zeros around the input) keeps each feature map 8×8. Pixel values are "
                    "the dataset’s counts 0–16 divided by 16."))
    setup = [f"x = {literal(p.x)}  # (1, 8, 8)"]
    if not state.image:
        setup.append(f"index = {state.index}  # the digits test split")
    setup += [f"target = {p.target}  # the true class: p is one-hot there",
              f"lr = {_ascii(state.lr)}",
              f"f, i, j = {f}, {i}, {j}  # the kernel weight of the backprop section (0-based)",
              f"W = {literal(weights.w)}  # (3, 1, 3, 3) the kernels",
              f"b = {literal(weights.b)}",
              f"dense_w = {literal(weights.dense_w)}  # (48, 10)",
              f"dense_b = {literal(weights.dense_b)}"]
    nb.code("\n".join(setup))

    # ------------------------------------------------------------------ step 2: conv, ReLU, pool
    nb.markdown(f"## {_('Step 2 · Convolution → ReLU → max pooling')}\n\n"
                r"$$\mathrm{out}_{f,r,c} = \sum_{i=0}^{2}\sum_{j=0}^{2} x^{\mathrm{pad}}_{r+i,\,c+j}\; w_{f,i,j} + b_f"
                r"\qquad a = \max(0, \mathrm{out})"
                r"\qquad \mathrm{pooled}_{f,r,c} = \max_{0 \le u, v < 2} a_{f,\,2r+u,\,2c+v}$$")
    nb.code(f"xp = np.pad(x[0], {P})  # padding {P}: a ring of zeros\n"
            "conv = np.zeros((3, 8, 8))\n"
            "for ff in range(3):\n"
            "    for r in range(8):\n"
            "        for c in range(8):\n"
            f"            window = xp[r:r + {K}, c:c + {K}]\n"
            "            conv[ff, r, c] = np.sum(window * W[ff, 0]) + b[ff]  # one dot product per output\n"
            "relu = np.maximum(conv, 0)\n"
            "pooled = relu.reshape(3, 4, 2, 4, 2).max(axis=(2, 4))  # the largest value of each 2×2 window\n"
            "pooled")

    # ------------------------------------------------------------------ step 3: dense, softmax, loss
    nb.markdown(f"## {_('Step 3 · Flatten → dense layer → logits → softmax')}\n\n"
                + _("Each logit is the dot product of h with one column of the dense layer’s 48×10 weights, "
                    "plus a bias.")
                + "\n\n" + r"$$z_k = \sum_{n=0}^{47} h_n W_{n,k} + b_k \qquad q_k = \frac{e^{z_k}}{\sum_{j=0}^{9} e^{z_j}}$$"
                + "\n\n" + _("Subtracting the largest logit from every logit first gives the same ratio, and no "
                             "exponential can overflow."))
    nb.code("h = pooled.reshape(-1)  # (48,)\n"
            "z = h @ dense_w + dense_b  # the logits\n"
            "e = np.exp(z - z.max())\n"
            "q = e / e.sum()  # softmax\n"
            "z, q")
    nb.markdown(f"## {_('Section 8 · Softmax and cross-entropy')}\n\n"
                r"$$H(p, q) = -\sum_{x=0}^{9} p(x) \log q(x)$$" + "\n\n"
                + _("p is 1 only at the true class, so every other term is 0 and the loss is −log of the "
                    "probability given to the true class.") + " "
                + _("log here is the natural logarithm, ln (base e): on a calculator use the “ln” key, not “log” "
                    "(base 10)."))
    nb.code("p = np.zeros(10)\n"
            "p[target] = 1.0  # one-hot\n"
            "loss = -np.sum(p * np.log(q))\n"
            "loss")

    # ------------------------------------------------------------------ the number the page explains
    shown = _shown(nb, p, state.show)

    # ------------------------------------------------------------------ section 5: backprop, updates
    nb.markdown(f"## {_('Section 5 · Backpropagation to one kernel weight, and one update')}\n\n"
                + _("The same kernel weight is used at every position of its feature map (parameter sharing), so "
                    "its gradient adds up one term per position: the gradient that reaches that output times the "
                    "input value the weight multiplied there.")
                + "\n\n" + r"$$\frac{\partial L}{\partial w_{f,i,j}} = \sum_{r,c} "
                r"\frac{\partial L}{\partial \mathrm{out}_{f,r,c}} \cdot x^{\mathrm{pad}}_{r+i,\,c+j}$$"
                + "\n\n" + r"$$\frac{\partial L}{\partial z} = q - p \qquad "
                r"\frac{\partial L}{\partial h} = W\,\frac{\partial L}{\partial z} \qquad "
                r"\frac{\partial L}{\partial \mathrm{out}} = \frac{\partial L}{\partial a}\cdot[\mathrm{out} > 0]$$")
    nb.code("dz = q - p  # softmax + cross-entropy\n"
            "dh = dense_w @ dz\n"
            "dpooled = dh.reshape(3, 4, 4)\n"
            "da = np.zeros_like(relu)  # max pooling sends each window's gradient to its (first) maximum\n"
            "for ff in range(3):\n"
            "    for r in range(4):\n"
            "        for c in range(4):\n"
            "            window = relu[ff, 2 * r:2 * r + 2, 2 * c:2 * c + 2]\n"
            "            u, v = np.unravel_index(np.argmax(window), window.shape)\n"
            "            da[ff, 2 * r + u, 2 * c + v] = dpooled[ff, r, c]\n"
            "dout = da * (conv > 0)  # ReLU lets the gradient through only where the output was positive\n"
            "grad = 0.0\n"
            "for r in range(8):\n"
            "    for c in range(8):\n"
            "        grad += dout[f, r, c] * xp[r + i, c + j]\n"
            "grad")
    nb.markdown(_("The weight was used at all %(n)s positions; at %(z)s of them the term is 0, because max pooling "
                  "sends no gradient to the cells that lost their window, ReLU none where the output was negative, "
                  "and padding inputs are 0. The marked outputs give the other terms.")
                % {"n": len(g.terms), "z": len(g.terms) - len(g.nonzero)}
                + f"\n\n{FENCE}\n∂L/∂w = {g.text}\n{FENCE}")
    nb.markdown("### " + _("A check of the gradient by central differences: %(formula)s") % {
        "formula": r"$\dfrac{L(w + \varepsilon) - L(w - \varepsilon)}{2\varepsilon}$"}
        + "\n\n" + _("Where a change of ±ε would make a ReLU input cross 0 or change the winner of a pooling "
                     "window, the loss has a kink there and the two sides differ; the check is only meaningful "
                     "when neither happens."))
    nb.code("def loss_and_kinks(w):\n"
            "    out = np.array([[[np.sum(xp[r:r + 3, c:c + 3] * w[ff, 0]) + b[ff] for c in range(8)]\n"
            "                     for r in range(8)] for ff in range(3)])\n"
            "    a = np.maximum(out, 0)\n"
            "    windows = a.reshape(3, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(3, 4, 4, 4)\n"
            "    zz = windows.max(axis=-1).reshape(-1) @ dense_w + dense_b\n"
            "    zz = zz - zz.max()\n"
            "    return -(zz[target] - np.log(np.exp(zz).sum())), (out > 0, windows.argmax(axis=-1))\n"
            "\n"
            "epsilon = 1e-6\n"
            "w_plus, w_minus = W.copy(), W.copy()\n"
            "w_plus[f, 0, i, j] += epsilon\n"
            "w_minus[f, 0, i, j] -= epsilon\n"
            "(l_plus, kinks_plus), (l_minus, kinks_minus) = loss_and_kinks(w_plus), loss_and_kinks(w_minus)\n"
            "numeric = (l_plus - l_minus) / (2 * epsilon)\n"
            "smooth = all(np.array_equal(s, t) for s, t in zip(kinks_plus, kinks_minus))\n"
            "if smooth:\n"
            "    np.testing.assert_allclose(numeric, grad, rtol=1e-4, atol=1e-6)\n"
            "print(numeric, grad, 'smooth' if smooth else 'kink')")

    nb.markdown(f"### {_('One SGD step')}\n\n" + r"$$w \leftarrow w - \eta \cdot g$$")
    nb.code("w_old = W[f, 0, i, j]\n"
            "sgd_new = w_old - lr * grad\n"
            "sgd_new")
    nb.markdown(f"### {_('One Adam step from a fresh start (t = 1, m = v = 0)')}\n\n"
                r"$$m = \beta_1 \cdot 0 + (1 - \beta_1)\, g \qquad v = \beta_2 \cdot 0 + (1 - \beta_2)\, g^2$$"
                "\n\n"
                r"$$\hat m = \frac{m}{1 - \beta_1^t} \qquad \hat v = \frac{v}{1 - \beta_2^t} \qquad "
                r"w \leftarrow w - \frac{\eta \cdot \hat m}{\sqrt{\hat v} + \varepsilon}$$"
                "\n\n" + _("At t = 1 the bias correction undoes the (1 − β) factors: m̂ = g and v̂ = g², so Adam’s "
                           "first step moves the weight by about η whatever the size of the gradient; SGD moves it "
                           "by η·g."))
    nb.code(f"beta1, beta2, eps, t = {literal(adam['beta1'])}, {literal(adam['beta2'])}, {literal(adam['eps'])}, 1\n"
            "m = beta1 * 0 + (1 - beta1) * grad\n"
            "v = beta2 * 0 + (1 - beta2) * grad ** 2\n"
            "m_hat = m / (1 - beta1 ** t)  # bias correction\n"
            "v_hat = v / (1 - beta2 ** t)\n"
            "adam_step = lr * m_hat / (np.sqrt(v_hat) + eps)\n"
            "adam_new = w_old - adam_step\n"
            "m_hat, v_hat, adam_step, adam_new")

    # ------------------------------------------------------------------ the engine
    nb.markdown("## " + _("The same with the engine") + ": " + (
        "`cnnlab.conv_forward`, `cnnlab.get_activation('relu')`, `cnnlab.pool_forward`, `cnnlab.softmax`, "
        "`cnnlab.cross_entropy`, `cnnlab.pool_backward`, `cnnlab.conv_backward`, `cnnlab.SGD`, `cnnlab.Adam`"))
    source = "x_engine = x\n"
    if not state.image:
        source = ("x_engine = cnnlab.load_dataset('digits').x_test[index].astype(np.float64)  # the same digit\n"
                  "np.testing.assert_array_equal(x_engine, x)\n")
    nb.code(source
            + f"out_e, conv_cache = cnnlab.conv_forward(x_engine[None], W, b, padding={P})\n"
            "relu_fn = cnnlab.get_activation('relu')\n"
            "a_e, relu_cache = relu_fn.forward(out_e)\n"
            f"pooled_e, pool_cache = cnnlab.pool_forward(a_e, 'max', {engine.POOL})\n"
            "z_e = pooled_e.reshape(-1) @ dense_w + dense_b\n"
            "q_e = cnnlab.softmax(z_e)\n"
            "loss_e, dz_e = cnnlab.cross_entropy(z_e, target)\n"
            "da_e = cnnlab.pool_backward((dense_w @ dz_e).reshape(pooled_e.shape), pool_cache)\n"
            "dout_e = relu_fn.backward(da_e, relu_cache)\n"
            "dx_e, dw_e, db_e = cnnlab.conv_backward(dout_e, conv_cache)\n"
            "grad_e = dw_e[f, 0, i, j]\n"
            "sgd_opt, w_sgd = cnnlab.SGD(lr), W.copy()\n"
            "sgd_opt.step([('w', w_sgd, dw_e)])\n"
            "adam_opt, w_adam = cnnlab.Adam(lr), W.copy()\n"
            "adam_opt.step([('w', w_adam, dw_e)])\n"
            "adam_e = adam_opt.explain('w', (f, 0, i, j))\n"
            "loss_e, grad_e, w_sgd[f, 0, i, j], adam_e")
    nb.markdown(_("The page's own module, `cnnlab.core.pipeline`, writes the sum out term by term:"))
    nb.code("import cnnlab.core.pipeline  # the page's own module: not on the front door, so imported by name\n"
            "weights = cnnlab.core.pipeline.Weights(W, b, dense_w, dense_b, test_accuracy=float('nan'))\n"
            "page_run = cnnlab.core.pipeline.run(x, target, weights)\n"
            "print(cnnlab.core.pipeline.weight_gradient(page_run, f, 0, i, j).text)")

    nb.expect("logits", p.z, numpy="z", engine="z_e")
    nb.expect("probabilities", p.q, numpy="q", engine="q_e")
    nb.expect("loss", p.loss, numpy="loss", engine="loss_e")
    if shown is not None:
        name, value, engine_expr = shown
        nb.expect(name, value, numpy="shown", engine=engine_expr)
    nb.expect("grad", g.value, numpy="grad", engine="grad_e")
    nb.expect("sgd_new", sgd["new"], numpy="sgd_new", engine="w_sgd[f, 0, i, j]")
    nb.expect("adam_m_hat", adam["m_hat"], numpy="m_hat", engine="adam_e['m_hat']")
    nb.expect("adam_v_hat", adam["v_hat"], numpy="v_hat", engine="adam_e['v_hat']")
    # Adam divides by √v̂ + ε: with a gradient near 0 the last bits of g matter more.
    nb.expect("adam_step", adam["step"], numpy="adam_step", engine="adam_e['step']", tolerance=1e-8)
    nb.expect("adam_new", adam["new"], numpy="adam_new", engine="w_adam[f, 0, i, j]", tolerance=1e-8)
    return nb.build()


def _shown(nb: Notebook, p: engine.Pipeline, show: tuple | None) -> tuple | None:
    """The number the page explains, written out by hand; its ``expect`` arguments."""
    if show is None:
        return None
    view = explain_view(p, show)
    kind = show[0]
    if kind in ("conv", "relu", "pool"):
        _k, f, r, c = show
        where = {"f": f + 1, "row": r + 1, "col": c + 1}
    if kind == "conv":
        title = _("Convolution, filter %(f)s, row %(row)s, column %(col)s: the dot product of the kernel with the "
                  "window") % where
        xp = [[float(p.x[0, r + u - engine.PADDING, c + v - engine.PADDING])
               if 0 <= r + u - engine.PADDING < 8 and 0 <= c + v - engine.PADDING < 8 else 0.0
               for v in range(engine.KERNEL)] for u in range(engine.KERNEL)]
        terms = [f"{_factor(xp[u][v])} * {_factor(p.weights.w[f, 0, u, v])}"
                 for u in range(engine.KERNEL) for v in range(engine.KERNEL)]
        code = ("shown = (" + "\n         + ".join(" + ".join(terms[k:k + 3]) for k in range(0, 9, 3))
                + f"\n         + {_factor(p.weights.b[f])})  # the window, the kernel {f + 1}, the bias")
        value, engine_expr = float(p.out[f, r, c]), f"out_e[0, {f}, {r}, {c}]"
        code += f"\nnp.testing.assert_allclose(shown, conv[{f}, {r}, {c}])"
    elif kind == "relu":
        title = _("ReLU, filter %(f)s, row %(row)s, column %(col)s: negatives become 0") % where
        code = f"shown = max(0.0, conv[{f}, {r}, {c}])"
        value, engine_expr = float(p.a[f, r, c]), f"a_e[0, {f}, {r}, {c}]"
    elif kind == "pool":
        title = _("Max pooling, filter %(f)s, row %(row)s, column %(col)s: the largest value of its 2×2 window") % where
        cells = [f"relu[{f}, {2 * r + u}, {2 * c + v}]" for u in range(2) for v in range(2)]
        code = f"shown = max({', '.join(cells)})"
        value, engine_expr = float(p.pooled[f, r, c]), f"pooled_e[0, {f}, {r}, {c}]"
    elif kind == "logit":
        k = show[1]
        title = _("Logit z%(k)s: h · (column %(k)s of the dense weights) + bias") % {"k": k}
        code = f"shown = sum(h[n] * dense_w[n, {k}] for n in range(48)) + dense_b[{k}]"
        value, engine_expr = float(p.z[k]), f"z_e[{k}]"
    elif kind == "prob":
        k = show[1]
        title = _("Probability q%(k)s: softmax") % {"k": k}
        code = f"shown = np.exp(z[{k}]) / np.sum(np.exp(z))"
        value, engine_expr = float(p.q[k]), f"q_e[{k}]"
    else:
        title = _("The loss: cross-entropy H(p, q)")
        code = "shown = -np.log(q[target])"
        value, engine_expr = float(p.loss), "loss_e"
    nb.markdown(f"### {title}\n\n{FENCE}\n{view['text']}\n{FENCE}")
    nb.code(code + "\nshown")
    return "-".join(str(v) for v in show), value, engine_expr
