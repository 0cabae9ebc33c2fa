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
5. Reports the delivery latency — from just before the assistant's POST is sent to the
   event arriving at a student, for every (student, step) — as p50/p95/max, the assistant's
   POST round trip, and errors: failed requests, streams that broke, and steps some student
   never received (all must be 0).

Target (issue 6): p95 ≤ 250 ms with 100 students; exit status 1 when missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from urllib.parse import parse_qsl, urlsplit

import httpx
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_P95_MS = 250.0
# One TLS context for every client (never used on plain http): httpx would otherwise build
# one per client, ~40 ms each, stalling the event loop while 100 students join.
SSL_CONTEXT = ssl.create_default_context()
# How long after the last step a late event still counts (then it is missing: an error).
GRACE_S = 3.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    env = dict(os.environ, CNNLAB_MAX_CLASS_STUDENTS="100000")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port",
                             str(port), "--log-level", "warning"], cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("the server did not start")


def view_url(k: int) -> str:
    return f"/conv?preset=seed&kernel=seed&step={k}"


async def student(i: int, base: str, code: str, arrivals: list[dict], errors: list[str], connected: list[int]) -> None:
    timeout = httpx.Timeout(10.0, read=None)
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
                name = None
                async for line in r.aiter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name == "view":
                        now = time.perf_counter()
                        step = dict(parse_qsl(urlsplit(line[6:]).query)).get("step")
                        if step is not None:
                            arrivals[i].setdefault(int(step), now)
                        name = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 — every failure is counted and reported
            errors.append(f"student {i}: {type(exc).__name__}: {exc}")


async def run(base: str, n: int, steps: int, interval: float) -> dict:
    errors: list[str] = []
    arrivals: list[dict] = [{} for _ in range(n)]
    connected = [0]
    sent: dict[int, float] = {}
    post_ms: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=10.0, verify=SSL_CONTEXT) as host:
        response = await host.post("/class", follow_redirects=False)
        code = response.headers["location"].split("/")[2]
        await host.post(f"/api/class/{code}/view", json={"url": view_url(0)})
        tasks = [asyncio.create_task(student(i, base, code, arrivals, errors, connected)) for i in range(n)]
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
        while time.perf_counter() < end and any(not all(k in a for k in sent) for a in arrivals):
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await host.delete(f"/api/class/{code}")
    latencies, missing = [], 0
    for a in arrivals:
        for k, t0 in sent.items():
            if k in a:
                latencies.append((a[k] - t0) * 1000)
            else:
                missing += 1
    return {"latencies": np.array(latencies), "missing": missing, "errors": errors, "joined": joined,
            "post_ms": np.array(post_ms), "sent": len(sent)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between the assistant's steps")
    args = parser.parse_args()
    port = free_port()
    proc = start_server(port)
    try:
        result = asyncio.run(run(f"http://127.0.0.1:{port}", args.students, args.steps, args.interval))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    lat = result["latencies"]
    p50, p95, top = (np.percentile(lat, 50), np.percentile(lat, 95), lat.max()) if lat.size else (np.nan,) * 3
    errors = len(result["errors"]) + result["missing"]
    print(f"\nOne class: {args.students} students on live event streams, the assistant stepping every "
          f"{args.interval * 1000:.0f} ms ({result['sent']} steps); uvicorn 1 worker, {os.cpu_count()} CPU cores\n")
    print("| students connected | deliveries | p50 (ms) | p95 (ms) | max (ms) | assistant POST p50 (ms) | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    post = result["post_ms"]
    print(f"| {result['joined']} | {lat.size} | {p50:.1f} | {p95:.1f} | {top:.1f} | "
          f"{np.percentile(post, 50) if post.size else float('nan'):.1f} | {errors} |")
    for line in result["errors"][:10]:
        print(f"  error: {line}")
    if result["missing"]:
        print(f"  missing deliveries: {result['missing']}")
    ok = errors == 0 and result["joined"] == args.students and p95 <= TARGET_P95_MS
    print(f"\nTarget p95 ≤ {TARGET_P95_MS:.0f} ms, 0 errors: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
