"""The convolution stepper: a kernel stepping across the seed's matrix, a typed grid or a
picture, every dot product written out (lesson sections 3 and 4).

The whole view lives in the URL, so every view is a link (see ``conv_page`` for the
format). One URL answers three ways:

- a normal request: the full page;
- an htmx request aimed at ``#conv-stepper`` (a step: next, previous, a clicked output
  cell): only the stepper, which is one ``conv_step`` on the working-size array plus a
  lookup in a cached feature map;
- any other htmx request (a changed setting): the stepper, the settings and the pictures
  (``#conv-lab``), with ``HX-Push-Url`` set to the tidy (canonical) address.

Bad values never give a 500: the page is rendered (status 200, so htmx swaps it) with a
translated message next to the control, and a kernel that does not fit gets the output-size
formula with the numbers filled in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cnnlab.app.api_schema import PNG, page_errors, redirect
from cnnlab.app.errors import InputError
from cnnlab.app.guards import page_status
from cnnlab.app.i18n import N_
from cnnlab.app.i18n import gettext as _
from cnnlab.app.lesson import nav_context
from cnnlab.app.ratelimit import limit
from cnnlab.app.settings import Settings, get_settings, settings_for
from cnnlab.app.templating import add_vary, locale_links, render, wants_fragment

router = APIRouter(tags=["conv"])

from cnnlab.app.conv_state import (
    DEFAULT_SIZE,
    FORM_ONLY,
    PNG_CACHE_CONTROL,
    Parsed,
    parse_number,
    read_state,
    working_array,
)
from cnnlab.app.conv_view import (
    build_form,
    build_result,
    build_stepper,
    channel_names,
    colourize,
    depthwise_map,
    enlarge,
    feature_map,
    formula_view,
    input_picture,
    png_bytes,
    png_cache,
    shown_map,
)
from cnnlab.app.conv_more_view import kind_panel
from cnnlab.app.routers import conv_more_api
from cnnlab.app.uploads import page_state, picture_chosen, read_upload_form, store_upload

# ============================================================================== routes


def _render_conv(request: Request, parsed: Parsed, settings: Settings, *, block: str,
                 extra_headers: Mapping[str, str] | None = None, upload_error: str | None = None,
                 upload_status: int = 422) -> HTMLResponse:
    s = parsed.state
    stepper = None
    if parsed.ok:
        stepper = build_stepper(s, parsed.x, parsed.geometry)
    context: dict[str, Any] = {"stepper": stepper, "errors": dict(parsed.errors), "fit": parsed.fit}
    step_query = s.query(step=s.step or None) if parsed.ok else urlencode(list(parsed.raw.items()))
    # "Open as notebook" (inside the stepper, so it follows every step): this very state. The
    # notebook writes out the ordinary convolution only (the 1×1 one is one too).
    notebook = parsed.ok and s.op in ("conv", "pointwise")
    context["notebook_url"] = f"{request.app.url_path_for('notebook', page='conv')}?{step_query}" if notebook else None
    context["kind"] = kind_panel(s, parsed.x, parsed.geometry) if parsed.ok else kind_panel(s, None, None)
    if block != "stepper":
        context["form"] = build_form(parsed)
        if upload_error:
            # Shown next to the upload control only: the stepper and its state stay as they were.
            context["form"]["errors"] = {**parsed.errors, "upload": upload_error}
        context["formula"] = formula_view(parsed)
        context["result"] = build_result(parsed, settings) if parsed.ok else None
        # The slides' 5×5 example is section 3; any other input is section 4.
        context["lesson"] = nav_context(request.app, 3 if s.kind == "seed" else 4)
        context["error_list"] = [(name, msg) for name, msg in context["errors"].items()]
    if step_query is not None:  # language links keep the state (the upload route's own URL is a POST)
        context["locales"] = locale_links(request, step_query, "/conv")
    fragment = block if block == "stepper" else "lab"
    # A full page with bad values is a 4xx (htmx gets 200: it swaps only 2xx responses).
    status = page_status(request, True, upload_status) if upload_error else page_status(request, parsed.errors)
    response = render(request, "conv.html", context, fragment=fragment, headers=extra_headers, status_code=status)
    add_vary(response, "HX-Target")
    return response


@router.get("/conv", name="conv", response_class=HTMLResponse,
            responses={**redirect("To the canonical address of this state."), **page_errors(422)})
async def conv_page(request: Request) -> Response:
    """The convolution stepper. Every parameter is optional; the defaults are the slides' example.

    Input (one of):
      ``preset=seed``   the slides' 5×5 matrix (the default);
      ``image=ID``      a sample name (``camera``, ``chelsea``, …) or an upload id, with
                        ``size`` = working size 5–32 (longest side, default 10) and
                        ``color`` = ``gray`` | ``rgb``;
      ``grid=ROWS``     typed values: rows separated by ``;``, values by ``,``
                        (``grid=1,2,3;4,5,6``), at most 10×10.
    Kernel:
      ``kernel=K``      filters separated by ``|`` (at most 4); in a filter, one kernel for all
                        channels or one per channel separated by ``/``; a kernel is a preset
                        name (seed, identity, box_blur, gaussian, sharpen, sobel_x, sobel_y,
                        laplacian, emboss, outline) or rows ``;`` values ``,``, 1×1 to 7×7.
                        ``kernel=sobel_x|1,0,-1;2,0,-2;1,0,-1`` is two filters.
      ``bias=B``        one number for every filter, or one per filter separated by ``,``.
    Where the kernel goes: ``stride`` 1–8, ``padding`` = ``valid`` | ``same`` | 0–8,
      ``dilation`` 1–4, ``mode`` = ``xcorr`` (cross-correlation, default) | ``conv``
      (convolution: the kernel flipped 180°), ``relu=1`` (apply ReLU to the output).
    Kind (``kind``, default the ordinary convolution; JSON twins under /api/conv/…):
      ``kind=pointwise``  a 1×1 convolution mixing channels (kernel 1×1 per channel, e.g.
                        ``kernel=1|1/0/-1``; ``preset=seed3`` is a 5×5×3 example and the default);
      ``kind=separable``  depthwise (``kernel`` = one k×k kernel per channel, joined by ``/``,
                        ``dbias`` one bias per channel) then pointwise (``pointwise=1,1,1|1,0,-1``:
                        filters of C weights; ``bias`` one per filter); steps: the C·Ho·Wo
                        depthwise values, then the F·Ho·Wo pointwise ones;
      ``kind=transposed`` a transposed convolution (``kernel`` as above, filter f's channel c =
                        conv_transpose2d's weight[c, f]; ``padding`` 0–8; no dilation);
                        Ho = (H − 1)·S − 2P + K; steps: one per input value and output map.
    ``step``: the output position, 0-based, row-major over filters, rows, columns.
    Negative numbers may use ``-`` or ``−``. The settings form also sends its editor cells
    (``w_f_c_i_j``, ``g_i_j``, ``b_f``) and choices (``source``, ``ksize``, ``filters``,
    ``use_f``, ``random``); they are folded into the canonical parameters above.
    """
    settings = settings_for(request.app)
    if wants_fragment(request) and request.headers.get("hx-target") == "conv-stepper":
        # A step (→, ←, a clicked cell) reads the arrays the page load cached, runs one
        # conv_step and renders the stepper: a few milliseconds, never a full-resolution
        # map. Handed to a worker thread, it costs more than the step itself once a class
        # steps at once, the threads queueing for the GIL (benchmarks/bench_stepper_load.py);
        # so it runs here. Only after a cache eviction does a step decode its picture again
        # (up to ~30 ms for a 1024-pixel upload), and then once.
        return _conv_view(request, settings)
    # The page and the settings may decode a picture and compute a full-resolution map.
    return await run_in_threadpool(_conv_view, request, settings)


def _conv_view(request: Request, settings: Settings) -> Response:
    parsed = read_state(request.query_params, settings)
    form_submission = any(FORM_ONLY.fullmatch(k) for k in request.query_params)
    htmx = wants_fragment(request)
    if form_submission and parsed.ok and not htmx:
        return RedirectResponse(parsed.state.url(parsed.state.step or None), status_code=303)
    block = "stepper" if htmx and request.headers.get("hx-target") == "conv-stepper" and parsed.ok else "lab"
    headers = {}
    if htmx and block == "lab" and parsed.ok:
        headers["HX-Push-Url"] = parsed.state.url(parsed.state.step or None)
    return _render_conv(request, parsed, settings, block=block, extra_headers=headers)


def _png_state(request: Request, settings: Settings) -> Parsed:
    parsed = read_state(request.query_params, settings)
    if not parsed.ok:
        raise InputError.of(parsed.errors)
    return parsed


def _png_response(content: bytes) -> Response:
    return Response(content, media_type="image/png",
                    headers={"cache-control": PNG_CACHE_CONTROL, "x-content-type-options": "nosniff"})


def _res(request: Request) -> str:
    res = request.query_params.get("res", "full")
    if res not in ("work", "full"):
        raise InputError(_("The resolution must be “work” or “full”."))
    return res


@router.get("/conv/output.png", name="conv_output_png", response_class=Response, responses={**PNG, **page_errors(404, 422)})
def conv_output_png(request: Request, settings: Settings = Depends(get_settings)) -> Response:
    """One filter's feature map as a picture (same parameters as /conv, plus ``filter``
    (0-based) and ``res`` = ``full`` (the stored picture, default) | ``work`` (the working
    size, enlarged)). Diverging blue–white–red when there are negative values, else gray."""
    parsed = _png_state(request, settings)
    s = parsed.state
    res = _res(request)
    if s.op == "transposed":
        res = "work"  # its output grows with the stride: computed at the working size only
    part = request.query_params.get("part", "")
    if part not in ("", "depthwise") or (part and s.op != "separable"):
        raise InputError(_("The part must be “depthwise”, and only for the depthwise-separable convolution."))
    n = s.channels if part else s.F
    f = _int_or_error(request.query_params.get("filter", "0"), 0, n - 1, N_("The filter must be from %(min)s to %(max)s."))

    def make() -> bytes:
        x = parsed.x if res == "work" else working_array(s, settings, "full")
        out = depthwise_map(s, x, res)[f] if part else shown_map(s, feature_map(s, x, res))[f]
        rgb, _legend = colourize(out)
        if res == "work":  # drawn under the stepper's grid; full-resolution pictures keep their size
            rgb = enlarge(rgb)
        return png_bytes(rgb)

    return _png_response(png_cache.get_or_make(("out", res, s.compute_key(res), s.relu, f, part), make))


@router.get("/conv/input.png", name="conv_input_png", response_class=Response, responses={**PNG, **page_errors(404, 422)})
def conv_input_png(request: Request, settings: Settings = Depends(get_settings)) -> Response:
    """The input as a picture (same parameters as /conv, plus ``res`` and ``channel``: a
    channel index shows that channel alone, tinted; none shows the whole picture)."""
    parsed = _png_state(request, settings)
    s = parsed.state
    res = _res(request)
    x = parsed.x if res == "work" else working_array(s, settings, "full")
    channel_text = request.query_params.get("channel")
    channel = None if channel_text in (None, "") else _int_or_error(
        channel_text, 0, x.shape[0] - 1, N_("The channel must be from %(min)s to %(max)s."))

    def make() -> bytes:
        rgb = input_picture(x, channel, channel_names(x.shape[0]))
        if res == "work":  # drawn under the stepper's grid; full-resolution pictures keep their size
            rgb = enlarge(rgb)
        return png_bytes(rgb)

    return _png_response(png_cache.get_or_make(("in", s.source_key(res), res, channel), make))


def _int_or_error(text: str, lo: int, hi: int, message: str) -> int:
    try:
        v = parse_number(text, cell=False)
    except ValueError:
        v = None
    if not isinstance(v, int) or not lo <= v <= hi:
        raise InputError(_(message) % {"min": lo, "max": hi})
    return v


@router.post("/conv/upload", name="conv_upload", response_class=HTMLResponse,
             responses={**redirect("Stored: the stepper on the new picture."), **page_errors(400, 413, 415, 422, 429, 503, 507)})
async def conv_upload(request: Request, settings: Settings = Depends(get_settings)) -> Response:
    """The page's upload form (multipart: ``file`` and ``state``, the current query string).

    Success: the stepper on the new picture (a redirect, or for htmx the lab fragment with
    ``HX-Push-Url``). A bad file: the same view as before with the message next to the
    upload control; nothing else changes.
    """
    state_text = page_state(request, "/conv")  # until the form's own state is read
    error = None
    error_status = 422
    stored = None
    try:
        # Too many uploads (429): the message shows next to the upload control, like a bad file's.
        limit(request, "uploads")
        form = await read_upload_form(request, settings)
        state_text = form.state
        stored = await store_upload(picture_chosen(form), settings)
    except InputError as exc:
        error, error_status = exc.message, exc.status_code
    params = dict(parse_qsl(state_text, keep_blank_values=True))
    if stored is not None:
        params.pop("step", None)
        for name in ("preset", "grid", "source"):
            params.pop(name, None)
        params["image"] = stored.id
        params.setdefault("size", str(DEFAULT_SIZE))
        params.setdefault("color", "gray")
    parsed = await run_in_threadpool(read_state, params, settings)
    htmx = wants_fragment(request)
    if stored is not None and parsed.ok and not htmx:
        return RedirectResponse(parsed.state.url(), status_code=303)
    headers = {"HX-Push-Url": parsed.state.url()} if stored is not None and parsed.ok else {}
    return await run_in_threadpool(
        lambda: _render_conv(request, parsed, settings, block="lab", extra_headers=headers, upload_error=error,
                              upload_status=error_status))


# The JSON twins of the kinds beyond the slides (/api/conv/pointwise, …/separable, …/transposed).
router.include_router(conv_more_api.router)
