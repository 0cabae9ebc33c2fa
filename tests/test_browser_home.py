"""The home page in real Chromium: language switch, projector mode, layout, no errors."""

from __future__ import annotations

from pagecheck import assert_clean
from playwright.sync_api import expect

SPANISH_H1 = "Redes neuronales convolucionales, número a número"
ENGLISH_H1 = "Convolutional neural networks, number by number"


def font_px(page, selector: str) -> float:
    return page.eval_on_selector(selector, "el => parseFloat(getComputedStyle(el).fontSize)")


def test_language_switch_survives_reload(page, live_server):
    page.goto(f"{live_server}/")
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.locator("main h1")).to_have_text(SPANISH_H1)

    page.get_by_role("link", name="EN", exact=True).click()
    expect(page.locator("main h1")).to_have_text(ENGLISH_H1)
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("button", name="Projector mode")).to_be_visible()

    page.reload()
    expect(page.locator("main h1")).to_have_text(ENGLISH_H1)
    page.goto(f"{live_server}/")  # no ?lang: the cookie remembers
    expect(page.locator("main h1")).to_have_text(ENGLISH_H1)

    page.get_by_role("link", name="ES", exact=True).click()
    expect(page.locator("main h1")).to_have_text(SPANISH_H1)
    assert_clean(page)


def test_projector_mode_enlarges_text_and_is_remembered(page, live_server):
    page.goto(f"{live_server}/")
    toggle = page.get_by_role("button", name="Modo proyector")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    lead_before = font_px(page, ".lead")
    number_before = font_px(page, ".card__number")

    toggle.click()
    expect(page.locator("html")).to_have_class("projector")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    assert font_px(page, ".lead") >= 1.3 * lead_before
    assert font_px(page, ".card__number") > number_before
    assert font_px(page, ".card__number") >= 28  # readable from the back of the room
    assert font_px(page, "main p") >= 20

    page.reload()
    expect(page.locator("html")).to_have_class("projector")
    expect(page.get_by_role("button", name="Modo proyector")).to_have_attribute("aria-pressed", "true")
    assert font_px(page, ".lead") >= 1.3 * lead_before

    page.get_by_role("button", name="Modo proyector").click()
    page.reload()
    expect(page.locator("html")).not_to_have_class("projector")
    assert font_px(page, ".lead") == lead_before
    assert_clean(page)


def test_htmx_is_loaded_from_this_server_without_injected_styles(page, live_server):
    page.goto(f"{live_server}/")
    page.wait_for_function("() => window.htmx !== undefined")
    assert page.evaluate("() => htmx.version").startswith("2.0.")
    # includeIndicatorStyles is off, so htmx adds no <style>: a strict CSP can forbid inline styles.
    assert page.evaluate("() => document.querySelectorAll('style').length") == 0
    assert_clean(page)


def test_skip_link_is_the_first_tab_stop(page, live_server):
    page.goto(f"{live_server}/")
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.className")
    assert focused == "skip-link"
    expect(page.locator(".skip-link")).to_be_in_viewport()
    page.keyboard.press("Enter")
    assert page.evaluate("() => location.hash") == "#main"


def test_screenshots_and_no_horizontal_scroll_on_a_phone(page, live_server, shots_dir):
    page.goto(f"{live_server}/")
    expect(page.locator("#lesson-sections > li")).to_have_count(9)
    page.screenshot(path=str(shots_dir / "home-1280.png"), full_page=False)

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server}/")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(shots_dir / "home-390.png"), full_page=False)

    page.get_by_role("button", name="Modo proyector").click()
    expect(page.locator("html")).to_have_class("projector")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(shots_dir / "home-390-projector.png"), full_page=False)

    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(f"{live_server}/?lang=en")
    page.screenshot(path=str(shots_dir / "home-1280-projector-en.png"), full_page=False)

    for name in ("home-1280.png", "home-390.png", "home-390-projector.png", "home-1280-projector-en.png"):
        assert (shots_dir / name).stat().st_size > 10_000
    assert_clean(page)
