"""Projector mode in real Chromium: reachable by address (``?present=1``) and by the key P, and
the working set on the first screen at the common projector sizes, numbers ≥ 20 px:

- ``/conv`` for every kind of setting (the slides' example, padding, stride and dilation, a
  colour picture as numbers and as a picture, several filters, a large grid, an uploaded
  photo): the input window, kernel, products, output and written sum;
- the assistant's page in a class: the class bar and the stepper, then a quick question with
  its live histogram beside the same stepper.

One page per size (a browser context each), reused for every state; the screenshots go to
``shots_dir``/projector.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pagecheck import assert_clean, assert_on_first_screen, no_horizontal_scroll, save_shot
from playwright.sync_api import expect
from test_browser_classroom import join, start_class

from cnnlab.app import images

SIZES = {"1280x720": (1280, 720), "1024x768": (1024, 768), "1920x1080": (1920, 1080)}
# One size gets every state's screenshot; the others get SHOT_AT_EVERY_SIZE's.
MAIN_SIZE = "1280x720"
SHOT_AT_EVERY_SIZE = "rgb-picture"
MIN_FONT_PX = 20
PHOTO = Path(images.SAMPLES_DIR) / "chelsea.jpg"

# A 10×10 grid of numbers (too large for a projector whole, small enough to be drawn as numbers).
GRID_10 = ";".join(",".join(str((7 * i + 3 * j) % 23 - 5) for j in range(10)) for i in range(10))
CONV_STATES = {
    "seed": "/conv?preset=seed",
    "padding": "/conv?preset=seed&padding=2&step=24",
    "stride-dilation": f"/conv?grid={GRID_10}&kernel=sharpen&stride=2&dilation=2&step=7",
    "rgb": "/conv?image=chelsea&color=rgb&kernel=sobel_x&step=20",
    "rgb-picture": "/conv?image=chelsea&size=32&color=rgb&kernel=sobel_x&bias=1&step=300",
    "filters": "/conv?preset=seed&kernel=sobel_x|sobel_y|laplacian&bias=1,-1,0&step=12",
    "large": f"/conv?grid={GRID_10}&kernel=sobel_y&padding=1&step=45",
    "large-picture": "/conv?image=camera&size=32&kernel=laplacian&padding=same&dilation=2&step=500",
}
# The working set of one step: where it is, the input's window (its numbers), the kernel, the
# products, the output being filled in and the written sum.
CONV_KEYS = (
    "#conv-status",
    "#conv-stepper .matrix--input, #conv-stepper .matrix--window",
    "#conv-stepper .matrix--kernel",
    "#conv-stepper .matrix--products",
    "#conv-stepper .outmap.is-active",
    "#conv-sum",
)
# A one-channel picture also shows where its window is.
PICTURE_KEY = "#conv-stepper .picture-map--input"


def projector_page(open_page, live_server, size: str):
    """A page of ``size`` in projector mode, turned on by its address."""
    width, height = SIZES[size]
    page = open_page(viewport={"width": width, "height": height}, locale="es-CL")
    page.goto(f"{live_server}/conv?preset=seed&present=1")
    expect(page.locator("html")).to_have_class("projector")
    return page


@pytest.fixture
def shots(shots_dir) -> Path:
    folder = shots_dir / "projector"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stepper_on_top(page) -> None:
    """In projector mode /conv opens scrolled to its stepper (static/js/conv.js)."""
    page.wait_for_function("() => Math.abs(document.querySelector('#conv-stepper').getBoundingClientRect().top) < 1")


def assert_working_set(page, where: str) -> None:
    picture = page.locator(".stage:not(.stage--rgb) .stage__input--picture").count() > 0
    for selector in CONV_KEYS + ((PICTURE_KEY,) if picture else ()):
        try:
            assert_on_first_screen(page, selector, min_font_px=MIN_FONT_PX)
        except AssertionError as error:
            raise AssertionError(f"{where}: {error}") from None
    no_horizontal_scroll(page)


@pytest.mark.parametrize("size", SIZES)
def test_conv_working_set_fits_every_projector(open_page, live_server, shots, size):
    page = projector_page(open_page, live_server, size)
    for state, url in CONV_STATES.items():
        page.goto(f"{live_server}{url}")
        stepper_on_top(page)
        assert_working_set(page, f"{state} at {size}")
        if size == MAIN_SIZE or state == SHOT_AT_EVERY_SIZE:
            save_shot(page, shots, f"conv-{state}-projector-{size}.png")
    assert_clean(page)


def test_an_upload_in_projector_mode_shows_its_stepper(open_page, live_server, shots):
    """After an upload from the settings below, the stepper of the new picture is the screen."""
    page = projector_page(open_page, live_server, MAIN_SIZE)
    page.goto(f"{live_server}/conv?preset=seed&kernel=sobel_x")
    page.wait_for_function("() => window.htmx !== undefined")
    page.locator("#conv-file").scroll_into_view_if_needed()
    page.set_input_files("#conv-file", str(PHOTO))
    page.wait_for_url(re.compile(r"image=[0-9a-f]{32}"))
    stepper_on_top(page)
    page.locator("#conv-next").click()
    expect(page.locator("#conv-stepper")).to_have_attribute("data-step", "1")
    assert_working_set(page, "an uploaded photo")
    save_shot(page, shots, "conv-upload-projector-1280x720.png")
    assert_clean(page)


def test_projector_mode_by_address_and_by_key(page, live_server):
    toggle = page.locator("#projector-toggle")
    page.goto(f"{live_server}/conv?preset=seed&present=1")
    expect(page.locator("html")).to_have_class("projector")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    # Remembered: the next page of the lesson is in projector mode too.
    page.goto(f"{live_server}/pool")
    expect(page.locator("html")).to_have_class("projector")
    page.goto(f"{live_server}/pool?present=0")
    expect(page.locator("html")).not_to_have_class("projector")
    page.goto(f"{live_server}/conv?preset=seed")
    expect(page.locator("html")).not_to_have_class("projector")
    # The key is listed with the stepper's keys, and on the button.
    expect(page.locator(".conv-keys kbd", has_text=re.compile(r"^P$"))).to_have_count(1)
    expect(toggle).to_have_attribute("aria-keyshortcuts", "P")

    page.keyboard.press("p")
    expect(page.locator("html")).to_have_class("projector")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    page.reload()
    expect(page.locator("html")).to_have_class("projector")
    # Typing a P in a field is typing.
    cell = page.locator("input[name=w_0_0_1_1]")
    cell.focus()
    page.keyboard.press("p")
    expect(cell).to_have_value(re.compile("p"))
    expect(page.locator("html")).to_have_class("projector")
    page.locator("main h1").click()
    page.keyboard.press("P")
    expect(page.locator("html")).not_to_have_class("projector")
    page.goto(f"{live_server}/grid")
    expect(page.locator("html")).not_to_have_class("projector")
    assert_clean(page)


def test_conv_on_a_phone_keeps_the_whole_grids(page, live_server, shots):
    """Outside projector mode nothing is cut: the phone scrolls through the whole input."""
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server}/conv?grid={GRID_10}&kernel=sobel_y&padding=1&step=45&present=0")
    expect(page.locator(".matrix--input tr:not(.matrix__heads)")).to_have_count(12)
    expect(page.locator(".matrix--input .matrix__head").first).to_be_hidden()
    expect(page.locator(".matrix--output td")).to_have_count(100)
    no_horizontal_scroll(page)
    page.evaluate("() => document.querySelector('#conv-stepper').scrollIntoView()")
    save_shot(page, shots, "conv-large-390x844.png")
    page.goto(f"{live_server}/conv?image=chelsea&size=32&color=rgb&kernel=sobel_x&step=300")
    no_horizontal_scroll(page)
    page.evaluate("() => document.querySelector('#conv-stepper').scrollIntoView()")
    save_shot(page, shots, "conv-rgb-picture-390x844.png")
    assert_clean(page)


def class_screen_ready(page) -> None:
    """The class bar is in and the page scrolled to it (static/js/conv.js)."""
    expect(page.locator("#class-bar")).to_be_visible()
    page.wait_for_function("() => Math.abs(document.querySelector('#class-slot').getBoundingClientRect().top) < 1")


def test_a_class_question_its_histogram_and_the_stepper_share_the_projector(open_page, live_server, shots):
    host = projector_page(open_page, live_server, MAIN_SIZE)
    student = open_page(viewport={"width": 390, "height": 844}, locale="es-CL", is_mobile=True, has_touch=True)
    code = start_class(host, live_server)
    join(student, live_server, code)
    lesson = f"{live_server}/conv?preset=seed&step=2"
    host.goto(lesson)
    expect(host.locator("#class-count")).to_have_text("1")
    for size, (width, height) in SIZES.items():
        host.set_viewport_size({"width": width, "height": height})
        host.reload()
        class_screen_ready(host)
        assert_working_set(host, f"the class bar and the stepper at {size}")
        assert_on_first_screen(host, "#class-bar .class-bar__strip > *")
        if size == MAIN_SIZE:
            save_shot(host, shots, f"class-bar-projector-{size}.png")

    host.set_viewport_size({"width": SIZES[MAIN_SIZE][0], "height": SIZES[MAIN_SIZE][1]})
    host.reload()
    class_screen_ready(host)
    host.locator("#class-ask").click()
    answer = student.locator("#class-answer-value")
    for value in ("87", "90"):  # the last answer of each student counts: one bar
        answer.fill(value)
        student.locator("#class-send").click()
        expect(student.locator("#class-sent")).to_contain_text(value)
    expect(host.locator("#class-hist g[data-value='90']")).to_have_attribute("data-count", "1")
    # Live, as it came in: the question grew the bar downwards and the bar stayed on top.
    for selector in ("#class-question-title", "#class-hist", "#conv-status"):
        assert_on_first_screen(host, selector)
    for size, (width, height) in SIZES.items():
        host.set_viewport_size({"width": width, "height": height})
        host.reload()
        class_screen_ready(host)
        expect(host.locator("#class-hist")).to_be_visible()
        save_shot(host, shots, f"class-question-projector-{size}.png")
        assert_working_set(host, f"a quick question at {size}")
        for selector in ("#class-question-title", "#class-answered", "#class-reveal", "#class-hist"):
            assert_on_first_screen(host, selector)
    assert_clean(host)
    assert_clean(student)
