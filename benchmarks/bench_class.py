"""One class following its assistant live: how long a step takes to reach every student.

    python benchmarks/bench_class.py [--students 100] [--steps 20] [--interval 0.5]

What it does, on loopback only, and it stops by itself (one run ≈ steps × interval + 10 s):

1. Starts the real server as a subprocess on a free port: uvicorn, one worker, as
   ``cnnlab`` runs it.
2. The assistant (an httpx client) starts a class (POST /class: the secret cookie) and
   shows the slides' example.
3. ``--students`` students, each its own httpx client (own cookies, so its own session, as a
   phone) open the class page (joining) and then hold its live event stream
   (GET /class/<code>/events), all in one asyncio process.
4. Once the assistant's class says every student is connected, the assistant shows a new
   step every ``--interval`` seconds (POST /api/class/<code>/view, what static/js/classroom.js
   sends after each step). Every student notes when each ``view`` event arrives.
5. Reports two latencies for every (student, step), from just before the assistant's POST
   is sent: the ``view`` event arriving at the student, and the new step ready for the
   student's screen — the stepper fragment from the ``stepper`` event the server sends just
   before the view, as static/js/classroom.js uses it, or, with ``--fetch``, the fragment
   fetched by every phone (GET of the view with ``HX-Request``), as it was before the stream
   carried it — as p50/p95/max; the assistant's POST round trip; and errors: failed requests, streams that
   broke, and steps some student never received (all must be 0).

Target (issue 6): p95 ≤ 250 ms with 100 students; exit status 1 when missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import time
from urllib.parse import parse_qsl, urlsplit

import httpx
import numpy as np
from _server import free_port, stop_server, wait_until_up

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_P95_MS = 250.0
# One TLS context for every client (never used on plain http): httpx would otherwise build
# one per client, ~40 ms each, stalling the event loop while 100 students join.
SSL_CONTEXT = ssl.create_default_context()
# How long after the last step a late event still counts (then it is missing: an error).
GRACE_S = 3.0


def start_server(port: int) -> subprocess.Popen:
    # Every simulated phone is on 127.0.0.1 and all join at the same instant: let one address
    # hold as many seats waiting for their screen as there are phones.
    env = dict(os.environ, CNNLAB_MAX_CLASS_STUDENTS="100000", CNNLAB_CLASS_PENDING_SEATS_PER_ADDRESS="100000",
               CNNLAB_RATE_ADDRESS_JOINS_BURST="100000")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "cnnlab.app.main:app", "--host", "127.0.0.1", "--port",
                             str(port), "--log-level", "warning"], cwd=ROOT, env=env)
    return wait_until_up(proc, port)


def view_url(k: int) -> str:
    # The slides' example with padding 1: 5×5 = 25 steps, enough for the default 20.
    return f"/conv?preset=seed&kernel=seed&padding=1&step={k}"


STEPPER_HEADERS = {"HX-Request": "true", "HX-Target": "conv-stepper"}


async def fetch_view(client: httpx.AsyncClient, url: str, k: int, shown: dict, errors: list[str], i: int) -> None:
    """What the follow page does on a new step of the same page: fetch just the stepper."""
    try:
        response = await client.get(url, headers=STEPPER_HEADERS)
        if response.status_code == 200 and 'id="conv-stepper"' in response.text:
            shown.setdefault(k, time.perf_counter())
        else:
            errors.append(f"student {i}: view {url}: {response.status_code}, no stepper")
    except httpx.HTTPError as exc:
        errors.append(f"student {i}: view {type(exc).__name__}")


async def student(i: int, base: str, code: str, arrivals: list[dict], shown: list[dict], errors: list[str],
                  connected: list[int], fetch: bool) -> None:
    timeout = httpx.Timeout(10.0, read=None)
    fetches: set[asyncio.Task] = set()
    async with httpx.AsyncClient(base_url=base, timeout=timeout, verify=SSL_CONTEXT) as client:
        try:
            page = await client.get(f"/class/{code}")
            if page.status_code != 200:
                errors.append(f"student {i}: join {page.status_code}")
                return
            async with client.stream("GET", f"/class/{code}/events", headers={"accept": "text/event-stream"}) as r:
                if r.status_code != 200:
                    errors.append(f"student {i}: stream {r.status_code}")
                    return
                connected[0] += 1
                name, data, prepared = None, [], None
                async for line in r.aiter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                    elif not line and name:
                        if name == "stepper":
                            prepared = data[0] if len(data) > 1 and 'id="conv-stepper"' in data[1] else None
                        elif name == "view":
                            now = time.perf_counter()
                            step = dict(parse_qsl(urlsplit(data[0]).query)).get("step")
                            if step is not None:
                                arrivals[i].setdefault(int(step), now)
                                if prepared == data[0] and not fetch:
                                    shown[i].setdefault(int(step), now)
                                else:
                                    task = asyncio.create_task(fetch_view(client, data[0], int(step), shown[i], errors, i))
                                    fetches.add(task)
                                    task.add_done_callback(fetches.discard)
                        name, data = None, []
        except asyncio.CancelledError:
            for task in fetches:
                task.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 — every failure is counted and reported
            errors.append(f"student {i}: {type(exc).__name__}: {exc}")


async def run(base: str, n: int, steps: int, interval: float, fetch: bool) -> dict:
    errors: list[str] = []
    arrivals: list[dict] = [{} for _ in range(n)]
    shown: list[dict] = [{} for _ in range(n)]
    connected = [0]
    sent: dict[int, float] = {}
    post_ms: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=10.0, verify=SSL_CONTEXT) as host:
        response = await host.post("/class", follow_redirects=False)
        code = response.headers["location"].split("/")[2]
        await host.post(f"/api/class/{code}/view", json={"url": view_url(0)})
        tasks = [asyncio.create_task(student(i, base, code, arrivals, shown, errors, connected, fetch)) for i in range(n)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = (await host.get(f"/api/class/{code}")).json()
            if state["students"] >= n or len(errors) + connected[0] >= n and state["students"] >= connected[0]:
                break
            await asyncio.sleep(0.2)
        joined = state["students"]
        await asyncio.sleep(0.5)
        start = time.perf_counter()
        for k in range(1, steps + 1):
            due = start + k * interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            t0 = time.perf_counter()
            response = await host.post(f"/api/class/{code}/view", json={"url": view_url(k)})
            post_ms.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                errors.append(f"assistant: step {k}: {response.status_code}")
                continue
            sent[k] = t0
        end = time.perf_counter() + GRACE_S
        while time.perf_counter() < end and any(not all(k in a for k in sent) for a in shown):
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await host.delete(f"/api/class/{code}")
    latencies, on_screen, missing = [], [], 0
    for a, s in zip(arrivals, shown):
        for k, t0 in sent.items():
            if k in a and k in s:
                latencies.append((a[k] - t0) * 1000)
                on_screen.append((s[k] - t0) * 1000)
            else:
                missing += 1
    return {"latencies": np.array(latencies), "on_screen": np.array(on_screen), "missing": missing, "errors": errors, "joined": joined,
            "post_ms": np.array(post_ms), "sent": len(sent)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between the assistant's steps")
    parser.add_argument("--fetch", action="store_true", help="every phone fetches each step (ignores the stepper event)")
    args = parser.parse_args()
    port = free_port()
    proc = start_server(port)
    try:
        result = asyncio.run(run(f"http://127.0.0.1:{port}", args.students, args.steps, args.interval, args.fetch))
    finally:
        stop_server(proc)
    errors = len(result["errors"]) + result["missing"]
    post = result["post_ms"]
    print(f"\nOne class: {args.students} students on live event streams, the assistant stepping every "
          f"{args.interval * 1000:.0f} ms ({result['sent']} steps); uvicorn 1 worker, {os.cpu_count()} CPU cores; "
          f"{result['joined']} students connected, assistant POST p50 "
          f"{np.percentile(post, 50) if post.size else float('nan'):.1f} ms, {errors} errors\n")
    print("| from the assistant's POST to | deliveries | p50 (ms) | p95 (ms) | max (ms) |")
    print("|---|---:|---:|---:|---:|")
    for label, lat in (("the event at the student", result["latencies"]),
                       ("the new step ready on the student's phone" + (" (stepper fetched)" if args.fetch else " (stepper in the stream)"),
                        result["on_screen"])):
        p50, p95, top = (np.percentile(lat, 50), np.percentile(lat, 95), lat.max()) if lat.size else (np.nan,) * 3
        print(f"| {label} | {lat.size} | {p50:.1f} | {p95:.1f} | {top:.1f} |")
    p95 = np.percentile(result["on_screen"], 95) if result["on_screen"].size else np.nan
    for line in result["errors"][:10]:
        print(f"  error: {line}")
    if result["missing"]:
        print(f"  missing deliveries: {result['missing']}")
    ok = errors == 0 and result["joined"] == args.students and p95 <= TARGET_P95_MS
    print(f"\nTarget p95 ≤ {TARGET_P95_MS:.0f} ms, 0 errors: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
