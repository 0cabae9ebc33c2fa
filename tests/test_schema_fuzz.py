"""The app fuzzed through its own OpenAPI schema (``/openapi.json``).

1. Schemathesis generates requests for every operation of the schema, valid and invalid
   (broken JSON, wrong types, out-of-range numbers, odd path ids), sends them to the ASGI
   app in-process and checks each answer: never a 5xx, a status the schema declares for
   that operation, the declared content type, and a body matching the declared schema.
2. Pages read their state from the query string by hand, so the schema lists no parameters
   for them and schemathesis would send each page one bare request. ``test_query_fuzz`` fills
   that gap: it reads every parameter name a page's own forms and links use, and sends
   hypothesis-made mixtures of real and hostile values, with and without ``HX-Request``, with
   the same checks (no 5xx, a declared status, the declared content type).

No training is ever started: for the whole module the app's job runner is one that queues
jobs and never starts a process (a queue that fills up answers 429, as a busy server does).
Server-sent event streams (``/events``) would never end and are left out.

About 30 s of CPU: a fixed example count per operation and a fixed seed (``deterministic``,
``derandomize``), so a failure reproduces on every run.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import schemathesis
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cnnlab.app.jobs import JobRunner
from cnnlab.app.main import app
from cnnlab.app.settings import settings_for

MAX_EXAMPLES = 25
PAGE_EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
# Event streams end only when their job does; everything else is fuzzed.
schema = schema.exclude(path_regex=r"/events$")


class QueueOnlyRunner(JobRunner):
    """The real runner's bookkeeping (limits, sessions, queue, 404s), but no job ever starts:
    the fuzz must not spawn dozens of training processes."""

    def _dispatch(self) -> None:
        self._positions()


@pytest.fixture(scope="module", autouse=True)
def no_trainings() -> Iterator[JobRunner]:
    with TestClient(app):  # the lifespan has made the real runner
        real = app.state.jobs
        fake = QueueOnlyRunner(settings_for(app))
        app.state.jobs = fake
        try:
            yield fake
        finally:
            app.state.jobs = real
            fake.shutdown()
            # Schemathesis keeps the app's lifespan running for the rest of the process; ended
            # here, the next test's lifespan makes a runner with that test's settings.
            shutdown_lifespans()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
def test_operation_conforms(case) -> None:
    case.call_and_validate(checks=CHECKS)


def test_fuzz_reached_training_starts_but_started_no_process(no_trainings: QueueOnlyRunner) -> None:
    """Runs after the fuzz above: valid training specs got through to the runner (queued, up
    to the queue's limit, then 429), and the stand-in runner really stood in: no job ran."""
    jobs = list(no_trainings._jobs.values())
    assert any(job.status == "queued" for job in jobs), "the fuzz never reached a training start"
    assert all(job.status in {"queued", "stopped", "done"} for job in jobs), {job.status for job in jobs}
    assert not no_trainings._threads


# ---------------------------------------------------------------------------- pages

OPENAPI = app.openapi()


def _html_pages() -> list[str]:
    """GET paths without path parameters that answer HTML (every page of the lesson)."""
    pages = []
    for path, operations in OPENAPI["paths"].items():
        get = operations.get("get")
        if get is None or "{" in path:
            continue
        if "text/html" in get.get("responses", {}).get("200", {}).get("content", {}):
            pages.append(path)
    return sorted(pages)


PAGES = _html_pages()
SAMPLES = ["camera", "chelsea", "digit"]
# Routes that read the query string by hand, beyond the pages: the page whose forms and links
# name their parameters, and the names only they read.
QUERY_ROUTES: dict[str, tuple[str, dict[str, list[str]]]] = {
    **{page: (page, {}) for page in PAGES},
    "/conv": ("/conv", {"image": SAMPLES, "source": ["image", "grid"]}),
    "/conv/output.png": ("/conv", {"image": SAMPLES, "source": ["image"], "filter": ["0", "1", "3"],
                                   "res": ["work", "full"]}),
    "/conv/input.png": ("/conv", {"image": SAMPLES, "source": ["image"], "channel": ["0", "2"],
                                  "res": ["work", "full"]}),
    "/api/pipeline": ("/pipeline", {}),
}
HOSTILE = ["", " ", "-1", "0", "1e309", "nan", "-inf", "99999999999999999999", "1.5", "abc", "ñ∑≈", "%00",
           "0x10", "[1,2]", "1,2;3", "../../etc/passwd", "9" * 400, "-0", "3 ", "true",
           "0" * 32]  # shaped like an upload id, but none was stored under it


def _responses(path: str) -> dict[str, dict]:
    return OPENAPI["paths"][path]["get"]["responses"]


@functools.cache
def _links() -> tuple[tuple[str, str], ...]:
    """(page, link) for every link and htmx GET on every page, as first served."""
    with TestClient(app) as client:
        return tuple((page, link.get("href") or link.get("hx-get"))
                     for page in PAGES
                     for link in BeautifulSoup(client.get(page).text, "html.parser").select("a[href], [hx-get]"))


def _parameters(client: TestClient, path: str) -> dict[str, list[str]]:
    """Every query parameter the page uses (its form fields and buttons, and the links to it
    from every page), with the values offered."""
    soup = BeautifulSoup(client.get(path).text, "html.parser")
    found: dict[str, set[str]] = {}
    for field in soup.select("form input[name], form select[name], form textarea[name], form button[name]"):
        values = found.setdefault(field["name"], set())
        if field.name == "select":
            values.update(option.get("value", option.text) for option in field.select("option"))
        elif field.get("value") is not None:
            values.add(field["value"])
    for page, link in _links():
        target = urlsplit(link)
        if (target.path == path or (page == path and not target.path)) and not target.netloc:
            for name, value in parse_qsl(target.query, keep_blank_values=True):
                found.setdefault(name, set()).add(value)
    found.pop("lang", None)  # the locale middleware's, tested in test_i18n.py
    return {name: sorted(values) for name, values in found.items()}


def _queries(parameters: dict[str, list[str]]) -> st.SearchStrategy[dict[str, str]]:
    if not parameters:
        return st.just({})
    values = {name: st.sampled_from(offered) | st.sampled_from(HOSTILE) | st.text(max_size=12) if offered
              else st.sampled_from(HOSTILE) | st.text(max_size=12)
              for name, offered in parameters.items()}
    return st.fixed_dictionaries({}, optional=values)


def test_every_lesson_page_is_fuzzed() -> None:
    """The page list comes from the schema: it must hold the lesson's pages."""
    assert {"/", "/conv", "/pool", "/grid", "/local", "/activation", "/pipeline", "/train"} <= set(PAGES)


@pytest.mark.parametrize("path", sorted(QUERY_ROUTES))
def test_query_fuzz(path: str) -> None:
    source, extra = QUERY_ROUTES[path]
    responses = _responses(path)
    # A server error is answered (500), not raised, so the assertion below names the URL.
    with TestClient(app, raise_server_exceptions=False) as client:
        parameters = {**_parameters(client, source), **extra}

        @settings(max_examples=PAGE_EXAMPLES, derandomize=True, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(query=_queries(parameters), htmx=st.booleans())
        def check(query: dict[str, str], htmx: bool) -> None:
            url = f"{path}?{urlencode(query)}" if query else path
            response = client.get(url, headers={"HX-Request": "true"} if htmx else {}, follow_redirects=False)
            status = response.status_code
            assert status < 500, (url, status, response.text[:500])
            assert str(status) in responses, f"{url} answered {status}; the schema declares {sorted(responses)}"
            declared_types = set(responses[str(status)].get("content", {}))
            media_type = response.headers.get("content-type", "").split(";")[0]
            assert not declared_types or media_type in declared_types, (url, status, media_type, declared_types)

        check()


def test_query_fuzz_finds_parameters() -> None:
    """The query fuzz is only as good as the names it finds: /conv's form has its controls,
    /pool its step buttons."""
    with TestClient(app) as client:
        assert {"stride", "padding", "kernel"} <= set(_parameters(client, "/conv"))
        assert {"kind", "size", "step"} <= set(_parameters(client, "/pool"))


# ---------------------------------------------------------------------------- framework messages


@pytest.mark.parametrize("locale", ["es", "en"])
def test_a_body_that_cannot_be_read_is_explained_in_the_request_language(locale: str) -> None:
    """The fuzz's broken bodies got FastAPI's English "There was an error parsing the body"."""
    from cnnlab.app.errors import _FRAMEWORK_DETAILS
    from cnnlab.app.i18n import get_translations

    msgid = _FRAMEWORK_DETAILS["There was an error parsing the body"]
    with TestClient(app) as client:
        response = client.post(f"/api/softmax?lang={locale}", content=b"\xff\xfe{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    expected = get_translations(locale).gettext(msgid)
    assert response.json() == {"detail": expected}
    assert (expected != msgid) == (locale == "es")  # Spanish really is a translation


# ---------------------------------------------------------------------------- the middleware's answers

LONG_QUERY = "x=" + "1" * 40_000  # past app.guards.MAX_QUERY_BYTES


@pytest.mark.parametrize(("method", "url", "path", "headers", "status"), [
    ("GET", "/conv?stride=1&stride=2", "/conv", {}, 400),  # a parameter twice, two values
    ("GET", "/api/pipeline?index=1&index=2", "/api/pipeline", {}, 400),
    ("GET", f"/pool?{LONG_QUERY}", "/pool", {}, 414),
    ("GET", f"/api/images/samples?{LONG_QUERY}", "/api/images/samples", {}, 414),
    ("POST", "/api/softmax", "/api/softmax", {"Origin": "https://elsewhere.example"}, 403),
    ("POST", "/conv/upload", "/conv/upload", {"Sec-Fetch-Site": "cross-site"}, 403),
    ("POST", "/api/pool", "/api/pool", {"Content-Length": str(10**9)}, 413),
])
def test_the_middleware_answers_are_in_the_schema(method, url, path, headers, status) -> None:
    """What the middleware answers before any route runs is declared for every operation
    (app.api_schema.document_guards), with the content it really has."""
    from cnnlab.app.api_schema import ErrorBody

    with TestClient(app) as client:
        body = b"" if "Content-Length" in headers else b'{"logits": [1]}'
        response = client.request(method, url, headers=headers, content=body if method == "POST" else None)
    assert response.status_code == status, response.text[:300]
    declared = OPENAPI["paths"][path][method.lower()]["responses"][str(status)]
    assert response.headers["content-type"].split(";")[0] in declared["content"]
    if path.startswith("/api/"):
        assert ErrorBody.model_validate(response.json()).detail
