"""Pictures as inputs: uploads checked and stored, shipped samples, pixel arrays for the engine.

Pillow lives here and only here (``core/`` sees NumPy arrays). An image is named by an
**id** that works everywhere:

- an upload id: 32 hex digits, ``HMAC-SHA256(secret_key, normalised pixels)`` truncated.
  Content-addressed (the same picture uploaded twice is stored once, under the same id) and
  unguessable without the server's secret, so one student cannot enumerate another's images;
- a sample name from ``SAMPLES`` (``"camera"``, ``"digit"``, ...).

An upload is decoded from its bytes (never trusting its file name), normalised to 8-bit
grayscale ("L", 1 channel) or RGB (3 channels), downscaled so that its longest side is at
most ``settings.max_stored_side`` and stored as PNG in ``settings.upload_dir``. Everything
computed "at full resolution" (the feature map shown as a picture) is computed at that
stored size, not at the size of the original file. Stored files expire after
``settings.upload_ttl_seconds``; an expired id behaves as unknown. Together they hold at
most ``settings.max_upload_store_bytes``: past it the least recently uploaded go first.

Every failure is an ``ImageError`` whose message is already in the request's language.
"""

from __future__ import annotations

import errno
import functools
import hmac
import io
import logging
import math
import os
import re
import struct
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from babel.numbers import format_decimal
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.app.errors import InputError
from cnnlab.app.i18n import N_, get_locale, gettext
from cnnlab.app.settings import Settings

Color = Literal["gray", "rgb"]
log = logging.getLogger(__name__)

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
MIN_WORKING_SIZE = 1
MAX_WORKING_SIZE = 64
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
# A stored upload is only ever looked up by a name matching this; nothing else reaches the disk.
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
# Files of ours in the upload folder (stored pictures and half-written temporary files):
# the sweep deletes nothing else, even if the folder is shared by mistake.
_OWN_FILE = re.compile(r"[0-9a-f]{32}\.png|\.[0-9a-f]{32}\.[A-Za-z0-9_]+\.tmp")
SWEEP_INTERVAL_SECONDS = 60.0
WHITE = (255, 255, 255, 255)

# Pillow only *warns* between its own pixel limit and twice that limit; a picture that large
# must be refused, so the warning is an error in this process (Image.open then raises it).
warnings.simplefilter("error", Image.DecompressionBombWarning)

# --------------------------------------------------------------------------- messages

MSG_EMPTY = N_("The file is empty: choose a picture to upload.")
MSG_TOO_MANY_BYTES = N_("The file is too large: the limit is %(limit)s.")
MSG_NOT_AN_IMAGE = N_("This file is not a picture that can be read. Upload a PNG, JPEG, WebP, BMP or GIF image.")
MSG_UNSUPPORTED_FORMAT = N_("%(format)s pictures are not supported. Upload a PNG, JPEG, WebP, BMP or GIF image.")
MSG_TOO_MANY_PIXELS = N_(
    "The picture has too many pixels: at most %(limit)s are allowed (about %(side)s × %(side)s)."
)
MSG_DAMAGED = N_("The picture is damaged or incomplete and cannot be read.")
MSG_NO_PIXELS = N_("The picture has no pixels: its width or height is 0.")
MSG_GONE = N_("This image is no longer available; upload it again.")
MSG_BAD_ID = N_("This is not a valid image id.")
MSG_BAD_SIZE = N_("The working size must be a whole number from %(min)s to %(max)s pixels.")
MSG_BAD_COLOR = N_("The colour must be “gray” or “rgb”.")
MSG_NO_FILE = N_("Send the picture as a form field named “file” (multipart/form-data).")
MSG_DISK_FULL = N_("The server has no room left to store pictures. Try again later, or use a sample picture.")
MSG_READ_ONLY = N_("The server cannot store pictures now: its upload folder is read-only. Use a sample picture, "
                   "and tell the person who runs the server.")


class ImageError(InputError):
    """A picture that cannot be used, or an image id that names none; the message is translated.

    Status codes: 400 empty file or broken form, 404 unknown or expired id, 413 too many
    bytes or pixels, 415 not an image or a format we do not read, 422 damaged picture,
    0×0 picture, bad id/size/colour; 503 the upload folder is read-only, 507 the disk is full.
    """


def _error(message: str, status_code: int, field: str | None = None, **params: object) -> ImageError:
    text = gettext(message)
    if params:
        text = text % params
    return ImageError(text, field=field, status_code=status_code)


def format_number(value: float) -> str:
    """A count or size as the request's locale writes it (``4.000.000`` in Spanish)."""
    return format_decimal(value, format="#,##0.#", locale=get_locale())


def format_bytes(n: int) -> str:
    """``5242880`` -> ``"5 MB"`` (binary units, the way file managers show upload limits)."""
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= scale:
            return f"{format_number(n / scale)} {unit}"
    return f"{format_number(n)} B"


def too_many_bytes(settings: Settings) -> ImageError:
    return _error(MSG_TOO_MANY_BYTES, 413, "file", limit=format_bytes(settings.max_upload_bytes))


def no_file_error(status_code: int = 422) -> ImageError:
    return _error(MSG_NO_FILE, status_code, "file")


# --------------------------------------------------------------------------- samples


class Sample(NamedTuple):
    """A shipped picture: ``file`` in ``app/samples/`` (None: built at run time), and the
    msgids of its title and licence (translate with ``gettext`` when shown)."""

    file: str | None
    title: str
    licence: str


SAMPLES: dict[str, Sample] = {
    "digit": Sample(None, N_("Handwritten 7 (MNIST)"), N_("CC BY-SA 3.0 (Y. LeCun and C. Cortes)")),
    "camera": Sample("camera.png", N_("Photographer with a camera"), N_("CC0 1.0 (Lav Varshney)")),
    "chelsea": Sample("chelsea.jpg", N_("Chelsea the cat"), N_("CC0 1.0 (Stefan van der Walt)")),
    "coffee": Sample("coffee.jpg", N_("A cup of coffee"), N_("CC0 1.0 (Rachel Michetti)")),
    "astronaut": Sample("astronaut.jpg", N_("Astronaut Eileen Collins"), N_("Public domain (NASA)")),
    "rocket": Sample("rocket.jpg", N_("Rocket launch"), N_("Public domain (SpaceX)")),
}


@functools.lru_cache(maxsize=len(SAMPLES))
def _sample_image(name: str) -> Image.Image:
    """The sample, decoded once; callers get a copy (a PIL image is mutable)."""
    sample = SAMPLES[name]
    if sample.file is None:
        from cnnlab.core.datasets import load_raw

        images, labels = load_raw("mnist")
        # The first 7 in source order: the same picture on every machine.
        index = int(np.flatnonzero(labels == 7)[0])
        return Image.fromarray(np.ascontiguousarray(images[index]))
    with Image.open(SAMPLES_DIR / sample.file) as img:
        img.load()
        return _normalise_mode(img)


# --------------------------------------------------------------------------- storing an upload


@dataclass(frozen=True)
class StoredImage:
    """What was stored: its id, the stored size, channels (1 gray, 3 RGB) and the format the
    bytes really held (``"PNG"``, ``"JPEG"``, ``"WEBP"``, ``"BMP"`` or ``"GIF"``)."""

    id: str
    width: int
    height: int
    channels: int
    format: str


def save_upload(data: bytes, filename: str | None, settings: Settings) -> StoredImage:
    """Check, normalise, downscale and store an uploaded picture; returns its id and size.

    ``filename`` is ignored on purpose: the format is read from the bytes and the stored
    file is named by the id, so nothing the user sends chooses a path. The checks run
    cheapest first, so a bad file is refused before any pixel is decoded: empty, too many
    bytes, not an accepted format, too many pixels (from the header), then decoding
    (damaged/truncated). Animated pictures keep
    their first frame; EXIF orientation is applied; alpha is composited over white; 16-bit,
    palette, CMYK and other modes become 8-bit "L" or "RGB". The stored picture's longest
    side is at most ``settings.max_stored_side`` (full-resolution results use this size).
    """
    del filename  # the name says nothing reliable about the content
    if not data:
        raise _error(MSG_EMPTY, 400, "file")
    if len(data) > settings.max_upload_bytes:
        raise too_many_bytes(settings)
    img, fmt = _decode(data, settings)
    img = _normalise_mode(img)
    img.thumbnail((settings.max_stored_side, settings.max_stored_side), Image.Resampling.LANCZOS)
    image_id = _content_id(img, settings)
    _store(img, image_id, settings)
    _maybe_sweep(settings)
    return StoredImage(image_id, img.width, img.height, len(img.getbands()), fmt)


def _decode(data: bytes, settings: Settings) -> tuple[Image.Image, str]:
    # settings.max_image_pixels is checked below on the header's numbers. Pillow's own guard
    # (Image.MAX_IMAGE_PIXELS, process-wide, left at its default) stays as a backstop: it is
    # not set from the settings because tests run several settings in one process.
    try:
        img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(settings) from None
    except UnidentifiedImageError:
        if _header_has_zero_side(data):
            raise _error(MSG_NO_PIXELS, 422, "file") from None
        raise _error(MSG_NOT_AN_IMAGE, 415, "file") from None
    except Exception:  # any parser failure on untrusted bytes means the same thing to the user
        raise _error(MSG_DAMAGED, 422, "file") from None
    fmt = img.format or ""
    if fmt == "MPO":  # a phone's JPEG with extra pictures (depth, preview): the first one is the photo
        fmt = "JPEG"
    if fmt not in ACCEPTED_FORMATS:
        raise _error(MSG_UNSUPPORTED_FORMAT, 415, "file", format=fmt or "?")
    W, H = img.size
    if W == 0 or H == 0:
        raise _error(MSG_NO_PIXELS, 422, "file")
    # Checked on the header's numbers, before a single pixel is expanded in memory. Pillow's own
    # limit counts too, explicitly: its warning is only an error while the filter above is in
    # force, and a test runner or another library may reset the warning filters.
    if W * H > _pixel_limit(settings):
        raise _too_many_pixels(settings)
    if fmt == "JPEG":
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result is downscaled anyway.
        scale = settings.max_stored_side / max(W, H)
        if scale < 1:
            img.draft(None, (math.ceil(W * scale), math.ceil(H * scale)))
    try:
        img.load()  # the first frame of an animated picture
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(settings) from None
    except Exception:
        raise _error(MSG_DAMAGED, 422, "file") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not cost the user the picture itself
        pass
    return img, fmt


def _pixel_limit(settings: Settings) -> int:
    return min(settings.max_image_pixels, Image.MAX_IMAGE_PIXELS or settings.max_image_pixels)


def _too_many_pixels(settings: Settings) -> ImageError:
    limit = _pixel_limit(settings)
    return _error(MSG_TOO_MANY_PIXELS, 413, "file", limit=format_number(limit), side=format_number(math.isqrt(limit)))


def _header_has_zero_side(data: bytes) -> bool:
    """True for a PNG, GIF or BMP header declaring width or height 0 (Pillow refuses them
    as unidentified, which would be a misleading message)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big") == 0 or int.from_bytes(data[20:24], "big") == 0
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little") == 0 or int.from_bytes(data[8:10], "little") == 0
    if data.startswith(b"BM") and len(data) >= 26:
        width, height = struct.unpack_from("<ii", data, 18)
        return width == 0 or height == 0
    return False


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit "L" (gray stays one channel) or "RGB"; alpha over white."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("LA", "La"):
        return _over_white(img).convert("L")
    if mode in ("RGBA", "RGBa"):
        return _over_white(img).convert("RGB")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or img.has_transparency_data
        rgb = _over_white(img).convert("RGB") if has_alpha else img.convert("RGB")
        return _gray_if_neutral(rgb)
    if mode.startswith("I") or mode == "F":
        return _to_8bit_gray(img)
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _over_white(img: Image.Image) -> Image.Image:
    background = Image.new("RGBA", img.size, WHITE)
    return Image.alpha_composite(background, img.convert("RGBA"))


def _gray_if_neutral(rgb: Image.Image) -> Image.Image:
    pixels = np.asarray(rgb)
    if np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2]):
        return rgb.convert("L")
    return rgb


def _to_8bit_gray(img: Image.Image) -> Image.Image:
    """16-bit ("I;16*", "I") or float ("F") gray -> "L", mapping 0..65535 (or 0..255 for F) to 0..255."""
    values = np.asarray(img)
    if img.mode == "F":
        scaled = np.clip(np.nan_to_num(values), 0, 255).round()
    else:
        # Rounded rather than shifted, so 65535 -> 255 and 32896 -> 128 exactly.
        scaled = (np.clip(values.astype(np.int64), 0, 65535) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8))


def _content_id(img: Image.Image, settings: Settings) -> str:
    mac = hmac.new(settings.secret_key.get_secret_value().encode(), digestmod=sha256)
    mac.update(f"{img.mode} {img.width} {img.height}\n".encode())
    mac.update(img.tobytes())
    return mac.hexdigest()[:32]


def _store(img: Image.Image, image_id: str, settings: Settings) -> None:
    folder = Path(settings.upload_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The default lives in the shared temporary folder: never write into one another user made.
        if hasattr(os, "getuid") and folder.stat().st_uid != os.getuid():
            raise RuntimeError(f"upload folder {folder} belongs to another user; set CNNLAB_UPLOAD_DIR")
        path = folder / f"{image_id}.png"
        if path.exists():
            os.utime(path)  # stored already: the new upload restarts its expiry
            return
        buf = io.BytesIO()
        img.save(buf, "PNG", compress_level=3)
        # Written aside and renamed, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{image_id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buf.getvalue())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("cannot store an upload, the disk is full: %s", exc)
            raise _error(MSG_DISK_FULL, 507, "file") from None
        if exc.errno == errno.EROFS:
            log.error("cannot store an upload, the folder is read-only: %s", exc)
            raise _error(MSG_READ_ONLY, 503, "file") from None
        raise
    _evict_oldest(settings, keep=path)


def _evict_oldest(settings: Settings, keep: Path) -> None:
    """Delete the least recently uploaded pictures until the folder holds at most
    ``settings.max_upload_store_bytes`` (``keep``, just stored, stays).
    Evicting rather than refusing: a full quota must not stop every student's uploads for a
    day (the time to live); an evicted picture only asks to be uploaded again."""
    stored = []
    with os.scandir(settings.upload_dir) as entries:
        for entry in entries:
            if UPLOAD_ID.fullmatch(entry.name[:-4]) and entry.name.endswith(".png"):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                stored.append((st.st_mtime, st.st_size, entry.path))
    total = sum(size for _mtime, size, _path in stored)
    removed = 0
    for _mtime, size, path in sorted(stored):
        if total <= settings.max_upload_store_bytes:
            break
        if path == str(keep):
            continue
        Path(path).unlink(missing_ok=True)
        total -= size
        removed += 1
    if removed:
        log.info("the stored uploads were over their quota: deleted the %d least recently uploaded", removed)


# --------------------------------------------------------------------------- expiry

_last_sweep: dict[str, float] = {}
_sweep_lock = threading.Lock()


def _maybe_sweep(settings: Settings) -> None:
    """Run ``sweep_expired`` at most once every ``SWEEP_INTERVAL_SECONDS`` per folder."""
    key = str(settings.upload_dir)
    now = time.monotonic()
    with _sweep_lock:
        last = _last_sweep.get(key)
        if last is not None and now - last < SWEEP_INTERVAL_SECONDS:
            return
        _last_sweep[key] = now
    sweep_expired(settings)


def sweep_expired(settings: Settings) -> int:
    """Delete our files older than ``settings.upload_ttl_seconds``; returns how many."""
    cutoff = time.time() - settings.upload_ttl_seconds
    removed = 0
    try:
        entries = os.scandir(settings.upload_dir)
    except FileNotFoundError:
        return 0
    with entries:
        for entry in entries:
            if not _OWN_FILE.fullmatch(entry.name):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:  # another worker swept it first
                continue
    return removed


# --------------------------------------------------------------------------- reading an image


def is_image_id(value: object) -> bool:
    """True if ``value`` is shaped like an image id (upload id or sample name); no disk access."""
    return isinstance(value, str) and (value in SAMPLES or UPLOAD_ID.fullmatch(value) is not None)


def _check_id(image_id: object) -> str:
    if not is_image_id(image_id):
        raise _error(MSG_BAD_ID, 422, "image_id")
    return image_id  # type: ignore[return-value]


def _upload_path(image_id: str, settings: Settings) -> Path:
    """The stored file of a live upload; an expired file is deleted and counts as missing."""
    path = Path(settings.upload_dir) / f"{image_id}.png"
    try:
        mtime = path.stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        raise _error(MSG_GONE, 404, "image_id") from None
    if time.time() - mtime > settings.upload_ttl_seconds:
        path.unlink(missing_ok=True)
        raise _error(MSG_GONE, 404, "image_id")
    return path


def stored_png(image_id: str, settings: Settings) -> bytes:
    """The stored picture as PNG bytes (an upload's file as stored; a sample encoded)."""
    image_id = _check_id(image_id)
    if image_id in SAMPLES:
        return _sample_png(image_id)
    try:
        return _upload_path(image_id, settings).read_bytes()
    except FileNotFoundError:  # swept between the check and the read
        raise _error(MSG_GONE, 404, "image_id") from None


@functools.lru_cache(maxsize=len(SAMPLES))
def _sample_png(name: str) -> bytes:
    return to_png(_sample_image(name))


def load_image(image_id: str, settings: Settings) -> Image.Image:
    """The stored picture, mode "L" or "RGB", for an upload id or a sample name.

    The id's shape is checked before the file system is touched. Unknown or expired:
    ``ImageError`` 404 ("upload it again"); malformed: ``ImageError`` 422.
    """
    image_id = _check_id(image_id)
    if image_id in SAMPLES:
        return _sample_image(image_id).copy()
    data = stored_png(image_id, settings)
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            img.load()
            return _normalise_mode(img)
    except Exception:  # a damaged stored file is as good as gone
        raise _error(MSG_GONE, 404, "image_id") from None


def image_info(image_id: str, settings: Settings) -> StoredImage:
    """Id, stored width/height, channels and format (of the stored file) without decoding pixels."""
    image_id = _check_id(image_id)
    if image_id in SAMPLES:
        img = _sample_image(image_id)
        sample_file = SAMPLES[image_id].file
        fmt = "JPEG" if sample_file and sample_file.endswith(".jpg") else "PNG"
        return StoredImage(image_id, img.width, img.height, len(img.getbands()), fmt)
    try:
        with Image.open(_upload_path(image_id, settings), formats=["PNG"]) as img:
            return StoredImage(image_id, img.width, img.height, len(img.getbands()), "PNG")
    except ImageError:
        raise
    except Exception:
        raise _error(MSG_GONE, 404, "image_id") from None


# --------------------------------------------------------------------------- pixel arrays


class _ArrayCache:
    """A small thread-safe LRU of read-only arrays, bounded by their total bytes."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple, value: np.ndarray, budget: int) -> None:
        if value.nbytes > budget:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > budget:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes


_arrays = _ArrayCache()


def working_shape(width: int, height: int, size: int | None) -> tuple[int, int]:
    """(W, H) after downsampling so the longest side is ``size``, aspect kept.

    Never upsamples: a picture already within ``size`` keeps its own size (a 28×28 digit
    at size 64 stays 28×28); None keeps the stored size.
    """
    longest = max(width, height)
    if size is None or size >= longest:
        return width, height
    return max(1, round(width * size / longest)), max(1, round(height * size / longest))


def image_array(image_id: str, settings: Settings, size: int | None = None, color: Color = "gray") -> np.ndarray:
    """The picture as the engine's input x: uint8 (C, H, W), C = 1 for "gray", 3 for "rgb".

    size: the working size, i.e. the longest side in pixels after an area (box) filter
    downsample with the aspect kept, 1..64; None = the stored size. The other side is
    ``round(side · size / longest)``, at least 1. Gray from RGB uses ITU-R 601 luma; RGB from
    gray repeats the channel. The array is shared through a cache: read-only.
    """
    image_id = _check_id(image_id)
    whole = isinstance(size, (int, np.integer)) and not isinstance(size, bool)
    if size is not None and not (whole and MIN_WORKING_SIZE <= size <= MAX_WORKING_SIZE):
        raise _error(MSG_BAD_SIZE, 422, "size", min=MIN_WORKING_SIZE, max=MAX_WORKING_SIZE)
    if color not in ("gray", "rgb"):
        raise _error(MSG_BAD_COLOR, 422, "color")
    if image_id in SAMPLES:
        folder = ""
    else:
        _upload_path(image_id, settings)  # an expired upload must not live on in the cache
        folder = str(settings.upload_dir)
    key = (folder, image_id, None if size is None else int(size), color)
    cached = _arrays.get(key)
    if cached is not None:
        return cached
    img = load_image(image_id, settings).convert("L" if color == "gray" else "RGB")
    W, H = working_shape(img.width, img.height, size)
    if (W, H) != img.size:
        img = img.resize((W, H), Image.Resampling.BOX)
    pixels = np.asarray(img, dtype=np.uint8)
    x = np.ascontiguousarray(pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
    x.flags.writeable = False
    _arrays.put(key, x, settings.image_cache_bytes)
    return x


def to_png(picture: Image.Image | np.ndarray) -> bytes:
    """PNG bytes of a PIL image or a uint8 array (H, W), (1, H, W) or (3, H, W)."""
    if isinstance(picture, Image.Image):
        img = picture
    else:
        array = np.asarray(picture)
        if array.dtype != np.uint8:
            raise TypeError(f"to_png needs uint8 pixels, got {array.dtype}")
        if array.ndim == 3 and array.shape[0] in (1, 3):
            array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
        if array.ndim != 2 and not (array.ndim == 3 and array.shape[2] == 3):
            raise ValueError(f"to_png needs (H, W), (1, H, W) or (3, H, W), got {array.shape}")
        img = Image.fromarray(np.ascontiguousarray(array))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=3)
    return buf.getvalue()


__all__ = [
    "ACCEPTED_FORMATS",
    "MAX_WORKING_SIZE",
    "MIN_WORKING_SIZE",
    "SAMPLES",
    "ImageError",
    "Sample",
    "StoredImage",
    "image_array",
    "image_info",
    "is_image_id",
    "load_image",
    "save_upload",
    "stored_png",
    "sweep_expired",
    "to_png",
    "format_bytes",
    "format_number",
    "working_shape",
]
