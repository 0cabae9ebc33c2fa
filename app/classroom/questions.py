"""Quick questions: the assistant asks about the view shown, the engine computes the answer
from the view's own URL state (the same parsers as the pages), students answer with a
number, and the assistant sees the answers grouped as a histogram."""

from __future__ import annotations

import math
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from starlette.requests import Request

from cnnlab.app.classroom.room import Question
from cnnlab.app.errors import InputError
from cnnlab.app.i18n import gettext as _
from cnnlab.app.settings import Settings
from cnnlab.core.numfmt import round_half_up

__all__ = ["HISTOGRAM_BARS", "QUESTION_KINDS", "format_value", "histogram", "make_question", "next_value_question",
           "output_size_question", "param_count_question", "parse_answer"]

# At most this many bars in the answers' histogram; the rest are counted as "other".
HISTOGRAM_BARS = 8

QUESTION_KINDS = ("next_value", "output_size", "param_count")


def make_question(kind: str, view: str | None, request: Request, settings: Settings, qid: int) -> Question:
    """A question of ``kind`` about ``view``, its answer computed by the engine; a 409 with a
    sentence when the view has no such question."""
    if kind not in QUESTION_KINDS:
        raise InputError(_("There is no question of that kind."), field="kind")
    if kind == "output_size":
        return output_size_question(view, request, settings, qid)
    if kind == "param_count":
        return param_count_question(view, settings, qid)
    return next_value_question(view, request, settings, qid)


def _view_params(view: str | None) -> tuple[str, dict[str, str]]:
    if not view:
        raise InputError(_("Open the convolution or pooling stepper first: the question is about what it shows."),
                         status_code=409)
    parts = urlsplit(view)
    if parts.path not in ("/conv", "/pool"):
        raise InputError(_("Quick questions work on the convolution and pooling steppers: open one of them first."),
                         status_code=409)
    return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))


def _invalid_view() -> InputError:
    return InputError(_("The page shown has invalid settings: fix them before asking."), status_code=409)


def _conv_view(params: dict[str, str], settings: Settings):
    """The /conv view's parsed state (``app.conv_state.read_state``); a 409 when it is invalid."""
    from cnnlab.app.conv_state import read_state

    parsed = read_state(params, settings)
    if not parsed.ok or parsed.geometry is None:
        raise _invalid_view()
    if parsed.state.op not in ("conv", "pointwise"):  # the separable and transposed kinds step differently
        raise InputError(_("Quick questions work on the ordinary and the 1×1 convolution: choose one of them first."),
                         status_code=409)
    return parsed


def _pool_view(params: dict[str, str], request: Request):
    """The /pool view (``read_pool``); a 409 when it is invalid."""
    from cnnlab.app.routers.lesson_pages import read_pool

    pv = read_pool(params, request)
    if pv.errors or pv.out is None:
        raise _invalid_view()
    return pv


def output_size_question(view: str | None, request: Request, settings: Settings, qid: int) -> Question:
    """"How many rows does the output have?" on the view shown, with the output-size formula."""
    from cnnlab.core.conv import output_size_formula, resolve_padding

    path, params = _view_params(view)
    if path == "/conv":
        parsed = _conv_view(params, settings)
        s = parsed.state
        H = parsed.x.shape[1]
        HH = s.kernel.shape[2]
        pad = resolve_padding(s.padding, HH, s.dilation, s.stride, H)
        answer, solution = parsed.geometry.Ho, output_size_formula(H, HH, s.stride, pad, s.dilation)
    else:
        pv = _pool_view(params, request)
        if pv.kind == "global_avg":
            raise InputError(_("Global average pooling always gives one value per channel: choose max or "
                               "average pooling to ask this."), status_code=409)
        H = pv.src.x.shape[1]
        answer = pv.out.shape[1]
        solution = output_size_formula(H, pv.size, pv.stride or pv.size)
    return Question(id=qid, kind="output_size", page=path.strip("/"), view=view or "", answer=float(answer),
                    tolerance=0.0, solution=solution)


def param_count_question(view: str | None, settings: Settings, qid: int) -> Question:
    """"How many parameters does this layer learn?": (K·K·C + 1)·F weights and biases for the
    convolution shown; a pooling layer learns none (the answer is 0, a question worth asking)."""
    path, params = _view_params(view)
    if path == "/pool":
        return Question(id=qid, kind="param_count", page="pool", view=view or "", answer=0.0, tolerance=0.0,
                        solution=_("Pooling learns no parameters: 0"))
    parsed = _conv_view(params, settings)
    F, C, HH, WW = parsed.state.kernel.shape
    answer = (HH * WW * C + 1) * F
    return Question(id=qid, kind="param_count", page="conv", view=view or "", answer=float(answer), tolerance=0.0,
                    solution=f"({HH}·{WW}·{C} + 1)·{F} = {answer}")


def next_value_question(view: str | None, request: Request, settings: Settings, qid: int) -> Question:
    """"What value comes next?" on the view shown: the value of the step after the current one,
    computed by the engine from the view's own URL state (the same parsers as the pages)."""
    from cnnlab.app.conv_state import MODES
    from cnnlab.core.conv import conv_step, format_number

    path, params = _view_params(view)
    if path == "/conv":
        parsed = _conv_view(params, settings)
        s, g = parsed.state, parsed.geometry
        steps = s.F * g.Ho * g.Wo
        k = s.step + 1
        _check_next(k, steps)
        bias = None if s.bias is None else np.array(s.bias)
        st = conv_step(parsed.x, s.kernel, bias, stride=s.stride, padding=s.padding, dilation=s.dilation,
                       mode=MODES[s.mode], step=k)
        value, solution = st.value, st.text
        if s.relu:
            value = max(value, 0)
            solution += f"; ReLU({format_number(st.value)}) = {format_number(value)}"
        channel = st.filter + 1 if s.F > 1 else None
        row, col = st.row, st.col
    else:
        pv = _pool_view(params, request)
        k = pv.step + 1
        _check_next(k, pv.out.size)
        st = pv.step_at(k)
        value, solution = st.value, st.text
        channel = st.channel + 1 if pv.out.shape[0] > 1 else None
        row, col = st.row, st.col
    value = float(value)
    whole = value == round(value)
    tolerance = 0.0 if whole else max(0.01, 0.005 * abs(value))
    return Question(id=qid, kind="next_value", page=path.strip("/"), view=view or "", step=k, row=row + 1, col=col + 1, channel=channel,
                    answer=value, tolerance=tolerance, solution=solution)


def _check_next(k: int, steps: int) -> None:
    if k >= steps:
        raise InputError(_("This is the last step: there is no next value. Go back a step and ask again."),
                         status_code=409)


def parse_answer(text: str) -> float:
    """A typed number ("−3", "2,5", "78"); a 422 with a sentence otherwise."""
    from cnnlab.app.conv_state import parse_number

    text = (text or "").strip()
    if not text:
        raise InputError(_("Type a number before sending."), field="value")
    try:
        v = float(parse_number(text[:40], cell=True))
    except ValueError:
        raise InputError(_("“%(value)s” is not a number.") % {"value": text[:40]}, field="value") from None
    if not math.isfinite(v) or abs(v) > 1e12:
        raise InputError(_("“%(value)s” is not a number.") % {"value": text[:40]}, field="value")
    return v


def format_value(v: float) -> str:
    from cnnlab.core.conv import format_number

    return format_number(int(v) if v == round(v) and abs(v) < 2**53 else v)


def histogram(q: Question) -> list[dict]:
    """The answers grouped by value (as shown, so 2.50 and 2.5 are one bar), most common first:
    [{"label", "count", "right"}]; beyond HISTOGRAM_BARS, one "other" bar (label None)."""
    groups: dict[str, list[float]] = {}
    for v in list(q.answers.values()):
        groups.setdefault(format_value(float(round_half_up(v, 4))), []).append(v)
    bars = sorted(({"label": label, "count": len(vs), "value": vs[0], "right": q.is_right(vs[0])}
                   for label, vs in groups.items()), key=lambda b: (-b["count"], b["value"]))
    if len(bars) > HISTOGRAM_BARS:
        rest = bars[HISTOGRAM_BARS - 1:]
        bars = bars[:HISTOGRAM_BARS - 1] + [{"label": None, "count": sum(b["count"] for b in rest), "value": None,
                                              "right": False}]
    return bars
