"""Housekeeping that runs whether or not anyone uploads or asks about a training.

Expired uploads are otherwise deleted only when the next picture is uploaded
(``images._maybe_sweep``), and finished jobs forgotten only when some browser asks the job
runner something. After a class leaves, nothing would ever free either. ``run_cleanup``
runs in the server's lifespan and sweeps both every ``cleanup_interval(settings)`` seconds:

    uploads older than ``upload_ttl_seconds``: deleted from ``upload_dir`` (our files only);
    jobs finished more than ``job_ttl_seconds`` ago: dropped, with their model and curve.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
from fastapi import FastAPI

from cnnlab.app.images import sweep_expired
from cnnlab.app.jobs import JobQueue
from cnnlab.app.settings import Settings, settings_for

__all__ = ["Swept", "cleanup_interval", "run_cleanup", "sweep_once"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Swept:
    uploads: int  # files deleted
    jobs: int  # finished jobs forgotten


def cleanup_interval(settings: Settings) -> float:
    """Seconds between sweeps: the setting, but at most half of either time to live, so an
    expired item never outlives its expiry by more than half of it again."""
    return min(settings.cleanup_interval_seconds, settings.upload_ttl_seconds / 2, settings.job_ttl_seconds / 2)


def sweep_once(settings: Settings, runner: JobQueue | None) -> Swept:
    uploads = sweep_expired(settings)
    jobs = runner.sweep() if runner is not None else 0
    if uploads or jobs:
        log.info("cleanup: %d expired uploads deleted, %d finished jobs forgotten", uploads, jobs)
    return Swept(uploads, jobs)


async def run_cleanup(app: FastAPI) -> None:
    """Sweep until cancelled (at shutdown). Settings are read on every round, so a test's
    override applies; a failed round is logged and the next one runs as usual."""
    while True:
        await anyio.sleep(cleanup_interval(settings_for(app)))
        try:
            await anyio.to_thread.run_sync(sweep_once, settings_for(app), getattr(app.state, "jobs", None))
        except Exception:  # a full disk or a vanished folder must not end the housekeeping
            log.exception("cleanup round failed")
