"""The training page's live fragment, rendered once per update for every screen watching a run.

A run is often watched on several screens of one browser (the projector, the assistant's
laptop, a second tab): each event stream would render the same ``#train-live`` HTML for
each update, up to 5 times a second (8 streams on one MNIST run: about half a core).
Instead the first stream that needs an update renders it in a worker thread and the others
await the same task: one render per (job, update, language), however many screens watch.

The cache is small (``KEPT`` renders in all, oldest dropped first) and a job's renders are
dropped as soon as the job itself is forgotten (swept or expired), so it never keeps a job
or its HTML alive on its own.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from starlette.concurrency import run_in_threadpool

__all__ = ["shared_render", "cached_jobs", "KEPT"]

# Enough for a few runs watched at once, each with streams a few updates apart (a tab
# opened later replays the run from its start).
KEPT = 32

_lock = threading.Lock()  # a job's finalizer may run in any thread
_renders: OrderedDict[tuple[str, Hashable, str], asyncio.Task] = OrderedDict()
_watched: set[str] = set()  # jobs with a finalizer that drops their renders


def _forget(job_id: str) -> None:
    with _lock:
        _watched.discard(job_id)
        for key in [k for k in _renders if k[0] == job_id]:
            del _renders[key]


async def shared_render(job: Any, update: Hashable, locale: str, render: Callable[[], str]) -> str:
    """``render()`` (run in a worker thread) for this ``update`` of ``job`` in ``locale``,
    or the HTML another stream of the same job already rendered (or is rendering) for it.

    ``update`` names what the stream shows: streams that would render the same HTML pass
    equal values. A failed render fails every stream waiting for it, as it would each."""
    key = (job.id, update, locale)
    loop = asyncio.get_running_loop()
    with _lock:
        task = _renders.get(key)
        if task is None or task.get_loop() is not loop:  # tests run several event loops
            task = _renders[key] = loop.create_task(run_in_threadpool(render))
            while len(_renders) > KEPT:
                _renders.popitem(last=False)
            if job.id not in _watched:
                _watched.add(job.id)
                weakref.finalize(job, _forget, job.id)
        else:
            _renders.move_to_end(key)
    # Shielded: a screen that closes while waiting does not cancel the others' render.
    return await asyncio.shield(task)


def cached_jobs() -> set[str]:
    """The ids of the jobs with renders kept (for tests)."""
    with _lock:
        return {k[0] for k in _renders}
