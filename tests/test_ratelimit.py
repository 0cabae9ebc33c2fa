"""Rate limits: the moving window's arithmetic, and every upload and training entry point
answering 429 with a translated sentence past the limit, per session and per address."""

from __future__ import annotations

import io
import types
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pagecheck
import pytest
from redis import Redis as ValkeyClient
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from PIL import Image
from playwright.sync_api import expect

import limits.storage.memory as memory_storage

from cnnlab.app import ratelimit
from cnnlab.app.i18n import gettext, use_locale
from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.ratelimit import RateLimiter
from cnnlab.app.settings import Settings, get_settings

MESSAGE = "Too many requests in a short time. Please wait %(seconds)d seconds and try again."
HX = {"HX-Request": "true"}


def translated(locale: str, seconds: int) -> str:
    with use_locale(locale):
        return gettext(MESSAGE) % {"seconds": seconds}


def png(seed: int = 0, size: int = 10) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(client: TestClient, seed: int = 0, lang: str | None = None):
    url = "/api/images" + (f"?lang={lang}" if lang else "")
    return client.post(url, files={"file": (f"p{seed}.png", png(seed), "image/png")})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """Time stands still for the rate limiter (the ``limits`` memory storage, and only for it)
    until the test moves it."""
    fake = FakeClock()
    monkeypatch.setattr(memory_storage, "time", types.SimpleNamespace(time=fake.time))
    return fake


@pytest.fixture
def limited(client):
    """The app with small limits. One Settings object, so the session key (and the session
    cookie's signature) stays the same from one request to the next."""

    def use(**rates) -> Settings:
        settings = Settings(**rates)
        client.app.dependency_overrides[get_settings] = lambda: settings
        return settings

    return use


# ---------------------------------------------------------------- the window ----------


def test_moving_window_maths(clock):
    limiter = RateLimiter()
    per_minute, burst = 6.0, 3  # three in any 30 s
    assert [limiter.hit("k", per_minute, burst) for _ in range(burst)] == [0.0, 0.0, 0.0]
    # Full: the wait is until the oldest hit leaves the window, burst · 60 / per_minute.
    assert limiter.hit("k", per_minute, burst) == pytest.approx(30.0)
    clock.now += 10
    assert limiter.hit("k", per_minute, burst) == pytest.approx(20.0)
    assert limiter.waits("k", per_minute, burst) == pytest.approx(20.0)  # a check counts nothing
    assert limiter.hit("other", per_minute, burst) == 0.0  # keys are apart
    # A refused hit spends nothing: once the window has passed, the whole burst is back.
    clock.now += 20.5
    assert limiter.waits("k", per_minute, burst) == 0.0
    assert [limiter.hit("k", per_minute, burst) == 0.0 for _ in range(burst + 1)] == [True] * burst + [False]


def test_moving_window_steady_rate(clock):
    # Asking once a second for a minute at 30 a minute, 5 at once (a 10 s window): the
    # average is the rate, and no 10 s ever holds more than the burst.
    limiter = RateLimiter()
    per_minute, burst = 30.0, 5
    allowed = []
    for t in range(60):
        clock.now = 1000.0 + t
        if limiter.hit("k", per_minute, burst) == 0.0:
            allowed.append(t)
    assert len(allowed) == per_minute
    assert max(sum(1 for a in allowed if t <= a < t + 10) for t in range(60)) == burst


def test_an_unknown_action_is_a_programming_error(client):
    with pytest.raises(ValueError, match="unknown"):
        ratelimit.limit(types.SimpleNamespace(app=client.app), "downloads")


# ---------------------------------------------------------------- uploads ----------


def test_uploads_past_the_default_burst_get_429_in_spanish_then_english(client, clock):
    defaults = Settings()
    ids = []
    for i in range(defaults.rate_uploads_burst):
        response = upload(client, i)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    refused = upload(client, 99)
    assert refused.status_code == 429
    window = defaults.rate_uploads_burst * 60 / defaults.rate_uploads_per_minute
    wait = round(window)
    assert refused.json() == {"detail": translated("es", wait)}
    assert refused.json()["detail"] != translated("en", wait)
    english = upload(client, 99, lang="en")
    assert english.status_code == 429
    assert english.json() == {"detail": translated("en", wait)}
    # What the session made before still works: its pictures and pages on them.
    for image_id in ids:
        assert client.get(f"/images/{image_id}.png").status_code == 200
    assert client.get(f"/conv?image={ids[0]}").status_code == 200
    # Once the window has passed, the burst is back, and no more.
    clock.now += window + 0.5
    assert [upload(client, 200 + i).status_code for i in range(defaults.rate_uploads_burst + 1)] == (
        [201] * defaults.rate_uploads_burst + [429])


def test_the_limit_is_per_session(client, limited, clock):
    limited(rate_uploads_burst=2, rate_uploads_per_minute=1.0)
    assert [upload(client, i).status_code for i in range(3)] == [201, 201, 429]
    mine = dict(client.cookies)
    client.cookies.clear()  # another browser
    assert [upload(client, i).status_code for i in range(3)] == [201, 201, 429]
    client.cookies.clear()
    client.cookies.update(mine)  # back to the first: still limited
    assert upload(client, 5).status_code == 429


def test_a_cookieless_client_meets_the_address_limit(client, limited, clock):
    # Issue 12: a new session per request no longer resets the limit.
    limited(rate_address_uploads_burst=3, rate_address_uploads_per_minute=1.0)
    statuses = []
    for i in range(4):
        client.cookies.clear()
        statuses.append(upload(client, i).status_code)
    assert statuses == [201, 201, 201, 429]
    client.cookies.clear()
    assert upload(client, 9).json() == {"detail": translated("es", 180)}  # three in any 180 s


def test_a_session_over_its_limit_does_not_use_up_its_address(client, limited, clock):
    limited(rate_uploads_burst=1, rate_uploads_per_minute=1.0,
            rate_address_uploads_burst=3, rate_address_uploads_per_minute=1.0)
    assert [upload(client, i).status_code for i in range(5)] == [201, 429, 429, 429, 429]
    # The refused four spent nothing of the address's three: two more browsers upload.
    for i in range(2):
        client.cookies.clear()
        assert upload(client, 10 + i).status_code == 201
    client.cookies.clear()
    assert upload(client, 20).status_code == 429


def test_a_refused_upload_is_not_stored(client, limited, clock, tmp_path):
    settings = limited(rate_uploads_burst=1, rate_uploads_per_minute=1.0)
    first = upload(client, 1)
    assert first.status_code == 201
    before = sorted(p.name for p in settings.upload_dir.iterdir())
    assert upload(client, 2).status_code == 429
    assert sorted(p.name for p in settings.upload_dir.iterdir()) == before


def page_upload(client, path, seed, headers=None, lang="es"):
    return client.post(f"{path}?lang={lang}", headers=headers or {}, follow_redirects=False,
                       files={"file": (f"p{seed}.png", png(seed), "image/png")}, data={"state": ""})


def conv_state(response) -> dict[str, str]:
    """The view's state as the page's upload form would send it back."""
    field = BeautifulSoup(response.text, "html.parser").select_one('#conv-upload input[name="state"]')
    return dict(parse_qsl(field["value"]))


def test_the_conv_upload_form_says_so_next_to_the_control(client, limited, clock):
    limited(rate_uploads_burst=1, rate_uploads_per_minute=2.0)
    first = page_upload(client, "/conv/upload", 1, HX)
    assert first.status_code == 200
    page_url = "http://testserver" + first.headers["hx-push-url"]
    image = dict(parse_qsl(urlsplit(page_url).query))["image"]
    # htmx says where the form was sent from; the refused body is never read.
    response = page_upload(client, "/conv/upload", 2, {**HX, "HX-Current-URL": page_url})
    # htmx swaps only 2xx answers: the message must come with 200 to be seen.
    assert response.status_code == 200
    message = BeautifulSoup(response.text, "html.parser").select_one("#err-upload")
    assert message.get_text(strip=True) == translated("es", 30)
    assert "hx-push-url" not in response.headers
    # The view is the one the student had: the picture uploaded before.
    assert conv_state(response)["image"] == image
    plain = page_upload(client, "/conv/upload", 3, {"Referer": page_url}, lang="en")
    assert plain.status_code == 429
    assert BeautifulSoup(plain.text, "html.parser").select_one("#err-upload").get_text(strip=True) == translated("en", 30)
    assert conv_state(plain)["image"] == image
    # A page of another site or path gives no state: the default view, still with the message.
    other = page_upload(client, "/conv/upload", 4, {**HX, "HX-Current-URL": "http://elsewhere.example" + first.headers["hx-push-url"]})
    assert "image" not in conv_state(other)


def test_the_pipeline_and_grid_uploads_are_limited_too(client, limited, clock):
    limited(rate_uploads_burst=1, rate_uploads_per_minute=3.0)
    first = page_upload(client, "/pipeline/upload", 1)
    assert first.status_code == 303
    page_url = "http://testserver" + first.headers["location"]
    response = page_upload(client, "/pipeline/upload", 2, {"Referer": page_url})
    assert response.status_code == 429
    page = BeautifulSoup(response.text, "html.parser")
    assert page.select_one("#pl-upload-error").get_text(strip=True) == translated("es", 20)
    # Still the picture uploaded before (the plain form's Referer said which view it was).
    uploaded = dict(parse_qsl(urlsplit(page_url).query))["image"]
    assert page.select_one('#pipeline-lab input[name="image"], input[name="image"]')["value"] == uploaded
    response = page_upload(client, "/grid/upload", 3, lang="en")
    assert response.status_code == 429
    page = BeautifulSoup(response.text, "html.parser")
    assert page.select_one(".error-page__message").get_text(strip=True) == translated("en", 20)
    assert page.select_one("#error-title").get_text(strip=True) == "Too many requests"
    # The bucket is shared by every upload form of the session, the API included.
    assert upload(client, 4).status_code == 429


# ---------------------------------------------------------------- trainings ----------


def test_training_starts_are_limited_on_the_api_and_the_page(client, limited, clock):
    limited(rate_trainings_burst=1, rate_trainings_per_minute=1.0)
    spec = {"dataset": "digits", "epochs": 1, "filters": 1}
    first = client.post("/api/train", json=spec)
    assert first.status_code == 201, first.text
    client.delete(f"/api/train/{first.json()['id']}")
    refused = client.post("/api/train?lang=en", json=spec)
    assert refused.status_code == 429
    assert refused.json() == {"detail": translated("en", 60)}
    # Only the first job exists.
    assert [job["id"] for job in client.get("/api/train").json()["jobs"]] == [first.json()["id"]]
    # The page's start button (htmx) gets the run panel with the reason, in Spanish.
    response = client.post("/train/jobs?lang=es", data={"dataset": "digits", "epochs": "1"}, headers=HX)
    assert response.status_code == 200
    panel = BeautifulSoup(response.text, "html.parser").select_one("#train-run .train-problems")
    assert [li.get_text(strip=True) for li in panel.select("li")] == [translated("es", 60)]
    assert client.post("/train/jobs", data={"dataset": "digits", "epochs": "1"}).status_code == 429


def test_cookieless_training_starts_meet_the_address_limit(client, limited, clock):
    # Issue 12: ten starts from cookie-less clients filled every running and waiting place.
    limited(rate_address_trainings_burst=2, rate_address_trainings_per_minute=1.0)
    spec = {"dataset": "digits", "epochs": 1, "filters": 1}
    statuses = []
    for _ in range(3):
        client.cookies.clear()
        response = client.post("/api/train", json=spec)
        statuses.append(response.status_code)
        if response.status_code == 201:
            client.delete(f"/api/train/{response.json()['id']}")
    assert statuses == [201, 201, 429]


def test_loading_a_model_counts_as_an_upload(client, limited, clock):
    limited(rate_uploads_burst=1, rate_uploads_per_minute=1.0)
    assert upload(client, 1).status_code == 201
    files = {"file": ("m.npz", b"not a model", "application/octet-stream")}
    api = client.post("/api/train/load", files=files)
    assert api.status_code == 429
    assert api.json() == {"detail": translated("es", 60)}
    response = client.post("/train/load", files=files, headers=HX)
    assert response.status_code == 200
    panel = BeautifulSoup(response.text, "html.parser").select_one("#train-run .train-problems")
    assert [li.get_text(strip=True) for li in panel.select("li")] == [translated("es", 60)]


# ---------------------------------------------------------------- shared engine ----------


def test_two_limiters_on_one_valkey_share_their_counts(redis_url):
    # Two web processes (or hosts) of one course: a RateLimiter each, the same Valkey.
    settings = Settings(redis_url=redis_url, secret_key="k")
    first, second = RateLimiter.shared(settings), RateLimiter.shared(settings)
    per_minute, burst = 6.0, 3  # three in any 30 s
    assert [first.hit("k", per_minute, burst), second.hit("k", per_minute, burst),
            first.hit("k", per_minute, burst)] == [0.0, 0.0, 0.0]
    assert second.hit("k", per_minute, burst) == pytest.approx(30.0, abs=1.0)
    assert first.waits("k", per_minute, burst) == pytest.approx(30.0, abs=1.0)
    assert second.hit("other", per_minute, burst) == 0.0  # keys are apart
    # The counts are in Valkey, under the app's prefix; reset() forgets them there too.
    keys = ValkeyClient.from_url(redis_url).keys("*")
    assert keys and all(key.startswith(b"cnnlab:limits:") for key in keys)
    assert ratelimit.limiter_for(settings) is ratelimit.limiter_for(Settings(redis_url=redis_url, secret_key="k"))
    assert ratelimit.limiter_for(Settings()) is not ratelimit.limiter_for(settings)
    ratelimit.reset()
    assert ValkeyClient.from_url(redis_url).keys("*") == []


def two_apps(redis_url: str, tmp_path, **rates) -> tuple[TestClient, TestClient]:
    """Two apps as two web processes run them: the same settings (one secret key, one
    Valkey, one shared uploads folder), nothing else in common."""
    from cnnlab.app.main import create_app

    settings = Settings(redis_url=redis_url, secret_key="one key for all", upload_dir=tmp_path / "uploads",
                        data_dir=tmp_path / "data", **rates)
    clients = []
    for _ in range(2):
        app = create_app()
        app.dependency_overrides[get_settings] = lambda: settings
        clients.append(TestClient(app))
    return clients[0], clients[1]


def test_a_session_limit_holds_across_two_apps(redis_url, tmp_path):
    first, second = two_apps(redis_url, tmp_path, rate_uploads_burst=2, rate_uploads_per_minute=1.0)
    assert upload(first, 1).status_code == 201
    second.cookies.update(dict(first.cookies))  # the same browser, sent to the other process
    assert upload(second, 2).status_code == 201
    refused = upload(first, 3)
    assert refused.status_code == 429
    assert refused.json() == {"detail": translated("es", 120)}  # two in any 120 s
    assert upload(second, 4, lang="en").json()["detail"].startswith("Too many requests")
    second.cookies.clear()  # another browser on the second process: its own count
    assert upload(second, 5).status_code == 201


def test_an_address_limit_holds_across_two_apps(redis_url, tmp_path):
    first, second = two_apps(redis_url, tmp_path, rate_address_uploads_burst=3,
                             rate_address_uploads_per_minute=1.0)
    statuses = []
    for i, client in enumerate([first, second, first, second]):
        client.cookies.clear()  # a script that drops its cookie, spread over both processes
        statuses.append(upload(client, i).status_code)
    assert statuses == [201, 201, 201, 429]


# ---------------------------------------------------------------- in the browser ----------


def test_the_browser_shows_the_message_after_too_many_uploads(page, live_server, shots_dir):
    settings = Settings(rate_uploads_burst=1, rate_uploads_per_minute=1.0)
    cnnlab_app.dependency_overrides[get_settings] = lambda: settings
    try:
        page.goto(f"{live_server}/conv?preset=seed")
        page.set_input_files("#conv-file", {"name": "a.png", "mimeType": "image/png", "buffer": png(1, 24)})
        page.wait_for_url(lambda url: "image=" in url)
        first_url = page.url
        page.set_input_files("#conv-file", {"name": "b.png", "mimeType": "image/png", "buffer": png(2, 24)})
        message = page.locator("#err-upload")
        expect(message).to_be_visible()
        # About a minute to wait (a second or so of it has passed since the first upload).
        seconds = int("".join(ch for ch in message.inner_text() if ch.isdigit()))
        assert 55 <= seconds <= 60
        assert message.inner_text() == translated("es", seconds)
        # The picture uploaded before is still the one on the page and in the address.
        assert page.url == first_url
        image = dict(parse_qsl(urlsplit(first_url).query))["image"]
        state = page.locator('#conv-upload input[name="state"]').get_attribute("value")
        assert dict(parse_qsl(state))["image"] == image
        pagecheck.save_shot(page, shots_dir, "ratelimit-conv-upload-1280x720.png")
        pagecheck.assert_clean(page)
    finally:
        cnnlab_app.dependency_overrides.pop(get_settings, None)
