"""What one request may cost (app/budget.py), issue 12: bounded work per request (finding 1),
deeply nested JSON (10), a full or read-only upload folder (11), models too large to load
back (12) and the total quota of stored uploads (finding 4).

Every refusal is asserted on the estimate and its message, not on time or memory; the
memory itself is measured by benchmarks/worst_request.py.
"""

from __future__ import annotations

import errno
import io
import json
import os
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from test_images import api, settings  # noqa: F401 (fixtures)

from cnnlab.app import budget, images
from cnnlab.app.budget import check_conv, conv_cost, json_body_problem, largest_model_spec, model_file_limit
from cnnlab.app.jobs import build_model, export_npz
from cnnlab.app.settings import get_settings

SIDE = 1024  # the largest stored side (Settings.max_stored_side)


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    """A smooth picture (it compresses, so it is quick to make): the pixels do not matter here."""
    y, x = np.mgrid[0:height, 0:width]
    layers = [(x * 255 // width), (y * 255 // height), ((x + y) % 256)]
    pixels = np.stack(layers, axis=-1).astype(np.uint8)
    img = Image.fromarray(pixels if mode == "RGB" else pixels[..., 0])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def upload(api, data: bytes) -> str:
    r = api.post("/api/images", files={"file": ("p.png", data, "image/png")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


# ============================================================================== finding 1


def test_the_issue_request_is_estimated_and_refused(settings):
    # 1024² gray, 64 kernels of 15×15, padding 64: 64·1138·1138 numbers, 18.6 G multiply-adds.
    cost = conv_cost(1, SIDE, SIDE, 64, 15, 15, stride=1, padding=64)
    assert (cost.Ho, cost.Wo, cost.values) == (1138, 1138, 64 * 1138 * 1138)
    assert cost.work == cost.values * 225
    with pytest.raises(budget.BudgetError):
        check_conv(cost, settings, answer_values=True)
    with pytest.raises(budget.BudgetError):
        check_conv(cost, settings, answer_values=False)


def test_the_conv_pages_largest_views_are_within_the_limits(settings):
    # The form's maxima (app/conv_state.py): 4 filters, 7×7, padding 8, on a 1024² RGB upload;
    # a 1×1 kernel leaves the largest map, a 7×7 one needs the most multiply-adds.
    from cnnlab.app.conv_state import MAX_FILTERS, MAX_KERNEL, MAX_PADDING

    for k in (1, MAX_KERNEL):
        check_conv(conv_cost(3, SIDE, SIDE, MAX_FILTERS, k, k, padding=MAX_PADDING), settings, answer_values=False)
    # and one filter's full-resolution map can be answered as JSON
    check_conv(conv_cost(3, SIDE, SIDE, 1, 1, 1, padding=MAX_PADDING), settings, answer_values=True)


def test_api_conv_refuses_the_issue_request_and_answers_the_largest_allowed(api):
    image_id = upload(api, png(SIDE, SIDE))
    kernel = [[[1] * 15] * 15] * 64
    r = api.post("/api/conv?lang=en", json={"image_id": image_id, "kernel": [[k] for k in kernel], "padding": 64})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "64·1138·1138" in detail and "1,200,000" in detail  # the estimate and the limit, named
    # The largest upload, one 7×7 filter, padding 8: the whole map answers, and it steps.
    body = {"image_id": image_id, "color": "rgb", "kernel": [[1] * 7] * 7, "padding": 8}
    r = api.post("/api/conv", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["output_shape"] == [1034, 1034]
    r = api.post("/api/conv/step", json={**body, "step": 1034 * 1034 - 1})
    assert r.status_code == 200 and r.json()["steps"] == 1034 * 1034


def test_conv_page_and_pictures_say_when_the_full_resolution_maps_are_past_the_limit(client, settings, html):
    small = settings.model_copy(update={"max_map_values": 10_000})
    client.app.dependency_overrides[get_settings] = lambda: small
    query = "/conv?image=chelsea&size=10&kernel=sobel_x|sobel_y&lang=en"
    r = client.get(query)
    assert r.status_code == 422
    problems = html(r).select("#conv-problems li")
    assert any("at most 10,000 are computed for one request" in li.get_text() for li in problems)
    assert client.get("/conv/output.png" + query[5:]).status_code == 422
    client.app.dependency_overrides[get_settings] = lambda: settings
    assert client.get(query).status_code == 200


# ------------------------------------------------------------------------------ request bodies


def test_json_bodies_are_counted_before_they_are_parsed(settings):
    assert json_body_problem(b'{"kernel": [[1, 2], [3, 4]]}', settings) is None
    assert json_body_problem(b"[]," * 20_000, settings)[1] == 413  # lists
    assert json_body_problem(b"0," * 1_300_000, settings)[1] == 413  # values
    # the largest body a route reads: a 1024×1024 grid and a kernel
    grid = json.dumps({"input": [[255] * SIDE] * SIDE, "kernel": [[[[1] * 15] * 15] * 4] * 64}).encode()
    assert json_body_problem(grid, settings) is None


@pytest.mark.parametrize("path", ["/api/class/ABCDE/answer", "/api/class/ABCDE/view", "/api/conv",
                                  "/api/practice/check", "/api/softmax"])
def test_deeply_nested_json_is_a_400_with_a_message(client, path):
    r = client.post(path + "?lang=en", content=b"[" * 100_000, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "nested too deeply: at most 32 levels" in r.json()["detail"]


def test_nesting_up_to_the_limit_passes_the_check(client):
    levels = budget.MAX_JSON_DEPTH - 1  # inside the body's object
    deep = b"[" * levels + b"]" * levels
    r = client.post("/api/softmax", content=b'{"logits": ' + deep + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 422  # read and refused by the route: not a number list
    r = client.post("/api/softmax", content=b'{"logits": [' + deep + b"]}", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_predict_bodies_are_refused_by_size_before_they_are_parsed(client):
    rows = b"[0]," * 4_000_000  # the issue's 16 MB body of 4M rows
    for path in ("/api/train/nojob/predict", "/train/jobs/nojob/predict"):
        r = client.post(path + "?lang=en", content=b'{"grid": [' + rows[:-1] + b"]}",
                        headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert "at most 32 KB are accepted here" in r.text
    # chunked, without a declared length, too
    r = client.post("/api/train/nojob/predict", content=iter([b'{"grid": [', rows[:100_000], b"[0]]}"]),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    # a drawn 28×28 digit in full precision gets through (to the route: no such job)
    grid = [[0.12345678901234568] * 28 for _ in range(28)]
    assert client.post("/api/train/nojob/predict", json={"grid": grid}).status_code == 404


# ============================================================================== finding 11


@pytest.mark.parametrize("code, status, words", [(errno.ENOSPC, 507, "no room left"), (errno.EROFS, 503, "read-only")])
def test_a_full_or_read_only_upload_folder_is_said_and_the_rest_still_works(api, monkeypatch, code, status, words):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(images.tempfile, "mkstemp", refuse)
    data = png(40, 30)
    r = api.post("/api/images?lang=en", files={"file": ("p.png", data, "image/png")})
    assert r.status_code == status
    assert words in r.json()["detail"]
    r = api.post("/conv/upload?lang=en", files={"file": ("p.png", data, "image/png")}, data={"state": "preset=seed"})
    assert r.status_code == status
    assert words in r.text
    assert api.get("/conv?preset=seed").status_code == 200


# ============================================================================== finding 4: the quota


def test_the_oldest_uploads_go_when_the_store_is_over_its_quota(api, settings):
    quota = settings.model_copy(update={"max_upload_store_bytes": 16 * 2**20})
    api.app.dependency_overrides[get_settings] = lambda: quota
    folder = settings.upload_dir
    folder.mkdir(parents=True)
    now = time.time()
    old = []
    for i in range(5):  # 5 × 4 MB (sparse files), oldest first
        path = folder / f"{i:032x}.png"
        with open(path, "wb") as fh:
            fh.truncate(4 * 2**20)
        os.utime(path, (now - 100 + i, now - 100 + i))
        old.append(path)
    stray = folder / "notes.txt"  # not ours: never counted, never deleted
    stray.write_bytes(b"x" * 1000)
    image_id = upload(api, png(40, 30))
    assert (folder / f"{image_id}.png").exists() and stray.exists()
    assert [p.exists() for p in old] == [False, False, True, True, True]
    assert sum(p.stat().st_size for p in folder.glob("*.png")) <= 16 * 2**20


# ============================================================================== finding 12


def test_the_largest_model_the_form_allows_loads_back(client):
    spec = largest_model_spec()
    assert (spec.dataset, spec.filters, spec.hidden, spec.pool_size) == ("mnist", 16, 128, 1)
    model = build_model(spec)
    data = export_npz(SimpleNamespace(model=model, spec=spec, cond=threading.Lock()))
    assert len(data) > 5 * 2**20  # larger than the old 5 MB cap
    assert len(data) <= model_file_limit()
    r = client.post("/api/train/load", files={"file": ("model.npz", data, "application/octet-stream")})
    assert r.status_code == 201, r.text
    r = client.post("/api/train/load?lang=en", files={"file": ("m.npz", data + b"\0" * model_file_limit(),
                                                               "application/octet-stream")})
    assert r.status_code in (400, 413, 422) and "too large" in r.json()["detail"]


@pytest.mark.parametrize("fields", [
    {"dataset": "mnist", "filters": 16, "kernel": 7, "padding": 3, "pool_size": 1, "hidden": 128},
    {"dataset": "mnist", "filters": 16, "kernel": 1, "padding": 3, "pool_size": 1, "hidden": 0},
    {"dataset": "digits", "filters": 16, "kernel": 1, "padding": 3, "pool_size": 1, "hidden": 128},
])
def test_other_large_models_fit_the_limit_too(fields):
    spec = largest_model_spec().model_copy(update=fields)
    saved = export_npz(SimpleNamespace(model=build_model(spec), spec=spec, cond=threading.Lock()))
    assert len(saved) <= model_file_limit()


@pytest.mark.parametrize("F", [1, 8])
def test_wide_bands_give_the_same_maps_as_the_naive_loop(F):
    # A 15×15 RGB kernel over a 200-wide output: one row's im2col (676 × 200 numbers) is more
    # than a band, the case the engine multiplies in NumPy's own loop instead of OpenBLAS's.
    from cnnlab.core.conv import conv_forward, conv_forward_naive

    rng = np.random.default_rng(F)
    x, w, b = rng.normal(size=(1, 3, 16, 214)), rng.normal(size=(F, 3, 15, 15)), rng.normal(size=F)
    out, _cache = conv_forward(x, w, b)
    assert out.shape == (1, F, 2, 200)
    np.testing.assert_allclose(out, conv_forward_naive(x, w, b), rtol=1e-10, atol=1e-9)
