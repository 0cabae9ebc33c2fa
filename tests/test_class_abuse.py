"""A class that one mischievous student cannot break (issue 12): seats held by open screens,
per-address limits on joins, classes and failed code look-ups, empty classes ending early,
and the client's address as the real server sees it (requests from 127.0.0.2 and 127.0.0.3
to a server on 127.0.0.1). Every loop is bounded in count and time."""

from __future__ import annotations

import io
import re
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.app import seats
from cnnlab.app.classroom import CODE_ALPHABET, CODE_LENGTH
from cnnlab.app.classroom import store as class_store
from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.routers import classroom as classroom_routes
from cnnlab.app.settings import Settings, get_settings

CODE = re.compile(rf"/class/([{CODE_ALPHABET}]{{{CODE_LENGTH}}})/present")
README = Path(__file__).resolve().parent.parent / "README.md"
WAIT = re.compile(r"\d+")


@pytest.fixture
def override():
    """Settings for this test (one object, so the secret key stays the same), then none."""

    def use(**values) -> Settings:
        settings = Settings(**values)
        cnnlab_app.dependency_overrides[get_settings] = lambda: settings
        return settings

    yield use
    cnnlab_app.dependency_overrides.pop(get_settings, None)


@contextmanager
def browser(address: str = "testclient") -> Iterator[TestClient]:
    """A browser of its own (its own cookies) at ``address``. The app is not started again
    for it (no lifespan): classes need nothing the lifespan makes."""
    client = TestClient(cnnlab_app, client=(address, 50000))
    try:
        yield client
    finally:
        client.close()


def start(client) -> str:
    response = client.post("/class", follow_redirects=False)
    assert response.status_code == 303, response.text
    return CODE.fullmatch(response.headers["location"]).group(1)


def ask(host, code: str) -> None:
    assert host.post(f"/api/class/{code}/view", json={"url": "/conv?preset=seed&kernel=seed&step=4"}).status_code == 200
    assert host.post(f"/api/class/{code}/question").status_code == 200


def histogram(host, code: str) -> dict[str, int]:
    return {b["label"]: b["count"] for b in host.get(f"/api/class/{code}").json()["question"]["histogram"]}


# ---------------------------------------------------------------- 2. filling a class


def test_cookieless_joins_cannot_fill_a_class_or_the_histogram(override, monkeypatch):
    # The seats' clock stands still until the test moves it (a loaded machine cannot make
    # seats lapse in the middle of the loop).
    clock = types.SimpleNamespace(now=time.time())
    monkeypatch.setattr(seats, "time", types.SimpleNamespace(time=lambda: clock.now))
    grace = 0.6
    override(class_pending_seats_per_address=5, class_seat_grace_seconds=grace, max_class_students=10)
    with browser() as host, browser("192.0.2.66") as attacker, browser("192.0.2.10") as real:
        code = start(host)
        ask(host, code)
        # The attack of the issue: a cookie-less page view, then "666", over and over.
        statuses = []
        for _ in range(12):
            attacker.cookies.clear()
            joined = attacker.get(f"/class/{code}")
            statuses.append(joined.status_code)
            if joined.status_code == 200:
                assert attacker.post(f"/api/class/{code}/answer", data={"value": "666"}).status_code == 200
        # Five seats without a screen from one address, then "wait n seconds".
        assert statuses == [200] * 5 + [429] * 7
        refused = attacker.get(f"/class/{code}?lang=en")
        assert refused.status_code == 429 and "seconds" in refused.text
        # A real student (another address) joins and answers: the class is not full.
        assert real.get(f"/class/{code}").status_code == 200
        assert real.post(f"/api/class/{code}/answer", data={"value": "109"}).status_code == 200
        assert histogram(host, code) == {"666": 5, "109": 1}
        # No screen was ever opened for the fake seats: after the grace time they are free,
        # and their answers no longer count (the next arrival sweeps them).
        clock.now += grace + 0.1
        with browser("192.0.2.11") as later:
            assert later.get(f"/class/{code}").status_code == 200
        state = host.get(f"/api/class/{code}").json()
        assert histogram(host, code) == {}  # the real one's seat lapsed too: no screen either
        assert state["joined"] == 1
        assert state["question"]["answered"] == 0


def test_a_seat_is_held_by_an_open_screen(live_server, override):
    grace = 0.5
    override(class_seat_grace_seconds=grace, class_pending_seats_per_address=1)
    with httpx.Client(base_url=live_server, timeout=10) as host, \
            httpx.Client(base_url=live_server, timeout=10) as phone, \
            httpx.Client(base_url=live_server, timeout=10) as visitor:
        code = start(host)
        ask(host, code)
        assert phone.get(f"/class/{code}").status_code == 200
        with phone.stream("GET", f"/class/{code}/events") as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines) is not None
            deadline = time.monotonic() + 5  # until the server has counted the open screen
            while host.get(f"/api/class/{code}").json()["students"] != 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert phone.post(f"/api/class/{code}/answer", data={"value": "109"}).status_code == 200
            # The pending-seat slot of this address is free again: the phone's seat has a screen.
            assert visitor.get(f"/class/{code}").status_code == 200
            time.sleep(grace + 0.3)
            # The visitor never opened a screen: its seat has lapsed (the next join sweeps
            # it), while the phone keeps its own.
            with browser("192.0.2.12") as newcomer:
                assert newcomer.get(f"/class/{code}").status_code == 200
            seats = host.get(f"/api/class/{code}").json()["seats"]
            assert [(s["seat"], s["connected"]) for s in seats] == [(1, True), (3, False)]
            assert histogram(host, code) == {"109": 1}


def test_the_assistant_sees_seats_frees_one_and_locks_the_class(override, html):
    override(class_pending_seats_per_address=50)
    with browser() as host, browser() as anna, browser() as ben, browser() as late:
        code = start(host)
        ask(host, code)
        for phone, value in ((anna, "109"), (ben, "666")):
            assert phone.get(f"/class/{code}").status_code == 200
            assert phone.post(f"/api/class/{code}/answer", data={"value": value}).status_code == 200
        state = host.get(f"/api/class/{code}").json()
        assert [s["seat"] for s in state["seats"]] == [1, 2] and state["locked"] is False
        assert anna.get(f"/api/class/{code}").json()["seats"] is None  # only the assistant sees them
        page = html(host.get(f"/class/{code}/present"))
        assert page.select_one("#class-seats summary #class-seats-count").get_text(strip=True) == "2"
        assert [li["data-seat"] for li in page.select("#class-seats-body .class-seat")] == ["1", "2"]
        assert page.select_one("#class-lock")["aria-pressed"] == "false"
        # A student cannot do either.
        assert anna.delete(f"/api/class/{code}/seats/2").status_code == 403
        assert anna.post(f"/api/class/{code}/lock").status_code == 403
        # Free Ben's seat: his answer no longer counts, and he must join again to answer.
        freed = host.delete(f"/api/class/{code}/seats/2")
        assert freed.status_code == 200 and [s["seat"] for s in freed.json()["seats"]] == [1]
        assert histogram(host, code) == {"109": 1}
        assert ben.post(f"/api/class/{code}/answer", data={"value": "666"}).status_code == 403
        assert host.delete(f"/api/class/{code}/seats/2").status_code == 404
        # Locked: nobody new, in the student's language; those seated stay.
        assert host.post(f"/api/class/{code}/lock", data={"locked": "true"}).json()["locked"] is True
        refused = late.get(f"/class/{code}?lang=en")
        assert refused.status_code == 403
        assert "closed to new students" in html(refused).select_one(".error-page__message").get_text()
        assert anna.post(f"/api/class/{code}/answer", data={"value": "110"}).status_code == 200
        assert html(host.get(f"/class/{code}/present")).select_one("#class-lock")["aria-pressed"] == "true"
        assert host.post(f"/api/class/{code}/lock", json={"locked": False}).json()["locked"] is False
        assert late.get(f"/class/{code}").status_code == 200


def test_joins_and_answers_are_limited_per_address_too(override):
    override(rate_address_joins_burst=3, rate_address_joins_per_minute=1.0,
             rate_address_answers_burst=2, rate_address_answers_per_minute=1.0)
    with ExitStack() as stack:
        host = stack.enter_context(browser())
        phones = [stack.enter_context(browser("192.0.2.66")) for _ in range(4)]
        code, other = start(host), start(host)
        ask(host, code)
        assert [phone.get(f"/class/{code}").status_code for phone in phones] == [200, 200, 200, 429]
        # New seats are counted per class: the same address joins another class.
        assert phones[3].get(f"/class/{other}").status_code == 200
        # Answers from one address meet its limit, whichever session sends them.
        answers = [phone.post(f"/api/class/{code}/answer", data={"value": "109"}).status_code for phone in phones[:3]]
        assert answers == [200, 200, 429]
        elsewhere = stack.enter_context(browser("192.0.2.10"))
        assert elsewhere.get(f"/class/{code}").status_code == 200
        assert elsewhere.post(f"/api/class/{code}/answer", data={"value": "109"}).status_code == 200


# ---------------------------------------------------------------- 3. blocking every class


def test_classes_per_address_are_limited(override, html):
    override(rate_address_classes_burst=3, rate_address_classes_per_minute=1.0)
    with browser("192.0.2.66") as attacker, browser("192.0.2.10") as assistant:
        statuses = []
        for _ in range(5):
            attacker.cookies.clear()  # cookie-less, as in the issue
            statuses.append(attacker.post("/class", follow_redirects=False).status_code)
        assert statuses == [303, 303, 303, 429, 429]
        refused = attacker.post("/class?lang=en", follow_redirects=False)
        message = html(refused).select_one(".error-page__message").get_text(strip=True)
        assert message.startswith("Too many requests in a short time. Please wait")
        seconds = int(WAIT.search(message).group())
        assert 170 <= seconds <= 180  # three classes in any 180 s
        assert start(assistant)  # another address starts its class


def test_an_empty_class_ends_early(override, monkeypatch):
    override(class_empty_seconds=60)
    clock = types.SimpleNamespace(now=time.time())
    for module in (class_store, seats, classroom_routes):
        monkeypatch.setattr(module, "time", types.SimpleNamespace(time=lambda: clock.now))
    monkeypatch.setattr(class_store, "_last_sweep", {})  # the sweeps' times are this clock's, then gone
    with browser() as host, browser() as student:
        quiet = start(host)
        visited = start(host)
        clock.now += 40
        assert student.get(f"/class/{visited}").status_code == 200  # somebody came
        clock.now += 30
        # Nobody in the first one for 70 s, no screen: it has ended. The other had a visit.
        assert host.get(f"/api/class/{quiet}").status_code == 404
        assert host.get(f"/api/class/{visited}").status_code == 200
        clock.now += 31
        assert host.get(f"/api/class/{visited}").status_code == 404


# ---------------------------------------------------------------- 6. guessing codes


def test_failed_lookups_are_throttled_per_address(override):
    override(rate_address_lookups_burst=4, rate_address_lookups_per_minute=2.0)
    wrong = "Z" * CODE_LENGTH
    with browser() as host, browser("192.0.2.66") as guesser, browser("192.0.2.10") as student:
        code = start(host)
        paths = [f"/class/go?code={wrong}", f"/api/class/{wrong}", f"/class/{wrong}/qr.svg", f"/class/{wrong}/bar"]
        assert [guesser.get(path).status_code for path in paths] == [404, 404, 404, 404]
        # Over the throttle, every look-up waits, the right code too: nothing is learnt.
        for path in (f"/api/class/{wrong}", f"/class/go?code={code}", f"/api/class/{code}", f"/class/{code}/qr.svg",
                     f"/class/{code}", f"/class/{wrong}"):
            refused = guesser.get(path, follow_redirects=False)
            assert refused.status_code == 429, path
        assert guesser.get(f"/api/class/{code}?lang=en").json()["detail"].startswith("Too many requests")
        # Another address is not throttled, and right codes never count.
        for _ in range(6):
            assert student.get(f"/class/go?code={code}", follow_redirects=False).status_code == 303
        assert student.get(f"/api/class/{wrong}").status_code == 404


def test_guessing_a_code_takes_longer_than_a_term_and_the_readme_says_how_long():
    """Expected time to hit any of the classes open, guessing at the failed-look-up throttle:
    with N classes among S codes, a guess finds one with probability N/S, so about
    S/(N + 1) guesses (drawn without repeats) are needed."""
    defaults = Settings()
    codes = len(CODE_ALPHABET) ** CODE_LENGTH
    guesses = codes / (defaults.max_classes + 1)
    days = guesses / defaults.rate_address_lookups_per_minute / (24 * 60)
    assert days > 4 * 30  # a school term
    assert f"{days:,.0f} days" in README.read_text(encoding="utf-8")


# ---------------------------------------------------------------- whose address


def _from(address: str, live_server: str) -> httpx.Client:
    return httpx.Client(base_url=live_server, timeout=10, transport=httpx.HTTPTransport(local_address=address))


def test_per_address_limits_follow_the_tcp_peer(live_server, override):
    override(rate_address_lookups_burst=6, rate_address_lookups_per_minute=1.0,
             rate_address_uploads_burst=3, rate_address_uploads_per_minute=1.0)
    wrong = "Z" * CODE_LENGTH

    def guess(_i: int) -> int:
        with _from("127.0.0.2", live_server) as client:  # a fresh client: no cookie
            return client.get(f"/api/class/{wrong}").status_code

    # Four cookie-less clients at once from one address: together they meet one limit.
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(guess, range(12), timeout=30))
    assert sorted(statuses) == [404] * 6 + [429] * 6
    with _from("127.0.0.2", live_server) as same, _from("127.0.0.3", live_server) as other:
        # X-Forwarded-For counts only from a trusted proxy (none by default).
        assert same.get(f"/api/class/{wrong}", headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 429
        assert other.get(f"/api/class/{wrong}").status_code == 404
        # Uploads: a new session per request, but the same address.
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 40, 40)).save(buffer, format="PNG")
        picture = buffer.getvalue()
        uploads = []
        for i in range(4):
            same.cookies.clear()
            uploads.append(same.post("/api/images", files={"file": (f"p{i}.png", picture, "image/png")}).status_code)
        assert uploads == [201, 201, 201, 429]
        assert other.post("/api/images", files={"file": ("p.png", picture, "image/png")}).status_code == 201


def test_ipv6_clients_are_counted_by_their_64_block():
    from types import SimpleNamespace

    from cnnlab.app.ratelimit import address_key

    def key(host: str) -> str:
        return address_key(SimpleNamespace(scope={"type": "http", "client": (host, 1), "headers": []}, app=cnnlab_app))

    assert key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert key("2001:db8:1:3::1") != key("2001:db8:1:2::1")
    assert key("::ffff:192.0.2.1") == key("192.0.2.1") == "192.0.2.1"
    assert key("testclient") == "testclient"


# ---------------------------------------------------------------- the limits still let a room in


def test_two_hundred_students_behind_one_address_can_join_and_answer():
    """The defaults, one address, 200 browsers: every one joins and answers (no screens
    here, so the pending seats are opened by hand as a phone's stream would)."""
    defaults = Settings()
    assert defaults.rate_address_joins_burst >= 200 and defaults.rate_address_answers_burst >= 200
    with browser() as host:
        code = start(host)
        ask(host, code)
        store = cnnlab_app.state.classes
        started = time.monotonic()
        for i in range(200):
            with browser() as phone:
                assert phone.get(f"/class/{code}").status_code == 200, i
                assert phone.post(f"/api/class/{code}/answer", data={"value": "109"}).status_code == 200, i
            store.update(code, lambda r: [setattr(s, "streams", 1) for s in r.students.values()])
            assert time.monotonic() - started < 60
        assert histogram(host, code) == {"109": 200}
        assert host.get(f"/api/class/{code}").json()["students"] == 200


def test_threads_do_not_break_the_pending_count(override):
    """Joins at once from one address never hold more pending seats than the setting."""
    override(class_pending_seats_per_address=4)
    with browser() as host:
        code = start(host)
        results: list[int] = []
        lock = threading.Lock()

        def join(_i: int) -> None:
            with browser() as phone:
                status = phone.get(f"/class/{code}").status_code
            with lock:
                results.append(status)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(join, range(10), timeout=30))
        assert sorted(results) == [200] * 4 + [429] * 6
        assert host.get(f"/api/class/{code}").json()["joined"] == results.count(200)
