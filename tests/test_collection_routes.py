"""The class's own dataset over HTTP (issue 15, app/routers/collection.py): who may do what
(the assistant opens, closes, removes, downloads; a seated phone draws, undoes, tests), bad
drawings, the rate limit and caps, thumbnails, and the class stream's ``collection`` event
for the assistant and for a phone."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.app.classroom import CODE_ALPHABET, CODE_LENGTH, collect, store_for
from cnnlab.app.classroom import collection_use as use
from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.classroom.collection_view import FIRST_THUMBNAILS, collection_events
from cnnlab.app.settings import Settings, get_settings
from cnnlab.core.datasets import load_file

CODE = re.compile(rf"/class/([{CODE_ALPHABET}]{{{CODE_LENGTH}}})/present")
DIAGONAL = [1.0 if i % 29 == 0 else 0.0 for i in range(784)]  # a stroke on the pad


def grid(ink: int = 0) -> list[float]:
    """A drawing: the diagonal, plus one more inked cell (so drawings differ)."""
    out = list(DIAGONAL)
    out[ink % 784] = 1.0
    return out


@pytest.fixture
def override():
    def use_(**values) -> Settings:
        settings = Settings(**values)
        cnnlab_app.dependency_overrides[get_settings] = lambda: settings
        return settings

    yield use_
    cnnlab_app.dependency_overrides.pop(get_settings, None)


@contextmanager
def phone() -> Iterator[TestClient]:
    """A browser of its own (its own cookies); the app's lifespan is the ``client`` fixture's."""
    browser = TestClient(cnnlab_app)
    try:
        yield browser
    finally:
        browser.close()


def start(host) -> str:
    response = host.post("/class", follow_redirects=False)
    return CODE.fullmatch(response.headers["location"]).group(1)


def api(code: str, rest: str = "") -> str:
    return f"/api/class/{code}/collection{rest}"


def open_collection(host, code: str, **body) -> httpx.Response:
    response = host.post(api(code), json={"labels": ["círculo", "cruz", "triángulo"], "target": 5, "minutes": 10,
                                          **body})
    assert response.status_code == 201, response.text
    return response


def join(browser, code: str) -> None:
    assert browser.get(f"/class/{code}").status_code == 200


def draw(browser, code: str, label: int, ink: int = 0) -> httpx.Response:
    return browser.post(api(code, "/drawings"), json={"grid": grid(ink), "label": label})


def request_for(app=cnnlab_app):
    """What collection_events reads of a request: its app."""
    return SimpleNamespace(app=app)


def events(code: str, host: bool, sid: str | None, sent: dict) -> list[dict]:
    room = store_for(cnnlab_app).get(code)
    return [json.loads(data) for name, data in collection_events(request_for(), room, host, sid, sent)
            if name == "collection"]


# ---------------------------------------------------------------- opening and closing


def test_only_the_assistant_opens_and_closes_a_collection(client):
    code = start(client)
    with phone() as anna:
        join(anna, code)
        refused = anna.post(api(code), json={"labels": None, "target": 5})
        assert refused.status_code == 403 and refused.json()["detail"]
        assert client.get(api(code)).json() == {"phase": None}
        opened = client.post(api(code), json={"labels": None, "target": 20, "minutes": 10})
        assert opened.status_code == 201
        state = opened.json()
        assert state["labels"] == [str(d) for d in range(10)] and state["phase"] == "collect"
        assert state["counts"] == [0] * 10 and 590 <= state["remaining"] <= 600
        assert client.post(api(code), json={"labels": None, "target": 5}).status_code == 409  # one at a time
        assert anna.delete(api(code)).status_code == 403
        mine = anna.get(api(code)).json()
        assert mine["ask"] == 0 and mine["mine"] == 0 and "counts" not in mine
        assert client.delete(api(code)).json()["phase"] == "closed"
        # A closed one is replaced by the next; labels typed as one text, numbers from a form.
        again = client.post(api(code), data={"labels": "círculo, cruz ,triángulo", "target": "7", "minutes": ""})
        assert again.status_code == 201, again.text
        assert again.json()["labels"] == ["círculo", "cruz", "triángulo"] and again.json()["target"] == 7


@pytest.mark.parametrize("body", [
    {"labels": ["solo"]},
    {"labels": ["a", "A"]},
    {"labels": ["a", "x" * 25]},
    {"labels": [str(k) for k in range(11)]},
    {"labels": ["a", 3]},
    {"labels": None, "target": 0},
    {"labels": None, "target": 101},
    {"labels": None, "target": "veinte"},
    {"labels": None, "minutes": 61},
])
def test_bad_collections_are_refused_with_a_message(client, body):
    code = start(client)
    response = client.post(api(code), json={"target": 5, **body})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


# ---------------------------------------------------------------- drawing


def test_seated_phones_draw_and_bad_drawings_are_422(client):
    code = start(client)
    open_collection(client, code)
    with phone() as anna, phone() as stranger:
        join(anna, code)
        first = draw(anna, code, 0)
        assert first.status_code == 201, first.text
        assert first.json() == {"id": 1, "ask": 1, "mine": 1}  # the emptiest label next
        assert draw(anna, code, 2, ink=5).json() == {"id": 2, "ask": 1, "mine": 2}
        for body in ({"grid": grid()[:783], "label": 0}, {"grid": [2.0] * 784, "label": 0},
                     {"grid": [0.0] * 784, "label": 0}, {"grid": ["a"] * 784, "label": 0},
                     {"grid": grid(), "label": 3}, {"grid": grid(), "label": -1}, {"grid": grid(), "label": "0"},
                     {"grid": grid()}):
            response = anna.post(api(code, "/drawings"), json=body)
            assert response.status_code == 422, (body.get("label"), response.text)
            assert response.json()["detail"]
        # The assistant does not draw; a browser without a seat cannot.
        host = draw(client, code, 0)
        assert host.status_code == 403 and host.json()["detail"]
        assert draw(stranger, code, 0).status_code == 403
        state = client.get(api(code)).json()
        assert state["counts"] == [1, 0, 1] and state["total"] == 2 and state["contributors"] == 1
        assert "by_student" not in state and "student" not in json.dumps(state)


def test_drawings_are_rate_limited_per_student_and_capped(client, override):
    override(collection_drawings_per_minute=3, collection_max_per_student=5)
    code = start(client)
    open_collection(client, code)
    with phone() as anna, phone() as ben:
        join(anna, code)
        join(ben, code)
        for i in range(3):
            assert draw(anna, code, i, ink=i).status_code == 201
        limited = draw(anna, code, 0, ink=9)
        assert limited.status_code == 429 and limited.json()["detail"]
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert draw(ben, code, 0).status_code == 201  # per student: another one may still draw
    override(collection_drawings_per_minute=100, collection_max_per_student=2)
    with phone() as cleo:
        join(cleo, code)
        assert [draw(cleo, code, k, ink=k).status_code for k in range(3)] == [201, 201, 429]
        assert "2" in draw(cleo, code, 0).json()["detail"]


def test_a_student_undoes_their_own_last_drawing_only(client):
    code = start(client)
    open_collection(client, code)
    with phone() as anna, phone() as ben:
        join(anna, code)
        join(ben, code)
        draw(anna, code, 0)
        draw(ben, code, 1)
        draw(anna, code, 2, ink=3)
        undone = anna.delete(api(code, "/drawings/last"))
        assert undone.status_code == 200 and undone.json() == {"id": 3, "ask": 2, "mine": 1}
        assert anna.delete(api(code, "/drawings/last")).json()["id"] == 1
        nothing = anna.delete(api(code, "/drawings/last"))
        assert nothing.status_code == 409 and nothing.json()["detail"]
        assert client.delete(api(code, "/drawings/last")).status_code == 403
        assert client.get(api(code)).json()["counts"] == [0, 1, 0]  # Ben's is still there


def test_the_assistant_removes_any_drawing_and_thumbnails_are_private(client):
    code = start(client)
    open_collection(client, code)
    with phone() as anna, phone() as ben, phone() as stranger:
        join(anna, code)
        join(ben, code)
        draw(anna, code, 0)
        draw(ben, code, 1, ink=4)
        png = client.get(api(code, "/drawings/1.png"))
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert "private" in png.headers["cache-control"]
        picture = Image.open(io.BytesIO(png.content))
        assert picture.size == (56, 56) and picture.getpixel((0, 0)) != picture.getpixel((55, 0))  # ink dark on white
        assert anna.get(api(code, "/drawings/1.png")).status_code == 200  # her own
        assert anna.get(api(code, "/drawings/2.png")).status_code == 404  # Ben's: as if there were none
        assert anna.get(api(code, "/drawings/9.png")).status_code == 404
        assert stranger.get(api(code, "/drawings/1.png")).status_code == 403  # no seat in the class
        # Only the assistant removes; the drawing leaves the counts and its thumbnail goes.
        assert anna.delete(api(code, "/drawings/2")).status_code == 403
        assert client.delete(api(code, "/drawings/2")).status_code == 204
        assert client.delete(api(code, "/drawings/2")).status_code == 404
        assert client.get(api(code, "/drawings/2.png")).status_code == 404
        assert ben.get(api(code)).json()["mine"] == 0
        assert client.get(api(code)).json()["counts"] == [1, 0, 0]


def test_closing_stops_drawings_and_downloads_are_the_assistants(client):
    code = start(client)
    assert client.get(f"/class/{code}/collection/dataset.npz").status_code == 404  # no collection yet
    open_collection(client, code)
    with phone() as anna:
        join(anna, code)
        for k in range(6):
            assert draw(anna, code, k % 2, ink=k).status_code == 201
        assert client.delete(api(code)).status_code == 200
        late = draw(anna, code, 0, ink=50)
        assert late.status_code == 409 and late.json()["detail"]
        assert anna.delete(api(code, "/drawings/last")).status_code == 409
        assert anna.get(f"/class/{code}/collection/dataset.npz").status_code == 403
        assert anna.get(f"/class/{code}/collection/dataset.zip").status_code == 403
    npz = client.get(f"/class/{code}/collection/dataset.npz")
    assert npz.status_code == 200 and "attachment" in npz.headers["content-disposition"]
    dataset = load_file(io.BytesIO(npz.content))
    assert dataset.label_names == ("círculo", "cruz")  # "triángulo" has no drawing: left out
    assert len(dataset.y_train) + len(dataset.y_test) == 6
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/class/{code}/collection/dataset.zip").content))
    assert "labels.csv" in archive.namelist() and len([n for n in archive.namelist() if n.endswith(".png")]) == 6


def test_training_needs_the_assistant_and_enough_drawings(client):
    code = start(client)
    open_collection(client, code)
    with phone() as anna:
        join(anna, code)
        draw(anna, code, 0)
        assert anna.post(api(code, "/train")).status_code == 403
        early = client.post(api(code, "/train"))
        assert early.status_code == 409 and "triángulo" in early.json()["detail"]
        not_yet = anna.post(api(code, "/test"), json={"grid": grid(), "label": 0})
        assert not_yet.status_code == 409 and not_yet.json()["detail"]


def test_a_phone_tests_the_model_with_its_seat(client, override, monkeypatch):
    override(collection_drawings_per_minute=2)
    seen = []

    def fake_test(request, code, student, seat, label, data):  # the model itself: test_collection_use.py
        seen.append((code, seat, label, len(data)))
        return {"probabilities": [0.25, 0.5, 0.25], "predicted": 1, "right": label == 1}

    monkeypatch.setattr(use, "test_drawing", fake_test)
    code = start(client)
    open_collection(client, code)
    with phone() as anna:
        join(anna, code)
        answer = anna.post(api(code, "/test"), json={"grid": grid(), "label": 1})
        assert answer.status_code == 200 and answer.json()["right"] is True
        assert seen == [(code, 1, 1, 784)]
        assert anna.post(api(code, "/test"), json={"grid": grid(), "label": 0}).status_code == 200
        assert anna.post(api(code, "/test"), json={"grid": grid(), "label": 0}).status_code == 429
        assert client.post(api(code, "/test"), json={"grid": grid(), "label": 0}).status_code == 403


def test_training_and_testing_run_off_the_event_loop_in_the_requests_language(client, monkeypatch):
    import asyncio

    from cnnlab.app.errors import InputError
    from cnnlab.app.i18n import gettext

    def off_the_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return True
        return False

    threads = []

    def fake_train(request, code):  # blocking work: files, a process, Valkey
        threads.append(off_the_loop())
        raise InputError(gettext("The model is already training: wait for it to finish."), status_code=409)

    def fake_test(request, code, student, seat, label, data):  # the model's forward pass
        threads.append(off_the_loop())
        raise InputError(gettext("The model is still training: wait for it to finish."), status_code=409)

    monkeypatch.setattr(use, "start_training", fake_train)
    monkeypatch.setattr(use, "test_drawing", fake_test)
    code = start(client)
    open_collection(client, code)
    trained = client.post(api(code, "/train"))
    assert trained.status_code == 409 and trained.json()["detail"] == "El modelo ya se está entrenando: espera a que termine."
    english = client.post(api(code, "/train") + "?lang=en")
    assert english.status_code == 409 and english.json()["detail"] == "The model is already training: wait for it to finish."
    with phone() as anna:
        join(anna, code)
        tested = anna.post(api(code, "/test"), json={"grid": grid(), "label": 1})
        assert tested.status_code == 409
        assert tested.json()["detail"] == "El modelo todavía se está entrenando: espera a que termine."
    assert threads == [True, True, True]


# ---------------------------------------------------------------- pages


def test_the_projector_shows_the_panel_and_phones_get_the_pad(client, html):
    code = start(client)
    page = html(client.get(f"/class/{code}/present"))
    assert page.select_one("#class-collection")["data-phase"] == "none"
    open_collection(client, code)
    page = html(client.get(f"/class/{code}/present"))
    assert page.select_one("#class-collection")["data-phase"] == "collect"
    assert [h.get_text(strip=True) for h in page.select(".collection-col__name")] == ["círculo", "cruz", "triángulo"]
    response = client.get(f"/class/{code}/collect", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/class/{code}/present"
    with phone() as anna:
        pad = html(anna.get(f"/class/{code}/collect"))
        assert pad.select_one("#collect-ask").get_text(strip=True) == "círculo"
        assert anna.get(api(code)).json()["mine"] == 0  # the page gave it a seat


def test_after_training_the_projector_shows_the_misclassified_drawings_without_their_drawers(client, html,
                                                                                            monkeypatch):
    from cnnlab.app.classroom.collection_store import collection_store_for

    code = start(client)
    open_collection(client, code)
    with phone() as anna:
        join(anna, code)
        ids = [draw(anna, code, label, ink=label).json()["id"] for label in (0, 2)]
    wrong = [{"id": ids[1], "label": 2, "predicted": 0}]
    asked = []
    monkeypatch.setattr(use, "misclassified", lambda request, c: asked.append(c) or wrong)
    page = html(client.get(f"/class/{code}/present"))
    assert page.select_one("#collection-misclassified") is None and asked == []  # collecting: not yet
    collection_store_for(cnnlab_app).set_phase(code, "test", "a-job")
    page = html(client.get(f"/class/{code}/present"))
    [item] = page.select("#collection-misclassified li")
    assert asked == [code] and item.get_text(strip=True) == "triángulo → círculo"
    src = item.select_one("img")["src"]
    assert src.startswith(f"/api/class/{code}/collection/drawings/{ids[1]}.png")
    assert client.get(src).headers["content-type"] == "image/png"
    assert "seat" not in str(item)  # a seat number nowhere (host_state gives none either)


# ---------------------------------------------------------------- the class stream's event


def test_the_collection_event_for_the_assistant_and_for_a_phone(client):
    code = start(client)
    host_sent, phone_sent = {}, {}
    assert events(code, True, None, host_sent) == []  # never opened: nothing to say
    open_collection(client, code)
    with phone() as anna, phone() as ben:
        join(anna, code)
        join(ben, code)
        anna_sid = next(iter(store_for(cnnlab_app).get(code).students))
        (first,) = events(code, True, None, host_sent)
        assert first["reset"] is True and first["new"] == [] and first["phase"] == "collect"
        (mine,) = events(code, False, anna_sid, phone_sent)
        assert mine == {"phase": "collect", "labels": ["círculo", "cruz", "triángulo"], "ask": 0, "mine": 0,
                        "target": 5, "deadline": mine["deadline"], "remaining": mine["remaining"], "job": None}
        draw(anna, code, 0)
        draw(ben, code, 1, ink=3)
        (update,) = events(code, True, None, host_sent)
        assert update["reset"] is False and update["counts"] == [1, 1, 0] and update["contributors"] == 2
        assert [(d["id"], d["label"], d["seat"]) for d in update["new"]] == [(1, 0, 1), (2, 1, 2)]
        assert update["new"][0]["png"].startswith(f"/api/class/{code}/collection/drawings/1.png?v=")
        assert client.get(update["new"][0]["png"]).status_code == 200
        assert "student" not in json.dumps(update) and anna_sid not in json.dumps(update)
        assert events(code, True, None, host_sent) == []  # nothing new
        (mine,) = events(code, False, anna_sid, phone_sent)
        assert (mine["ask"], mine["mine"]) == (2, 1)
        client.delete(api(code, "/drawings/2"))
        (update,) = events(code, True, None, host_sent)
        assert update["removed"] == [2] and update["new"] == []
        # Ben's drawing went: what Anna is asked for changed; another change that leaves her
        # view as it was sends her nothing.
        (mine,) = events(code, False, anna_sid, phone_sent)
        assert mine["ask"] == 1
        draw(anna, code, 1, ink=8)
        ben.delete(api(code, "/drawings/last"))  # Ben has none left: a 409, nothing changes
        assert [e["mine"] for e in events(code, False, anna_sid, phone_sent)] == [2]
        # The tally: a test drawing that fooled the model reaches the projector once.
        collect.set_phase(cnnlab_app, code, "test")
        collect.record_test(cnnlab_app, code, anna_sid, 1, 0, 2, grid(7))
        (update,) = events(code, True, None, host_sent)
        assert (update["phase"], update["fooled"], update["right"]) == ("test", 1, 0)
        fooled = update["fooled_new"]
        assert [(f["id"], f["label"], f["predicted"], f["seat"]) for f in fooled] == [(1, 0, 2, 1)]
        assert client.get(fooled[0]["png"]).headers["content-type"] == "image/png"
        assert anna.get(fooled[0]["png"]).status_code == 403
        collect.record_test(cnnlab_app, code, anna_sid, 1, 1, 1, grid(9))  # right: no new fooling drawing
        (update,) = events(code, True, None, host_sent)
        assert update["right"] == 1 and update["fooled_new"] == []
    # A screen that connects later gets the newest drawings only.
    collect.set_phase(cnnlab_app, code, "collect")
    store = store_for(cnnlab_app)
    for k in range(FIRST_THUMBNAILS + 5):
        collect.add_drawing(cnnlab_app, code, f"s{k}", 10 + k, k % 3, grid(k))
    (late,) = events(code, True, None, {})
    assert len(late["new"]) == FIRST_THUMBNAILS and late["new"][-1]["id"] == late["total"] + 1  # one was removed
    assert store.get(code) is not None
    # The class ends: so does its collection, and a screen is told.
    assert client.delete(f"/api/class/{code}").status_code == 204


def read_collection_events(response: httpx.Response, found: list, enough: threading.Event, want: int) -> None:
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name == "collection":
            found.append(json.loads(line[6:]))
            if len(found) >= want:
                enough.set()
                return


def test_the_class_stream_sends_collection_events_live(live_server):
    with httpx.Client(base_url=live_server, timeout=10) as host, httpx.Client(base_url=live_server, timeout=10) as anna:
        code = CODE.fullmatch(host.post("/class", follow_redirects=False).headers["location"]).group(1)
        open_collection(host, code)
        join(anna, code)
        screens = {}
        for who, browser in (("host", host), ("anna", anna)):
            found, enough = [], threading.Event()
            stream = browser.stream("GET", f"/class/{code}/events", headers={"accept": "text/event-stream"})
            response = stream.__enter__()
            threading.Thread(target=read_collection_events, args=(response, found, enough, 2), daemon=True).start()
            screens[who] = (stream, found, enough)
        try:
            deadline = time.monotonic() + 5
            while not all(s[1] for s in screens.values()) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert draw(anna, code, 0).status_code == 201
            for _stream, _found, enough in screens.values():
                assert enough.wait(5)
        finally:
            for stream, _found, _enough in screens.values():
                stream.__exit__(None, None, None)
        host_events, phone_events = screens["host"][1], screens["anna"][1]
        assert host_events[0]["reset"] is True and host_events[1]["new"][0]["id"] == 1
        assert host_events[1]["counts"] == [1, 0, 0]
        assert [e["mine"] for e in phone_events] == [0, 1] and "counts" not in phone_events[1]


# ---------------------------------------------------------------- shared mode: two web processes, one Valkey


@contextmanager
def app_client(settings: Settings) -> Iterator[TestClient]:
    from cnnlab.app.main import create_app

    app = create_app()
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as browser:
        yield browser


def test_two_processes_share_the_collection_its_limits_and_its_events(redis_url):
    settings = Settings(redis_url=redis_url, secret_key="the same key on every host", collection_drawings_per_minute=2)
    with app_client(settings) as host_a, app_client(settings) as phone_b, app_client(settings) as phone_a:
        code = start(host_a)
        open_collection(host_a, code)
        join(phone_b, code)
        phone_a.cookies.update(phone_b.cookies)  # the same phone, its requests served by A
        assert draw(phone_b, code, 0).status_code == 201
        assert draw(phone_a, code, 1, ink=2).status_code == 201
        limited = draw(phone_b, code, 2, ink=3)  # the limit is counted in Valkey, for both
        assert limited.status_code == 429 and limited.headers["retry-after"]
        assert host_a.get(api(code)).json()["counts"] == [1, 1, 0]
        assert host_a.get(api(code, "/drawings/1.png")).headers["content-type"] == "image/png"
        assert phone_a.get(api(code, "/drawings/2.png")).status_code == 200  # her own, served by the other
        room = store_for(host_a.app).get(code)
        assert room.collection_seq >= 3
        (update,) = [json.loads(data) for _name, data in collection_events(request_for(host_a.app), room, True, None, {})]
        assert [d["id"] for d in update["new"]] == [1, 2] and update["total"] == 2
        assert phone_b.delete(api(code, "/drawings/last")).json()["id"] == 2
        assert host_a.delete(api(code, "/drawings/1")).status_code == 204
        assert host_a.get(api(code)).json()["total"] == 0
