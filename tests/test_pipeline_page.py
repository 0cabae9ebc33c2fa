"""/pipeline over HTTP: the page in both languages, one explanation fragment per kind of
number, the backprop fragment, the numbers equal to the engine's, and bad addresses."""

from __future__ import annotations

import io
from urllib.parse import parse_qsl, urlsplit

import pytest
from pagecheck import soup, text, translated
from PIL import Image, ImageDraw

from cnnlab.app import images
from cnnlab.app.routers.pipeline import picture_input
from cnnlab.app.settings import Settings, get_settings
from cnnlab.core import pipeline
from cnnlab.core.conv import format_number

HX_EXPLAIN = {"HX-Request": "true", "HX-Target": "pipeline-explain"}
HX_BACKPROP = {"HX-Request": "true", "HX-Target": "pipeline-backprop"}


@pytest.fixture(scope="module")
def run():
    x, label = pipeline.digit_image(4)
    return pipeline.run(x, label)


@pytest.mark.parametrize("locale, title", [("es", "La red completa, número por número"),
                                           ("en", "The whole network, number by number")])
def test_page_in_both_languages(client, locale, title):
    response = client.get(f"/pipeline?lang={locale}")
    assert response.status_code == 200
    page = soup(response)
    assert page.html["lang"] == locale
    assert text(page.select_one("h1")) == title
    assert page.select_one("section#loss") and page.select_one("section#backprop")
    assert len(page.select(".pl-conv td")) == 3 * 64 and len(page.select(".pl-pool td")) == 3 * 16
    assert len(page.select("math")) >= 5  # softmax, H(p, q), ∂L/∂w, SGD, Adam
    assert "hx-history" in str(page.select_one("#pipeline-lab"))


def test_displayed_loss_and_probabilities_are_the_engines(client, run):
    page = soup(client.get("/pipeline?lang=en"))
    assert text(page.select_one("#pl-loss-button")) == format_number(run.loss)
    shown = [b["title"] for b in page.select('#pl-classes button[name="show"][value^="prob-"]')]
    assert shown == [f"q{k} = {format_number(float(q))}" for k, q in enumerate(run.q)]
    logits = [b["title"] for b in page.select('#pl-classes button[value^="logit-"]')]
    assert logits == [f"z{k} = {format_number(float(z))}" for k, z in enumerate(run.z)]
    conv_cell = page.select_one('button[value="conv-1-4-5"]')
    assert conv_cell["title"] == format_number(float(run.out[1, 4, 5]))


@pytest.mark.parametrize("address, expected", [
    ("conv-0-2-3", lambda p: pipeline.explain_conv(p, 0, 2, 3).text),
    ("relu-0-3-0", lambda p: pipeline.explain_relu(p, 0, 3, 0)),
    ("pool-1-1-1", lambda p: pipeline.explain_pool(p, 1, 1, 1).text),
    ("logit-9", lambda p: pipeline.explain_logit(p, 9).text),
    ("prob-9", lambda p: pipeline.explain_prob(p, 9).text),
    ("loss", lambda p: pipeline.explain_loss(p).text),
])
def test_explain_fragment_for_each_kind_of_number(client, run, address, expected):
    response = client.get(f"/pipeline?lang=en&show={address}", headers=HX_EXPLAIN)
    assert response.status_code == 200
    assert "HX-Request" in response.headers["vary"] and "HX-Target" in response.headers["vary"]
    page = soup(response)
    assert page.select_one("html") is None and page.select_one("h1") is None  # only the fragment
    assert page.select_one("aside#pipeline-explain")
    assert text(page.select_one("#pl-explain-sum")) == expected(run)
    # The other forms learn the new address out of band.
    oob = page.select('input[hx-swap-oob="true"]')
    assert {i["id"] for i in oob} == {"pl-keep-show", "pl-settings-show"}
    assert all(i["value"] == address for i in oob)


def test_loss_explanation_shows_p_and_q_side_by_side(client, run):
    page = soup(client.get("/pipeline?lang=en&show=loss", headers=HX_EXPLAIN))
    p_row = [text(td) for td in page.select("#pl-pq .pl-pq__p td")]
    q_row = [text(td) for td in page.select("#pl-pq .pl-pq__q td")]
    assert p_row == ["1" if k == 9 else "0" for k in range(10)]
    assert q_row == [format_number(float(q)) for q in run.q]
    assert page.select_one("math")


def test_full_page_with_an_address_marks_the_cell_and_explains_it(client, run):
    page = soup(client.get("/pipeline?lang=en&show=conv-0-2-3"))
    assert page.select_one('td.is-current button[value="conv-0-2-3"]')
    assert text(page.select_one("#pl-explain-sum")) == pipeline.explain_conv(run, 0, 2, 3).text
    assert len(page.select("#pl-input td.is-window")) == 9
    assert not page.select('input[hx-swap-oob]')


def test_backprop_fragment_writes_out_the_gradient_and_both_updates(client, run):
    response = client.get("/pipeline?lang=en&weight=1-0-2&lr=0.5", headers=HX_BACKPROP)
    assert response.status_code == 200
    page = soup(response)
    assert page.select_one("form#pipeline-backprop") and page.select_one("h1") is None
    g = pipeline.weight_gradient(run, 1, 0, 0, 2)
    assert text(page.select_one("#pl-grad-sum")) == g.text
    assert page.select_one('td.is-current button[value="1-0-2"]')
    sgd, adam = pipeline.updates(run, 1, 0, 0, 2, 0.5)
    four = lambda v: f"{v:.4g}".replace("-", "−")  # four significant digits
    assert text(page.select_one("#pl-sgd-text")) == (
        f"w = {four(sgd['old'])} − {four(0.5)}·({four(sgd['g'])}) = {four(sgd['old'])} − ({four(sgd['step'])}) = {four(sgd['new'])}"
        if sgd["g"] < 0 else
        f"w = {four(sgd['old'])} − {four(0.5)}·{four(sgd['g'])} = {four(sgd['old'])} − {four(sgd['step'])} = {four(sgd['new'])}")
    adam_lines = [text(li) for li in page.select("#pl-adam-text li")]
    assert adam_lines[0] == f"g = {four(adam['g'])}"
    assert adam_lines[-1].endswith(f"= {four(adam['new'])}")
    assert len(page.select("#pl-dout td.is-window")) == len(g.nonzero)
    oob = page.select('input[hx-swap-oob="true"]')
    assert {i["id"] for i in oob} == {"pl-keep-weight", "pl-settings-weight"}


def test_changing_the_label_changes_the_loss(client, run):
    response = client.get("/pipeline?lang=en&label=3", headers={"HX-Request": "true", "HX-Target": "pipeline-lab"})
    assert response.headers["hx-push-url"] == "/pipeline?index=4&label=3"
    other = pipeline.run(run.x, 3)
    assert text(soup(response).select_one("#pl-loss-button")) == format_number(other.loss)


def test_next_digit_button_redirects_to_the_tidy_address(client):
    response = client.get("/pipeline?index=358&go=next", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/pipeline?index=0"


@pytest.mark.parametrize("locale", ["es", "en"])
@pytest.mark.parametrize("query, field, msgid, params", [
    ("show=conv-3-0-0", "show", "“%(address)s” is not a number of this network. Click a number in the grids to see how it was computed.", {"address": "conv-3-0-0"}),
    ("show=conv-0-8-0", "show", "“%(address)s” is not a number of this network. Click a number in the grids to see how it was computed.", {"address": "conv-0-8-0"}),
    ("show=logit-x", "show", "“%(address)s” is not a number of this network. Click a number in the grids to see how it was computed.", {"address": "logit-x"}),
    ("show=<script>", "show", "“%(address)s” is not a number of this network. Click a number in the grids to see how it was computed.", {"address": "<script>"}),
    ("weight=0-3-0", "weight", "“%(address)s” is not a kernel weight: give filter, row and column, like 0-1-1 (filters 0 to %(f)s, rows and columns 0 to %(k)s).", {"address": "0-3-0", "f": 2, "k": 2}),
    ("index=abc", "index", "The digit must be a whole number from 0 to %(max)s.", {"max": 358}),
    ("index=359", "index", "The digit must be a whole number from 0 to %(max)s.", {"max": 358}),
    ("label=12", "label", "The true class must be a digit from 0 to 9.", {}),
    ("lr=nan", "lr", "The learning rate must be a number greater than 0 and at most %(max)s.", {"max": "10"}),
    ("lr=0", "lr", "The learning rate must be a number greater than 0 and at most %(max)s.", {"max": "10"}),
])
def test_bad_values_give_a_translated_message_never_a_500(client, locale, query, field, msgid, params):
    response = client.get(f"/pipeline?lang={locale}&{query}")
    assert response.status_code == 422  # a full page with bad values; htmx gets 200
    page = soup(response)
    message = translated(msgid, locale, **params)
    assert text(page.select_one(f'#pipeline-problems li[data-field="{field}"]')) == message
    assert page.select_one("script:-soup-contains('<script>')") is None
    if field == "show":
        fragment = soup(client.get(f"/pipeline?lang={locale}&{query}", headers=HX_EXPLAIN))
        assert text(fragment.select_one("#pl-explain-error")) == message
    if field == "weight":
        fragment = soup(client.get(f"/pipeline?lang={locale}&{query}", headers=HX_BACKPROP))
        assert text(fragment.select_one("#pl-weight-error")) == message


def test_json_twin(client, run):
    body = client.get("/api/pipeline?weight=0-1-1").json()
    assert body["loss"] == pytest.approx(run.loss, rel=1e-12)
    assert body["probabilities"] == pytest.approx(list(run.q), rel=1e-12)
    assert body["weight"]["grad"] == pytest.approx(float(run.dw[0, 0, 1, 1]), abs=1e-12)
    bad = client.get("/api/pipeline?weight=9-9-9&lang=en")
    assert bad.status_code == 422 and "not a kernel weight" in bad.json()["detail"]


def test_lesson_walk_stops_here_twice_backprop_between_conv_and_pool_loss_between_activation_and_train(client):
    page = soup(client.get("/pipeline?lang=en"))
    backprop = page.select_one('.lesson-nav[data-anchor="backprop"]')
    assert backprop["data-section"] == "5"
    assert backprop.select_one('a[rel="prev"]')["href"].startswith("/conv?image=")  # section 4
    assert backprop.select_one('a[rel="next"]')["href"] == "/pool"
    loss = page.select_one('.lesson-nav[data-anchor="loss"]')
    assert loss["data-section"] == "8"
    assert loss.select_one('a[rel="prev"]')["href"] == "/activation"
    assert loss.select_one('a[rel="next"]')["href"] == "/train"


def test_home_links_to_the_backprop_and_loss_sections(client):
    page = soup(client.get("/?lang=en"))
    hrefs = {a["href"] for a in page.select("#lesson-sections a")}
    assert {"/pipeline#backprop", "/pipeline#loss"} <= hrefs


# ------------------------------------------------------------------------------ a picture instead of a digit


@pytest.fixture
def web(client, tmp_path):
    """The client with uploads stored in a temporary folder."""
    settings = Settings(upload_dir=tmp_path / "uploads")
    client.app.dependency_overrides[get_settings] = lambda: settings
    return client, settings


def png_of_a_stroke() -> bytes:
    """Dark ink on white paper: a vertical stroke, 40×60 pixels."""
    img = Image.new("L", (40, 60), 255)
    ImageDraw.Draw(img).line((20, 5, 20, 55), fill=0, width=6)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_the_mnist_sample_goes_through_the_same_network(web):
    client, settings = web
    x = picture_input(images.image_array("digit", settings, 8, "gray"))
    predicted = pipeline.run(x, 0).predicted
    p = pipeline.run(x, predicted)
    page = soup(client.get("/pipeline?lang=en&image=digit"))
    cells = [float(td["title"].replace("−", "-")) for td in page.select("#pl-input td")]
    assert cells == pytest.approx(list(x.reshape(-1)), abs=5e-5)
    assert text(page.select_one("#pl-loss-button")) == format_number(p.loss)  # against its own prediction
    assert page.select_one('#pipeline-settings input[name="image"]')["value"] == "digit"


def test_an_upload_is_shrunk_inverted_and_shown(web):
    client, settings = web
    response = client.post("/pipeline/upload", files={"file": ("stroke.png", png_of_a_stroke(), "image/png")},
                           data={"state": "index=7&lr=0.5&show=loss"}, follow_redirects=False)
    assert response.status_code == 303
    target = dict(parse_qsl(urlsplit(response.headers["location"]).query))
    assert set(target) == {"image", "lr"} and target["lr"] == "0.5"
    x = picture_input(images.image_array(target["image"], settings, 8, "gray"))
    assert x.shape == (1, 8, 8) and x[0, 4].max() > 0.5 and x[0, 0, 0] == 0  # ink is bright, paper black
    page = soup(client.get(response.headers["location"] + "&lang=en"))
    assert page.select_one("#pl-input").find_parent("figure").select_one("figcaption").get_text().strip().endswith(
        "your picture")


@pytest.mark.parametrize("locale", ["es", "en"])
def test_a_bad_upload_or_an_unknown_picture_gets_a_translated_message(web, locale):
    client, _settings = web
    response = client.post(f"/pipeline/upload?lang={locale}", files={"file": ("x.png", b"not a picture", "image/png")},
                           data={"state": "index=7"})
    assert response.status_code == 415  # the file's own status
    assert text(soup(response).select_one("#pl-upload-error")) == translated(images.MSG_NOT_AN_IMAGE, locale)
    page = soup(client.get(f"/pipeline?lang={locale}&image=../etc/passwd"))
    assert text(page.select_one('#pipeline-problems li[data-field="image"]')) == translated(
        "There is no image called “%(id)s”. Choose a sample or upload a picture.", locale, id="../etc/passwd")
    gone = soup(client.get(f"/pipeline?lang={locale}&image={'0' * 32}"))
    assert text(gone.select_one('#pipeline-problems li[data-field="image"]')) == translated(images.MSG_GONE, locale)
