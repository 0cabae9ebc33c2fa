"""Classrooms over HTTP: who may do what, bad codes, expiry, limits, quick questions, and
the live event stream (against the real server)."""

from __future__ import annotations

import re
import threading
import time

import httpx
import numpy as np
import pytest
import segno
from fastapi.testclient import TestClient

from cnnlab.app.classroom import CODE_ALPHABET, CODE_LENGTH, Question, histogram, host_cookie
from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.settings import Settings, get_settings
from cnnlab.core import kernels
from cnnlab.core.conv import conv_step

CODE = re.compile(rf"/class/([{CODE_ALPHABET}]{{{CODE_LENGTH}}})/present")


def start(client: TestClient) -> str:
    response = client.post("/class", follow_redirects=False)
    assert response.status_code == 303
    match = CODE.fullmatch(response.headers["location"])
    assert match, response.headers["location"]
    return match.group(1)


def show(client: TestClient, code: str, url: str) -> httpx.Response:
    return client.post(f"/api/class/{code}/view", json={"url": url})


@pytest.fixture
def student():
    with TestClient(cnnlab_app) as other:
        yield other


def override(**values) -> Settings:
    settings = Settings(**values)  # made once: a fresh one per call would change the secret key
    cnnlab_app.dependency_overrides[get_settings] = lambda: settings
    return settings


# ---------------------------------------------------------------- starting and joining


def test_start_gives_a_code_a_secret_cookie_and_a_projector_page(client, html):
    response = client.post("/class", follow_redirects=False)
    code = CODE.fullmatch(response.headers["location"]).group(1)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{host_cookie(code)}=")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    secret = cookie.split(";")[0].split("=", 1)[1]
    assert len(secret) >= 32 and code not in secret
    page = html(client.get(f"/class/{code}/present"))
    assert page.select_one("#class-code-big").get_text(strip=True) == code
    assert page.select_one("[data-class-present]")["data-class-present"] == code
    assert page.select_one("#class-qr")["src"] == f"/class/{code}/qr.svg"
    # The lesson's pages are offered as the first view.
    assert "/conv?preset=seed" in [a["href"] for a in page.select(".class-views__list a")]


def test_qr_code_encodes_the_join_address_on_the_requests_host(client):
    code = start(client)
    response = client.get(f"/class/{code}/qr.svg", headers={"host": "aula.example:8000"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    expected = segno.make(f"http://aula.example:8000/class/{code}", error="m")
    path = re.search(r' d="([^"]+)"', response.text).group(1)
    again = re.search(r' d="([^"]+)"', expected.svg_inline(scale=10, border=2)).group(1)
    assert path == again
    assert "style=" not in response.text


def test_a_projector_opened_as_localhost_shows_the_network_address_and_how_to_listen(client, html, monkeypatch):
    import cnnlab.app.routers.classroom as routes

    monkeypatch.setattr(routes, "lan_address", lambda: "192.0.2.7")  # the machine's address in the room
    code = start(client)
    local = html(client.get(f"/class/{code}/present", headers={"host": "localhost:8000"}))
    assert local.select_one("#class-join-url").get_text(strip=True) == "http://192.0.2.7:8000/class"
    assert "--host 0.0.0.0" in local.select_one("#class-join-hint").get_text()
    qr = client.get(f"/class/{code}/qr.svg", headers={"host": "127.0.0.1:8000"}).text
    expected = segno.make(f"http://192.0.2.7:8000/class/{code}", error="m").svg_inline(scale=10, border=2)
    assert re.search(r' d="([^"]+)"', qr).group(1) == re.search(r' d="([^"]+)"', expected).group(1)
    # Opened by its network name, the address is already one the phones can reach.
    named = html(client.get(f"/class/{code}/present", headers={"host": "aula.example:8000"}))
    assert named.select_one("#class-join-url").get_text(strip=True) == "http://aula.example:8000/class"
    assert named.select_one("#class-join-hint") is None


def test_join_form_finds_the_class_whatever_the_case_and_spaces(client, student):
    code = start(client)
    response = student.get("/class/go", params={"code": f" {code.lower()[:2]} {code.lower()[2:]} "}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/class/{code}"


def test_student_page_follows_the_view_and_counts_the_student(client, student, html):
    code = start(client)
    assert show(client, code, "/conv?preset=seed&kernel=seed&step=2&lang=en").status_code == 200
    page = html(student.get(f"/class/{code}"))
    assert page.select_one("[data-class-follow]")["data-class-follow"] == code
    # The language is each student's own: lang is dropped from the view.
    assert page.select_one("#class-stage")["data-view"] == "/conv?preset=seed&kernel=seed&step=2"
    assert page.select_one("#class-stage").has_attr("inert")
    assert page.select_one("#class-bar")["sse-connect"] == f"/class/{code}/events"
    assert student.get(f"/api/class/{code}").json()["joined"] == 1
    # The assistant opening the student address lands on the projector page instead.
    response = client.get(f"/class/{code}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/class/{code}/present"


# ---------------------------------------------------------------- a student can never act as the assistant


def test_student_opening_the_projector_page_by_url_is_refused(client, student, html):
    code = start(client)
    student.get(f"/class/{code}")
    response = student.get(f"/class/{code}/present")
    assert response.status_code == 403
    assert html(response).select_one(".error-page__message").get_text(strip=True)


@pytest.mark.parametrize("forged", [None, "not-the-secret", "other-class"])
def test_forged_assistant_requests_are_refused_with_a_message(client, student, forged):
    code = start(client)
    assert show(client, code, "/conv?preset=seed").status_code == 200
    student.get(f"/class/{code}")
    if forged == "other-class":
        # The secret of a class the student started does not work for another one.
        mine = start(student)
        forged = student.cookies.get(host_cookie(mine))
        assert forged
    if forged is not None:
        student.cookies.set(host_cookie(code), forged)
    attempts = [
        ("post", f"/api/class/{code}/view", {"json": {"url": "/pool"}}),
        ("post", f"/api/class/{code}/question", {}),
        ("post", f"/api/class/{code}/reveal", {}),
        ("delete", f"/api/class/{code}/question", {}),
        ("delete", f"/api/class/{code}", {}),
    ]
    for method, url, kwargs in attempts:
        response = getattr(student, method)(url, **kwargs)
        assert response.status_code == 403, (url, response.text)
        assert response.json()["detail"], url
    state = client.get(f"/api/class/{code}").json()
    assert state["view"] == "/conv?preset=seed"
    assert state["question"] is None
    assert student.get(f"/class/{code}/present").status_code == 403


@pytest.mark.parametrize("url", ["https://evil.example/conv", "//evil.example/conv", "/api/conv", "/class/ABCDE",
                                 "/static/js/app.js", "conv?step=1", "/conv\\..", ""])
def test_only_lesson_pages_of_this_site_can_be_shown(client, url):
    code = start(client)
    response = show(client, code, url)
    assert response.status_code == 422, url
    assert response.json()["detail"]
    assert client.get(f"/api/class/{code}").json()["view"] is None


# ---------------------------------------------------------------- bad codes and expiry


def test_bad_codes_get_a_clear_404(client, html):
    start(client)
    for path in ("/class/ZZZZZ/present", "/class/ZZZZZ/qr.svg"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "ZZZZZ" in html(response).select_one(".error-page__message").get_text()
    # A student's mistyped (or ended) class: the join form again, to type the code once more.
    for path, typed in (("/class/ZZZZZ", "ZZZZZ"), ("/class/no", "NO")):
        response = client.get(path)
        assert response.status_code == 404, path
        page = html(response)
        assert typed in page.select_one("#class-code-error").get_text()
        assert page.select_one("#class-code-input")["value"] == typed
    response = client.get("/api/class/ZZZZZ")
    assert response.status_code == 404 and "ZZZZZ" in response.json()["detail"]
    response = client.get("/class/go", params={"code": "zzzzz"})
    assert response.status_code == 404
    page = html(response)
    assert "ZZZZZ" in page.select_one("#class-code-error").get_text()
    assert page.select_one("#class-code-input")["value"] == "ZZZZZ"


def test_a_class_expires_after_its_idle_time(client, student):
    override(class_idle_seconds=0.4)
    code = start(client)
    # In use, it stays: the assistant's requests keep it alive past the idle time.
    for _ in range(6):
        assert show(client, code, "/conv?preset=seed").status_code == 200
        time.sleep(0.15)
    assert student.get(f"/class/{code}").status_code == 200
    time.sleep(0.6)
    response = student.get(f"/class/{code}")
    assert response.status_code == 404
    assert show(client, code, "/conv").status_code == 404


def test_ending_the_class_stops_the_code(client, student):
    code = start(client)
    assert client.delete(f"/api/class/{code}").status_code == 204
    assert student.get(f"/class/{code}").status_code == 404


def test_class_size_is_limited(client, student):
    override(max_class_students=1)
    code = start(client)
    assert student.get(f"/class/{code}").status_code == 200
    with TestClient(cnnlab_app) as third:
        response = third.get(f"/class/{code}")
        assert response.status_code == 403
    # Already in: coming back is fine.
    assert student.get(f"/class/{code}").status_code == 200


# ---------------------------------------------------------------- quick questions


def ask(client, code, url):
    assert show(client, code, url).status_code == 200
    return client.post(f"/api/class/{code}/question")


def test_next_value_on_conv_is_the_engines_and_hidden_until_revealed(client, student):
    code = start(client)
    assert ask(client, code, "/conv?preset=seed&kernel=seed&step=4").status_code == 200
    right = conv_step(kernels.SEED_INPUT, kernels.SEED_KERNEL, step=5)
    student.get(f"/class/{code}")
    seen = student.get(f"/api/class/{code}").json()["question"]
    assert seen["step"] == 5 and "answer" not in seen and "histogram" not in seen
    assert student.post(f"/api/class/{code}/answer", data={"value": str(right.value)}).status_code == 200
    with TestClient(cnnlab_app) as other:
        other.get(f"/class/{code}")
        assert other.post(f"/api/class/{code}/answer", json={"value": f"{right.value + 1}"}).status_code == 200
    host_view = client.get(f"/api/class/{code}").json()["question"]
    assert host_view["answered"] == 2
    assert sorted((b["label"], b["count"]) for b in host_view["histogram"]) == sorted(
        [(str(right.value), 1), (str(right.value + 1), 1)])
    revealed = client.post(f"/api/class/{code}/reveal").json()["question"]
    assert revealed["answer"] == right.value and revealed["solution"] == right.text
    assert [b["right"] for b in revealed["histogram"] if b["label"] == str(right.value)] == [True]
    # After the reveal, no more answers.
    assert student.post(f"/api/class/{code}/answer", data={"value": "1"}).status_code == 409


def test_an_open_question_is_not_given_away_by_the_followed_view(client, student, html):
    # Issue 12, 13c: the follow page shows the view asked about, never its next step.
    code = start(client)
    assert ask(client, code, "/conv?preset=seed&kernel=seed&step=4").status_code == 200
    page = html(student.get(f"/class/{code}"))
    assert page.select_one("#class-detach").has_attr("disabled")  # classroom.js keeps it so until the reveal
    view = page.select_one("#class-stage")["data-view"]
    asked = student.get(f"/api/class/{code}").json()["question"]
    assert "answer" not in asked and "solution" not in asked
    stepper = html(student.get(view, headers={"HX-Request": "true", "HX-Target": "conv-stepper"}))
    cell = stepper.select_one(f"#conv-cell-{asked['step']}")
    right = conv_step(kernels.SEED_INPUT, kernels.SEED_KERNEL, step=asked["step"])
    assert cell.get_text(strip=True) == "" and str(right.value) not in cell["title"]
    assert stepper.select_one("#conv-status strong").get_text(strip=True) != str(right.value)


def test_next_value_on_pool_is_the_windows_maximum(client):
    code = start(client)
    response = ask(client, code, "/pool?input=example&kind=max&size=2&step=0")
    assert response.status_code == 200
    client.post(f"/api/class/{code}/reveal")
    q = client.get(f"/api/class/{code}").json()["question"]
    example = np.array([[1, 3, 2, 1], [4, 6, 5, 0], [3, 1, 1, 2], [7, 2, 8, 4]])
    assert q["answer"] == example[0:2, 2:4].max()
    assert (q["row"], q["col"]) == (1, 2)


@pytest.mark.parametrize("url", ["/conv?preset=seed&kernel=seed&step=8", "/grid", "/pool?input=example&step=3"])
def test_no_next_value_is_a_409_with_a_message(client, url):
    code = start(client)
    response = ask(client, code, url)
    assert response.status_code == 409
    assert response.json()["detail"]


def test_answers_need_a_member_a_number_and_respect_the_rate_limit(client, student):
    override(rate_answers_burst=2, rate_answers_per_minute=1.0)
    code = start(client)
    ask(client, code, "/conv?preset=seed")
    assert student.post(f"/api/class/{code}/answer", data={"value": "1"}).status_code == 403  # not joined
    assert client.post(f"/api/class/{code}/answer", data={"value": "1"}).status_code == 403  # the assistant
    student.get(f"/class/{code}")
    assert student.post(f"/api/class/{code}/answer", data={"value": "abc"}).status_code == 422
    assert student.post(f"/api/class/{code}/answer", data={"value": "\u22122,5"}).json()["question"]["mine"] == -2.5
    response = student.post(f"/api/class/{code}/answer", data={"value": "3"})
    assert response.status_code == 429
    assert response.json()["detail"]


# ---------------------------------------------------------------- the live stream


def read_events(response: httpx.Response, last: str, found: list, done: threading.Event) -> None:
    """Collect (event, data) pairs (data lines joined by newlines) until the view ``last`` arrives."""
    name, data = None, []
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif not line and name:
            found.append((name, "\n".join(data)))
            if (name, found[-1][1]) == ("view", last):
                done.set()
                return
            name, data = None, []


def test_students_stream_delivers_each_view_live(live_server):
    with httpx.Client(base_url=live_server) as host, httpx.Client(base_url=live_server, timeout=10) as phone:
        code = CODE.fullmatch(host.post("/class", follow_redirects=False).headers["location"]).group(1)
        phone.get(f"/class/{code}?lang=en")
        found: list = []
        done = threading.Event()
        with phone.stream("GET", f"/class/{code}/events", headers={"accept": "text/event-stream"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = threading.Thread(target=read_events, args=(response, "/conv?preset=seed&step=2", found, done), daemon=True)
            reader.start()
            time.sleep(0.2)
            assert host.get(f"/api/class/{code}").json()["students"] == 1
            host.post(f"/api/class/{code}/view", json={"url": "/conv?preset=seed&step=1"})
            # A stream sends the view shown when it wakes (class_events): one replaced within
            # a millisecond or two is skipped by design. So step 2 follows step 1's arrival.
            deadline = time.monotonic() + 5
            while ("view", "/conv?preset=seed&step=1") not in found and time.monotonic() < deadline:
                time.sleep(0.01)
            host.post(f"/api/class/{code}/view", json={"url": "/conv?preset=seed&step=2"})
            assert done.wait(5), found
        # The phone hung up: it no longer counts as connected (but stays a member).
        deadline = time.monotonic() + 5
        while host.get(f"/api/class/{code}").json()["students"] != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        state = host.get(f"/api/class/{code}").json()
        assert (state["students"], state["joined"]) == (0, 1)
        views = [data for name, data in found if name == "view"]
        assert views[-2:] == ["/conv?preset=seed&step=1", "/conv?preset=seed&step=2"]
        # Each stepper view comes with its stepper, exactly what the phone would fetch, in the
        # phone's language (English here), so a step costs the phones no request.
        steppers = [data for name, data in found if name == "stepper"]
        assert len(steppers) == len([view for view in views if view])
        for view, prepared in zip(views[-2:], steppers):
            url, html = prepared.split("\n", 1)
            assert url == view
            fetched = phone.get(view, headers={"HX-Request": "true", "HX-Target": "conv-stepper"})
            assert html == fetched.text.rstrip("\n")
            assert "Step " in html and "Paso " not in html
        assert "count" not in [name for name, _data in found]  # the assistant's events are not a student's


@pytest.mark.parametrize(("url", "rows"), [
    # The slides' 5×5 input, 3×3 kernel: ⌊(H + pad − D·(k − 1) − 1)/S⌋ + 1, worked out by hand.
    ("/conv?preset=seed&kernel=seed", (5 - 3) // 1 + 1),
    ("/conv?preset=seed&kernel=seed&stride=2", (5 - 3) // 2 + 1),
    ("/conv?preset=seed&kernel=seed&padding=1&dilation=2", (5 + 2 - 2 * 2 - 1) // 1 + 1),
    ("/pool?input=seed&kind=max&size=2", (5 - 2) // 2 + 1),
    ("/pool?input=example&kind=avg&size=3&stride=1", (4 - 3) // 1 + 1),
])
def test_output_size_question_matches_the_formula(client, url, rows):
    code = start(client)
    assert show(client, code, url).status_code == 200
    response = client.post(f"/api/class/{code}/question", json={"kind": "output_size"})
    assert response.status_code == 200, response.text
    assert response.json()["question"]["kind"] == "output_size"
    q = client.post(f"/api/class/{code}/reveal").json()["question"]
    assert q["answer"] == rows
    assert q["solution"].endswith(f"= {rows}")


@pytest.mark.parametrize(("url", "params"), [
    # (K·K·C + 1)·F: a bias per filter, whether or not the page shows one.
    ("/conv?preset=seed", (3 * 3 * 1 + 1) * 1),
    ("/conv?image=chelsea&size=16&color=rgb&kernel=sobel_x|sobel_y", (3 * 3 * 3 + 1) * 2),
    ("/conv?image=chelsea&size=16&kernel=sobel_x|sobel_y", (3 * 3 * 1 + 1) * 2),
    ("/pool?input=seed&kind=max&size=2", 0),  # pooling learns nothing
])
def test_parameter_count_question(client, url, params):
    code = start(client)
    assert show(client, code, url).status_code == 200
    assert client.post(f"/api/class/{code}/question", json={"kind": "param_count"}).status_code == 200
    q = client.post(f"/api/class/{code}/reveal").json()["question"]
    assert (q["kind"], q["answer"]) == ("param_count", params)
    assert q["solution"].endswith(f"{params}")


def test_unknown_question_kind_is_a_422(client):
    code = start(client)
    show(client, code, "/conv?preset=seed")
    response = client.post(f"/api/class/{code}/question", json={"kind": "guess"})
    assert response.status_code == 422 and response.json()["detail"]


# ---------------------------------------------------------------- the store


def test_memory_store_wakes_streams_on_change_from_any_thread():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from cnnlab.app.classroom import MemoryClassStore, NoSuchClass

    async def scenario() -> list:
        store = MemoryClassStore()
        room = store.create("hash", time.time(), max_classes=5)
        sub = store.subscribe(room.code)
        seen = [await sub.wait(0.05)]  # nothing changed: times out
        store.update(room.code, lambda r: setattr(r, "view", "/conv"))
        seen.append(await sub.wait(1.0))
        # A change made in a worker thread wakes the stream on the event loop too.
        threading.Thread(target=store.update, args=(room.code, lambda r: setattr(r, "view", "/pool"))).start()
        seen.append(await sub.wait(1.0))
        store.touch(room.code, time.time() + 10)  # a sign of life wakes nobody
        seen.append(await sub.wait(0.05))
        assert store.expire(time.time() + 5, idle_seconds=60, empty_seconds=600) == []
        assert store.expire(time.time() + 100, idle_seconds=60, empty_seconds=600) == [room.code]
        seen.append(await sub.wait(1.0))  # ended: subscribers wake and find it gone
        assert store.get(room.code) is None
        with pytest.raises(NoSuchClass):
            store.update(room.code, lambda r: None)
        sub.close()
        return seen

    # In a thread of its own: after a browser test, Playwright's event loop runs in this one.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, scenario()).result() == [False, True, True, False, True]


def test_memory_store_caps_the_number_of_classes():
    from cnnlab.app.classroom import MemoryClassStore
    from cnnlab.app.errors import InputError

    store = MemoryClassStore()
    codes = {store.create("h", 0.0, max_classes=3).code for _ in range(3)}
    assert len(codes) == 3
    with pytest.raises(InputError) as refused:
        store.create("h", 0.0, max_classes=3)
    assert refused.value.status_code == 503


def test_the_histogram_groups_answers_rounded_half_up_as_shown():
    """2.00005 is shown as 2,0001 (half up, like every number on the pages), so it shares a
    bar with 2.0001; Python's round() would have put it apart, as 2."""
    q = Question(id=1, page="conv", view="/conv?preset=seed", answer=2.0001, tolerance=0.0, solution="")
    q.answers.update({"a": 2.00005, "b": 2.0001, "c": 2.0})
    bars = {b["value"]: b["count"] for b in histogram(q)}
    assert bars == {2.00005: 2, 2.0: 1}  # a bar's value is its first answer
