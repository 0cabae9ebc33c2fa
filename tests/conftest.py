"""Fixtures shared by every test file.

- ``client``: FastAPI TestClient on the real app (fresh cookies per test).
- ``live_server``: the real app under uvicorn on a free loopback port (one per session);
  yields its base URL, e.g. ``http://127.0.0.1:41234``.
- ``browser`` / ``page``: Debian's Chromium driven by Playwright (Playwright's own browser
  download is never used). ``page`` refuses every request that leaves the loopback address
  and records it in ``page.outside_requests``; console errors and uncaught exceptions are in
  ``page.console_errors``, CSP violations in ``page.csp_violations``. Tests assert all are
  empty (pagecheck.assert_clean). ``open_page(**context_options)`` opens more such pages,
  each in a browser context of its own (a second person: a student's phone).
- ``html(response)``: BeautifulSoup of a response, to assert through CSS selectors.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

# Each test session stores uploads in a folder of its own, so parallel runs (and a running
# app) never sweep or read each other's files. Set before the app reads its settings.
if "CNNLAB_UPLOAD_DIR" not in os.environ:
    os.environ["CNNLAB_UPLOAD_DIR"] = tempfile.mkdtemp(prefix="cnnlab-test-uploads-")
    atexit.register(shutil.rmtree, os.environ["CNNLAB_UPLOAD_DIR"], True)
# Likewise the data folder (the secret key's file).
if "CNNLAB_DATA_DIR" not in os.environ:
    os.environ["CNNLAB_DATA_DIR"] = tempfile.mkdtemp(prefix="cnnlab-test-data-")
    atexit.register(shutil.rmtree, os.environ["CNNLAB_DATA_DIR"], True)

from cnnlab.app.main import app as cnnlab_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHOTS_DIR = Path(os.environ.get("CNNLAB_SHOTS_DIR", "/tmp/shots"))

# Runs before any script of every page: each CSP violation goes to window.__cspViolations and
# to the test (through the binding, so violations on pages navigated away from still count).
CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  var text = event.effectiveDirective + " refused " + (event.blockedURI || "inline") + " in " +
    event.sourceFile + ":" + event.lineNumber + " " + (event.sample || "");
  window.__cspViolations.push(text);
  if (window.__cnnlabCspViolation) { window.__cnnlabCspViolation(text); }
}, true);
"""

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


# ---------------------------------------------------------------- shared engine ----------


@pytest.fixture(scope="session")
def valkey(tmp_path_factory) -> Iterator["ValkeyServer"]:
    """A real Valkey server on a free loopback port for the whole run (tests/valkeyserver.py)."""
    from tests.valkeyserver import ValkeyServer

    with ValkeyServer(tmp_path_factory.mktemp("valkey")) as server:
        yield server


@pytest.fixture
def redis_url(valkey) -> str:
    """The shared engine's URL, emptied for this test."""
    valkey.flush()
    return valkey.url


# ---------------------------------------------------------------- HTTP ----------


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    """Every test starts with no count: per-address limits would otherwise add up over the
    suite, whose requests all come from one address."""
    from cnnlab.app import ratelimit

    ratelimit.reset()


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(cnnlab_app) as test_client:
        yield test_client
    cnnlab_app.dependency_overrides.clear()


@pytest.fixture
def html() -> Callable[..., BeautifulSoup]:
    from pagecheck import soup

    return soup


# ---------------------------------------------------------------- live server ----------


class _ThreadedServer(uvicorn.Server):
    # Signal handlers can only be installed in the main thread; the test process keeps its own.
    def install_signal_handlers(self) -> None:
        pass


@pytest.fixture(scope="session")
def live_server() -> Iterator[str]:
    # Bind the socket here and hand it to uvicorn, so no other process can take the port
    # between choosing it and listening on it.
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every answer waited ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    config = uvicorn.Config(cnnlab_app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    server = _ThreadedServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-server", daemon=True)
    thread.start()
    base_url = f"http://{host}:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if not thread.is_alive():
            pytest.fail("the live server thread exited before answering /healthz")
        if time.monotonic() > deadline:
            pytest.fail(f"the live server did not answer {base_url}/healthz within 15 s")
        time.sleep(0.05)
    yield base_url
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
    if thread.is_alive():
        pytest.fail("the live server did not shut down within 10 s")


# ---------------------------------------------------------------- browser ----------


def chromium_path() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "Chromium is not installed: browser tests need Debian's chromium package at /usr/bin/chromium "
        "(run `bash scripts/test.sh`, which installs it, or `apt-get install chromium`).",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser, live_server):
    """Opens pages, each in a fresh browser context (no cookies, no storage) with the given
    context options, checked like a visitor's: requests off the loopback address are refused
    and recorded in ``page.outside_requests``; console errors and uncaught exceptions go to
    ``page.console_errors``, Content-Security-Policy violations (an inline style or script,
    an outside resource) to ``page.csp_violations``, so pagecheck.assert_clean fails on any."""
    local_host = urlsplit(live_server).netloc
    contexts = []

    def open_(**context_options):
        context = browser.new_context(**context_options)
        contexts.append(context)
        outside_requests: list[str] = []

        def only_loopback(route, request) -> None:
            # Offline means offline: anything not served by the app under test is refused.
            target = urlsplit(request.url)
            if target.scheme in ("data", "blob") or target.netloc == local_host:
                route.continue_()
            else:
                outside_requests.append(request.url)
                route.abort()

        context.route("**/*", only_loopback)
        browser_page = context.new_page()
        browser_page.set_default_timeout(10_000)
        console_errors: list[str] = []
        browser_page.on(
            "console",
            lambda msg: console_errors.append(f"{msg.text} [{msg.location.get('url', '')}]") if msg.type == "error" else None,
        )
        browser_page.on("pageerror", lambda exc: console_errors.append(f"uncaught: {exc}"))
        csp_violations: list[str] = []
        context.expose_binding("__cnnlabCspViolation", lambda _source, text: csp_violations.append(text))
        context.add_init_script(CSP_LISTENER)
        browser_page.csp_violations = csp_violations
        browser_page.console_errors = console_errors
        browser_page.outside_requests = outside_requests
        return browser_page

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def page(open_page):
    """A fresh page at 1280×720."""
    # An English-speaking browser on purpose: the app must still start in Spanish.
    return open_page(viewport={"width": 1280, "height": 720}, locale="en-US")


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's script, for pagecheck.assert_axe_clean; missing, the test fails (never skips)."""
    from pagecheck import AXE_JS

    if not AXE_JS.is_file():
        pytest.fail(
            f"axe-core is not installed ({AXE_JS} is missing): run `bash scripts/test.sh`, which installs it, "
            "or `npm ci --prefix tests/a11y --no-audit --no-fund` (needs Node.js and npm).",
            pytrace=False,
        )
    return AXE_JS.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def shots_dir() -> Path:
    SHOTS_DIR.mkdir(parents=True, exist_ok=True)
    return SHOTS_DIR
