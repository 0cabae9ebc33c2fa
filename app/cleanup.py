"""Housekeeping that runs whether or not anyone uploads or asks about a training.

Expired uploads are otherwise deleted only when the next picture is uploaded
(``images._maybe_sweep``), and finished jobs forgotten only when some browser asks the job
runner something. After a class leaves, nothing would ever free either. ``run_cleanup``
runs in the server's lifespan and sweeps both every ``cleanup_interval(settings)`` seconds:

    uploads older than ``upload_ttl_seconds``: deleted from ``upload_dir`` (our files only);
    jobs finished more than ``job_ttl_seconds`` ago: dropped, with their model and curve;
    stored datasets (``<upload_dir>/datasets/``, app/datasets.py) unused for longer than
    ``upload_ttl_seconds``: deleted, unless a job the queue still keeps names them. A
    dataset's file time is when it was last stored (storing the same drawings again renews
    it), as an upload's is when it was uploaded.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
from fastapi import FastAPI

from cnnlab.app import datasets as app_datasets
from cnnlab.app.images import sweep_expired
from cnnlab.app.jobs import JobQueue
from cnnlab.app.settings import Settings, settings_for

__all__ = ["Swept", "cleanup_interval", "run_cleanup", "sweep_datasets", "sweep_once"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Swept:
    uploads: int  # files deleted
    jobs: int  # finished jobs forgotten
    datasets: int = 0  # stored dataset files deleted


def cleanup_interval(settings: Settings) -> float:
    """Seconds between sweeps: the setting, but at most half of either time to live, so an
    expired item never outlives its expiry by more than half of it again."""
    return min(settings.cleanup_interval_seconds, settings.upload_ttl_seconds / 2, settings.job_ttl_seconds / 2)


def sweep_datasets(settings: Settings, in_use: set[str]) -> int:
    """Delete stored datasets untouched for ``upload_ttl_seconds`` whose id is not in
    ``in_use`` (files named by an id only); returns how many."""
    cutoff = time.time() - settings.upload_ttl_seconds
    removed = 0
    try:
        entries = os.scandir(Path(settings.upload_dir) / app_datasets.FOLDER)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    with entries:
        for entry in entries:
            dataset_id = entry.name.removesuffix(".npz")
            if entry.name == dataset_id or not app_datasets.is_dataset_id(dataset_id) or dataset_id in in_use:
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:  # another process swept it first
                continue
    return removed


def sweep_once(settings: Settings, runner: JobQueue | None) -> Swept:
    uploads = sweep_expired(settings)
    jobs = runner.sweep() if runner is not None else 0
    stored = sweep_datasets(settings, runner.datasets_in_use() if runner is not None else set())
    if uploads or jobs or stored:
        log.info("cleanup: %d expired uploads deleted, %d finished jobs forgotten, %d unused datasets deleted",
                 uploads, jobs, stored)
    return Swept(uploads, jobs, stored)


async def run_cleanup(app: FastAPI) -> None:
    """Sweep until cancelled (at shutdown). Settings are read on every round, so a test's
    override applies; a failed round is logged and the next one runs as usual."""
    while True:
        await anyio.sleep(cleanup_interval(settings_for(app)))
        try:
            await anyio.to_thread.run_sync(sweep_once, settings_for(app), getattr(app.state, "jobs", None))
        except Exception:  # a full disk or a vanished folder must not end the housekeeping
            log.exception("cleanup round failed")
