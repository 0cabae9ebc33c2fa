"""The convolution stepper in real Chromium: keys, clicks, play/pause, upload, language,
layout at 1280×720 (projector) and 390×844, and the screenshots for the README.

The ``page`` fixture fails (never skips) when Chromium is missing.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from pagecheck import (
    assert_clean,
    no_horizontal_scroll,
    projector_on,
    query,
    save_shot,
)
from PIL import Image
from playwright.sync_api import expect

from cnnlab.app import images
from cnnlab.app.settings import get_settings
from cnnlab.core import kernels
from cnnlab.core.conv import conv_step

SEED_78 = "35·(−2) + 40·(−1) + 41·0 + 40·(−1) + 40·1 + 42·1 + 42·0 + 46·1 + 50·2 = 78"
SEED_87 = "40·(−2) + 41·(−1) + 45·0 + 40·(−1) + 42·1 + 46·1 + 46·0 + 50·1 + 55·2 = 87"
PHOTO = Path(images.SAMPLES_DIR) / "chelsea.jpg"


def seed_text(step: int) -> str:
    return conv_step(kernels.SEED_INPUT, kernels.SEED_KERNEL, step=step).text


def expression(page) -> str:
    return " ".join(page.locator("#conv-sum .sum-expr").first.inner_text().split())


def current_step(page) -> int:
    return int(page.locator("#conv-stepper").get_attribute("data-step"))


def test_keyboard_steps_through_the_seed_example(page, live_server):
    page.goto(f"{live_server}/conv?preset=seed")
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(SEED_78)
    page.wait_for_function("() => window.htmx !== undefined")

    page.keyboard.press("ArrowRight")
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(SEED_87)
    assert query(page)["step"] == "1"
    page.keyboard.press("ArrowRight")
    expect(page.locator("#conv-stepper")).to_have_attribute("data-step", "2")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(SEED_87)

    page.keyboard.press("End")
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(seed_text(8))
    expect(page.locator("#conv-next")).to_be_disabled()
    page.keyboard.press("ArrowRight")  # already at the end: nothing happens
    expect(page.locator("#conv-stepper")).to_have_attribute("data-step", "8")
    page.keyboard.press("Home")
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(SEED_78)
    expect(page.locator("#conv-prev")).to_be_disabled()

    # The browser's Back button walks back through the steps.
    page.keyboard.press("ArrowRight")
    expect(page.locator("#conv-stepper")).to_have_attribute("data-step", "1")
    page.go_back()
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(SEED_78)
    assert_clean(page)


def test_typing_in_a_kernel_cell_does_not_step(page, live_server):
    page.goto(f"{live_server}/conv?preset=seed")
    page.wait_for_function("() => window.htmx !== undefined")
    cell = page.locator("input[name=w_0_0_1_1]")
    cell.click()
    page.keyboard.press("End")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#conv-stepper")).to_have_attribute("data-step", "0")
    cell.fill("3")
    cell.press("Enter")
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(re.compile(r"40·3 .*= 158$"))
    assert query(page)["kernel"] == "-2,-1,0;-1,3,1;0,1,2"
    assert_clean(page)


def test_clicking_an_output_cell_shows_its_sum(page, live_server):
    page.goto(f"{live_server}/conv?preset=seed")
    page.wait_for_function("() => window.htmx !== undefined")
    page.locator(".matrix--output button[value='7']").click()
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(seed_text(7))
    expect(page.locator(".matrix--output td.is-current button")).to_have_attribute("value", "7")
    expect(page.locator(".matrix--output td.is-done")).to_have_count(7)
    assert query(page)["step"] == "7"
    # Hovering a term lights up its input, weight and product.
    page.locator("#conv-sum .term").first.hover()
    expect(page.locator("[data-t='0-0-0'].is-linked")).to_have_count(4)
    assert_clean(page)


def test_space_plays_then_pauses(page, live_server):
    page.goto(f"{live_server}/conv?preset=seed")
    page.wait_for_function("() => window.htmx !== undefined")
    page.select_option("#conv-speed", "250")
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press(" ")
    expect(page.locator("#conv-play")).to_have_attribute("aria-pressed", "true")
    page.wait_for_function("() => Number(document.querySelector('#conv-stepper').dataset.step) >= 3")
    page.keyboard.press(" ")
    expect(page.locator("#conv-play")).to_have_attribute("aria-pressed", "false")
    stopped = current_step(page)
    page.wait_for_timeout(800)
    assert current_step(page) in (stopped, stopped + 1)  # at most the request already on its way
    settled = current_step(page)
    page.wait_for_timeout(600)
    assert current_step(page) == settled
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(seed_text(settled))
    # Playing to the end stops there by itself.
    page.keyboard.press("End")
    page.keyboard.press("Home")
    expect(page.locator("#conv-stepper")).to_have_attribute("data-step", "0")
    page.locator("#conv-play").click()
    expect(page.locator("#conv-stepper")).to_have_attribute("data-step", "8", timeout=8000)
    expect(page.locator("#conv-play")).to_have_attribute("aria-pressed", "false")
    assert_clean(page)


def test_upload_a_png_and_step_it(page, live_server, tmp_path):
    picture = tmp_path / "gradient.png"
    ramp = np.add.outer(np.arange(24) * 7, np.arange(30) * 3).astype(np.uint8)
    Image.fromarray(ramp).save(picture)
    page.goto(f"{live_server}/conv?preset=seed&kernel=sobel_x")
    page.wait_for_function("() => window.htmx !== undefined")
    page.set_input_files("#conv-file", str(picture))
    page.wait_for_url(re.compile(r"image=[0-9a-f]{32}"))
    params = query(page)
    assert params["kernel"] == "sobel_x" and params["size"] == "10"
    x = images.image_array(params["image"], get_settings(), 10, "gray")
    w = kernels.PRESETS["sobel_x"]
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(conv_step(x, w, step=0).text)
    page.keyboard.press("ArrowRight")
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(conv_step(x, w, step=1).text)
    # The full-resolution picture is the uploaded size minus the kernel's border.
    shown = page.locator(".result-item img").nth(1)
    expect(shown).to_have_js_property("complete", True)
    assert shown.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [28, 22]

    # A bad file: a message, and the stepper stays where it was (step included).
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    page.set_input_files("#conv-file", str(bad))
    expect(page.locator("#err-upload")).to_be_visible()
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(conv_step(x, w, step=1).text)
    assert_clean(page)


def test_switching_language_keeps_the_state(page, live_server):
    page.goto(f"{live_server}/conv?preset=seed&kernel=laplacian&padding=1")
    page.wait_for_function("() => window.htmx !== undefined")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#conv-stepper")).to_have_attribute("data-step", "2")
    page.get_by_role("link", name="EN", exact=True).click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#conv-status")).to_contain_text("Step 3 of 25")
    expected = conv_step(kernels.SEED_INPUT, kernels.PRESETS["laplacian"], padding=1, step=2).text
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(expected)
    assert query(page)["kernel"] == "laplacian"
    page.get_by_role("link", name="ES", exact=True).click()
    expect(page.locator("#conv-status")).to_contain_text("Paso 3 de 25")
    assert_clean(page)


def test_settings_change_the_view_and_the_address(page, live_server):
    page.goto(f"{live_server}/conv?preset=seed")
    page.wait_for_function("() => window.htmx !== undefined")
    page.select_option("#conv-use-0", "sobel_y")
    page.wait_for_url(re.compile(r"kernel=sobel_y"))
    page.select_option("#conv-padding", "same")
    page.wait_for_url(re.compile(r"padding=same"))
    expect(page.locator("#conv-status")).to_contain_text("Paso 1 de 25")
    expect(page.locator(".matrix--input tr")).to_have_count(7)
    page.select_option("#conv-ksize", "7")
    page.wait_for_url(re.compile(r"kernel=0%2C0%2C0"))
    page.select_option("#conv-padding", "valid")
    expect(page.locator("#conv-fit")).to_contain_text("= −1")
    expect(page.locator("#conv-stepper")).to_have_count(0)
    assert_clean(page)


def test_projector_mode_fits_the_seed_example_on_one_screen(page, live_server, shots_dir):
    page.goto(f"{live_server}/conv?preset=seed")
    projector_on(page)
    for selector in (".matrix--input td", ".matrix--kernel td", ".matrix--output .cell-btn", "#conv-sum"):
        size = page.eval_on_selector(selector, "el => parseFloat(getComputedStyle(el).fontSize)")
        assert size >= 28, (selector, size)
    # The whole stepper, written sum included, is on the first screen.
    bottom = page.eval_on_selector("#conv-sum", "el => el.getBoundingClientRect().bottom")
    assert bottom <= 720
    no_horizontal_scroll(page)
    save_shot(page, shots_dir, "conv-seed-projector-1280x720.png")
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#projector-toggle").click()
    expect(page.locator("html")).not_to_have_class("projector")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(SEED_87)
    no_horizontal_scroll(page)
    page.evaluate("() => document.querySelector('#conv-stepper').scrollIntoView()")
    save_shot(page, shots_dir, "conv-seed-390x844.png")
    assert_clean(page)


def test_uploaded_photo_in_projector_mode_and_on_a_phone(page, live_server, shots_dir):
    page.goto(f"{live_server}/conv?preset=seed&kernel=sobel_x")
    page.wait_for_function("() => window.htmx !== undefined")
    page.set_input_files("#conv-file", str(PHOTO))
    page.wait_for_url(re.compile(r"image=[0-9a-f]{32}"))
    page.locator("#conv-size").fill("32")  # fires input and change, as releasing the thumb does
    page.wait_for_url(re.compile(r"size=32"))
    page.locator(".picture-map--output").click(position={"x": 60, "y": 40})
    page.wait_for_url(re.compile(r"step=\d+"))
    step = current_step(page)
    assert step > 0
    params = query(page)
    x = images.image_array(params["image"], get_settings(), 32, "gray")
    expect(page.locator("#conv-sum .sum-expr")).to_have_text(conv_step(x, kernels.PRESETS["sobel_x"], step=step).text)
    projector_on(page)
    page.evaluate("() => document.querySelector('#conv-stepper').scrollIntoView()")
    no_horizontal_scroll(page)
    save_shot(page, shots_dir, "conv-photo-projector-1280x720.png")

    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#projector-toggle").click()
    page.evaluate("() => document.querySelector('#conv-stepper').scrollIntoView()")
    no_horizontal_scroll(page)
    save_shot(page, shots_dir, "conv-photo-390x844.png")
    assert_clean(page)


def test_rgb_and_error_views_have_no_horizontal_scroll_on_a_phone(page, live_server):
    page.set_viewport_size({"width": 390, "height": 844})
    for url in ("/conv?image=coffee&size=12&color=rgb&kernel=sobel_x|sobel_y&bias=1,-1",
                "/conv?image=astronaut&size=32&color=rgb&padding=same&dilation=2",
                "/conv?preset=seed&kernel=identity&ksize=7&stride=9",
                "/conv?grid=1,2,3;4,5,6&kernel=1,0;0,-1"):
        page.goto(f"{live_server}{url}")
        expect(page.locator("main h1")).to_be_visible()
        no_horizontal_scroll(page)
    # The bad address (stride 9) is answered 422 on purpose, and Chromium reports the status.
    page.console_errors[:] = [e for e in page.console_errors if not ("status of 422" in e and "stride=9" in e)]
    assert_clean(page)


def test_pictures_load_from_this_server(page, live_server):
    page.goto(f"{live_server}/conv?image=camera&size=20&kernel=laplacian")
    for locator in (page.locator(".result-item img"), page.locator(".picture-map image")):
        for i in range(locator.count()):
            element = locator.nth(i)
            if element.evaluate("el => el.tagName") == "IMG":
                expect(element).to_have_js_property("complete", True)
                assert element.evaluate("img => img.naturalWidth") > 0
    response = page.request.get(f"{live_server}/conv/output.png?image=camera&size=20&kernel=laplacian&res=full")
    assert response.ok
    assert Image.open(io.BytesIO(response.body())).size == (254, 254)
    assert_clean(page)
