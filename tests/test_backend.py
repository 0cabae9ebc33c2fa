"""The shared engine's pub/sub (app/backend.py) against a real Valkey server: one pattern
subscription per process wakes the right local waiters, and survives an outage."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from cnnlab.app.backend import Hub, publish
from cnnlab.app.settings import Settings


def _run(coro):
    """In a thread of its own: a browser test's Playwright loop may be running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coro, 30)).result()


async def _started(url: str) -> tuple[Hub, asyncio.Task]:
    hub = Hub(url)
    task = asyncio.create_task(hub.run())
    await asyncio.wait_for(hub.connected.wait(), 5)
    return hub, task


def test_a_message_wakes_the_waiters_of_its_channel_only(redis_url):
    settings = Settings(redis_url=redis_url, secret_key="k")

    async def main() -> None:
        hub, task = await _started(redis_url)
        mine, same, other = (hub.subscribe("cnnlab:wake:class:ABC"), hub.subscribe("cnnlab:wake:class:ABC"),
                             hub.subscribe("cnnlab:wake:class:XYZ"))
        heard: list[tuple[str, bytes]] = []
        hub.listen("cnnlab:wake:job:", lambda channel, data: heard.append((channel, data)))
        await asyncio.to_thread(publish, settings, "cnnlab:wake:class:ABC", 7)
        assert await mine.wait(2) and await same.wait(2)
        assert not await other.wait(0.2)
        assert not await mine.wait(0.1)  # a wake-up is consumed by the wait that saw it
        await asyncio.to_thread(publish, settings, "cnnlab:wake:job:j1", b"3")
        await asyncio.sleep(0.2)
        assert heard == [("cnnlab:wake:job:j1", b"3")]
        for waiter in (mine, same, other):
            waiter.close()
        assert hub._waiters == {}
        task.cancel()

    _run(main())


def test_after_an_outage_the_hub_reconnects_and_wakes_everyone(valkey, redis_url):
    settings = Settings(redis_url=redis_url, secret_key="k")

    async def main() -> None:
        hub, task = await _started(redis_url)
        waiter = hub.subscribe("cnnlab:wake:class:ABC")
        looked_again: list[str] = []
        hub.listen("cnnlab:wake:job:", lambda channel, data: looked_again.append(channel))
        valkey.stop()
        for _ in range(50):
            if not hub.connected.is_set():
                break
            await asyncio.sleep(0.1)
        assert not hub.connected.is_set()
        await asyncio.to_thread(valkey.start)
        assert await waiter.wait(5)  # missed messages: everyone looks again
        assert looked_again
        await asyncio.to_thread(publish, settings, "cnnlab:wake:class:ABC", 8)
        assert await waiter.wait(2)
        waiter.close()
        task.cancel()

    _run(main())


def test_a_hung_server_costs_one_timeout_then_calls_fail_at_once(valkey, redis_url):
    """A server that accepts and never answers (SIGSTOP) must not hold every request for a
    timeout: after one, calls fail at once (a 503 upstream) until the server answers again."""
    import os
    import signal
    import time

    import pytest
    import redis

    from cnnlab.app import backend

    settings = Settings(redis_url=redis_url, secret_key="k")
    store = backend.client(settings)
    store.set("cnnlab:probe", 1)
    os.kill(valkey.proc.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(backend.SharedStoreDown):
            store.get("cnnlab:probe")
        first = time.monotonic() - start
        start = time.monotonic()
        for _ in range(5):
            with pytest.raises(backend.SharedStoreDown):
                store.get("cnnlab:probe")
        after = time.monotonic() - start
    finally:
        os.kill(valkey.proc.pid, signal.SIGCONT)
    assert first < backend.REPLY_TIMEOUT_SECONDS + 1.0
    assert after < 0.5, f"five calls while failing fast took {after:.2f} s"
    deadline = time.monotonic() + backend.FAIL_FAST_SECONDS + 5
    while True:
        try:
            store.ping()
            break
        except redis.exceptions.ConnectionError:
            assert time.monotonic() < deadline, "the client never recovered"
            time.sleep(0.2)
    assert store.get("cnnlab:probe") == b"1"
