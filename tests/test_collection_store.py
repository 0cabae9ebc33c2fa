"""The class's collection (issue 15): the model, then the same checks on both stores (this
process's memory and a real Valkey), then the service layer that wakes the class's streams."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from cnnlab.app.classroom import (
    GRID,
    Collection,
    MemoryCollectionStore,
    NoCollection,
    Room,
    TestRecord,
    collection_from_json,
    collection_to_json,
    grid_bytes,
    next_label,
    room_from_json,
    room_to_json,
)
from cnnlab.app.classroom.collection_redis import RedisCollectionStore
from cnnlab.app.errors import InputError
from cnnlab.app.settings import Settings

NOW = 1_765_000_000.0
LABELS = ["círculo", "cruz", "triángulo"]
BIG = 10_000  # a cap that is never reached


def _settings(url: str = "") -> Settings:
    return Settings(redis_url=url, secret_key="the same key on every host")


def _grid(k: int = 1) -> bytes:
    return bytes((k * 37 + i) % 256 for i in range(GRID * GRID))


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        return MemoryCollectionStore()
    return RedisCollectionStore(_settings(request.getfixturevalue("redis_url")))


def _add(store, student="s1", label=0, k=1, now=NOW + 1, seat=1, per_student=BIG, total=BIG):
    return store.add("ABCDEF", student, seat, label, _grid(k), now, max_per_student=per_student, max_total=total)


def _refused(status: int, call: Callable[[], object]) -> InputError:
    with pytest.raises(InputError) as refused:
        call()
    assert refused.value.status_code == status, refused.value.message
    assert refused.value.message
    return refused.value


# ---------------------------------------------------------------- the model


def test_a_collection_survives_its_json_round_trip():
    c = Collection(code="ABCDEF", labels=LABELS, target=20, deadline=NOW + 600, opened=NOW, phase="test",
                   next_id=7, seq=12, counts=[2, 1, 3], by_student={"sid-a": 4, "sid-b": 2},
                   student_counts={"sid-a": [1, 1, 2], "sid-b": [1, 0, 1]},
                   last_by_student={"sid-a": 6, "sid-b": 3}, removed=[4], job_id="job-1", right=5, fooled=1,
                   fooled_recent=[TestRecord(id=3, label=1, predicted=2, student="sid-a", seat=2, grid=_grid(),
                                             at=NOW + 9.5)], tests=6)
    again = collection_from_json(collection_to_json(c))
    assert again == c and isinstance(again.fooled_recent[0], TestRecord)
    empty = Collection(code="XYZXYZ", labels=["a", "b"], target=1, deadline=None, opened=NOW)
    assert collection_from_json(collection_to_json(empty)) == empty and empty.counts == [0, 0]


def test_a_room_keeps_its_collection_seq():
    room = Room(code="ABCDEF", secret_hash="h", created=1.0, active=2.0, collection_seq=9)
    assert room_from_json(room_to_json(room)) == room
    assert room_from_json('{"code":"ABCDEF","secret_hash":"h","created":1,"active":2}').collection_seq == 0


def test_grid_bytes_takes_the_pads_numbers_and_refuses_anything_else():
    flat = [0.0] * (GRID * GRID)
    flat[0], flat[1], flat[-1] = 1.0, 0.5, 0.2
    data = grid_bytes(flat)
    assert len(data) == GRID * GRID and (data[0], data[1], data[2], data[-1]) == (255, 128, 0, 51)
    assert grid_bytes([flat[r * GRID:(r + 1) * GRID] for r in range(GRID)]) == data  # 28 rows of 28
    for bad in (flat[:-1], flat + [0.0], [1.5] + flat[1:], [float("nan")] + flat[1:], [True] + flat[1:],
                ["1"] + flat[1:], [0.0] * (GRID * GRID), "1,2,3", None, [[1.0] * 27] * 28):
        with pytest.raises(ValueError) as refused:
            grid_bytes(bad)
        assert isinstance(refused.value, InputError) and refused.value.status_code == 422


def test_next_label_fewest_in_class_then_fewest_from_the_student_then_lowest():
    c = Collection(code="ABCDEF", labels=["a", "b", "c"], target=5, deadline=None, opened=NOW)
    assert next_label(c, "x") == 0
    c.counts = [1, 0, 0]
    assert next_label(c, "x") == 1
    c.counts = [2, 2, 2]
    c.student_counts = {"x": [1, 0, 1]}
    assert next_label(c, "x") == 1 and next_label(c, "y") == 0


# ---------------------------------------------------------------- both stores


def test_open_get_and_replace_a_closed_one(store):
    assert store.get("ABCDEF") is None
    c = store.open("ABCDEF", LABELS, 20, NOW + 600, NOW)
    got = store.get("ABCDEF")
    assert got == c and (got.labels, got.target, got.deadline, got.opened, got.phase) == (LABELS, 20, NOW + 600, NOW,
                                                                                         "collect")
    assert got.counts == [0, 0, 0] and got.seq == 1
    _add(store)
    _refused(409, lambda: store.open("ABCDEF", ["a", "b"], 5, None, NOW + 2))  # one is open
    store.close("ABCDEF")
    again = store.open("ABCDEF", ["a", "b"], 5, None, NOW + 3)
    assert again.labels == ["a", "b"] and again.counts == [0, 0] and again.by_student == {}
    assert again.seq > store.get("ABCDEF").seq - 1 >= 3 and store.drawings("ABCDEF") == []
    assert store.opened() == {"ABCDEF": NOW + 3}
    store.delete("ABCDEF")
    assert store.get("ABCDEF") is None and store.opened() == {}
    with pytest.raises(NoCollection):
        _add(store)


def test_add_until_the_caps(store):
    store.open("ABCDEF", LABELS, 20, None, NOW)
    for i in range(3):
        _add(store, "s1", label=i % 3, per_student=3, total=5)
    _refused(429, lambda: _add(store, "s1", per_student=3, total=5))  # this student's cap
    _add(store, "s2", per_student=3, total=5)
    _add(store, "s3", per_student=3, total=5)
    _refused(429, lambda: _add(store, "s4", per_student=3, total=5))  # the class's cap
    c = store.get("ABCDEF")
    assert c.total == 5 and c.by_student == {"s1": 3, "s2": 1, "s3": 1} and c.counts == [3, 1, 1]
    # A removed drawing frees a place under both caps.
    store.remove("ABCDEF", 1)
    _add(store, "s1", per_student=3, total=5)


def test_bad_labels_phase_and_deadline_are_refused(store):
    store.open("ABCDEF", LABELS, 20, NOW + 60, NOW)
    for label in (-1, 3, True, "1", 1.0):
        _refused(422, lambda label=label: _add(store, label=label))
    _refused(422, lambda: store.add("ABCDEF", "s1", 1, 0, b"\x00" * 10, NOW + 1, max_per_student=9, max_total=9))
    _refused(409, lambda: _add(store, now=NOW + 61))  # the time is up
    assert store.get("ABCDEF").total == 0 and store.get("ABCDEF").seq == 1  # refusals change nothing
    _add(store)
    store.set_phase("ABCDEF", "train", job_id="job-7")
    _refused(409, lambda: _add(store))
    _refused(409, lambda: store.undo("ABCDEF", "s1"))
    assert store.get("ABCDEF").job_id == "job-7" and store.get("ABCDEF").total == 1
    store.close("ABCDEF")
    _refused(409, lambda: _add(store))
    with pytest.raises(ValueError):
        store.set_phase("ABCDEF", "dancing")


def test_undo_takes_back_the_students_newest_drawing_still_there(store):
    store.open("ABCDEF", LABELS, 20, None, NOW)
    a1 = _add(store, "a", label=0)
    b1 = _add(store, "b", label=1)
    a2 = _add(store, "a", label=2)
    a3 = _add(store, "a", label=1)
    assert store.get("ABCDEF").last_by_student == {"a": a3.id, "b": b1.id}
    assert store.remove("ABCDEF", a3.id)  # the assistant removed a's newest
    assert store.undo("ABCDEF", "a") == a2.id  # so undo takes the one before
    assert store.get("ABCDEF").last_by_student["a"] == a1.id
    assert store.undo("ABCDEF", "a") == a1.id
    assert store.undo("ABCDEF", "a") is None
    c = store.get("ABCDEF")
    assert [d.id for d in store.drawings("ABCDEF")] == [b1.id]
    assert c.by_student == {"b": 1} and c.last_by_student == {"b": b1.id} and c.counts == [0, 1, 0]
    assert c.removed == [a3.id, a2.id, a1.id]
    with pytest.raises(NoCollection):
        store.undo("ZZZZZZ", "a")


def test_drawings_after_an_id_in_order_and_removed_ones_listed(store):
    store.open("ABCDEF", LABELS, 20, None, NOW)
    made = [_add(store, f"s{i % 4}", label=i % 3, k=i, seat=i % 4 + 1, now=NOW + i) for i in range(12)]
    got = store.drawings("ABCDEF")
    assert got == made and [d.id for d in got] == list(range(1, 13))
    assert got[5].grid == _grid(5) and got[5].seat == 2 and got[5].student == "s1" and got[5].at == NOW + 5
    assert store.drawing("ABCDEF", 6) == got[5] and store.drawing("ABCDEF", 99) is None
    assert not store.remove("ABCDEF", 99)
    assert store.remove("ABCDEF", 8) and not store.remove("ABCDEF", 8)
    assert [d.id for d in store.drawings("ABCDEF", after_id=5)] == [6, 7, 9, 10, 11, 12]
    assert store.drawings("ABCDEF", after_id=12) == []
    c = store.get("ABCDEF")
    assert c.removed == [8] and c.next_id == 13 and store.drawing("ABCDEF", 8) is None
    # The counts follow the drawings still there.
    left = store.drawings("ABCDEF")
    assert c.counts == [sum(1 for d in left if d.label == k) for k in range(3)]
    assert c.by_student == {s: sum(1 for d in left if d.student == s) for s in ("s0", "s1", "s2", "s3")}
    assert c.student_counts["s3"] == [sum(1 for d in left if d.student == "s3" and d.label == k) for k in range(3)]


def test_record_test_tallies_and_keeps_the_last_24_that_fooled_it(store):
    store.open("ABCDEF", LABELS, 20, None, NOW)
    _refused(409, lambda: store.record_test("ABCDEF", "s1", 1, 0, 0, _grid(), NOW))  # nothing trained yet
    store.set_phase("ABCDEF", "test", job_id="job-1")
    _refused(422, lambda: store.record_test("ABCDEF", "s1", 1, 0, 5, _grid(), NOW))
    for i in range(40):
        r = store.record_test("ABCDEF", f"s{i % 3}", i % 3 + 1, i % 3, (i % 3 + (i % 2)) % 3, _grid(i), NOW + i)
        assert r.id == i + 1
    c = store.get("ABCDEF")
    assert (c.right, c.fooled, c.tests) == (20, 20, 40)
    assert len(c.fooled_recent) == 20 and all(r.label != r.predicted for r in c.fooled_recent)
    for i in range(40, 60):
        store.record_test("ABCDEF", "s1", 1, 0, 1, _grid(i), NOW + i)
    c = store.get("ABCDEF")
    assert [r.id for r in c.fooled_recent] == [34, 36, 38, 40] + list(range(41, 61))  # the last 24
    assert c.fooled_recent[-1].grid == _grid(59)


def test_concurrent_adds_lose_none_and_never_pass_a_cap(store):
    def run(total: int) -> list:
        store.open("ABCDEF", LABELS, 20, None, NOW)
        results: list = []

        def worker(n: int) -> None:
            for i in range(30):
                try:
                    results.append(_add(store, f"student-{n}", label=i % 3, seat=n, per_student=30, total=total))
                except InputError as refused:
                    assert refused.status_code == 429
                    results.append(None)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return [d for d in results if d is not None]

    kept = run(BIG)
    assert len(kept) == 240 and len({d.id for d in kept}) == 240
    assert sorted(d.id for d in store.drawings("ABCDEF")) == sorted(d.id for d in kept)
    c = store.get("ABCDEF")
    assert c.total == 240 and c.by_student == {f"student-{n}": 30 for n in range(8)}
    store.close("ABCDEF")
    kept = run(100)
    assert len(kept) == 100 and store.get("ABCDEF").total == 100 and len(store.drawings("ABCDEF")) == 100


def test_next_label_fills_every_label_evenly(store):
    store.open("ABCDEF", LABELS, 30, None, NOW)
    students = ["a", "b", "c"]
    for i in range(90):
        student = students[i % 3] if i < 45 else students[(i * 7) % 3]
        label = next_label(store.get("ABCDEF"), student)
        _add(store, student, label=label)
        counts = store.get("ABCDEF").counts
        assert max(counts) - min(counts) <= 1
    c = store.get("ABCDEF")
    assert c.counts == [30, 30, 30]
    assert all(max(n) - min(n) <= 4 for n in c.student_counts.values())  # each student drew each label


# ---------------------------------------------------------------- the service layer wakes the class


@pytest.fixture(params=["memory", "redis"])
def app(request):
    from cnnlab.app.main import create_app
    from cnnlab.app.settings import get_settings

    settings = _settings(request.getfixturevalue("redis_url") if request.param == "redis" else "")
    made = create_app()
    made.dependency_overrides[get_settings] = lambda: settings
    return made


def _app_settings(app) -> Settings:
    from cnnlab.app.settings import settings_for

    return settings_for(app)


def _run(scenario) -> object:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(scenario, 30)).result()


def test_a_change_through_collect_bumps_the_room_and_wakes_its_streams(app):
    from cnnlab.app.backend import hub_for
    from cnnlab.app.classroom import collect, store_for
    from cnnlab.app.classroom.collection_store import collection_store_for, end_orphans
    from cnnlab.app.classroom.redis_store import RedisClassStore

    async def scenario() -> None:
        task = None
        shared_engine = bool(_app_settings(app).redis_url)
        if shared_engine:  # the Hub first, as the app's lifespan makes it (before the class store)
            hub = hub_for(app)
            task = asyncio.create_task(hub.run())
            await asyncio.wait_for(hub.connected.wait(), 5)
        classes = store_for(app)
        assert isinstance(classes, RedisClassStore) == shared_engine
        try:
            room = classes.create("hash", time.time(), max_classes=5)
            code = room.code
            sub = classes.subscribe(code)
            assert not await sub.wait(0.05)
            c = await asyncio.to_thread(collect.open_collection, app, code, ["uno", " dos  "], 5, 10)
            assert c.labels == ["uno", "dos"] and c.deadline == pytest.approx(c.opened + 600)
            assert await sub.wait(1) and classes.get(code).collection_seq == c.seq
            flat = [0.0] * (GRID * GRID)
            flat[40] = 1.0
            d = await asyncio.to_thread(collect.add_drawing, app, code, "s1", 1, 1, flat)
            assert await sub.wait(1)
            assert classes.get(code).collection_seq == collection_store_for(app).get(code).seq
            assert d.grid[40] == 255
            assert await asyncio.to_thread(collect.undo_drawing, app, code, "s1") == d.id
            assert await sub.wait(1)
            # A refusal changes nothing and wakes nobody.
            with pytest.raises(InputError) as refused:
                await asyncio.to_thread(collect.add_drawing, app, code, "s1", 1, 7, flat)
            assert refused.value.status_code == 422 and not await sub.wait(0.1)
            for labels, target, minutes in ((["solo"], 5, 10), (["a", "A"], 5, 10), (["a", "x" * 25], 5, 10),
                                            (None, 0, 10), (None, 5, 61), (None, 101, 1)):
                with pytest.raises(InputError) as refused:
                    collect.open_collection(app, code, labels, target, minutes)
                assert refused.value.status_code in (409, 422)
            await asyncio.to_thread(collect.close_collection, app, code)
            assert await sub.wait(1)
            again = await asyncio.to_thread(collect.open_collection, app, code, None, 5)
            assert again.labels == [str(d) for d in range(10)]
            sub.close()
            # The class ends: so does its collection.
            with pytest.raises(InputError) as refused:
                collect.open_collection(app, "ZZZZZZ", None, 5)
            assert refused.value.status_code == 404
            assert collection_store_for(app).get("ZZZZZZ") is None
            classes.delete(code)
            assert end_orphans(app, collection_store_for(app)) == [code]
            assert collection_store_for(app).get(code) is None
        finally:
            if task is not None:
                task.cancel()

    _run(scenario())


def test_every_valkey_key_has_a_ttl_and_goes_with_delete(redis_url, valkey):
    store = RedisCollectionStore(_settings(redis_url))
    store.open("ABCDEF", LABELS, 20, None, NOW)
    _add(store, "s1")
    direct = valkey.client()
    keys = sorted(k.decode() for k in direct.keys("cnnlab:*"))
    assert keys == ["cnnlab:coll:ABCDEF", "cnnlab:coll:ABCDEF:d", "cnnlab:collections"]
    assert all(direct.ttl(k) > 3600 for k in keys)
    other = RedisCollectionStore(_settings(redis_url))  # another process
    assert other.get("ABCDEF").total == 1
    _add(store, "s2")
    assert other.get("ABCDEF").total == 2  # its kept copy is not served stale
    store.delete("ABCDEF")
    assert direct.keys("cnnlab:*") == [] and other.get("ABCDEF") is None
