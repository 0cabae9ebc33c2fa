"""Pictures over HTTP: upload one, fetch a stored picture as PNG, list the shipped samples.

The upload route parses the multipart body itself instead of declaring an ``UploadFile``
parameter: FastAPI would read (and spool) the whole body before the route runs, and the
size cap must hold before that.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from cnnlab.app import images
from cnnlab.app.api_schema import PNG, api_errors, page_errors
from cnnlab.app.i18n import gettext
from cnnlab.app.ratelimit import limit
from cnnlab.app.settings import Settings, get_settings
from cnnlab.app.uploads import read_upload_form, store_upload

router = APIRouter(tags=["images"])

UPLOAD_CACHE_CONTROL = "private, max-age=31536000, immutable"  # content-addressed: never changes
SAMPLE_CACHE_CONTROL = "public, max-age=86400"  # may change with the app's version


class StoredImageOut(BaseModel):
    id: str
    width: int
    height: int
    channels: Literal[1, 3]


class SampleOut(BaseModel):
    id: str
    title: str
    width: int
    height: int
    channels: Literal[1, 3]
    licence: str
    url: str


# What 400, 404 and 422 mean for pictures (413 and 415 as everywhere: app/api_schema.py).
_DESCRIPTIONS = {
    400: "Empty file or a body that is not a multipart form.",
    404: "Unknown or expired image id.",
    422: "Damaged or 0×0 picture, missing field `file`, malformed id or bad size/colour.",
}


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "PNG, JPEG, WebP, BMP or GIF; the format is read from the content.",
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "/api/images",
    name="api_upload_image",
    status_code=201,
    response_model=StoredImageOut,
    responses=api_errors(400, 413, 415, 422, 429, 503, 507, descriptions=_DESCRIPTIONS),
    openapi_extra=_UPLOAD_BODY,
    summary="Store an uploaded picture",
)
async def upload_image(request: Request, settings: Settings = Depends(get_settings)) -> JSONResponse:
    """Check and store a picture (multipart field ``file``); returns its id and stored size.

    The same picture always gets the same id. Use the id as ``image_id`` in the stepper's
    endpoints and in ``/images/{id}.png``.
    """
    limit(request, "uploads")  # before a byte of the body is read
    stored = await store_upload(await read_upload_form(request, settings), settings)
    body = StoredImageOut(id=stored.id, width=stored.width, height=stored.height, channels=stored.channels)
    return JSONResponse(body.model_dump(), status_code=201)


@router.get(
    "/api/images/samples",
    name="api_image_samples",
    response_model=list[SampleOut],
    summary="The shipped sample pictures",
)
def list_samples(request: Request, settings: Settings = Depends(get_settings)) -> list[SampleOut]:
    """Every sample: its id (usable wherever an upload id is), title in the request's
    language, stored size and licence."""
    listed = []
    for name, sample in images.SAMPLES.items():
        info = images.image_info(name, settings)
        listed.append(
            SampleOut(
                id=name,
                title=gettext(sample.title),
                width=info.width,
                height=info.height,
                channels=info.channels,
                licence=gettext(sample.licence),
                url=str(request.app.url_path_for("image_png", image_id=name)),
            )
        )
    return listed


@router.get(
    "/images/{image_id}.png",
    name="image_png",
    response_class=Response,
    # Not under /api, so errors are pages (the address is also opened in a browser tab).
    responses={**PNG, **page_errors(404, 422, descriptions={404: "Unknown or expired image id (an error page).",
                                                           422: "Malformed id, size or colour (an error page)."})},
    summary="A stored picture as PNG",
)
def image_png(
    image_id: str,
    size: int | None = Query(
        None,
        ge=images.MIN_WORKING_SIZE,
        le=images.MAX_WORKING_SIZE,
        description="Working size: the longest side after downsampling (box filter).",
    ),
    color: Literal["gray", "rgb"] | None = Query(None, description="Channels of the working-size version."),
    settings: Settings = Depends(get_settings),
) -> Response:
    """The stored picture, or with ``size``/``color`` the working-size version the stepper
    computes on (small: the page enlarges it with ``image-rendering: pixelated``)."""
    if size is None and color is None:
        content = images.stored_png(image_id, settings)
    else:
        if color is None:
            color = "gray" if images.image_info(image_id, settings).channels == 1 else "rgb"
        content = images.to_png(images.image_array(image_id, settings, size, color))
    cache = SAMPLE_CACHE_CONTROL if image_id in images.SAMPLES else UPLOAD_CACHE_CONTROL
    return Response(
        content,
        media_type="image/png",
        headers={"cache-control": cache, "x-content-type-options": "nosniff"},
    )
