"""Valkey down (CNNLAB_REDIS_URL points where nothing answers): a page or an API call that
needs the shared store answers 503 with Retry-After and a sentence in the request's language,
as JSON under /api and as the error page elsewhere; never a 500, never a trace, never a hang.
What needs no shared state keeps working."""

from __future__ import annotations

import time

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

from cnnlab.app.i18n import gettext, use_locale
from cnnlab.app.main import create_app
from cnnlab.app.settings import Settings, get_settings
from tests.serverproc import free_port

MESSAGE = "The shared store of the server is not answering; try again in a few seconds."


def said(locale: str) -> str:
    with use_locale(locale):
        return gettext(MESSAGE)


@pytest.fixture
def down(tmp_path) -> TestClient:
    """An app whose Valkey is a loopback port where nothing listens."""
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", secret_key="k",
                        upload_dir=tmp_path / "uploads", data_dir=tmp_path / "data")
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: settings
    # What a browser would see, whichever layer meets the outage first.
    return TestClient(app, raise_server_exceptions=False)


def test_the_sentence_is_translated():
    assert said("es") != said("en") == MESSAGE
    assert "inténtalo de nuevo" in said("es")


def assert_unavailable_json(response, locale: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json() == {"detail": said(locale)}


def assert_unavailable_page(response, locale: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"].startswith("text/html")
    page = BeautifulSoup(response.text, "html.parser")
    assert said(locale) in page.get_text(" ", strip=True)
    assert page.find("html") is not None and page.find("html").get("lang") == locale  # the usual page
    assert "Traceback" not in response.text


@pytest.mark.parametrize("locale", ["es", "en"])
def test_a_class_page_says_the_store_is_down(down, locale):
    started = time.monotonic()
    assert_unavailable_page(down.get(f"/class/ABCDEF?lang={locale}"), locale)
    assert_unavailable_page(down.post(f"/class?lang={locale}", follow_redirects=False), locale)
    assert_unavailable_json(down.get(f"/api/class/ABCDEF?lang={locale}"), locale)
    assert time.monotonic() - started < 5  # refused at once: no hang


@pytest.mark.parametrize("locale", ["es", "en"])
def test_a_training_submit_says_the_store_is_down(down, locale):
    assert_unavailable_json(down.post(f"/api/train?lang={locale}", json={"dataset": "digits"}), locale)
    form = {"dataset": "digits"}
    assert_unavailable_page(down.post(f"/train/jobs?lang={locale}", data=form, follow_redirects=False), locale)


def test_what_needs_no_shared_state_still_answers(down):
    assert down.get("/healthz").status_code == 200
    assert down.get("/conv?preset=seed").status_code == 200
