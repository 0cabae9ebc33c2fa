"""Security headers on every kind of response, cross-site writes refused, and every page of
the lesson free of Content-Security-Policy violations in real Chromium."""

from __future__ import annotations

import io

import numpy as np
import pagecheck
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from playwright.sync_api import expect
from starlette.datastructures import Headers

from cnnlab.app import i18n
from cnnlab.app.lesson import SECTIONS
from cnnlab.app.main import create_app
from cnnlab.app.security import CONTENT_SECURITY_POLICY, is_cross_site

REFUSED = "This request came from another site, so it was refused. Open CNN Lab's own page and try again there."
EXPECTED_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}
PAGES = sorted({s.path for s in SECTIONS} | {"/", "/train", "/pipeline"})


def png_bytes(size: int = 12) -> bytes:
    rng = np.random.default_rng(7)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def csp_directives(value: str) -> dict[str, list[str]]:
    parsed = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            parsed[words[0]] = words[1:]
    return parsed


def assert_secured(response) -> None:
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name)
    assert response.headers.get("referrer-policy") in ("same-origin", "strict-origin-when-cross-origin")
    policy = csp_directives(response.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert "camera=()" in response.headers["permissions-policy"]


# ---------------------------------------------------------------- headers ----------


@pytest.mark.parametrize("path", PAGES)
def test_every_page_has_the_security_headers(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert_secured(response)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/images/samples", 200),
        ("/openapi.json", 200),
        ("/static/css/app.css", 200),
        ("/static/vendor/htmx.min.js", 200),
        ("/healthz", 200),
        ("/no-such-page", 404),
        ("/api/no-such-thing", 404),
        ("/api/images/not-an-id", 404),
        ("/conv?stride=banana", 422),
        ("/api/train/no-such-job", 404),
    ],
)
def test_api_static_and_error_responses_have_the_headers(client, path, status):
    response = client.get(path)
    assert response.status_code == status
    assert_secured(response)


def test_a_server_error_has_the_headers_too():
    # A 500 is answered from outside every middleware: the handler adds the headers itself.
    app = create_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    @app.get("/api/boom")
    def api_boom():
        raise RuntimeError("boom")

    client = TestClient(app, raise_server_exceptions=False)
    for path in ("/boom", "/api/boom"):
        response = client.get(path)
        assert response.status_code == 500
        assert_secured(response)


def test_gzip_and_headers_together(client):
    response = client.get("/static/vendor/htmx.min.js", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert_secured(response)


def test_the_policy_is_the_documented_one():
    assert csp_directives(CONTENT_SECURITY_POLICY) == {
        "default-src": ["'self'"], "script-src": ["'self'"], "style-src": ["'self'"],
        "img-src": ["'self'", "data:"], "connect-src": ["'self'"], "font-src": ["'self'"],
        "object-src": ["'none'"], "base-uri": ["'self'"], "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }


# ---------------------------------------------------------------- cross-site ----------


@pytest.mark.parametrize(
    ("headers", "cross"),
    [
        ({}, False),
        ({"host": "lab.example:8000", "origin": "http://lab.example:8000"}, False),
        ({"host": "lab.example", "origin": "http://lab.example"}, False),
        ({"host": "lab.example", "origin": "https://lab.example"}, False),
        ({"host": "LAB.example:443", "origin": "https://lab.example"}, False),
        ({"host": "lab.example", "sec-fetch-site": "same-origin"}, False),
        ({"host": "lab.example", "sec-fetch-site": "none"}, False),
        ({"host": "lab.example:8000", "origin": "http://lab.example:8001"}, True),
        ({"host": "lab.example", "origin": "http://evil.example"}, True),
        ({"host": "lab.example", "origin": "http://lab.example.evil.example"}, True),
        ({"host": "lab.example", "origin": "null"}, True),
        ({"host": "lab.example", "origin": "file://"}, True),
        ({"host": "lab.example", "sec-fetch-site": "cross-site"}, True),
        ({"host": "lab.example", "sec-fetch-site": "same-site"}, True),
        ({"host": "lab.example", "origin": "http://lab.example", "sec-fetch-site": "cross-site"}, True),
        ({"host": "lab.example", "sec-fetch-site": "something-new"}, True),
        # The browser's own verdict wins: right even behind a proxy that rewrites Host.
        ({"host": "127.0.0.1:8000", "origin": "https://lab.example", "sec-fetch-site": "same-origin"}, False),
    ],
)
def test_is_cross_site(headers, cross):
    assert is_cross_site(Headers(headers)) is cross


def expected_refusal(locale: str) -> str:
    return i18n.get_translations(locale).gettext(REFUSED)


def test_the_refusal_is_translated():
    assert expected_refusal("es") != REFUSED  # a Spanish msgstr exists
    assert expected_refusal("en") == REFUSED


FORGED = [
    {"origin": "http://evil.example"},
    {"origin": "null"},
    {"sec-fetch-site": "cross-site"},
    {"origin": "http://testserver:81"},
]


@pytest.mark.parametrize("forged", FORGED)
def test_forged_api_posts_are_refused_with_a_message(client, forged):
    checks = [
        ("post", "/api/train", {"json": {"dataset": "digits", "epochs": 1}}),
        ("post", "/api/conv", {"json": {"input": [[1, 2], [3, 4]], "kernel": [[1]]}}),
        ("post", "/api/images", {"files": {"file": ("a.png", png_bytes(), "image/png")}}),
        ("delete", "/api/train/whatever", {}),
        ("put", "/api/train/whatever", {}),
        ("patch", "/api/train/whatever", {}),
    ]
    for method, path, kwargs in checks:
        response = client.request(method.upper(), path, headers=forged, **kwargs)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json() == {"detail": expected_refusal("es")}
        assert_secured(response)
    response = client.post("/api/conv?lang=en", headers=forged, json={"input": [[1]], "kernel": [[1]]})
    assert response.json() == {"detail": REFUSED}


@pytest.mark.parametrize("path", ["/conv/upload", "/pipeline/upload", "/grid/upload", "/train/jobs", "/train/load"])
def test_forged_page_posts_get_a_translated_page(client, html, path):
    files = {"file": ("a.png", png_bytes(), "image/png")}
    response = client.post(path, headers={"origin": "http://evil.example"}, files=files, follow_redirects=False)
    assert response.status_code == 403
    page = html(response)
    assert page.select_one(".error-page__message").get_text(strip=True) == expected_refusal("es")
    assert page.select_one("html")["lang"] == "es"
    response = client.post(path + "?lang=en", headers={"sec-fetch-site": "same-site"}, files=files)
    assert html(response).select_one(".error-page__message").get_text(strip=True) == REFUSED


def test_a_refused_request_changes_nothing(client, tmp_path):
    # The forged training does not start and the forged upload is not stored.
    response = client.post("/api/train", headers={"origin": "http://evil.example"}, json={"dataset": "digits", "epochs": 1})
    assert response.status_code == 403
    assert client.get("/api/train").json() == {"jobs": []}
    data = png_bytes(17)
    response = client.post("/api/images", headers={"origin": "http://evil.example"},
                           files={"file": ("a.png", data, "image/png")})
    assert response.status_code == 403
    stored = client.post("/api/images", files={"file": ("a.png", data, "image/png")}).json()
    # Same picture, same id: it was not stored before (its id is new to this run's listing).
    assert client.get(f"/images/{stored['id']}.png").status_code == 200


def test_same_origin_and_headerless_writes_are_allowed(client):
    body = {"input": [[1, 2], [3, 4]], "kernel": [[1]]}
    for headers in ({}, {"origin": "http://testserver"}, {"sec-fetch-site": "same-origin", "origin": "http://testserver"}):
        response = client.post("/api/conv", headers=headers, json=body)
        assert response.status_code == 200, response.text
        assert response.json()["output"] == [[1.0, 2.0], [3.0, 4.0]]


def test_safe_methods_from_another_site_are_allowed(client):
    response = client.get("/api/images/samples", headers={"origin": "http://evil.example", "sec-fetch-site": "cross-site"})
    assert response.status_code == 200


# ---------------------------------------------------------------- browser ----------


def test_the_violation_detector_works(page, live_server):
    page.goto(f"{live_server}/")
    assert pagecheck.csp_violations(page) == []
    page.evaluate("() => document.body.setAttribute('style', 'background: red')")
    page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';
                             document.body.append(s); }""")
    page.wait_for_function("() => window.__cspViolations.length >= 2")
    # The policy held: neither the style nor the script took effect.
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") != "rgb(255, 0, 0)"
    assert page.evaluate("() => window.__ran") is None
    directives = [text.split()[0] for text in pagecheck.csp_violations(page)]
    assert "style-src-attr" in directives and "script-src-elem" in directives
    # Chromium also logs each one as a console error ("Refused to …" / "… violates …").
    assert sum("Content Security Policy" in text for text in page.console_errors) >= 2
    with pytest.raises(AssertionError):
        pagecheck.assert_clean(page)
    page.console_errors.clear()  # the binding's record alone must still fail the check
    with pytest.raises(AssertionError, match="style-src-attr"):
        pagecheck.assert_clean(page)
    # Violations on a page navigated away from still count (reported through the binding).
    page.goto(f"{live_server}/pool")
    page.wait_for_load_state()
    assert len(page.csp_violations) >= 2
    page.console_errors.clear()
    page.csp_violations.clear()


@pytest.mark.parametrize("path", PAGES)
def test_every_page_runs_without_a_policy_violation(page, live_server, path):
    response = page.goto(f"{live_server}{path}")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    page.wait_for_load_state("networkidle")
    # Projector mode and the other language exercise the shared script on a second render.
    pagecheck.projector_on(page)
    page.goto(f"{live_server}{path}{'&' if '?' in path else '?'}lang=en")
    page.wait_for_load_state("networkidle")
    pagecheck.assert_clean(page)


def test_a_same_origin_write_from_the_browser_is_allowed(page, live_server):
    page.goto(f"{live_server}/conv?preset=seed")
    status = page.evaluate("""async () => (await fetch('/api/conv', {method: 'POST',
        headers: {'content-type': 'application/json'},
        body: JSON.stringify({input: [[1, 2], [3, 4]], kernel: [[1]]})})).status""")
    assert status == 200
    # The page's own htmx upload form is a same-origin POST as well.
    page.set_input_files("#conv-file", {"name": "tiny.png", "mimeType": "image/png", "buffer": png_bytes(20)})
    expect(page.locator("#conv-lab")).to_be_visible()
    page.wait_for_url(lambda url: "image=" in url)
    pagecheck.assert_clean(page)


def test_an_htmx_swap_does_not_copy_style_attributes(page, live_server):
    # A script may style an element through CSSOM (allowed), which shows as a style attribute;
    # htmx's settle step would copy it with setAttribute("style"), which the policy refuses.
    # base.html's htmx-config leaves "style" out of attributesToSettle.
    page.goto(f"{live_server}/pipeline?show=conv-0-2-3")
    page.evaluate("() => { for (const el of document.querySelectorAll('[id]')) el.style.outlineOffset = '1px'; }")
    styled = page.evaluate("() => document.getElementById('pl-keep-show').getAttribute('style')")
    assert styled == "outline-offset: 1px;"
    page.locator("#pl-loss-button").click()
    expect(page.locator("#pl-pq")).to_be_visible()
    page.wait_for_load_state("networkidle")
    pagecheck.assert_clean(page)
