"""The notebook of /practice?kind=&level=&seed=: one exercise, worked out in code.

The exercise is stated as the page states it (its prompt and givens, in the page's language),
then its worked solution (the page's steps) is computed in plain NumPy step by step, then
with the engine (``cnnlab``: conv_forward/conv_step, pool_forward/pool_step, the activations,
softmax, cross_entropy, the layers' parameter counts, SGD, Adam), and the last cell checks
that both give the answer ``/api/practice/solution`` gives (every answer cell).
"""

from __future__ import annotations

from collections.abc import Callable

import nbformat
import numpy as np
from starlette.requests import Request

from cnnlab.app import practice as view
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.notebooks.cells import Notebook, literal
from cnnlab.core.exercises import Exercise, generate, solution

__all__ = ["build", "exercise_notebook"]

# The answer's tolerance in the final check: exact whole numbers, and reals computed by the
# same formulas (only the order of a few float operations differs).
TOLERANCE = 1e-9


def build(request: Request) -> nbformat.NotebookNode:
    """``/notebook/practice?kind=&level=&seed=``: the page's parameters and refusals; the
    seed is required (the page would pick a new one and redirect to it)."""
    q = request.query_params
    try:
        kind = view.parse_kind(q.get("kind"))
        level = view.parse_level(q.get("level"))
        seed = view.parse_seed(q.get("seed"))
    except view.BadParameter as exc:
        raise InputError(str(exc)) from None
    if seed is None:
        raise InputError(_("The seed is missing: open the exercise again from its address."))
    return exercise_notebook(generate(kind, seed, level))


# ============================================================================== stating it


def _cell(text: str) -> str:
    """A page's number as LaTeX inside a matrix (the decimal comma kept as a decimal mark)."""
    return text.replace(",", "{,}")


def _matrix_md(caption: str, rows: list[list[str]]) -> str:
    body = r" \\ ".join(" & ".join(_cell(v) for v in row) for row in rows)
    return f"**{caption}** ({len(rows)}×{len(rows[0])})\n\n$$\\begin{{bmatrix}} {body} \\end{{bmatrix}}$$"


def _table_md(block: dict) -> str:
    head = block["head"] or []
    labels = block["labels"]
    lines = []
    if block["caption"]:
        lines += [f"**{block['caption']}**", ""]
    first = [block["corner"] or " "] if labels else []
    lines.append("| " + " | ".join(first + head) + " |")
    lines.append("|" + "---|" * (len(first) + len(head)))
    for i, row in enumerate(block["rows"]):
        cells = ([f"**{labels[i]}**"] if labels else []) + row
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _givens_md(ex: Exercise) -> str:
    g = view.givens_view(ex)
    parts = [_table_md(b) if b["head"] else _matrix_md(b["caption"], b["rows"]) for b in g["blocks"]]
    if g["facts"]:
        parts.append("\n".join(f"- {f['label']}{' ($' + f['symbol'] + '$)' if f['symbol'] else ''}: {f['value']}"
                               for f in g["facts"]))
    return "\n\n".join(parts)


def _steps_md(ex: Exercise) -> str:
    lines = [f"{i}. {view.step_label(s)}  \n   `{s.text}`" for i, s in enumerate(solution(ex), 1)]
    return "\n".join(lines)


def _answer_md(ex: Exercise) -> str:
    rows = view.answer_text(ex)
    if ex.answer.ndim == 0:
        return f"**{view.answer_label(ex)}**: {rows[0][0]}"
    return _matrix_md(view.answer_label(ex), rows)


# ============================================================================== computing it


def _term(v) -> str:
    v = int(v) if float(v).is_integer() else float(v)
    return f"({v})" if v < 0 else str(v)


def _conv(nb: Notebook, ex: Exercise) -> None:
    g = ex.givens
    x = np.asarray(g["x"], dtype=np.int64)
    w = np.asarray(g["w"], dtype=np.int64)
    bias = g["bias"]
    S, P, D = g["stride"], g["padding"], g["dilation"]
    K = w.shape[1]
    Ho = g["out_shape"][0]
    nb.code("\n".join([
        f"x = {literal(x)}  # (C, H, W)",
        f"w = {literal(w)}  # (C, K, K)",
        f"b = {0 if bias is None else bias}",
        f"S, P, D = {S}, {P}, {D}  # stride, padding, dilation",
        "C, H, W = x.shape\nK = w.shape[1]",
        *([f"row, col = {g['row']}, {g['col']}  # counted from 0 (the page counts from 1)"]
          if ex.kind == "conv_value" else []),
    ]))
    nb.markdown("## " + _("In plain NumPy") + "\n\n" + _(view.STEP_LABELS["conv_size"]))
    nb.code("Ho = Wo = (H + 2 * P - D * (K - 1) - 1) // S + 1\nprint(Ho, Wo)")
    nb.markdown(_("Padding adds P cells on each side: H + 2P.") + " "
                + _("Each output cell is the window of the input under the kernel (rows and columns r·S, "
                    "r·S + D, …) multiplied by the kernel cell by cell, plus the bias."))
    nb.code("xp = np.pad(x, ((0, 0), (P, P), (P, P)))  # zeros around each channel\n\n"
            "def window(r, c):\n"
            "    return xp[:, r * S: r * S + D * (K - 1) + 1: D, c * S: c * S + D * (K - 1) + 1: D]\n\n"
            "out_numpy = np.zeros((Ho, Wo), dtype=np.int64)\n"
            "for r in range(Ho):\n"
            "    for c in range(Wo):\n"
            "        out_numpy[r, c] = np.sum(window(r, c) * w) + b\n"
            "print(out_numpy)")
    xp = np.pad(x, ((0, 0), (P, P), (P, P)))
    cells = [(g["row"], g["col"])] if ex.kind == "conv_value" else [(r, c) for r in range(Ho) for c in range(Ho)]
    lines = []
    for r, c in cells:
        win = xp[:, r * S: r * S + D * (K - 1) + 1: D, c * S: c * S + D * (K - 1) + 1: D]
        terms = " + ".join(f"{_term(a)}*{_term(k)}" for a, k in zip(win.reshape(-1), w.reshape(-1)))
        if bias is not None:
            terms += f" + {_term(bias)}"
        lines.append(f"by_hand[{r}, {c}] = {terms}")
    nb.markdown(_("The same dot products written out, term by term (window value × kernel weight), "
                  "as the worked solution does:"))
    nb.code("by_hand = np.zeros((Ho, Wo), dtype=np.int64)\n" + "\n".join(lines)
            + "\nassert (by_hand == out_numpy)" + ("[row, col]" if ex.kind == "conv_value" else ".all()"))
    nb.markdown("## " + _("The same with the engine") + "\n\n"
                + _("`cnnlab.conv_forward` computes the whole output at once (a batch of one image, one "
                    "filter); `cnnlab.conv_step` writes one output cell out as the page does."))
    bias_arg = "None" if bias is None else "np.array([b])"
    nb.code(f"out, cache = cnnlab.conv_forward(x[None].astype(float), w[None].astype(float), "
            f"{'None' if bias is None else 'np.array([b], dtype=float)'}, stride=S, padding=P, dilation=D)\n"
            "out_engine = out[0, 0]\nprint(out_engine)\n"
            + (f"print(cnnlab.conv_step(x, w[None], {bias_arg}, S, P, D, position=(0, row, col)).text)"
               if ex.kind == "conv_value" else
               "for r in range(Ho):\n    for c in range(Wo):\n"
               f"        print(cnnlab.conv_step(x, w[None], {bias_arg}, S, P, D, position=(0, r, c)).text)"))
    if ex.kind == "conv_value":
        nb.expect("answer", ex.answer, numpy="out_numpy[row, col]", engine="out_engine[row, col]", tolerance=TOLERANCE)
    else:
        nb.expect("answer", ex.answer, numpy="out_numpy", engine="out_engine", tolerance=TOLERANCE)


def _output_size(nb: Notebook, ex: Exercise) -> None:
    g = ex.givens
    nb.code(f"H, K, P, S, D = {g['n']}, {g['k']}, {g['padding']}, {g['stride']}, {g['dilation']}")
    nb.markdown("## " + _("In plain NumPy") + "\n\n" + _(view.STEP_LABELS["dilated_span"]) + " "
                + _(view.STEP_LABELS["padded_size"]) + " " + _(view.STEP_LABELS["size_formula"]))
    nb.code("span = D * (K - 1) + 1   # the cells the kernel covers\n"
            "padded = H + 2 * P\n"
            "size_numpy = (padded - span) // S + 1\n"
            "print(span, padded, size_numpy)")
    nb.markdown("## " + _("The same with the engine"))
    nb.code("size_engine = cnnlab.output_size(H, K, S, P, D)\nprint(size_engine)")
    nb.expect("answer", ex.answer, numpy="size_numpy", engine="size_engine", tolerance=TOLERANCE)


def _pool(nb: Notebook, ex: Exercise) -> None:
    g = ex.givens
    nb.code(f"x = {literal(np.asarray(g['x'], dtype=np.int64))}\n"
            f"mode, k, S = {g['mode']!r}, {g['size']}, {g['stride']}  # pooling, window side, stride\n"
            "H, W = x.shape")
    nb.markdown("## " + _("In plain NumPy") + "\n\n" + _(view.STEP_LABELS["pool_size"]) + " "
                + _(view.STEP_LABELS[f"pool_window_{g['mode']}"]) % {"row": "r", "col": "c"})
    reduce = "max()" if g["mode"] == "max" else "mean()"
    nb.code("Ho, Wo = (H - k) // S + 1, (W - k) // S + 1\n"
            "out_numpy = np.zeros((Ho, Wo))\n"
            "for r in range(Ho):\n"
            "    for c in range(Wo):\n"
            "        win = x[r * S: r * S + k, c * S: c * S + k]\n"
            f"        out_numpy[r, c] = win.{reduce}\n"
            "        print((r, c), win.tolist(), '→', out_numpy[r, c])\n"
            "print(out_numpy)")
    nb.markdown("## " + _("The same with the engine"))
    nb.code("out, cache = cnnlab.pool_forward(x[None, None].astype(float), kind=mode, size=k, stride=S)\n"
            "out_engine = out[0, 0]\nprint(out_engine)\n"
            "for r in range(Ho):\n    for c in range(Wo):\n"
            "        print(cnnlab.pool_step(x, mode, k, S, position=(0, r, c)).text)")
    nb.expect("answer", ex.answer, numpy="out_numpy", engine="out_engine", tolerance=TOLERANCE)


def _relu(nb: Notebook, ex: Exercise) -> None:
    nb.code(f"x = {literal(np.asarray(ex.givens['x'], dtype=np.int64))}")
    nb.markdown("## " + _("In plain NumPy") + "\n\n" + _(view.STEP_LABELS["relu_row"]) % {"row": "r"})
    nb.code("out_numpy = np.zeros_like(x)\n"
            "for r, line in enumerate(x):\n"
            "    out_numpy[r] = [max(0, v) for v in line]\n"
            "    print(r, out_numpy[r])\n"
            "assert (out_numpy == np.maximum(x, 0)).all()")
    nb.markdown("## " + _("The same with the engine"))
    nb.code("out_engine, cache = cnnlab.get_activation('relu').forward(x)\nprint(out_engine)")
    nb.expect("answer", ex.answer, numpy="out_numpy", engine="out_engine", tolerance=TOLERANCE)


def _softmax_numpy(nb: Notebook) -> None:
    nb.markdown(_(view.STEP_LABELS["softmax_exp"]) + " " + _(view.STEP_LABELS["softmax_sum"]) + " "
                + _(view.STEP_LABELS["softmax_div"]) % {"cls": "k"}
                + "\n\n$$q_k = \\frac{e^{z_k}}{\\sum_j e^{z_j}}$$")
    nb.code("e = np.exp(z)\nprint(e)\ntotal = e.sum()\nprint(total)\nq_numpy = e / total\nprint(q_numpy)")


def _softmax(nb: Notebook, ex: Exercise) -> None:
    nb.code(f"z = np.array({literal(ex.givens['logits'])}, dtype=float)  # logits")
    nb.markdown("## " + _("In plain NumPy"))
    _softmax_numpy(nb)
    nb.markdown("## " + _("The same with the engine"))
    nb.code("q_engine = cnnlab.softmax(z)\nprint(q_engine)")
    nb.expect("answer", ex.answer, numpy="q_numpy", engine="q_engine", tolerance=TOLERANCE)


def _cross_entropy(nb: Notebook, ex: Exercise) -> None:
    g = ex.givens
    given_q = "q" in g
    if given_q:
        nb.code(f"q = np.array({literal(g['q'])})  # the predicted probabilities\nlabel = {g['label']}")
    else:
        nb.code(f"z = np.array({literal(g['logits'])}, dtype=float)  # logits\nlabel = {g['label']}")
    nb.markdown("## " + _("In plain NumPy"))
    if not given_q:
        _softmax_numpy(nb)
        nb.code("q = q_numpy")
    nb.markdown(_(view.STEP_LABELS["ce_sum"]) % {"label": g["label"]} + " " + _(view.STEP_LABELS["ce_log"])
                + "\n\n$$H(p, q) = -\\sum_k p_k \\ln q_k = -\\ln q_{" + str(g["label"]) + "}$$")
    nb.code("p = np.zeros(len(q))\np[label] = 1  # one-hot\n"
            "loss_numpy = -np.sum(p * np.log(q))\nprint(loss_numpy, -np.log(q[label]))")
    nb.markdown("## " + _("The same with the engine") + "\n\n"
                + (_("`cnnlab.cross_entropy` takes logits: the logarithms of q are logits whose softmax is q.")
                   if given_q else ""))
    nb.code(f"loss_engine, dlogits = cnnlab.cross_entropy({'np.log(q)' if given_q else 'z'}, label)\n"
            "print(loss_engine)")
    nb.expect("answer", ex.answer, numpy="loss_numpy", engine="loss_engine", tolerance=TOLERANCE)


def _param_count(nb: Notebook, ex: Exercise) -> None:
    g = ex.givens
    layer = g["layer"]
    # Per kind of layer: its givens, the page's steps, the count by hand, the count by the engine.
    if layer == "conv":
        given = f"K, C_in, F = {g['k']}, {g['c_in']}, {g['filters']}"
        steps = ["param_conv"]
        plain = "count_numpy = (K * K * C_in + 1) * F\nprint(count_numpy)"
        engine = ("conv = cnnlab.Conv2D(C_in, F, K)\n"
                  "print(conv.params['w'].shape, conv.params['b'].shape)\n"
                  "count_engine = conv.n_params\nprint(count_engine)")
    elif layer == "dense" and "n_in" in g:
        given = f"n_in, n_out = {g['n_in']}, {g['n_out']}"
        steps = ["param_dense"]
        plain = "count_numpy = (n_in + 1) * n_out\nprint(count_numpy)"
        engine = ("dense = cnnlab.Dense(n_in, n_out)\n"
                  "print(dense.params['w'].shape, dense.params['b'].shape)\n"
                  "count_engine = dense.n_params\nprint(count_engine)")
    elif layer == "dense":
        H, W, C = g["input_shape"]
        given = f"H, W, C = {H}, {W}, {C}  # the input, H×W×C\nn_out = {g['n_out']}"
        steps = ["param_flatten", "param_dense"]
        plain = "n_in = H * W * C\ncount_numpy = (n_in + 1) * n_out\nprint(n_in, count_numpy)"
        engine = ("model = cnnlab.Sequential([cnnlab.Flatten(), cnnlab.Dense(H * W * C, n_out)], input_shape=(C, H, W))\n"
                  "print(model.summary_text())\n"
                  "count_engine = model.layers[-1].n_params")
    else:
        H, W, C = g["input_shape"]
        given = (f"H, W, C = {H}, {W}, {C}  # the input, H×W×C\n"
                 f"K, F, S, P = {g['k']}, {g['filters']}, {g['stride']}, {g['padding']}  # the convolution\n"
                 f"n_out = {g['n_out']}")
        steps = ["conv_size", "param_flatten", "param_dense"]
        plain = ("Ho = Wo = (H + 2 * P - (K - 1) - 1) // S + 1\n"
                 "n_in = Ho * Wo * F\ncount_numpy = (n_in + 1) * n_out\nprint(Ho, n_in, count_numpy)")
        engine = ("conv = cnnlab.Conv2D(C, F, K, stride=S, padding=P)\n"
                  "n_in_engine = int(np.prod(conv.output_shape((C, H, W))))\n"
                  "model = cnnlab.Sequential([conv, cnnlab.Flatten(), cnnlab.Dense(n_in_engine, n_out)], "
                  "input_shape=(C, H, W))\n"
                  "print(model.summary_text())\n"
                  "count_engine = model.layers[-1].n_params  # the dense layer")
    nb.code(given)
    nb.markdown("## " + _("In plain NumPy") + "\n\n" + " ".join(_(view.STEP_LABELS[step]) for step in steps))
    nb.code(plain)
    nb.markdown("## " + _("The same with the engine") + "\n\n" + _("The engine's layer holds the weights: count them."))
    nb.code(engine)
    nb.expect("answer", ex.answer, numpy="count_numpy", engine="count_engine", tolerance=TOLERANCE)


def _vector(v) -> str:
    return literal([float(a) for a in np.atleast_1d(v)])


def _sgd_step(nb: Notebook, ex: Exercise) -> None:
    g = ex.givens
    one = ex.answer.shape == ()
    nb.code(f"w = np.array({_vector(g['w'])})  # weights\ng = np.array({_vector(g['g'])})  # gradients\n"
            f"lr = {literal(g['lr'])}  # η")
    nb.markdown("## " + _("In plain NumPy") + "\n\n" + _(view.STEP_LABELS["sgd"]) % {"i": "i"}
                + "\n\n$$w \\leftarrow w - \\eta\\, g$$")
    nb.code("w_numpy = w - lr * g\nprint(w_numpy)")
    nb.markdown("## " + _("The same with the engine") + "\n\n"
                + _("An optimizer's step changes the parameters in place, from their gradients."))
    nb.code("w_engine = w.copy()\nsgd = cnnlab.SGD(lr=lr)\nsgd.step([('w', w_engine, g)])\nprint(w_engine)")
    sub = "[0]" if one else ""
    nb.expect("answer", ex.answer, numpy=f"w_numpy{sub}", engine=f"w_engine{sub}", tolerance=TOLERANCE)


def _adam_step(nb: Notebook, ex: Exercise) -> None:
    g = ex.givens
    one = ex.answer.shape == ()
    nb.code(f"w = np.array({_vector(g['w'])})  # weights\ng = np.array({_vector(g['g'])})  # gradients\n"
            f"m = np.array({_vector(g['m'])})  # first moment after t − 1 steps\n"
            f"v = np.array({_vector(g['v'])})  # second moment after t − 1 steps\n"
            f"t, lr = {g['t']}, {literal(g['lr'])}\n"
            f"beta1, beta2, eps = {literal(g['beta1'])}, {literal(g['beta2'])}, {literal(g['eps'])}")
    nb.markdown("## " + _("In plain NumPy") + "\n\n"
                + "\n".join("- " + _(view.STEP_LABELS[k]) % {"i": "i"} for k in ("adam_m", "adam_v", "adam_hat", "adam_w")))
    nb.code("m_new = beta1 * m + (1 - beta1) * g\n"
            "v_new = beta2 * v + (1 - beta2) * g * g\n"
            "m_hat = m_new / (1 - beta1 ** t)\n"
            "v_hat = v_new / (1 - beta2 ** t)\n"
            "w_numpy = w - lr * m_hat / (np.sqrt(v_hat) + eps)\n"
            "print(m_new, v_new, m_hat, v_hat, w_numpy, sep='\\n')")
    nb.markdown("## " + _("The same with the engine") + "\n\n"
                + _("The optimizer starts from the exercise's moments: its state after t − 1 steps is set by "
                    "hand (`adam.t` and `adam.state`), then one step updates the weights in place."))
    nb.code("w_engine = w.copy()\n"
            "adam = cnnlab.Adam(lr=lr, beta1=beta1, beta2=beta2, eps=eps)\n"
            "adam.t = t - 1\n"
            "adam.state['w'] = {name: np.zeros_like(w) for name in ('g', 'old', 'm_prev', 'v_prev', 'step')}\n"
            "adam.state['w'].update(m=m.copy(), v=v.copy())\n"
            "adam.step([('w', w_engine, g)])\n"
            "for i in range(len(w)):\n"
            "    e = adam.explain('w', i)\n"
            "    print(i, e['m'], e['v'], e['m_hat'], e['v_hat'], e['new'])")
    sub = "[0]" if one else ""
    nb.expect("answer", ex.answer, numpy=f"w_numpy{sub}", engine=f"w_engine{sub}", tolerance=TOLERANCE)


_KINDS: dict[str, Callable[[Notebook, Exercise], None]] = {
    "conv_value": _conv, "conv_output": _conv, "output_size": _output_size, "pool": _pool, "relu": _relu,
    "softmax": _softmax, "cross_entropy": _cross_entropy, "param_count": _param_count, "sgd_step": _sgd_step,
    "adam_step": _adam_step,
}


def exercise_notebook(ex: Exercise) -> nbformat.NotebookNode:
    """The notebook of one exercise, in the current locale."""
    ctx = view.exercise_context(ex)
    title = f"{_('Practice')}: {ctx['kind_name']} · {ctx['level_name']} · " + _("seed %(seed)s") % {"seed": ex.seed}
    nb = Notebook(title, ctx["self_url"])
    nb.markdown("## " + _("The exercise") + f"\n\n{ctx['prompt']}\n\n{_givens_md(ex)}\n\n{view.tolerance_text(ex)}")
    nb.markdown("## " + _("Worked solution") + f"\n\n{_steps_md(ex)}\n\n{_answer_md(ex)}")
    nb.markdown(_("The exercise's numbers, as code:"))
    _KINDS[ex.kind](nb, ex)
    return nb.build()
