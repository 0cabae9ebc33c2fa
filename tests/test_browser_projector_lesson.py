"""/activation, /local and /pool on a projector (issue 11, section 1): at 1280×720, 1024×768 and
1920×1080 in projector mode, what the class must read is on the first screen, unscrolled, in type
of at least 20 px, and nothing scrolls sideways:

- /activation: the formula with the current value, the map before and the map after (the curve
  may go below);
- /local: both parameter counts, each with its formula and its numbers;
- /pool: the input around the window, the output and the written max or average, for the slides'
  5×5 matrix and for the largest map /conv can carry over (16×16, of which projector mode keeps
  the rows and columns near the window, with their numbers).

On a phone (390×844, no projector mode) none of these pages scrolls sideways. One browser
context per size. Screenshots go to ``shots_dir``.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from pagecheck import assert_clean, goto, no_horizontal_scroll, readable, save_shot
from playwright.sync_api import expect

SIZES = [(1280, 720), (1024, 768), (1920, 1080)]
ACTIVATION = ("#act-formula", "#act-example", ".act-pair figure:has(.act-before)", ".act-pair figure:has(.act-after)")
LOCAL = (".local-count--dense", ".local-count--conv")
POOL = ("#pool-status", "#pool-stepper .stage__item.is-active .pool-input", "#pool-stepper .outmap.is-active .matrix--output",
        "#pool-sum .sum-line")
# The largest feature map /conv carries over to /pool (16×16: a 16-pixel photo, padding 1).
LARGE_MAP = urlencode({"input": "conv", "from": "image=camera&size=16&padding=1"})


@pytest.mark.parametrize("width,height", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_activation_local_and_pool_on_the_first_screen(open_page, live_server, shots_dir, width, height):
    page = open_page(viewport={"width": width, "height": height})
    size = f"{width}x{height}"

    goto(page, f"{live_server}/activation?input=seed&present=1")
    expect(page.locator("html")).to_have_class("projector")
    readable(page, *ACTIVATION)
    save_shot(page, shots_dir, f"projector-activation-{size}.png")
    # Sigmoid's decimals are the widest maps the page draws.
    goto(page, f"{live_server}/activation?input=seed&fn=sigmoid")
    readable(page, *ACTIVATION)

    goto(page, f"{live_server}/local")
    readable(page, *LOCAL, "#dense-total", "#conv-total")
    save_shot(page, shots_dir, f"projector-local-{size}.png")

    goto(page, f"{live_server}/pool?input=seed&kind=max&size=2&stride=1&step=5")
    readable(page, *POOL)
    expect(page.locator("#pool-sum .sum-line")).to_contain_text("max(")

    goto(page, f"{live_server}/pool?{LARGE_MAP}&kind=avg&size=3&stride=1&step=40")
    readable(page, *POOL, ".pool-input td.is-window")
    expect(page.locator("#pool-stepper .dims").first).to_have_text("16×16")
    # Of the 16 rows and columns, the 7 around the window stay, with their row and column numbers.
    shown = page.evaluate(
        """() => { const t = document.querySelector('.pool-input');
                   const visible = el => el.getClientRects().length > 0;
                   return {rows: Array.from(t.rows).filter(visible).length - 1,
                           cols: Array.from(t.rows[1].cells).filter(visible).length - 1,
                           heads: Array.from(t.rows[0].cells).filter(visible).map(c => c.textContent.trim())}; }"""
    )
    assert shown["rows"] == 7 and shown["cols"] == 7, shown
    assert shown["heads"][1:] == [str(n) for n in range(10, 17)], shown  # the window is at columns 13–15
    # Max pooling of the same map, for the README: the written max under the framed window.
    goto(page, f"{live_server}/pool?{LARGE_MAP}&kind=max&size=2&stride=1&step=40")
    readable(page, *POOL, ".pool-input td.is-winner")
    expect(page.locator("#pool-sum .sum-line")).to_contain_text("max(")
    save_shot(page, shots_dir, f"projector-pool-{size}.png")
    assert_clean(page)


def test_activation_local_and_pool_on_a_phone(open_page, live_server, shots_dir):
    page = open_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    for name, url in (("activation", "/activation?input=seed"), ("local", "/local"),
                      ("pool", f"/pool?{LARGE_MAP}&kind=max&size=2&stride=1&step=40")):
        goto(page, f"{live_server}{url}")
        expect(page.locator("html")).not_to_have_class("projector")
        no_horizontal_scroll(page)
        save_shot(page, shots_dir, f"phone-{name}-390x844.png")
    assert_clean(page)
