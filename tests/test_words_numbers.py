"""Words and numbers a class reads (issue 11, section 5): numbers in the page's language and
rounded half up, no engine or code names, the layers and activations named in Spanish, one
formula with its own numbers on /pool, ln on /pipeline, one size convention, one precision
per grid, and a carried map that gives ReLU something to do. The JSON API keeps plain numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest
from babel.messages.pofile import read_po
from pagecheck import soup, text
from test_conv_page import png_bytes, settings, web  # noqa: F401 (fixtures)

from cnnlab.app import i18n
from cnnlab.app.numbers import count, num, pct, use_numbers
from cnnlab.core import kernels, numfmt
from cnnlab.core.conv import conv_step, format_number
from cnnlab.core.exercises import format_value
from cnnlab.core.pool import pool_step

# ------------------------------------------------------------------ the one helper


@pytest.mark.parametrize("value,decimals,shown", [
    (3.125, 2, "3.13"),    # exactly halfway in binary too: half-to-even would write 3.12
    (2.675, 2, "2.68"),    # stored as 2.67499…: rounded on its shortest form, "2.675"
    (-3.125, 2, "−3.13"),  # halves away from zero, U+2212 minus
    (0.0004, 3, "0"),      # never "−0" or "0.000" when trimmed
    (-0.0004, 3, "0"),
    (2.5, 4, "2.5"),
    (78.0000001, 4, "78"),
])
def test_display_rounds_half_up(value, decimals, shown):
    assert numfmt.fixed(value, decimals) == shown


def test_python_itself_would_round_these_half_to_even():
    # what the helper exists for: the naive formatting surprises a student
    assert f"{3.125:.2f}" == "3.12" and f"{2.675:.2f}" == "2.67"


def test_the_locale_writes_the_digits_with_babel():
    with use_numbers("es"):
        assert (num(3.125), num(0.1, 2, trim=False), pct(0.936), format_number(-0.5)) == ("3,13", "0,10", "93,6\xa0%", "−0,5")
        assert format_value(0.000123) == "0,000123"
        assert numfmt.list_separator([0.5, 1]) == "; " and numfmt.list_separator([5, 1]) == ", "
        assert numfmt.scientific(-6.4654e-5, 3) == "−6,465e−5"
    with use_numbers("en"):
        assert (num(3.125), num(0.1, 2, trim=False), pct(0.936), format_number(-0.5)) == ("3.13", "0.10", "93.6%", "−0.5")
        assert numfmt.list_separator([0.5, 1]) == ", "
    # outside a page (scripts, tests, the API): a decimal point
    assert (format_number(0.7843), numfmt.list_separator([0.5])) == ("0.7843", ", ")
    assert count(2730) == "2\u202f730" and count(2729.5) == "2\u202f730"


def test_integers_in_a_written_sum_are_unchanged_in_both_languages():
    for locale in i18n.LOCALES:
        with use_numbers(locale):
            assert conv_step(kernels.SEED_INPUT, kernels.SEED_KERNEL, step=0).text == (
                "35·(−2) + 40·(−1) + 41·0 + 40·(−1) + 40·1 + 42·1 + 42·0 + 46·1 + 50·2 = 78")


# ------------------------------------------------------------------ pages and the API


def test_pages_write_decimals_the_languages_way(client):
    for lang, mark in (("es", "0,8522"), ("en", "0.8522")):
        page = soup(client.get(f"/pipeline?show=loss&lang={lang}"))
        assert mark in text(page.select_one("#pl-explain-sum"))
    es = soup(client.get("/pool?kind=avg&input=grid&grid=1,2;3,5&size=2&lang=es"))
    assert text(es.select_one("#pool-sum .sum-expr")) == "(1 + 2 + 3 + 5) / 4 = 2,75"
    en = soup(client.get("/pool?kind=avg&input=grid&grid=1,2;3,5&size=2&lang=en"))
    assert text(en.select_one("#pool-sum .sum-expr")) == "(1 + 2 + 3 + 5) / 4 = 2.75"
    # a list of decimals in Spanish is separated by semicolons: max(0,5; 1,5), never max(0,5, 1,5)
    es = soup(client.get("/pool?input=grid&grid=0.5,1.5;0.25,1&size=2&lang=es"))
    assert text(es.select_one("#pool-sum .sum-expr")) == "max(0,5; 1,5; 0,25; 1) = 1,5"


def test_the_json_api_keeps_a_decimal_point_whatever_the_language(client):
    client.get("/?lang=es")  # the language cookie says Spanish
    body = client.get("/api/pipeline?lang=es").json()
    assert isinstance(body["loss"], float)
    assert re.search(r"\d\.\d", body["loss_text"]) and not re.search(r"\d,\d", body["loss_text"])
    step = client.post("/api/pool", json={"input": [[1, 2], [3, 5]], "kind": "avg", "size": 2}).json()
    assert step["output"] == [[2.75]]


def test_a_typed_decimal_comma_still_parses_and_is_shown_back_as_typed(client):
    page = soup(client.get("/conv", params={"preset": "seed", "w_0_0_1_1": "2,5"}))
    assert page.select_one("input[name=w_0_0_1_1]")["value"] in ("2,5", "2.5")


# ------------------------------------------------------------------ words


ENGINE_WORDS = re.compile(r"\b(motor|engine|conv_backward|conv_forward|Conv2D|Pool2D|leaky_relu|NumPy)\b", re.I)
PAGES = ["/", "/grid", "/local", "/conv?preset=seed", "/conv", "/pipeline?show=loss",
         "/pipeline?show=prob-9", "/pool", "/activation", "/activation?fn=leaky_relu", "/train",
         "/train?dataset=mnist", "/practice?kind=softmax&seed=3"]


def visible_text(page) -> str:
    for node in page.select("script, style, select[name=fn] option[value]"):
        node.decompose()
    return text(page)


@pytest.mark.parametrize("lang", i18n.LOCALES)
def test_no_engine_or_code_names_in_what_students_read(client, lang):
    for path in PAGES:
        page = soup(client.get(path + ("&" if "?" in path else "?") + f"lang={lang}"))
        found = ENGINE_WORDS.findall(visible_text(page))
        assert not found, f"{path} ({lang}) shows {found}"


def test_the_catalog_says_leccion_for_the_lesson_and_names_no_engine():
    with i18n.po_path("es").open("rb") as fh:
        catalog = read_po(fh, locale="es")
    for message in catalog:
        if not message.id or isinstance(message.id, tuple):
            continue
        if re.search(r"\blesson\b", message.id) and not re.search(r"\bclass\b", message.id):
            assert "clase" not in message.string.lower(), (message.id, message.string)
        assert not re.search(r"\bmotor\b|conv_backward", message.string), message.string


def test_train_names_the_layers_in_the_pages_language(client):
    rows = lambda lang: [text(tr.select_one("td")) for tr in  # noqa: E731
                         soup(client.get(f"/train?lang={lang}")).select(".train-layers tbody tr")]
    es, en = rows("es"), rows("en")
    assert "Convolución 16@3×3, relleno 1" in es and "Aplanar" in es and "Densa 256→10" in es
    assert "Pooling (agrupación) máx. 2×2" in es and "Activación ReLU" in es
    assert "Convolution 16@3×3, padding 1" in en and "Pooling max 2×2" in en and "Dense 256→10" in en
    leaky = soup(client.get("/train?lang=es&activation=leaky_relu"))
    assert "Activación ReLU con fuga α = 0,01" in text(leaky.select_one(".train-layers"))
    options = [text(o) for o in leaky.select("select[name=activation] option")]
    assert options == ["ReLU", "sigmoide", "tanh", "ReLU con fuga"]


@pytest.mark.parametrize("fn,es_name,en_name", [("sigmoid", "sigmoide", "sigmoid"),
                                                ("leaky_relu", "ReLU con fuga", "leaky ReLU")])
def test_activation_names_in_both_languages(client, fn, es_name, en_name):
    for lang, name, after in (("es", es_name, "Después de"), ("en", en_name, "After")):
        page = soup(client.get(f"/activation?fn={fn}&lang={lang}"))
        assert text(page.select_one("#act-formula-title")) == name
        assert text(page.select(".act-pair figcaption")[1]) == f"{after} {name}"
        assert f"{name}(" in text(page.select_one("#act-example"))


def test_pool_shows_one_formula_with_its_own_numbers(client):
    page = soup(client.get("/pool", params={"size": 2}))
    formulas = [text(p) for p in page.select(".lesson-formula .formula")]
    assert formulas == ["Ho = ⌊(H − k)/S⌋ + 1 = ⌊(4 − 2)/2⌋ + 1 = 2", "Wo = ⌊(W − k)/S⌋ + 1 = ⌊(4 − 2)/2⌋ + 1 = 2"]
    assert not any("·" in f or "+ 0" in f for f in formulas)  # no padding or dilation terms of conv's formula


@pytest.mark.parametrize("lang", i18n.LOCALES)
def test_pipeline_says_log_is_the_natural_log(client, lang):
    page = soup(client.get(f"/pipeline?show=loss&lang={lang}"))
    assert "ln" in text(page.select_one("#pl-loss-ln"))
    assert "(base e)" in text(page.select_one("#pl-loss-ln"))
    # the written-out loss uses ln, and 0.160 (not log10's 0.069) is what ln gives
    written = text(page.select_one("#pl-explain-sum"))
    assert "·ln " in written and "·log " not in written
    q = float(re.search(r"1·ln ([0-9.,]+)", written).group(1).replace(",", "."))
    loss = float(written.rsplit("= ", 1)[1].replace(",", "."))
    assert loss == pytest.approx(-np.log(q), abs=1e-3)


def test_an_uploaded_picture_is_described_height_by_width_everywhere(web):
    response = web.post("/conv/upload", data={"state": "preset=seed"},
                        files={"file": ("photo.png", png_bytes(width=40, height=30), "image/png")})
    page = soup(response)
    whole = text(page.select_one(".conv-result .hint"))
    assert "30×40 píxeles, alto × ancho" in whole
    assert text(page.select_one(".conv-result figcaption .dims")).startswith("30×40")


# ------------------------------------------------------------------ /activation


def decimals_of(cell: str) -> int:
    return len(re.split(r"[.,]", cell)[1]) if re.search(r"[.,]", cell) else 0


@pytest.mark.parametrize("fn", ["sigmoid", "tanh", "leaky_relu", "relu"])
def test_every_activation_grid_has_one_precision(client, fn):
    page = soup(client.get(f"/activation?fn={fn}"))
    for grid in page.select(".act-before, .act-after"):
        cells = [td.get_text() for td in grid.select("td")]
        assert len({decimals_of(c) for c in cells}) == 1, cells


def test_the_slides_map_gets_a_bias_so_relu_has_something_to_do(client):
    page = soup(client.get("/activation?input=seed"))
    assert page.select_one("#act-bias") is not None
    before = [[float(td.get_text().replace("−", "-")) for td in tr.select("td")] for tr in page.select(".act-before tr")]
    bias = -int(numfmt.round_half_up(kernels.SEED_INPUT.mean(), 0))
    np.testing.assert_array_equal(before, kernels.SEED_INPUT + bias)
    assert f"b = {format_number(bias)}" in text(page.select_one("#act-bias"))
    after = [[float(td.get_text().replace("−", "-")) for td in tr.select("td")] for tr in page.select(".act-after tr")]
    assert np.sum(np.array(before) < 0) > 0 and np.sum(np.array(after) == 0) > 0  # ReLU changes something
    # the carried feature map of the slides' convolution too (all positive: 78, 87, …)
    page = soup(client.get("/activation", params={"input": "conv", "from": "preset=seed"}))
    assert page.select_one("#act-bias") is not None
    # a map that has negatives already, or one passed through ReLU on purpose, is left as it is
    assert soup(client.get("/activation")).select_one("#act-bias") is None
    assert soup(client.get("/activation?input=seed&relu=1")).select_one("#act-bias") is None


def test_pool_step_text_follows_the_page_language():
    with use_numbers("es"):
        assert pool_step(np.array([[1, 2], [3, 5]]), "avg", 2, 2, step=0).text == "(1 + 2 + 3 + 5) / 4 = 2,75"


def test_the_pool_output_grid_has_one_precision(client):
    page = soup(client.get("/pool?kind=avg&size=2&stride=1&step=8"))
    cells = [b.get_text() for b in page.select("#pool-stepper .matrix--output button")]
    assert "3,50" in cells and "3,25" in cells and "4,00" in cells
    assert {decimals_of(c) for c in cells} == {2}
    # a map of whole numbers stays whole
    cells = [b.get_text() for b in soup(client.get("/pool?kind=max&step=3")).select("#pool-stepper .matrix--output button")]
    assert {decimals_of(c) for c in cells} == {0}


def test_the_pipeline_states_its_rounding_with_an_example_in_each_language(client):
    for lang, example in (("es", "(3,125 → 3,13)"), ("en", "(3.125 → 3.13)")):
        hint = text(soup(client.get(f"/pipeline?lang={lang}")).select_one(".pl-hint"))
        assert example in hint
