"""Issue 11, section 5 in real Chromium: the arrow between /activation's grids points from
one to the other however wide the map, on a projector and on a phone; the bias field shows
its whole placeholder ("ninguno"); screenshots of /activation and /pool in Spanish on a
1280×720 projector."""

from __future__ import annotations

import pytest
from pagecheck import assert_clean, projector_on, save_shot
from playwright.sync_api import expect

# 16×16 values (the largest map the page takes): two grids of it do not fit side by side.
WIDE = ";".join(",".join(str((r * 7 + c * 5) % 17 - 8) for c in range(16)) for r in range(16))


def boxes(page, pair):
    figures = pair.locator("figure")
    return figures.nth(0).bounding_box(), pair.locator(".stage__op").bounding_box(), figures.nth(1).bounding_box()


def assert_arrow_between(page) -> None:
    pairs = page.locator(".act-pair")
    assert pairs.count() >= 1
    for i in range(pairs.count()):
        before, arrow, after = boxes(page, pairs.nth(i))
        side_by_side = after["x"] >= before["x"] + before["width"] - 1
        if side_by_side:
            assert before["x"] + before["width"] <= arrow["x"] + 1 and arrow["x"] + arrow["width"] <= after["x"] + 1
            middle = arrow["y"] + arrow["height"] / 2
            assert before["y"] <= middle <= before["y"] + before["height"]
        else:  # stacked: the arrow (turned to point down) sits between them
            assert before["y"] + before["height"] <= arrow["y"] + 1 and arrow["y"] + arrow["height"] <= after["y"] + 1


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 720}, {"width": 390, "height": 844}])
def test_the_activation_arrow_sits_between_the_grids(open_page, live_server, viewport):
    page = open_page(viewport=viewport)
    for query in ("fn=sigmoid", f"fn=sigmoid&input=grid&grid={WIDE}"):
        page.goto(f"{live_server}/activation?{query}")
        expect(page.locator(".act-after")).to_be_visible()
        assert_arrow_between(page)
    assert_clean(page)


def test_the_bias_field_shows_its_whole_placeholder(open_page, live_server):
    # a phone: the narrowest fields (3.2em on a projector, 2.7em here, cut "ninguno" to "ning")
    page = open_page(viewport={"width": 390, "height": 844})
    page.goto(f"{live_server}/conv?preset=seed")
    bias = page.locator("#conv-b-0")
    assert bias.get_attribute("placeholder") == "ninguno"
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
    bias.scroll_into_view_if_needed()
    expect(bias).to_be_visible()
    # the placeholder typed in as text: it must not scroll inside the field
    fits = bias.evaluate("el => { el.value = el.placeholder; const ok = el.scrollWidth <= el.clientWidth;"
                         " el.value = ''; return ok; }")
    assert fits


def test_spanish_projector_screenshots_of_activation_and_pool(page, live_server, shots_dir):
    page.goto(f"{live_server}/activation?input=seed&fn=sigmoid")
    projector_on(page)
    expect(page.locator("#act-bias")).to_be_visible()
    expect(page.locator("#act-formula-title")).to_have_text("sigmoide")
    save_shot(page, shots_dir, "activation-es-projector-1280x720.png")
    page.locator("#act-bias").scroll_into_view_if_needed()
    page.evaluate("() => document.querySelector('#act-bias').scrollIntoView({block: 'start'})")
    assert_arrow_between(page)
    save_shot(page, shots_dir, "activation-es-projector-1280x720-maps.png")
    page.goto(f"{live_server}/pool?kind=avg&size=2&stride=1&step=4")
    projector_on(page)
    expect(page.locator(".lesson-formula .formula").first).to_have_text("Ho = ⌊(H − k)/S⌋ + 1 = ⌊(4 − 2)/1⌋ + 1 = 3")
    expect(page.locator("#pool-sum .sum-expr")).to_contain_text(",")  # an average with a decimal comma
    save_shot(page, shots_dir, "pool-es-projector-1280x720.png")
    assert_clean(page)
