"""The convolution stepper page /conv over HTTP: the seed's example, fragments, every bad
parameter, RGB, pictures, the settings form and the upload form."""

from __future__ import annotations

import io
import re
import struct
import zlib
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
import pytest
from bs4 import BeautifulSoup
from pagecheck import soup, text, translated
from PIL import Image

from cnnlab.app import images
from cnnlab.app.conv_state import parse_kernel
from cnnlab.app.settings import Settings, get_settings
from cnnlab.core import kernels
from cnnlab.core.conv import conv_forward, conv_step

SEED_STEP_0 = "35·(−2) + 40·(−1) + 41·0 + 40·(−1) + 40·1 + 42·1 + 42·0 + 46·1 + 50·2 = 78"
SEED_STEP_1 = "40·(−2) + 41·(−1) + 45·0 + 40·(−1) + 42·1 + 46·1 + 46·0 + 50·1 + 55·2 = 87"


def sum_text(page: BeautifulSoup) -> str:
    """The written sum, as a reader sees it (the element the page shows the sum in)."""
    return text(page.select_one("#conv-sum .sum-expr"))


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(upload_dir=tmp_path / "uploads")


@pytest.fixture
def web(client, settings):
    """The client with ``settings`` in force (uploads go to a temporary folder)."""
    client.app.dependency_overrides[get_settings] = lambda: settings
    return client


def form_fields(page: BeautifulSoup) -> list[tuple[str, str]]:
    """What the browser would send for #conv-form as rendered (no button pressed)."""
    fields = []
    for el in page.select("#conv-form input, #conv-form select"):
        name = el.get("name")
        if not name or el.get("type") == "submit":
            continue
        if el.name == "select":
            option = el.select_one("option[selected]") or el.select_one("option")
            fields.append((name, option.get("value", option.get_text())))
        elif el.get("type") in ("radio", "checkbox"):
            if el.has_attr("checked"):
                fields.append((name, el.get("value", "on")))
        else:
            fields.append((name, el.get("value", "")))
    return fields


def submit(client, page: BeautifulSoup, **changes) -> object:
    """Send the settings form as htmx does, with some fields changed."""
    fields = [(k, v) for k, v in form_fields(page) if k not in changes] + list(changes.items())
    return client.get("/conv?" + urlencode(fields), headers={"HX-Request": "true", "HX-Target": "conv-lab"})


# ---------------------------------------------------------------- the seed's example ----------


def test_seed_preset_opens_at_the_first_step_with_78_in_spanish(client):
    response = client.get("/conv?preset=seed")
    assert response.status_code == 200
    page = soup(response)
    assert page.select_one("html[lang=es]") is not None
    assert text(page.select_one("h1")) == "Kernels y convolución, paso a paso"
    assert sum_text(page) == SEED_STEP_0
    assert text(page.select_one("#conv-sum")).endswith("= 78")
    assert text(page.select_one("#conv-status")).startswith("Paso 1 de 9")
    # The receptive field: the top-left 3×3 of the input, coloured like the terms.
    window = [text(td) for td in page.select(".matrix--input td.is-window")]
    assert window == ["35", "40", "41", "40", "40", "42", "42", "46", "50"]
    assert [text(td) for td in page.select(".matrix--kernel td")] == ["−2", "−1", "0", "−1", "1", "1", "0", "1", "2"]
    assert [text(td) for td in page.select(".matrix--products td")] == ["−70", "−40", "0", "−40", "40", "42", "0", "46", "100"]
    # Term, input cell, weight and product share one colour class.
    first_term = page.select_one("#conv-sum .term")
    tag = first_term["data-t"]
    colours = {c for el in page.select(f'[data-t="{tag}"]') for c in el["class"] if re.fullmatch(r"tc\d", c)}
    assert len(page.select(f'[data-t="{tag}"]')) == 4
    assert len(colours) == 1


def test_next_step_shows_87_and_fills_in_the_output(client):
    page = soup(client.get("/conv?preset=seed&step=1"))
    assert sum_text(page) == SEED_STEP_1
    cells = page.select(".matrix--output td")
    assert [c["class"][0] for c in cells] == ["is-done", "is-current"] + ["is-todo"] * 7
    assert [text(c) for c in cells[:2]] == ["78", "87"]
    assert all(text(c) == "" for c in cells[2:])


def test_english_with_lang_en(client):
    page = soup(client.get("/conv?preset=seed&lang=en"))
    assert page.select_one("html[lang=en]") is not None
    assert text(page.select_one("h1")) == "Kernels and convolution, step by step"
    assert text(page.select_one("#conv-status")).startswith("Step 1 of 9")
    assert sum_text(page) == SEED_STEP_0


def test_home_links_sections_3_and_4_to_the_stepper(client):
    page = soup(client.get("/"))
    assert page.select_one("#section-kernels .card__title a[href='/conv?preset=seed']") is not None
    # Section 4 is height × width × depth: a colour photo, three channels.
    link = page.select_one("#section-convolution .card__title a")["href"]
    assert link.startswith("/conv?") and "color=rgb" in link
    stepper = soup(client.get(link))
    assert stepper.select_one(".lesson-nav")["data-section"] == "4"
    assert soup(client.get("/conv?preset=seed")).select_one(".lesson-nav")["data-section"] == "3"


def test_conv_without_parameters_is_the_seed_example(client):
    assert sum_text(soup(client.get("/conv"))) == SEED_STEP_0


def test_output_size_formula_has_the_numbers_filled_in(client):
    page = soup(client.get("/conv?preset=seed&padding=1&stride=2"))
    formulas = [text(p) for p in page.select("#conv-output-size .formula")]
    assert formulas[0].endswith("= ⌊(5 + 2 − 1·(3 − 1) − 1)/2⌋ + 1 = 3")
    assert formulas[1].startswith("Wo = ⌊(W + 2P − D·(K − 1) − 1)/S⌋ + 1")


# ---------------------------------------------------------------- fragments ----------


def test_a_step_returns_only_the_stepper_fragment(client):
    response = client.get("/conv?preset=seed&kernel=seed&step=1", headers={"HX-Request": "true", "HX-Target": "conv-stepper"})
    assert response.status_code == 200
    vary = {v.strip().lower() for v in response.headers["vary"].split(",")}
    assert {"hx-request", "hx-target"} <= vary
    page = soup(response)
    assert page.select_one("html") is None
    assert page.select_one("header") is None
    assert page.select_one("#conv-form") is None
    roots = [el for el in page.contents if getattr(el, "name", None)]
    assert [el.get("id") for el in roots] == ["conv-stepper"]
    assert sum_text(page) == SEED_STEP_1


def test_a_settings_change_returns_the_lab_with_the_canonical_address(client):
    page = soup(client.get("/conv?preset=seed"))
    response = submit(client, page, use_0="sobel_x")
    assert response.status_code == 200
    assert "hx-request" in response.headers["vary"].lower()
    fragment = soup(response)
    roots = [el for el in fragment.contents if getattr(el, "name", None)]
    assert [el.get("id") for el in roots] == ["conv-lab"]
    assert response.headers["hx-push-url"] == "/conv?preset=seed&kernel=sobel_x"
    assert sum_text(fragment).endswith("= 18")


def test_full_page_and_fragment_show_the_same_stepper(client):
    url = "/conv?preset=seed&kernel=laplacian&padding=same&step=7"
    full = soup(client.get(url)).select_one("#conv-stepper")
    part = soup(client.get(url, headers={"HX-Request": "true", "HX-Target": "conv-stepper"})).select_one("#conv-stepper")
    assert text(full) == text(part)


def test_plain_form_submission_is_redirected_to_the_canonical_address(client):
    page = soup(client.get("/conv?preset=seed"))
    # Each control once, as a browser sends it (a parameter given twice with different values is refused).
    fields = [(k, v) for k, v in form_fields(page) if k not in ("use_0", "stride")] + [("use_0", "sobel_y"), ("stride", "2")]
    response = client.get("/conv?" + urlencode(fields), follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/conv?preset=seed&kernel=sobel_y&stride=2"
    expected = conv_step(kernels.SEED_INPUT, kernels.PRESETS["sobel_y"], stride=2, step=0).text
    assert sum_text(soup(client.get(response.headers["location"]))) == expected


def test_language_links_keep_the_state(client):
    page = soup(client.get("/conv?preset=seed&kernel=sobel_x&step=4"))
    link = page.select_one(".lang-switch a[hreflang=en]")
    params = dict(parse_qsl(urlsplit(link["href"]).query))
    assert urlsplit(link["href"]).path == "/conv"
    assert params == {"preset": "seed", "kernel": "sobel_x", "step": "4", "lang": "en"}


def test_step_controls_are_submit_buttons_carrying_the_state(client):
    page = soup(client.get("/conv?preset=seed&kernel=seed&step=4"))
    stepper = page.select_one("form#conv-stepper[hx-get='/conv'][hx-push-url='true']")
    hidden = {i["name"]: i["value"] for i in stepper.select("input[type=hidden]")}
    assert hidden == {"preset": "seed", "kernel": "seed"}
    buttons = {b["id"]: b.get("value") for b in stepper.select(".stepper__buttons button[id]")}
    assert buttons["conv-first"] == "0"
    assert buttons["conv-prev"] == "3"
    assert buttons["conv-next"] == "5"
    assert buttons["conv-last"] == "8"
    assert [b["value"] for b in stepper.select(".matrix--output button[name=step]")] == [str(k) for k in range(9)]
    # No inline script or handler: a strict Content-Security-Policy must work.
    assert all(script.get("src") for script in page.select("script"))
    assert page.select("[onclick], [onchange], [onkeydown], [style]") == []


# ---------------------------------------------------------------- bad parameters ----------

NINE = ";".join([",".join(["1"] * 9)] * 9)
SIX = ";".join([",".join(["1"] * 6)] * 6)


@pytest.mark.parametrize(
    ("query", "field", "msgid", "params"),
    [
        ({"kernel": NINE}, "kernel", "The kernel is %(dims)s; a kernel can be from 1×1 up to %(max)s×%(max)s.",
         {"dims": "9×9", "max": 7}),
        ({"stride": "0"}, "stride", "The stride must be a whole number from %(min)s to %(max)s.", {"min": 1, "max": 8}),
        ({"stride": "abc"}, "stride", "The stride must be a whole number from %(min)s to %(max)s.", {"min": 1, "max": 8}),
        ({"kernel": "1,2,3;4,x,6;7,8,9"}, "kernel", "“%(value)s” is not a number (%(where)s).",
         {"value": "x", "where": "kernel, fila 2, columna 2"}),
        ({"kernel": "1,2,3;4,NaN,6;7,8,9"}, "kernel",
         "“%(value)s” is not allowed (%(where)s): enter a finite number, not NaN or infinity.",
         {"value": "NaN", "where": "kernel, fila 2, columna 2"}),
        ({"kernel": "1,2;3"}, "kernel",
         "Row %(row)s has %(got)s values but row 1 has %(want)s: every row needs the same number of values.",
         {"row": 2, "got": 1, "want": 2}),
        ({"kernel": "blurry"}, "kernel", "There is no kernel preset called “%(name)s”.", {"name": "blurry"}),
        ({"padding": "-1"}, "padding", "The padding must be “valid”, “same” or a whole number from 0 to %(max)s.", {"max": 8}),
        ({"padding": "9"}, "padding", "The padding must be “valid”, “same” or a whole number from 0 to %(max)s.", {"max": 8}),
        ({"dilation": "5"}, "dilation", "The dilation must be a whole number from %(min)s to %(max)s.", {"min": 1, "max": 4}),
        ({"step": "9"}, "step",
         "There is no step %(step)s: with these settings there are %(n)s steps, numbered 0 to %(last)s.",
         {"step": 9, "n": 9, "last": 8}),
        ({"step": "-1"}, "step", "The step must be a whole number, 0 or more.", {}),
        ({"mode": "fft"}, "mode", "The operation must be “xcorr” (cross-correlation) or “conv” (convolution).", {}),
        ({"bias": "inf"}, "bias", "“%(value)s” is not allowed (%(where)s): enter a finite number, not NaN or infinity.",
         {"value": "inf", "where": "sesgo del filtro 1"}),
        ({"kernel": "|".join(["seed"] * 5)}, "kernel", "There are %(n)s filters; at most %(max)s are allowed.",
         {"n": 5, "max": 4}),
        ({"preset": "cat"}, "input", "There is no input preset called “%(name)s”; the only one is “seed”.", {"name": "cat"}),
        ({"image": "0123456789abcdef0123456789abcdef"}, "input", images.MSG_GONE, {}),
        ({"image": "../../etc/passwd"}, "input",
         "There is no image called “%(id)s”. Choose a sample or upload a picture.", {"id": "../../etc/passwd"}),
        ({"image": "camera", "size": "100"}, "size",
         "The working size must be a whole number from %(min)s to %(max)s pixels.", {"min": 5, "max": 32}),
        ({"image": "camera", "color": "cmyk"}, "color", "The colour must be “gray” or “rgb”.", {}),
        ({"grid": "1,2;3,4;5,6;7,8;9,10;11,12;13,14;15,16;17,18;19,20;21,22"}, "grid",
         "A typed grid can be at most %(max)s×%(max)s.", {"max": 10}),
    ],
)
def test_every_bad_parameter_gets_a_translated_message_not_a_500(client, query, field, msgid, params):
    response = client.get("/conv?" + urlencode({"preset": "seed", **query} if "image" not in query and "grid" not in query else query))
    assert response.status_code == 422  # a full page with bad values; htmx gets 200
    page = soup(response)
    message = translated(msgid, **params)
    problem = page.select_one(f"#conv-problems li[data-field='{field}']")
    assert problem is not None, text(page.select_one("main"))
    assert text(problem) == message
    assert page.select_one("#conv-stepper") is None
    assert page.select_one("#conv-form") is not None
    if field in ("stride", "padding", "dilation", "size", "color", "mode", "bias", "kernel", "input", "grid"):
        assert text(page.select_one(f"#err-{field}")) == message


def test_a_kernel_larger_than_the_padded_input_gets_the_formula_and_a_sentence(client):
    response = client.get("/conv?" + urlencode({"preset": "seed", "kernel": SIX}))
    assert response.status_code == 422
    page = soup(response)
    fit = page.select_one("#conv-problems #conv-fit")
    assert [text(p) for p in fit.select(".formula")] == [
        "Ho = ⌊(5 + 0 − 1·(6 − 1) − 1)/1⌋ + 1 = 0",
        "Wo = ⌊(5 + 0 − 1·(6 − 1) − 1)/1⌋ + 1 = 0",
    ]
    sentence = text(page.select_one("#conv-problems li[data-field='fit']"))
    assert "6" in sentence and "5" in sentence and sentence.startswith("El kernel no cabe")
    assert page.select_one("#conv-stepper") is None


def test_dilation_that_does_not_fit_is_explained_too(client):
    page = soup(client.get("/conv?preset=seed&dilation=3&lang=en"))
    assert text(page.select_one("#conv-fit .formula")) == "Ho = ⌊(5 + 0 − 3·(3 − 1) − 1)/1⌋ + 1 = −1"
    assert "with dilation 3 it covers 7 rows" in text(page.select_one("li[data-field='fit']"))


def test_text_in_a_kernel_cell_keeps_what_was_typed(client):
    page = soup(client.get("/conv?preset=seed"))
    response = submit(client, page, w_0_0_1_1="dos")
    fragment = soup(response)
    cell = fragment.select_one("input[name=w_0_0_1_1]")
    assert cell["value"] == "dos"
    assert cell["aria-invalid"] == "true"
    assert "hx-push-url" not in response.headers
    assert text(fragment.select_one("#err-kernel")) == translated(
        "“%(value)s” is not a number (%(where)s).", value="dos", where="kernel, fila 2, columna 2")


def test_a_decimal_comma_is_accepted_in_a_cell(client):
    page = soup(client.get("/conv?preset=seed"))
    fragment = soup(submit(client, page, w_0_0_1_1="2,5"))
    # the sum is written the page's way: a decimal comma in Spanish
    assert sum_text(fragment) == "35·(−2) + 40·(−1) + 41·0 + 40·(−1) + 40·2,5 + 42·1 + 42·0 + 46·1 + 50·2 = 138"


def test_bad_picture_parameters_are_4xx_pages(client):
    assert client.get("/conv/output.png?preset=seed&stride=0").status_code == 422
    assert client.get("/conv/output.png?preset=seed&filter=3").status_code == 422
    assert client.get("/conv/input.png?preset=seed&res=huge").status_code == 422


# ---------------------------------------------------------------- the numbers ----------


def test_rgb_sample_writes_one_expression_per_channel_and_their_sum(client, settings):
    response = client.get("/conv?image=chelsea&size=8&color=rgb&kernel=sobel_x&bias=2&step=3")
    page = soup(response)
    lines = page.select("#conv-sum .sum-line[data-channel]")
    assert [line["data-channel"] for line in lines] == ["R", "G", "B"]
    x = images.image_array("chelsea", get_settings(), 8, "rgb")
    w = np.repeat(kernels.PRESETS["sobel_x"][None, None], 3, axis=1)
    st = conv_step(x, w, np.array([2]), step=3)
    for line, expected in zip(lines, st.channel_texts, strict=True):
        assert text(line.select_one(".sum-expr")) == expected
    total = text(page.select_one("#conv-sum .sum-total"))
    parts = " + ".join(f"({s})".replace("(-", "(−") if s < 0 else str(s) for s in st.channel_sums)
    assert total == f"R + G + B + b = {parts} + 2 = {st.value}".replace("= -", "= −")
    assert len(page.select(".stage__row")) == 3


def test_page_numbers_equal_the_engine(client):
    query = {"grid": "3,1,4,1,5;9,2,6,5,3;5,8,9,7,9;3,2,3,8,4", "kernel": "sobel_x|1,0;0,-1", "bias": "1,-2",
             "padding": "1", "stride": "2"}
    F = 2
    x = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3], [5, 8, 9, 7, 9], [3, 2, 3, 8, 4]])
    w = np.zeros((F, 1, 3, 3))
    w[0, 0] = kernels.PRESETS["sobel_x"]
    w[1, 0, :2, :2] = [[1, 0], [0, -1]]
    # Both filters must have the same size, so the 2×2 one is refused...
    page = soup(client.get("/conv?" + urlencode(query)))
    assert page.select_one("li[data-field=kernel]") is not None
    # ...and written as 3×3 it works.
    query["kernel"] = "sobel_x|1,0,0;0,-1,0;0,0,0"
    out, _ = conv_forward(x[None, None], w, np.array([1, -2]), stride=2, padding=1)
    steps = out.size
    page = soup(client.get("/conv?" + urlencode({**query, "step": steps - 1})))
    shown = [[[cell["title"].split(": ")[1] for cell in row.select("button")] for row in table.select("tr")]
             for table in page.select(".matrix--output")]
    expected = [[[str(int(v)).replace("-", "−") for v in row] for row in fmap] for fmap in out[0]]
    assert shown == expected
    for k in (0, 5, steps - 1):
        st = conv_step(x[None], w, np.array([1, -2]), stride=2, padding=1, step=k)
        page = soup(client.get("/conv?" + urlencode({**query, "step": k})))
        assert sum_text(page) == st.text


def test_convolution_mode_flips_the_kernel(client):
    page = soup(client.get("/conv?preset=seed&mode=conv"))
    assert [text(td) for td in page.select(".matrix--kernel td")] == ["2", "1", "0", "1", "1", "−1", "0", "−1", "−2"]
    x = kernels.SEED_INPUT[None]
    assert sum_text(page) == conv_step(x, kernels.SEED_KERNEL, mode="convolution", step=0).text


def test_relu_is_written_after_the_sum(client):
    page = soup(client.get("/conv?preset=seed&kernel=sobel_y&relu=1&step=0&lang=en"))
    value = conv_step(kernels.SEED_INPUT, kernels.PRESETS["sobel_y"], step=0).value
    assert text(page.select_one(".sum-relu")) == f"ReLU({value}) = {max(value, 0)}"


def test_padding_cells_are_drawn_as_padding(client):
    page = soup(client.get("/conv?preset=seed&padding=1"))
    rows = page.select(".matrix--input tr")
    assert len(rows) == 7
    assert all("is-pad" in td["class"] for td in rows[0].select("td"))
    assert [text(td) for td in rows[0].select("td")] == ["0"] * 7
    assert sum_text(page).startswith("0·(−2) + 0·(−1) + 0·0 + 0·(−1) + 35·1")


def test_large_inputs_are_pictures_with_the_window_as_numbers(client):
    page = soup(client.get("/conv?image=camera&size=24&kernel=sobel_x&step=30"))
    assert page.select_one(".matrix--input") is None
    svg = page.select_one("svg.picture-map--input")
    assert len(svg.select("rect.win-cell")) == 9
    assert len(page.select(".stage__window td")) == 9
    out_svg = page.select_one("svg.picture-map--output")
    assert out_svg["data-wo"] == "22" and out_svg["data-ho"] == "22"
    assert out_svg.select_one("rect.current")["x"] == "8"
    assert out_svg.select_one("rect.current")["y"] == "1"


def test_large_grids_keep_the_window_neighbourhood_with_its_numbers_for_the_projector(client):
    # 10×10 padded to 12×12; step 45 is output row 5, column 6, whose window is input rows 4–6
    # and columns 5–7: projector mode keeps the 7 rows and columns around it, numbered.
    grid = ";".join(",".join(str(10 * i + j) for j in range(10)) for i in range(10))
    page = soup(client.get(f"/conv?grid={grid}&padding=1&step=45"))
    table = page.select_one(".matrix--input")
    kept = table.select("tr:not(.is-far):not(.matrix__heads)")
    assert [text(tr.th) for tr in kept] == ["2", "3", "4", "5", "6", "7", "8"]
    assert [text(th) for th in table.select("tr.matrix__heads th:not(.is-far)")][1:] == ["3", "4", "5", "6", "7", "8", "9"]
    assert [text(td) for td in kept[0].select("td:not(.is-far)")] == ["12", "13", "14", "15", "16", "17", "18"]
    assert len(table.select("tr")) == 13  # every row is still there for the other views
    output = page.select_one(".matrix--output")
    assert len(output.select("tr:not(.is-far)")) == 5
    assert len(output.select("tr:not(.is-far)")[0].select("td:not(.is-far)")) == 5
    # A picture's window says which rows and columns it covers.
    page = soup(client.get("/conv?image=camera&size=24&kernel=sobel_x&step=30&dilation=2"))  # row 2, column 11
    window = page.select_one(".matrix--window")
    assert [text(th) for th in window.select("tr.matrix__heads th")][1:] == ["11", "13", "15"]
    assert [text(tr.th) for tr in window.select("tr:not(.matrix__heads)")] == ["2", "4", "6"]


def test_output_png_has_the_feature_map_size(client):
    response = client.get("/conv/output.png?image=chelsea&color=rgb&kernel=sobel_x|sobel_y&stride=2&filter=1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    # chelsea is stored at 320×213: ⌊(320 − 3)/2⌋ + 1 = 159 by ⌊(213 − 3)/2⌋ + 1 = 106.
    assert picture.size == (159, 106)
    small = Image.open(io.BytesIO(client.get("/conv/output.png?preset=seed&res=work").content))
    assert small.size[0] == small.size[1] and small.size[0] % 3 == 0 and small.size[0] >= 256


def test_output_png_is_diverging_around_zero(client):
    response = client.get("/conv/output.png?grid=0,0,0;0,10,0;0,0,0&kernel=laplacian&padding=1&res=work")
    rgb = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    factor = rgb.shape[0] // 3
    centre, edge, corner = rgb[factor + 1, factor + 1], rgb[1, factor + 1], rgb[1, 1]
    assert centre[0] > centre[2]  # −40: red
    assert edge[2] > edge[0]  # +10: blue
    assert tuple(corner) == (255, 255, 255)  # 0: white


# ---------------------------------------------------------------- the settings form ----------


def test_changing_the_kernel_size_keeps_the_kernel_centred(client):
    page = soup(client.get("/conv?preset=seed"))
    response = submit(client, page, ksize="5")
    w, _ = parse_kernel(dict(parse_qsl(urlsplit(response.headers["hx-push-url"]).query))["kernel"], 1)
    assert w.shape == (1, 1, 5, 5)
    assert np.array_equal(w[0, 0, 1:4, 1:4], kernels.SEED_KERNEL)


def test_more_filters_and_the_stepper_steps_through_them(client):
    page = soup(client.get("/conv?preset=seed"))
    response = submit(client, page, filters="2")
    fragment = soup(response)
    assert len(fragment.select(".matrix--output")) == 2
    assert text(fragment.select_one("#conv-status")).startswith("Paso 1 de 18")
    url = response.headers["hx-push-url"]
    last = soup(client.get(url + "&step=17"))
    assert "filtro 2 de 2" in text(last.select_one("#conv-status"))


def test_random_kernel_is_reproducible_small_integers(client):
    page = soup(client.get("/conv?preset=seed"))
    seed = page.select_one("#conv-random")["value"]
    first = submit(client, page, random=seed).headers["hx-push-url"]
    again = submit(client, page, random=seed).headers["hx-push-url"]
    assert first == again
    w, _ = parse_kernel(dict(parse_qsl(urlsplit(first).query))["kernel"], 1)
    assert w.dtype.kind == "i" and w.min() >= -2 and w.max() <= 2


def test_switching_to_rgb_repeats_the_kernel_per_channel(client):
    page = soup(client.get("/conv?image=coffee&size=6"))
    response = submit(client, page, color="rgb")
    assert response.headers["hx-push-url"] == "/conv?image=coffee&size=6&color=rgb&kernel=seed"
    fragment = soup(response)
    assert len(fragment.select("#conv-form .filter__channel")) == 3
    # One channel's kernel changed: the URL holds three kernels for that filter.
    changed = submit(client, fragment, w_0_2_0_0="9").headers["hx-push-url"]
    kernel = dict(parse_qsl(urlsplit(changed).query))["kernel"]
    assert kernel.count("/") == 2 and kernel.endswith("/9,-1,0;-1,1,1;0,1,2")


def test_typed_grid_starts_from_the_seed_matrix_and_can_grow(client):
    page = soup(client.get("/conv?preset=seed"))
    fragment = soup(submit(client, page, source="grid"))
    assert len(fragment.select("#conv-form .matrix--edit input[name^=g_]")) == 25
    response = submit(client, fragment, grid_rows="6", g_0_0="1")
    grid = dict(parse_qsl(urlsplit(response.headers["hx-push-url"]).query))["grid"]
    assert grid.startswith("1,40,41,45,50;") and grid.endswith(";0,0,0,0,0")


# ---------------------------------------------------------------- uploads ----------


def png_bytes(width: int = 40, height: int = 30) -> bytes:
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def crafted_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[:600]


STATE = "preset=seed&kernel=sobel_x&stride=2"


def test_upload_goes_to_the_stepper_on_the_new_picture(web, settings):
    response = web.post("/conv/upload", data={"state": STATE}, files={"file": ("photo.png", png_bytes(), "image/png")},
                        follow_redirects=False)
    assert response.status_code == 303
    target = urlsplit(response.headers["location"])
    params = dict(parse_qsl(target.query))
    assert images.UPLOAD_ID.fullmatch(params["image"])
    assert params == {"image": params["image"], "size": "10", "color": "gray", "kernel": "sobel_x", "stride": "2"}
    page = soup(web.get(response.headers["location"]))
    x = images.image_array(params["image"], settings, 10, "gray")
    assert sum_text(page) == conv_step(x, kernels.PRESETS["sobel_x"], stride=2, step=0).text


def test_upload_by_htmx_swaps_the_lab_and_pushes_the_address(web):
    response = web.post("/conv/upload", data={"state": STATE}, files={"file": ("photo.png", png_bytes(), "image/png")},
                        headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response.headers["hx-push-url"].startswith("/conv?image=")
    assert soup(response).select_one("#conv-lab #conv-stepper") is not None


@pytest.mark.parametrize(
    ("name", "data", "msgid", "lang"),
    [
        ("notes.png", b"just some text, not a picture", images.MSG_NOT_AN_IMAGE, "es"),
        ("empty.png", b"", images.MSG_EMPTY, "es"),
        ("cut.jpg", truncated_jpeg(), images.MSG_DAMAGED, "en"),
        ("zero.png", crafted_png(0, 0), images.MSG_NO_PIXELS, "es"),
        ("huge.png", crafted_png(20000, 20000), images.MSG_TOO_MANY_PIXELS, "en"),
    ],
)
def test_bad_upload_keeps_the_state_and_says_why(web, name, data, msgid, lang):
    response = web.post(f"/conv/upload?lang={lang}", data={"state": STATE}, files={"file": (name, data, "image/png")},
                        headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "hx-push-url" not in response.headers
    page = soup(response)
    message = text(page.select_one("#err-upload"))
    expected = translated(msgid, lang)
    assert message.split("%")[0] == message  # placeholders were filled in
    assert message[:25] == expected[:25]
    # The state is intact: still the seed with Sobel x and stride 2.
    assert sum_text(page) == conv_step(kernels.SEED_INPUT, kernels.PRESETS["sobel_x"], stride=2, step=0).text
    assert page.select_one("input[name=state]")["value"] == STATE


def test_bad_upload_without_htmx_renders_the_page_with_links_that_keep_the_state(web):
    response = web.post("/conv/upload", data={"state": STATE}, files={"file": ("x.png", b"nope", "image/png")})
    assert response.status_code == 415  # the file's own status; htmx gets 200
    page = soup(response)
    assert page.select_one("html[lang=es]") is not None
    assert text(page.select_one("#err-upload")) == translated(images.MSG_NOT_AN_IMAGE)
    assert page.select_one(".lang-switch a[hreflang=en]")["href"] == f"/conv?{STATE}&lang=en"
