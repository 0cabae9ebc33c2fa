"""The notebook of a finished /train run (``/notebook/train?job=<id>``), and of any trained model
(``model_notebook``, which ``cnnlab notebook`` uses for a saved .npz).

The notebook carries the trained weights (the .npz that ``/api/train/<id>/weights.npz`` serves,
base64 in a code cell, loaded with ``cnnlab.load_model``), shows the architecture with each
layer's parameter count, evaluates the model on its dataset's held-out images, recomputes the
forward pass of the first held-out image in plain NumPy from the weights (window dot products,
activation, pooling, dense, softmax) and then of every held-out image, and checks that NumPy
and the engine both give the run's held-out accuracy and the first images' probabilities.
"""

from __future__ import annotations

import base64
import io

import nbformat
import numpy as np
from starlette.requests import Request

from cnnlab.app import jobs as jobs_module
from cnnlab.app import numbers
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.layer_names import LAYER_NAMES, layer_detail
from cnnlab.app.notebooks.cells import Notebook, literal
from cnnlab.app.session import session_id
from cnnlab.core import datasets
from cnnlab.core.losses import softmax
from cnnlab.core.train import evaluate

__all__ = ["FIRST_IMAGES", "build", "model_notebook"]

# How many held-out images' probabilities the notebook checks.
FIRST_IMAGES = 3
# The engine computes in float32, the plain-NumPy cells in float64: probabilities agree to ~1e-6.
PROBABILITY_TOLERANCE = 1e-5
# The plain-NumPy pass over the held-out set goes this many images at a time (memory).
NUMPY_BATCH = 500


def build(request: Request) -> nbformat.NotebookNode:
    """``/notebook/train?job=<id>``: a run of this browser that has ended with a model."""
    job_id = request.query_params.get("job", "").strip()
    if not job_id:
        raise InputError(_("Say which training: /notebook/train?job=<the run's id>."))
    job = request.app.state.jobs.get(session_id(request), job_id)  # JobNotFound: the page's own 404
    if job.status not in jobs_module.FINISHED:
        raise jobs_module.JobStateError(
            _("This training has not finished yet: its notebook is ready when it ends."))
    if job.model is None:
        raise jobs_module.JobStateError(_("This training has no model yet: wait until it starts."))
    npz = jobs_module.export_npz(job)
    return _notebook(job.model, job.spec.dataset, f"/train/jobs/{job.id}", npz)


def model_notebook(model, dataset: str, page_url: str) -> nbformat.NotebookNode:
    """The notebook of ``model`` (a cnnlab Sequential trained on ``dataset``, "digits" or
    "mnist"), in the current locale (wrap the call in ``cnnlab.app.i18n.use_locale(lang)``);
    ``page_url`` is where it came from (a run's page, or a file). The numbers it checks are the
    engine's on the held-out set: the held-out accuracy a run reports, and the first images'
    probabilities."""
    buffer = io.BytesIO()
    model.save(buffer)
    return _notebook(model, dataset, page_url, buffer.getvalue())


# ============================================================================== the numbers


def _page_numbers(model, dataset: str) -> tuple[float, np.ndarray]:
    """The held-out accuracy (as a run reports it: core.train.evaluate) and the first images'
    probabilities (as /api/train/<id>/predict gives them)."""
    data = datasets.load(dataset)
    accuracy = evaluate(model, data.x_test, data.y_test).accuracy
    probabilities = np.array([softmax(model.forward(data.x_test[i:i + 1], train=False)[0].astype(np.float64))
                              for i in range(FIRST_IMAGES)])
    return float(accuracy), probabilities


# ============================================================================== the code


def _shapes(model) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) of each layer, without the batch axis."""
    shape = tuple(model.input_shape)
    out = []
    for layer in model.layers:
        nxt = tuple(layer.output_shape(shape))
        out.append((shape, nxt))
        shape = nxt
    return out


def _formula(spec: dict, shape_in: tuple[int, ...], n: int) -> str:
    if spec["type"] == "Conv2D":
        return f"$({spec['k']}\\cdot{spec['k']}\\cdot{spec['C']} + 1)\\cdot{spec['F']} = {n}$"
    if spec["type"] == "Dense":
        return f"$({spec['D_in']} + 1)\\cdot{spec['D_out']} = {n}$"
    return "0"


def _count_code(spec: dict) -> str | None:
    if spec["type"] == "Conv2D":
        return f"({spec['k']} * {spec['k']} * {spec['C']} + 1) * {spec['F']}"
    if spec["type"] == "Dense":
        return f"({spec['D_in']} + 1) * {spec['D_out']}"
    return None


def _activation_code(spec: dict, h: str) -> str:
    name = spec["name"]
    if name == "relu":
        return f"np.maximum({h}, 0)"
    if name == "sigmoid":
        return f"0.5 * (1 + np.tanh({h} / 2))  # = 1 / (1 + e^(−x)), without overflow"
    if name == "tanh":
        return f"np.tanh({h})"
    if name == "leaky_relu":
        return f"np.where({h} > 0, {h}, {literal(float(spec.get('alpha', 0.01)))} * {h})"
    raise ValueError(f"no NumPy code for activation {name!r}")


def _activation_formula(spec: dict) -> str:
    return {"relu": r"\max(0, x)", "sigmoid": r"\frac{1}{1 + e^{-x}}", "tanh": r"\tanh x",
            "leaky_relu": r"\max(\alpha x, x)"}[spec["name"]]


def _by_hand(model) -> str:
    """One image through every layer with loops: each conv output a window dot product."""
    lines = ["h = x_test[0].astype(np.float64)  # the first held-out image, (C, H, W)"]
    for i, (layer, (shape_in, shape_out)) in enumerate(zip(model.layers, _shapes(model))):
        spec = layer.spec()
        lines.append(f"\n# {i}: {layer.describe()}  {shape_in} → {shape_out}")
        kind = spec["type"]
        if kind == "Conv2D":
            F, Ho, Wo = shape_out
            k, P, S, D = spec["k"], spec["padding"], spec["stride"], spec["dilation"]
            lines += [
                f"k, P, S, D = {k}, {P}, {S}, {D}",
                "hp = np.pad(h, ((0, 0), (P, P), (P, P)))",
                f"out = np.zeros({(F, Ho, Wo)!r})",
                f"for f in range({F}):",
                f"    for r in range({Ho}):",
                f"        for c in range({Wo}):",
                "            window = hp[:, r * S: r * S + D * (k - 1) + 1: D, c * S: c * S + D * (k - 1) + 1: D]",
                f"            out[f, r, c] = np.sum(window * params['{i}.w'][f]) + params['{i}.b'][f]",
                "# one of these dot products written out: filter 0 at the middle of the image",
                f"r, c = {Ho // 2}, {Wo // 2}",
                "window = hp[:, r * S: r * S + D * (k - 1) + 1: D, c * S: c * S + D * (k - 1) + 1: D]",
                f"terms = [f'{{a:.3f}}·{{w:.3f}}' for a, w in zip(window.ravel(), params['{i}.w'][0].ravel())]",
                f"print(' + '.join(terms), f\"+ {{params['{i}.b'][0]:.3f}} = {{out[0, r, c]:.4f}}\")",
                "h = out",
            ]
        elif kind == "Activation":
            lines.append(f"h = {_activation_code(spec, 'h')}")
        elif kind == "Pool2D":
            size = spec["size"]
            stride = spec["stride"] or size
            C, Ho, Wo = shape_out
            reduce = "max" if spec["kind"] == "max" else "mean"
            lines += [
                f"out = np.zeros({(C, Ho, Wo)!r})",
                f"for ch in range({C}):",
                f"    for r in range({Ho}):",
                f"        for c in range({Wo}):",
                (f"            out[ch, r, c] = h[ch, r * {stride}: r * {stride} + {size}, "
                 f"c * {stride}: c * {stride} + {size}].{reduce}()"),
                "h = out",
            ]
        elif kind == "Flatten":
            lines.append("h = h.reshape(-1)  # channel by channel, row by row")
        elif kind == "Dense":
            lines.append(f"h = h @ params['{i}.w'] + params['{i}.b']")
        else:
            raise ValueError(f"no NumPy code for layer {kind!r}")
    lines += ["\nz = h  # the scores (logits)",
              "e = np.exp(z - z.max())  # softmax; subtracting the largest score changes nothing but avoids overflow",
              "p_first = e / e.sum()",
              "print(np.round(p_first, 4), '→ class', p_first.argmax(), '; true class', y_test[0])"]
    return "\n".join(lines)


def _vectorised(model) -> str:
    """Every image at once, still plain NumPy: windows as a strided view, one tensordot per conv."""
    lines = ["def forward_numpy(x):", '    """Images (N, C, H, W) → scores (N, classes), from `params` alone."""',
             "    h = x.astype(np.float64)"]
    for i, layer in enumerate(model.layers):
        spec = layer.spec()
        kind = spec["type"]
        lines.append(f"    # {i}: {layer.describe()}")
        if kind == "Conv2D":
            k, P, S, D = spec["k"], spec["padding"], spec["stride"], spec["dilation"]
            span = D * (k - 1) + 1
            lines += [
                f"    hp = np.pad(h, ((0, 0), (0, 0), ({P}, {P}), ({P}, {P})))",
                f"    win = np.lib.stride_tricks.sliding_window_view(hp, ({span}, {span}), axis=(2, 3))"
                + ("" if S == D == 1 else f"[:, :, ::{S}, ::{S}, ::{D}, ::{D}]") + "  # (N, C, Ho, Wo, k, k)",
                f"    h = np.tensordot(win, params['{i}.w'], axes=([1, 4, 5], [1, 2, 3]))  # (N, Ho, Wo, F)",
                f"    h = h.transpose(0, 3, 1, 2) + params['{i}.b'][:, None, None]",
            ]
        elif kind == "Activation":
            lines.append(f"    h = {_activation_code(spec, 'h')}")
        elif kind == "Pool2D":
            size = spec["size"]
            stride = spec["stride"] or size
            reduce = "max" if spec["kind"] == "max" else "mean"
            lines += [
                (f"    win = np.lib.stride_tricks.sliding_window_view(h, ({size}, {size}), axis=(2, 3))"
                 f"[:, :, ::{stride}, ::{stride}]"),
                f"    h = win.{reduce}(axis=(4, 5))",
            ]
        elif kind == "Flatten":
            lines.append("    h = h.reshape(len(h), -1)")
        elif kind == "Dense":
            lines.append(f"    h = h @ params['{i}.w'] + params['{i}.b']")
    lines.append("    return h")
    return "\n".join(lines)


# ============================================================================== the notebook


def _architecture_md(model) -> str:
    rows = [f"| # | {_('Layer')} | {_('Output shape')} | {_('Parameters')} |", "|---|---|---|---|",
            f"| | {_('Input')} | {'×'.join(map(str, model.input_shape))} | |"]
    for i, (layer, (shape_in, shape_out)) in enumerate(zip(model.layers, _shapes(model))):
        spec = layer.spec()
        name = _(LAYER_NAMES.get(spec["type"], spec["type"]))
        detail = layer_detail(spec)
        rows.append(f"| {i} | {f'{name} {detail}'.strip()} | {'×'.join(map(str, shape_out))} | {_formula(spec, shape_in, layer.n_params)} |")
    rows.append(f"| | **{_('Total parameters')}** | | **{model.n_params}** |")
    return "\n".join(rows)


def _notebook(model, dataset: str, page_url: str, npz: bytes) -> nbformat.NotebookNode:
    if dataset not in datasets.DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: {', '.join(datasets.DATASETS)}")
    accuracy, probabilities = _page_numbers(model, dataset)
    n_test = len(datasets.load(dataset).y_test)
    nb = Notebook(_("The trained network: %(dataset)s") % {"dataset": _dataset_label(dataset)}, page_url)

    nb.markdown("## " + _("The trained weights") + "\n\n"
                + _("The cell below holds the model file the run page lets you download (.npz: the "
                    "architecture and every weight), written as text (base64). `cnnlab.load_model` "
                    "rebuilds the network from it."))
    nb.code("import base64\nimport io\n\n"
            f"WEIGHTS = {base64.b64encode(npz).decode('ascii')!r}\n"
            "weights_file = base64.b64decode(WEIGHTS)\n"
            "model = cnnlab.load_model(io.BytesIO(weights_file))\n"
            "print(model.summary_text())")

    nb.markdown("## " + _("The architecture") + "\n\n"
                + _("A convolution with F filters of k×k over C channels has (k·k·C + 1)·F parameters "
                    "(each filter's weights and its bias); a dense layer from n_in to n_out has "
                    "(n_in + 1)·n_out. Activations, pooling and flattening have none.")
                + "\n\n" + _architecture_md(model))
    counts = [c for c in (_count_code(layer.spec()) for layer in model.layers) if c]
    nb.code("# the same weights, read with NumPy alone: one array per parameter\n"
            "npz = np.load(io.BytesIO(weights_file))\n"
            "params = {name: npz[name].astype(np.float64) for name in npz.files if not name.startswith('__')}\n"
            "for name, p in params.items():\n    print(name, p.shape)\n"
            f"n_params_numpy = {' + '.join(counts)}\n"
            "assert n_params_numpy == sum(p.size for p in params.values())\n"
            "print(n_params_numpy, model.n_params)")
    nb.expect("parameters", model.n_params, numpy="n_params_numpy", engine="model.n_params")

    nb.markdown("## " + _("The held-out images") + "\n\n"
                + _("The run learned from the training images and was measured on these, which it never "
                    "trained on: %(n)s images.") % {"n": numbers.count(n_test)})
    nb.code(f"data = cnnlab.load_dataset({dataset!r})\nx_test, y_test = data.x_test, data.y_test\n"
            "print(data)")

    nb.markdown("## " + _("The first held-out image, in plain NumPy") + "\n\n"
                + _("Layer by layer, with loops: each convolution output is the window under the filter "
                    "multiplied by the filter cell by cell and added, plus the bias; then the activation, "
                    "the pooling (the largest value or the mean of each window), the dense layers "
                    "(a matrix product plus the biases) and the softmax.")
                + "\n\n" + _activation_md(model) + "$$q_k = \\frac{e^{z_k}}{\\sum_j e^{z_j}}$$")
    nb.code(_by_hand(model))

    nb.markdown("## " + _("Every held-out image, in plain NumPy") + "\n\n"
                + _("The same computation for all images at once (the windows as a view of the padded "
                    "images, one tensor product per convolution): the held-out accuracy is the share of "
                    "images whose largest score is their true class."))
    nb.code(_vectorised(model) + "\n\n"
            f"logits_numpy = np.concatenate([forward_numpy(x_test[i:i + {NUMPY_BATCH}]) "
            f"for i in range(0, len(x_test), {NUMPY_BATCH})])\n"
            "np.testing.assert_allclose(logits_numpy[0], z)  # the same as the loops above\n"
            "e = np.exp(logits_numpy - logits_numpy.max(axis=1, keepdims=True))\n"
            "probabilities_numpy = e / e.sum(axis=1, keepdims=True)\n"
            "accuracy_numpy = np.mean(logits_numpy.argmax(axis=1) == y_test)\n"
            "print(accuracy_numpy)")

    nb.markdown("## " + _("The same with the engine") + "\n\n"
                + _("`cnnlab.evaluate` runs the model over the held-out images (in float32, as it trained) "
                    "and counts the right answers; `cnnlab.softmax` of a forward pass gives an image's "
                    "probabilities."))
    nb.code("result = cnnlab.evaluate(model, x_test, y_test)\nprint(result.accuracy, result.n)\n"
            f"probabilities_engine = np.array([cnnlab.softmax(model.forward(x_test[i:i + 1], train=False)[0]"
            f".astype(np.float64)) for i in range({FIRST_IMAGES})])\n"
            "print(np.round(probabilities_engine, 4))")

    nb.expect("held_out_accuracy", accuracy, numpy="accuracy_numpy", engine="result.accuracy")
    nb.expect("first_probabilities", probabilities, numpy=f"probabilities_numpy[:{FIRST_IMAGES}]",
              engine="probabilities_engine", tolerance=PROBABILITY_TOLERANCE)
    return nb.build()


def _dataset_label(dataset: str) -> str:
    from cnnlab.app.routers.train_page import DATASETS  # the page's names for the datasets

    return _(DATASETS[dataset]) if dataset in DATASETS else dataset


def _activation_md(model) -> str:
    names = []
    for layer in model.layers:
        spec = layer.spec()
        if spec["type"] == "Activation" and spec["name"] not in names:
            names.append(spec["name"])
    return "".join("$$\\mathrm{" + n.replace("_", "\\_") + "}(x) = " + _activation_formula({"name": n}) + "$$\n"
                   for n in names)
