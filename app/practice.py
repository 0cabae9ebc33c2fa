"""The practice page's views: an exercise from ``core.exercises`` turned into what the
templates show (the prompt in the page's language, the givens as matrices and tables, the
answer grid, the verdict, the worked solution), the typed answer read back, and the score.

The score and streak live in a signed cookie (``cnnlab_practice``, itsdangerous with the
app's secret key): nothing is stored on the server, they survive reloads, and a tampered
cookie is simply a fresh score. Each exercise (kind, seed, level) counts once: checking a
solved exercise again does not add to the score.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import numpy as np
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.requests import Request
from starlette.responses import Response

from cnnlab.app.i18n import N_
from cnnlab.app.i18n import gettext as _
from cnnlab.app.settings import Settings, settings_for
from cnnlab.core import numfmt
from cnnlab.core.exercises import (
    KINDS,
    LEVELS,
    MAX_SEED,
    Exercise,
    SolutionStep,
    Verdict,
    format_value,
    solution,
)

KIND_NAMES = {
    "conv_value": N_("One value of a convolution"),
    "conv_output": N_("A whole convolution"),
    "output_size": N_("Output size"),
    "pool": N_("Pooling"),
    "relu": N_("ReLU"),
    "softmax": N_("Softmax"),
    "cross_entropy": N_("Cross-entropy"),
    "param_count": N_("Number of parameters"),
    "sgd_step": N_("One SGD step"),
    "adam_step": N_("One Adam step"),
}
LEVEL_NAMES = {
    1: N_("Level 1 · basic"),
    2: N_("Level 2 · intermediate"),
    3: N_("Level 3 · advanced"),
}
# The worked solution's steps, one sentence per key of core.exercises.SolutionStep.
STEP_LABELS = {
    "conv_size": N_("The output size: ⌊(H + 2P − D·(K − 1) − 1)/S⌋ + 1."),
    "conv_dot": N_("Output row %(row)s, column %(col)s: multiply the window by the kernel cell by cell and add."),
    "conv_channel": N_("Output row %(row)s, column %(col)s, channel %(channel)s: this channel’s window times this "
                       "channel of the kernel."),
    "conv_total": N_("Output row %(row)s, column %(col)s: add the channels’ sums and the bias."),
    "dilated_span": N_("With dilation D the kernel spans D·(K − 1) + 1 cells."),
    "padded_size": N_("Padding adds P cells on each side: H + 2P."),
    "size_formula": N_("The output size: ⌊(H + 2P − D·(K − 1) − 1)/S⌋ + 1."),
    "pool_size": N_("The output size: ⌊(H − k)/S⌋ + 1 (pooling uses no padding)."),
    "pool_window_max": N_("Output row %(row)s, column %(col)s: the largest value in the window."),
    "pool_window_avg": N_("Output row %(row)s, column %(col)s: the mean of the window."),
    "relu_row": N_("Row %(row)s: negative values become 0, the rest stay as they are."),
    "softmax_exp": N_("Raise e to each logit."),
    "softmax_sum": N_("Add the exponentials."),
    "softmax_div": N_("Class %(cls)s: its exponential divided by the sum."),
    "ce_sum": N_("The true class is %(label)s, so p is one-hot and only that term of the sum is left."),
    "ce_log": N_("The loss is minus the natural logarithm of the probability of the true class."),
    "param_conv": N_("Each filter has K·K·C_in weights and 1 bias, and there are F filters: (K·K·C_in + 1)·F."),
    "param_flatten": N_("Flattening gives the number of inputs of the dense layer."),
    "param_dense": N_("Each output has n_in weights and 1 bias: (n_in + 1)·n_out."),
    "sgd": N_("Weight %(i)s: w − η·g."),
    "adam_m": N_("Weight %(i)s: the first moment m ← β₁·m + (1 − β₁)·g."),
    "adam_v": N_("Weight %(i)s: the second moment v ← β₂·v + (1 − β₂)·g²."),
    "adam_hat": N_("Weight %(i)s: bias correction, dividing by 1 − β₁ᵗ and 1 − β₂ᵗ."),
    "adam_w": N_("Weight %(i)s: the update w ← w − η·m̂/(√v̂ + ε)."),
}
# Kinds whose answers are never negative: phones then show a number keypad.
NON_NEGATIVE = {"output_size", "relu", "softmax", "cross_entropy", "param_count"}
MAX_CELL_CHARS = 32
DEFAULT_WORKSHEET_N = 10
MAX_WORKSHEET_N = 30


# ============================================================================== parameters


class BadParameter(ValueError):
    """A URL or form value that cannot be used; the message is translated."""


def parse_kind(text: str | None, default: str | None = "conv_value") -> str:
    if not text:
        if default is None:
            raise BadParameter(_("Choose an exercise kind."))
        return default
    if text not in KINDS:
        raise BadParameter(_("There is no exercise kind “%(kind)s”; the kinds are: %(kinds)s.")
                           % {"kind": text[:40], "kinds": ", ".join(KINDS)})
    return text


def parse_level(text: str | None) -> int:
    if not text:
        return 1
    if text.strip() not in {str(v) for v in LEVELS}:
        raise BadParameter(_("The level must be 1, 2 or 3."))
    return int(text)


def parse_seed(text: str | None) -> int | None:
    """None when missing (the page then picks one and redirects, so the address names it)."""
    if text is None or not text.strip():
        return None
    t = text.strip()
    if not t.isdigit() or len(t) > 19 or int(t) > MAX_SEED:
        raise BadParameter(_("The seed must be a whole number from 0 to %(max)s.") % {"max": MAX_SEED})
    return int(t)


def parse_count(text: str | None) -> int:
    if not text:
        return DEFAULT_WORKSHEET_N
    t = text.strip()
    if not t.isdigit() or not 1 <= int(t) <= MAX_WORKSHEET_N:
        raise BadParameter(_("A worksheet has from 1 to %(max)s exercises.") % {"max": MAX_WORKSHEET_N})
    return int(t)


def new_seed() -> int:
    """Short enough to read out to a class."""
    return secrets.randbelow(1_000_000)


def practice_url(kind: str, seed: int, level: int, **extra: Any) -> str:
    return "/practice?" + urlencode({"kind": kind, "level": level, "seed": seed, **extra})


# ============================================================================== the typed answer


def _cell_name(i: int) -> str:
    return f"c{i}"


def parse_cell(text: str) -> float:
    """One typed cell: "−3", "0,25" (a decimal comma) or "0.25". ValueError if it is not a finite number."""
    t = text.strip().replace("\u2212", "-").replace(" ", "")
    if "," in t and "." not in t:
        t = t.replace(",", ".")
    if not t or len(t) > MAX_CELL_CHARS:
        raise ValueError(t)
    v = float(t)
    if not math.isfinite(v):
        raise ValueError(t)
    return v


@dataclass
class TypedAnswer:
    """The form's cells: their texts (shown again), the array when every cell is a number,
    and the cells that are empty or not numbers."""
    texts: list[str]
    values: np.ndarray | None
    bad: list[int] = field(default_factory=list)
    message: str = ""


def read_answer(form: Mapping[str, Any], shape: tuple[int, ...]) -> TypedAnswer:
    n = int(np.prod(shape)) if shape else 1
    texts = [str(form.get(_cell_name(i)) or "")[:64] for i in range(n)]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        return TypedAnswer(texts, None, empty, _("Fill in every cell: %(n)s of %(total)s are empty.")
                           % {"n": len(empty), "total": n})
    values, bad = [], []
    for i, t in enumerate(texts):
        try:
            values.append(parse_cell(t))
        except ValueError:
            bad.append(i)
    if bad:
        where = _cell_place(bad[0], shape)
        return TypedAnswer(texts, None, bad, _("“%(text)s” is not a number (%(where)s). Type numbers such as "
                                               "12, −3 or 0.25.") % {"text": texts[bad[0]][:20], "where": where})
    return TypedAnswer(texts, np.array(values, dtype=np.float64).reshape(shape))


def _cell_place(i: int, shape: tuple[int, ...]) -> str:
    if len(shape) == 2:
        r, c = divmod(i, shape[1])
        return _("row %(row)s, column %(col)s") % {"row": r + 1, "col": c + 1}
    if len(shape) == 1:
        return _("cell %(n)s") % {"n": i + 1}
    return _("the answer")


# ============================================================================== the score


COOKIE = "cnnlab_practice"
_SALT = "cnnlab-practice"
MAX_SOLVED_KEPT = 50


@dataclass
class Score:
    correct: int = 0
    attempts: int = 0
    streak: int = 0
    best: int = 0
    solved: list[str] = field(default_factory=list)


def exercise_key(kind: str, seed: int, level: int) -> str:
    return f"{KINDS.index(kind)}.{seed}.{level}"


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(settings.secret_key.get_secret_value(), salt=_SALT)


def read_score(request: Request) -> Score:
    raw = request.cookies.get(COOKIE)
    if not raw or len(raw) > 4096:
        return Score()
    try:
        data = _serializer(settings_for(request.app)).loads(raw)
        c, a, s, b, solved = data
        if not all(type(v) is int and 0 <= v < 10**9 for v in (c, a, s, b)) or not isinstance(solved, list):
            return Score()
        return Score(c, a, s, b, [str(k) for k in solved][-MAX_SOLVED_KEPT:])
    except (BadSignature, ValueError, TypeError):
        return Score()


def record(score: Score, key: str, correct: bool) -> bool:
    """Count one checked answer; False (nothing counted) when this exercise was solved, or its
    solution shown, before."""
    if key in score.solved:
        return False
    score.attempts += 1
    if correct:
        score.correct += 1
        score.streak += 1
        score.best = max(score.best, score.streak)
        score.solved = (score.solved + [key])[-MAX_SOLVED_KEPT:]
    else:
        score.streak = 0
    return True


def reveal(score: Score, key: str) -> bool:
    """Showing the solution of an unsolved exercise ends the streak, and that exercise no
    longer scores; False (nothing changed) when it was solved or revealed before."""
    if key in score.solved:
        return False
    score.streak = 0
    score.solved = (score.solved + [key])[-MAX_SOLVED_KEPT:]
    return True


def save_score(request: Request, response: Response, score: Score) -> None:
    value = _serializer(settings_for(request.app)).dumps(
        [score.correct, score.attempts, score.streak, score.best, score.solved])
    response.set_cookie(COOKIE, value, path="/", httponly=True, samesite="lax")


# ============================================================================== the exercise, shown


def _n(v: Any) -> str:
    return format_value(v)


def _matrix(rows: list[list[Any]]) -> list[list[str]]:
    return [[_n(v) for v in row] for row in rows]


def _fact(label: str, value: Any, symbol: str = "") -> dict:
    return {"label": label, "symbol": symbol, "value": value if isinstance(value, str) else _n(value)}


def _block(caption: str, rows: list[list[str]], cls: str = "", head: list[str] | None = None,
           labels: list[str] | None = None) -> dict:
    return {"caption": caption, "rows": rows, "cls": cls, "head": head, "labels": labels, "corner": ""}


def prompt(ex: Exercise) -> str:
    """What to compute, in the page's language."""
    g, k = ex.givens, ex.kind
    if k == "conv_value":
        return _("Compute the value of the output at row %(row)s, column %(col)s: the kernel over the input, "
                 "as the slides do it (no kernel flip).") % {"row": g["row"] + 1, "col": g["col"] + 1}
    if k == "conv_output":
        return _("Compute the whole output of the kernel over the input (no kernel flip), %(h)s×%(w)s values.") % {
            "h": g["out_shape"][0], "w": g["out_shape"][1]}
    if k == "output_size":
        return _("An input of side H = %(n)s goes through a convolution with a kernel of side K = %(k)s, padding "
                 "P = %(p)s, stride S = %(s)s and dilation D = %(d)s. What is the side of the output?") % {
            "n": g["n"], "k": g["k"], "p": g["padding"], "s": g["stride"], "d": g["dilation"]}
    if k == "pool":
        text = (_("Apply max pooling with a %(k)s×%(k)s window and stride %(s)s to the input.") if g["mode"] == "max"
                else _("Apply average pooling with a %(k)s×%(k)s window and stride %(s)s to the input."))
        return text % {"k": g["size"], "s": g["stride"]}
    if k == "relu":
        return _("Apply ReLU, max(0, x), to every value of the feature map.")
    if k == "softmax":
        return _("Compute the probabilities q = softmax(z) of the logits z.")
    if k == "cross_entropy":
        if "q" in g:
            return _("The model predicts the probabilities q and the true class is %(label)s (p is one-hot). "
                     "Compute the cross-entropy H(p, q) = −Σ p(x)·ln q(x).") % {"label": g["label"]}
        return _("The model gives the logits z and the true class is %(label)s (p is one-hot). Compute "
                 "q = softmax(z) and then the cross-entropy H(p, q) = −Σ p(x)·ln q(x).") % {"label": g["label"]}
    if k == "param_count":
        if g["layer"] == "conv":
            return _("How many parameters (weights and biases) does a convolutional layer have with %(f)s filters "
                     "of %(k)s×%(k)s on an input with %(c)s channels?") % {
                "f": g["filters"], "k": g["k"], "c": g["c_in"]}
        if g["layer"] == "dense" and "n_in" in g:
            return _("How many parameters (weights and biases) does a dense (fully connected) layer with %(n_in)s "
                     "inputs and %(n_out)s outputs have?") % {"n_in": g["n_in"], "n_out": g["n_out"]}
        h, w, c = g["input_shape"]
        if g["layer"] == "dense":
            return _("A %(h)s×%(w)s×%(c)s feature map is flattened into a dense layer with %(n_out)s outputs. How "
                     "many parameters (weights and biases) does that dense layer have?") % {
                "h": h, "w": w, "c": c, "n_out": g["n_out"]}
        return _("A %(h)s×%(w)s×%(c)s input goes through a convolution with %(f)s filters of %(k)s×%(k)s, stride "
                 "%(s)s and padding %(p)s; the result is flattened into a dense layer with %(n_out)s outputs. How "
                 "many parameters (weights and biases) does that dense layer have?") % {
            "h": h, "w": w, "c": c, "f": g["filters"], "k": g["k"], "s": g["stride"], "p": g["padding"],
            "n_out": g["n_out"]}
    if k == "sgd_step":
        return _("One step of gradient descent (SGD): w ← w − η·g. What is the new weight?") if ex.answer.shape == () \
            else _("One step of gradient descent (SGD): w ← w − η·g. What are the new weights?")
    return _("One Adam step, step number t = %(t)s: update m and v, correct their bias (m̂, v̂) and compute the new "
             "weight w ← w − η·m̂/(√v̂ + ε).") % {"t": g["t"]}


def _vector_block(rows: list[tuple[str, list[Any]]], head: list[str], corner: str, caption: str = "") -> dict:
    """A small table: one row per named vector (z; or w, g, m, v), one column per class/weight."""
    block = _block(caption, [[_n(v) for v in values] for _, values in rows], "practice-vector", head,
                   [label for label, _ in rows])
    block["corner"] = corner
    return block


def givens_view(ex: Exercise) -> dict:
    """{"blocks": matrices/tables, "facts": [label, symbol, value]} for the template."""
    g, k = ex.givens, ex.kind
    blocks: list[dict] = []
    facts: list[dict] = []
    if k in ("conv_value", "conv_output"):
        C = len(g["x"])
        for c in range(C):
            name = _("Input, channel %(c)s") % {"c": c + 1} if C > 1 else _("Input")
            blocks.append(_block(name, _matrix(g["x"][c]), "matrix--input"))
        for c in range(C):
            name = _("Kernel, channel %(c)s") % {"c": c + 1} if C > 1 else _("Kernel")
            blocks.append(_block(name, _matrix(g["w"][c]), "matrix--kernel"))
        facts += [_fact(_("Stride"), g["stride"], "S"), _fact(_("Padding"), g["padding"], "P"),
                  _fact(_("Dilation"), g["dilation"], "D")]
        if g["bias"] is not None:
            facts.append(_fact(_("Bias"), g["bias"], "b"))
    elif k == "output_size":
        facts += [_fact(_("Input side"), g["n"], "H"), _fact(_("Kernel side"), g["k"], "K"),
                  _fact(_("Padding"), g["padding"], "P"), _fact(_("Stride"), g["stride"], "S"),
                  _fact(_("Dilation"), g["dilation"], "D")]
    elif k == "pool":
        blocks.append(_block(_("Input"), _matrix(g["x"]), "matrix--input"))
        facts += [_fact(_("Pooling"), _("max") if g["mode"] == "max" else _("average")),
                  _fact(_("Window"), f"{g['size']}×{g['size']}", "k"), _fact(_("Stride"), g["stride"], "S")]
    elif k == "relu":
        blocks.append(_block(_("Feature map"), _matrix(g["x"]), "matrix--input"))
    elif k in ("softmax", "cross_entropy"):
        values = g.get("logits", g.get("q"))
        head = [str(i) for i in range(len(values))]
        blocks.append(_vector_block([("z" if "logits" in g else "q", values)], head, _("class")))
        if k == "cross_entropy":
            facts.append(_fact(_("True class"), g["label"]))
    elif k == "param_count":
        if g["layer"] == "conv":
            facts += [_fact(_("Kernel side"), g["k"], "K"), _fact(_("Input channels"), g["c_in"], "C_in"),
                      _fact(_("Filters"), g["filters"], "F")]
        elif "n_in" in g:
            facts += [_fact(_("Inputs"), g["n_in"], "n_in"), _fact(_("Outputs"), g["n_out"], "n_out")]
        else:
            facts.append(_fact(_("Input"), "×".join(map(str, g["input_shape"])), "H×W×C"))
            if g["layer"] == "dense_after_conv":
                facts += [_fact(_("Kernel side"), g["k"], "K"), _fact(_("Filters"), g["filters"], "F"),
                          _fact(_("Stride"), g["stride"], "S"), _fact(_("Padding"), g["padding"], "P")]
            facts.append(_fact(_("Outputs of the dense layer"), g["n_out"], "n_out"))
    else:
        one = ex.answer.shape == ()
        names = ["w", "g"] + (["m", "v"] if k == "adam_step" else [])
        rows = [(name, [g[name]] if one else g[name]) for name in names]
        head = [str(i + 1) for i in range(len(rows[0][1]))]
        caption = _("Values before this step") if k == "adam_step" else ""
        blocks.append(_vector_block(rows, head, _("weight"), caption))
        facts.append(_fact(_("Learning rate"), g["lr"], "η"))
        if k == "adam_step":
            facts += [_fact(_("Step"), g["t"], "t"), _fact("β₁", g["beta1"]), _fact("β₂", g["beta2"]),
                      _fact("ε", "10⁻⁸")]
    return {"blocks": blocks, "facts": facts}


def answer_label(ex: Exercise) -> str:
    g, k = ex.givens, ex.kind
    if k == "conv_value":
        return _("Output at row %(row)s, column %(col)s") % {"row": g["row"] + 1, "col": g["col"] + 1}
    return {
        "output_size": _("Side of the output"), "cross_entropy": "H(p, q)", "param_count": _("Parameters"),
        "sgd_step": _("New weight"), "adam_step": _("New weight"),
    }.get(k, _("Output"))


def tolerance_text(ex: Exercise) -> str:
    if ex.tolerance == 0:
        return _("A whole number: the answer must be exact.")
    digits = max(0, -math.floor(math.log10(ex.tolerance)))
    return _("Real numbers: answers within ± %(tol)s of the exact value are correct (round to %(d)s decimals). "
             "A decimal point or comma both work.") % {"tol": _n(ex.tolerance), "d": digits}


def answer_view(ex: Exercise, typed: TypedAnswer | None = None, verdict: Verdict | None = None) -> dict:
    """The answer grid: one input per cell, with its typed text and right/wrong state."""
    shape = ex.answer.shape
    n = int(np.prod(shape)) if shape else 1
    wrong = None if verdict is None else np.atleast_1d(verdict.wrong).reshape(-1)
    bad = set(typed.bad) if typed else set()
    real = ex.tolerance > 0
    mode = ("decimal" if real else "numeric") if ex.kind in NON_NEGATIVE else "text"
    cells = []
    for i in range(n):
        state = "bad" if i in bad else ("" if wrong is None else ("wrong" if wrong[i] else "right"))
        cells.append({"name": _cell_name(i), "text": typed.texts[i] if typed else "", "state": state,
                      "label": _answer_cell_label(ex, i)})
    if len(shape) == 2:
        rows = [cells[r * shape[1]:(r + 1) * shape[1]] for r in range(shape[0])]
        head = None
    elif len(shape) == 1:
        rows = [cells]
        head = ([f"q{_sub(i)}" for i in range(n)] if ex.kind == "softmax"
                else [_("weight %(i)s") % {"i": i + 1} for i in range(n)])
    else:
        rows, head = [cells], None
    return {"rows": rows, "head": head, "shape": list(shape), "scalar": not shape, "label": answer_label(ex),
            "inputmode": mode, "wide": real, "tolerance": tolerance_text(ex)}


def _answer_cell_label(ex: Exercise, i: int) -> str:
    shape = ex.answer.shape
    if not shape:
        return answer_label(ex)
    if len(shape) == 1:
        return (f"q{_sub(i)}" if ex.kind == "softmax" else _("New weight %(i)s") % {"i": i + 1})
    r, c = divmod(i, shape[1])
    return _("Output row %(row)s, column %(col)s") % {"row": r + 1, "col": c + 1}


_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _sub(i: int) -> str:
    return str(i).translate(_SUBSCRIPTS)


def verdict_view(verdict: Verdict | None, counted: bool | None) -> dict | None:
    if verdict is None:
        return None
    total = int(verdict.wrong.size)
    n_wrong = int(np.count_nonzero(verdict.wrong))
    if verdict.correct:
        text = _("Correct!")
    elif total == 1:
        text = _("Not quite: the answer is marked in red. Try again, or show the solution.")
    else:
        text = _("%(n)s of %(total)s cells are wrong: they are marked in red. Try again, or show the solution.") % {
            "n": n_wrong, "total": total}
    note = "" if counted or counted is None else _("You had already solved this exercise or seen its solution: it is not counted again.")
    return {"correct": verdict.correct, "text": text, "note": note, "wrong": n_wrong, "total": total}


def score_view(score: Score) -> dict:
    return {"correct": score.correct, "attempts": score.attempts, "streak": score.streak, "best": score.best}


# ============================================================================== the worked solution


def step_label(step: SolutionStep) -> str:
    key = step.key
    if key == "pool_window":
        key = f"pool_window_{step.params.get('mode')}"
    template = _(STEP_LABELS[key])
    params = {k: v for k, v in step.params.items() if k in ("row", "col", "channel", "cls", "label", "i")}
    for name in ("row", "col"):
        if name in params:
            params[name] = params[name] + 1
    return template % params if "%(" in STEP_LABELS[key] else template


def _conv_stage(ex: Exercise, step: SolutionStep) -> dict:
    """The padded input of each channel with the step's window framed, beside the kernel."""
    g = ex.givens
    P = g["padding"]
    window = step.window or {"rows": [], "cols": []}
    rows_in, cols_in = set(window["rows"]), set(window["cols"])
    channels = range(len(g["x"])) if "channel" not in step.params else [step.params["channel"] - 1]
    out = []
    for c in channels:
        x = g["x"][c]
        H, W = len(x), len(x[0])
        table = []
        for r in range(-P, H + P):
            line = []
            for q in range(-P, W + P):
                inside = 0 <= r < H and 0 <= q < W
                line.append({"text": _n(x[r][q]) if inside else "0", "pad": not inside,
                             "window": r in rows_in and q in cols_in, "winner": False})
            table.append(line)
        caption = _("Input, channel %(c)s") % {"c": c + 1} if len(g["x"]) > 1 else _("Input")
        out.append({"caption": caption, "table": table, "kernel": _matrix(g["w"][c]),
                    "kernel_caption": _("Kernel, channel %(c)s") % {"c": c + 1} if len(g["x"]) > 1 else _("Kernel")})
    return {"channels": out, "padded": P > 0}


def _pool_stage(ex: Exercise, step: SolutionStep) -> dict:
    g = ex.givens
    window = step.window or {"rows": [], "cols": []}
    rows_in, cols_in = window["rows"], window["cols"]
    winner = None
    if g["mode"] == "max" and rows_in:
        vals = [(g["x"][r][q], r, q) for r in rows_in for q in cols_in]
        best = max(v for v, _r, _q in vals)
        winner = next((r, q) for v, r, q in vals if v == best)
    table = [[{"text": _n(v), "pad": False, "window": r in rows_in and q in cols_in, "winner": (r, q) == winner}
              for q, v in enumerate(line)] for r, line in enumerate(g["x"])]
    return {"channels": [{"caption": _("Input"), "table": table, "kernel": None, "kernel_caption": ""}],
            "padded": False}


def solution_view(ex: Exercise, upto: int | None) -> dict:
    """The first ``upto`` steps (all when None), the answer grid filled in as far as they go,
    and the stage (input and window) of the last shown step."""
    steps = solution(ex)
    total = len(steps)
    shown = total if upto is None else max(1, min(upto, total))
    shape = ex.answer.shape
    filled: dict[tuple, bool] = {}
    items = []
    for i, step in enumerate(steps[:shown]):
        current = i == shown - 1
        for cell in step.cells:
            filled[tuple(cell)] = current
        stage = None
        if current and step.window is not None:
            stage = _conv_stage(ex, step) if ex.kind.startswith("conv") else _pool_stage(ex, step)
        items.append({"n": i + 1, "label": step_label(step), "text": step.text, "stage": stage,
                      "current": current, "gives": bool(step.cells)})
    grid = None
    if shape:
        flat_shape = shape if len(shape) == 2 else (1,) + shape
        answer = ex.answer.reshape(flat_shape)
        grid = []
        for r in range(flat_shape[0]):
            line = []
            for c in range(flat_shape[1]):
                key = (r, c) if len(shape) == 2 else (c,)
                state = "todo" if key not in filled else ("current" if filled[key] else "done")
                line.append({"text": "" if state == "todo" else _answer_text(ex, answer[r, c]), "state": state})
            grid.append(line)
    return {"steps": items, "shown": shown, "total": total, "done": shown >= total, "grid": grid,
            "answer": answer_text(ex)}


def _answer_text(ex: Exercise, v: Any) -> str:
    return _n(int(v)) if ex.tolerance == 0 else _n(float(numfmt.round_half_up(v, 4)))


def answer_text(ex: Exercise) -> list[list[str]]:
    """The answer as rows of texts (one row for a number or a vector), reals to 4 decimals."""
    a = ex.answer
    if a.ndim == 0:
        return [[_answer_text(ex, a)]]
    if a.ndim == 1:
        return [[_answer_text(ex, v) for v in a]]
    return [[_answer_text(ex, v) for v in row] for row in a]


def _grid_param(rows: list[list[Any]]) -> str:
    return ";".join(",".join(str(v) for v in row) for row in rows)


def stepper_url(ex: Exercise) -> str | None:
    """The same numbers in the lesson's own stepper (/conv or /pool), at the asked position;
    None where the stepper cannot show them (two-channel typed grids)."""
    g = ex.givens
    if ex.kind in ("conv_value", "conv_output") and len(g["x"]) == 1:
        params: dict[str, Any] = {"grid": _grid_param(g["x"][0]), "kernel": _grid_param(g["w"][0])}
        if g["bias"] is not None:
            params["bias"] = g["bias"]
        params.update(stride=g["stride"], padding=g["padding"], dilation=g["dilation"])
        if ex.kind == "conv_value":
            params["step"] = g["row"] * g["out_shape"][1] + g["col"]
        return "/conv?" + urlencode(params)
    if ex.kind == "pool":
        return "/pool?" + urlencode({"input": "grid", "grid": _grid_param(g["x"]), "kind": g["mode"],
                                     "size": g["size"], "stride": g["stride"]})
    return None


def exercise_context(ex: Exercise) -> dict:
    """Everything the exercise part of the page shows, except the answer state."""
    return {
        "kind": ex.kind, "seed": ex.seed, "level": ex.level, "kind_name": _(KIND_NAMES[ex.kind]),
        "level_name": _(LEVEL_NAMES[ex.level]), "prompt": prompt(ex), "givens": givens_view(ex),
        "next_url": practice_url(ex.kind, min(ex.seed + 1, MAX_SEED), ex.level),
        "self_url": practice_url(ex.kind, ex.seed, ex.level),
        "solution_url": practice_url(ex.kind, ex.seed, ex.level, solution=1),
        "stepper_url": stepper_url(ex),
    }


def choices(kind: str, level: int) -> dict:
    return {
        "kinds": [{"value": k, "label": _(KIND_NAMES[k]), "selected": k == kind} for k in KINDS],
        "levels": [{"value": v, "label": _(LEVEL_NAMES[v]), "selected": v == level} for v in LEVELS],
    }
