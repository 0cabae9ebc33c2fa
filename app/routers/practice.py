"""Practice: generated exercises with worked solutions (``core.exercises``), a printable
worksheet, and their JSON twin under ``/api/practice``.

    GET  /practice?kind=&level=&seed=[&solution=k|all]   the exercise (no seed: a new one, redirected
                                                         to its address so it can be shared)
    POST /practice/check                                 the typed cells c0, c1, … → verdict, score
    GET  /practice/worksheet?seed=&n=&level=[&kind=]     N exercises and an answer key, for print
    GET  /api/practice?kind=&level=&seed=                the exercise as JSON (no answer)
    GET  /api/practice/solution?kind=&level=&seed=       the answer and the worked steps
    POST /api/practice/check                             {"kind", "seed", "level", "answer"} → verdict

The same (kind, seed, level) always gives the same exercise, so one address serves a class.
htmx swaps ``#practice-exercise`` after a check and ``#practice-solution`` step by step;
without JavaScript both are ordinary form submissions and links.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cnnlab.app import practice as view
from cnnlab.app.api_schema import api_errors, page_errors, redirect
from cnnlab.app.errors import InputError
from cnnlab.app.guards import page_status
from cnnlab.app.i18n import gettext as _
from cnnlab.app.ratelimit import limit
from cnnlab.app.templating import render
from cnnlab.core.exercises import KINDS, LEVELS, MAX_SEED, Exercise, check, generate, solution

router = APIRouter(tags=["practice"])

KindName = Literal[KINDS]  # type: ignore[valid-type]


def _exercise(kind: str | None, level: str | None, seed: str | None, *, default_kind: str | None = "conv_value"
              ) -> tuple[str, int, int | None]:
    try:
        return view.parse_kind(kind, default_kind), view.parse_level(level), view.parse_seed(seed)
    except view.BadParameter as exc:
        raise InputError(str(exc)) from None


def _page(request: Request, ex: Exercise, *, typed=None, verdict=None, counted=None, message: str = "",
          score: view.Score | None = None, upto: int | None | Literal["none"] = "none", fragment: str = "content",
          status_code: int = 200) -> Response:
    ctx: dict[str, Any] = {
        "ex": view.exercise_context(ex),
        "choices": view.choices(ex.kind, ex.level),
        "answer": view.answer_view(ex, typed, verdict),
        "verdict": view.verdict_view(verdict, counted),
        "message": message,
        "score": view.score_view(score or view.read_score(request)),
        "solution": None if upto == "none" else view.solution_view(ex, upto),
        "worksheet_url": f"/practice/worksheet?seed={ex.seed}&level={ex.level}&n={view.DEFAULT_WORKSHEET_N}",
    }
    return render(request, "practice.html", ctx, fragment=fragment, status_code=status_code)


@router.get("/practice", name="practice", response_class=HTMLResponse,
            responses={**redirect("No seed: to the address of a new exercise."), **page_errors(422)})
def practice_page(request: Request, kind: str | None = None, level: str | None = None, seed: str | None = None,
                  solution: str | None = None) -> Response:
    kind_, level_, seed_ = _exercise(kind, level, seed)
    if seed_ is None:
        # A bookmarked /practice?present=1 (projector mode, static/js/app.js) keeps it.
        keep = {k: v for k in ("present", "lang") if (v := request.query_params.get(k)) is not None}
        return RedirectResponse(view.practice_url(kind_, view.new_seed(), level_, **keep), status_code=303)
    ex = generate(kind_, seed_, level_)
    upto: int | None | Literal["none"] = "none"
    if solution:
        if solution == "all":
            upto = None
        elif solution.isdigit() and len(solution) < 6:
            upto = int(solution)
        else:
            raise InputError(_("“solution” must be a step number or “all”."))
    fragment = "solution" if request.headers.get("hx-target") == "practice-solution" else "content"
    if upto == "none":
        return _page(request, ex, upto=upto, fragment=fragment)
    score = view.read_score(request)
    view.reveal(score, view.exercise_key(ex.kind, ex.seed, ex.level))
    response = _page(request, ex, upto=upto, fragment=fragment, score=score)
    view.save_score(request, response, score)
    return response


@router.post("/practice/check", name="practice_check", response_class=HTMLResponse,
             responses=page_errors(400, 403, 422, 429))
async def practice_check(request: Request) -> Response:
    form = await request.form()
    kind_, level_, seed_ = _exercise(_text(form.get("kind")), _text(form.get("level")), _text(form.get("seed")),
                                     default_kind=None)
    if seed_ is None:
        raise InputError(_("The seed is missing: open the exercise again from its address."))
    ex = generate(kind_, seed_, level_)
    fragment = "exercise"
    typed = view.read_answer(form, ex.answer.shape)
    if typed.values is None:
        return _page(request, ex, typed=typed, message=typed.message, fragment=fragment,
                     status_code=page_status(request, True))
    limit(request, "answers")
    verdict = check(ex, typed.values)
    score = view.read_score(request)
    counted = view.record(score, view.exercise_key(ex.kind, ex.seed, ex.level), verdict.correct)
    response = _page(request, ex, typed=typed, verdict=verdict, counted=counted, score=score, fragment=fragment)
    view.save_score(request, response, score)
    return response


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


@router.get("/practice/worksheet", name="practice_worksheet", response_class=HTMLResponse,
            responses={**redirect("No seed: to the address of a new worksheet."), **page_errors(422)})
def practice_worksheet(request: Request, seed: str | None = None, n: str | None = None, level: str | None = None,
                       kind: str | None = None) -> Response:
    kind_, level_, seed_ = _exercise(kind or "conv_value", level, seed)
    kind_ = kind_ if kind else ""      # no kind: every kind in turn
    try:
        count = view.parse_count(n)
    except view.BadParameter as exc:
        raise InputError(str(exc)) from None
    if seed_ is None:
        params = {"seed": view.new_seed(), "n": count, "level": level_, **({"kind": kind_} if kind_ else {})}
        return RedirectResponse("/practice/worksheet?" + urlencode(params), status_code=303)
    kinds = [kind_] if kind_ else list(KINDS)
    items = []
    for i in range(count):
        k = kinds[i % len(kinds)]
        s = min(seed_ + i // len(kinds), MAX_SEED)
        ex = generate(k, s, level_)
        items.append({"n": i + 1, "ex": view.exercise_context(ex), "answer": view.answer_view(ex),
                      "key": view.answer_text(ex),
                      # one number: the line that gives it; a grid's last line would show one cell only
                      "last": solution(ex)[-1].text if ex.answer.shape == () else ""})
    ctx = {"items": items, "seed": seed_, "level": level_, "count": count, "kind": kind_,
           "choices": view.choices(kind_ or "conv_value", level_), "max_n": view.MAX_WORKSHEET_N}
    return render(request, "practice_worksheet.html", ctx, fragment=None)


# ============================================================================== JSON twin


Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="any whole number; the same seed gives the same exercise")]
Level = Annotated[int, Field(ge=min(LEVELS), le=max(LEVELS), description="1: the slides' sizes; 2: stride, padding, "
                             "bias; 3: channels, dilation")]
AnswerValue = Annotated[Any, WithJsonSchema({
    "description": "a number, a list of numbers or a list of rows of numbers: the shape of answer_shape",
    "anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}},
              {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}]})]


class ExerciseResponse(BaseModel):
    kind: str
    seed: int
    level: int
    prompt: str = Field(description="what to compute, in the request's language")
    givens: dict[str, Any] = Field(description="the numbers the student is given (x: C×H×W, w: C×K×K, …)")
    answer_shape: list[int] = Field(description="[] for one number, [n] for a vector, [rows, cols] for a grid")
    tolerance: float = Field(description="0 for an exact whole number; otherwise |answer − exact| ≤ tolerance")


class StepResponse(BaseModel):
    key: str
    label: str
    text: str = Field(description="the maths with the numbers filled in, e.g. 35·(−2) + … = 78")
    cells: list[list[int]]


class SolutionResponse(ExerciseResponse):
    answer: Any = Field(description="the exact answer (reals to full precision)")
    steps: list[StepResponse]


class CheckBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    kind: KindName  # type: ignore[valid-type]
    seed: Seed
    level: Level = 1
    answer: AnswerValue


class CheckResponse(BaseModel):
    correct: bool
    wrong: Any = Field(description="true where a cell is wrong, in the answer's shape")
    tolerance: float


def _api_exercise(kind: str, seed: int | None, level: int) -> Exercise:
    if kind not in KINDS:
        raise InputError(_("There is no exercise kind “%(kind)s”; the kinds are: %(kinds)s.")
                         % {"kind": kind[:40], "kinds": ", ".join(KINDS)})
    return generate(kind, view.new_seed() if seed is None else seed, level)


def _exercise_json(ex: Exercise) -> dict:
    return {"kind": ex.kind, "seed": ex.seed, "level": ex.level, "prompt": view.prompt(ex), "givens": ex.givens,
            "answer_shape": list(ex.answer.shape), "tolerance": ex.tolerance}


@router.get("/api/practice", response_model=ExerciseResponse, tags=["api"], responses=api_errors(422))
def api_practice(kind: Annotated[str, Query(max_length=40)] = "conv_value",
                 seed: Annotated[int | None, Query(ge=0, le=MAX_SEED)] = None,
                 level: Annotated[int, Query(ge=1, le=3)] = 1) -> dict:
    """One exercise: its givens and the shape of its answer (not the answer; see /api/practice/solution)."""
    return _exercise_json(_api_exercise(kind, seed, level))


@router.get("/api/practice/solution", response_model=SolutionResponse, tags=["api"], responses=api_errors(422))
def api_practice_solution(kind: Annotated[str, Query(max_length=40)],
                          seed: Annotated[int, Query(ge=0, le=MAX_SEED)],
                          level: Annotated[int, Query(ge=1, le=3)] = 1) -> dict:
    """The exercise with its answer and its worked solution, step by step."""
    ex = _api_exercise(kind, seed, level)
    steps = [{"key": s.key, "label": view.step_label(s), "text": s.text, "cells": [list(c) for c in s.cells]}
             for s in solution(ex)]
    return {**_exercise_json(ex), "answer": ex.answer.tolist(), "steps": steps}


def _answer_array(value: Any) -> np.ndarray:
    """A number or (nested) lists of finite numbers; text, booleans, NaN and ∞ are refused with a clear message."""

    def walk(v: Any, where: str, depth: int) -> None:
        if isinstance(v, list):
            if depth >= 2:
                raise InputError(_("answer%(where)s: an answer is a number, a list or a list of rows.") % {"where": where})
            for i, item in enumerate(v):
                walk(item, f"{where}[{i}]", depth + 1)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(_("answer%(where)s is not a number.") % {"where": where})
        elif isinstance(v, float) and not math.isfinite(v):
            raise InputError(_("answer%(where)s is not a finite number (NaN or infinity).") % {"where": where})
        elif abs(v) > 1e15:
            raise InputError(_("answer%(where)s is too large.") % {"where": where})

    walk(value, "", 0)
    try:
        return np.array(value, dtype=np.float64)
    except ValueError:
        raise InputError(_("The answer must be rectangular: every row needs the same number of values.")) from None


@router.post("/api/practice/check", response_model=CheckResponse, tags=["api"], responses=api_errors(400, 403, 422, 429))
def api_practice_check(request: Request, body: CheckBody) -> dict:
    """Check an answer cell by cell: exact for whole numbers, within the stated tolerance for reals."""
    ex = generate(body.kind, body.seed, body.level)
    a = _answer_array(body.answer)
    if a.shape != ex.answer.shape:
        raise InputError(_("The answer has shape %(got)s but this exercise needs %(want)s.")
                         % {"got": list(a.shape), "want": list(ex.answer.shape)})
    limit(request, "answers")
    verdict = check(ex, a)
    return {"correct": verdict.correct, "wrong": verdict.wrong.tolist(), "tolerance": ex.tolerance}

