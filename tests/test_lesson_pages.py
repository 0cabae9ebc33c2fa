"""The lesson's other pages over HTTP — /activation, /grid, /local — and the lesson flow:
every page links to the previous and next served section in the seed's order."""

from __future__ import annotations

import io
from urllib.parse import urlencode, urlsplit

import numpy as np
import pytest
from bs4 import BeautifulSoup
from pagecheck import soup, text
from PIL import Image

from cnnlab.app import images
from cnnlab.app.lesson import SECTIONS
from cnnlab.app.routers.lesson_pages import EXAMPLE_ACTIVATION, LEAKY_ALPHA
from cnnlab.app.settings import Settings, get_settings
from cnnlab.core import kernels
from cnnlab.core.activations import ACTIVATIONS
from cnnlab.core.conv import conv_forward, format_number

HX = {"HX-Request": "true"}


def number(s: str) -> float:
    """A number as a page writes it, in either language (0,47 or 0.47)."""
    return float(s.replace("\u2212", "-").replace(",", "."))


def table(page: BeautifulSoup, selector: str) -> np.ndarray:
    return np.array([[number(td["title"]) for td in tr.select("td")] for tr in page.select_one(selector).select("tr")])


def field_errors(page: BeautifulSoup) -> dict[str, str]:
    return {li["data-field"]: text(li) for li in page.select(".error-list li")}


# ------------------------------------------------------------------ /activation


@pytest.mark.parametrize("fn", list(ACTIVATIONS))
def test_activation_after_equals_the_engine(client, fn):
    page = soup(client.get("/activation", params={"fn": fn}))
    before = table(page, ".act-before")
    after = table(page, ".act-after")
    np.testing.assert_array_equal(before, EXAMPLE_ACTIVATION)
    f = ACTIVATIONS[fn]
    expected, _cache = f.forward(EXAMPLE_ACTIVATION.astype(np.float64), LEAKY_ALPHA) if fn == "leaky_relu" else \
        f.forward(EXAMPLE_ACTIVATION.astype(np.float64))
    np.testing.assert_allclose(after, expected, atol=1e-4)
    # the Spanish page: a decimal comma in α = 0,1, so a semicolon between the arguments
    written = f.formula.replace(", ", "; ").replace("α", "0,1") if "α" in f.formula else f.formula
    assert written in text(page.select_one("#act-formula"))
    # One dot per distinct value, on the curve.
    assert len(page.select(".curve__dot")) == len(np.unique(EXAMPLE_ACTIVATION))
    assert len(page.select(".curve__dot.is-neg")) == int((np.unique(EXAMPLE_ACTIVATION) < 0).sum())


def test_relu_example_line(client):
    page = soup(client.get("/activation"))
    assert text(page.select_one("#act-example")) == f"ReLU({format_number(int(EXAMPLE_ACTIVATION[0, 0]))}) = 0"


def test_activation_takes_the_conv_feature_map(client):
    conv_query = urlencode({"preset": "seed", "kernel": "laplacian"})
    conv = soup(client.get(f"/conv?{conv_query}"))
    link = conv.select_one("#conv-to-activation")["href"]
    page = soup(client.get(link))
    fmap, _cache = conv_forward(kernels.SEED_INPUT[None, None].astype(np.float64), kernels.preset("laplacian")[None, None], None)
    np.testing.assert_array_equal(table(page, ".act-before"), fmap[0, 0])
    np.testing.assert_array_equal(table(page, ".act-after"), np.maximum(fmap[0, 0], 0))


def test_activation_fragment_and_languages(client):
    full = client.get("/activation", params={"fn": "tanh"})
    assert "HX-Request" in full.headers["vary"]
    fragment = client.get("/activation", params={"fn": "tanh"}, headers=HX)
    assert fragment.text.lstrip().startswith('<div id="act-lab"')
    assert fragment.headers["hx-push-url"].endswith("fn=tanh")
    es = soup(client.get("/activation", params={"lang": "es"}))
    en = soup(client.get("/activation", params={"lang": "en"}))
    assert text(es.select_one("h1")) == "ReLU y otras funciones de activación"
    assert text(en.select_one("h1")) == "ReLU and other activation functions"


@pytest.mark.parametrize("params,field", [
    ({"fn": "softplus"}, "fn"),
    ({"input": "grid", "grid": "1,x"}, "grid"),
    ({"input": "conv"}, "input"),
])
def test_activation_bad_input(client, params, field):
    for lang in ("es", "en"):
        response = client.get("/activation", params={**params, "lang": lang})
        assert response.status_code == 422  # a full page with bad values; htmx gets 200
        assert field in field_errors(soup(response))


# ------------------------------------------------------------------ /grid


def test_grid_shows_every_pixel_value_of_the_digit(client):
    page = soup(client.get("/grid"))
    svg = page.select_one("svg.pixgrid")
    x = images.image_array("digit", get_settings(), 28, "gray")
    values = np.array([int(r["data-v"]) for r in svg.select("rect[data-v]")]).reshape(28, 28)
    np.testing.assert_array_equal(values, x[0])
    assert svg["tabindex"] == "0"
    first = svg.select_one("rect[data-v] title").get_text()
    assert first.endswith(f": {x[0, 0, 0]}")


def test_grid_rgb_is_three_grids(client):
    page = soup(client.get("/grid", params={"image": "chelsea", "color": "rgb", "size": 8}))
    grids = page.select("svg.pixgrid")
    assert [g["data-channel"] for g in grids] == ["R", "G", "B"]
    x = images.image_array("chelsea", get_settings(), 8, "rgb")
    for c, g in enumerate(grids):
        values = np.array([int(r["data-v"]) for r in g.select("rect[data-v]")]).reshape(x.shape[1:])
        np.testing.assert_array_equal(values, x[c])


def test_grid_audio_strip_shows_its_samples(client):
    page = soup(client.get("/grid"))
    values = [number(td.get_text()) for td in page.select(".audio-values td")]
    t = np.arange(len(values)) / len(values)
    expected = np.round(0.6 * np.sin(2 * np.pi * 3 * t) + 0.3 * np.sin(2 * np.pi * 7 * t), 2)
    np.testing.assert_allclose(values, expected, atol=1e-9)
    assert len(page.select(".wave__dot")) == len(values)


@pytest.mark.parametrize("params,field", [
    ({"size": "999"}, "size"), ({"size": "x"}, "size"), ({"image": "nope"}, "image"),
    ({"color": "cmyk"}, "color"), ({"zoom": "9"}, "zoom"),
])
def test_grid_bad_input(client, params, field):
    for lang in ("es", "en"):
        response = client.get("/grid", params={**params, "lang": lang})
        assert response.status_code == 422
        assert field in field_errors(soup(response))


def test_grid_fragment_and_languages(client):
    fragment = client.get("/grid", params={"image": "camera", "size": 6}, headers=HX)
    assert fragment.text.lstrip().startswith('<div id="grid-lab"')
    assert "HX-Request" in fragment.headers["vary"]
    assert "image=camera" in fragment.headers["hx-push-url"]
    es = soup(client.get("/grid", params={"lang": "es"}))
    en = soup(client.get("/grid", params={"lang": "en"}))
    assert text(es.select_one("h1")) == "¿Qué son? Datos con forma de cuadrícula"
    assert text(en.select_one("h1")) == "What are they? Data shaped like a grid"
    assert es.select_one("svg.pixgrid rect[data-v] title").get_text().startswith("fila 1, columna 1: ")


def test_grid_upload(client, tmp_path):
    settings = Settings(upload_dir=tmp_path / "uploads")
    client.app.dependency_overrides[get_settings] = lambda: settings
    buffer = io.BytesIO()
    Image.fromarray(np.arange(36, dtype=np.uint8).reshape(6, 6) * 7).save(buffer, "PNG")
    response = client.post("/grid/upload", files={"file": ("x.png", buffer.getvalue(), "image/png")},
                           data={"state": "size=6&zoom=3"}, follow_redirects=False)
    assert response.status_code == 303
    assert "image=" in response.headers["location"] and "zoom=3" in response.headers["location"]
    bad = client.post("/grid/upload", files={"file": ("x.png", b"not a picture", "image/png")}, data={"state": ""})
    assert 400 <= bad.status_code < 500
    assert "<html" in bad.text


# ------------------------------------------------------------------ /local


@pytest.mark.parametrize("H,W,C,F,K", [(28, 28, 1, 8, 3), (32, 32, 3, 16, 5), (224, 224, 3, 64, 3), (5, 7, 2, 1, 5)])
def test_local_counts_match_the_formulas(client, H, W, C, F, K):
    page = soup(client.get("/local", params={"h": H, "w": W, "c": C, "f": F, "k": K}))
    Ho, Wo = H - K + 1, W - K + 1
    dense = H * W * C * Ho * Wo * F + Ho * Wo * F
    conv = F * C * K * K + F
    shown_dense = int(page.select_one("#dense-total strong").get_text().replace("\u202f", ""))
    shown_conv = int(page.select_one("#conv-total strong").get_text().replace("\u202f", ""))
    assert (shown_dense, shown_conv) == (dense, conv)
    assert f"{F}·{C}·{K}·{K} + {F}" in text(page.select_one(".local-count--conv"))
    assert f"{H}·{W}·{C} × {Ho}·{Wo}·{F}" in text(page.select_one(".local-count--dense"))
    assert str(round(dense / conv)) in "".join(page.select_one(".local-ratio").get_text().split())


def test_local_preset_and_sharing_figure(client):
    page = soup(client.get("/local", params={"preset": "cifar", "f": 4, "k": 3}))
    assert page.select_one("#local-h")["value"] == "32" and page.select_one("#local-c")["value"] == "3"
    panels = page.select(".sharing__grid")
    assert len(panels) == 2
    # The same nine weights, in the same order, at both positions.
    labels = [[t.get_text() for t in p.select("text")] for p in panels]
    assert labels[0] == labels[1] == [f"w{n}" for n in range(1, 10)]


def test_local_takes_the_size_of_a_sample(client):
    page = soup(client.get("/local", params={"image": "chelsea", "f": 2, "k": 3}))
    x = images.image_array("chelsea", get_settings(), None, "rgb")
    C, H, W = x.shape
    assert [page.select_one(f"#local-{n}")["value"] for n in "hwc"] == [str(H), str(W), str(C)]
    shown = int(page.select_one("#conv-total strong").get_text().replace("\u202f", ""))
    assert shown == 2 * C * 3 * 3 + 2


@pytest.mark.parametrize("params,field", [
    ({"image": "nope"}, "image"),
    ({"h": "abc"}, "h"), ({"w": "0"}, "w"), ({"c": "1000"}, "c"), ({"f": "-2"}, "f"),
    ({"k": "30"}, "k"), ({"h": "4", "w": "4", "k": "5"}, "k"), ({"preset": "huge"}, "preset"),
])
def test_local_bad_input(client, params, field):
    for lang in ("es", "en"):
        response = client.get("/local", params={**params, "lang": lang})
        assert response.status_code == 422
        page = soup(response)
        assert field in field_errors(page)
        assert page.select_one("#dense-total") is None


def test_local_fragment_and_languages(client):
    fragment = client.get("/local", params={"f": 2}, headers=HX)
    assert fragment.text.lstrip().startswith('<div id="local-lab"')
    assert "HX-Request" in fragment.headers["vary"]
    assert "f=2" in fragment.headers["hx-push-url"]
    es = soup(client.get("/local", params={"lang": "es"}))
    en = soup(client.get("/local", params={"lang": "en"}))
    assert text(es.select_one("h1")).startswith("Capa convolucional")
    assert text(en.select_one("h1")).startswith("Convolutional layer")


# ------------------------------------------------------------------ the lesson flow


def nav_for(url: str, client) -> "BeautifulSoup":
    """The lesson nav a person (or PageDown, static/js/lesson.js) follows at ``url``: the one of
    the section named by the address's #fragment, else the page's first."""
    page = soup(client.get(url))
    anchor = urlsplit(url).fragment
    return (anchor and page.select_one(f'.lesson-nav[data-anchor="{anchor}"]')) or page.select_one(".lesson-nav")


@pytest.mark.parametrize("path, number", [("/grid", 1), ("/local", 2), ("/pool", 6), ("/activation", 7)])
def test_each_page_links_to_the_sections_numbered_one_less_and_one_more(client, path, number):
    nav = nav_for(path, client)
    assert nav["data-section"] == str(number)
    prev = nav.select_one('a[rel="prev"]')
    nxt = nav.select_one('a[rel="next"]')
    expected_prev = next(s for s in SECTIONS if s.number == number - 1).href if number > 1 else "/"
    assert (prev["href"], nxt["href"]) == (expected_prev, next(s for s in SECTIONS if s.number == number + 1).href)
    assert text(nav.select_one(".lesson-nav__here")) == f"Sección {number} de 9"


def test_home_links_to_the_first_section(client):
    page = soup(client.get("/"))
    assert page.select_one('.lesson-nav a[rel="next"]')["href"] == "/grid"
    for path in ("/grid", "/local", "/pool", "/activation"):
        assert page.select_one(f'#lesson-sections a[href^="{path}"]') is not None


def test_every_page_loads_the_lesson_keys(client):
    for path in ("/", "/grid", "/local", "/pool", "/activation", "/conv"):
        assert soup(client.get(path)).select_one('script[src$="js/lesson.js"]') is not None


def walk(client, rel: str, start: str) -> list[int]:
    """The sections visited by following ``rel`` links from ``start`` until the walk leaves
    the lesson (back home), as a person pressing PageDown / PageUp would."""
    seen: list[int] = []
    url = start
    for _ in range(20):  # bounded: a loop in the links fails the test instead of hanging it
        nav = nav_for(url, client)
        if nav.get("data-section"):
            seen.append(int(nav["data-section"]))
        url = nav.select_one(f'a[rel="{rel}"]')["href"]
        if url == "/":
            return seen
    raise AssertionError(f"the walk did not end: {seen}")


def test_page_down_from_home_walks_all_nine_sections_in_the_slides_order(client):
    """Section 8 (softmax and cross-entropy, /pipeline#loss) included, and sections sharing a
    page (3 and 4 on /conv, 5 and 8 on /pipeline) each a stop of their own."""
    home = soup(client.get("/")).select_one('.lesson-nav a[rel="next"]')["href"]
    assert walk(client, "next", home) == [1, 2, 3, 4, 5, 6, 7, 8, 9]


def test_page_up_from_the_last_section_walks_back_to_the_first(client):
    assert walk(client, "prev", "/train") == [9, 8, 7, 6, 5, 4, 3, 2, 1]


def test_a_section_using_what_comes_later_says_so(client):
    page = soup(client.get("/pipeline"))
    later = text(page.select_one("#backprop .pl-later"))
    assert "sección 6" in later and "sección 7" in later and "sección 8" in later
