"""The notebooks of a /practice exercise and of a finished /train run (issue 16, "Open as notebook").

Each kind is executed once in a real kernel; every other notebook runs in process
(tests/notebookrun.py) and its numbers are compared with the page's JSON twin: the exercise's
answer with GET /api/practice/solution, a run's held-out accuracy with GET /api/train/<id> and
the first held-out images' probabilities with POST /api/train/<id>/predict.
"""

from __future__ import annotations

import io
import random
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from notebookrun import in_kernel, in_process, outputs_text, parse
from pagecheck import soup, translated

import cnnlab
from cnnlab.app import practice as practice_view
from cnnlab.app.i18n import use_locale
from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.notebooks.train import FIRST_IMAGES, model_notebook
from cnnlab.core.exercises import KINDS, LEVELS, MAX_SEED, generate

HX = {"HX-Request": "true"}
DONE = "NumPy and the engine both give the page's numbers."
GIVE_UP_SECONDS = 60


def markdown(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


def notebook(client: TestClient, url: str):
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ipynb+json")
    return parse(response.content)


# ============================================================================== /practice


def practice_url(kind: str, level: int, seed: int, **extra) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"kind": kind, "level": level, "seed": seed, **extra}.items())
    return f"/notebook/practice?{query}"


def api_answer(client: TestClient, kind: str, level: int, seed: int):
    response = client.get("/api/practice/solution", params={"kind": kind, "level": level, "seed": seed})
    assert response.status_code == 200, response.text
    return response.json()["answer"]


def assert_practice_notebook_matches_api(client: TestClient, kind: str, level: int, seed: int) -> None:
    ns = in_process(notebook(client, practice_url(kind, level, seed)))  # its last cell asserts NumPy = engine = PAGE
    expected = api_answer(client, kind, level, seed)
    assert np.shape(ns["PAGE"]["answer"]) == np.shape(expected)
    np.testing.assert_allclose(ns["PAGE"]["answer"], expected, rtol=1e-12, atol=0)


def test_a_practice_notebook_runs_in_a_kernel(client, tmp_path):
    nb = notebook(client, practice_url("conv_output", 3, 11))
    in_kernel(nb, str(tmp_path))
    assert translated(DONE) in outputs_text(nb)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_and_level_gives_the_answer_of_the_api(client, kind):
    for level in LEVELS:
        assert_practice_notebook_matches_api(client, kind, level, 1000 * level + KINDS.index(kind))


def test_random_exercises_give_the_answer_of_the_api(client):
    rng = random.Random(16)
    for _ in range(4):
        kind, level, seed = rng.choice(KINDS), rng.choice(LEVELS), rng.randrange(MAX_SEED + 1)
        assert_practice_notebook_matches_api(client, kind, level, seed)


@pytest.mark.parametrize(("query", "msgid", "params"), [
    ("kind=nope&seed=1", "There is no exercise kind “%(kind)s”; the kinds are: %(kinds)s.",
     {"kind": "nope", "kinds": ", ".join(KINDS)}),
    ("kind=relu&level=7&seed=1", "The level must be 1, 2 or 3.", {}),
    ("kind=relu&seed=x", "The seed must be a whole number from 0 to %(max)s.", {"max": MAX_SEED}),
])
def test_a_state_the_practice_page_refuses_is_refused_in_spanish(client, query, msgid, params):
    message = translated(msgid, **params)
    page = client.get(f"/practice?{query}")
    assert page.status_code == 422 and message in page.text
    response = client.get(f"/notebook/practice?{query}")
    assert response.status_code == 422 and message in response.text
    missing = client.get("/notebook/practice?kind=relu")
    assert missing.status_code == 422
    assert translated("The seed is missing: open the exercise again from its address.") in missing.text


def test_the_practice_page_links_the_notebook_of_its_exercise(client):
    kind, level, seed = "pool", 2, 5
    page = soup(client.get(f"/practice?kind={kind}&level={level}&seed={seed}"))
    link = page.select_one("#practice-exercise .practice-actions a.notebook-link[download]")
    assert link is not None
    assert link["href"] == practice_url(kind, level, seed)
    ns = in_process(notebook(client, link["href"]))
    np.testing.assert_allclose(ns["PAGE"]["answer"], api_answer(client, kind, level, seed), rtol=1e-12, atol=0)
    # The fragment htmx swaps after a check keeps the link.
    checked = client.post("/practice/check", data={"kind": kind, "level": level, "seed": seed, "c0": "1"}, headers=HX)
    assert checked.status_code == 200
    again = soup(checked).select_one("#practice-exercise a.notebook-link")
    assert again is not None and again["href"] == link["href"]


def test_the_practice_notebook_speaks_the_page_language(client):
    kind, level, seed = "cross_entropy", 2, 9
    ex = generate(kind, seed, level)
    spanish = markdown(notebook(client, practice_url(kind, level, seed)))
    english = markdown(notebook(client, practice_url(kind, level, seed, lang="en")))
    for text, locale in ((spanish, "es"), (english, "en")):
        with use_locale(locale):
            assert practice_view.prompt(ex) in text
            assert practice_view.step_label(practice_view.solution(ex)[-1]) in text
        assert f"## {translated('The exercise', locale)}" in text
        assert f"## {translated('In plain NumPy', locale)}" in text
    assert translated("The exercise") != "The exercise" and spanish != english


# ============================================================================== /train


def session_jobs_done(client: TestClient, job_ids: list[str]) -> dict[str, dict]:
    give_up = time.monotonic() + GIVE_UP_SECONDS
    done: dict[str, dict] = {}
    while len(done) < len(job_ids):
        assert time.monotonic() < give_up, "the trainings did not finish"
        for job_id in job_ids:
            if job_id not in done:
                body = client.get(f"/api/train/{job_id}", params={"records": False}).json()
                if body["status"] not in ("queued", "running"):
                    assert body["status"] == "done", body
                    done[job_id] = body
        time.sleep(0.05)
    return done


@pytest.fixture(scope="module")
def runs():
    """Three finished digits runs (1 epoch) of random architectures, in one browser."""
    rng = random.Random(1616)
    with TestClient(cnnlab_app) as client:
        ids = []
        for _ in range(3):
            kernel = rng.choice((3, 5))
            spec = {"dataset": "digits", "epochs": 1, "batch_size": 64, "filters": rng.choice((4, 8)),
                    "kernel": kernel, "padding": rng.choice((0, kernel // 2)), "pool": rng.choice(("max", "avg")),
                    "pool_size": rng.choice((2, 3)), "hidden": rng.choice((0, 16)),
                    "activation": rng.choice(("relu", "sigmoid", "tanh", "leaky_relu")),
                    "seed": rng.randrange(1000)}
            response = client.post("/api/train", json=spec)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        yield client, session_jobs_done(client, ids)


def predicted(client: TestClient, job_id: str) -> np.ndarray:
    rows = []
    for i in range(FIRST_IMAGES):
        response = client.post(f"/api/train/{job_id}/predict", json={"test_index": i, "maps": False})
        assert response.status_code == 200, response.text
        rows.append(response.json()["probabilities"])
    return np.array(rows)


def test_a_run_notebook_runs_in_a_kernel(runs, tmp_path):
    client, done = runs
    nb = notebook(client, f"/notebook/train?job={next(iter(done))}")
    in_kernel(nb, str(tmp_path))
    assert translated(DONE) in outputs_text(nb)


def test_run_notebooks_give_the_runs_accuracy_and_probabilities(runs):
    client, done = runs
    for job_id, body in done.items():
        ns = in_process(notebook(client, f"/notebook/train?job={job_id}"))
        accuracy = body["metrics"]["test_accuracy"]
        assert ns["PAGE"]["held_out_accuracy"] == accuracy
        assert ns["accuracy_numpy"] == accuracy and ns["result"].accuracy == accuracy
        api = predicted(client, job_id)
        np.testing.assert_allclose(ns["PAGE"]["first_probabilities"], api, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ns["probabilities_numpy"][:FIRST_IMAGES], api, rtol=1e-5, atol=1e-6)
        # The weights in the notebook are the ones /weights.npz serves.
        served = np.load(io.BytesIO(client.get(f"/api/train/{job_id}/weights.npz").content))
        embedded = np.load(io.BytesIO(ns["weights_file"]))
        assert set(served.files) == set(embedded.files)
        for name in served.files:
            np.testing.assert_array_equal(served[name], embedded[name])


def test_model_notebook_is_the_same_notebook_for_a_model_file(runs):
    """What ``cnnlab notebook`` does with a saved .npz."""
    client, done = runs
    job_id, body = next(iter(done.items()))
    model = cnnlab.load_model(io.BytesIO(client.get(f"/api/train/{job_id}/weights.npz").content))
    with use_locale("en"):
        nb = model_notebook(model, "digits", "cnnlab-digits.npz")
    assert "`cnnlab-digits.npz`" in nb.cells[0].source and "## The trained weights" in markdown(nb)
    ns = in_process(nb)
    assert ns["PAGE"]["held_out_accuracy"] == body["metrics"]["test_accuracy"]
    np.testing.assert_allclose(ns["PAGE"]["first_probabilities"], predicted(client, job_id), rtol=1e-9, atol=1e-12)


def test_the_finished_run_page_links_its_notebook(runs):
    client, done = runs
    job_id = next(iter(done))
    page = soup(client.get(f"/train/jobs/{job_id}?lang=es"))
    link = page.select_one("#train-live #train-results a.notebook-link[download]")
    assert link is not None and link["href"] == f"/notebook/train?job={job_id}"
    ns = in_process(notebook(client, link["href"]))
    assert ns["PAGE"]["held_out_accuracy"] == done[job_id]["metrics"]["test_accuracy"]


def test_the_run_notebook_speaks_the_page_language(runs):
    client, done = runs
    job_id = next(iter(done))
    spanish = markdown(notebook(client, f"/notebook/train?job={job_id}&lang=es"))
    english = markdown(notebook(client, f"/notebook/train?job={job_id}&lang=en"))
    client.get("/train?lang=es")  # the module's browser back to Spanish
    for text, locale in ((spanish, "es"), (english, "en")):
        for msgid in ("The trained weights", "The architecture", "The first held-out image, in plain NumPy",
                      "Convolution", "Total parameters"):
            assert translated(msgid, locale) in text
    assert translated("The trained weights") != "The trained weights"


def test_a_run_the_notebook_cannot_show_is_refused_with_the_page_message(runs):
    client, done = runs
    job_id = next(iter(done))
    missing = client.get("/notebook/train?lang=es")
    assert missing.status_code == 422
    assert translated("Say which training: /notebook/train?job=<the run's id>.") in missing.text.replace("&lt;", "<").replace("&gt;", ">")
    gone = translated("There is no training job with this id in this browser (it may have expired).")
    unknown = client.get("/notebook/train?job=no-such-run&lang=es")
    assert unknown.status_code == 404 and gone in unknown.text
    with TestClient(cnnlab_app) as other:  # another browser: the page's own 404
        assert other.get(f"/train/jobs/{job_id}").status_code == 404
        response = other.get(f"/notebook/train?job={job_id}")
        assert response.status_code == 404 and gone in response.text
        # A run still going: no link on its page, and 409 for its notebook.
        started = other.post("/api/train", json={"dataset": "mnist", "epochs": 30})
        assert started.status_code == 201
        running = started.json()["id"]
        try:
            assert soup(other.get(f"/train/jobs/{running}")).select_one("a.notebook-link") is None
            response = other.get(f"/notebook/train?job={running}")
            assert response.status_code == 409
            assert translated("This training has not finished yet: its notebook is ready when it ends.") in response.text
        finally:
            other.delete(f"/api/train/{running}")
