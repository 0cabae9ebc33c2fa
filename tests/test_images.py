"""Uploads, stored pictures, samples and pixel arrays (app/images.py, app/routers/images.py).

Every test file is built in memory with Pillow or by hand; nothing is downloaded.

Bad uploads covered (each a 4xx JSON message, Spanish by default, English with ?lang=en):
text file named .png, truncated JPEG, 20000×20000 PNG (decompression bomb, refused before
decoding), a picture over a small pixel limit, empty file, 0×0 PNG, file over the byte cap
(in the file part, by Content-Length, and in a chunked body), TIFF, missing field, a form
that is not multipart, a broken multipart body. Bad ids: unknown, expired, malformed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from cnnlab.app import images
from cnnlab.app.i18n import gettext, use_locale
from cnnlab.app.images import ImageError, image_array, load_image, save_upload
from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.settings import Settings, get_settings
from cnnlab.core.datasets import load_raw

SAMPLES_DIR = Path(images.__file__).parent / "samples"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(upload_dir=tmp_path / "uploads", secret_key="test-secret-key")


@pytest.fixture
def api(client, settings):
    """The test client with ``settings`` in force (the conftest fixture clears the override)."""
    client.app.dependency_overrides[get_settings] = lambda: settings
    return client


def encode(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def rgb_picture(width: int = 40, height: int = 20) -> Image.Image:
    """A picture whose every pixel is different, so any mix-up of rows, columns or channels shows."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 6 % 256, y * 11 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


def gray_picture(width: int = 30, height: int = 20) -> Image.Image:
    return Image.fromarray((np.arange(width * height).reshape(height, width) % 251).astype(np.uint8))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(width: int, height: int, bit_depth: int = 8, colour_type: int = 0, idat: bytes = b"") -> bytes:
    """A PNG written byte by byte (valid CRCs): Pillow refuses to write some headers we need."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A real, complete 20000×20000 black 1-bit PNG: 48 KB that would expand to 400 megapixels."""
    row = bytes(1 + 20000 // 8)  # filter byte + 2500 bytes of pixels
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(20000)) + compressor.flush()
    return crafted_png(20000, 20000, bit_depth=1, colour_type=0, idat=idat)


def upload(client, data: bytes, filename: str = "picture.png", lang: str | None = None):
    url = "/api/images" + (f"?lang={lang}" if lang else "")
    return client.post(url, files={"file": (filename, data, "application/octet-stream")})


def stored_files(settings: Settings) -> list[str]:
    folder = Path(settings.upload_dir)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def stored_pixels(image_id: str, settings: Settings) -> np.ndarray:
    return np.asarray(load_image(image_id, settings))


def translated(msgid: str, locale: str, **params) -> str:
    """The catalog's text for ``msgid`` in ``locale``; params are callables run in that locale."""
    with use_locale(locale):
        text = gettext(msgid)
        return text % {key: make() for key, make in params.items()} if params else text


# --------------------------------------------------------------------------- good uploads


def test_gray_png_stays_one_channel_with_its_pixels(api, settings):
    picture = gray_picture(30, 20)
    response = upload(api, encode(picture))
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"], "width": 30, "height": 20, "channels": 1}
    assert np.array_equal(stored_pixels(body["id"], settings), np.asarray(picture))


def test_rgb_png_keeps_its_three_channels(api, settings):
    picture = rgb_picture(40, 20)
    body = upload(api, encode(picture)).json()
    assert (body["width"], body["height"], body["channels"]) == (40, 20, 3)
    assert np.array_equal(stored_pixels(body["id"], settings), np.asarray(picture))


def test_rgba_alpha_is_composited_over_white(api, settings):
    picture = Image.new("RGBA", (3, 1))
    picture.putdata([(255, 0, 0, 255), (0, 0, 255, 0), (0, 0, 0, 128)])
    body = upload(api, encode(picture)).json()
    assert body["channels"] == 3
    pixels = stored_pixels(body["id"], settings)
    assert pixels[0, 0].tolist() == [255, 0, 0]  # opaque: unchanged
    assert pixels[0, 1].tolist() == [255, 255, 255]  # transparent: the white background
    assert all(abs(v - 127) <= 1 for v in pixels[0, 2])  # half-transparent black over white


def test_gray_with_alpha_stays_one_channel(api, settings):
    picture = Image.new("LA", (2, 1))
    picture.putdata([(10, 255), (10, 0)])
    body = upload(api, encode(picture)).json()
    assert body["channels"] == 1
    assert stored_pixels(body["id"], settings).tolist() == [[10, 255]]


def test_palette_picture_becomes_rgb_and_transparent_index_white(api, settings):
    picture = Image.new("P", (3, 1))
    picture.putpalette([255, 0, 0, 0, 128, 0, 0, 0, 255] + [0] * (3 * 253))
    picture.putdata([0, 1, 2])
    body = upload(api, encode(picture, transparency=2)).json()
    assert body["channels"] == 3
    assert stored_pixels(body["id"], settings).tolist() == [[[255, 0, 0], [0, 128, 0], [255, 255, 255]]]


def test_palette_of_grays_becomes_one_channel(api, settings):
    picture = Image.new("P", (2, 1))
    picture.putpalette([0, 0, 0, 200, 200, 200] + [0] * (3 * 254))
    picture.putdata([1, 0])
    body = upload(api, encode(picture, "GIF")).json()
    assert body["channels"] == 1
    assert stored_pixels(body["id"], settings).tolist() == [[200, 0]]


def test_16_bit_png_is_scaled_to_8_bits(api, settings):
    picture = Image.fromarray(np.array([[0, 257, 32896, 65535]], dtype=np.uint16))
    assert picture.mode == "I;16"
    data = encode(picture)
    assert data[24] == 16  # the IHDR really says 16 bits per sample
    body = upload(api, data).json()
    assert body["channels"] == 1
    assert stored_pixels(body["id"], settings).tolist() == [[0, 1, 128, 255]]


def test_jpeg_exif_orientation_is_applied(api, settings):
    # 40 wide, 20 high, a red block in the top-left corner; orientation 6 means "rotate 90°
    # clockwise to display", so the stored picture is 20 wide, 40 high, red at the top right.
    picture = Image.new("RGB", (40, 20), (0, 0, 255))
    picture.paste((255, 0, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6
    body = upload(api, encode(picture, "JPEG", quality=95, exif=exif), "photo.jpg").json()
    assert (body["width"], body["height"], body["channels"]) == (20, 40, 3)
    pixels = stored_pixels(body["id"], settings).astype(int)
    assert pixels[3, 16, 0] > 200 and pixels[3, 16, 2] < 60  # red, top right
    assert pixels[3, 3, 2] > 200 and pixels[3, 3, 0] < 60  # blue, top left
    assert pixels[36, 16, 2] > 200  # the block did not land at the bottom


def test_cmyk_jpeg_becomes_rgb(api, settings):
    picture = Image.new("CMYK", (8, 4), (0, 255, 255, 0))  # pure red in ink
    body = upload(api, encode(picture, "JPEG", quality=95)).json()
    assert body["channels"] == 3
    red, green, blue = stored_pixels(body["id"], settings)[2, 4].astype(int)
    assert red > 200 and green < 60 and blue < 60


def test_webp_and_bmp_are_accepted(api, settings):
    picture = rgb_picture(12, 9)
    for data, name in ((encode(picture, "WEBP", lossless=True), "a.webp"), (encode(picture, "BMP"), "a.bmp")):
        body = upload(api, data, name).json()
        assert (body["width"], body["height"], body["channels"]) == (12, 9, 3)
        assert np.array_equal(stored_pixels(body["id"], settings), np.asarray(picture))


def test_animated_gif_keeps_its_first_frame(api, settings):
    frames = [Image.new("RGB", (6, 4), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    body = upload(api, data, "anim.gif").json()
    assert (body["width"], body["height"], body["channels"]) == (6, 4, 3)
    assert np.all(stored_pixels(body["id"], settings) == [255, 0, 0])


def test_content_decides_the_format_not_the_file_name(api, settings):
    picture = gray_picture(5, 4)
    response = upload(api, encode(picture), "notes.txt")
    assert response.status_code == 201
    assert np.array_equal(stored_pixels(response.json()["id"], settings), np.asarray(picture))
    stored = save_upload(encode(picture, "BMP"), "picture.png", settings)
    assert stored.format == "BMP"


def test_same_picture_gets_the_same_id_and_is_stored_once(api, settings):
    data = encode(rgb_picture())
    first, second = upload(api, data).json(), upload(api, data, "other-name.png").json()
    assert first == second
    assert len(first["id"]) == 32 and images.UPLOAD_ID.fullmatch(first["id"])
    assert stored_files(settings) == [f"{first['id']}.png"]
    # Same pixels in another format: the id names the content, not the file.
    assert upload(api, encode(rgb_picture(), "BMP")).json()["id"] == first["id"]


def test_ids_depend_on_the_secret_key(settings, tmp_path):
    data = encode(rgb_picture())
    other = Settings(upload_dir=tmp_path / "other", secret_key="another-secret")
    assert save_upload(data, None, settings).id != save_upload(data, None, other).id


def test_large_pictures_are_stored_downscaled_with_aspect_kept(tmp_path):
    settings = Settings(upload_dir=tmp_path, max_stored_side=16)
    stored = save_upload(encode(rgb_picture(64, 32)), "big.png", settings)
    assert (stored.width, stored.height, stored.channels) == (16, 8, 3)
    assert load_image(stored.id, settings).size == (16, 8)


def test_the_stored_file_is_named_by_the_id_only(api, settings):
    response = upload(api, encode(gray_picture()), "../../evil name.png")
    assert response.status_code == 201
    assert stored_files(settings) == [f"{response.json()['id']}.png"]


# --------------------------------------------------------------------------- bad uploads


def _truncated_jpeg() -> bytes:
    data = encode(rgb_picture(64, 64), "JPEG", quality=90)
    return data[: len(data) // 2]


def _zero_width_bmp() -> bytes:
    data = bytearray(encode(Image.new("RGB", (4, 4)), "BMP"))
    data[18:22] = struct.pack("<i", 0)  # the DIB header's width
    return bytes(data)


def _tiff() -> bytes:
    return encode(rgb_picture(8, 8), "TIFF")


BAD_UPLOADS = [
    # id, bytes, file name, status, msgid, message parameters (computed in the locale)
    ("text-named-png", lambda: b"just some text, not a picture\n", "photo.png", 415, images.MSG_NOT_AN_IMAGE, {}),
    ("truncated-jpeg", _truncated_jpeg, "photo.jpg", 422, images.MSG_DAMAGED, {}),
    ("empty-file", lambda: b"", "empty.png", 400, images.MSG_EMPTY, {}),
    ("zero-by-zero", lambda: crafted_png(0, 0, idat=zlib.compress(b"")), "zero.png", 422, images.MSG_NO_PIXELS, {}),
    ("zero-width", lambda: crafted_png(0, 7, idat=zlib.compress(b"")), "zero.png", 422, images.MSG_NO_PIXELS, {}),
    ("zero-width-bmp", _zero_width_bmp, "zero.bmp", 422, images.MSG_NO_PIXELS, {}),
    ("tiff", _tiff, "scan.tif", 415, images.MSG_UNSUPPORTED_FORMAT, {"format": lambda: "TIFF"}),
]


@pytest.mark.parametrize(
    ("case", "make", "filename", "status", "msgid", "params"), BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS]
)
def test_bad_upload_gets_a_translated_message(api, settings, case, make, filename, status, msgid, params):
    data = make()
    spanish = upload(api, data, filename)
    english = upload(api, data, filename, lang="en")
    assert spanish.status_code == english.status_code == status
    assert spanish.headers["content-type"].startswith("application/json")
    assert spanish.json()["detail"] == translated(msgid, "es", **params)
    assert english.json()["detail"] == translated(msgid, "en", **params)
    assert spanish.json()["detail"] != english.json()["detail"]
    assert spanish.json()["field"] == "file"
    assert stored_files(settings) == []
    # The app is still up and the next good upload works.
    assert upload(api, encode(gray_picture())).status_code == 201


def test_decompression_bomb_is_refused_from_its_header(api, settings, bomb_png, monkeypatch):
    assert len(bomb_png) < 60_000

    def no_decoding(self):
        raise AssertionError("the bomb's pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for lang in ("es", "en"):
        start = time.perf_counter()
        response = upload(api, bomb_png, "huge.png", lang=lang)
        elapsed = time.perf_counter() - start
        assert response.status_code == 413
        expected = translated(
            images.MSG_TOO_MANY_PIXELS,
            lang,
            limit=lambda: images.format_number(4_000_000),
            side=lambda: images.format_number(2000),
        )
        assert response.json()["detail"] == expected
        assert elapsed < 0.5, f"refusing the bomb took {elapsed:.2f} s: it was decoded"
    assert stored_files(settings) == []


def test_pixel_limit_comes_from_the_settings(api, client, tmp_path):
    small = Settings(upload_dir=tmp_path, max_image_pixels=1000)
    client.app.dependency_overrides[get_settings] = lambda: small
    # 1200 pixels: past the limit but below twice it, where Pillow by itself only warns.
    response = upload(client, encode(gray_picture(40, 30)))
    assert response.status_code == 413
    assert response.json()["detail"] == translated(
        images.MSG_TOO_MANY_PIXELS,
        "es",
        limit=lambda: images.format_number(1000),
        side=lambda: images.format_number(31),
    )
    assert upload(client, encode(gray_picture(40, 25))).status_code == 201  # exactly 1000 pixels


def test_file_over_the_byte_cap_is_refused(client, tmp_path):
    capped = Settings(upload_dir=tmp_path, max_upload_bytes=1000)
    client.app.dependency_overrides[get_settings] = lambda: capped
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8))
    data = encode(noise)
    assert 1000 < len(data) < 1000 + 16 * 1024  # passes the body limit, fails the file's own cap
    for lang in ("es", "en"):
        response = upload(client, data, lang=lang)
        assert response.status_code == 413
        assert response.json()["detail"] == translated(
            images.MSG_TOO_MANY_BYTES, lang, limit=lambda: images.format_bytes(1000)
        )
    big = encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8)))
    assert upload(client, big).status_code == 413  # refused by its Content-Length
    with pytest.raises(ImageError) as refused:
        save_upload(data, None, capped)
    assert refused.value.status_code == 413
    assert stored_files(capped) == []


def _asgi_upload(headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, int]:
    """POST /api/images straight through ASGI; returns (status, how many body chunks the app pulled)."""
    pulled = 0

    async def receive():
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}
        return {"type": "http.disconnect"}

    status = 0

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/images",
        "raw_path": b"/api/images",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    # A thread of its own: Playwright's sync API leaves an event loop running in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, cnnlab_app(scope, receive, send)).result()
    return status, pulled


def test_oversized_body_is_refused_before_it_is_read(tmp_path):
    capped = Settings(upload_dir=tmp_path, max_upload_bytes=1000)
    cnnlab_app.dependency_overrides[get_settings] = lambda: capped
    try:
        boundary = b"cnnlabboundary"
        head = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        chunks = [head] + [bytes(4096)] * 256  # a 1 MB body
        content_type = (b"content-type", b"multipart/form-data; boundary=" + boundary)
        # Declared too large: refused without reading the body at all.
        status, pulled = _asgi_upload([content_type, (b"content-length", b"1048700")], chunks)
        assert (status, pulled) == (413, 0)
        # Chunked, no length: reading stops a little past the cap.
        status, pulled = _asgi_upload([content_type], chunks)
        assert status == 413
        assert pulled <= 2 + (1000 + 16 * 1024) // 4096
    finally:
        cnnlab_app.dependency_overrides.clear()
    assert stored_files(capped) == []


def test_missing_file_field_is_a_clear_422(api):
    cases = [
        api.post("/api/images", files={"picture": ("a.png", encode(gray_picture()), "image/png")}),
        api.post("/api/images", data={"file": "not a file"}),
        api.post("/api/images", json={"file": "x"}),
        api.post("/api/images?lang=en", files={"picture": ("a.png", b"x", "image/png")}),
    ]
    for response in cases[:3]:
        assert response.status_code == 422
        assert response.json() == {"detail": translated(images.MSG_NO_FILE, "es"), "field": "file"}
    assert cases[3].json()["detail"] == translated(images.MSG_NO_FILE, "en")


def test_broken_multipart_body_is_a_400(api, settings):
    def part(filename: bytes) -> bytes:
        head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n\r\n'
        return head + encode(gray_picture()) + b"\r\n"

    bodies = [
        ("multipart/form-data; boundary=x", b"--x\r\nno headers at all"),
        ("multipart/form-data; boundary=x", b"garbage"),
        ("multipart/form-data", b"no boundary given"),
        ("multipart/form-data; boundary=x", part(b"a.png") + part(b"b.png") + b"--x--\r\n"),  # two files
    ]
    for content_type, body in bodies:
        response = api.post("/api/images", content=body, headers={"content-type": content_type})
        assert response.status_code == 400, body
        assert response.json()["detail"] == translated(images.MSG_NO_FILE, "es")
    assert stored_files(settings) == []
    one_file = api.post(
        "/api/images", content=part(b"a.png") + b"--x--\r\n", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert one_file.status_code == 201


# --------------------------------------------------------------------------- ids: unknown, malformed, expired


@pytest.mark.parametrize(
    "bad_id",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "a" * 33,
        "f" * 1000,
        "A" * 32,
        "0" * 31,
        "",
        "camera/../x",
        "digit\x00",
        7,
        None,
    ],
)
def test_malformed_ids_are_refused_without_touching_the_disk(settings, monkeypatch, bad_id):
    def forbidden(*args, **kwargs):
        raise AssertionError("the file system was touched for a malformed id")

    for owner, name in ((Path, "stat"), (Path, "open"), (Path, "exists"), (os, "stat"), (os, "scandir")):
        monkeypatch.setattr(owner, name, forbidden)
    for call in (lambda: load_image(bad_id, settings), lambda: image_array(bad_id, settings, 8, "gray")):
        with pytest.raises(ImageError) as refused:
            call()
        assert refused.value.status_code == 422
    assert not images.is_image_id(bad_id)


def test_unknown_id_is_404_with_the_upload_again_message(api, settings):
    unknown = "0123456789abcdef0123456789abcdef"
    with use_locale("en"), pytest.raises(ImageError) as missing:
        load_image(unknown, settings)
    assert missing.value.status_code == 404
    assert missing.value.message == translated(images.MSG_GONE, "en")
    page = api.get(f"/images/{unknown}.png")
    assert page.status_code == 404
    assert translated(images.MSG_GONE, "es") in page.text
    assert translated(images.MSG_GONE, "en") in api.get(f"/images/{unknown}.png?lang=en").text


def test_malformed_ids_in_the_picture_url(api):
    assert api.get(f"/images/{'f' * 200}.png").status_code == 422
    assert api.get("/images/..%2F..%2Fetc%2Fpasswd.png").status_code in (404, 422)
    assert api.get("/images/ABCDEF.png").status_code == 422


def test_expired_upload_is_gone_and_swept(client, tmp_path, monkeypatch):
    short = Settings(upload_dir=tmp_path, upload_ttl_seconds=1)
    client.app.dependency_overrides[get_settings] = lambda: short
    old_id = upload(client, encode(gray_picture())).json()["id"]
    old_file = tmp_path / f"{old_id}.png"
    image_array(old_id, short, 8, "gray")  # cached while alive
    past = time.time() - 10
    os.utime(old_file, (past, past))
    unrelated = tmp_path / "notes.txt"  # not ours: the sweep must leave it alone
    unrelated.write_text("keep me")
    os.utime(unrelated, (past, past))

    with pytest.raises(ImageError) as gone:
        image_array(old_id, short, 8, "gray")  # the cache does not outlive the file
    assert gone.value.status_code == 404
    assert client.get(f"/images/{old_id}.png").status_code == 404
    assert not old_file.exists()  # looking it up deleted it

    second_id = upload(client, encode(rgb_picture())).json()["id"]
    (tmp_path / f"{second_id}.png").touch()
    os.utime(tmp_path / f"{second_id}.png", (past, past))
    monkeypatch.setattr(images, "SWEEP_INTERVAL_SECONDS", 0.0)
    third_id = upload(client, encode(rgb_picture(5, 5))).json()["id"]  # a save sweeps
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{third_id}.png", "notes.txt"])


def test_the_sweep_runs_at_most_once_a_minute(tmp_path):
    short = Settings(upload_dir=tmp_path, upload_ttl_seconds=1)
    first = save_upload(encode(gray_picture()), None, short)
    past = time.time() - 10
    os.utime(tmp_path / f"{first.id}.png", (past, past))
    save_upload(encode(rgb_picture()), None, short)  # within a minute of the first sweep
    assert (tmp_path / f"{first.id}.png").exists()
    assert images.sweep_expired(short) == 1
    assert not (tmp_path / f"{first.id}.png").exists()


def test_uploading_again_restarts_the_expiry(tmp_path):
    short = Settings(upload_dir=tmp_path, upload_ttl_seconds=5)
    data = encode(gray_picture())
    image_id = save_upload(data, None, short).id
    past = time.time() - 4
    os.utime(tmp_path / f"{image_id}.png", (past, past))
    save_upload(data, None, short)
    assert time.time() - (tmp_path / f"{image_id}.png").stat().st_mtime < 2


# --------------------------------------------------------------------------- pixel arrays


def test_image_array_shapes_for_gray_and_rgb(settings):
    image_id = save_upload(encode(rgb_picture(40, 20)), None, settings).id
    gray = image_array(image_id, settings, None, "gray")
    rgb = image_array(image_id, settings, None, "rgb")
    assert gray.shape == (1, 20, 40) and rgb.shape == (3, 20, 40)
    assert gray.dtype == rgb.dtype == np.uint8
    assert np.array_equal(rgb, np.asarray(rgb_picture(40, 20)).transpose(2, 0, 1))
    # ITU-R 601 luma of the stored colours.
    expected = np.asarray(rgb_picture(40, 20).convert("L"))
    assert np.array_equal(gray[0], expected)


@pytest.mark.parametrize(
    ("width", "height", "size", "expected"),
    [(40, 20, 16, (8, 16)), (20, 40, 10, (10, 5)), (33, 7, 5, (1, 5)), (40, 20, 64, (20, 40))],
)
def test_working_size_keeps_aspect_and_longest_side(settings, width, height, size, expected):
    image_id = save_upload(encode(rgb_picture(width, height)), None, settings).id
    for color, channels in (("gray", 1), ("rgb", 3)):
        x = image_array(image_id, settings, size, color)
        assert x.shape == (channels, *expected)
        assert x.dtype == np.uint8


def test_working_size_averages_areas(settings):
    checker = Image.fromarray((np.indices((8, 8)).sum(axis=0) % 2 * 255).astype(np.uint8))
    image_id = save_upload(encode(checker), None, settings).id
    x = image_array(image_id, settings, 4, "gray")
    assert x.shape == (1, 4, 4)
    assert set(np.unique(x).tolist()) <= {127, 128}


def test_gray_picture_as_rgb_repeats_the_channel(settings):
    image_id = save_upload(encode(gray_picture()), None, settings).id
    rgb = image_array(image_id, settings, None, "rgb")
    assert rgb.shape == (3, 20, 30)
    assert np.array_equal(rgb[0], rgb[1]) and np.array_equal(rgb[1], rgb[2])


def test_arrays_are_cached_read_only_and_the_cache_is_bounded(settings, tmp_path):
    image_id = save_upload(encode(rgb_picture()), None, settings).id
    first = image_array(image_id, settings, 16, "rgb")
    assert image_array(image_id, settings, 16, "rgb") is first
    assert not first.flags.writeable
    with pytest.raises(ValueError):
        first[0, 0, 0] = 1
    no_cache = Settings(upload_dir=settings.upload_dir, secret_key="test-secret-key", image_cache_bytes=0)
    assert image_array(image_id, no_cache, 12, "rgb") is not image_array(image_id, no_cache, 12, "rgb")


@pytest.mark.parametrize(
    ("size", "color", "field"),
    [
        (0, "gray", "size"),
        (65, "gray", "size"),
        (True, "gray", "size"),
        (3.5, "rgb", "size"),
        (8, "cmyk", "color"),
        (8, None, "color"),
    ],
)
def test_image_array_refuses_bad_size_or_colour(settings, size, color, field):
    with pytest.raises(ImageError) as refused:
        image_array("camera", settings, size, color)
    assert refused.value.status_code == 422
    assert refused.value.field == field


# --------------------------------------------------------------------------- samples


def test_samples_load_and_are_small_with_licences(settings):
    licences = (SAMPLES_DIR / "LICENSES.md").read_text()
    assert "digit" in images.SAMPLES
    for name, (file, title, licence) in images.SAMPLES.items():
        img = load_image(name, settings)
        assert img.mode in ("L", "RGB")
        assert max(img.size) <= 512
        C = len(img.getbands())
        assert image_array(name, settings, None, "rgb" if C == 3 else "gray").shape == (C, img.height, img.width)
        small = image_array(name, settings, 12, "gray")
        assert small.shape[0] == 1 and max(small.shape[1:]) == min(12, max(img.size))
        assert title and licence
        assert f"`{name}`" in licences
        if file is not None:
            path = SAMPLES_DIR / file
            assert path.stat().st_size <= 60 * 1024
            assert f"`{file}`" in licences
    assert len([s for s in images.SAMPLES.values() if s.file]) >= 3


def test_digit_sample_is_the_first_mnist_seven(settings):
    raw, labels = load_raw("mnist")
    seven = raw[int(np.flatnonzero(labels == 7)[0])]
    assert np.array_equal(image_array("digit", settings)[0], seven)


def test_samples_endpoint_lists_titles_in_the_request_language(api):
    spanish = api.get("/api/images/samples").json()
    english = api.get("/api/images/samples?lang=en").json()
    assert [s["id"] for s in spanish] == list(images.SAMPLES)
    for es, en, (file, title, licence) in zip(spanish, english, images.SAMPLES.values()):
        assert es["title"] == translated(title, "es") and en["title"] == translated(title, "en")
        assert es["licence"] == translated(licence, "es") and en["licence"]
        assert es["channels"] in (1, 3) and es["width"] > 0 and es["height"] > 0
        picture = api.get(es["url"])
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(picture.content)).size == (es["width"], es["height"])
    assert spanish[0]["title"] != english[0]["title"]


# --------------------------------------------------------------------------- the picture URL, PNG helper, OpenAPI


def test_stored_picture_url_serves_the_stored_png_with_long_caching(api, settings):
    body = upload(api, encode(rgb_picture(40, 20), "JPEG", quality=90)).json()
    response = api.get(f"/images/{body['id']}.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert "max-age=31536000" in response.headers["cache-control"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (Path(settings.upload_dir) / f"{body['id']}.png").read_bytes()
    assert Image.open(io.BytesIO(response.content)).size == (40, 20)


def test_picture_url_with_working_size(api):
    image_id = upload(api, encode(rgb_picture(40, 20))).json()["id"]
    native = Image.open(io.BytesIO(api.get(f"/images/{image_id}.png?size=8").content))
    gray = Image.open(io.BytesIO(api.get(f"/images/{image_id}.png?size=8&color=gray").content))
    assert (native.size, native.mode) == ((8, 4), "RGB")
    assert (gray.size, gray.mode) == ((8, 4), "L")
    assert api.get(f"/images/{image_id}.png?size=0").status_code == 422
    assert api.get(f"/images/{image_id}.png?color=cmyk").status_code == 422


def test_to_png_round_trips_arrays():
    rng = np.random.default_rng(3)
    for array in (rng.integers(0, 256, (5, 7), dtype=np.uint8), rng.integers(0, 256, (1, 5, 7), dtype=np.uint8)):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(images.to_png(array)))), array.reshape(5, 7))
    rgb = rng.integers(0, 256, (3, 5, 7), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(images.to_png(rgb)))), rgb.transpose(1, 2, 0))
    with pytest.raises(TypeError):
        images.to_png(np.zeros((5, 7)))
    with pytest.raises(ValueError):
        images.to_png(np.zeros((2, 5, 7), dtype=np.uint8))


def test_openapi_documents_the_upload(api):
    paths = api.get("/openapi.json").json()["paths"]
    post = paths["/api/images"]["post"]
    assert {"201", "400", "413", "415", "422"} <= set(post["responses"])
    schema = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["file"] and schema["properties"]["file"]["format"] == "binary"
    assert "/api/images/samples" in paths
    assert "/images/{image_id}.png" in paths
