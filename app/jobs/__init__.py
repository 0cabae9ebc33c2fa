"""Training jobs: a spec, somewhere that trains it, and what a page needs to watch it.

    queue = make_queue(settings)          # one per app: app.state.jobs (made in the lifespan)
    job = queue.submit(session, TrainSpec.model_validate({"dataset": "digits"}))
    version = 0
    while job.status in ACTIVE:
        version = job.wait_for_change(version, timeout=15)
        ...job.snapshot()...              # status, metrics, records so far
    predict(job, grid)                    # the trained (or stopped) model answers

A job belongs to the browser session that made it: ``get`` answers ``JobNotFound`` for an
unknown id and for another session's id alike, so ids cannot be probed.

    spec.py     TrainSpec, dataset_defaults, INPUT_SHAPES, build_model
    job.py      Job (what routes read), its errors, ACTIVE/FINISHED
    queue.py    the JobQueue interface and make_queue (the one choice of implementation)
    local.py    LocalJobQueue (= JobRunner): in-process, the default
    shared.py   RedisJobQueue: jobs in Valkey/Redis, trained by RQ workers
    worker.py   what an RQ worker runs (``cnnlab worker``)
    use.py      predict, export_npz, export_onnx, load_npz
"""

from cnnlab.app.jobs.job import (ACTIVE, FINISHED, Job, JobError, JobLimitError, JobNotFound, JobStateError,
                          ModelFileError)
from cnnlab.app.jobs.local import JobRunner, LocalJobQueue
from cnnlab.app.jobs.queue import JobQueue, make_queue
from cnnlab.app.jobs.spec import INPUT_SHAPES, TrainSpec, build_model, dataset_defaults, input_shape
from cnnlab.app.jobs.use import _grid_array, export_npz, export_onnx, load_npz, predict  # noqa: F401 (_grid_array: train_api)

__all__ = [
    "ACTIVE", "FINISHED", "TrainSpec", "Job", "JobRunner", "LocalJobQueue", "JobQueue", "make_queue",
    "JobError", "JobLimitError", "JobNotFound", "JobStateError", "ModelFileError", "predict", "export_npz", "export_onnx",
    "load_npz", "input_shape", "build_model", "dataset_defaults", "INPUT_SHAPES",
]
