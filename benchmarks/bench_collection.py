"""The class builds its own dataset (issue 15): phones drawing at once, the projector keeping up.

    python benchmarks/bench_collection.py [--phones 60] [--seconds 120] [--interval 2]
                                          [--addresses N] [--redis] [--web 2] [--no-thumbnails]
                                          [--per-minute 30] [--json PATH]

Goal (issue 15): 60 simulated phones, each sending a drawing every 2 s for 2 minutes: 0 lost
drawings, projector update p95 ≤ 500 ms. Everything on loopback; it stops by itself (one run ≈
``--seconds`` + 30 s); nothing is left running.

1. Starts the real server, ``python -m cnnlab --port P`` (the ``cnnlab`` command's code, the
   in-process store: the default), in a temporary folder of its own. With ``--redis``: a Valkey
   (tests/valkeyserver.py) and ``--web`` such processes on ports of their own sharing it (the
   phones spread over them; the assistant on the first).
   Settings: the defaults (40 drawings a minute per student, 100 per student, 4,000 per class)
   let 60 phones send a drawing every 2 s for 2 minutes (a phone drawing every 2 s sends 31
   drawings within a closed minute, at 0, 2, …, 60 s); a heavier run raises what it needs
   (``CNNLAB_COLLECTION_DRAWINGS_PER_MINUTE``, ``…_MAX_PER_STUDENT``, ``…_MAX_DRAWINGS``). No other limit is
   touched: every phone comes from a loopback address of its own (127.0.0.2 …, ``--addresses``,
   by default one per phone), so the per-address caps apply as to phones on a school's Wi-Fi.
   The settings used are printed.
2. The assistant (an httpx client with its own cookie jar) starts a class (``POST /class``: the
   secret cookie), opens the projector page, holds the class's event stream
   (``GET /class/<code>/events``) as the projector does, and opens a collection of the digits
   0–9 (``POST /api/class/<code>/collection``).
3. ``--phones`` phones, each its own httpx client (own cookies: its own session) bound to its
   own source address, join (``GET /class/<code>/collect``, the phone's page: a seat) and hold
   the class's event stream as the phone's page does (an open screen holds the seat); the
   streams are raw asyncio HTTP/1.1 readers (as in bench_scale.py), light enough for one
   load-generator process.
4. Once the class counts every phone connected, each phone sends a drawing
   (``POST /api/class/<code>/collection/drawings``: 784 numbers with 4 decimals, as the pad
   sends them; random strokes) every ``--interval`` s from a random moment in the first
   interval, for ``--seconds`` s, always the label the server last asked it for.
5. The projector's stream is parsed: every ``collection`` event's ``new`` list. Unless
   ``--no-thumbnails``, the projector also fetches every new thumbnail PNG (6 connections, as
   a browser over HTTP/1.1), as its page's ``<img>`` does.
6. Afterwards (waiting at most 5 s for stragglers) the collection is closed and read back:
   ``GET /api/class/<code>/collection`` (total and counts per label), ``…/dataset.zip`` (every
   drawing's id, in its label's folder) and ``…/dataset.npz`` (every image and label, in id
   order, compared byte for byte with what each accepted POST sent).

Reported: update latency per accepted drawing, from the POST's response at the phone to the
projector's ``collection`` event listing its id in ``new`` (an event that arrives before the
phone has its answer counts as 0 ms; how many did is printed), also from just before the POST
was sent, and to the thumbnail fetched; p50/p95/max. Lost drawings: accepted ids the projector
never listed, or missing from the final state, the zip or the npz (or different there).
Refusals by status, failed requests, the POST's round trip, the event loop's lag in the load
generator (its timer overshoot: the latencies include it), CPU of the server processes, of
Valkey and of the load generator.

Exit status 1 unless: 0 lost, 0 refused or failed, every phone connected, p95 ≤ 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import math
import os
import random
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np

from cnnlab.app.settings import Settings
from bench_scale import (
    Fleet,
    addresses,
    cpu_seconds,
    http_open,
    machine_busy,
    pct,
    sse_events,
)
from cnnlab.app.classroom.collection import grid_bytes

TARGET_P95_MS = 500.0
GRACE_S = 5.0  # after the last POST: how long the projector may still list a drawing
JOIN_CONCURRENCY = 10
TIMEOUT_S = 15.0
PNG_CONNECTIONS = 6  # a browser's connections to one host over HTTP/1.1
LABELS = 10  # the digits


# ============================================================================== drawings


def random_drawing(rng: np.random.Generator) -> list[float]:
    """A pad-like drawing: 1–3 random thick strokes, values in 0..1 with 4 decimals (the pad's
    ``toFixed(4)``), row-major, 784 numbers; never empty."""
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
    ink = np.zeros((28, 28))
    for _ in range(int(rng.integers(1, 4))):
        (x0, y0), (x1, y1) = rng.uniform(4, 24, size=(2, 2))
        width = rng.uniform(1.0, 2.2)
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        dist = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))
        ink = np.maximum(ink, np.clip(1.2 - dist / width, 0, 1))
    ink[int(rng.integers(8, 20)), int(rng.integers(8, 20))] = 1.0  # never a blank pad
    return [float(v) for v in np.round(ink.ravel(), 4)]


# ============================================================================== streams


class Stream:
    """One screen's event stream (raw HTTP/1.1 on its own source address): every event's
    name and data to ``on_event(name, data, monotonic time)``."""

    def __init__(self, label: str, address: str, port: int, path: str, cookie: str, on_event, errors: list[str],
                 stopping: list[bool]) -> None:
        self.label, self.address, self.port, self.path, self.cookie = label, address, port, path, cookie
        self.on_event, self.errors, self.stopping = on_event, errors, stopping
        self.writer: asyncio.StreamWriter | None = None
        self.events = 0

    async def open(self):
        req = (f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAccept: text/event-stream\r\n"
               f"Accept-Language: en\r\nCookie: {self.cookie}\r\n\r\n").encode()
        r, w, status, headers = await asyncio.wait_for(http_open(self.address, self.port, req), TIMEOUT_S)
        self.writer = w
        if status != 200:
            w.close()
            raise ConnectionError(f"{self.label}: stream answered {status}")
        return r, headers

    async def read(self, r: asyncio.StreamReader, headers) -> None:
        try:
            async for name, data, arrived in sse_events(r, headers):
                self.events += 1
                self.on_event(name, b"\n".join(data), arrived)
            if not self.stopping[0]:
                self.errors.append(f"{self.label}: the stream ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 — every failure is counted
            if not self.stopping[0]:
                self.errors.append(f"{self.label}: stream {type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def cookie_header(client: httpx.AsyncClient) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)


# ============================================================================== the run


class Run:
    def __init__(self, args: argparse.Namespace, ports: list[int]) -> None:
        self.args = args
        self.ports = ports
        self.addrs = addresses(args.addresses)
        self.errors: list[str] = []
        self.stopping = [False]
        self.refused: collections.Counter[int] = collections.Counter()
        self.refusal_examples: list[str] = []
        self.failed = 0
        self.post_ms: list[float] = []
        # id -> {"phone", "label", "sent", "answered", "grid"}
        self.accepted: dict[int, dict] = {}
        self.seen: dict[int, float] = {}  # id -> the projector's event listing it
        self.png_done: dict[int, float] = {}
        self.png_failed = 0
        self.host_events = 0
        self.collection_events = 0
        self.phone_events = 0
        self.lag_ms: list[float] = []
        self.pngs: asyncio.Queue = asyncio.Queue()
        self.connected = 0
        self.sending = args.phones  # phones not done sending yet

    def base(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i % len(self.ports)]}"

    # ---------------------------------------------------------------- the projector

    def on_host_event(self, name: str, data: bytes, now: float) -> None:
        self.host_events += 1
        if name != "collection":
            return
        self.collection_events += 1
        payload = json.loads(data)
        for item in payload.get("new") or []:
            if item["id"] not in self.seen:
                self.seen[item["id"]] = now
                if not self.args.no_thumbnails:
                    self.pngs.put_nowait((item["id"], item["png"]))

    async def png_fetcher(self, host: httpx.AsyncClient) -> None:
        while True:
            drawing_id, url = await self.pngs.get()
            try:
                r = await host.get(url)
                if r.status_code == 200 and r.content.startswith(b"\x89PNG"):
                    self.png_done.setdefault(drawing_id, time.monotonic())
                else:
                    self.png_failed += 1
                    self.errors.append(f"thumbnail {drawing_id}: {r.status_code}")
            except httpx.HTTPError as exc:
                self.png_failed += 1
                self.errors.append(f"thumbnail {drawing_id}: {type(exc).__name__}")

    async def lag_monitor(self) -> None:
        """The load generator's own event-loop lag: how late a 50 ms timer fires."""
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.05)
            self.lag_ms.append((time.monotonic() - t0 - 0.05) * 1000)

    # ---------------------------------------------------------------- a phone

    async def phone(self, i: int, code: str, sem: asyncio.Semaphore, joined: asyncio.Event, go: asyncio.Event,
                    t_start: list[float], streams: list[Stream]) -> None:
        args = self.args
        address = self.addrs[i % len(self.addrs)]
        port = self.ports[i % len(self.ports)]
        transport = httpx.AsyncHTTPTransport(local_address=address, limits=httpx.Limits(keepalive_expiry=3.0))
        rng = np.random.default_rng(1000 + i)
        async with httpx.AsyncClient(base_url=self.base(i), transport=transport, timeout=TIMEOUT_S,
                                     headers={"accept-language": "en"}) as client:
            try:
                async with sem:
                    page = await client.get(f"/class/{code}/collect")
                    if page.status_code != 200:
                        self.errors.append(f"phone {i}: join {page.status_code}")
                        self.sending -= 1
                        return
                    stream = Stream(f"phone {i}", address, port, f"/class/{code}/events", cookie_header(client),
                                    self.on_phone_event, self.errors, self.stopping)
                    r, headers = await stream.open()
                    streams.append(stream)
                    self.connected += 1
                    state = (await client.get(f"/api/class/{code}/collection")).json()
                    ask = int(state.get("ask") or 0)
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"phone {i}: join {type(exc).__name__}: {exc}")
                self.sending -= 1
                return
            finally:
                joined.set()
            reader = asyncio.create_task(stream.read(r, headers))
            try:
                await go.wait()
                offset = random.Random(i).uniform(0, args.interval)
                first = t_start[0] + offset
                end = t_start[0] + args.seconds
                k = 0
                while first + k * args.interval < end and k < 100_000:
                    due = first + k * args.interval
                    k += 1
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    grid = random_drawing(rng)
                    body = {"grid": grid, "label": ask}
                    t0 = time.monotonic()
                    try:
                        resp = await client.post(f"/api/class/{code}/collection/drawings", json=body)
                    except httpx.HTTPError as exc:
                        self.failed += 1
                        self.errors.append(f"phone {i}: POST {type(exc).__name__}: {exc}")
                        continue
                    t1 = time.monotonic()
                    self.post_ms.append((t1 - t0) * 1000)
                    if resp.status_code == 201:
                        out = resp.json()
                        self.accepted[out["id"]] = {"phone": i, "label": ask, "sent": t0, "answered": t1,
                                                    "grid": grid_bytes(grid)}
                        ask = int(out["ask"])
                    else:
                        self.refused[resp.status_code] += 1
                        if len(self.refusal_examples) < 10:
                            self.refusal_examples.append(f"phone {i}: {resp.status_code} {resp.text[:160]}")
                        if resp.status_code >= 500:
                            self.failed += 1
                self.sending -= 1
                # Keep the screen open until the run ends (the reader is cancelled then).
                await asyncio.sleep(GRACE_S + TIMEOUT_S + 60)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    def on_phone_event(self, name: str, data: bytes, now: float) -> None:
        if name == "collection":
            self.phone_events += 1

    # ---------------------------------------------------------------- the whole

    async def run(self) -> dict:
        args = self.args
        host_addr = "127.0.0.1"
        transport = httpx.AsyncHTTPTransport(local_address=host_addr,
                                             limits=httpx.Limits(max_connections=PNG_CONNECTIONS + 2,
                                                                 keepalive_expiry=3.0))
        async with httpx.AsyncClient(base_url=self.base(0), transport=transport, timeout=TIMEOUT_S,
                                     headers={"accept-language": "en"}) as host:
            r = await host.post("/class", follow_redirects=False)
            if r.status_code != 303:
                raise SystemExit(f"POST /class answered {r.status_code}: {r.text[:300]}")
            code = r.headers["location"].split("/")[2]
            (await host.get(f"/class/{code}/present")).raise_for_status()
            projector = Stream("projector", host_addr, self.ports[0], f"/class/{code}/events", cookie_header(host),
                               self.on_host_event, self.errors, self.stopping)
            pr, ph = await projector.open()
            tasks = [asyncio.create_task(projector.read(pr, ph)), asyncio.create_task(self.lag_monitor())]
            tasks += [asyncio.create_task(self.png_fetcher(host)) for _ in range(PNG_CONNECTIONS)]
            minutes = min(60, math.ceil(args.seconds / 60) + 2)
            r = await host.post(f"/api/class/{code}/collection", json={"labels": None, "target": 100,
                                                                      "minutes": minutes})
            if r.status_code != 201:
                raise SystemExit(f"opening the collection answered {r.status_code}: {r.text[:300]}")
            sem = asyncio.Semaphore(JOIN_CONCURRENCY)
            joined_events = [asyncio.Event() for _ in range(args.phones)]
            go = asyncio.Event()
            t_start = [0.0]
            streams: list[Stream] = []
            phones = [asyncio.create_task(self.phone(i, code, sem, e, go, t_start, streams))
                      for i, e in enumerate(joined_events)]
            t_join = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in joined_events)), 120)
            join_s = time.monotonic() - t_join
            counted = 0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                counted = (await host.get(f"/api/class/{code}")).json()["students"]
                if counted >= self.connected:
                    break
                await asyncio.sleep(0.25)
            await asyncio.sleep(0.5)
            cpu0 = self.cpu()
            busy0, mono0 = machine_busy()
            load0 = os.getloadavg()[0]
            self.lag_ms.clear()
            t_start[0] = time.monotonic() + 0.2
            go.set()
            # Every phone's last POST is due before t_start + seconds; then stragglers.
            await asyncio.sleep(max(0.0, t_start[0] + args.seconds - time.monotonic()))
            # Stragglers: a POST still waiting for its answer (at most one request timeout).
            bound = t_start[0] + args.seconds + TIMEOUT_S + 1
            while time.monotonic() < bound and self.sending > 0:
                await asyncio.sleep(0.05)
            last_answer = time.monotonic()
            bound = last_answer + GRACE_S
            while time.monotonic() < bound and (set(self.accepted) - set(self.seen) or (
                    not args.no_thumbnails and set(self.accepted) - set(self.png_done))):
                await asyncio.sleep(0.05)
            cpu = {k: v - cpu0[k] for k, v in self.cpu().items()}
            busy1, mono1 = machine_busy()
            window = mono1 - mono0
            # Read the collection back: closed first (as the assistant does before downloading).
            final_open = (await host.get(f"/api/class/{code}/collection")).json()
            closed = await host.delete(f"/api/class/{code}/collection")
            final = (await host.get(f"/api/class/{code}/collection")).json()
            zip_r = await host.get(f"/class/{code}/collection/dataset.zip")
            npz_r = await host.get(f"/class/{code}/collection/dataset.npz")
            self.stopping[0] = True
            for p in phones:
                p.cancel()
            await asyncio.gather(*phones, return_exceptions=True)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for s in streams:
                s.close()
            projector.close()
            await host.delete(f"/api/class/{code}")
        self.t_start = t_start[0]
        return self.results(code, join_s, counted, cpu, window, (busy1 - busy0) / window, load0, final_open, closed,
                            final, zip_r, npz_r, projector.events)

    def cpu(self) -> dict[str, float]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out = {"web": sum(cpu_seconds(p) for p in self.args.web_pids), "load generator": ru.ru_utime + ru.ru_stime}
        if self.args.valkey_pid:
            out["valkey"] = cpu_seconds(self.args.valkey_pid)
        return out

    # ---------------------------------------------------------------- the figures

    def results(self, code, join_s, counted, cpu, window, busy_cores, load0, final_open, closed, final, zip_r, npz_r,
                projector_events) -> dict:
        acc = self.accepted
        ids = set(acc)
        unseen = ids - set(self.seen)
        check: dict = {"final_status": closed.status_code}
        # Final state: the total and every label's count, against what was accepted.
        want_counts = [0] * LABELS
        for d in acc.values():
            want_counts[d["label"]] += 1
        check["final_total"] = final.get("total")
        check["final_counts_match"] = final.get("counts") == want_counts
        check["final_missing"] = max(0, len(acc) - int(final.get("total") or 0))
        # The zip: every drawing's id, in its label's folder.
        zip_ids: dict[int, int] = {}
        if zip_r.status_code == 200:
            with zipfile.ZipFile(io.BytesIO(zip_r.content)) as zf:
                folders = sorted({n.split("/")[0] for n in zf.namelist() if n.endswith("/")})
                for n in zf.namelist():
                    if n.endswith(".png"):
                        folder, name = n.split("/")
                        zip_ids[int(name[:-4])] = int(folder) if folder.isdigit() else folders.index(folder)
        check["zip_status"] = zip_r.status_code
        zip_missing = ids - set(zip_ids)
        zip_wrong_label = {i for i in ids & set(zip_ids) if zip_ids[i] != acc[i]["label"]}
        check["zip_extra"] = len(set(zip_ids) - ids)  # accepted by the server, the answer lost on the way
        # The npz: images and labels in id order, byte for byte.
        npz_bad: set[int] = set()
        check["npz_status"] = npz_r.status_code
        if npz_r.status_code == 200:
            with np.load(io.BytesIO(npz_r.content), allow_pickle=False) as f:
                images, labels = f["images"], f["labels"]
                check["npz_images"] = len(images)
                check["npz_label_names"] = [str(x) for x in f["label_names"]]
            order = sorted(set(zip_ids) | ids)
            if len(order) == len(images):
                for k, i in enumerate(order):
                    if i in acc and (images[k].tobytes() != acc[i]["grid"] or int(labels[k]) != acc[i]["label"]):
                        npz_bad.add(i)
            else:
                npz_bad = set(ids)  # cannot be matched: counted as lost
        else:
            npz_bad = set(ids)
        lost = unseen | zip_missing | zip_wrong_label | npz_bad
        lost_count = len(lost) + check["final_missing"] * (not lost)
        # Latencies.
        from_answer, from_sent, to_png, early = [], [], [], 0
        for i, d in acc.items():
            if i in self.seen:
                t = self.seen[i]
                from_sent.append((t - d["sent"]) * 1000)
                if t < d["answered"]:
                    early += 1
                from_answer.append(max(0.0, t - d["answered"]) * 1000)
                if i in self.png_done:
                    to_png.append(max(0.0, self.png_done[i] - d["answered"]) * 1000)
        phones_cpu = {k: v for k, v in cpu.items()}
        # p95 of the update latency per 20 s of the run (by the POST's answer): does it drift?
        buckets: dict[int, list[float]] = {}
        for i, d in acc.items():
            if i in self.seen:
                k = int((d["answered"] - self.t_start) // 20)
                buckets.setdefault(k, []).append(max(0.0, self.seen[i] - d["answered"]) * 1000)
        over_time = [(20 * k, pct(v, 95)) for k, v in sorted(buckets.items())]

        def stats(xs):
            return {"n": len(xs), "p50": pct(xs, 50), "p95": pct(xs, 95), "max": float(max(xs)) if xs else float("nan")}

        return {
            "code": code, "phones": self.args.phones, "connected": self.connected, "counted": counted,
            "join_s": join_s, "accepted": len(acc), "refused": dict(self.refused), "failed": self.failed,
            "refusal_examples": self.refusal_examples, "errors": self.errors[:20], "error_count": len(self.errors),
            "lost": lost_count, "unseen": len(unseen), "zip_missing": len(zip_missing),
            "zip_wrong_label": len(zip_wrong_label), "npz_bad": len(npz_bad), "check": check,
            "final_open": {k: final_open.get(k) for k in ("total", "counts", "contributors")},
            "update_from_answer_ms": stats(from_answer), "update_p95_per_20s": over_time, "update_from_sent_ms": stats(from_sent),
            "thumbnail_from_answer_ms": stats(to_png), "before_answer": early, "png_failed": self.png_failed,
            "post_ms": stats(self.post_ms), "loop_lag_ms": stats(self.lag_ms),
            "projector_events": projector_events, "collection_events": self.collection_events,
            "phone_collection_events": self.phone_events,
            "cpu_s": phones_cpu, "window_s": window, "machine_busy_cores": busy_cores,
            "load_average": (load0, os.getloadavg()[0]),
        }


# ============================================================================== report


def print_report(res: dict, args: argparse.Namespace, settings: dict[str, str]) -> bool:
    mode = (f"Valkey, {args.web} web processes (`python -m cnnlab --port P` each, the phones spread over them)"
            if args.redis else "one `python -m cnnlab --port P` process, in-process store (the default)")
    print(f"\n## The class's own dataset: {args.phones} phones, a drawing every {args.interval:g} s each for "
          f"{args.seconds:g} s\n")
    print(f"Server: {mode}; {os.cpu_count()} CPU cores shared with the load generator (one asyncio process: "
          f"{args.phones} httpx clients + {args.phones + 1} raw event-stream readers), load average "
          f"{res['load_average'][0]:.1f} → {res['load_average'][1]:.1f}. Settings: "
          + (", ".join(f"`{k}={v}`" for k, v in settings.items()) + "; everything else at its default. "
             if settings else "all at their defaults. ")
          + f"Source addresses: {args.addresses} (127.0.0.2 …).\n")
    print(f"Phones connected {res['connected']}/{args.phones} (the class counted {res['counted']}; joining took "
          f"{res['join_s']:.1f} s). Drawings sent {res['accepted'] + sum(res['refused'].values()) + res['failed']}: "
          f"accepted {res['accepted']}, refused {sum(res['refused'].values())} "
          f"{dict(sorted(res['refused'].items())) or ''}, failed requests {res['failed']}.\n")
    print("| from a phone's drawing to | drawings | p50 (ms) | p95 (ms) | max (ms) |")
    print("|---|---:|---:|---:|---:|")
    rows = [("the projector's `collection` event listing it, from the POST's answer at the phone",
             res["update_from_answer_ms"]),
            ("the same, from just before the POST was sent", res["update_from_sent_ms"])]
    if not args.no_thumbnails:
        rows.append(("its thumbnail PNG fetched by the projector, from the POST's answer", res["thumbnail_from_answer_ms"]))
    rows.append(("the POST's answer (round trip)", res["post_ms"]))
    for label, s in rows:
        print(f"| {label} | {s['n']} | {s['p50']:.1f} | {s['p95']:.1f} | {s['max']:.1f} |")
    c = res["check"]
    print(f"\nEvents listing a drawing before the phone had its answer: {res['before_answer']} (counted as 0 ms). "
          f"Projector events {res['projector_events']} ({res['collection_events']} `collection`); phones' "
          f"`collection` events {res['phone_collection_events']}. Load generator's event-loop lag (50 ms timer "
          f"overshoot, included in the latencies): p50 {res['loop_lag_ms']['p50']:.1f} ms, p95 "
          f"{res['loop_lag_ms']['p95']:.1f} ms, max {res['loop_lag_ms']['max']:.1f} ms.")
    print("\nUpdate p95 per 20 s of the run (from the POST's answer): " + ", ".join(
        f"{t:.0f}–{t + 20:.0f} s {v:.0f} ms" for t, v in res["update_p95_per_20s"]) + ".")
    print(f"\nLost drawings: {res['lost']} — accepted but never listed by the projector {res['unseen']}; final state "
          f"total {c['final_total']} for {res['accepted']} accepted (counts per label "
          f"{'match' if c['final_counts_match'] else 'DIFFER'}); zip ({c['zip_status']}): missing {res['zip_missing']}, "
          f"in the wrong label {res['zip_wrong_label']}, ids never answered to a phone {c['zip_extra']}; npz "
          f"({c['npz_status']}, {c.get('npz_images', '–')} images): missing or different {res['npz_bad']}. "
          f"Thumbnails refused or failed: {res['png_failed']}.")
    cpu = res["cpu_s"]
    w = res["window_s"]
    print(f"\nCPU over the {w:.0f} s of drawing: web {cpu['web']:.1f} s ({cpu['web'] / w:.2f} cores)"
          + (f", Valkey {cpu['valkey']:.1f} s ({cpu['valkey'] / w:.2f})" if "valkey" in cpu else "")
          + f", load generator {cpu['load generator']:.1f} s ({cpu['load generator'] / w:.2f}); the machine "
          f"{res['machine_busy_cores']:.2f} of {os.cpu_count()} cores busy.")
    for e in res["refusal_examples"]:
        print(f"  refused: {e}")
    for e in res["errors"][:10]:
        print(f"  error: {e}")
    p95 = res["update_from_answer_ms"]["p95"]
    ok = (res["lost"] == 0 and res["failed"] == 0 and not res["refused"] and res["error_count"] == 0
          and res["connected"] == args.phones and p95 <= TARGET_P95_MS)
    print(f"\nTarget (0 lost, nothing refused or failed, projector update p95 ≤ {TARGET_P95_MS:.0f} ms): "
          f"{'met' if ok else 'MISSED'}")
    return ok


# ============================================================================== main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phones", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the phones draw")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between one phone's drawings")
    parser.add_argument("--addresses", type=int, default=0, help="loopback source addresses (default: one per phone)")
    parser.add_argument("--per-minute", type=int, default=0,
                        help="CNNLAB_COLLECTION_DRAWINGS_PER_MINUTE for the run (default: the setting's own, 40, "
                             "raised to 60 / interval + 1 when the interval needs more)")
    parser.add_argument("--redis", action="store_true", help="Valkey and --web web processes sharing it")
    parser.add_argument("--web", type=int, default=2, help="web processes with --redis")
    parser.add_argument("--no-thumbnails", action="store_true", help="the projector does not fetch the PNGs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (1 <= args.phones <= 250 and 1 <= args.seconds <= 1800 and 0.2 <= args.interval <= 60):
        raise SystemExit("--phones 1..250, --seconds 1..1800, --interval 0.2..60")
    args.addresses = args.addresses or args.phones
    if not 1 <= args.addresses <= 250:
        raise SystemExit("--addresses 1..250 (127.0.0.2 … 127.0.0.251)")
    per_phone = math.ceil(args.seconds / args.interval) + 1
    # The defaults let 60 phones send a drawing every 2 s for 2 minutes; a heavier run raises
    # what it needs (and says so). A phone drawing every 2 s sends 31 drawings within a closed
    # 60 s (at 0, 2, …, 60 s), counted by the limit's moving window (app/ratelimit.py).
    defaults = Settings()
    needed = {"CNNLAB_COLLECTION_DRAWINGS_PER_MINUTE": args.per_minute or math.floor(60 / args.interval) + 1,
              "CNNLAB_COLLECTION_MAX_PER_STUDENT": per_phone,
              "CNNLAB_COLLECTION_MAX_DRAWINGS": per_phone * args.phones}
    have = {"CNNLAB_COLLECTION_DRAWINGS_PER_MINUTE": defaults.collection_drawings_per_minute,
            "CNNLAB_COLLECTION_MAX_PER_STUDENT": defaults.collection_max_per_student,
            "CNNLAB_COLLECTION_MAX_DRAWINGS": defaults.collection_max_drawings}
    settings = {k: str(v) for k, v in needed.items() if v > have[k] or (k.endswith("MINUTE") and args.per_minute)}
    if per_phone * args.phones > 5000:
        print(f"warning: up to {per_phone * args.phones} drawings: a dataset file holds at most 5,000, the .npz "
              "check will fail", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="cnnlab-collection-"))
    print(f"Run folder (server logs): {workdir}", file=sys.stderr, flush=True)
    fleet = Fleet(workdir)
    try:
        args.valkey_pid = None
        if args.redis:
            args.valkey_pid = fleet.start_valkey().proc.pid
        ports = fleet.start_web(args.web if args.redis else 1, args.redis, settings)
        args.web_pids = fleet.pids("web")
        print(f"… server pid(s) {args.web_pids} on port(s) {ports}; {args.phones} phones joining",
              file=sys.stderr, flush=True)
        res = asyncio.run(Run(args, ports).run())
    finally:
        fleet.stop()
    ok = print_report(res, args, settings)
    out = args.json or workdir / "results.json"
    out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "json"}, "settings": settings,
                               "results": res}, indent=1, default=str))
    print(f"\nResults: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
