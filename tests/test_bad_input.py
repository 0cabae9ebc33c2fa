"""The bad-input battery: uploads, page addresses with tampered state, and the JSON API.

Every row of ``BATTERY`` is one bad input sent by a student (or a script) who already has
something going in the same browser session: an uploaded picture and a finished training.
Each row must be answered with its 4xx status and a message in the request's language
(JSON ``detail`` under /api, a page showing the translated sentence otherwise), and
afterwards the app must still be up (``/healthz``) and the session's picture and training
must still work. ``HANDLED`` lists the awkward pictures that are not refused but converted
(the pixel values are recomputed here from the bytes that were sent).

Where the app deliberately answers with a default instead of an error, the row says so:
an unknown ``?lang=xx`` falls back to Spanish (200). A page whose state has errors answers
422 to a full request; an htmx request for the same address gets the same messages with
200, because htmx 2 only swaps 2xx responses (``test_htmx_gets_the_messages_with_200``).

Every picture is made here with Pillow or by hand; nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.app import images
from cnnlab.app.guards import MAX_BODY_BYTES, MAX_QUERY_BYTES
from cnnlab.app.i18n import gettext, use_locale
from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.settings import Settings, get_settings
from cnnlab.core.conv import output_size_formula

# ------------------------------------------------------------------------------ helpers


def tr(msgid: str, locale: str = "es", **params: Any) -> str:
    """The message as the app must write it: translated, then filled in."""
    with use_locale(locale):
        text = gettext(msgid)
    return text % params if params else text


def encode(img: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width×height 8-bit gray pixels whose data is one compressed row: a few
    dozen bytes that would expand to width·height bytes (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def gray_png(value: int = 90, size: tuple[int, int] = (12, 9)) -> bytes:
    return encode(Image.new("L", size, value))


def big_grid(rows: int, cols: int) -> str:
    return ";".join(",".join("1" for _ in range(cols)) for _ in range(rows))


@dataclass
class RawResponse:
    status_code: int
    headers: dict
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return json.loads(self.content)


def raw_get(s: Session, path: str, query: str) -> RawResponse:
    """GET straight through the ASGI app: httpx refuses URLs over 64 KB before sending them,
    and a browser or curl would not."""
    cookies = "; ".join(f"{k}={v}" for k, v in s.client.cookies.items())
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"testserver"), (b"cookie", cookies.encode())],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80), "app": cnnlab_app}
    sent: list = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    # In a thread of its own: a browser test earlier in the run leaves Playwright's event loop
    # running in this one, and asyncio.run refuses to start inside it.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, cnnlab_app(scope, receive, send)).result()
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return RawResponse(start["status"], headers, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


def page_text(response) -> str:
    return " ".join(BeautifulSoup(response.text, "html.parser").get_text(" ").split())


SETTINGS_BASE = {
    "secret_key": "bad-input-secret",
    # The battery uploads and answers many times in one session: the rate limits are not under test.
    "rate_uploads_burst": 10_000, "rate_trainings_burst": 100, "rate_answers_burst": 10_000,
}

# ------------------------------------------------------------------------------ the session under attack


@dataclass
class Session:
    client: TestClient
    settings: Settings
    image_id: str
    image_pixels: np.ndarray
    job_id: str
    job_accuracy: float
    foreign_job_id: str  # another browser's training
    foreign: TestClient
    extra: dict = field(default_factory=dict)

    def still_fine(self) -> None:
        """The app is up, and this session's picture and training still work."""
        c = self.client
        assert c.get("/healthz").json() == {"status": "ok"}
        stored = c.get(f"/images/{self.image_id}.png")
        assert stored.status_code == 200
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(stored.content))), self.image_pixels)
        conv = c.post("/api/conv", json={"image_id": self.image_id, "size": 4, "kernel": [[1]]})
        assert conv.status_code == 200, conv.text
        job = c.get(f"/api/train/{self.job_id}", params={"records": "false"})
        assert job.status_code == 200 and job.json()["status"] == "done"
        assert job.json()["metrics"]["test_accuracy"] == self.job_accuracy
        answer = c.post(f"/api/train/{self.job_id}/predict", json={"test_index": 0, "maps": False})
        assert answer.status_code == 200 and len(answer.json()["probabilities"]) == 10


def _wait_done(client: TestClient, job_id: str, timeout: float = 120.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        body = client.get(f"/api/train/{job_id}", params={"records": "false"}).json()
        if body["status"] in ("done", "stopped", "failed"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"training {job_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    settings = Settings(upload_dir=tmp_path_factory.mktemp("uploads"), **SETTINGS_BASE)
    cnnlab_app.dependency_overrides[get_settings] = lambda: settings
    try:
        with TestClient(cnnlab_app) as client:
            # Another browser: same app (and job runner), its own session cookie.
            foreign = TestClient(cnnlab_app)
            up = client.post("/api/images", files={"file": ("mine.png", gray_png(90), "image/png")})
            assert up.status_code == 201, up.text
            spec = {"dataset": "digits", "epochs": 1}
            job_id = client.post("/api/train", json=spec).json()["id"]
            foreign_job_id = foreign.post("/api/train", json=spec).json()["id"]
            done = _wait_done(client, job_id)
            assert done["status"] == "done"
            _wait_done(foreign, foreign_job_id)
            yield Session(client, settings, up.json()["id"], np.full((9, 12), 90, np.uint8), job_id,
                          done["metrics"]["test_accuracy"], foreign_job_id, foreign)
    finally:
        cnnlab_app.dependency_overrides.pop(get_settings, None)


# ------------------------------------------------------------------------------ the battery


@dataclass(frozen=True)
class Bad:
    """One bad request: ``send(session)`` makes it; ``status`` is the answer's; ``message``
    (session → expected text) is what the answer must say; ``api``: JSON detail, else a page."""

    send: Any
    status: int
    message: Any = None
    api: bool = True
    note: str = ""


def upload(name: str, data: bytes, mime: str = "application/octet-stream", path: str = "/api/images", **extra: Any):
    return lambda s: s.client.post(path, files={"file": (name, data, mime)}, **extra)


def get(url: str, **params: Any):
    return lambda s: s.client.get(url, params=params or None)


def post(url: str, body: Any = None, **kw: Any):
    return lambda s: s.client.post(url, json=body, **kw) if body is not None else s.client.post(url, **kw)


def fixed(msgid: str, locale: str = "es", **params: Any):
    return lambda s: tr(msgid, locale, **params)


PIXELS = images.MSG_TOO_MANY_PIXELS
PIXEL_PARAMS = {"limit": "4.000.000", "side": "2.000"}
BYTES = images.MSG_TOO_MANY_BYTES
CAP_ES = "5 MB"
TOO_LARGE = "%(value)s is too large (%(where)s): values must be between −%(limit)s and %(limit)s."
NOT_NUMBER = "“%(value)s” is not a number (%(where)s)."
NAN = "“%(value)s” is not allowed (%(where)s): enter a finite number, not NaN or infinity."
STRIDE = "The stride must be a whole number from %(min)s to %(max)s."
PADDING = "The padding must be “valid”, “same” or a whole number from 0 to %(max)s."
DILATION = "The dilation must be a whole number from %(min)s to %(max)s."
LONG_QUERY = "The address is too long: at most %(limit)s characters after the “?” are accepted."
DUPLICATE = "The parameter “%(name)s” appears more than once with different values; give it once."
TOO_BIG_BODY = "The request is too large: at most %(limit)s MB are accepted."
NO_STEP = "There is no step %(step)s: with these settings there are %(n)s steps, numbered 0 to %(last)s."
NO_IMAGE = "There is no image called “%(id)s”. Choose a sample or upload a picture."
NOT_FOUND_JOB = "There is no training job with this id in this browser (it may have expired)."
TRAIN_RANGE = "%(field)s must be from %(min)s to %(max)s."
API_TOO_LARGE = "%(name)s%(where)s is too large: values must be between −%(limit)s and %(limit)s."


def where(i: int, j: int, locale: str = "es") -> str:
    return tr("kernel, %(place)s", locale, place=tr("row %(row)s, column %(col)s", locale, row=i, col=j))


def chunked(total: int, piece: int = 256 * 1024):
    def body():
        sent = 0
        while sent < total:
            yield b"a" * piece
            sent += piece
    return body


def chunked_upload(s: Session):
    boundary = "XyZ"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(48):  # 12 MB, more than the 5 MB cap, never announced by a Content-Length
            yield b"\0" * (256 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    return s.client.post("/api/images", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})


def job_of_another_session(s: Session, how: str):
    j = s.foreign_job_id
    return {"get": lambda: s.client.get(f"/api/train/{j}"),
            "predict": lambda: s.client.post(f"/api/train/{j}/predict", json={"test_index": 0}),
            "stop": lambda: s.client.delete(f"/api/train/{j}"),
            "weights": lambda: s.client.get(f"/api/train/{j}/weights.npz"),
            "page": lambda: s.client.get(f"/train/jobs/{j}")}[how]()


def tampered_conv_upload(s: Session):
    return s.client.post("/conv/upload", data={"state": "preset=seed&stride=0"},
                         files={"file": ("ok.png", gray_png(120, (20, 20)), "image/png")})


BATTERY: list = [
    # ---- uploads: the JSON API
    pytest.param(Bad(upload("empty.png", b""), 400, fixed(images.MSG_EMPTY)), id="upload-zero-bytes"),
    pytest.param(Bad(upload("notes.jpg", b"just some text, not a picture\n" * 4, "image/jpeg"), 415,
                     fixed(images.MSG_NOT_AN_IMAGE)), id="upload-jpg-name-text-content"),
    pytest.param(Bad(upload("x.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><script>alert(1)'
                                     b'</script></svg>', "image/svg+xml"), 415, fixed(images.MSG_NOT_AN_IMAGE)),
                 id="upload-svg"),
    pytest.param(Bad(upload("x.tif", encode(Image.new("L", (8, 8), 7), "TIFF"), "image/tiff"), 415,
                     fixed(images.MSG_UNSUPPORTED_FORMAT, format="TIFF")), id="upload-tiff-unsupported"),
    pytest.param(Bad(upload("x.ico", encode(Image.new("RGB", (16, 16), (1, 2, 3)), "ICO")), 415,
                     fixed(images.MSG_UNSUPPORTED_FORMAT, format="ICO")), id="upload-ico-unsupported"),
    pytest.param(Bad(upload("cut.png", encode(Image.effect_noise((64, 64), 90).convert("L"))[:300]),
                     422, fixed(images.MSG_DAMAGED)), id="upload-truncated-png"),
    pytest.param(Bad(upload("zero.png", png_header_only(0, 5)), 422, fixed(images.MSG_NO_PIXELS)), id="upload-0x5-png"),
    pytest.param(Bad(upload("bomb.png", png_header_only(3000, 3000)), 413, fixed(PIXELS, **PIXEL_PARAMS)),
                 id="upload-bomb-over-our-limit"),
    pytest.param(Bad(upload("bomb.png", png_header_only(10_000, 10_000)), 413, fixed(PIXELS, **PIXEL_PARAMS)),
                 id="upload-bomb-pillow-warning-zone"),
    pytest.param(Bad(upload("bomb.png", png_header_only(60_000, 60_000)), 413, fixed(PIXELS, **PIXEL_PARAMS)),
                 id="upload-bomb-pillow-error-zone"),
    pytest.param(Bad(upload("poly.png", b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>"), 415,
                     fixed(images.MSG_NOT_AN_IMAGE)), id="upload-polyglot-png-signature-html-body"),
    pytest.param(Bad(upload("big.png", b"\x89PNG" + b"\0" * (5 * 1024 * 1024)), 413, fixed(BYTES, limit=CAP_ES)),
                 id="upload-one-byte-over-the-cap"),
    pytest.param(Bad(chunked_upload, 413, fixed(BYTES, limit=CAP_ES)), id="upload-chunked-without-length"),
    pytest.param(Bad(lambda s: s.client.post("/api/images", content=b"--b\r\n",
                                             headers={"content-type": "multipart/form-data; boundary=b",
                                                      "content-length": str(10**12)}),
                     # refused by the guard before any route, said as a file over the upload cap is
                     413, fixed(BYTES, limit=CAP_ES)), id="upload-declared-length-1TB"),
    pytest.param(Bad(lambda s: s.client.post("/api/images", content=b"--b\r\n",
                                             headers={"content-type": "multipart/form-data; boundary=b",
                                                      "content-length": str(6 * 2**20)}),
                     413, fixed(BYTES, limit=CAP_ES)), id="upload-declared-length-6MB"),
    pytest.param(Bad(lambda s: s.client.post("/api/images", data={"picture": "x"}, files={"other": ("a.png", b"x")}),
                     422, fixed(images.MSG_NO_FILE)), id="upload-no-file-field"),
    pytest.param(Bad(post("/api/images", {"file": "aGVsbG8="}), 422, fixed(images.MSG_NO_FILE)), id="upload-json-not-multipart"),
    pytest.param(Bad(lambda s: s.client.post("/api/images", content=b"garbage without boundaries",
                                             headers={"content-type": "multipart/form-data"}),
                     400, fixed(images.MSG_NO_FILE)), id="upload-broken-multipart"),
    # ---- uploads through the pages' forms (a page with the message; English when asked)
    pytest.param(Bad(upload("a.jpg", b"text", path="/conv/upload"), 415, fixed(images.MSG_NOT_AN_IMAGE), api=False),
                 id="conv-upload-text-es"),
    pytest.param(Bad(upload("a.jpg", b"text", path="/conv/upload?lang=en"), 415, fixed(images.MSG_NOT_AN_IMAGE, "en"),
                     api=False), id="conv-upload-text-en"),
    pytest.param(Bad(upload("b.png", png_header_only(3000, 3000), path="/grid/upload?lang=en"), 413,
                     fixed(PIXELS, "en", limit="4,000,000", side="2,000"), api=False), id="grid-upload-bomb-en"),
    pytest.param(Bad(upload("e.png", b"", path="/pipeline/upload"), 400, fixed(images.MSG_EMPTY), api=False),
                 id="pipeline-upload-empty"),
    pytest.param(Bad(tampered_conv_upload, 422, fixed(STRIDE, min=1, max=8), api=False,
                     note="good picture, tampered state field"), id="conv-upload-tampered-state"),
    # ---- /conv with tampered addresses
    pytest.param(Bad(get("/conv", preset="seed", kernel="1e308,1;1,1"), 422,
                     lambda s: tr(TOO_LARGE, value="1e308", where=where(1, 1), limit=1000), api=False),
                 id="conv-kernel-1e308"),
    pytest.param(Bad(get("/conv", preset="seed", kernel="1,2;NaN,4"), 422,
                     lambda s: tr(NAN, value="NaN", where=where(2, 1)), api=False), id="conv-kernel-nan"),
    pytest.param(Bad(get("/conv", preset="seed", kernel="1,Infinity;3,4", lang="en"), 422,
                     lambda s: tr(NAN, "en", value="Infinity", where=where(1, 2, "en")), api=False), id="conv-kernel-infinity-en"),
    pytest.param(Bad(get("/conv", preset="seed", kernel="1,abc;3,4"), 422,
                     lambda s: tr(NOT_NUMBER, value="abc", where=where(1, 2)), api=False), id="conv-kernel-text"),
    pytest.param(Bad(get("/conv", preset="seed", ksize="0"), 422,
                     fixed("The kernel size must be from %(min)s to %(max)s.", min=1, max=7), api=False), id="conv-kernel-0x0"),
    pytest.param(Bad(get("/conv", preset="seed", kernel=big_grid(8, 8)), 422,
                     fixed("The kernel is %(dims)s; a kernel can be from 1×1 up to %(max)s×%(max)s.", dims="8×8", max=7),
                     api=False), id="conv-kernel-8x8"),
    pytest.param(Bad(get("/conv", preset="seed", kernel="1,2,3;4,5"), 422,
                     fixed("Row %(row)s has %(got)s values but row 1 has %(want)s: every row needs the same number of values.",
                           row=2, got=2, want=3), api=False), id="conv-kernel-ragged"),
    pytest.param(Bad(get("/conv", preset="seed", stride="0"), 422, fixed(STRIDE, min=1, max=8), api=False), id="conv-stride-0"),
    pytest.param(Bad(get("/conv", preset="seed", stride="-1"), 422, fixed(STRIDE, min=1, max=8), api=False), id="conv-stride-neg"),
    pytest.param(Bad(get("/conv", preset="seed", stride=str(10**9), lang="en"), 422, fixed(STRIDE, "en", min=1, max=8),
                     api=False), id="conv-stride-1e9-en"),
    pytest.param(Bad(get("/conv", preset="seed", padding=str(10**9)), 422, fixed(PADDING, max=8), api=False),
                 id="conv-padding-huge"),
    pytest.param(Bad(get("/conv", preset="seed", dilation="0"), 422, fixed(DILATION, min=1, max=4), api=False),
                 id="conv-dilation-0"),
    pytest.param(Bad(get("/conv", preset="seed", kernel=big_grid(7, 7)), 422,
                     fixed("The kernel does not fit: with dilation %(d)s it covers %(span)s rows, but the padded input has "
                           "only %(padded)s (%(n)s + padding %(p)s). Use a smaller kernel or dilation, or more padding.",
                           d=1, span=7, padded=5, n=5, p=0), api=False), 
                 id="conv-kernel-bigger-than-padded-input"),
    pytest.param(Bad(lambda s: raw_get(s, "/conv", urlencode({"grid": big_grid(1000, 1000)})), 414, fixed(LONG_QUERY, limit=MAX_QUERY_BYTES), api=False),
                 id="conv-grid-1000x1000-typed"),
    pytest.param(Bad(get("/conv", grid=big_grid(11, 3)), 422,
                     fixed("A typed grid can be at most %(max)s×%(max)s.", max=10), api=False), id="conv-grid-11-rows"),
    pytest.param(Bad(get("/conv", preset="seed", kernel="|".join(["seed"] * 5)), 422,
                     fixed("There are %(n)s filters; at most %(max)s are allowed.", n=5, max=4), api=False),
                 id="conv-too-many-filters"),
    pytest.param(Bad(get("/conv", preset="seed", step=str(10**30)), 422, fixed(NO_STEP, step=10**30, n=9, last=8), api=False),
                 id="conv-step-beyond-output"),
    pytest.param(Bad(lambda s: s.client.get("/conv?preset=seed&stride=1&stride=0"), 400, fixed(DUPLICATE, name="stride"),
                     api=False), id="conv-duplicated-parameter"),
    pytest.param(Bad(lambda s: raw_get(s, "/conv", "preset=seed&note=" + "x" * 100_000), 414, fixed(LONG_QUERY, limit=MAX_QUERY_BYTES),
                     api=False), id="conv-100KB-query"),
    pytest.param(Bad(get("/conv", image="../../etc/passwd", size="10"), 422, fixed(NO_IMAGE, id="../../etc/passwd"),
                     api=False), id="conv-image-id-path"),
    pytest.param(Bad(get("/conv", image="0" * 32, size="10"), 422, fixed(images.MSG_GONE), api=False),
                 id="conv-image-id-unknown"),
    # ---- the other pages
    pytest.param(Bad(get("/pool", size="0"), 422,
                     fixed("The window size must be a whole number from %(min)s to %(max)s.", min=1, max=6), api=False),
                 id="pool-size-0"),
    pytest.param(Bad(get("/pool", step="99"), 422,
                     fixed("The step must be a whole number from %(min)s to %(max)s.", min=0, max=3), api=False),
                 id="pool-step-beyond-output"),
    pytest.param(Bad(get("/pool", input="conv", **{"from": "preset=seed&stride=0"}), 422,
                     lambda s: tr("The convolution settings carried over are not valid: %(problem)s",
                                  problem=tr(STRIDE, min=1, max=8)), api=False), id="pool-tampered-carried-conv-state"),
    pytest.param(Bad(get("/grid", size="1000", lang="en"), 422,
                     fixed("The size must be a whole number from %(min)s to %(max)s pixels.", "en", min=4, max=32), api=False),
                 id="grid-size-1000-en"),
    pytest.param(Bad(get("/grid", image="../../x"), 422, fixed(NO_IMAGE, id="../../x"), api=False), id="grid-image-id-path"),
    pytest.param(Bad(get("/local", h=str(10**9)), 422,
                     fixed("The height must be a whole number from %(min)s to %(max)s.", min=1, max=4096), api=False),
                 id="local-height-1e9"),
    pytest.param(Bad(get("/local", k="0"), 422,
                     fixed("The kernel size must be a whole number from %(min)s to %(max)s.", min=1, max=15), api=False),
                 id="local-kernel-0"),
    pytest.param(Bad(get("/activation", fn="softplus"), 422,
                     fixed("There is no activation called “%(name)s”: choose relu, sigmoid, tanh or leaky_relu.",
                           name="softplus"), api=False), id="activation-unknown-fn"),
    pytest.param(Bad(get("/pipeline", lr="NaN"), 422,
                     fixed("The learning rate must be a number greater than 0 and at most %(max)s.", max="10"), api=False),
                 id="pipeline-lr-nan"),
    pytest.param(Bad(get("/pipeline", show="conv-0-99-99"), 422,
                     fixed("“%(address)s” is not a number of this network. Click a number in the grids to see how it was "
                           "computed.", address="conv-0-99-99"), api=False), id="pipeline-position-beyond-output"),
    pytest.param(Bad(get("/train", epochs="0"), 422,
                     lambda s: tr(TRAIN_RANGE, field=tr("Epochs"), min=1, max=30), api=False), id="train-epochs-0"),
    pytest.param(Bad(get("/train", epochs=str(10**6), lang="en"), 422,
                     lambda s: tr(TRAIN_RANGE, "en", field="Epochs", min=1, max=30), api=False), id="train-epochs-1e6-en"),
    pytest.param(Bad(get("/train", lr="NaN"), 422,
                     lambda s: tr("%(field)s must be %(kind)s.", field=tr("Learning rate"), kind=tr("a number")), api=False),
                 id="train-lr-nan"),
    pytest.param(Bad(get("/train", dataset="imagenet"), 422,
                     fixed("Unknown dataset “%(name)s”: choose 8×8 digits or MNIST.", name="imagenet"), api=False),
                 id="train-unknown-dataset"),
    pytest.param(Bad(get("/train", optimizer="rmsprop"), 422,
                     lambda s: tr("“%(value)s” is not a choice for %(field)s.", value="rmsprop", field=tr("Optimizer")),
                     api=False), id="train-unknown-optimizer"),
    pytest.param(Bad(lambda s: job_of_another_session(s, "page"), 404, fixed(NOT_FOUND_JOB), api=False),
                 id="train-page-job-of-another-session"),
    pytest.param(Bad(get("/train/jobs/made-up-job-id"), 404, fixed(NOT_FOUND_JOB), api=False), id="train-page-made-up-job"),
    pytest.param(Bad(get("/images/not-an-id.png"), 422, fixed(images.MSG_BAD_ID), api=False), id="image-png-bad-id"),
    pytest.param(Bad(get("/images/..%2F..%2Fetc%2Fpasswd.png"), 404, fixed("There is no page at this address."), api=False,
                     note="the decoded path matches no route"), id="image-png-path-traversal"),
    # ---- the JSON API
    pytest.param(Bad(post("/api/conv", {"input": [[1, 2], [3, 4]], "kernel": [[1e308]]}), 422,
                     fixed(API_TOO_LARGE, name="kernel", where="[0][0]", limit=1_000_000)), id="api-conv-kernel-1e308"),
    pytest.param(Bad(lambda s: s.client.post("/api/conv", content=b'{"input": [[1, 2]], "kernel": [[1' + b"0" * 400 + b"]]}",
                                             headers={"content-type": "application/json"}), 422,
                     fixed(API_TOO_LARGE, name="kernel", where="[0][0]", limit=1_000_000)), id="api-conv-kernel-400-digit-int"),
    pytest.param(Bad(lambda s: s.client.post("/api/conv", content=b'{"input": [[1, 2]], "kernel": [[NaN]]}',
                                             headers={"content-type": "application/json"}), 422,
                     fixed("%(name)s%(where)s is not a finite number (NaN or infinity).", name="kernel", where="[0][0]")),
                 id="api-conv-kernel-nan"),
    pytest.param(Bad(lambda s: s.client.post("/api/conv", content=b'{"input": [[1, 2]], "kernel": [[-Infinity]]}',
                                             headers={"content-type": "application/json"}), 422,
                     fixed("%(name)s%(where)s is not a finite number (NaN or infinity).", name="kernel", where="[0][0]")),
                 id="api-conv-kernel-infinity"),
    pytest.param(Bad(post("/api/conv", {"input": [[1, 2]], "kernel": [[1, "abc"]]}), 422,
                     fixed("%(name)s%(where)s is not a number.", name="kernel", where="[0][1]")), id="api-conv-kernel-text"),
    pytest.param(Bad(post("/api/conv", {"input": [[1, 2]], "kernel": [[]]}), 422,
                     fixed("%(name)s must not be empty.", name="kernel")), id="api-conv-kernel-0x0"),
    pytest.param(Bad(post("/api/conv", {"input": [[1] * 20] * 20, "kernel": [[1] * 16] * 16}), 422,
                     fixed("%(name)s may be at most %(limit)s×%(limit)s; got %(h)s×%(w)s.", name="kernel", limit=15, h=16, w=16)),
                 id="api-conv-kernel-16x16"),
    pytest.param(Bad(post("/api/conv", {"input": [[1, 2]], "kernel": [[1, 2], [3]]}), 422,
                     fixed("%(name)s must be rectangular: every row needs the same number of values.", name="kernel")),
                 id="api-conv-kernel-ragged"),
    pytest.param(Bad(post("/api/conv", {"input": [[1, 2]], "kernel": [[1]], "stride": 0}), 422,
                     lambda s: "stride: " + tr("Must be at least %(ge)s.", ge=1)), id="api-conv-stride-0"),
    pytest.param(Bad(post("/api/conv?lang=en", {"input": [[1, 2]], "kernel": [[1]], "stride": -1}), 422,
                     lambda s: "stride: " + tr("Must be at least %(ge)s.", "en", ge=1)), id="api-conv-stride-neg-en"),
    pytest.param(Bad(post("/api/conv", {"input": [[1, 2]], "kernel": [[1]], "stride": 10**9}), 422,
                     lambda s: "stride: " + tr("Must be at most %(le)s.", le=64)), id="api-conv-stride-1e9"),
    pytest.param(Bad(post("/api/conv", {"input": [[1, 2]], "kernel": [[1]], "padding": 10**9}), 422,
                     lambda s: tr("Must be at most %(le)s.", le=64)), id="api-conv-padding-huge"),
    pytest.param(Bad(post("/api/conv", {"input": [[1, 2]], "kernel": [[1]], "dilation": 0}), 422,
                     lambda s: "dilation: " + tr("Must be at least %(ge)s.", ge=1)), id="api-conv-dilation-0"),
    pytest.param(Bad(post("/api/conv", {"input": [[1] * 5] * 5, "kernel": [[1] * 7] * 7}), 422,
                     lambda s: tr("The kernel does not fit: it spans %(span)s cells but the padded input has only %(padded)s, "
                                  "so the output size would be %(formula)s.", span=7, padded=5,
                                  formula=output_size_formula(5, 7, 1, (0, 0), 1))),
                 id="api-conv-kernel-bigger-than-padded-input"),
    pytest.param(Bad(post("/api/conv", {"input": [[0]] * 1025, "kernel": [[1]]}), 422,
                     fixed("%(name)s may be at most %(limit)s×%(limit)s; got %(h)s×%(w)s.", name="input", limit=1024, h=1025, w=1)),
                 id="api-conv-input-1025-rows"),
    pytest.param(Bad(post("/api/conv", {"input": [[1, 2]], "kernel": [[[[1]]]] * 65}), 422,
                     fixed("At most %(max)s filters; got %(n)s.", max=64, n=65)), id="api-conv-too-many-filters"),
    pytest.param(Bad(post("/api/conv", {"image_id": "../../etc/passwd", "kernel": [[1]]}), 422, fixed(images.MSG_BAD_ID)),
                 id="api-conv-image-id-wrong-format"),
    pytest.param(Bad(post("/api/conv", {"image_id": "f" * 32, "kernel": [[1]]}), 404, fixed(images.MSG_GONE)),
                 id="api-conv-image-id-unknown"),
    pytest.param(Bad(post("/api/conv/step", {"input": [[1, 2], [3, 4]], "kernel": [[1]], "step": 10**6}), 422,
                     fixed("Step %(step)s is past the last one: there are %(steps)s steps (0 to %(last)s).",
                           step=10**6, steps=4, last=3)), id="api-conv-step-beyond-output"),
    pytest.param(Bad(lambda s: s.client.post("/api/conv", content=b'{"input": [[1, 2]], "kernel": ',
                                             headers={"content-type": "application/json"}), 422,
                     fixed("The body is not valid JSON (the error is at character %(position)s).",
                           position=len(b'{"input": [[1, 2]], "kernel": '))), id="api-conv-broken-json"),
    pytest.param(Bad(lambda s: s.client.post("/api/conv", content=b" " * (MAX_BODY_BYTES + 1),
                                             headers={"content-type": "application/json"}), 413,
                     fixed(TOO_BIG_BODY, limit=MAX_BODY_BYTES // 2**20)), id="api-conv-17MB-body"),
    pytest.param(Bad(lambda s: s.client.post("/api/conv", content=chunked(MAX_BODY_BYTES + 2**20)(),
                                             headers={"content-type": "application/json"}), 413,
                     fixed(TOO_BIG_BODY, limit=MAX_BODY_BYTES // 2**20)), id="api-conv-chunked-body-without-length"),
    pytest.param(Bad(post("/api/pool", {"input": [[1, 2], [3, 4]], "size": 0}), 422,
                     lambda s: "size: " + tr("Must be at least %(ge)s.", ge=1)), id="api-pool-size-0"),
    pytest.param(Bad(post("/api/pool", {"input": [[1, "x"], [3, 4]]}), 422,
                     fixed("%(name)s%(where)s is not a number.", name="input", where="[0][1]")), id="api-pool-text"),
    pytest.param(Bad(post("/api/pool", {"input": [[1, 2], [3, 4]], "size": 3}), 422,
                     lambda s: tr("The kernel does not fit: it spans %(span)s cells but the padded input has only %(padded)s, "
                                  "so the output size would be %(formula)s.", span=3, padded=2,
                                  formula=output_size_formula(2, 3, 3, (0, 0), 1))), id="api-pool-window-too-big"),
    pytest.param(Bad(post("/api/softmax", {"logits": []}), 422,
                     lambda s: "logits: " + tr("Too few values: at least %(min_length)s.", min_length=1)), id="api-softmax-empty"),
    pytest.param(Bad(post("/api/softmax", {"logits": [1, 2, 3], "label": 5}), 422,
                     fixed("The label must be a class index below %(k)s; got %(label)s.", k=3, label=5)),
                 id="api-softmax-label-out-of-range"),
    pytest.param(Bad(lambda s: s.client.post("/api/softmax", content=b'{"logits": [1, NaN]}',
                                             headers={"content-type": "application/json"}), 422,
                     lambda s: "logits.1: " + tr("Enter a finite number (not NaN or infinity).")), id="api-softmax-nan"),
    pytest.param(Bad(post("/api/train", {"dataset": "digits", "epochs": 0}), 422,
                     lambda s: "epochs: " + tr("Must be at least %(ge)s.", ge=1)), id="api-train-epochs-0"),
    pytest.param(Bad(post("/api/train", {"dataset": "digits", "epochs": 10**6}), 422,
                     lambda s: "epochs: " + tr("Must be at most %(le)s.", le=30)), id="api-train-epochs-1e6"),
    pytest.param(Bad(lambda s: s.client.post("/api/train", content=b'{"dataset": "digits", "lr": NaN}',
                                             headers={"content-type": "application/json"}), 422,
                     lambda s: "lr: " + tr("Enter a finite number (not NaN or infinity).")), id="api-train-lr-nan"),
    pytest.param(Bad(post("/api/train", {"dataset": "imagenet"}), 422,
                     lambda s: "dataset: " + tr("Must be one of: %(expected)s.",
                                                         expected="'digits', 'mnist' or a dataset's id ('set-' and 16 hex digits)")),
                 id="api-train-unknown-dataset"),
    pytest.param(Bad(post("/api/train", {"optimizer": "rmsprop"}), 422,
                     lambda s: "optimizer: " + tr("Must be one of: %(expected)s.", expected="'sgd', 'momentum' or 'adam'")),
                 id="api-train-unknown-optimizer"),
    pytest.param(Bad(lambda s: job_of_another_session(s, "get"), 404, fixed(NOT_FOUND_JOB)), id="api-job-of-another-session"),
    pytest.param(Bad(lambda s: job_of_another_session(s, "predict"), 404, fixed(NOT_FOUND_JOB)),
                 id="api-predict-with-another-sessions-job"),
    pytest.param(Bad(lambda s: job_of_another_session(s, "stop"), 404, fixed(NOT_FOUND_JOB)),
                 id="api-stop-another-sessions-job"),
    pytest.param(Bad(lambda s: job_of_another_session(s, "weights"), 404, fixed(NOT_FOUND_JOB)),
                 id="api-weights-of-another-sessions-job"),
    pytest.param(Bad(get("/api/train/made-up-job-id"), 404, fixed(NOT_FOUND_JOB)), id="api-made-up-job-id"),
    pytest.param(Bad(lambda s: s.client.post(f"/api/train/{s.job_id}/predict", json={"grid": [[10**400] * 8] * 8}), 422,
                     fixed("The grid's values must be between 0 and 1 (or 0 and 255).")), id="api-predict-400-digit-int"),
    pytest.param(Bad(get("/api/pipeline", index="abc"), 422,
                     fixed("The digit must be a whole number from 0 to %(max)s.", max=358)), id="api-pipeline-index-text"),
    pytest.param(Bad(get("/api/pipeline", weight="9-9-9"), 422,
                     fixed("“%(address)s” is not a kernel weight: give filter, row and column, like 0-1-1 (filters 0 to "
                           "%(f)s, rows and columns 0 to %(k)s).", address="9-9-9", f=2, k=2)), id="api-pipeline-weight-beyond"),
    pytest.param(Bad(lambda s: s.client.get("/api/pipeline?index=1&index=2"), 400, fixed(DUPLICATE, name="index")),
                 id="api-duplicated-parameter"),
    pytest.param(Bad(lambda s: raw_get(s, "/api/pipeline", "lang=en&x=" + "y" * 100_000), 414,
                     fixed(LONG_QUERY, "en", limit=MAX_QUERY_BYTES)), id="api-100KB-query-en"),
]


@pytest.mark.parametrize("bad", BATTERY)
def test_bad_input_gets_a_4xx_with_a_message_and_the_session_survives(session, bad):
    # A row with ?lang=en leaves the English cookie behind (the choice is remembered): each row
    # starts from the default language, Spanish.
    session.client.cookies.delete(session.settings.locale_cookie)
    response = bad.send(session)
    assert response.status_code == bad.status, response.text[:500]
    expected = bad.message(session)
    if bad.api:
        assert response.headers["content-type"].startswith("application/json")
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail
        assert expected in detail, (detail, expected)
    else:
        assert response.headers["content-type"].startswith("text/html")
        shown = page_text(response)
        assert " ".join(expected.split()) in shown, (expected, shown[:800])
        assert "Traceback" not in response.text
    session.still_fine()


def test_the_battery_is_big_and_every_message_is_translated():
    assert len(BATTERY) >= 40
    # The Spanish sentences really are Spanish: a message left in English would pass the
    # battery above only by accident, so a handful are checked to differ from their msgid.
    for msgid in (LONG_QUERY, DUPLICATE, TOO_BIG_BODY, API_TOO_LARGE, images.MSG_TOO_MANY_PIXELS, NOT_FOUND_JOB):
        assert tr(msgid) != msgid


def test_unknown_language_falls_back_to_spanish(session):
    """A handled default, not an error: ``?lang=xx`` gives the Spanish page (200)."""
    response = session.client.get("/conv?preset=seed&lang=xx")
    assert response.status_code == 200
    page = BeautifulSoup(response.text, "html.parser")
    assert page.html["lang"] == "es"
    api = session.client.post("/api/conv?lang=xx", json={"input": [[1, 2]], "kernel": [[1]], "stride": 0})
    assert api.json()["detail"] == "stride: " + tr("Must be at least %(ge)s.", ge=1)
    session.still_fine()


def test_htmx_gets_the_messages_with_200(session):
    """htmx 2 swaps only 2xx answers: a settings change with a bad value must still replace
    the view with the messages, so the fragment keeps 200 while the full page is 422."""
    url = "/conv?" + urlencode({"preset": "seed", "stride": "0"})
    full = session.client.get(url)
    fragment = session.client.get(url, headers={"HX-Request": "true", "HX-Target": "conv-lab"})
    assert (full.status_code, fragment.status_code) == (422, 200)
    message = tr(STRIDE, min=1, max=8)
    assert message in page_text(full) and message in page_text(fragment)
    assert "hx-push-url" not in fragment.headers  # a bad state is never pushed into the history


# ------------------------------------------------------------------------------ pictures that are handled, not refused


def _rgba_over_white(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float64) / 255
    return rgba[..., :3] * a + 255 * (1 - a)


def _stored(s: Session, image_id: str) -> np.ndarray:
    response = s.client.get(f"/images/{image_id}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def _case_16bit():
    values = np.array([[0, 257, 32896, 65535], [1000, 20000, 40000, 60000]], dtype=np.uint16)
    img = Image.fromarray(values)  # mode I;16
    assert img.mode == "I;16"
    return encode(img), np.round(values.astype(np.float64) * 255 / 65535), 0


def _case_palette_transparent():
    img = Image.new("P", (6, 4), 0)
    img.putpalette([10, 200, 30, 90, 90, 90] + [0] * 762)
    img.paste(1, (0, 0, 3, 4))
    expected = np.zeros((4, 6))
    expected[:, :3] = 90   # opaque gray, index 1
    expected[:, 3:] = 255  # index 0 is transparent: composited over white; all gray, so stored as gray
    return encode(img, transparency=0), expected, 0


def _case_rgba():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    return encode(Image.fromarray(rgba, "RGBA")), _rgba_over_white(rgba), 1


def _case_la():
    la = np.dstack([np.full((4, 4), 40, np.uint8), np.array([[0, 85, 170, 255]] * 4, np.uint8)])
    a = la[..., 1] / 255
    return encode(Image.fromarray(la, "LA")), la[..., 0] * a + 255 * (1 - a), 1


def _case_cmyk_jpeg():
    c, m, y, k = 0, 128, 255, 64
    img = Image.new("CMYK", (16, 16), (c, m, y, k))
    rgb = [round((255 - v) * (255 - k) / 255) for v in (c, m, y)]
    return encode(img, "JPEG", quality=95), np.broadcast_to(np.array(rgb, float), (16, 16, 3)), 6


def _case_animated_gif():
    frames = [Image.new("L", (8, 8), v) for v in (50, 200, 120)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return data, np.full((8, 8), 50.0), 0


def _case_apng():
    frames = [Image.new("RGB", (6, 6), v) for v in ((200, 10, 10), (10, 200, 10))]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)
    assert b"acTL" in data  # really animated
    return data, np.broadcast_to(np.array([200.0, 10, 10]), (6, 6, 3)), 0


def _case_png_name_jpeg_content():
    return encode(Image.new("L", (10, 10), 77), "JPEG", quality=95), np.full((10, 10), 77.0), 2


def _case_mpo():
    frames = [Image.new("L", (8, 8), 33).convert("RGB"), Image.new("RGB", (8, 8), (250, 250, 0))]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:], quality=95)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    return data, np.full((8, 8, 3), 33.0), 2


HANDLED = [
    pytest.param("deep.png", _case_16bit, id="16-bit-I;16-png"),
    pytest.param("pal.png", _case_palette_transparent, id="palette-with-transparency"),
    pytest.param("alpha.png", _case_rgba, id="rgba-over-white"),
    pytest.param("la.png", _case_la, id="la-over-white"),
    pytest.param("cmyk.jpg", _case_cmyk_jpeg, id="cmyk-jpeg"),
    pytest.param("anim.gif", _case_animated_gif, id="animated-gif-first-frame"),
    pytest.param("anim.png", _case_apng, id="apng-first-frame"),
    pytest.param("photo.png", _case_png_name_jpeg_content, id="png-name-jpeg-content"),
    pytest.param("phone.jpg", _case_mpo, id="mpo-phone-jpeg-first-picture"),
]


@pytest.mark.parametrize("name,make", HANDLED)
def test_awkward_pictures_are_converted_to_8_bit_with_the_right_pixels(session, name, make):
    data, expected, tolerance = make()
    response = session.client.post("/api/images", files={"file": (name, data, "application/octet-stream")})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["channels"] == (3 if expected.ndim == 3 else 1)
    pixels = _stored(session, body["id"]).astype(np.float64)
    np.testing.assert_allclose(pixels, expected, atol=tolerance + 0.5)
    session.still_fine()


def test_a_path_in_the_file_name_is_ignored(session):
    """Nothing a user sends chooses a path: the stored file is named by its id alone."""
    folder = Path(session.settings.upload_dir)
    before = {p.name for p in folder.parent.rglob("*")}
    data = gray_png(201, (5, 5))
    for name in ("../../evil.png", "..\\..\\evil.png", "/etc/evil.png", "evil.png\0.txt"):
        response = session.client.post("/api/images", files={"file": (name, data, "image/png")})
        assert response.status_code == 201
    created = {p.name for p in folder.parent.rglob("*")} - before
    assert created == {f"{response.json()['id']}.png"}
    assert not any("evil" in p.name for p in folder.parent.parent.rglob("*evil*"))
    session.still_fine()


def test_a_polyglot_is_stored_without_its_payload(session):
    """A real PNG with an HTML page appended decodes as the PNG; what is stored and served is
    re-encoded from the pixels, so the payload is gone and the answer cannot be sniffed as HTML."""
    data = gray_png(66, (4, 4)) + b"<html><script>alert(document.cookie)</script></html>"
    response = session.client.post("/api/images", files={"file": ("poly.png", data, "image/png")})
    assert response.status_code == 201
    served = session.client.get(f"/images/{response.json()['id']}.png")
    assert b"<script>" not in served.content and b"html" not in served.content
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(served.content))), np.full((4, 4), 66))


def test_pillow_limit_holds_even_with_the_warning_filters_reset(tmp_path):
    """Image.MAX_IMAGE_PIXELS is enforced as an error by an explicit check, not only by the
    DecompressionBombWarning filter app/images.py installs (a test runner or another library
    can reset warning filters). Here our own limit is set far above Pillow's, and warnings are
    only recorded: a header over Pillow's limit is still refused, before decoding."""
    settings = Settings(upload_dir=tmp_path, secret_key="k", max_image_pixels=10**12)
    side = int((Image.MAX_IMAGE_PIXELS * 1.5) ** 0.5)  # between Pillow's warning and error limits
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")
        with pytest.raises(images.ImageError) as refused:
            images.save_upload(png_header_only(side, side), "b.png", settings)
    assert refused.value.status_code == 413
    assert not any(tmp_path.iterdir())


def test_the_warning_filter_is_installed_for_the_server():
    """Outside the test runner's per-test filter reset, the app makes Pillow's warning an error."""
    import subprocess
    import sys

    code = ("import warnings, app.images; from PIL import Image; "
            "print(any(f[0] == 'error' and f[2] is Image.DecompressionBombWarning for f in warnings.filters))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "True"


# ------------------------------------------------------------------------------ ids and sessions


def test_image_ids_are_content_hmacs_shared_by_link_by_design(session):
    """Image ids are ``HMAC-SHA256(secret, pixels)`` cut to 32 hex digits: the same picture gets
    the same id, and without the server's secret nobody can compute or guess one (2**128).
    They are deliberately NOT tied to the session that uploaded them: a student may send a
    link (``/conv?image=<id>``) to a classmate or the teacher's projector, and the picture
    opens there. Training jobs, which hold a session's work, are checked against their
    session (see the battery's ``*-another-session*`` rows)."""
    s = session
    pixels = s.image_pixels
    mac = hmac.new(b"bad-input-secret", digestmod=sha256)
    mac.update(f"L {pixels.shape[1]} {pixels.shape[0]}\n".encode())
    mac.update(pixels.tobytes())
    assert s.image_id == mac.hexdigest()[:32]
    other_secret = hmac.new(b"another-secret", b"L 12 9\n" + pixels.tobytes(), sha256).hexdigest()[:32]
    assert other_secret != s.image_id
    shared = s.foreign.get(f"/images/{s.image_id}.png")
    assert shared.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(shared.content))), pixels)
    assert s.foreign.get(f"/conv?image={s.image_id}&size=5").status_code == 200


def test_job_ids_are_random_and_refused_to_another_session(session):
    s = session
    for job_id in (s.job_id, s.foreign_job_id):
        assert len(job_id) >= 16 and job_id.replace("-", "").replace("_", "").isalnum()
    assert s.job_id != s.foreign_job_id
    # The owner still has it, after the other session's attempts in the battery.
    assert s.foreign.get(f"/api/train/{s.foreign_job_id}").status_code == 200
    assert s.foreign.get(f"/api/train/{s.job_id}").status_code == 404
    assert s.client.get(f"/api/train/{s.foreign_job_id}").status_code == 404
    # A tampered session cookie is a new, empty session, not somebody else's.
    tampered = TestClient(cnnlab_app)
    tampered.cookies.set(s.settings.session_cookie, "x" + (s.client.cookies.get(s.settings.session_cookie) or ""))
    assert tampered.get(f"/api/train/{s.job_id}").status_code == 404
    s.still_fine()


def test_upload_folder_holds_only_id_named_files(session):
    names = [p.name for p in Path(session.settings.upload_dir).iterdir()]
    assert names and all(images.UPLOAD_ID.fullmatch(n.removesuffix(".png")) for n in names)
