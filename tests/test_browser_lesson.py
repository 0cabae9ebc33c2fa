"""The lesson pages in real Chromium: the pooling stepper's keys, clicks and play, the
carry-over from /conv to /pool, reading pixels on /grid, the lesson walked with PageDown /
PageUp, and the screenshots (1280×720 projector, 390×844) of /pool, /grid, /local, /activation.

The ``page`` fixture fails (never skips) when Chromium is missing.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
from pagecheck import assert_clean, no_horizontal_scroll, projector_on, save_shot
from playwright.sync_api import expect

from cnnlab.app import images
from cnnlab.app.routers.lesson_pages import EXAMPLE_POOL
from cnnlab.app.settings import get_settings
from cnnlab.core import kernels
from cnnlab.core.conv import conv_forward
from cnnlab.core.pool import pool_forward, pool_step


def ready(page) -> None:
    """htmx has processed the page (it does so on DOMContentLoaded, after defining itself)."""
    page.wait_for_load_state("load")
    page.wait_for_function("() => window.htmx !== undefined")


def step_of(page) -> str:
    return page.locator("#pool-stepper").get_attribute("data-step")


def shown_output(page, channel: int = 0) -> np.ndarray:
    table = page.locator("#pool-stepper .matrix--output").nth(channel)
    titles = table.locator("tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.querySelectorAll('button')).map(b => b.title.split(': ').pop()))")
    return np.array([[float(t.replace("\u2212", "-").replace(",", ".")) for t in row] for row in titles])  # 3,5 in Spanish


def test_pool_keys_step_through_the_windows(page, live_server):
    page.goto(f"{live_server}/pool?kind=max&size=2")
    ready(page)
    expect(page.locator("#pool-sum .sum-expr")).to_have_text(pool_step(EXAMPLE_POOL, "max", 2, 2, step=0).text)
    page.keyboard.press("ArrowRight")
    expect(page.locator("#pool-sum .sum-expr")).to_have_text(pool_step(EXAMPLE_POOL, "max", 2, 2, step=1).text)
    assert dict(parse_qsl(urlsplit(page.url).query))["step"] == "1"
    page.keyboard.press("End")
    expect(page.locator("#pool-stepper")).to_have_attribute("data-step", "3")
    winner = pool_step(EXAMPLE_POOL, "max", 2, 2, step=3).winner
    cells = page.locator(".pool-input tr").nth(winner[0]).locator("td").nth(winner[1])
    expect(cells).to_have_class(re.compile(r"\bis-winner\b"))
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#pool-stepper")).to_have_attribute("data-step", "2")
    page.keyboard.press("Home")
    expect(page.locator("#pool-stepper")).to_have_attribute("data-step", "0")
    # Space plays to the end by itself.
    page.keyboard.press("Space")
    expect(page.locator("#pool-play")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#pool-stepper")).to_have_attribute("data-step", "3")
    expect(page.locator("#pool-play")).to_have_attribute("aria-pressed", "false")
    assert_clean(page)


def test_pool_click_an_output_cell_and_change_a_setting(page, live_server):
    page.goto(f"{live_server}/pool?kind=avg&size=2&stride=1")
    ready(page)
    page.locator('.matrix--output button[value="7"]').click()
    expect(page.locator("#pool-stepper")).to_have_attribute("data-step", "7")
    expect(page.locator("#pool-sum .sum-expr")).to_have_text(pool_step(EXAMPLE_POOL, "avg", 2, 1, step=7).text)
    page.locator("#pool-kind").select_option("max")
    expect(page.locator("#pool-sum .sum-expr")).to_have_text(pool_step(EXAMPLE_POOL, "max", 2, 1, step=0).text)
    assert dict(parse_qsl(urlsplit(page.url).query))["kind"] == "max"
    page.keyboard.press("End")
    expected, _cache = pool_forward(EXAMPLE_POOL[None, None], "max", 2, 1)
    expect(page.locator("#pool-stepper")).to_have_attribute("data-step", str(expected.size - 1))
    np.testing.assert_allclose(shown_output(page), expected[0, 0])
    assert_clean(page)


def test_carry_the_conv_feature_map_over_to_pool(page, live_server):
    page.goto(f"{live_server}/conv?preset=seed&kernel=laplacian%7Coutline")
    page.locator("#conv-to-pool").click()
    expect(page).to_have_url(re.compile(r"/pool\?"))
    ready(page)
    k = np.stack([kernels.preset("laplacian"), kernels.preset("outline")])[:, None]
    fmap, _cache = conv_forward(kernels.SEED_INPUT[None, None].astype(np.float64), k, None)
    page.locator("#pool-stride").select_option("1")
    expect(page.locator("#pool-stepper")).to_have_attribute("data-steps", "8")
    page.keyboard.press("End")
    expect(page.locator("#pool-stepper")).to_have_attribute("data-step", "7")
    expected, _cache = pool_forward(fmap, "max", 2, 1)
    for f in range(2):
        np.testing.assert_allclose(shown_output(page, f), expected[0, f])
    # ReLU on the carried map.
    page.locator("#pool-relu").check()
    expect(page.locator("#pool-stepper")).to_have_attribute("data-step", "0")
    page.keyboard.press("End")
    expect(page.locator("#pool-stepper")).to_have_attribute("data-step", "7")
    relu_expected, _cache = pool_forward(np.maximum(fmap, 0), "max", 2, 1)
    np.testing.assert_allclose(shown_output(page, 0), relu_expected[0, 0])
    assert_clean(page)


def test_grid_pixel_values_by_keyboard_and_pointer(page, live_server):
    page.goto(f"{live_server}/grid?image=digit&size=28&zoom=2")
    x = images.image_array("digit", get_settings(), 28, "gray")[0]
    grid = page.locator("svg.pixgrid")
    grid.focus()
    expect(page.locator("#grid-readout")).to_contain_text(f": {x[0, 0]}")
    r, c = (int(v) for v in np.argwhere(x > 0)[len(np.argwhere(x > 0)) // 2])
    for _ in range(r):
        page.keyboard.press("ArrowDown")
    for _ in range(c):
        page.keyboard.press("ArrowRight")
    expect(page.locator("#grid-readout")).to_have_text(re.compile(rf"\b{r + 1}\D+{c + 1}: {x[r, c]}$"))
    box = grid.bounding_box()
    page.mouse.move(box["x"] + box["width"] * (20.5 / 28), box["y"] + box["height"] * (5.5 / 28))
    expect(page.locator("#grid-readout")).to_have_text(re.compile(rf": {x[5, 20]}$"))
    assert_clean(page)


def press(page, key: str) -> None:
    """A key press once the page's deferred scripts (lesson.js among them) have run."""
    page.wait_for_load_state("load")
    page.keyboard.press(key)


def test_the_lesson_walks_with_page_down_and_page_up(page, live_server):
    page.goto(f"{live_server}/")
    # All nine sections in the slides' order: 3 and 4 share /conv, 5 and 8 share /pipeline.
    for address in (r"/grid$", r"/local$", r"/conv\?preset=seed$", r"/conv\?image=chelsea", r"/pipeline#backprop$",
                    r"/pool$", r"/activation$", r"/pipeline#loss$", r"/train$"):
        press(page, "PageDown")
        expect(page).to_have_url(re.compile(address))
    press(page, "PageUp")
    expect(page).to_have_url(re.compile(r"/pipeline#loss$"))
    press(page, "PageUp")
    expect(page).to_have_url(re.compile(r"/activation$"))
    page.goto(f"{live_server}/local")
    # Keys typed in a field stay in the field.
    page.wait_for_load_state("load")
    page.locator("#local-h").focus()
    page.keyboard.press("PageDown")
    page.locator("#local-h").blur()
    expect(page).to_have_url(f"{live_server}/local")
    page.goto(f"{live_server}/pool")
    press(page, "PageDown")
    expect(page).to_have_url(re.compile(r"/activation$"))
    press(page, "PageUp")
    expect(page).to_have_url(re.compile(r"/pool$"))
    press(page, "PageUp")
    expect(page).not_to_have_url(re.compile(r"/pool$"))
    assert_clean(page)


@pytest.mark.parametrize("name,path", [
    ("pool", "/pool?input=seed&kind=max&size=2&stride=1&step=5"),
    ("grid", "/grid?image=digit&size=28&zoom=2"),
    ("local", "/local"),
    ("activation", "/activation"),
])
def test_screenshots_projector_and_phone(page, live_server, shots_dir, name, path):
    page.goto(f"{live_server}{path}")
    projector_on(page)
    no_horizontal_scroll(page)
    if name == "grid":
        page.locator("svg.pixgrid").focus()
        for _ in range(12):
            page.keyboard.press("ArrowDown")
        for _ in range(14):
            page.keyboard.press("ArrowRight")
    save_shot(page, shots_dir, f"{name}-projector-1280x720.png")
    if name == "pool":
        # Every number of the stepper is at least 28 px on the projector.
        sizes = page.locator("#pool-stepper td, #pool-sum .sum-expr").evaluate_all(
            "els => els.map(e => parseFloat(getComputedStyle(e).fontSize))")
        assert min(sizes) >= 28
        assert page.locator("#pool-stepper").bounding_box()["y"] + page.locator("#pool-stepper").bounding_box()["height"] <= 720
    page.locator("#projector-toggle").click()
    page.set_viewport_size({"width": 390, "height": 844})
    no_horizontal_scroll(page)
    save_shot(page, shots_dir, f"{name}-390x844.png")
    assert_clean(page)
