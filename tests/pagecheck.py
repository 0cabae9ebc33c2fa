"""Helpers shared by the browser tests (the fixtures themselves are in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

# Screenshots go into the README: keep each small.
SHOT_LIMIT_BYTES = 250 * 1024


def csp_violations(page) -> list[str]:
    """Every Content-Security-Policy violation seen so far (conftest's listener records them)."""
    seen = list(getattr(page, "csp_violations", []))
    try:
        current = page.evaluate("() => window.__cspViolations || []")
    except PlaywrightError:  # the page is closed or between two documents
        current = []
    return seen + [text for text in current if text not in seen]


def assert_clean(page) -> None:
    """No console error, no uncaught exception, no request that left the loopback address,
    no Content-Security-Policy violation."""
    assert page.console_errors == [], page.console_errors
    assert page.outside_requests == []
    violations = csp_violations(page)
    assert violations == [], violations


def query(page) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(page.url).query))


def no_horizontal_scroll(page) -> None:
    assert page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def projector_on(page) -> None:
    if page.locator("html.projector").count() == 0:
        page.locator("#projector-toggle").click()
    expect(page.locator("html")).to_have_class("projector")


def save_shot(page, shots_dir: Path, name: str, full_page: bool = False) -> Path:
    path = shots_dir / name
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size < SHOT_LIMIT_BYTES, f"{name} is {path.stat().st_size} bytes"
    return path
