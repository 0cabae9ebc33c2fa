"""Soak: a class on every page for minutes, with trainings running and uploads mixed in.

    python benchmarks/soak.py [--duration 120] [--students 60] [--trainers 4] [--running 4]
                              [--per-address 3] [--no-attacker] [--check-cleanup] [--quick]
                              [--seed 0] [--json PATH]

What it does, on loopback only, and it stops by itself (one run ≈ duration + 10 s, plus
~35 s with ``--check-cleanup``):

1. Starts the real server as a subprocess on a free port, as ``cnnlab`` runs it (app/server.py:
   one uvicorn worker with read timeouts and connection caps; access log on), with its own
   upload and data folders and at most ``--running`` trainings at once
   (``CNNLAB_MAX_RUNNING_JOBS``; the default 4 keeps four training processes busy on two
   cores). Every other setting is the default, rate limits included.
2. Every simulated person has a loopback source address (the server listens on 127.0.0.1),
   so per-address limits see a room, not one client: ``--per-address`` students share each
   of 127.0.0.2, 127.0.0.3, … (phones behind a school's Wi-Fi), each trainer has one of
   127.0.1.x, the assistant 127.0.2.1, the attacker 127.0.3.1.
3. An assistant starts a class (benchmarks/_soak_class.py), keeps its projector's event
   stream open and, until the end, shows a step of the seed convolution, asks what comes
   next, reads the histogram, reveals the answer and closes the question.
4. ``--students`` students, each with a session of its own (its own cookies), pick an
   activity, do it, and think 1–3 s, until ``--duration`` is over. Activities cover every
   page: ``/``, ``/grid``, ``/local``, ``/conv?preset=seed`` and then its step requests
   (``HX-Request``, the stepper form's hidden state, as htmx sends them), ``/conv`` on a
   sample photo and its steps, ``/pool`` and its steps, ``/activation``, ``/pipeline``,
   ``/train``, ``/practice`` and ``/class`` when the app has them, the JSON API
   (``/api/conv``, ``/api/pool``, ``/api/softmax``) and uploads: a small PNG or JPEG made
   with Pillow, sent to ``/api/images`` (then viewed in ``/conv`` and as
   ``/images/<id>.png``) or through the /conv page's upload form; and the class: its follow
   page, its screen (event stream) for a few seconds, and an answer to an open question (a
   409 when the assistant closed it meanwhile is expected, counted apart).
5. ``--trainers`` simulated trainers start trainings and follow them to the end, then ask
   the model for a prediction and start again: half MNIST (which keeps the cores busy),
   half the 8×8 digits; half through the JSON API and its event stream
   (``/api/train/<id>/events``), half through the /train page's form and its event stream.
   Starts are rate-limited per session, so each trainer has three sessions and moves to
   the next one on a 429 (counted apart, as expected).
6. One attacker (``--no-attacker`` leaves it out) cycles through issue 12's attacks at a
   modest rate, each bounded in count, until the end: cookie-less joins of the class each
   answering 666, cookie-less ``POST /class``, guessed class codes, cookie-less uploads
   (1024² noise) and training starts, ``/api/conv`` with 64 kernels of 15×15 and padding 64
   on a 1024² upload, a 16 MB ``/predict`` body, 100k nested ``[`` as JSON, and idle and
   half-sent sockets. Its refusals (400, 403, 404, 409, 413, 414, 422, 429) are counted
   apart, by status; a 5xx, a timeout, a dropped connection or a socket still open 25 s
   later (past every read timeout) is an error.
7. Samples the memory every 0.5 s from ``/proc``: the server's ``VmRSS`` and ``VmHWM``
   (peak), and those of every training process it starts (children of the server). The
   server grows while its caches fill, each bounded by bytes: feature maps (192 MB,
   app/conv_view.py), PNGs (48 MB) and pixel arrays (64 MB, app/images.py); with the lesson's
   fixed views the feature maps level off near 90 MB, and new uploads keep adding some.
8. With ``--check-cleanup`` the server runs with short times to live (uploads and finished
   jobs: 20 s); after the load, nothing is asked for a while, then it counts the upload
   files left on disk, the jobs the periodic cleanup forgot (its log lines) and the jobs
   each trainer's session still lists: all must be gone.

Reports requests, errors (non-2xx/3xx answers other than 429, timeouts, connection errors),
429s apart, p50/p95/p99/max per page, the class's answers (how many were the attacker's
666), what the attacker got, trainings, memory, cleanup. Exit status 1 when
there was any error (the attacker's included), a training failed, or the cleanup left
something behind.
``--quick`` is 15 s with 20 students, for development.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
from _server import StepperForm, free_port, wait_until_up
from _soak_class import Attacker, AttackStats, Teacher, on_address, visit_class
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 10.0
STREAM_READ_TIMEOUT_S = 30.0  # the event streams send a heartbeat every 15 s
THINK_S = (1.0, 3.0)
STEP_THINK_S = (0.3, 1.0)
SAMPLE_EVERY_S = 0.5
CLEANUP_TTL_S = 20
UPLOAD_FILE = re.compile(r"[0-9a-f]{32}\.png")
CLEANUP_LINE = re.compile(r"cleanup: (\d+) expired uploads deleted, (\d+) finished jobs forgotten")
BROWSER = {"Accept-Language": "es-CL,es;q=0.9,en;q=0.8", "Accept-Encoding": "gzip, deflate"}
SAMPLES = ("camera", "chelsea", "coffee", "astronaut", "rocket", "digit")
KERNELS = ("seed", "sobel_x", "sobel_y", "laplacian", "gaussian", "sharpen", "emboss", "box_blur")
SEED_INPUT = [[35, 40, 41, 45, 50], [40, 40, 42, 46, 52], [42, 46, 50, 55, 55], [48, 52, 56, 58, 60],
              [56, 60, 65, 70, 75]]
SEED_KERNEL = [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]
PCTS = (50, 95, 99)


# ============================================================================== the server


# The server as ``cnnlab`` runs it (app/cli.py: app/server.py's read timeouts and connection
# caps), with the app's INFO lines (the cleanup's counts) in its log too.
SERVE = ("import logging, sys; from app.main import app; from app.server import make_server; "
         "server = make_server(app, '127.0.0.1', int(sys.argv[1])); "
         "logging.getLogger('app').setLevel(logging.INFO); server.run()")


def start_server(port: int, workdir: Path, args: argparse.Namespace) -> subprocess.Popen:
    env = {**os.environ, "CNNLAB_UPLOAD_DIR": str(workdir / "uploads"), "CNNLAB_DATA_DIR": str(workdir / "data"),
           "CNNLAB_MAX_RUNNING_JOBS": str(args.running)}
    if args.check_cleanup:
        env.update(CNNLAB_UPLOAD_TTL_SECONDS=str(CLEANUP_TTL_S), CNNLAB_JOB_TTL_SECONDS=str(CLEANUP_TTL_S))
    cmd = [sys.executable, "-c", SERVE, str(port)]
    with open(workdir / "access.log", "wb") as out, open(workdir / "server.log", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
    return wait_until_up(proc, port, log=workdir / "server.log")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ============================================================================== memory


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in bytes ({} when it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value, _unit = line.split()
                    out[name[:-1]] = int(value) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return out


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (training processes are started from the server's
    relay threads, so /proc/<pid>/task/*/children would miss some: read every stat)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Memory:
    server_pid: int
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, server RSS, children RSS, n
    server_hwm: int = 0
    child_hwm: dict[int, int] = field(default_factory=dict)

    def sample(self, t: float) -> None:
        server = proc_status(self.server_pid)
        self.server_hwm = max(self.server_hwm, server.get("VmHWM", 0))
        children_rss, n = 0, 0
        for pid in children_of(self.server_pid):
            status = proc_status(pid)
            if status:
                n += 1
                children_rss += status["VmRSS"]
                self.child_hwm[pid] = max(self.child_hwm.get(pid, 0), status["VmHWM"])
        self.samples.append((t, server.get("VmRSS", 0), children_rss, n))

    def server_rss_at(self, t: float) -> int:
        """The server's RSS at the first sample at or after ``t``."""
        return next((rss for ts, rss, _c, _n in self.samples if ts >= t), self.samples[-1][1])

    async def run(self, t0: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample(time.monotonic() - t0)
            try:
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)
            except TimeoutError:
                pass


# ============================================================================== measuring


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    limited: Counter = field(default_factory=Counter)  # 429 per label
    expected: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # other expected refusals
    examples: list[str] = field(default_factory=list)  # the first few errors, for the report
    trainings: Counter = field(default_factory=Counter)

    def error(self, label: str, kind: str, detail: str) -> None:
        self.errors[label][kind] += 1
        if len(self.examples) < 12:
            self.examples.append(f"{label}: {kind}: {detail[:200]}")

    async def request(self, client: httpx.AsyncClient, label: str, method: str, url: str,
                      expect: tuple[int, ...] = (), **kwargs) -> httpx.Response | None:
        """One request, timed to its last byte; None when it failed (counted). A status in
        ``expect`` is a refusal a real user meets too (counted apart, like 429s)."""
        t = time.perf_counter()
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            self.error(label, "timeout", url)
            return None
        except httpx.HTTPError as e:
            self.error(label, "connection", f"{url}: {type(e).__name__} {e}")
            return None
        ms = (time.perf_counter() - t) * 1000
        self.latencies[label].append(ms)
        if response.status_code == 429:
            self.limited[label] += 1
        elif response.status_code in expect:
            self.expected[label][response.status_code] += 1
        elif response.status_code >= 400:
            self.error(label, str(response.status_code), f"{method} {url}: {response.text[:160]}")
            return None
        return response

    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values()) + sum(
            c["timeout"] + c["connection"] for c in self.errors.values())

    def error_count(self) -> int:
        return sum(sum(c.values()) for c in self.errors.values())


# ============================================================================== what students do


def picture(rng: random.Random) -> tuple[bytes, str, str]:
    """A small made-up picture: (bytes, file name, content type), PNG or JPEG, gray or RGB."""
    # At most 4:1, so the 16-pixel working size the students view it at leaves a 3×3 kernel
    # room (a 160×16 picture shrinks to 16×2, which the page rightly refuses with a 422).
    w = rng.randint(16, 160)
    h = rng.randint(max(16, w // 4), min(160, 4 * w))
    mode = rng.choice(("L", "RGB"))
    noise = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(noise).convert(mode)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(1, 4)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = (x0, y0, min(w - 1, x0 + rng.randint(4, w)), min(h - 1, y0 + rng.randint(4, h)))
        fill = rng.randrange(256) if mode == "L" else tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    buf = io.BytesIO()
    if rng.random() < 0.5:
        img.save(buf, "PNG")
        return buf.getvalue(), "drawing.png", "image/png"
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue(), "photo.jpg", "image/jpeg"


class Student:
    def __init__(self, i: int, base: str, address: str, stats: Stats, rng: random.Random, extra_pages: list[str],
                 class_code: str | None) -> None:
        self.i, self.base, self.stats, self.rng = i, base, stats, rng
        self.extra_pages, self.class_code = extra_pages, class_code
        self.client = httpx.AsyncClient(base_url=base, headers=BROWSER, timeout=TIMEOUT_S, follow_redirects=True,
                                        transport=on_address(address, max_connections=2))

    async def think(self, span: tuple[float, float] = THINK_S) -> None:
        await asyncio.sleep(self.rng.uniform(*span))

    async def get(self, label: str, url: str, **kwargs) -> httpx.Response | None:
        return await self.stats.request(self.client, label, "GET", url, **kwargs)

    async def stepper(self, label: str, path: str, url: str, form_id: str, deadline: float) -> None:
        """Open a stepper page, then take a few steps as htmx does (the form's hidden state and
        ``step``, with the htmx headers)."""
        response = await self.get(label, url)
        if response is None:
            return
        form = StepperForm(form_id)
        form.feed(response.text)
        if not form.steps:
            return
        k = 0
        for _ in range(self.rng.randint(2, 8)):
            if time.monotonic() > deadline:
                return
            await self.think(STEP_THINK_S)
            k = k + 1 if self.rng.random() < 0.85 and k + 1 < form.steps else self.rng.randrange(form.steps)
            query = urlencode([(n, v) for n, v in form.fields if n != "step"] + [("step", str(k))])
            headers = {"HX-Request": "true", "HX-Target": form_id, "HX-Trigger": form_id,
                       "HX-Current-URL": f"{self.base}{url}"}
            await self.get(f"{label} step (htmx)", f"{path}?{query}", headers=headers)

    async def conv_photo(self, deadline: float) -> None:
        params = {"image": self.rng.choice(SAMPLES), "size": str(self.rng.choice((8, 12, 16, 24, 32))),
                  "color": self.rng.choice(("gray", "rgb")), "kernel": self.rng.choice(KERNELS)}
        await self.stepper("/conv photo", "/conv", "/conv?" + urlencode(params), "conv-stepper", deadline)

    async def api(self) -> None:
        roll = self.rng.random()
        if roll < 0.4:
            body = {"input": SEED_INPUT, "kernel": SEED_KERNEL, "stride": self.rng.choice((1, 2)),
                    "padding": self.rng.choice((0, 1, "same"))}
            await self.stats.request(self.client, "/api/conv", "POST", "/api/conv", json=body)
        elif roll < 0.7:
            grid = [[self.rng.randint(0, 9) for _ in range(6)] for _ in range(6)]
            body = {"input": grid, "kind": self.rng.choice(("max", "avg", "global_avg")), "size": 2}
            await self.stats.request(self.client, "/api/pool", "POST", "/api/pool", json=body)
        else:
            logits = [round(self.rng.uniform(-3, 3), 2) for _ in range(10)]
            body = {"logits": logits, "label": self.rng.randrange(10)}
            await self.stats.request(self.client, "/api/softmax", "POST", "/api/softmax", json=body)

    async def upload(self) -> None:
        data, name, kind = picture(self.rng)
        if self.rng.random() < 0.7:
            response = await self.stats.request(self.client, "POST /api/images", "POST", "/api/images",
                                                files={"file": (name, data, kind)})
            if response is None or response.status_code != 201:
                return
            image_id = response.json()["id"]
            await self.think(STEP_THINK_S)
            await self.get("/conv upload view", f"/conv?image={image_id}&size=16&color=gray&kernel=sobel_x")
            await self.get("/images/<id>.png", f"/images/{image_id}.png")
        else:  # the page's own upload form, as htmx posts it
            await self.stats.request(self.client, "POST /conv/upload", "POST", "/conv/upload",
                                     files={"file": (name, data, kind)}, data={"state": "kernel=sobel_x&size=16"},
                                     headers={"HX-Request": "true", "HX-Target": "conv-lab"})

    async def run(self, deadline: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, THINK_S[1]))  # a class does not click in unison
        pages = ["/", "/grid", "/local", "/activation", "/pipeline", "/train", *self.extra_pages]
        actions = [("seed", 3), ("photo", 2), ("pool", 2), ("page", 4), ("api", 3), ("upload", 1)]
        if self.class_code is not None:
            actions.append(("class", 2))
        names, weights = zip(*actions)
        try:
            while time.monotonic() < deadline:
                action = self.rng.choices(names, weights)[0]
                if action == "seed":
                    await self.stepper("/conv?preset=seed", "/conv", "/conv?preset=seed", "conv-stepper", deadline)
                elif action == "photo":
                    await self.conv_photo(deadline)
                elif action == "pool":
                    await self.stepper("/pool", "/pool", "/pool", "pool-stepper", deadline)
                elif action == "page":
                    page = self.rng.choice(pages)
                    await self.get(page, page)
                elif action == "api":
                    await self.api()
                elif action == "class":
                    await visit_class(self.client, self.stats, self.class_code, self.rng)
                else:
                    await self.upload()
                await asyncio.sleep(min(self.rng.uniform(*THINK_S), max(0.0, deadline - time.monotonic())))
        finally:
            await self.client.aclose()


# ============================================================================== trainers


class Trainer:
    """Starts a training, follows its event stream to the end, asks the model once, again."""

    SESSIONS = 3

    def __init__(self, i: int, base: str, address: str, stats: Stats, rng: random.Random) -> None:
        self.i, self.stats, self.rng = i, stats, rng
        self.dataset = "mnist" if i % 2 == 0 else "digits"
        self.page = (i // 2) % 2 == 1  # trainers 2, 3 (and 6, 7 …) use the /train page's form
        self.clients = [httpx.AsyncClient(base_url=base, headers=BROWSER, timeout=TIMEOUT_S, follow_redirects=True,
                                          transport=on_address(address)) for _ in range(self.SESSIONS)]
        self.current = 0

    @property
    def client(self) -> httpx.AsyncClient:
        return self.clients[self.current]

    def spec(self) -> dict[str, object]:
        if self.dataset == "mnist":
            return {"dataset": "mnist", "epochs": self.rng.choice((2, 3)), "seed": self.rng.randrange(100)}
        return {"dataset": "digits", "epochs": self.rng.choice((6, 12)), "seed": self.rng.randrange(100)}

    async def start(self) -> str | None:
        spec = self.spec()
        if self.page:
            # The form posted without htmx: 303 to the run's page (followed), or a 4xx page.
            # (With htmx a refusal would come as a 200 panel: htmx swaps only 2xx answers.)
            label = "POST /train/jobs (→ run page)"
            response = await self.stats.request(self.client, label, "POST", "/train/jobs",
                                                data={k: str(v) for k, v in spec.items()})
            if response is not None and response.status_code == 200:
                if response.url.path.startswith("/train/jobs/"):
                    return response.url.path.rsplit("/", 1)[1]
                self.stats.error(label, "no run started", str(response.url))
        else:
            response = await self.stats.request(self.client, "POST /api/train", "POST", "/api/train", json=spec)
            if response is not None and response.status_code == 201:
                return response.json()["id"]
        if response is not None and response.status_code == 429:
            self.current = (self.current + 1) % len(self.clients)  # rate-limited: another session
            self.stats.trainings["429 on start"] += 1
        return None

    async def follow(self, job_id: str, deadline: float) -> str | None:
        """Read the job's event stream to its last event; its status, or None at the deadline."""
        url = f"/train/jobs/{job_id}/events" if self.page else f"/api/train/{job_id}/events"
        label = "SSE /train/jobs/<id>/events" if self.page else "SSE /api/train/<id>/events"
        timeout = httpx.Timeout(TIMEOUT_S, read=STREAM_READ_TIMEOUT_S)
        t = time.perf_counter()
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())), \
                    self.client.stream("GET", url, timeout=timeout, headers={"Accept": "text/event-stream"}) as r:
                if r.status_code != 200:
                    self.stats.error(label, str(r.status_code), url)
                    return "failed"
                async for line in r.aiter_lines():
                    if line.startswith("event: "):
                        name = line[7:].strip()
                        if name in ("done", "stopped", "failed"):
                            self.stats.latencies[label].append((time.perf_counter() - t) * 1000)
                            return name
        except TimeoutError:  # the soak is over before the training
            return None
        except httpx.TimeoutException:
            self.stats.error(label, "timeout", url)
            return "failed"
        except httpx.HTTPError as e:
            self.stats.error(label, "connection", f"{url}: {e}")
            return "failed"
        self.stats.error(label, "stream ended early", url)
        return "failed"

    async def use(self, job_id: str) -> None:
        index = self.rng.randrange(300)
        if self.page:
            await self.stats.request(self.client, "POST /train/jobs/<id>/predict", "POST",
                                     f"/train/jobs/{job_id}/predict", data={"test_index": str(index)},
                                     headers={"HX-Request": "true"})
        else:
            await self.stats.request(self.client, "POST /api/train/<id>/predict", "POST",
                                     f"/api/train/{job_id}/predict", json={"test_index": index, "maps": False})
            await self.stats.request(self.client, "GET /api/train/<id>", "GET", f"/api/train/{job_id}?records=false")

    async def run(self, deadline: float) -> None:
        await asyncio.sleep(self.i * 0.5)
        try:
            while time.monotonic() < deadline:
                job_id = await self.start()
                if job_id is None:
                    await asyncio.sleep(2.0)
                    continue
                self.stats.trainings["started"] += 1
                status = await self.follow(job_id, deadline)
                if status is None:  # the soak is over: stop it, as a student closing the tab would not
                    url = f"/train/jobs/{job_id}" if self.page else f"/api/train/{job_id}"
                    await self.stats.request(self.client, "DELETE (stop at the end)", "DELETE", url)
                    self.stats.trainings["stopped at the end"] += 1
                    break
                self.stats.trainings[status] += 1
                if status == "failed":
                    self.stats.error("training", "failed", job_id)
                await self.use(job_id)
                await asyncio.sleep(self.rng.uniform(0.5, 2.0))
        except Exception:
            for client in self.clients:
                await client.aclose()
            raise

    async def remaining_jobs(self) -> int:
        """Jobs every session of this trainer still lists (asks the server, so it sweeps too)."""
        total = 0
        for client in self.clients:
            response = await self.stats.request(client, "GET /api/train (cleanup check)", "GET", "/api/train")
            if response is not None:
                total += len(response.json()["jobs"])
        return total

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


# ============================================================================== the run


TEACHER_ADDRESS = "127.0.2.1"
ATTACKER_ADDRESS = "127.0.3.1"


def student_address(i: int, per_address: int) -> str:
    """Students 0 … per_address-1 on 127.0.0.2, the next ones on 127.0.0.3, …: a few phones
    behind each address, as on a school's Wi-Fi (the server itself is on 127.0.0.1)."""
    n = 2 + i // per_address
    return f"127.0.{n // 256}.{n % 256}"


def upload_files(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if UPLOAD_FILE.fullmatch(p.name)) if folder.exists() else 0


def cleanup_log(path: Path) -> tuple[int, int, int]:
    """(rounds that swept something, uploads deleted, jobs forgotten) from the server's log."""
    rounds = uploads = jobs = 0
    for m in CLEANUP_LINE.finditer(path.read_text(errors="replace")):
        rounds, uploads, jobs = rounds + 1, uploads + int(m[1]), jobs + int(m[2])
    return rounds, uploads, jobs


async def discover_pages(base: str) -> list[str]:
    """/practice and /class, when this version of the app serves them."""
    found = []
    async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT_S, follow_redirects=True) as client:
        for page in ("/practice", "/class"):
            if (await client.get(page)).status_code == 200:
                found.append(page)
    return found


async def soak(args: argparse.Namespace, port: int, server: subprocess.Popen, workdir: Path) -> dict:
    base = f"http://127.0.0.1:{port}"
    stats = Stats()
    memory = Memory(server.pid)
    extra = await discover_pages(base)
    # Everyone is ready (the class started, the attacker's pictures made) before the clock starts.
    teacher = Teacher(base, TEACHER_ADDRESS, stats, random.Random(args.seed * 1000 + 900))
    code = await teacher.start()
    students = [Student(i, base, student_address(i, args.per_address), stats, random.Random(args.seed * 1000 + i),
                        extra, code) for i in range(args.students)]
    trainers = [Trainer(i, base, f"127.0.1.{1 + i}", stats, random.Random(args.seed * 1000 + 500 + i))
                for i in range(args.trainers)]
    attacker = None
    if args.attacker:
        attacker = Attacker(base, port, ATTACKER_ADDRESS, code, random.Random(args.seed * 1000 + 999))
        await asyncio.to_thread(attacker.prepare)
    load_at_start = os.getloadavg()[0]
    t0 = time.monotonic()
    deadline = t0 + args.duration
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(memory.run(t0, stop_sampling))
    cpu0 = cpu_seconds(server.pid)
    tasks = [asyncio.create_task(s.run(deadline)) for s in students]
    tasks += [asyncio.create_task(t.run(deadline)) for t in trainers]
    if code is not None:
        tasks.append(asyncio.create_task(teacher.run(deadline)))
    if attacker is not None:
        tasks.append(asyncio.create_task(attacker.run(deadline)))
    # Everyone finishes what they were doing; a stream still open 30 s later is a failure.
    done, pending = await asyncio.wait(tasks, timeout=args.duration + 30)
    for task in pending:
        task.cancel()
        stats.error("soak", "task still running 30 s after the end", repr(task))
    for task in done:
        if task.exception() is not None:
            stats.error("soak", "client crashed", repr(task.exception()))
    elapsed = time.monotonic() - t0
    await teacher.end()
    await asyncio.sleep(2.0)  # trainings stopped at the end wind down
    memory.sample(time.monotonic() - t0)
    server_cpu = cpu_seconds(server.pid) - cpu0
    result: dict = {"elapsed": elapsed, "extra_pages": extra, "server_cpu": server_cpu,
                    "load_average": (load_at_start, os.getloadavg()[0]),
                    "addresses": len({student_address(i, args.per_address) for i in range(args.students)}),
                    "class": {"code": code, "questions": teacher.questions, "answers": teacher.answers,
                              "answers_666": teacher.answers_666}}
    if attacker is not None:
        result["attacker"] = attacker.stats

    if args.check_cleanup:
        files_at_end = upload_files(workdir / "uploads")
        wait = CLEANUP_TTL_S * 1.5 + 5  # expiry plus one sweep interval (half the time to live), plus slack
        print(f"… waiting {wait:.0f} s with no requests, then checking the cleanup", file=sys.stderr, flush=True)
        await asyncio.sleep(wait)
        memory.sample(time.monotonic() - t0)
        rounds, swept_uploads, swept_jobs = cleanup_log(workdir / "server.log")
        files_left = upload_files(workdir / "uploads")
        jobs_left = sum([await t.remaining_jobs() for t in trainers])
        result["cleanup"] = {"upload_files_at_end": files_at_end, "upload_files_left": files_left,
                             "sweep_rounds": rounds, "uploads_deleted_by_sweep": swept_uploads,
                             "jobs_forgotten_by_sweep": swept_jobs, "jobs_still_listed": jobs_left}
    for trainer in trainers:
        await trainer.close()
    stop_sampling.set()
    await sampler
    warm = max(5.0, 0.15 * args.duration)
    result["memory"] = {
        "warmup_s": warm,
        "server_rss_after_warmup": memory.server_rss_at(warm),
        "server_rss_at_end": next((rss for ts, rss, _c, _n in memory.samples if ts >= elapsed), memory.samples[-1][1]),
        "server_rss_last": memory.samples[-1][1],
        "server_peak_hwm": memory.server_hwm,
        "server_growth_last_half_mb_per_min": growth(memory.samples, elapsed / 2, elapsed),
        "training_processes": len(memory.child_hwm),
        "training_peak_hwm_each": max(memory.child_hwm.values(), default=0),
        "training_peak_rss_sum": max((c for _t, _s, c, _n in memory.samples), default=0),
        "training_peak_count": max((n for _t, _s, _c, n in memory.samples), default=0),
        "timeline": [(round(t, 1), s, c, n) for t, s, c, n in memory.samples[:: max(1, len(memory.samples) // 24)]],
    }
    result["stats"] = stats
    return result


# ============================================================================== report


def growth(samples: list[tuple[float, int, int, int]], start: float, end: float) -> float:
    """The server's RSS trend between ``start`` and ``end`` s (least squares), in MB a minute."""
    window = [(t, rss) for t, rss, _c, _n in samples if start <= t <= end]
    if len(window) < 3:
        return float("nan")
    t, rss = np.array(window, dtype=np.float64).T
    return float(np.polyfit(t, rss, 1)[0]) * 60 / 2**20


def pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    out = {f"p{p}": float(np.percentile(a, p)) for p in PCTS}
    out["max"] = float(a.max())
    return out


def mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def report(args: argparse.Namespace, result: dict) -> bool:
    stats: Stats = result["stats"]
    total = stats.requests()
    errors = stats.error_count()
    limited = sum(stats.limited.values())
    attack: AttackStats | None = result.get("attacker")
    print(f"\n## Soak: {args.students} students on {result['addresses']} addresses, {args.trainers} trainers, "
          f"{'one attacker, ' if attack else ''}{result['elapsed']:.0f} s "
          f"(seed {args.seed}, at most {args.running} trainings at once)\n")
    if result["extra_pages"]:
        print(f"Pages found besides the lesson's: {', '.join(result['extra_pages'])}\n")
    print(f"Requests: {total} ({total / result['elapsed']:.1f}/s); errors: **{errors}**; 429 (rate limits, "
          f"expected): {limited}; server CPU: {result['server_cpu']:.0f} s "
          f"({100 * result['server_cpu'] / result['elapsed']:.0f}% of one core); the machine's load average "
          f"(1 min) {result['load_average'][0]:.1f} at the start, {result['load_average'][1]:.1f} at the end, "
          f"on {os.cpu_count()} cores\n")
    print("| page | requests | errors | 429 | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    labels = sorted(set(stats.latencies) | set(stats.errors), key=lambda s: (s.startswith(("SSE", "soak", "train")), s))
    for label in labels:
        values = stats.latencies.get(label, [])
        p = pct(values) if values else dict.fromkeys(("p50", "p95", "p99", "max"), float("nan"))
        count = len(values) + stats.errors[label]["timeout"] + stats.errors[label]["connection"]
        note = (" (time to open)" if label.startswith("SSE /class") else
                " (stream: start to last event)" if label.startswith("SSE") else "")
        print(f"| {label}{note} | {count} | {sum(stats.errors[label].values())} | {stats.limited[label]} | "
              f"{p['p50']:.0f} | {p['p95']:.0f} | {p['p99']:.0f} | {p['max']:.0f} |")
    expected = [f"{n} × {status} on {label}" for label, c in stats.expected.items() for status, n in c.items()]
    if expected:
        print(f"\nOther expected refusals (the question closed meanwhile): {'; '.join(expected)}")
    if stats.examples:
        print("\nFirst errors:\n")
        for line in stats.examples:
            print(f"- {line}")
    c = result["class"]
    if c["code"]:
        print(f"\nClass {c['code']}: {c['questions']} questions asked; answers counted at each reveal: "
              f"{c['answers']}, of which 666 (the attacker's): {c['answers_666']}.")
    if attack:
        report_attacker(attack)
    t = stats.trainings
    print(f"\nTrainings: {t['started']} started, {t['done']} done, {t['stopped']} stopped, {t['failed']} failed, "
          f"{t['stopped at the end']} stopped at the end of the soak; {t['429 on start']} starts refused by the "
          f"rate limit (another session was used).\n")
    m = result["memory"]
    print("| memory | value |")
    print("|---|---:|")
    print(f"| server RSS after warm-up ({m['warmup_s']:.0f} s) | {mb(m['server_rss_after_warmup'])} |")
    print(f"| server RSS at the end of the load | {mb(m['server_rss_at_end'])} |")
    print(f"| server RSS last sample (after the cleanup wait, if any) | {mb(m['server_rss_last'])} |")
    print(f"| server peak (VmHWM) | {mb(m['server_peak_hwm'])} |")
    print(f"| server RSS trend over the last half of the load | {m['server_growth_last_half_mb_per_min']:+.1f} MB/min |")
    print(f"| training processes started (seen) | {m['training_processes']} |")
    print(f"| training process peak, each (VmHWM) | {mb(m['training_peak_hwm_each'])} |")
    print(f"| training processes at once, most | {m['training_peak_count']} |")
    print(f"| training processes' RSS together, peak | {mb(m['training_peak_rss_sum'])} |")
    print("\nServer RSS over time (s: server / trainings together, processes): "
          + ", ".join(f"{ts:.0f}: {mb(s)} / {mb(c)}, {n}" for ts, s, c, n in m["timeline"]))
    if attack:
        errors += attack.error_count()
    ok = errors == 0 and t["failed"] == 0
    if "cleanup" in result:
        c = result["cleanup"]
        clean = c["upload_files_left"] == 0 and c["jobs_still_listed"] == 0
        ok = ok and clean
        print(f"\nCleanup (times to live {CLEANUP_TTL_S} s): upload files {c['upload_files_at_end']} at the end of the "
              f"load → {c['upload_files_left']} after the wait; the periodic sweep deleted {c['uploads_deleted_by_sweep']} "
              f"uploads and forgot {c['jobs_forgotten_by_sweep']} finished jobs in {c['sweep_rounds']} rounds; "
              f"jobs still listed by the trainers' sessions: {c['jobs_still_listed']}. "
              f"{'OK' if clean else 'NOT CLEAN'}")
    print(f"\nResult: {'OK' if ok else 'FAILED'} ({errors} errors)")
    return ok


def report_attacker(attack: AttackStats) -> None:
    def counts(c: Counter) -> str:
        return ", ".join(f"{n} × {s}" for s, n in sorted(c.items(), key=lambda kv: -kv[1])) or "none"

    print(f"\nAttacker ({ATTACKER_ADDRESS}): {attack.requests()} requests and sockets; refused (not errors): "
          f"{counts(attack.by_status(refused=True))}; accepted: {counts(attack.by_status(refused=False))}; "
          f"errors (5xx, timeouts, dropped, kept open): **{attack.error_count()}**\n")
    print("| attack | what the server answered | errors |")
    print("|---|---|---:|")
    for label in sorted(set(attack.answers) | set(attack.errors), key=lambda s: (int(s.split()[0]), s)):
        print(f"| {label} | {counts(attack.answers[label])} | {counts(attack.errors[label])} |")
    if attack.socket_close_s:
        s = attack.socket_close_s
        print(f"\nSockets left idle or half-sent: {len(s)} closed by the server after {min(s):.1f}–{max(s):.1f} s.")
    if attack.examples:
        print("\nFirst attacker errors:\n")
        for line in attack.examples:
            print(f"- {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (default %(default)s)")
    parser.add_argument("--students", type=int, default=60, help="simulated students (default %(default)s)")
    parser.add_argument("--trainers", type=int, default=4, help="simulated trainers (default %(default)s)")
    parser.add_argument("--running", type=int, default=4, help="trainings at once (CNNLAB_MAX_RUNNING_JOBS)")
    parser.add_argument("--per-address", type=int, default=3,
                        help="students behind one loopback source address (default %(default)s)")
    parser.add_argument("--attacker", action=argparse.BooleanOptionalAction, default=True,
                        help=f"one attacker in the mix, from {ATTACKER_ADDRESS} (default: on)")
    parser.add_argument("--check-cleanup", action="store_true",
                        help=f"short times to live ({CLEANUP_TTL_S} s); check uploads and jobs are gone after")
    parser.add_argument("--quick", action="store_true", help="15 s with 20 students, for development")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.students = 15.0, 20
    workdir = Path(tempfile.mkdtemp(prefix="cnnlab-soak-"))
    port = free_port()
    server = start_server(port, workdir, args)
    try:
        result = asyncio.run(soak(args, port, server, workdir))
    finally:
        stop_server(server)
    ok = report(args, result)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"Load generator CPU: {usage.ru_utime + usage.ru_stime:.0f} s. Server log: {workdir / 'server.log'}")
    if args.json:
        stats: Stats = result.pop("stats")
        result["latency"] = {k: pct(v) | {"n": len(v)} for k, v in stats.latencies.items()}
        result["errors"] = {k: dict(v) for k, v in stats.errors.items() if v}
        result["limited"] = dict(stats.limited)
        result["expected"] = {k: dict(v) for k, v in stats.expected.items()}
        if "attacker" in result:
            attack = result["attacker"]
            result["attacker"] = {"answers": {k: dict(v) for k, v in attack.answers.items()},
                                  "errors": {k: dict(v) for k, v in attack.errors.items()},
                                  "socket_close_s": attack.socket_close_s}
        result["trainings"] = dict(stats.trainings)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
