"""JSON API for training jobs (app/jobs/): start, watch (server-sent events), stop, use, save, load.

A ``JobError`` is an ``InputError``: the app's handlers answer its status (404, 409, 429) as JSON.

Every job belongs to the browser session that started it (app/session.py); any other
session gets the same 404 as for an id that never existed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from cnnlab.app import datasets as app_datasets
from cnnlab.app.api_schema import api_errors
from cnnlab.app.budget import model_file_limit
from cnnlab.app.errors import InputError
from cnnlab.app.eventstream import Event, event_stream
from cnnlab.app.i18n import gettext as _
from cnnlab.app.jobs import (
    FINISHED,
    Job,
    JobError,
    JobRunner,
    TrainSpec,
    _grid_array,
    export_npz,
    export_onnx,
    load_npz,
    predict,
)
from cnnlab.app.ratelimit import address_key, limit
from cnnlab.app.session import session_id
from cnnlab.app.settings import Settings, get_settings, settings_for

router = APIRouter(prefix="/api/train", tags=["train"])

# The event stream looks for changes this often, on the event loop (no thread is held), and
# sends at most one event per look: a fast job's hundreds of batches a second arrive as ~10
# events a second, each carrying the records since the previous one.
POLL_SECONDS = 0.1

ERRORS = api_errors(404, 422, descriptions={404: "no such job in this browser session"})
# Starting one: too many trainings (this session's rate, or the server's queue is full);
# loading one: a file that is not a model of this lab; using one: no model yet (409).
START_ERRORS = api_errors(400, 404, 422, 429)
LOAD_ERRORS = api_errors(400, 422, 429)
USE_ERRORS = api_errors(400, 404, 409, 422)


def runner_for(request: Request) -> JobRunner:
    """The app's runner (made in the lifespan)."""
    return request.app.state.jobs


def _job(request: Request, job_id: str) -> Job:
    return runner_for(request).get(session_id(request), job_id)


class JobCreated(BaseModel):
    id: str = Field(description="the job's id: unguessable, valid only in this browser session")
    status: str = Field(description='"queued" or "running"')
    queue_position: int | None = Field(description="1 = next to start; null once it runs")


class JobView(BaseModel):
    id: str
    status: str = Field(description='"queued" | "running" | "done" | "stopped" | "failed"')
    spec: TrainSpec
    metrics: dict[str, Any] = Field(description=(
        "so far: epoch, epochs, batch, batches_per_epoch, step, loss, epoch_loss, train_accuracy, "
        "test_accuracy and test_loss (after an epoch), elapsed (s), eta (s), progress (0..1), images, "
        "images_per_second, n_params; at the end also confusion (K×K, K = 10 for the digits; rows = true class) and misclassified "
        "(test indices with label and predicted)"))
    queue_position: int | None
    error: str | None = Field(description="why it failed, when status is failed")
    message: str | None = Field(description="why it stopped or failed")
    version: int = Field(description="grows with every change")
    created: float
    started: float | None
    finished: float | None
    records: list[dict[str, Any]] | None = Field(None, description=(
        "the curve: every epoch record and up to ~400 batch records (core.train.Progress fields plus seq)"))
    filters: list | None = Field(None, description="the first layer's filters now, F×C×k×k")


class JobList(BaseModel):
    jobs: list[JobView]


@router.post("", status_code=201, response_model=JobCreated, responses=START_ERRORS)
def start(spec: TrainSpec, request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> JobCreated:
    """Start training ``spec`` (``{"dataset": "digits"}`` alone trains the default model;
    ``{"dataset": id}`` a dataset of one's own stored with POST /api/datasets)."""
    if app_datasets.is_dataset_id(spec.dataset):  # in this server's upload folder (404 when missing), K classes
        spec = spec.model_copy(update={"classes": app_datasets.dataset_classes(spec.dataset, settings)})
    limit(request, "trainings")
    job = runner_for(request).submit(session_id(request), spec, address_key(request))
    return JobCreated(id=job.id, status=job.status, queue_position=job.queue_position)


@router.get("", response_model=JobList)
def list_jobs(request: Request) -> JobList:
    """This browser's jobs, oldest first (without their records)."""
    jobs = runner_for(request).list(session_id(request))
    return JobList(jobs=[JobView(**job.snapshot()) for job in jobs])


class DesignLayer(BaseModel):
    index: int = Field(description="the layer's index in the model (0 = first)")
    block: int = Field(description="its conv block: 1, 2 or 3; 0 for Flatten and the dense layers")
    type: str = Field(description='"Conv2D" | "Activation" | "Pool2D" | "Flatten" | "Dense"')
    name: str = Field(description="the layer's name in the page's language")
    detail: str = Field(description='e.g. "16@3×3, padding 1", "max 2×2"')
    shape: list[int] = Field(description="output shape without the batch axis: (C, H, W), or (D,) after Flatten")
    shape_formula: str | None = Field(description=(
        "conv and pooling: the side's formula ⌊(n + 2p − d·(k − 1) − 1)/s⌋ + 1 with its numbers; Flatten: C·H·W"))
    params: int = Field(description="its parameters (weights and biases)")
    params_formula: str | None = Field(description="conv: (k·k·C + 1)·F with its numbers; dense: (D + 1)·U; else null")


class ReceptiveStep(BaseModel):
    index: int
    name: str
    detail: str
    k: int = Field(description="effective kernel (a conv's d·(k − 1) + 1, a pool's window; an activation: 1)")
    s: int = Field(description="stride")
    r_prev: int
    j_prev: int
    r: int = Field(description="r = r_prev + (k − 1)·j_prev")
    j: int = Field(description="j = j_prev·s")
    r_formula: str
    j_formula: str


class ReceptiveField(BaseModel):
    layer: int = Field(description="index of the last convolution layer")
    size: int = Field(description="r: side of the square of input pixels one of its cells sees")
    jump: int = Field(description="j: input pixels between neighbouring cells")
    steps: list[ReceptiveStep] = Field(description="how r and j grow, layer by layer up to it")


class Design(BaseModel):
    input_shape: list[int]
    layers: list[DesignLayer]
    total: int = Field(description="all the parameters")
    total_formula: str | None = Field(description="the layers' counts added up, e.g. \"80 + 1 290 = 1 370\"")
    receptive_field: ReceptiveField | None
    spec: TrainSpec = Field(description="the checked setup, defaults filled in")


def _design_parameters() -> list[dict[str, Any]]:
    """The /train form's fields as query parameters of GET /api/train/design (as in /train's URL)."""
    from cnnlab.app.routers import train_page

    properties = TrainSpec.model_json_schema()["properties"]
    out = []
    for name in train_page.FIELDS:
        if name in train_page.CHOICE_FIELDS and name != "dataset":
            schema: dict[str, Any] = {"type": "string", "enum": list(train_page.CHOICE_FIELDS[name])}
        else:
            schema = {k: v for k, v in properties.get(name, {"type": "string"}).items()
                      if k in ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "enum")}
        out.append({"name": name, "in": "query", "required": False, "schema": schema,
                    "description": properties.get(name, {}).get("description", "")})
    return out


@router.get("/design", response_model=Design, responses=api_errors(422),
            openapi_extra={"parameters": _design_parameters()})
def design_view(request: Request) -> Design:
    """The design table of /train for a setup given as /train's URL fields (``?dataset=mnist&blocks=2&…``):
    every layer's output shape and parameter count with the formula and its numbers, the total,
    and the receptive field of the last convolution with its steps. A design that cannot work
    (a map shrinking below 1×1: the message names the block and gives the formula with its
    numbers) or a value out of range is refused with 422 in the page's language."""
    from cnnlab.app.design import design
    from cnnlab.app.routers.train_page import Setup

    setup = Setup(request.query_params, settings_for(request.app))
    if not setup.ok or setup.model is None:
        raise InputError.of(setup.errors or {"architecture": _("This setup cannot be trained")})
    return Design(**design(setup.model), spec=setup.spec)


@router.post("/load", status_code=201, response_model=JobCreated, responses=LOAD_ERRORS)
async def load(request: Request, file: Annotated[UploadFile, File(description="a .npz from weights.npz")]) -> JobCreated:
    """Load a saved model: a new, finished job whose model can predict."""
    # FastAPI has parsed the form already (capped by app.guards); the file is not read yet.
    limit(request, "uploads")
    cap = model_file_limit()  # the largest model the training form allows
    data = await file.read(cap + 1)
    settings = settings_for(request.app)
    try:
        job = await anyio.to_thread.run_sync(lambda: load_npz(session_id(request), data, max_bytes=cap,
                                                              settings=settings))
    except JobError as e:
        raise InputError(e.message, status_code=e.status_code, field="file") from None
    runner_for(request).add_finished(job)
    return JobCreated(id=job.id, status=job.status, queue_position=None)


@router.get("/{job_id}", response_model=JobView, responses=ERRORS)
def status(job_id: str, request: Request, records: Annotated[bool, Query(description="include the curve and filters")] = True) -> JobView:
    """The job so far: status, spec, metrics ("test_accuracy" once an epoch has ended)."""
    return JobView(**_job(request, job_id).snapshot(records=records))


@router.delete("/{job_id}", response_model=JobView, responses=ERRORS)
def stop(job_id: str, request: Request) -> JobView:
    """Stop the job before its next batch (a queued job leaves the queue); its model stays usable."""
    job = runner_for(request).cancel(session_id(request), job_id)
    return JobView(**job.snapshot())


def _event(name: str, data: dict[str, Any]) -> Event:
    return Event(name, json.dumps(data, separators=(",", ":")))


def _progress(job: Job, since: int, filters: list | None) -> dict[str, Any]:
    snap = job.snapshot()
    m = snap["metrics"]
    data = {
        "status": snap["status"], "queue_position": snap["queue_position"], "version": snap["version"],
        "epoch": m.get("epoch"), "epochs": m.get("epochs", job.spec.epochs), "batch": m.get("batch"),
        "batches_per_epoch": m.get("batches_per_epoch"), "step": m.get("step"), "loss": m.get("loss"),
        "accuracy": m.get("train_accuracy"), "test_accuracy": m.get("test_accuracy"),
        "test_loss": m.get("test_loss"), "elapsed": m.get("elapsed"), "eta": m.get("eta"),
        "progress": m.get("progress"), "images_per_second": m.get("images_per_second"),
        "records": job.records_since(since),
    }
    if filters is not None:
        data["filters"] = filters
    if snap["status"] in FINISHED:
        data.update(final=True, metrics=m, message=snap["message"], error=snap["error"])
    return data


@router.get("/{job_id}/events", responses={
    **ERRORS, 429: {"description": "too many event streams open"},
    200: {"content": {"text/event-stream": {}}, "description": (
        "server-sent events: `progress` (JSON: status, epoch, batch, loss, accuracy, test_accuracy, elapsed, eta, "
        "records since the last event, filters when they changed) and a last `done`, `stopped` or `failed` event "
        "with the final metrics (or `stopping` when the server stops); a comment line every 15 s")}})
async def events(job_id: str, request: Request) -> StreamingResponse:
    """Progress as server-sent events until the job ends or the client goes away (or the
    server stops: then a last ``stopping`` event)."""
    job = _job(request, job_id)
    runner = runner_for(request)
    sid = session_id(request)

    async def produce(_last_id: str | None):
        version, seq, filters = -1, 0, None
        while True:
            runner.touch(sid)
            if job.version != version:
                version = job.version
                new_filters = job.filters
                data = _progress(job, seq, new_filters if new_filters is not filters else None)
                filters = new_filters
                if data["records"]:
                    seq = data["records"][-1]["seq"]
                final = data["status"] in FINISHED
                yield _event(data["status"] if final else "progress", data)
                if final:
                    return
            await anyio.sleep(POLL_SECONDS)

    return event_stream(request, produce, lambda: _event("stopping", {"status": job.status}), session=sid)


_GRID_SCHEMA = WithJsonSchema({"type": "array", "items": {"type": "array", "items": {"type": "number"}},
                               "description": "8×8 or 28×28 numbers, ink bright: 0..1 (as the datasets) or 0..255"})


class ImageRequest(BaseModel):
    """One image for a trained model: a drawing or a test image (predict, layers, why)."""

    model_config = ConfigDict(strict=True)

    grid: Annotated[list, _GRID_SCHEMA] | None = Field(None, description=(
        "the image, 8×8 or 28×28 (resampled to the model's size), ink bright on dark; values 0..1, or 0..255 "
        "grey levels when the largest is above 1"))
    test_index: int | None = Field(None, ge=0, description="instead of grid: an image of the dataset's test set")

    @model_validator(mode="after")
    def _one_image(self) -> ImageRequest:
        if (self.grid is None) == (self.test_index is None):
            raise ValueError(_("Give either grid or test_index, not both."))
        if self.grid is not None:
            n = len(self.grid)
            _grid_array(self.grid, (1, n, n))
        return self


class PredictRequest(ImageRequest):
    maps: bool = Field(True, description="also return every layer's output (feature maps)")


class LayerOutput(BaseModel):
    layer: str
    shape: list[int]
    values: list


class PredictResponse(BaseModel):
    probabilities: list[float] = Field(description="one number per class (10 for the digits), summing to 1")
    label: int = Field(description="the most probable class")
    input: list = Field(description="the image as the model saw it, H×W in 0..1")
    true_label: int | None = Field(None, description="with test_index: the right answer")
    layers: list[LayerOutput] | None = Field(None, description="each layer's output for this image (Flatten left out)")


@router.post("/{job_id}/predict", response_model=PredictResponse, response_model_exclude_none=True, responses=USE_ERRORS)
def classify(job_id: str, req: PredictRequest, request: Request) -> PredictResponse:
    """Classify a drawn digit (or a test image) with the job's model as trained so far."""
    job = _job(request, job_id)
    try:
        return PredictResponse(**predict(job, req.grid, test_index=req.test_index, maps=req.maps))
    except ValueError as e:
        raise InputError(str(e)) from None


@router.get("/{job_id}/weights.npz", responses={**ERRORS, **api_errors(409), 200: {"content": {"application/octet-stream": {}},
                                                                  "description": "the model as .npz"}})
def weights(job_id: str, request: Request) -> Response:
    """Download the model (architecture, parameters and settings) as .npz; load it back with /api/train/load."""
    job = _job(request, job_id)
    data = export_npz(job)
    name = f"cnnlab-{job.spec.dataset}-{job.id[:8]}.npz"
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/{job_id}/model.onnx", responses={**ERRORS, **api_errors(409), 200: {"content": {"application/octet-stream": {}},
                                                                 "description": "the model as ONNX"}})
def model_onnx(job_id: str, request: Request) -> Response:
    """Download the model as ONNX (opset 17): opens in Netron, runs in ONNX Runtime
    (input "image" (N, C, H, W), outputs "logits" and "probabilities")."""
    job = _job(request, job_id)
    data = export_onnx(job)
    name = f"cnnlab-{job.spec.dataset}-{job.id[:8]}.onnx"
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
