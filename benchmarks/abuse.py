"""The attacks of issue 12 against a real server, from loopback only, each bounded in count
and time; prints one row per attack: what the server answered, its peak memory and open
files during the attack, the p95 of /conv?preset=seed for a well-behaved student stepping
meanwhile (goal ≤ 100 ms), and whether a real student could still join the class and
answer its question afterwards.

    python benchmarks/abuse.py            # ~2 minutes

The server runs as ``cnnlab`` runs it (``python -m app``), with its own folders. Attackers
use other loopback source addresses (127.0.0.2, 127.0.0.3, …) than the student (127.0.0.1),
so per-address limits see them as other clients, as on a classroom's Wi-Fi.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from serverproc import CnnlabProcess  # noqa: E402

ATTACK_SECONDS = 20.0  # no attack runs longer than this
SEED = "/conv?preset=seed"


def attacker(n: int, **kwargs) -> httpx.Client:
    """A client on loopback address 127.0.0.<n+1> (no cookies kept unless asked)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=f"127.0.0.{n + 1}"), timeout=30, **kwargs)


# ============================================================================== watching


class Watch:
    """During one attack: the server's RSS and open files (sampled), and a student stepping
    on /conv?preset=seed every 50 ms."""

    def __init__(self, server: CnnlabProcess) -> None:
        self.server = server
        self.stop = threading.Event()
        self.rss: list[int] = []
        self.fds: list[int] = []
        self.latencies: list[float] = []
        self.errors = 0
        self.threads = [threading.Thread(target=self._sample, daemon=True),
                        threading.Thread(target=self._student, daemon=True)]

    def __enter__(self) -> Watch:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)

    def _sample(self) -> None:
        pid = self.server.proc.pid
        while not self.stop.is_set():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                self.rss.append(int(status.split("VmRSS:")[1].split()[0]) * 1024)
                self.fds.append(len(os.listdir(f"/proc/{pid}/fd")))
            except (OSError, IndexError):
                return
            time.sleep(0.1)

    def _student(self) -> None:
        with httpx.Client(base_url=self.server.base_url, timeout=10) as client:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    ok = client.get(SEED).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.latencies.append(time.perf_counter() - start)
                else:
                    self.errors += 1
                self.stop.wait(0.05)

    def p95_ms(self) -> str:
        if len(self.latencies) < 2:
            return f"— ({self.errors} errors)"
        p95 = statistics.quantiles(self.latencies, n=20)[-1] * 1000
        return f"{p95:.0f} ms" + (f" ({self.errors} errors)" if self.errors else "")


# ============================================================================== a real class


class Classroom:
    """The assistant's class with a question open, and a check that a new student can join
    (their screen connected) and answer."""

    def __init__(self, server: CnnlabProcess) -> None:
        self.server = server
        self.host = httpx.Client(base_url=server.base_url, timeout=10)
        self.code = self.host.post("/class").headers["location"].split("/")[2]
        self.host.post(f"/api/class/{self.code}/view", json={"url": SEED + "&step=1"})
        self.host.post(f"/api/class/{self.code}/question", json={"kind": "next_value"})

    def student_can_answer(self) -> str:
        with httpx.Client(base_url=self.server.base_url, timeout=10) as phone:
            joined = phone.get(f"/class/{self.code}").status_code
            if joined != 200:
                return f"no: join {joined}"
            got: list[int] = []
            done = threading.Event()

            def screen() -> None:
                try:
                    with phone.stream("GET", f"/class/{self.code}/events",
                                      headers={"accept": "text/event-stream"}) as response:
                        got.append(response.status_code)
                        for _chunk in response.iter_bytes():
                            if done.is_set():
                                return
                except httpx.HTTPError:
                    got.append(0)

            thread = threading.Thread(target=screen, daemon=True)
            thread.start()
            time.sleep(0.5)
            answered = phone.post(f"/api/class/{self.code}/answer", json={"value": "87"}).status_code
            done.set()
            phone.close()
            thread.join(3)
            return "yes" if answered == 200 and got[:1] == [200] else f"no: screen {got[:1]}, answer {answered}"


# ============================================================================== the attacks


def status(send) -> int | str:
    """The status of ``send()``'s response, or the name of the error that took its place."""
    try:
        return send().status_code
    except httpx.HTTPError as e:
        return type(e).__name__


def counts(statuses: list) -> str:
    out: dict = {}
    for s in statuses:
        out[s] = out.get(s, 0) + 1
    return ", ".join(f"{n}× {s}" for s, n in sorted(out.items(), key=lambda kv: -kv[1]))


def noise_png(side: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_convolution(server, _room) -> str:
    with attacker(1, base_url=server.base_url) as a:
        up = a.post("/api/images", files={"file": ("noise.png", noise_png(1024, 0), "image/png")})
        if up.status_code >= 400:
            return f"upload {up.status_code}"
        image = up.json().get("id")
        kernel = [[1.0] * 15 for _ in range(15)]
        start = time.monotonic()
        r = a.post("/api/conv", json={"image_id": image, "kernel": [[kernel]] * 64, "padding": 64})
        return f"{r.status_code} in {time.monotonic() - start:.2f} s, {len(r.content)} B"


def fill_a_class(server, room) -> str:
    statuses = []
    deadline = time.monotonic() + ATTACK_SECONDS
    with attacker(2, base_url=server.base_url) as a:
        for _ in range(205):
            if time.monotonic() > deadline:
                break
            a.cookies.clear()
            join = status(lambda: a.get(f"/class/{room.code}"))
            statuses.append(f"join {join}")
            if join == 200:
                statuses.append(f"answer {status(lambda: a.post(f'/api/class/{room.code}/answer', json={'value': '666'}))}")
    return counts(statuses)


def block_every_class(server, _room) -> str:
    with attacker(3, base_url=server.base_url) as a:
        return counts([status(lambda: a.post("/class")) for _ in range(200)])


def cookieless_trainings_and_uploads(server, _room) -> str:
    trainings, uploads = [], []
    for n in range(4):
        with attacker(4 + n, base_url=server.base_url) as a:
            for _ in range(10):
                a.cookies.clear()
                trainings.append(status(lambda: a.post("/api/train", json={"dataset": "mnist", "epochs": 30})))
    with attacker(8, base_url=server.base_url) as a:
        for i in range(25):
            a.cookies.clear()
            picture = noise_png(1024, i)
            uploads.append(status(lambda: a.post("/api/images", files={"file": ("n.png", picture, "image/png")})))
    return f"trainings {counts(trainings)}; uploads {counts(uploads)}"


def idle_and_half_open_sockets(server, _room, timeout: float) -> str:
    socks = []
    for i, payload in enumerate([b""] * 30 + [b"GET / HTTP/1.1\r\nHost: x\r\n"] * 30 +
                                [b"POST /api/conv HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"] * 30):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=(f"127.0.0.{9 + i % 3}", 0))
        s.sendall(payload)
        s.setblocking(False)
        socks.append(s)
    time.sleep(timeout + 2)
    closed = 0
    for s in socks:
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    return f"{closed} of 90 closed by the server {timeout + 2:g} s later"


def many_training_streams(server, _room) -> str:
    with attacker(12, base_url=server.base_url) as a:
        job = a.post("/api/train", json={"dataset": "digits", "epochs": 30})
        if job.status_code != 201:
            return f"training refused: {job.status_code}"
        url = f"/train/jobs/{job.json()['id']}/events"
        statuses, streams = [], []
        try:
            for _ in range(150):
                stream = a.stream("GET", url, headers={"accept": "text/event-stream"})
                response = stream.__enter__()
                statuses.append(response.status_code)
                streams.append(stream)
                if response.status_code != 200:
                    response.read()
            time.sleep(3)
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)
        return counts(statuses)


def guess_codes(server, _room) -> str:
    statuses = []
    deadline = time.monotonic() + 10
    with attacker(13, base_url=server.base_url) as a:
        while time.monotonic() < deadline and len(statuses) < 2000:
            code = "".join(np.random.default_rng(len(statuses)).choice(list("ABCDEFGHJKMNPQRSTUVWXYZ23456789"), 6))
            statuses.append(status(lambda: a.get("/class/go", params={"code": code})))
    return f"{counts(statuses)} in 10 s"


def deeply_nested_json(server, room) -> str:
    with attacker(14, base_url=server.base_url) as a:
        r = a.post(f"/api/class/{room.code}/answer", content=b"[" * 100_000,
                   headers={"content-type": "application/json"})
        return f"{r.status_code}"


def hung_training(server, _room, silence: float) -> str:
    with attacker(15, base_url=server.base_url) as a:
        job = a.post("/api/train", json={"dataset": "mnist", "epochs": 30})
        if job.status_code != 201:
            return f"training refused: {job.status_code}"
        job_id = job.json()["id"]
        deadline = time.monotonic() + 15
        while a.get(f"/api/train/{job_id}").json()["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        # Run before any other training: the server's only child is this job's process (started
        # by the job's own thread, so it is listed under that thread's task).
        workers = [int(pid) for task in Path(f"/proc/{server.proc.pid}/task").iterdir()
                   for pid in (task / "children").read_text().split()]
        if not workers:
            return "no training process found"
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        status = "running"
        while status in ("queued", "running") and time.monotonic() - stopped < silence + 20:
            time.sleep(0.5)
            status = a.get(f"/api/train/{job_id}").json()["status"]
        return f"{status} {time.monotonic() - stopped:.1f} s after SIGSTOP"


# ============================================================================== running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    timeout, silence = 2.0, 5.0
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-abuse-") as workdir, CnnlabProcess(
            Path(workdir), CNNLAB_TIMEOUT_KEEP_ALIVE_SECONDS=str(timeout),
            CNNLAB_TIMEOUT_REQUEST_HEADERS_SECONDS=str(timeout), CNNLAB_TIMEOUT_REQUEST_BODY_SECONDS=str(timeout),
            CNNLAB_JOB_SILENCE_SECONDS=str(silence)) as server:
        room = Classroom(server)
        attacks = [
            ("none: the student alone, for comparison", lambda s, r: time.sleep(5) or "—"),
            ("1 one request, gigabytes", huge_convolution),
            ("2 filling a class (205 cookie-less joins)", fill_a_class),
            ("3 blocking every class (200 POST /class)", block_every_class),
            # Before any other training, so that its process is the server's only child.
            ("9 a training process SIGSTOPped", lambda s, r: hung_training(s, r, silence)),
            ("5 90 idle / half-open sockets", lambda s, r: idle_and_half_open_sockets(s, r, timeout)),
            ("5 150 training streams, one session", many_training_streams),
            ("6 guessing codes for 10 s", guess_codes),
            ("10 100k nested [ as an answer", deeply_nested_json),
            # Last: its trainings run on (queued, then abandoned) after it.
            ("4 cookie-less trainings and uploads", cookieless_trainings_and_uploads),
        ]
        for name, attack in attacks:
            with Watch(server) as watch:
                start = time.monotonic()
                try:
                    answer = attack(server, room)
                except Exception as e:  # noqa: BLE001 — a row says what broke, the rest still run
                    answer = f"error: {type(e).__name__}: {e}"
                took = time.monotonic() - start
            rows.append((name, answer, f"{max(watch.rss, default=0) / 2**20:.0f} MB", str(max(watch.fds, default=0)),
                         watch.p95_ms(), room.student_can_answer(), f"{took:.1f} s"))
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
        # 7: SIGTERM with a class's and a training's streams open.
        got: list[bytes] = []
        phone = httpx.Client(base_url=server.base_url, timeout=10)
        phone.get(f"/class/{room.code}")

        def listen() -> None:
            with phone.stream("GET", f"/class/{room.code}/events", headers={"accept": "text/event-stream"}) as r:
                for chunk in r.iter_bytes():
                    got.append(chunk)

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        time.sleep(1)
        took = server.stop(signal.SIGTERM)
        thread.join(5)
        stopping = "stopping event" if b"deteniendo" in b"".join(got) else "no stopping event"
        rows.append(("7 SIGTERM with a class stream open", f"exited in {took:.2f} s, {stopping}", "", "", "", "", ""))
    print("| attack | what the server answered | peak RSS | open files | /conv p95 meanwhile | student joins and answers | took |")
    print("| --- | --- | ---: | ---: | ---: | --- | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
