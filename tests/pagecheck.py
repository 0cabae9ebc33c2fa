"""Helpers shared by the page and browser tests (the fixtures themselves are in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from bs4 import BeautifulSoup
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from cnnlab.app.i18n import gettext, use_locale

# Screenshots go into the README: keep each small.
SHOT_LIMIT_BYTES = 250 * 1024
# axe-core, a test-only npm package (tests/a11y/package.json; conftest's ``axe_source`` reads it).
AXE_DIR = Path(__file__).resolve().parent / "a11y"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")


def soup(response) -> BeautifulSoup:
    """A response's HTML, to assert through CSS selectors (conftest's ``html`` fixture too)."""
    return BeautifulSoup(response.text, "html.parser")


def text(node) -> str:
    """A node's text with its whitespace collapsed."""
    return " ".join(node.get_text().split())


def translated(msgid: str, locale: str = "es", **params) -> str:
    """The catalog's text for ``msgid`` in ``locale``, with ``params`` filled in."""
    with use_locale(locale):
        message = gettext(msgid)
    return message % params if params else message


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


def axe_findings(page, axe_source: str) -> list[dict]:
    """Every axe-core violation on the page as it is now (id, impact, help, nodes' targets)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source)
    return page.evaluate(
        """async () => {
          // Two frames: static/js/a11y.js updates the scrolling boxes on the next frame after a
          // resize, a swap or projector mode.
          await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
          const result = await axe.run(document, {resultTypes: ['violations']});
          return result.violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help,
            targets: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' — ' + (n.failureSummary || '').replace(/\\s+/g, ' ')),
          }));
        }"""
    )


def assert_axe_clean(page, axe_source: str, where: str) -> None:
    """No serious or critical axe-core finding on the page as it is now."""
    blocking = [v for v in axe_findings(page, axe_source) if v["impact"] in BLOCKING]
    report = "\n".join(
        f"{v['impact']} {v['id']}: {v['help']}\n" + "\n".join(f"    {t}" for t in v["targets"]) for v in blocking
    )
    assert not blocking, f"axe-core on {where}:\n{report}"


def assert_on_first_screen(page, selector: str, min_font_px: float | None = None) -> None:
    """Every element matching ``selector`` is visible and wholly inside the viewport as the page
    is scrolled now (no scrolling needed to see it), and, with ``min_font_px``, every piece of
    text inside it is rendered at least that large (numbers read from the back of a room)."""
    found = page.evaluate(
        """([selector, minFont]) => {
          const vw = document.documentElement.clientWidth, vh = window.innerHeight;
          const els = Array.from(document.querySelectorAll(selector));
          const problems = [];
          if (els.length === 0) problems.push('nothing matches');
          for (const el of els) {
            const r = el.getBoundingClientRect();
            const name = el.id ? '#' + el.id : el.tagName.toLowerCase() + (el.className ? '.' + String(el.className).split(' ').join('.') : '');
            if (r.width === 0 || r.height === 0) { problems.push(name + ' has no size'); continue; }
            if (r.left < -0.5 || r.top < -0.5 || r.right > vw + 0.5 || r.bottom > vh + 0.5)
              problems.push(`${name} at (${r.left|0}, ${r.top|0})–(${r.right|0}, ${r.bottom|0}) leaves the ${vw}×${vh} viewport`);
            if (minFont) {
              const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
              for (let t = walker.nextNode(); t; t = walker.nextNode()) {
                if (!t.textContent.trim()) continue;
                const holder = t.parentElement;
                // Text that is not rendered (display: none, a closed <details>, visually hidden)
                // is nobody's to read.
                if (holder.closest('.visually-hidden, [hidden]') || holder.getClientRects().length === 0
                    || getComputedStyle(holder).visibility === 'hidden') continue;
                const size = parseFloat(getComputedStyle(holder).fontSize);
                if (size < minFont) { problems.push(`${name}: "${t.textContent.trim().slice(0, 20)}" is ${size}px`); break; }
              }
            }
          }
          return problems;
        }""",
        [selector, min_font_px],
    )
    assert found == [], f"{selector}: " + "; ".join(found)


def draw_stroke(page) -> None:
    """A "1" on /train's pad: one stroke down the middle, by the mouse."""
    pad = page.locator("#train-pad")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x + 0.5 * w, y + 0.15 * h)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x + 0.5 * w, y + (0.15 + 0.07 * i) * h)
    page.mouse.up()


def goto(page, url: str) -> None:
    """Open ``url`` and wait until its deferred scripts (htmx among them) have run."""
    page.goto(url)
    page.wait_for_function("() => window.htmx !== undefined && document.readyState === 'complete'")


def readable(page, *selectors: str) -> None:
    """What ``selectors`` name is on the first screen with numbers ≥ 20 px (readable from the
    back of a room), and nothing scrolls sideways."""
    for selector in selectors:
        assert_on_first_screen(page, selector, min_font_px=20)
    no_horizontal_scroll(page)
