"""/train's layer view in real Chromium: after a short run, a test image's maps are buttons;
one opens enlarged with its numbers, a click on a cell frames its receptive field on the
input and writes its size layer by layer; a phone (390×844) does the same on a drawn digit
without sideways scrolling; the projector (1280×720) shows the enlarged map and the framed
input on the first screen. /pipeline frames a clicked pool cell's field on its input.
Screenshots go to the shots folder (layers-*.png).
"""

from __future__ import annotations

from pagecheck import (assert_axe_clean, assert_clean, assert_on_first_screen, draw_stroke, goto, no_horizontal_scroll,
                       projector_on, save_shot)
from playwright.sync_api import expect

SHORT_RUN = "/train?dataset=digits&epochs=1"


def frame_of(page) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the frame drawn on the input, inclusive."""
    y, x, h, w = page.evaluate("() => { const r = document.getElementById('train-inside-frame');"
                               " return ['y', 'x', 'height', 'width'].map(n => Number(r.getAttribute(n))); }")
    return y, x, y + h - 1, x + w - 1


def assert_frame(page, box: tuple[int, int, int, int]) -> None:
    """The frame is ``box``, once htmx has settled it (width and height settle a moment after the swap)."""
    t, left, b, r = box
    frame = page.locator("#train-inside-frame")
    for name, value in (("y", t), ("x", left), ("height", b - t + 1), ("width", r - left + 1)):
        expect(frame).to_have_attribute(name, str(value))
    assert frame_of(page) == box


def expected_box(row: int, col: int) -> tuple[int, int, int, int]:
    """The default digits model (conv 3×3 padding 1 → ReLU → max 2×2) on 8×8: a pooled cell
    (row, col) sees r = 4 pixels from 2·row − 1 (j = 2, start = −1), clipped to 0..7."""
    def axis(i):
        return max(2 * i - 1, 0), min(2 * i + 2, 7)
    (t, b), (left, r) = axis(row), axis(col)
    return t, left, b, r


def test_a_map_opens_and_a_cell_is_framed_on_the_input(page, live_server, shots_dir, axe_source):
    goto(page, f"{live_server}{SHORT_RUN}")
    page.locator("#train-start").click()
    expect(page.locator("#train-live .train-status")).to_have_attribute("data-status", "done", timeout=60_000)

    # A test image: its maps and the first layer's filters are buttons.
    page.locator("#train-test-index").fill("5")
    page.locator("#train-pick-form button[type=submit]").click()
    expect(page.locator("#train-maps-form button[value='map-2-0']")).to_be_visible()
    assert page.locator("#train-maps-form button[value^='filter-']").count() >= 1

    # The pooled map 0, enlarged with its 4×4 numbers.
    page.locator("#train-maps-form button[value='map-2-0']").click()
    expect(page.locator("#train-inside-map")).to_be_visible()
    assert page.locator("#train-inside-values button").count() == 16
    expect(page.locator("#train-inside-empty")).to_be_visible()

    # A click on the picture's cell (row 1, column 2) of the 4×4 map.
    svg = page.locator("#train-inside-map").bounding_box()
    page.locator("#train-inside-map").click(position={"x": svg["width"] * 2.5 / 4, "y": svg["height"] * 1.5 / 4})
    expect(page.locator("#train-inside-frame")).to_be_visible()
    view = page.locator("#train-inside-view")
    assert (view.get_attribute("data-row"), view.get_attribute("data-col")) == ("1", "2")
    assert_frame(page, expected_box(1, 2))
    steps = page.locator("#train-inside-steps li").all_inner_texts()
    assert len(steps) == 3, steps
    assert "r = 1 + (3 \u2212 1)\u00b71 = 3" in steps[0] and "j = 1\u00b72 = 2" in steps[2]
    assert "r = 3 + (2 \u2212 1)\u00b71 = 4" in steps[2], steps
    assert "4×4" in page.locator("#train-inside-field").inner_text()
    save_shot(page, shots_dir, "layers-desktop-1280.png")

    # A number under the map does the same without a pointer: the corner cell (3, 3), clipped.
    page.locator("#train-inside-values button[value='3-3']").click()
    expect(page.locator("#train-inside-view[data-row='3'][data-col='3']")).to_be_visible()
    assert_frame(page, expected_box(3, 3))

    # A phone, on a drawn digit: the first conv layer's map 0, its corner cell framed (clipped).
    page.set_viewport_size({"width": 390, "height": 844})
    draw_stroke(page)
    expect(page.locator("#train-maps-form input[name=grid]")).to_have_count(1)
    page.locator("#train-maps-form button[value='map-1-0']").click()
    expect(page.locator("#train-inside-view[data-layer='1']")).to_be_visible()
    page.locator("#train-inside-map").click(position={"x": 3, "y": 3})
    expect(page.locator("#train-inside-view[data-row='0'][data-col='0']")).to_be_visible()
    assert_frame(page, (0, 0, 1, 1))          # conv 3×3 padding 1: rows −1..1, clipped
    assert page.locator("#train-inside-steps li").count() == 2
    save_shot(page, shots_dir, "layers-phone-390x844.png")
    assert_on_first_screen(page, "#train-inside-input, #train-inside-map")
    no_horizontal_scroll(page)

    page.set_viewport_size({"width": 1280, "height": 720})
    # Projector: opening a map puts the enlarged map and the framed input on the first screen.
    projector_on(page)
    page.locator("#train-maps-form button[value='map-0-1']").click()
    expect(page.locator("#train-inside-view[data-layer='0'][data-channel='1']")).to_be_visible()
    svg = page.locator("#train-inside-map").bounding_box()
    page.locator("#train-inside-map").click(position={"x": svg["width"] * 4.5 / 8, "y": svg["height"] * 3.5 / 8})
    expect(page.locator("#train-inside-view[data-row='3'][data-col='4']")).to_be_visible()
    assert_frame(page, (2, 3, 4, 5))
    save_shot(page, shots_dir, "layers-projector-1280x720.png")
    assert_on_first_screen(page, "#train-inside-input, #train-inside-map, #train-inside-frame")
    assert_on_first_screen(page, "#train-inside-values", min_font_px=20)
    no_horizontal_scroll(page)
    assert_axe_clean(page, axe_source, "/train's layer view")
    assert_clean(page)


def test_pipeline_frames_a_clicked_pool_cell_on_the_input(page, live_server, shots_dir):
    goto(page, f"{live_server}/pipeline")
    page.locator("#pipeline-forward button[name='show'][value='pool-0-1-2']").click()
    expect(page.locator("#pl-field")).to_be_visible()
    # Pool cell (1, 2): conv 3×3 padding 1 → ReLU → max 2×2 sees input rows 1–4 and columns 3–6 (0-based).
    framed = page.evaluate("() => Array.from(document.querySelectorAll('#pl-input td')).map((td, i) =>"
                           " td.classList.contains('fld') ? i : -1).filter(i => i >= 0)")
    assert framed == [r * 8 + c for r in range(1, 5) for c in range(3, 7)]
    assert page.locator("#pl-field-steps li").count() == 3
    page.locator("#pl-input").scroll_into_view_if_needed()
    save_shot(page, shots_dir, "layers-pipeline-1280.png")
    assert_clean(page)
