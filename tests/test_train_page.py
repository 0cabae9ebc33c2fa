"""The training page /train over HTTP: the setup and its summary, bad setups, a digits run
started from the form and its results, the event stream, predictions, weights out and back
in, and another browser's run staying invisible."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from pagecheck import soup, text, translated

from cnnlab.app.i18n import gettext, use_locale
from cnnlab.app.jobs import FINISHED, TrainSpec, build_model
from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.session import unsign
from cnnlab.app.settings import settings_for
from cnnlab.core import datasets
from cnnlab.core.train import DEFAULTS

HX = {"HX-Request": "true"}


def form_data(page: BeautifulSoup) -> dict[str, str]:
    """What the browser sends for #train-form as rendered."""
    form = page.select_one("#train-form")
    data = {field["name"]: field.get("value", "") for field in form.select("input[name]")}
    for select in form.select("select[name]"):
        chosen = select.select_one("option[selected]") or select.select_one("option")
        data[select["name"]] = chosen["value"]
    return data


def session_of(client: TestClient) -> str:
    return unsign(client.cookies.get("cnnlab_session"), settings_for(client.app))


def wait_for(client: TestClient, job_id: str):
    """The job once it has finished (polling the runner)."""
    job = client.app.state.jobs.get(session_of(client), job_id)
    while job.status not in FINISHED:
        job.wait_for_change(job.version, timeout=1)
    return job


def start(client: TestClient, **fields) -> str:
    data = form_data(soup(client.get("/train")))
    data.update({k: str(v) for k, v in fields.items()})
    response = client.post("/train/jobs", data=data, headers=HX)
    assert response.status_code == 200
    assert soup(response).select_one("#train-stream") is not None
    return response.headers["hx-push-url"].rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def finished_run():
    """One default digits run, shared by the tests that only look at its results."""
    with TestClient(cnnlab_app) as client:
        job_id = start(client)
        job = wait_for(client, job_id)
        yield client, job_id, job


def test_the_page_renders_in_spanish_with_the_digits_defaults(client):
    response = client.get("/train")
    assert response.status_code == 200
    page = soup(response)
    assert page.select_one("html[lang=es]") is not None
    assert text(page.select_one("h1")) == translated("Train a tiny CNN, live")
    d = DEFAULTS["digits"]
    assert page.select_one("#train-filters")["value"] == str(d["model"]["filters"])
    assert page.select_one("#train-kernel")["value"] == str(d["model"]["kernel"])
    assert page.select_one("#train-optimizer option[selected]")["value"] == d["optimizer"]["name"]
    assert float(page.select_one("#train-lr")["value"]) == d["optimizer"]["lr"]
    assert page.select_one("#train-epochs")["value"] == str(d["epochs"])
    expected = build_model(TrainSpec(dataset="digits")).n_params
    assert page.select_one("#train-n-params")["data-n"] == str(expected)
    assert len(page.select(".train-layers tbody tr")) == 1 + len(build_model(TrainSpec()).layers)
    # Adam's own fields show, momentum's does not.
    assert page.select_one("#ctl-beta1").find_parent(class_="train-opt").get("hidden") is None
    assert page.select_one("#ctl-momentum").find_parent(class_="train-opt").has_attr("hidden")
    assert page.select_one(".lesson-nav a[rel=prev]")["href"] == "/pipeline#loss"  # section 8
    assert page.select_one(".lesson-nav a[rel=next]")["href"] == "/"  # the last section


def test_the_page_renders_in_english(client):
    page = soup(client.get("/train?lang=en"))
    assert page.select_one("html[lang=en]") is not None
    assert text(page.select_one("h1")) == "Train a tiny CNN, live"
    assert text(page.select_one("#train-start")) == "Start training"


def test_mnist_defaults_come_with_the_dataset(client):
    page = soup(client.get("/train?dataset=mnist"))
    d = DEFAULTS["mnist"]
    assert page.select_one("#train-kernel")["value"] == str(d["model"]["kernel"])
    assert page.select_one("#train-hidden")["value"] == str(d["model"]["hidden"])
    assert page.select_one("#train-n-params")["data-n"] == str(build_model(TrainSpec(dataset="mnist")).n_params)
    # The dataset select sends the dataset alone: the form comes back with its defaults.
    switched = soup(client.get("/train?dataset=mnist", headers={**HX, "HX-Target": "train-setup"}))
    assert switched.select_one("#train-setup") is not None
    assert switched.select_one("#train-filters")["value"] == str(d["model"]["filters"])


def test_the_summary_fragment_follows_a_changed_setup(client):
    response = client.get("/train?dataset=digits&filters=4&hidden=32&kernel=5&padding=2",
                          headers={**HX, "HX-Target": "train-summary"})
    assert response.status_code == 200
    page = soup(response)
    assert page.select_one("#train-summary") is not None
    assert page.select_one("#train-form") is None  # only the summary
    expected = build_model(TrainSpec(dataset="digits", filters=4, hidden=32, kernel=5, padding=2)).n_params
    assert page.select_one("#train-n-params")["data-n"] == str(expected)
    shapes = [text(td) for td in page.select(".train-layers tbody tr td:nth-of-type(2)")]
    assert shapes[:2] == ["1×8×8", "4×8×8"]
    push = response.headers["hx-push-url"]
    assert push.startswith("/train?") and "filters=4" in push and "hidden=32" in push and "lr=" not in push


@pytest.mark.parametrize(
    ("query", "msgid", "params"),
    [
        ("lr=abc", "%(field)s must be %(kind)s.", {"field": "Learning rate", "kind": "a number"}),
        ("epochs=0", "%(field)s must be from %(min)s to %(max)s.", {"field": "Epochs", "min": "1", "max": "30"}),
        ("filters=99", "%(field)s must be from %(min)s to %(max)s.", {"field": "Filters", "min": "1", "max": "16"}),
        ("lr=0", "%(field)s must be more than %(min)s and at most %(max)s.", {"field": "Learning rate", "min": "0", "max": "1"}),
        ("optimizer=rmsprop", "“%(value)s” is not a choice for %(field)s.", {"value": "rmsprop", "field": "Optimizer"}),
    ],
)
def test_a_bad_field_gets_a_translated_message(client, query, msgid, params):
    response = client.get(f"/train?{query}", headers={**HX, "HX-Target": "train-summary"})
    assert response.status_code == 200
    with use_locale("es"):
        spanish = {k: gettext(v) if k == "field" or k == "kind" else v for k, v in params.items()}
    expected = translated(msgid) % spanish
    assert expected in text(soup(response).select_one(".train-problems"))
    assert expected != msgid % params  # really translated


def test_an_architecture_that_does_not_fit_is_explained(client):
    page = soup(client.get("/train?kernel=7&padding=0&pool_size=4", headers={**HX, "HX-Target": "train-summary"}))
    problem = text(page.select_one(".train-problems"))
    assert "4×4" in problem and "2×2" in problem and "= 0" in problem
    assert problem.startswith(translated("This setup cannot be trained"))
    # Starting it anyway says why, instead of a 500.
    response = client.post("/train/jobs", data={"dataset": "digits", "kernel": "7", "padding": "0", "pool_size": "4"},
                           headers=HX)
    assert response.status_code == 200
    assert text(soup(response).select_one(".train-problems h2")) == translated("The training did not start")


def test_a_digits_run_from_the_form_reaches_95_percent_with_a_full_confusion_matrix(finished_run):
    client, job_id, job = finished_run
    assert job.status == "done"
    response = client.get(f"/train/jobs/{job_id}", headers=HX)
    assert response.status_code == 200
    page = soup(response)
    assert page.select_one("#train-live .train-status")["data-status"] == "done"
    assert page.select_one("#train-stream").get("sse-connect") is None  # nothing left to stream
    accuracy = float(text(page.select_one("#train-final-acc")).rstrip(" %").replace(",", "."))  # Spanish: 98,1 %
    assert accuracy >= 95
    rows = page.select("#train-confusion tbody tr")
    assert len(rows) == 10 and all(len(row.select("td")) == 10 for row in rows)
    cells = [[int(td.get_text()) for td in row.select("td")] for row in rows]
    n_test = datasets.load("digits").x_test.shape[0]
    assert sum(map(sum, cells)) == n_test
    assert sum(cells[i][i] for i in range(10)) / n_test == pytest.approx(accuracy / 100, abs=0.0006)
    assert page.select_one("#train-progress")["value"] == "100"
    assert len(page.select(".train-filters img")) == DEFAULTS["digits"]["model"]["filters"]
    wrong = page.select(".train-wrong__list li")
    assert len(wrong) == min(12, n_test - sum(cells[i][i] for i in range(10)))
    assert page.select_one("#train-chart-loss polyline.is-current") is not None


def test_the_event_stream_replays_the_run_and_ends_with_done(finished_run):
    client, job_id, _job = finished_run
    events = []
    with client.stream("GET", f"/train/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
    assert events[-1] == "done" and events.count("done") == 1
    assert events.count("progress") >= DEFAULTS["digits"]["epochs"]  # paced: several per epoch


def test_a_drawing_and_a_test_image_get_probabilities_that_sum_to_1(finished_run):
    client, job_id, _job = finished_run
    grid = [0.0] * 64
    for r in range(1, 7):
        grid[r * 8 + 4] = 1.0  # a "1"
    response = client.post(f"/train/jobs/{job_id}/predict", data={"grid": ",".join(map(str, grid))}, headers=HX)
    assert response.status_code == 200
    page = soup(response)
    probabilities = [float(td["data-p"]) for td in page.select("#train-bars .train-bars__p")]
    assert len(probabilities) == 10 and sum(probabilities) == pytest.approx(1, abs=1e-6)
    assert text(page.select_one("#train-predicted")) == str(probabilities.index(max(probabilities)))
    assert len(page.select(".train-maps__layer")) >= 2

    data = datasets.load("digits")
    page = soup(client.post(f"/train/jobs/{job_id}/predict", data={"test_index": "7"}, headers=HX))
    assert str(int(data.y_test[7])) in text(page.select_one(".train-answer .hint"))

    bad = client.post(f"/train/jobs/{job_id}/predict", data={"grid": "1,2,3"}, headers=HX)
    assert bad.status_code == 422
    assert translated("Draw a digit first: the drawing must be %(n)s×%(n)s values.", n=8) in bad.text
    out_of_range = client.post(f"/train/jobs/{job_id}/predict", data={"test_index": "100000"}, headers=HX)
    assert out_of_range.status_code == 422


def test_weights_download_and_load_back(finished_run):
    client, job_id, job = finished_run
    weights = client.get(f"/api/train/{job_id}/weights.npz")
    assert weights.status_code == 200
    response = client.post("/train/load", files={"file": ("model.npz", weights.content, "application/octet-stream")},
                           headers=HX)
    assert response.status_code == 200
    page = soup(response)
    loaded_id = page.select_one("#train-stream")["data-job"]
    assert loaded_id != job_id
    assert text(page.select_one("#train-final-acc")) == f"{100 * job.metrics['test_accuracy']:.1f} %".replace(".", ",")
    bad = client.post("/train/load", files={"file": ("x.npz", b"not a zip", "application/octet-stream")}, headers=HX)
    assert bad.status_code == 200
    assert text(soup(bad).select_one(".train-problems h2")) == translated("The file could not be loaded")


def test_a_run_from_another_browser_is_not_found(finished_run):
    _client, job_id, _job = finished_run
    with TestClient(cnnlab_app) as other:
        for response in (other.get(f"/train/jobs/{job_id}"),
                         other.post(f"/train/jobs/{job_id}/predict", data={"test_index": "0"}),
                         other.delete(f"/train/jobs/{job_id}")):
            assert response.status_code == 404
            assert translated("There is no training job with this id in this browser (it may have expired).") in response.text
        # The event stream tells a screen its run is gone (app/eventstream.py), exactly as for
        # an id that never existed: nothing about another browser's run leaks.
        assert other.get(f"/train/jobs/{job_id}/events").text == other.get("/train/jobs/no-such-id/events").text


def test_stop_from_the_page_and_plain_form_start_redirects(client):
    data = form_data(soup(client.get("/train?dataset=mnist")))
    data["epochs"] = "30"
    response = client.post("/train/jobs", data=data, follow_redirects=False)
    assert response.status_code == 303
    job_id = response.headers["location"].rsplit("/", 1)[1]
    stopped = client.delete(f"/train/jobs/{job_id}", headers=HX)
    assert stopped.status_code == 200
    job = wait_for(client, job_id)
    assert job.status == "stopped"
    page = soup(client.get(f"/train/jobs/{job_id}"))
    assert page.select_one("#train-live .train-status")["data-status"] == "stopped"
    assert page.select_one("#train-form") is not None  # the whole page, its setup filled in
    assert page.select_one("#train-epochs")["value"] == "30"
