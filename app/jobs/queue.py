"""The job queue's interface, and the one choice of implementation made at start-up.

    queue = make_queue(settings, app)     # app.state.jobs, made in the app's lifespan
    job = queue.submit(session, spec, address)
    queue.get(session, job.id) / queue.list(session) / queue.cancel(session, job.id)
    queue.owner(job.id)                   # the session owning a job kept by id (a class's)

Two implementations: ``LocalJobQueue`` (app/jobs/local.py; the default) trains in processes
of this server; ``RedisJobQueue`` (app/jobs/shared.py), chosen when ``redis_url`` is set,
keeps every job in Valkey/Redis and has RQ workers (``cnnlab worker``) train them, so any
web process answers for any job. Both hand out the same ``Job`` objects; the routes never
ask which one they have.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from cnnlab.app.jobs.job import Job
from cnnlab.app.jobs.spec import TrainSpec
from cnnlab.app.settings import Settings

__all__ = ["JobQueue", "make_queue"]


@runtime_checkable
class JobQueue(Protocol):
    settings: Settings

    def submit(self, session: str, spec: TrainSpec, address: str | None = None) -> Job:
        """Queue ``spec`` for ``session``; JobLimitError (429) beyond the caps."""

    def get(self, session: str, job_id: str) -> Job:
        """The session's job; JobNotFound for an unknown id and another session's alike."""

    def list(self, session: str) -> list[Job]:
        """The session's jobs, oldest first."""

    def owner(self, job_id: str) -> str | None:
        """The session that owns job ``job_id``; None when there is no such job (or it expired).
        For code that reaches another session's job by an id it keeps (a class's training)."""

    def cancel(self, session: str, job_id: str) -> Job:
        """Stop the job (a queued one leaves the queue); a finished one is left as it is."""

    def touch(self, session: str) -> None:
        """Someone from ``session`` is still there (a page or an event stream)."""

    def last_seen(self, session: str) -> float | None:
        """When ``session`` last asked about its jobs (the implementation's clock)."""

    def add_finished(self, job: Job) -> Job:
        """Keep an already finished job (a loaded model) under its session."""

    def sweep(self) -> int:
        """Forget expired finished jobs (app/cleanup.py); returns how many."""

    def datasets_in_use(self) -> set[str]:
        """The stored datasets (ids, app/datasets.py) that jobs still kept train on or were
        trained on: app/cleanup.py leaves their files alone."""

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop what this process runs and release what it holds."""


def make_queue(settings: Settings, app: Any = None) -> JobQueue:
    """The queue for ``settings``: shared through Valkey/Redis when ``redis_url`` is set (then
    ``app``'s Hub wakes the job mirrors this process keeps)."""
    from cnnlab.app import backend

    if backend.redis_url(settings):
        from cnnlab.app.jobs.shared import RedisJobQueue

        return RedisJobQueue(settings, hub=backend.hub_for(app) if app is not None else None)
    from cnnlab.app.jobs.local import LocalJobQueue

    return LocalJobQueue(settings)
