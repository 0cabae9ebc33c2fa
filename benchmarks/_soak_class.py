"""The soak's class and the attacker in its mix (benchmarks/soak.py).

- ``on_address``: a client transport bound to a loopback source address of its own, so the
  server's per-address limits see a room of phones (127.0.0.2, 127.0.0.3, …), not one
  client (the server listens on 127.0.0.1).
- ``Teacher``: the assistant of one class: the projector's event stream open, a step of the
  seed convolution shown and asked about, the histogram read, the answer revealed, again.
- ``visit_class``: a student's look at that class: the follow page, its screen (event stream)
  for a few seconds, and an answer when a question is open.
- ``Attacker``: one client, on an address of its own, that cycles through the attacks of
  issue 12 at a modest rate, each bounded in count, until the soak's end. The server's
  refusals (``REFUSED``) are what it should get; a 5xx, a timeout, a dropped connection or a
  socket the server keeps open past its timeouts are errors.
"""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from soak import Stats

SSE = {"Accept": "text/event-stream"}
# Keep idle connections a little less than the server does (timeout_keep_alive_seconds, 5 s),
# so a request never races the server closing the connection it was about to use.
KEEPALIVE_S = 3.0
SEED_VIEW = "/conv?preset=seed&step={}"
SEED_STEPS = 9  # the 5×5 seed and its 3×3 kernel: 3×3 output positions, steps 0–8


def on_address(address: str, max_connections: int | None = None) -> httpx.AsyncHTTPTransport:
    # verify=False: plain HTTP needs no certificates, and loading them costs ~0.2 s a client.
    return httpx.AsyncHTTPTransport(local_address=address, verify=False, limits=httpx.Limits(
        max_connections=max_connections, keepalive_expiry=KEEPALIVE_S))


async def read_stream(client: httpx.AsyncClient, stats: Stats, label: str, url: str) -> None:
    """Hold an event stream open, reading it, until cancelled or the server ends it; the time
    to its headers is the latency."""
    t = time.perf_counter()
    try:
        async with client.stream("GET", url, headers=SSE, timeout=httpx.Timeout(10.0, read=30.0)) as r:
            if r.status_code != 200:
                stats.error(label, str(r.status_code), url)
                return
            stats.latencies[label].append((time.perf_counter() - t) * 1000)
            async for _line in r.aiter_lines():
                pass
    except httpx.TimeoutException:
        stats.error(label, "timeout", url)
    except httpx.HTTPError as e:
        stats.error(label, "connection", f"{url}: {type(e).__name__} {e}")


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# ============================================================================== the class


@dataclass
class Teacher:
    """The assistant: starts the class, keeps its projector open, asks and reveals (never at
    the last step, which has no next value: the server rightly answers that with a 409)."""

    base: str
    address: str
    stats: Stats
    rng: random.Random
    code: str | None = None
    questions: int = 0
    answers: list[int] = field(default_factory=list)  # answers counted at each reveal
    answers_666: list[int] = field(default_factory=list)  # of which "666" (the attacker's)

    def __post_init__(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.base, timeout=10.0, transport=on_address(self.address),
                                        headers={"Accept-Language": "es-CL,es;q=0.9"})

    async def start(self) -> str | None:
        """The class's code (None when the server refused to start one: counted as an error)."""
        r = await self.stats.request(self.client, "POST /class (assistant)", "POST", "/class")
        if r is None or r.status_code != 303:
            return None
        self.code = r.headers["location"].split("/")[2]
        await self.stats.request(self.client, "/class/<code>/present", "GET", r.headers["location"])
        return self.code

    async def run(self, deadline: float) -> None:
        code = self.code
        projector = asyncio.create_task(read_stream(self.client, self.stats, "SSE /class/<code>/events (assistant)",
                                                    f"/class/{code}/events"))
        api = f"/api/class/{code}"
        try:
            while deadline - time.monotonic() > 8:
                await self.stats.request(self.client, "POST /api/class/<code>/view", "POST", f"{api}/view",
                                         json={"url": SEED_VIEW.format(self.rng.randrange(SEED_STEPS - 1))})
                r = await self.stats.request(self.client, "POST /api/class/<code>/question", "POST", f"{api}/question",
                                             json={"kind": "next_value"})
                if r is None:
                    await asyncio.sleep(3)
                    continue
                self.questions += 1
                await asyncio.sleep(min(10.0, max(0.0, deadline - time.monotonic() - 4)))
                r = await self.stats.request(self.client, "GET /api/class/<code> (assistant)", "GET", api)
                if r is not None and r.json()["question"]:
                    bars = r.json()["question"]["histogram"]
                    self.answers.append(sum(b["count"] for b in bars))
                    self.answers_666.append(sum(b["count"] for b in bars if b["label"] and "666" in b["label"]))
                await self.stats.request(self.client, "POST /api/class/<code>/reveal", "POST", f"{api}/reveal")
                await asyncio.sleep(2.0)
                await self.stats.request(self.client, "DELETE /api/class/<code>/question", "DELETE", f"{api}/question")
                await asyncio.sleep(1.0)
        finally:
            await stop(projector)

    async def end(self) -> None:
        if self.code is not None:
            await self.stats.request(self.client, "DELETE /api/class/<code> (end)", "DELETE", f"/api/class/{self.code}")
        await self.client.aclose()


async def visit_class(client: httpx.AsyncClient, stats: Stats, code: str, rng: random.Random) -> None:
    """A student opens the class, keeps its screen open a few seconds, answers an open question."""
    if await stats.request(client, "/class/<code>", "GET", f"/class/{code}") is None:
        return
    screen = asyncio.create_task(read_stream(client, stats, "SSE /class/<code>/events (student)",
                                             f"/class/{code}/events"))
    try:
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        r = await stats.request(client, "GET /api/class/<code>", "GET", f"/api/class/{code}")
        question = r.json()["question"] if r is not None else None
        if question and not question["revealed"] and "mine" not in question:
            # 409 when the assistant closed the question meanwhile: expected, as on a phone.
            await stats.request(client, "POST /api/class/<code>/answer", "POST", f"/api/class/{code}/answer",
                                json={"value": str(rng.randint(0, 99))}, expect=(409,))
        await asyncio.sleep(rng.uniform(2.0, 6.0))
    finally:
        await stop(screen)


# ============================================================================== the attacker

# What the server should answer an attack: bad request, forbidden, no such thing, not now,
# too large, too long, cannot be used, too many.
REFUSED = frozenset({400, 403, 404, 405, 409, 413, 414, 422, 429})
ATTACK_PAUSE_S = (1.0, 2.0)  # between two attacks: a modest rate
MAX_ROUNDS = 12
JOINS_PER_ROUND = 8
GUESSES_PER_ROUND = 6
MAX_UPLOADS = 16  # 1024² noise, ~3 MB each
MAX_TRAININGS = 6
SOCKETS_PER_ROUND = 2  # of each kind: idle, half-sent headers, half-sent body
SOCKET_LIMIT_S = 25.0  # the server's longest read timeout (15 s for a body) plus slack
CODE_LETTERS = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"


def noise_png(side: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class AttackStats:
    answers: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # attack -> status -> n
    errors: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    examples: list[str] = field(default_factory=list)
    socket_close_s: list[float] = field(default_factory=list)  # how long the server kept each socket

    def error(self, label: str, kind: str, detail: str) -> None:
        self.errors[label][kind] += 1
        if len(self.examples) < 12:
            self.examples.append(f"{label}: {kind}: {detail[:200]}")

    def requests(self) -> int:
        return sum(sum(c.values()) for c in self.answers.values()) + self.error_count()

    def error_count(self) -> int:
        return sum(sum(c.values()) for c in self.errors.values())

    def by_status(self, refused: bool) -> Counter:
        out: Counter = Counter()
        for counts in self.answers.values():
            out.update({s: n for s, n in counts.items() if isinstance(s, int) and (s in REFUSED) == refused})
        return out


class Attacker:
    """One mischievous student with the developer tools (module docstring)."""

    def __init__(self, base: str, port: int, address: str, code: str | None, rng: random.Random) -> None:
        self.port, self.address, self.code, self.rng = port, address, code, rng
        self.stats = AttackStats()
        # No cookies kept: cleared before every request that should come from "nobody".
        self.client = httpx.AsyncClient(base_url=base, timeout=20.0, transport=on_address(self.address))
        # One session that keeps its cookies: its own upload, training and seat.
        self.own = httpx.AsyncClient(base_url=base, timeout=20.0, transport=on_address(self.address))
        # A fake student: a session of its own for one join and its answer, then forgotten.
        self.fake = httpx.AsyncClient(base_url=base, timeout=20.0, transport=on_address(self.address))
        self.pictures: list[bytes] = []
        self.job_id: str | None = None
        self.uploads = self.trainings = 0
        self.sockets: list[asyncio.Task] = []
        self.deadline = 0.0

    async def request(self, label: str, method: str, url: str, client: httpx.AsyncClient | None = None,
                      **kwargs) -> httpx.Response | None:
        """One request (cookie-less unless ``client`` is given); None when it failed (counted)."""
        if client is None:
            client = self.client
            client.cookies.clear()
        try:
            r = await client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            self.stats.error(label, "timeout", url)
            return None
        except httpx.HTTPError as e:
            self.stats.error(label, "connection", f"{method} {url}: {type(e).__name__} {e}")
            return None
        if r.status_code >= 500:
            self.stats.error(label, str(r.status_code), f"{method} {url}: {r.text[:160]}")
            return None
        self.stats.answers[label][r.status_code] += 1
        return r

    # ---------------------------------------------------------------- the attacks

    async def fill_class(self) -> None:
        """Cookie-less joins, each followed by an answer of 666."""
        if self.code is None:
            return
        for _ in range(JOINS_PER_ROUND):
            self.fake.cookies.clear()
            join = await self.request("2 cookie-less join + 666", "GET", f"/class/{self.code}", self.fake)
            if join is not None and join.status_code == 200:
                await self.request("2 cookie-less join + 666", "POST", f"/api/class/{self.code}/answer", self.fake,
                                   json={"value": "666"})

    async def start_classes(self) -> None:
        for _ in range(3):
            await self.request("3 cookie-less POST /class", "POST", "/class")

    async def guess_codes(self) -> None:
        for i in range(GUESSES_PER_ROUND):
            code = "".join(self.rng.choice(CODE_LETTERS) for _ in range(5))
            url = (f"/class/go?code={code}", f"/api/class/{code}", f"/class/{code}/qr.svg")[i % 3]
            await self.request("6 guessing class codes", "GET", url)

    async def upload_and_train(self) -> None:
        if self.uploads < MAX_UPLOADS:
            self.uploads += 1
            await self.request("4 cookie-less upload (1024² noise)", "POST", "/api/images",
                               files={"file": ("noise.png", self.rng.choice(self.pictures), "image/png")})
        if self.trainings < MAX_TRAININGS:  # left running unwatched: the server stops them
            self.trainings += 1
            await self.request("4 cookie-less training start", "POST", "/api/train",
                               json={"dataset": "digits", "epochs": 30})

    async def huge_convolution(self) -> None:
        """64 kernels of 15×15 with padding 64 on a 1024² upload (2.86 GB before issue 12),
        uploaded afresh each time (with ``--check-cleanup`` an upload lives 20 s)."""
        r = await self.request("1 upload for /api/conv", "POST", "/api/images", self.own,
                               files={"file": ("noise.png", self.pictures[0], "image/png")})
        if r is None or r.status_code != 201:
            return
        kernel = [[1.0] * 15 for _ in range(15)]
        await self.request("1 /api/conv 64×15×15, padding 64, 1024² image", "POST", "/api/conv", self.own,
                           json={"image_id": r.json()["id"], "kernel": [[kernel]] * 64, "padding": 64})

    async def huge_predict(self) -> None:
        """A 16 MB grid of 4M rows to the attacker's own model."""
        if self.job_id is None:
            r = await self.request("1 own training (for /predict)", "POST", "/api/train", self.own,
                                   json={"dataset": "digits", "epochs": 2})
            self.job_id = r.json()["id"] if r is not None and r.status_code == 201 else "0" * 32
        body = b'{"grid":[' + b"[0]," * (4_000_000 - 1) + b"[0]]}"
        await self.request("1 /predict, 16 MB body", "POST", f"/api/train/{self.job_id}/predict", self.own,
                           content=body, headers={"content-type": "application/json"})

    async def nested_json(self) -> None:
        """100k nested ``[``: as an /api/conv body, and as a seated student's answer."""
        body = b"[" * 100_000
        json_type = {"content-type": "application/json"}
        await self.request("10 100k nested [ (JSON body)", "POST", "/api/conv", content=body, headers=json_type)
        if self.code is not None:
            await self.request("10 100k nested [ (JSON body)", "GET", f"/class/{self.code}", self.own)
            await self.request("10 100k nested [ (JSON body)", "POST", f"/api/class/{self.code}/answer", self.own,
                               content=body, headers=json_type)

    async def open_sockets(self) -> None:
        """Idle, half-sent-header and half-sent-body sockets, left open: the server must close
        them within its read timeouts (each is watched by a task of its own, up to
        ``SOCKET_LIMIT_S``: none is opened later than that before the end)."""
        if self.deadline - time.monotonic() < SOCKET_LIMIT_S:
            return
        payloads = (b"", b"GET / HTTP/1.1\r\nHost: x\r\n",
                    b"POST /api/conv HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        for payload in payloads:
            for _ in range(SOCKETS_PER_ROUND):
                self.sockets.append(asyncio.create_task(self._socket(payload)))

    async def _socket(self, payload: bytes) -> None:
        label = "5 idle / half-sent sockets"
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(self.address, 0))
        except OSError as e:
            self.stats.error(label, "connection", f"connect: {e}")
            return
        t = time.monotonic()
        try:
            writer.write(payload)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), SOCKET_LIMIT_S)  # to the server's EOF
            self.stats.socket_close_s.append(time.monotonic() - t)
            status = int(answer.split()[1]) if answer.startswith(b"HTTP/") else "closed"
            if isinstance(status, int) and status >= 500:
                self.stats.error(label, str(status), answer[:120].decode(errors="replace"))
            else:
                self.stats.answers[label][status] += 1
        except TimeoutError:
            self.stats.error(label, "still open", f"{payload[:20]!r}… kept {SOCKET_LIMIT_S:g} s")
        except OSError:  # reset by the server: closed too
            self.stats.socket_close_s.append(time.monotonic() - t)
            self.stats.answers[label]["reset"] += 1
        finally:
            writer.close()

    # ---------------------------------------------------------------- the run

    def prepare(self) -> None:
        """The noise pictures to upload (~1 s each to encode)."""
        self.pictures = [noise_png(1024, seed) for seed in range(2)]

    async def run(self, deadline: float) -> None:
        self.deadline = deadline
        # The sockets first: they are watched in the background while the rest go on.
        attacks = [self.open_sockets, self.fill_class, self.start_classes, self.guess_codes, self.upload_and_train,
                   self.huge_convolution, self.huge_predict, self.nested_json]
        try:
            for _round in range(MAX_ROUNDS):
                for attack in attacks:
                    if time.monotonic() >= deadline:
                        return
                    await attack()
                    await asyncio.sleep(self.rng.uniform(*ATTACK_PAUSE_S))
        finally:
            await asyncio.gather(*self.sockets, return_exceptions=True)  # each ends within SOCKET_LIMIT_S
            for client in (self.client, self.own, self.fake):
                await client.aclose()
