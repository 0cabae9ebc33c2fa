"""Several screens on one training: what N open training streams cost the server.

1. Starts the real server (uvicorn, one worker) on a free loopback port.
2. One session starts an MNIST training and opens ``--streams`` event streams on its page's
   ``/train/jobs/{id}/events`` (a projector, the assistant's laptop, a few tabs of one
   browser; with ``--api``: on ``/api/train/{id}/events``), reading every event for
   ``--seconds`` seconds.
3. Meanwhile a well-behaved student (another session) asks ``/conv?preset=seed`` every
   100 ms.
4. Prints the server process's CPU time over the window (utime + stime from /proc; the
   training itself runs in a child process and is not counted), the student's p50/p95, and
   the events each stream got.

Loopback only; every loop is bounded in time. ``python benchmarks/bench_train_streams.py``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import free_port, stop_server, wait_until_up  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (its threads included, its children not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def watch(client: httpx.AsyncClient, url: str, deadline: float, counts: list[int], i: int) -> None:
    async with client.stream("GET", url, headers={"accept": "text/event-stream"}) as response:
        if response.status_code != 200:
            counts[i] = -response.status_code
            return
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        counts[i] += 1
        except TimeoutError:
            pass


async def student(base: str, deadline: float, times: list[float], errors: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            r = await client.get("/conv", params={"preset": "seed"})
            times.append(time.perf_counter() - start)
            if r.status_code != 200:
                errors.append(str(r.status_code))
            await asyncio.sleep(0.1)


async def run(base: str, pid: int, streams: int, seconds: float, api: bool) -> dict:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        job = await client.post("/api/train", json={"dataset": "mnist", "epochs": 30})
        job.raise_for_status()
        job_id = job.json()["id"]
        await client.get(f"/train/jobs/{job_id}")  # the page once, as a browser would
        cpu0, start = cpu_seconds(pid), time.monotonic()
        deadline = start + seconds
        counts = [0] * streams
        times: list[float] = []
        errors: list[str] = []
        url = f"/api/train/{job_id}/events" if api else f"/train/jobs/{job_id}/events"
        await asyncio.gather(*(watch(client, url, deadline, counts, i)
                               for i in range(streams)), student(base, deadline, times, errors))
        cpu = cpu_seconds(pid) - cpu0
        wall = time.monotonic() - start
        await client.delete(f"/api/train/{job_id}")
    times.sort()
    return {"cpu": cpu, "wall": wall, "counts": counts, "errors": errors, "n": len(times),
            "p50": times[len(times) // 2] * 1000, "p95": times[int(len(times) * 0.95)] * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--api", action="store_true", help="watch /api/train/{id}/events instead of the page's stream")
    args = parser.parse_args()
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_train_streams_{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "cnnlab.app.main:app", "--host", "127.0.0.1", "--port",
                                 str(port), "--workers", "1"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(proc, port, log)
        r = asyncio.run(run(f"http://127.0.0.1:{port}", proc.pid, args.streams, args.seconds, args.api))
    finally:
        stop_server(proc)
    kind = "API" if args.api else "page"
    print(f"{args.streams} {kind} streams on one MNIST training for {r['wall']:.1f} s: server CPU {r['cpu']:.2f} s "
          f"({100 * r['cpu'] / r['wall']:.0f} % of a core); /conv?preset=seed p50 {r['p50']:.0f} ms, "
          f"p95 {r['p95']:.0f} ms ({r['n']} requests, {len(r['errors'])} errors); events per stream {r['counts']}; "
          f"load average {os.getloadavg()[0]:.2f}")
    return 1 if r["errors"] or min(r["counts"]) <= 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
