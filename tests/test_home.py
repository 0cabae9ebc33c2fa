"""The home page, language choice, fragments, error pages and static assets, over HTTP."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from bs4 import BeautifulSoup
from fastapi import Query
from fastapi.testclient import TestClient
from pagecheck import soup, text

from cnnlab.app.lesson import SECTIONS
from cnnlab.app.main import create_app
from cnnlab.app.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parent.parent

SPANISH_TITLES = [
    "¿Qué son? Datos en cuadrícula",
    "Capa convolucional",
    "Kernels y el ejemplo resuelto",
    "Operación convolución: alto × ancho × profundidad",
    "Uso compartido de parámetros y backpropagation",
    "Pooling (agrupación)",
    "Capa completamente conectada y ReLU",
    "Funciones de pérdida: softmax y entropía cruzada",
    "Entrenamiento: SGD y Adam",
]


# ---------------------------------------------------------------- language ----------


def test_home_is_spanish_by_default_even_for_an_english_browser(client):
    response = client.get("/", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert response.status_code == 200
    page = soup(response)
    assert page.select_one("html[lang=es]") is not None
    assert text(page.select_one("main h1")) == "Redes neuronales convolucionales, número a número"
    assert text(page.select_one("#lesson-title")) == "La lección, sección por sección"
    assert response.headers["content-language"] == "es"
    assert "set-cookie" not in response.headers


def test_lang_query_switches_to_english_and_sets_a_lax_cookie(client):
    response = client.get("/?lang=en")
    page = soup(response)
    assert page.select_one("html[lang=en]") is not None
    assert text(page.select_one("main h1")) == "Convolutional neural networks, number by number"
    assert text(page.select_one(".projector-toggle")) == "Projector mode"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("cnnlab_lang=en;")
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie


def test_language_cookie_persists_until_changed(client):
    client.get("/?lang=en")
    page = soup(client.get("/"))
    assert page.select_one("html[lang=en]") is not None
    assert text(page.select_one("#lesson-title")) == "The lesson, section by section"

    back = client.get("/?lang=es")
    assert back.headers["set-cookie"].startswith("cnnlab_lang=es;")
    assert soup(client.get("/")).select_one("html[lang=es]") is not None


@pytest.mark.parametrize("lang", ["fr", "EN", "", "es-CL"])
def test_unknown_lang_is_ignored(client, lang):
    response = client.get("/", params={"lang": lang})
    assert soup(response).select_one("html[lang=es]") is not None
    assert "set-cookie" not in response.headers


def test_malformed_or_unknown_cookie_falls_back_to_spanish(client):
    client.cookies.set("cnnlab_lang", "xx")
    assert soup(client.get("/")).select_one("html[lang=es]") is not None
    response = client.get("/", headers={"Cookie": 'cnnlab_lang="en; broken'})
    assert response.status_code == 200
    assert soup(response).select_one("html[lang=es]") is not None


def test_language_switch_links_keep_the_page_state(client):
    page = soup(client.get("/?preset=seed&step=3"))
    links = {a["hreflang"]: a for a in page.select(".lang-switch a[hreflang]")}
    assert set(links) == {"es", "en"}
    assert links["es"].get("aria-current") == "true"
    assert links["en"].get("aria-current") is None
    assert text(links["en"]) == "EN"
    target = urlsplit(links["en"]["href"])
    assert target.path == "/"
    assert sorted(target.query.split("&")) == ["lang=en", "preset=seed", "step=3"]


def test_default_locale_comes_from_overridable_settings():
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: Settings(default_locale="en")
    with TestClient(app) as test_client:
        assert soup(test_client.get("/")).select_one("html[lang=en]") is not None


# ---------------------------------------------------------------- content ----------


def test_sections_follow_the_seed_order(client):
    page = soup(client.get("/"))
    cards = page.select("#lesson-sections > li.card")
    assert [text(card.select_one(".card__title")) for card in cards] == SPANISH_TITLES
    assert [text(card.select_one(".card__number")) for card in cards] == [str(n) for n in range(1, 10)]
    for card in cards:
        assert text(card.select_one(".card__summary"))


def test_unbuilt_sections_are_marked_coming_soon_and_not_linked(client):
    page = soup(client.get("/"))
    for section, card in zip(SECTIONS, page.select("#lesson-sections > li.card"), strict=True):
        link = card.select_one(".card__title a")
        if client.get(section.path).status_code == 200:
            assert link is not None and link["href"] == section.href
            assert card.select_one(".badge") is None
        else:
            assert link is None, f"{section.href} is linked but not served"
            assert text(card.select_one(".badge")) == "Próximamente"


def test_page_has_landmarks_skip_link_and_projector_toggle(client):
    page = soup(client.get("/"))
    assert page.select_one("header.site-header a.brand[href='/']") is not None
    assert page.select_one("main#main") is not None
    assert page.select_one("footer") is not None
    skip = page.select_one("body > a.skip-link")
    assert skip["href"] == "#main"
    assert text(skip) == "Saltar al contenido"
    toggle = page.select_one("button#projector-toggle[type=button]")
    assert toggle["aria-pressed"] == "false"
    assert text(toggle) == "Modo proyector"
    # No inline script anywhere: a Content-Security-Policy without 'unsafe-inline' must work.
    assert all(script.get("src") for script in page.select("script"))
    assert page.select("[onclick], [onload], [onchange], [oninput]") == []


# ---------------------------------------------------------------- htmx fragments ----------


def test_full_page_and_fragment_share_the_url_and_vary(client):
    full = client.get("/")
    fragment = client.get("/", headers={"HX-Request": "true"})
    for response in (full, fragment):
        assert response.status_code == 200
        vary = [v.strip().lower() for v in response.headers["vary"].split(",")]
        assert "hx-request" in vary

    full_page, part = soup(full), soup(fragment)
    assert full_page.select_one("html") is not None
    assert part.select_one("html") is None
    assert part.select_one("header") is None
    assert part.select_one("footer") is None
    assert part.select_one("#lesson-sections") is not None
    assert [text(li) for li in part.select("#lesson-sections > li")] == [
        text(li) for li in full_page.select("#lesson-sections > li")
    ]


@pytest.mark.parametrize("extra", [{"HX-Boosted": "true"}, {"HX-History-Restore-Request": "true"}])
def test_boosted_and_history_restore_requests_get_the_full_page(client, extra):
    response = client.get("/", headers={"HX-Request": "true", **extra})
    assert soup(response).select_one("html[lang=es] header.site-header") is not None


def test_fragment_is_translated_too(client):
    fragment = soup(client.get("/?lang=en", headers={"HX-Request": "true"}))
    assert text(fragment.select_one("h1")) == "Convolutional neural networks, number by number"


# ---------------------------------------------------------------- errors ----------


def test_404_page_is_translated(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    page = soup(response)
    assert page.select_one("html[lang=es]") is not None
    assert text(page.select_one("#error-title")) == "Página no encontrada"
    assert page.select_one(".error-page a[href='/']") is not None

    english = soup(client.get("/no-such-page?lang=en"))
    assert text(english.select_one("#error-title")) == "Page not found"


def test_api_404_is_json(client):
    response = client.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json()["detail"], str)


def _app_with_probe_routes():
    app = create_app()

    @app.get("/probe")
    @app.get("/api/probe")
    def probe(stride: int = Query(ge=1, le=8), kind: str = Query("max", pattern="^(max|avg)$")):
        return {"stride": stride, "kind": kind}

    @app.get("/boom")
    @app.get("/api/boom")
    def boom():
        raise RuntimeError("secret internals")

    return app


@pytest.mark.parametrize(
    ("query", "field", "spanish"),
    [
        ("stride=abc", "stride", "Escribe un número entero."),
        ("stride=0", "stride", "Debe ser al menos 1."),
        ("stride=99", "stride", "Debe ser como máximo 8."),
        ("", "stride", "Este valor es obligatorio."),
    ],
)
def test_bad_query_values_get_a_readable_4xx(query, field, spanish):
    with TestClient(_app_with_probe_routes()) as test_client:
        api = test_client.get(f"/api/probe?{query}")
        assert api.status_code == 422
        body = api.json()
        assert body["detail"] == f"{field}: {spanish}"
        assert body["errors"][0]["field"] == field

        page = test_client.get(f"/probe?{query}")
        assert page.status_code == 422
        document = soup(page)
        assert text(document.select_one("#error-title")) == "Algunos valores no son válidos"
        assert text(document.select_one(".error-list li")) == f"{field}: {spanish}"


def test_validation_messages_follow_the_language():
    with TestClient(_app_with_probe_routes()) as test_client:
        body = test_client.get("/api/probe?stride=0&lang=en").json()
        assert body["detail"] == "stride: Must be at least 1."
        body = test_client.get("/api/probe?stride=2&kind=median&lang=es").json()
        assert body["detail"] == "kind: Este valor no es uno de los aceptados."


def test_server_errors_are_friendly_and_leak_nothing():
    with TestClient(_app_with_probe_routes(), raise_server_exceptions=False) as test_client:
        page = test_client.get("/boom")
        assert page.status_code == 500
        assert text(soup(page).select_one("#error-title")) == "Algo salió mal"
        api = test_client.get("/api/boom")
        assert api.status_code == 500
        assert api.json()["detail"]
        for response in (page, api):
            assert "secret internals" not in response.text
            assert "Traceback" not in response.text


# ---------------------------------------------------------------- links and assets ----------


def _internal_urls(page: BeautifulSoup, base: str = "/") -> set[str]:
    urls = set()
    for tag, attr in (("a", "href"), ("link", "href"), ("script", "src"), ("img", "src")):
        for node in page.select(f"{tag}[{attr}]"):
            target = urljoin(base, node[attr])
            if urlsplit(target).scheme in ("", "http", "https") and not urlsplit(target).netloc:
                urls.add(target.split("#", 1)[0])
    return urls


@pytest.mark.parametrize("lang", ["es", "en"])
def test_every_link_on_the_home_page_answers_200(client, lang):
    page = soup(client.get(f"/?lang={lang}"))
    links = {urljoin("/", a["href"]).split("#", 1)[0] for a in page.select("a[href]")}
    links.discard("")
    assert "/" in links
    for link in sorted(links):
        response = client.get(link)
        assert response.status_code == 200, f"{link} answered {response.status_code}"


def test_all_referenced_static_assets_exist(client):
    page = soup(client.get("/"))
    assets = {url for url in _internal_urls(page) if url.startswith("/static/")}
    expected = {
        "/static/css/app.css",
        "/static/js/app.js",
        "/static/vendor/htmx.min.js",
        "/static/vendor/htmx-ext-sse.min.js",
        "/static/img/favicon.svg",
    }
    assert expected <= assets
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 100, asset


def test_vendored_htmx_is_version_2_with_licences():
    vendor = ROOT / "static" / "vendor"
    assert re.search(r'version:\s*"2\.0\.\d+"', (vendor / "htmx.min.js").read_text())
    assert "sse" in (vendor / "htmx-ext-sse.min.js").read_text()
    for licence in ("htmx.LICENSE", "htmx-ext-sse.LICENSE"):
        assert "Permission to use, copy, modify" in (vendor / licence).read_text()


EXTERNAL = re.compile(r"""(?:src|href|action|poster|srcset)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
CSS_EXTERNAL = re.compile(r"""(?:url\(\s*["']?\s*(?:https?:)?//|@import\s+["']?(?:https?:)?//)""", re.IGNORECASE)


def test_no_template_or_stylesheet_loads_anything_from_outside():
    templates = sorted((ROOT / "templates").rglob("*.html"))
    assert templates
    for path in templates:
        source = path.read_text()
        assert not EXTERNAL.search(source), f"{path.name} references an outside URL"
        assert not re.search(r"https?://", source), f"{path.name} mentions an http(s) URL"
    for path in sorted((ROOT / "static" / "css").rglob("*.css")):
        assert not CSS_EXTERNAL.search(path.read_text()), f"{path.name} loads an outside URL"


@pytest.mark.parametrize("url", ["/", "/?lang=en", "/no-such-page"])
def test_rendered_pages_reference_only_this_server(client, url):
    page = soup(client.get(url))
    for node in page.select("[src], [href], [action]"):
        for attr in ("src", "href", "action"):
            value = node.get(attr)
            if value is not None:
                assert not re.match(r"\s*(?:https?:)?//", value), f"<{node.name} {attr}={value!r}>"
