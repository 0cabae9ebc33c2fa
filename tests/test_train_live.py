"""Several screens on one run: each update of the training page's live part is rendered once
per language and sent to every stream (app/routers/train_live.py)."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from cnnlab.app.jobs import FINISHED, Job, TrainSpec
from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.routers import train_live, train_page
from cnnlab.app.session import unsign
from cnnlab.app.settings import settings_for
from cnnlab.app.templating import request_locale

LANGUAGES = ("es", "es", "es", "en", "en")


def events_of(client: TestClient, url: str) -> list[tuple[str, str, str]]:
    """(name, id, data) of every event of the stream at ``url``, until it ends."""
    events, fields = [], {}
    with client.stream("GET", url) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith(("event: ", "id: ", "data: ")):
                key, value = line.split(": ", 1)
                fields[key] = fields.get(key, "") + value if key == "data" else value
            elif line == "" and "event" in fields:
                events.append((fields["event"], fields.get("id", ""), fields.get("data", "")))
                fields = {}
    return events


def test_streams_on_one_run_share_one_render_per_update_and_language(monkeypatch):
    renders: Counter[tuple[int | None, str]] = Counter()
    real = train_page.live_html

    def counting(request, job, upto):
        renders[(upto, request_locale(request))] += 1
        return real(request, job, upto)

    monkeypatch.setattr(train_page, "live_html", counting)
    with TestClient(cnnlab_app) as client:
        created = client.post("/api/train", json={"dataset": "digits", "epochs": 2})
        assert created.status_code == 201
        job_id = created.json()["id"]
        session = unsign(client.cookies.get("cnnlab_session"), settings_for(client.app))
        job = client.app.state.jobs.get(session, job_id)
        while job.status not in FINISHED:
            job.wait_for_change(job.version, timeout=1)
        # Five screens replay the finished run at once (three in Spanish, two in English).
        with ThreadPoolExecutor(len(LANGUAGES)) as pool:
            streams = list(pool.map(lambda lang: events_of(client, f"/train/jobs/{job_id}/events?lang={lang}"),
                                    LANGUAGES))

    spanish, english = streams[0], streams[3]
    assert len(spanish) >= 3 and spanish[-1][0] == "done"
    # Every screen got every update, the same HTML as the other screens in its language.
    for lang, events in zip(LANGUAGES, streams):
        assert events == (spanish if lang == "es" else english)
    assert [e[:2] for e in english] == [e[:2] for e in spanish]
    assert "Terminado" in spanish[-1][2] and "Finished" in english[-1][2]
    # One render per update and language, however many screens watched.
    ids = [int(e[1]) for e in spanish]
    assert renders == Counter({(upto, lang): 1 for upto in ids for lang in ("es", "en")})


def test_a_forgotten_job_takes_its_renders_with_it():
    job = Job("someone", TrainSpec.model_validate({"dataset": "digits"}))
    job_id = job.id

    async def render_once() -> str:
        return await train_live.shared_render(job, (0, None), "es", lambda: f"<p>{job.id}</p>")

    # A thread of its own: Playwright's sync API (the browser tests) keeps an event loop
    # running in the main thread for the rest of the session, where asyncio.run refuses.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, render_once()).result() == f"<p>{job_id}</p>"
    assert job_id in train_live.cached_jobs()
    del job
    gc.collect()
    assert job_id not in train_live.cached_jobs()
