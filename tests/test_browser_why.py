"""/train's "why" panel in real Chromium: a short digits run, a test image picked, the panel
shows the overlay with its legend and explanation; another class; a clicked pixel's numbers;
projector (1280×720) and phone (390×844) layouts, with screenshots."""

from __future__ import annotations

from pagecheck import (
    assert_axe_clean,
    assert_clean,
    assert_on_first_screen,
    goto,
    no_horizontal_scroll,
    projector_on,
    save_shot,
)
from playwright.sync_api import expect

SHORT_RUN = "/train?dataset=digits&epochs=2"


def test_why_panel_overlay_class_switch_and_a_clicked_pixel(page, live_server, shots_dir, axe_source):
    goto(page, f"{live_server}{SHORT_RUN}")
    page.locator("#train-start").click()
    expect(page.locator("#train-live .train-status")).to_have_attribute("data-status", "done", timeout=60_000)
    page.locator("#train-test-index").fill("5")
    page.locator("#train-pick-form button[type=submit]").click()
    # the prediction asks for its panel once it is scrolled to: the overlay, its legend and the explanation
    expect(page.locator("#train-why.train-why--loading")).to_be_attached()
    page.locator("#train-why").scroll_into_view_if_needed()
    overlay = page.locator("#train-why-map image")
    expect(page.locator("#train-why-map")).to_be_visible(timeout=10_000)
    assert overlay.get_attribute("href").startswith("data:image/png;base64,")
    expect(page.locator("#train-why-explain")).to_contain_text("Saliencia")
    expect(page.locator(".why-legend__ends span").first).to_have_text("0")
    predicted = page.locator("#train-why-target").input_value()
    assert predicted == page.locator("#train-predicted").inner_text()

    # another class: the panel comes back for it
    other = str((int(predicted) + 1) % 10)
    first_overlay = overlay.get_attribute("href")
    page.locator("#train-why-target").select_option(other)
    expect(page.locator("#train-why-target option[selected]")).to_have_attribute("value", other)
    expect(page.locator("#train-why-explain")).to_contain_text(f"clase {other}")
    assert page.locator("#train-why-map image").get_attribute("href") != first_overlay

    # Grad-CAM, then a click on pixel (row 2, column 5) of the 8×8 picture: its numbers
    page.locator("input[name=method][value=grad_cam]").check()
    expect(page.locator("#train-why-explain")).to_contain_text("Grad-CAM")
    box = page.locator("#train-why-map").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 5.5 / 8, box["y"] + box["height"] * 2.5 / 8)
    formula = page.locator("#train-why-formula")
    expect(formula).to_contain_text("Píxel (fila 2, columna 5)")
    expect(formula).to_contain_text("(z")  # (z₃(x + h) − z₃(x − h)) / 2h = …
    assert page.locator("#train-why-gradient").inner_text().strip()
    assert page.locator("#train-why-estimate").inner_text().strip()
    expect(page.locator("#train-why-cell-sum")).to_be_visible()
    expect(page.locator("#train-why-map rect.why-map__mark")).to_have_attribute("x", "5")
    assert page.locator("#train-why-target").input_value() == other  # the class stays

    assert_axe_clean(page, axe_source, "/train's why panel")

    # back to the predicted class, whose Grad-CAM map is not empty
    page.locator("#train-why-target").select_option(predicted)
    expect(page.locator("#train-why-target option[selected]")).to_have_attribute("value", predicted)
    expect(formula).to_contain_text("Píxel (fila 2, columna 5)")  # the clicked pixel stays

    # projector: scrolled into view, the overlay and the explanation on one screen, large
    projector_on(page)
    page.locator("#train-why").scroll_into_view_if_needed()
    page.evaluate("() => document.getElementById('train-why').scrollIntoView({block: 'start'})")
    assert_on_first_screen(page, "#train-why-map")
    assert_on_first_screen(page, "#train-why-explain", min_font_px=20)
    no_horizontal_scroll(page)
    save_shot(page, shots_dir, "why-projector-1280x720.png")

    # phone: no sideways scrolling, the overlay as wide as it can be
    page.locator("#projector-toggle").click()
    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("() => document.getElementById('train-why').scrollIntoView({block: 'start'})")
    no_horizontal_scroll(page)
    assert_on_first_screen(page, "#train-why-map")
    save_shot(page, shots_dir, "why-phone-390x844.png")
    assert_clean(page)
