"""The pooling stepper /pool over HTTP: numbers equal the engine's, steps, fragments, the
carry-over from /conv, both languages and every bad parameter."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
import pytest
from bs4 import BeautifulSoup
from pagecheck import soup, text, translated

from cnnlab.app.numbers import use_numbers
from cnnlab.app.routers.lesson_pages import EXAMPLE_POOL
from cnnlab.core import kernels
from cnnlab.core.conv import conv_forward, format_number, output_size_formula
from cnnlab.core.pool import pool_forward, pool_step

HX_STEP = {"HX-Request": "true", "HX-Target": "pool-stepper"}
HX_LAB = {"HX-Request": "true", "HX-Target": "pool-lab"}


def output_values(page: BeautifulSoup, channel: int = 0) -> np.ndarray:
    """The output grid as shown at the last step (every cell filled in): full values from the titles."""
    table = page.select("#pool-stepper .matrix--output")[channel]
    rows = []
    for tr in table.select("tr"):
        # the page is Spanish: a decimal comma
        rows.append([float(b["title"].split(": ")[-1].replace("\u2212", "-").replace(",", "."))
                     for b in tr.select("button")])
    return np.array(rows)


def errors(page: BeautifulSoup) -> list[str]:
    return [text(li) for li in page.select(".error-list li")]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size,stride", [(2, None), (2, 1), (3, 1), (3, 2)])
def test_the_last_step_shows_the_engines_pooled_map(client, kind, size, stride):
    params = {"kind": kind, "size": size}
    if stride:
        params["stride"] = stride
    first = soup(client.get("/pool", params=params))
    steps = int(first.select_one("#pool-stepper")["data-steps"])
    page = soup(client.get("/pool", params={**params, "step": steps - 1}))
    expected, _cache = pool_forward(EXAMPLE_POOL[None, None], kind, size, stride)
    np.testing.assert_allclose(output_values(page), expected[0, 0], rtol=0, atol=1e-4)


def test_max_marks_the_first_maximum_as_the_winner(client):
    grid = "5,5;1,5"  # a tie: the winner is the first 5 in row-major order
    page = soup(client.get("/pool", params={"input": "grid", "grid": grid, "kind": "max", "size": 2}))
    cells = page.select(".pool-input td")
    winners = [i for i, td in enumerate(cells) if "is-winner" in td.get("class", [])]
    assert winners == [0]
    step = pool_step(np.array([[5, 5], [1, 5]]), "max", 2, 2, step=0)
    assert step.winner == (0, 0)
    assert text(page.select_one("#pool-sum .sum-expr")) == step.text == "max(5, 5, 1, 5) = 5"
    assert page.select_one(".pool-winner") is not None


def test_each_step_writes_out_the_window_of_the_engine(client):
    for step in range(4):
        page = soup(client.get("/pool", params={"kind": "avg", "step": step}))
        with use_numbers("es"):
            st = pool_step(EXAMPLE_POOL, "avg", 2, 2, step=step)
        assert text(page.select_one("#pool-sum .sum-expr")) == st.text
        window = [td.get_text() for td in page.select(".pool-input td.is-window")]
        assert window == [format_number(v) for row in st.window for v in row]
        assert page.select_one("#pool-stepper")["data-step"] == str(step)
    assert "(1 + 3 + 4 + 6) / 4 = 3.5" == pool_step(EXAMPLE_POOL, "avg", 2, 2, step=0).text
    assert text(soup(client.get("/pool?kind=avg&lang=es")).select_one("#pool-sum .sum-expr")).endswith("= 3,5")
    assert text(soup(client.get("/pool?kind=avg&lang=en")).select_one("#pool-sum .sum-expr")).endswith("= 3.5")


def test_global_average_is_one_number_per_channel(client):
    page = soup(client.get("/pool", params={"kind": "global_avg"}))
    assert page.select_one("#pool-stepper")["data-steps"] == "1"
    expected = pool_forward(EXAMPLE_POOL[None, None], "global_avg")[0][0, 0, 0, 0]
    assert expected == 3.125
    assert text(page.select_one("#pool-sum .sum-expr")).endswith("= 3,125")
    assert "size" not in dict(parse_qsl(urlsplit(page.select_one("#pool-stepper")["action"]).query))


def test_output_size_formula_has_the_numbers(client):
    page = soup(client.get("/pool", params={"input": "seed", "size": 3, "stride": 2}))
    formulas = [text(p) for p in page.select(".lesson-formula .formula")]
    # the formula shown, with its own numbers: no padding or dilation terms of the convolution's
    assert formulas == ["Ho = ⌊(H − k)/S⌋ + 1 = ⌊(5 − 3)/2⌋ + 1 = 2", "Wo = ⌊(W − k)/S⌋ + 1 = ⌊(5 − 3)/2⌋ + 1 = 2"]
    assert output_size_formula(5, 3, 2).endswith("= 2")
    page = soup(client.get("/pool", params={"input": "grid", "grid": "1,2,3,4,5,6;1,2,3,4,5,6;1,2,3,4,5,6",
                                            "size": 2, "stride": 1}))
    formulas = [text(p) for p in page.select(".lesson-formula .formula")]
    assert formulas == ["Ho = ⌊(H − k)/S⌋ + 1 = ⌊(3 − 2)/1⌋ + 1 = 2", "Wo = ⌊(W − k)/S⌋ + 1 = ⌊(6 − 2)/1⌋ + 1 = 5"]


def test_a_step_is_a_fragment_and_a_setting_pushes_the_address(client):
    full = client.get("/pool", params={"step": 1})
    assert full.text.lstrip().lower().startswith("<!doctype html>")
    assert "HX-Request" in full.headers["vary"] and "HX-Target" in full.headers["vary"]
    step = client.get("/pool", params={"step": 2}, headers=HX_STEP)
    assert step.text.lstrip().startswith('<form id="pool-stepper"')
    assert "HX-Request" in step.headers["vary"]
    lab = client.get("/pool", params={"kind": "avg", "size": "3", "stride": "1"}, headers=HX_LAB)
    assert lab.text.lstrip().startswith('<div id="pool-lab"')
    assert dict(parse_qsl(urlsplit(lab.headers["hx-push-url"]).query)) == {
        "input": "example", "kind": "avg", "size": "3", "stride": "1"}


def test_step_buttons_and_output_cells_name_their_step(client):
    page = soup(client.get("/pool", params={"step": 1}))
    assert page.select_one("#pool-next")["value"] == "2"
    assert page.select_one("#pool-prev")["value"] == "0"
    assert page.select_one("#pool-last")["value"] == "3"
    assert [b["value"] for b in page.select(".matrix--output button")] == ["0", "1", "2", "3"]
    assert page.select_one('.matrix--output button[aria-current="step"]')["value"] == "1"


def test_both_languages(client):
    es = soup(client.get("/pool", params={"lang": "es"}))
    en = soup(client.get("/pool", params={"lang": "en"}))
    assert text(es.select_one("h1")) == translated("Pooling, step by step") == "Pooling, paso a paso"
    assert text(en.select_one("h1")) == "Pooling, step by step"
    assert es.select_one(".pool-winner").get_text() != en.select_one(".pool-winner").get_text()


def seed_conv_query(kernel: str = "seed|sobel_x") -> str:
    return urlencode({"preset": "seed", "kernel": kernel})


def test_the_conv_page_carries_its_feature_map_over(client):
    conv_page = soup(client.get(f"/conv?{seed_conv_query()}"))
    link = conv_page.select_one("#conv-to-pool")["href"]
    params = dict(parse_qsl(urlsplit(link).query))
    assert params["input"] == "conv"
    pool_page = soup(client.get(link))
    assert errors(pool_page) == []
    k = np.stack([kernels.SEED_KERNEL, kernels.preset("sobel_x")])[:, None]
    fmap, _cache = conv_forward(kernels.SEED_INPUT[None].astype(np.float64)[None], k, None)
    steps = int(pool_page.select_one("#pool-stepper")["data-steps"])
    last = soup(client.get("/pool", params={**params, "step": steps - 1}))
    expected, _cache = pool_forward(fmap, "max", 2)
    for f in range(2):
        np.testing.assert_allclose(output_values(last, f), expected[0, f])


def test_relu_on_the_carried_map(client):
    params = {"input": "conv", "from": seed_conv_query("laplacian"), "kind": "max", "size": 2, "stride": 1, "relu": "1"}
    first = soup(client.get("/pool", params=params))
    steps = int(first.select_one("#pool-stepper")["data-steps"])
    last = soup(client.get("/pool", params={**params, "step": steps - 1}))
    fmap, _cache = conv_forward(kernels.SEED_INPUT[None, None].astype(np.float64), kernels.preset("laplacian")[None, None], None)
    expected, _cache = pool_forward(np.maximum(fmap, 0), "max", 2, 1)
    np.testing.assert_allclose(output_values(last), expected[0, 0])
    assert fmap.min() < 0  # the check means something: ReLU changed the input


@pytest.mark.parametrize("params,field", [
    ({"kind": "median"}, "kind"),
    ({"size": "0"}, "size"),
    ({"size": "abc"}, "size"),
    ({"stride": "99"}, "stride"),
    ({"size": "5"}, "fit"),
    ({"step": "4"}, "step"),
    ({"step": "-1"}, "step"),
    ({"input": "grid", "grid": "1,2;3"}, "grid"),
    ({"input": "grid", "grid": "1,nan;3,4"}, "grid"),
    ({"input": "grid", "grid": ";;"}, "grid"),
    ({"input": "nothing"}, "input"),
    ({"input": "conv"}, "input"),
    ({"input": "conv", "from": "kernel=zzz"}, "input"),
    ({"input": "conv", "from": "image=camera&size=32"}, "input"),
    ({"relu": "maybe"}, "relu"),
])
def test_bad_input_gives_a_message_not_a_500(client, params, field):
    for lang in ("es", "en"):
        response = client.get("/pool", params={**params, "lang": lang})
        assert response.status_code == 422  # a full page with bad values; htmx gets 200
        page = soup(response)
        items = page.select(f'.error-list li[data-field="{field}"]')
        assert items and text(items[0])
        assert page.select_one("#pool-stepper") is None
    fragment = client.get("/pool", params=params, headers=HX_STEP)
    assert fragment.status_code == 200 and "error-list" in fragment.text
