"""The /conv stepper's kinds beyond the slides in real Chromium (issue 14): the 1×1 convolution,
the depthwise-separable convolution (in its depthwise and in its pointwise phase) and the
transposed convolution. In projector mode at 1280×720 the working set (where it is, the input,
the kernel, the products, the output, the written sum) is on the first screen with numbers
≥ 20 px; → steps and the written sum follows; on a 390×844 phone nothing scrolls sideways.
Screenshots go to ``shots_dir``/conv_more.
"""

from __future__ import annotations

from pagecheck import (
    assert_clean,
    assert_on_first_screen,
    no_horizontal_scroll,
    save_shot,
)
from playwright.sync_api import expect

MIN_FONT_PX = 20
STATES = {
    "pointwise": "/conv?kind=pointwise",
    "separable-depthwise": "/conv?kind=separable&step=3",
    "separable-pointwise": "/conv?kind=separable&step=30",
    "transposed": "/conv?kind=transposed&stride=2&padding=1&step=6",
}
KEYS = (
    "#conv-status",
    "#conv-stepper .matrix--input",
    "#conv-stepper .matrix--kernel",
    "#conv-stepper .matrix--products",
    "#conv-stepper .outmap.is-active",
    "#conv-sum",
)


def test_new_kinds_step_on_a_projector_and_fit_a_phone(open_page, live_server, shots_dir):
    shots = shots_dir / "conv_more"
    shots.mkdir(parents=True, exist_ok=True)
    page = open_page(viewport={"width": 1280, "height": 720}, locale="es-CL")
    page.goto(f"{live_server}/conv?preset=seed&present=1")
    expect(page.locator("html")).to_have_class("projector")
    for name, url in STATES.items():
        page.goto(f"{live_server}{url}")
        page.wait_for_function("() => Math.abs(document.querySelector('#conv-stepper').getBoundingClientRect().top) < 1")
        save_shot(page, shots, f"conv-{name}-projector-1280x720.png")
        for selector in KEYS:
            try:
                assert_on_first_screen(page, selector, min_font_px=MIN_FONT_PX)
            except AssertionError as error:
                raise AssertionError(f"{name}: {error}") from None
        no_horizontal_scroll(page)
        # → steps: the address, the step and the written sum follow.
        step = int(page.locator("#conv-stepper").get_attribute("data-step"))
        before = page.locator("#conv-sum").inner_text()
        page.wait_for_function("() => window.htmx !== undefined")
        page.keyboard.press("ArrowRight")
        expect(page.locator("#conv-stepper")).to_have_attribute("data-step", str(step + 1))
        assert page.locator("#conv-sum").inner_text() != before, name
        assert f"step={step + 1}" in page.url and "kind=" in page.url
    assert_clean(page)

    phone = open_page(viewport={"width": 390, "height": 844}, locale="es-CL", is_mobile=True, has_touch=True)
    for name, url in STATES.items():
        phone.goto(f"{live_server}{url}&present=0")
        phone.evaluate("() => document.querySelector('#conv-stepper').scrollIntoView()")
        save_shot(phone, shots, f"conv-{name}-390x844.png")
        no_horizontal_scroll(phone)
    # The kind's lesson text is in Spanish, the page's language.
    expect(phone.locator("#conv-kind-panel h2")).to_have_text("Convolución transpuesta: de pequeño a grande")
    assert_clean(phone)
