"""The class store's behaviour, the same checks on both implementations: this process's
memory (``MemoryClassStore``, the default) and a real Valkey server (``RedisClassStore``);
then two apps sharing one Valkey, as two processes or hosts would."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager

import pytest
from fastapi.testclient import TestClient

from cnnlab.app.backend import Hub
from cnnlab.app.classroom import (
    CODE_ALPHABET,
    CODE_LENGTH,
    MemoryClassStore,
    NoSuchClass,
    Question,
    RedisClassStore,
    Room,
    Student,
    host_cookie,
    room_from_json,
    room_to_json,
)
from cnnlab.app.errors import InputError
from cnnlab.app.settings import Settings, get_settings

CODE = re.compile(rf"/class/([{CODE_ALPHABET}]{{{CODE_LENGTH}}})/present")


def _settings(url: str) -> Settings:
    return Settings(redis_url=url, secret_key="the same key on every host")


@pytest.fixture(params=["memory", "redis"])
def make_store(request) -> Callable[..., object]:
    """Makes a store of the kind under test (``hub``: the Valkey store's wake-ups)."""
    if request.param == "memory":
        return lambda hub=None: MemoryClassStore()
    url = request.getfixturevalue("redis_url")
    return lambda hub=None: RedisClassStore(_settings(url), hub)


@pytest.fixture
def store(make_store):
    return make_store()


def _run(scenario) -> object:
    """Runs a coroutine in a thread of its own (a browser test's Playwright loop may run in this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(scenario, 30)).result()


@asynccontextmanager
async def _hub(store):
    """The store with its wake-ups running (the Valkey store: a Hub, as the app's lifespan starts it)."""
    if not isinstance(store, RedisClassStore):
        yield store
        return
    hub = Hub(_url(store))
    task = asyncio.create_task(hub.run())
    await asyncio.wait_for(hub.connected.wait(), 5)
    store.hub = hub
    try:
        yield store
    finally:
        task.cancel()


def _url(store: RedisClassStore) -> str:
    kw = store.client.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def _full_room(code: str = "ABCDEF") -> Room:
    room = Room(code=code, secret_hash="f" * 64, created=1_765_000_000.25, active=1_765_000_123.5,
                view="/conv?preset=seed&step=3", view_seq=4, questions=2, answers_seq=7, locked=True,
                seats_made=3, host_streams=1)
    room.students = {"sid-a": Student(joined=1_765_000_001.0, seat=1, address="192.0.2.1", streams=2,
                                      left=1_765_000_001.0),
                     "sid-b": Student(joined=1_765_000_002.5, seat=3, address="2001:db8::/64", streams=0,
                                      left=1_765_000_050.75)}
    room.question = Question(id=2, page="conv", view="/conv?preset=seed&step=3", answer=-2.5, tolerance=0.0125,
                             solution="35·(−2) + … = 78", kind="next_value", step=4, row=1, col=2, channel=None,
                             answers={"sid-a": -2.5, "sid-b": 1e-7}, revealed=True)
    return room


# ---------------------------------------------------------------- the data


def test_a_room_survives_its_json_round_trip():
    room = _full_room()
    again = room_from_json(room_to_json(room))
    assert again == room
    assert isinstance(again.students["sid-b"], Student) and isinstance(again.question, Question)
    empty = Room(code="XYZXYZ", secret_hash="h", created=1.0, active=2.0)
    assert room_from_json(room_to_json(empty)) == empty


# ---------------------------------------------------------------- both stores


def test_create_get_and_update(store):
    now = time.time()
    room = store.create("hash", now, max_classes=5)
    assert len(room.code) == CODE_LENGTH and set(room.code) <= set(CODE_ALPHABET)
    got = store.get(room.code)
    assert got is not None and (got.code, got.secret_hash, got.created, got.active) == (room.code, "hash", now, now)
    assert store.get("ZZZZZZ") is None

    def show(r: Room) -> str:
        r.view, r.view_seq = "/pool", r.view_seq + 1
        return "shown"

    assert store.update(room.code, show) == "shown"
    assert (store.get(room.code).view, store.get(room.code).view_seq) == ("/pool", 1)
    with pytest.raises(NoSuchClass):
        store.update("ZZZZZZ", show)


def test_a_room_with_students_and_a_question_reads_back_equal(store):
    room = store.create("f" * 64, 1_765_000_000.25, max_classes=5)
    expected = _full_room(room.code)

    def fill(r: Room) -> None:
        for name in ("view", "view_seq", "questions", "answers_seq", "locked", "seats_made", "host_streams",
                     "students", "question", "active"):
            setattr(r, name, getattr(expected, name))

    store.update(room.code, fill)
    assert store.get(room.code) == expected


def test_concurrent_updates_lose_none(store):
    room = store.create("hash", time.time(), max_classes=5)

    def add(r: Room) -> None:
        r.seats_made += 1

    def worker() -> None:
        for _ in range(50):
            store.update(room.code, add)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert store.get(room.code).seats_made == 8 * 50


def test_an_exception_in_the_change_leaves_the_room_as_it_was(store):
    room = store.create("hash", time.time(), max_classes=5)
    store.update(room.code, lambda r: setattr(r, "view", "/conv"))

    def half_done(r: Room) -> None:
        r.view = "/pool"
        r.students["x"] = Student(joined=1.0)
        raise InputError("refused", status_code=409)

    with pytest.raises(InputError):
        store.update(room.code, half_done)
    after = store.get(room.code)
    assert after.view == "/conv" and after.students == {}
    store.update(room.code, lambda r: setattr(r, "view_seq", 9))  # and it still changes
    assert (store.get(room.code).view, store.get(room.code).view_seq) == ("/conv", 9)


def test_max_classes_is_refused_with_a_503(store):
    codes = {store.create("h", time.time(), max_classes=3).code for _ in range(3)}
    assert len(codes) == 3
    with pytest.raises(InputError) as refused:
        store.create("h", time.time(), max_classes=3)
    assert refused.value.status_code == 503
    store.delete(codes.pop())  # an ended class frees its place
    assert store.create("h", time.time(), max_classes=3).code not in codes


def test_update_and_delete_wake_subscribers_and_touch_does_not(store):
    async def scenario() -> list:
        async with _hub(store):
            room = store.create("hash", time.time(), max_classes=5)
            sub = store.subscribe(room.code)
            seen = [await sub.wait(0.05)]  # nothing changed
            started = time.monotonic()
            await asyncio.to_thread(store.update, room.code, lambda r: setattr(r, "view", "/conv"))
            seen.append(await sub.wait(0.5))
            assert time.monotonic() - started < 0.5
            later = room.active + 10
            store.touch(room.code, later)  # a sign of life wakes nobody...
            seen.append(await sub.wait(0.1))
            assert store.get(room.code).active == later  # ...and is read back
            store.delete(room.code)
            seen.append(await sub.wait(0.5))
            assert store.get(room.code) is None
            with pytest.raises(NoSuchClass):
                store.update(room.code, lambda r: None)
            sub.close()
            return seen

    assert _run(scenario()) == [False, True, False, True]


def test_expire_ends_idle_and_empty_classes_and_wakes_their_streams(store):
    async def scenario() -> None:
        async with _hub(store):
            now = time.time()
            idle = store.create("h", now, max_classes=5)
            busy = store.create("h", now, max_classes=5)
            watched = store.create("h", now, max_classes=5)

            def open_screen(r: Room) -> None:
                r.students["s"] = Student(joined=now, left=now, streams=1)

            store.update(watched.code, open_screen)
            store.touch(busy.code, now + 50)
            sub = store.subscribe(idle.code)
            assert store.expire(now + 30, idle_seconds=60, empty_seconds=40) == []
            # 70 s on: idle's assistant has been silent > 60 s; busy's for 20 s but nobody has
            # been there for 70 - 50 = 20 s (< 40); watched has a screen open, but its
            # assistant is silent > 60 s too.
            assert sorted(store.expire(now + 70, idle_seconds=60, empty_seconds=40)) == sorted(
                [idle.code, watched.code])
            assert await sub.wait(0.5)
            assert store.get(idle.code) is None and store.get(busy.code) is not None
            # Nobody at all for more than empty_seconds: ended too.
            assert store.expire(now + 95, idle_seconds=600, empty_seconds=40) == [busy.code]
            assert store.create("h", now, max_classes=1)  # every place is free again
            sub.close()

    _run(scenario())


# ---------------------------------------------------------------- Valkey: several processes


def test_two_processes_see_each_others_changes_and_wake_each_others_streams(redis_url):
    one, other = RedisClassStore(_settings(redis_url)), RedisClassStore(_settings(redis_url))

    async def scenario() -> None:
        async with _hub(other):
            room = one.create("hash", time.time(), max_classes=5)
            assert other.get(room.code).view is None  # parsed and kept by the other process
            sub = other.subscribe(room.code)
            await asyncio.to_thread(one.update, room.code, lambda r: setattr(r, "view", "/pool"))
            assert await sub.wait(0.5)
            assert other.get(room.code).view == "/pool"  # the kept copy is not served stale
            one.delete(room.code)
            assert await sub.wait(0.5)
            assert other.get(room.code) is None
            sub.close()

    _run(scenario())


def test_every_key_has_a_ttl(redis_url, valkey):
    store = RedisClassStore(_settings(redis_url))
    room = store.create("hash", time.time(), max_classes=5)
    store.update(room.code, lambda r: setattr(r, "view", "/conv"))
    direct = valkey.client()
    keys = sorted(k.decode() for k in direct.keys("cnnlab:*"))
    assert keys == ["cnnlab:class:" + room.code, "cnnlab:classes"]
    assert all(direct.ttl(k) > 3600 for k in keys)
    assert int(direct.hget("cnnlab:class:" + room.code, "version")) == 2


# ---------------------------------------------------------------- two apps, one Valkey


@contextmanager
def _app_client(settings: Settings) -> Iterator[TestClient]:
    from cnnlab.app.main import create_app

    app = create_app()
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as client:
        yield client


def test_a_class_started_on_one_host_is_followed_on_another(redis_url):
    settings = _settings(redis_url)
    with _app_client(settings) as host_a, _app_client(settings) as student_b, _app_client(settings) as host_b:
        started = host_a.post("/class", follow_redirects=False)
        assert started.status_code == 303, started.text
        code = CODE.fullmatch(started.headers["location"]).group(1)
        # On the other host: the class's JSON, and a student's follow page.
        seen = student_b.get(f"/api/class/{code}")
        assert seen.status_code == 200 and seen.json()["code"] == code and seen.json()["host"] is False
        assert student_b.get(f"/class/{code}").status_code == 200
        # A view shown on A is read on B (by the student) at once.
        shown = host_a.post(f"/api/class/{code}/view", json={"url": "/conv?preset=seed&step=3&lang=es"})
        assert shown.status_code == 200 and shown.json()["view"] == "/conv?preset=seed&step=3"
        assert shown.json()["joined"] == 1  # the seat taken on B counts on A
        assert student_b.get(f"/api/class/{code}").json()["view"] == "/conv?preset=seed&step=3"
        # The assistant's cookie works on either host (the store keeps its hash).
        host_b.cookies.set(host_cookie(code), host_a.cookies.get(host_cookie(code)))
        assert host_b.get(f"/class/{code}/present").status_code == 200
        assert host_b.post(f"/api/class/{code}/question").json()["question"]["kind"] == "next_value"
        assert host_a.get(f"/api/class/{code}").json()["question"]["kind"] == "next_value"
        # Ended on B: gone on A.
        assert host_b.delete(f"/api/class/{code}").status_code == 204
        assert host_a.get(f"/api/class/{code}").status_code == 404


def test_the_streams_a_change_wakes_read_the_room_once_per_process(redis_url):
    """1,000 phones woken by one step: the first stream of a process reads the room from
    Valkey, the others ``peek`` at it in memory; ``get`` (a request) always asks Valkey."""
    one = RedisClassStore(_settings(redis_url))

    async def scenario() -> None:
        hub = Hub(redis_url)
        task = asyncio.create_task(hub.run())
        await asyncio.wait_for(hub.connected.wait(), 5)
        other = RedisClassStore(_settings(redis_url), hub)
        try:
            room = one.create("hash", time.time(), max_classes=5)
            streams = [other.subscribe(room.code) for _ in range(50)]
            await asyncio.to_thread(one.update, room.code, lambda r: setattr(r, "view", "/pool"))
            reads = 0
            read = other._read

            def counted(*args, **kwargs):
                nonlocal reads
                reads += 1
                return read(*args, **kwargs)

            other._read = counted
            for stream in streams:
                assert await stream.wait(1)
                assert other.peek(room.code).view == "/pool"
            assert reads == 1
            assert other.get(room.code).view == "/pool" and reads == 2
            await asyncio.to_thread(one.update, room.code, lambda r: setattr(r, "view", "/conv"))
            assert await streams[0].wait(1)
            assert other.peek(room.code).view == "/conv"  # never the older room once woken
            for stream in streams:
                stream.close()
        finally:
            task.cancel()

    _run(scenario())
