"""A class stepping through the convolution stepper at once: time per step, client and server side.

    python benchmarks/bench_stepper_load.py [--students 50] [--duration 30] [--client wrk|python]
                                            [--think 100 300] [--seed 0]

What it does, on loopback only, and it stops by itself (one run ≈ duration + 15 s):

1. Starts the real server as a subprocess on a free port: uvicorn with one worker and its
   default settings (access log included), as ``cnnlab`` runs it. The app is wrapped in a
   thin ASGI layer, in the subprocess only, that notes how long each request spent inside
   the app (from the request reaching the app to the last byte handed to uvicorn): the
   server-side time. Nothing is added to the app itself. That time leaves out the wait
   for the event loop before the app is called (queueing), which the client's round trip
   on loopback includes; so the target is checked on both.
2. Makes up one student per ``--students``: the slides' matrix or a sample picture (camera,
   chelsea, coffee, astronaut, rocket, digit) at working size 8–32, gray or RGB, a kernel
   preset (some 5×5, some two filters), stride, padding, dilation, mode, ReLU, bias. Each
   student opens the page (a normal GET, timed, not counted as a step) and reads the
   stepper form, as the browser does.
3. Gives each student a walk (mostly →, some ←, a click on an output cell, Home, End) and
   turns it into exactly the request the page sends for a step: htmx submits
   ``form#conv-stepper`` with ``hx-get`` — ``GET /conv?<the form's hidden state>&step=k``
   with ``HX-Request: true``, ``HX-Target: conv-stepper``, ``HX-Trigger: conv-stepper``,
   ``HX-Current-URL`` and a browser's ``Accept-Encoding``.
4. Replays the walks for ``--duration`` seconds with a think time drawn uniformly from
   ``--think`` (ms) after every answer, one keep-alive connection per student, a 2 s
   timeout. The load generator runs in its own process:
   - ``wrk`` (Debian package ``wrk``; the default when installed): C, event-driven, light on
     the CPU. Its Lua script cycles through the walks interleaved step by step, so the
     server sees the 50 students' states mixed as in class, though one connection is not
     tied to one student; all connections send their first request at once.
   - ``python``: an asyncio client using raw sockets, one task per student that follows its
     own walk; starts are spread over the first think time.
5. Reports client-side latency (p50/p95/p99/max), requests/s, errors (non-200 answers,
   timeouts, socket errors: all must be 0), the server-side time per step (overall and by
   input), and the CPU each process used.

Target (issue 3): server p95 ≤ 30 ms per step with 50 students, 0 errors. Checked here on
the server-side time and, stricter, on the client's round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from urllib.parse import parse_qsl, urlencode

import numpy as np
from _server import StepperForm, free_port, stop_server, wait_until_up

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_SERVER_P95_MS = 30.0
TIMEOUT_S = 2.0
BROWSER_HEADERS = {
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate, br, zstd",
    "Accept-Language": "es-CL,es;q=0.9,en;q=0.8",
    "HX-Request": "true",
    "HX-Target": "conv-stepper",
    "HX-Trigger": "conv-stepper",
}
SAMPLES = ("camera", "chelsea", "coffee", "astronaut", "rocket", "digit")
SIZES = (8, 10, 12, 16, 20, 24, 28, 32)
PRESETS = ("seed", "identity", "box_blur", "gaussian", "sharpen", "sobel_x", "sobel_y", "laplacian", "emboss", "outline")
GAUSS_5 = "1,4,6,4,1;4,16,24,16,4;6,24,36,24,6;4,16,24,16,4;1,4,6,4,1"
LOG_5 = "0,0,-1,0,0;0,-1,-2,-1,0;-1,-2,16,-2,-1;0,-1,-2,-1,0;0,0,-1,0,0"
PCTS = (50, 90, 95, 99)


# ============================================================================== the server


class TimedApp:
    """ASGI wrapper noting, per HTTP request, the wall-clock start, milliseconds inside the
    app, whether it was a step (``HX-Target: conv-stepper``), the status and the query."""

    def __init__(self, app) -> None:
        self.app = app
        self.records: list[tuple] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        wall = time.time()
        step = (b"hx-target", b"conv-stepper") in scope["headers"]
        status = 0

        async def timed_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.records.append((wall, (time.perf_counter() - t0) * 1000, step, status,
                                     scope.get("query_string", b"").decode("latin-1")))

        await self.app(scope, receive, timed_send)


def serve(port: int, out_path: str) -> None:
    """The server subprocess: uvicorn as ``cnnlab`` starts it, the app wrapped in TimedApp;
    on SIGINT uvicorn shuts down and the records are written to ``out_path``."""
    import uvicorn

    sys.path.insert(0, ROOT)
    from cnnlab.app.main import app

    timed = TimedApp(app)
    try:
        uvicorn.Server(uvicorn.Config(timed, host="127.0.0.1", port=port)).run()
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it stopped on
        pass
    finally:
        with open(out_path, "w") as f:
            json.dump(timed.records, f)


def start_server(port: int, out_path: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(port), out_path],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wait_until_up(proc, port)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ============================================================================== the students


def student_params(rng: random.Random, i: int) -> dict[str, str]:
    """One student's view, as it would be shared in a link."""
    p: dict[str, str] = {}
    if i % 6 == 0:
        p["preset"] = "seed"
    else:
        p["image"] = SAMPLES[i % len(SAMPLES)]
        p["size"] = str(rng.choice(SIZES))
        p["color"] = rng.choice(("gray", "rgb"))
    roll = rng.random()
    if roll < 0.15:
        p["kernel"] = rng.choice((GAUSS_5, LOG_5))
    elif roll < 0.3:
        p["kernel"] = "|".join(rng.sample(PRESETS, 2))
    else:
        p["kernel"] = rng.choice(PRESETS)
    p["stride"] = str(rng.choice((1, 1, 1, 2, 3)))
    p["padding"] = rng.choice(("valid", "valid", "same", "1", "2"))
    p["dilation"] = str(rng.choice((1, 1, 1, 1, 2)))
    if rng.random() < 0.25:
        p["mode"] = "conv"
    if rng.random() < 0.2:
        p["relu"] = "1"
    if rng.random() < 0.2:
        p["bias"] = str(rng.choice((-10, 1, 5)))
    return p


def open_page(port: int, params: dict[str, str]) -> tuple[list[tuple[str, str]], int, float] | None:
    """GET the page as a browser's first visit; (form fields, steps, ms), or None when this
    view has no stepper (e.g. the kernel does not fit)."""
    path = "/conv?" + urlencode(params)
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers={"Accept": "text/html", "Accept-Language": "es"})
    resp = conn.getresponse()
    body = resp.read()
    ms = (time.perf_counter() - t0) * 1000
    conn.close()
    if resp.status != 200:
        raise SystemExit(f"{path} answered {resp.status}")
    form = StepperForm("conv-stepper")
    form.feed(body.decode("utf-8"))
    if form.steps is None:
        return None
    return form.fields, form.steps, ms


def walk(rng: random.Random, steps: int, n: int) -> list[int]:
    """n steps a student takes: mostly → (and back to the start after the last), some ←, a
    click on an output cell, Home, End."""
    k, out = 0, []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.78:
            k = k + 1 if k + 1 < steps else 0
        elif roll < 0.88:
            k = max(k - 1, 0)
        elif roll < 0.96:
            k = rng.randrange(steps)
        elif roll < 0.98:
            k = 0
        else:
            k = steps - 1
        out.append(k)
    return out


def make_students(port: int, count: int, seed: int, length: int) -> tuple[list[list[tuple[str, str]]], list[dict]]:
    """Per student, its walk as (path, HX-Current-URL) pairs; and what each one opened."""
    walks, opened = [], []
    base = f"http://127.0.0.1:{port}"
    for i in range(count):
        rng = random.Random(seed * 100_003 + i)  # a student's view and walk do not depend on the others'
        for _attempt in range(20):
            params = student_params(rng, i)
            page = open_page(port, params)
            if page is not None:
                break
        else:
            raise SystemExit(f"no view with a stepper found for student {i}")
        fields, steps, ms = page
        current = f"{base}/conv?{urlencode(params)}"
        requests = []
        for k in walk(rng, steps, length):
            path = "/conv?" + urlencode(fields + [("step", str(k))])
            requests.append((path, current))
            current = base + path
        walks.append(requests)
        opened.append({"params": params, "steps": steps, "ms": ms, "group": group_of(dict(fields))})
    return walks, opened


def group_of(params: dict[str, str]) -> str:
    if "image" not in params:
        return "seed 5×5"
    size = int(params.get("size", "10"))
    band = "8–16" if size <= 16 else "20–32"
    return f"{params.get('color', 'gray')} {band} px"


# ============================================================================== the load generators


WRK_SCRIPT = r"""
-- Cycles through the students' step requests (one per line: path TAB HX-Current-URL).
local paths, currents, n, i = {}, {}, 0, 0
local think_lo, think_hi = 100, 300
local threads = {}
non200 = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    local p, c = line:match("^(%S+)\t(%S+)$")
    n = n + 1
    paths[n], currents[n] = p, c
  end
  think_lo, think_hi = tonumber(args[2]), tonumber(args[3])
  math.randomseed(tonumber(args[4]))
  HEADERS
end

function request()
  i = i % n + 1
  wrk.headers["HX-Current-URL"] = currents[i]
  return wrk.format("GET", paths[i])
end

function delay()
  return math.random(think_lo, think_hi)
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non200") or 0)
  end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    summary.bytes, e.connect, e.read, e.write, e.status, e.timeout, bad))
  for _, p in ipairs({50, 90, 95, 99}) do
    io.write(string.format("PCT %d %d\n", p, latency:percentile(p)))
  end
  io.write(string.format("MAX %d\n", latency.max))
  io.write(string.format("MEAN %f\n", latency.mean))
end
"""


def run_wrk(port: int, walks: list, duration: int, think: tuple[int, int], seed: int, workdir: str) -> dict:
    """Interleave the walks step by step into one list and let wrk replay it."""
    lines = []
    for k in range(max(len(w) for w in walks)):
        for w in walks:
            if k < len(w):
                lines.append(f"{w[k][0]}\t{w[k][1]}")
    urls = os.path.join(workdir, "steps.tsv")
    with open(urls, "w") as f:
        f.write("\n".join(lines) + "\n")
    headers = "\n  ".join(f'wrk.headers["{k}"] = "{v}"' for k, v in BROWSER_HEADERS.items())
    script = os.path.join(workdir, "steps.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT.replace("HEADERS", headers))
    cmd = ["wrk", "-t1", f"-c{len(walks)}", f"-d{duration}s", f"--timeout={TIMEOUT_S:g}s", "-s", script,
           f"http://127.0.0.1:{port}", "--", urls, str(think[0]), str(think[1]), str(seed)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = {"client": "wrk 1 thread", "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}
    for line in out.splitlines():
        parts = line.split()
        if parts[:1] == ["RESULT"]:
            n, dur_us, nbytes, connect, read, write, status, timeout, bad = map(int, parts[1:])
            res.update(requests=n, seconds=dur_us / 1e6, bytes=nbytes, timeouts=timeout,
                       socket_errors=connect + read + write, non200=max(bad, status))
        elif parts[:1] == ["PCT"]:
            res[f"p{parts[1]}"] = int(parts[2]) / 1000
        elif parts[:1] == ["MAX"]:
            res["max"] = int(parts[1]) / 1000
        elif parts[:1] == ["MEAN"]:
            res["mean"] = float(parts[1]) / 1000
    if "requests" not in res:
        raise SystemExit(f"wrk printed no result:\n{out}")
    return res


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
        return status, len(body)
    size = 0
    while True:  # chunked
        chunk = int((await reader.readline()).strip(), 16)
        await reader.readexactly(chunk + 2)  # the chunk and its CRLF
        size += chunk
        if chunk == 0:
            return status, size


async def _students(port: int, walks: list, duration: float, think: tuple[int, int], seed: int) -> dict:
    latencies: list[float] = []
    errors = {"non200": 0, "timeouts": 0, "socket_errors": 0}
    nbytes = 0
    start = time.monotonic()
    deadline = start + duration
    extra = "".join(f"{k}: {v}\r\n" for k, v in BROWSER_HEADERS.items())

    async def student(n: int, requests: list) -> None:
        nonlocal nbytes
        rng = random.Random(seed * 1000 + n)
        await asyncio.sleep(rng.uniform(0, think[1]) / 1000)
        reader = writer = None
        i = 0
        while time.monotonic() < deadline:
            path, current = requests[i % len(requests)]
            i += 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                t0 = time.perf_counter()
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}HX-Current-URL: {current}\r\n\r\n"
                             .encode("latin-1"))
                status, size = await asyncio.wait_for(_read_response(reader), TIMEOUT_S)
                if time.monotonic() <= deadline:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    nbytes += size
                    errors["non200"] += status != 200
            except asyncio.TimeoutError:
                errors["timeouts"] += 1
                writer.close()
                writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors["socket_errors"] += 1
                if writer is not None:
                    writer.close()
                writer = None
            await asyncio.sleep(rng.uniform(*think) / 1000)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(student(n, w) for n, w in enumerate(walks)))
    a = np.array(latencies)
    res = {"requests": len(a), "seconds": duration, "bytes": nbytes, **errors,
           "max": float(a.max()), "mean": float(a.mean())}
    res.update({f"p{p}": float(np.percentile(a, p)) for p in PCTS})
    return res


def run_python(port: int, walks: list, duration: int, think: tuple[int, int], seed: int, workdir: str) -> dict:
    """The asyncio client in its own process (so it never competes with this one's GIL)."""
    job = os.path.join(workdir, "walks.json")
    result = os.path.join(workdir, "client.json")
    with open(job, "w") as f:
        json.dump({"port": port, "walks": walks, "duration": duration, "think": think, "seed": seed}, f)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, os.path.abspath(__file__), "--client-process", job, result], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(result) as f:
        res = json.load(f)
    res["client"] = "python asyncio"
    res["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return res


def client_process(job_path: str, result_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    res = asyncio.run(_students(job["port"], job["walks"], job["duration"], tuple(job["think"]), job["seed"]))
    with open(result_path, "w") as f:
        json.dump(res, f)


# ============================================================================== the report


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")


def report(args, opened: list[dict], client: dict, records: list, t_start: float, t_end: float,
           server_cpu: float, wall: float) -> bool:
    steps = [r for r in records if r[2] and t_start <= r[0] <= t_end]
    ms = [r[1] for r in steps]
    bad_server = sum(1 for r in steps if r[3] != 200)
    errors = client["non200"] + client["timeouts"] + client["socket_errors"]
    ok = (errors == 0 and bad_server == 0 and pct(ms, 95) <= TARGET_SERVER_P95_MS
          and client["p95"] <= TARGET_SERVER_P95_MS)
    print(f"\n{len(opened)} students, {args.duration} s, think {args.think[0]}–{args.think[1]} ms, "
          f"client: {client['client']}, server: uvicorn 1 worker, {os.cpu_count()} CPU cores\n")
    print("| per step | client (round trip) | server (inside the app) |")
    print("|---|---:|---:|")
    print(f"| steps answered | {client['requests']} | {len(ms)} |")
    for p in PCTS[:1] + PCTS[2:]:
        print(f"| p{p} | {client[f'p{p}']:.1f} ms | {pct(ms, p):.1f} ms |")
    print(f"| max | {client['max']:.1f} ms | {max(ms, default=float('nan')):.1f} ms |")
    print(f"| steps/s | {client['requests'] / client['seconds']:.0f} | {len(ms) / (t_end - t_start):.0f} |")
    print(f"| errors (non-200 / timeouts / socket) | {client['non200']} / {client['timeouts']} / "
          f"{client['socket_errors']} | {bad_server} non-200 |")
    print(f"| CPU used (share of one core) | {client['cpu_s'] / wall:.0%} | {server_cpu / wall:.0%} |")
    print(f"| KB per step (as sent) | {client['bytes'] / max(client['requests'], 1) / 1024:.1f} | |")

    groups: dict[str, list[float]] = {}
    for r in steps:
        groups.setdefault(group_of(dict(parse_qsl(r[4]))), []).append(r[1])
    print("\n| input | students | steps | server p50 | server p95 | server p99 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in sorted(groups):
        n = sum(1 for o in opened if o["group"] == name)
        g = groups[name]
        print(f"| {name} | {n} | {len(g)} | {pct(g, 50):.1f} ms | {pct(g, 95):.1f} ms | {pct(g, 99):.1f} ms |")
    loads = [o["ms"] for o in opened]
    print(f"\nOpening the {len(opened)} pages first (one after another, each view's first load, not counted "
          f"above): median {pct(loads, 50):.1f} ms, max {max(loads):.1f} ms.")
    verdict = "met" if ok else "MISSED"
    print(f"Target (p95 ≤ {TARGET_SERVER_P95_MS:g} ms per step inside the app and round trip, 0 errors): {verdict}.")
    return ok


# ============================================================================== main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=50)
    parser.add_argument("--duration", type=int, default=30, help="seconds of stepping (default %(default)s)")
    parser.add_argument("--think", type=int, nargs=2, default=(100, 300), metavar=("MIN_MS", "MAX_MS"))
    parser.add_argument("--client", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 600 or not 1 <= args.students <= 500:
        raise SystemExit("--duration must be 1–600 s and --students 1–500")
    if args.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --client python")
    # Enough steps that no student runs out: at most one per think time.
    length = args.duration * 1000 // max(args.think[0], 1) + 10
    with tempfile.TemporaryDirectory(prefix="cnnlab-load-") as workdir:
        port = free_port()
        records_path = os.path.join(workdir, "server.json")
        server = start_server(port, records_path)
        try:
            walks, opened = make_students(port, args.students, args.seed, length)
            run = run_wrk if args.client == "wrk" else run_python
            cpu0, t_start = cpu_seconds(server.pid), time.time()
            client = run(port, walks, args.duration, tuple(args.think), args.seed, workdir)
            cpu1, t_end = cpu_seconds(server.pid), time.time()
        finally:
            stop_server(server, signal.SIGINT, 20)
        with open(records_path) as f:
            records = json.load(f)
    ok = report(args, opened, client, records, t_start, t_end, cpu1 - cpu0, t_end - t_start)
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1:2] == ["--client-process"]:
        client_process(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
