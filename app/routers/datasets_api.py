"""JSON API for datasets of one's own (app/datasets.py): store a file, read what it holds.

    POST /api/datasets          multipart ``file``: a dataset .npz -> {"id", "labels", "images", "counts"}
    GET  /api/datasets/{id}     the same summary (404 when there is no such dataset)

Train one with ``POST /api/train`` and ``{"dataset": id}``.
"""

from __future__ import annotations

from typing import Annotated

from cnnlab.app import datasets as app_datasets
from cnnlab.app.api_schema import api_errors
from cnnlab.app.ratelimit import limit
from cnnlab.app.settings import Settings, get_settings
from fastapi import APIRouter, Depends, File, Request, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


class DatasetSummary(BaseModel):
    id: str = Field(description='the dataset\'s id ("set-" and 16 hex digits of its content\'s digest): '
                                'train it with POST /api/train {"dataset": id}')
    labels: list[str] = Field(description="the label names, class 0 first")
    images: int = Field(description="images in all (training and held-out)")
    counts: list[int] = Field(description="images per label")


@router.post("", status_code=201, response_model=DatasetSummary, responses=api_errors(400, 413, 422, 429))
async def upload(request: Request, file: Annotated[UploadFile, File(description=(
        "a dataset .npz: images uint8 (N, 28, 28) (0 = paper, 255 = ink), labels int64 (N,) in 0..K-1, "
        "label_names (K,) text; 2 ≤ K ≤ 10, N ≤ 5,000, at least 2 images per label"))],
        settings: Annotated[Settings, Depends(get_settings)]) -> DatasetSummary:
    """Check and store a dataset file; the same content always gets the same id."""
    limit(request, "uploads")
    data = await file.read(app_datasets.MAX_DATASET_BYTES + 1)
    dataset_id = await run_in_threadpool(app_datasets.store_dataset, settings, data)
    return DatasetSummary(**await run_in_threadpool(app_datasets.dataset_summary, settings, dataset_id))


@router.get("/{dataset_id}", response_model=DatasetSummary, responses=api_errors(404))
async def summary(dataset_id: str, settings: Annotated[Settings, Depends(get_settings)]) -> DatasetSummary:
    """What a stored dataset holds ("digits" and "mnist" answer too)."""
    return DatasetSummary(**await run_in_threadpool(app_datasets.dataset_summary, settings, dataset_id))
