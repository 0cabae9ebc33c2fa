"""What the first load of a /conv page costs: bytes on the wire and time to serve the page.

    python benchmarks/page_weight.py [--warm 20] [--url "/conv?preset=seed" ...] [--no-gzip]

Starts the real server (``python -m uvicorn app.main:app``, one worker, as ``cnnlab`` runs)
on a free loopback port, then for each page (default: the slides' example and the cat at
working size 32 in colour):

- loads the page and everything a browser would fetch for it: stylesheets and icons
  (``<link href>``), scripts (``<script src>``), pictures (``<img src>``, SVG
  ``<image href>``) and ``url(...)`` inside the stylesheets, each once, with
  ``Accept-Encoding: gzip, deflate, br`` as a browser sends it (``--no-gzip``: identity);
- sums the bytes transferred: response bodies as sent (compressed when the server
  compressed them) and, separately, with the response headers;
- times the page request itself from the client (connect, send, last byte read): the
  first (cold) request for that page, then the median and maximum of ``--warm`` more.

The first page measured is the first request the fresh server answers, so its cold time
includes whatever the server does lazily (imports, template compilation); later pages
share that warm-up but not their own image decoding. Targets (issue 3): ≤ 400 KB in all,
≤ 100 ms served from loopback.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import time
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from _server import free_port, stop_server, wait_until_up

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_URLS = ("/conv?preset=seed", "/conv?image=chelsea&size=32&color=rgb")
TARGET_BYTES = 400 * 1024
TARGET_MS = 100.0
BROWSER_ENCODINGS = "gzip, deflate, br"
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)")


def start_server(port: int) -> subprocess.Popen:
    """``python -m uvicorn app.main:app`` on loopback; returns once /healthz answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "cnnlab.app.main:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=ROOT,
    )
    return wait_until_up(proc, port)


class Fetched:
    def __init__(self, path: str, status: int, body: bytes, header_bytes: int, encoding: str, ms: float) -> None:
        self.path = path
        self.status = status
        self.body = body
        self.header_bytes = header_bytes
        self.encoding = encoding
        self.ms = ms


def fetch(port: int, path: str, gzip: bool) -> Fetched:
    """One GET on a new connection; the body is kept as sent (http.client never decodes it)."""
    headers = {"Accept-Encoding": BROWSER_ENCODINGS if gzip else "identity", "Accept": "*/*"}
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    ms = (time.perf_counter() - t0) * 1000
    conn.close()
    # What came over the wire before the body: the status line and "name: value\r\n" lines.
    header_bytes = len(f"HTTP/1.1 {resp.status} {resp.reason}\r\n") + 2
    header_bytes += sum(len(k) + len(v) + 4 for k, v in resp.getheaders())
    return Fetched(path, resp.status, body, header_bytes, resp.getheader("content-encoding", "identity"), ms)


class AssetFinder(HTMLParser):
    """The URLs a browser fetches while loading the page (not links it merely shows)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        rel = (a.get("rel") or "").lower().split()
        url = None
        if tag == "link" and {"stylesheet", "icon", "preload", "modulepreload", "manifest"} & set(rel):
            url = a.get("href")
        elif tag in ("script", "img", "iframe", "video", "audio", "source"):
            url = a.get("src")
        elif tag == "image":  # SVG <image href="...">
            url = a.get("href") or a.get("xlink:href")
        if url and not url.startswith(("data:", "#")):
            self.urls.append(url)


def local_path(base: str, url: str) -> str | None:
    parts = urlsplit(urljoin(base, url))
    if parts.netloc and parts.netloc.split(":")[0] not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"the page loads {url} from another host: it must work offline")
    return parts.path + (f"?{parts.query}" if parts.query else "")


def load_page(port: int, page: str, gzip: bool, warm: int) -> dict:
    first = fetch(port, page, gzip)
    if first.status != 200:
        raise SystemExit(f"{page} answered {first.status}")
    times = [fetch(port, page, gzip).ms for _ in range(warm)]
    finder = AssetFinder()
    finder.feed(first.body.decode("utf-8", "replace") if first.encoding == "identity" else _gunzip(first.body))
    queue = [local_path(page, u) for u in finder.urls]
    seen: set[str] = set()
    assets: list[Fetched] = []
    while queue:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        got = fetch(port, path, gzip)
        if got.status != 200:
            raise SystemExit(f"{path} (referenced by {page}) answered {got.status}")
        assets.append(got)
        if path.split("?")[0].endswith(".css"):
            text = got.body.decode("utf-8", "replace") if got.encoding == "identity" else _gunzip(got.body)
            queue += [local_path(path, u) for u in CSS_URL.findall(text) if not u.startswith("data:")]
    return {"page": first, "times": times, "assets": assets}


def _gunzip(body: bytes) -> str:
    import gzip as gz

    return gz.decompress(body).decode("utf-8", "replace")


def kb(n: int) -> str:
    return f"{n / 1024:.1f}"


def report(result: dict, warm: int) -> tuple[bool, bool]:
    page: Fetched = result["page"]
    rows = [page] + result["assets"]
    body = sum(len(r.body) for r in rows)
    total = body + sum(r.header_bytes for r in rows)
    print(f"\n### {page.path}\n")
    print("| resource | encoding | body KB |")
    print("|---|---|---:|")
    for r in rows:
        shown = r.path if len(r.path) <= 90 else r.path[:87] + "..."
        print(f"| `{shown}` | {r.encoding} | {kb(len(r.body))} |")
    median = statistics.median(result["times"]) if result["times"] else float("nan")
    worst = max(result["times"]) if result["times"] else float("nan")
    weight_ok = total <= TARGET_BYTES
    time_ok = page.ms <= TARGET_MS and median <= TARGET_MS
    print()
    print("| measure | value | target |")
    print("|---|---:|---|")
    print(f"| requests | {len(rows)} | |")
    print(f"| bytes transferred, bodies | {kb(body)} KB | |")
    print(f"| bytes transferred, bodies + headers | {kb(total)} KB | ≤ 400 KB {'✓' if weight_ok else '✗'} |")
    print(f"| page request, first (cold) | {page.ms:.1f} ms | ≤ 100 ms {'✓' if page.ms <= TARGET_MS else '✗'} |")
    print(f"| page request, median of {warm} warm | {median:.1f} ms | ≤ 100 ms {'✓' if median <= TARGET_MS else '✗'} |")
    print(f"| page request, slowest of {warm} warm | {worst:.1f} ms | |")
    return weight_ok, time_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", action="append", help="a page to measure (repeatable); default: the two of issue 3")
    parser.add_argument("--warm", type=int, default=20, help="warm requests timed per page (default %(default)s)")
    parser.add_argument("--no-gzip", action="store_true", help="ask for identity encoding (what compression saves)")
    args = parser.parse_args(argv)
    port = free_port()
    server = start_server(port)
    ok = True
    try:
        print(f"Server: python -m uvicorn app.main:app on 127.0.0.1:{port} (1 worker); "
              f"Accept-Encoding: {'identity' if args.no_gzip else BROWSER_ENCODINGS}")
        for page in args.url or DEFAULT_URLS:
            weight_ok, time_ok = report(load_page(port, page, not args.no_gzip, args.warm), args.warm)
            ok = ok and weight_ok and time_ok
    finally:
        stop_server(server)
    print(f"\n{'All targets met.' if ok else 'A target was missed.'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
