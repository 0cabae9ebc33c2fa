"""/train's deeper designs in real Chromium: choosing 2 blocks shows block 2's fields and the
design table grows its rows (with formulas and the receptive field), the URL keeps the design,
a 2-block run trains; screenshots of the design at 1280×720 (projector) and 390×844.

The ``page`` fixture fails (never skips) when Chromium is missing.
"""

from __future__ import annotations

from pagecheck import assert_axe_clean, assert_clean, goto, no_horizontal_scroll, projector_on, query, save_shot
from playwright.sync_api import expect

from cnnlab.app.jobs import TrainSpec, build_model


def test_two_blocks_on_train(page, live_server, shots_dir, open_page, axe_source):
    goto(page, f"{live_server}/train?lang=en&epochs=2")
    page.locator("#train-settings > summary").click()
    expect(page.locator(".train-block[data-block='2']")).to_be_hidden()
    page.locator("#train-blocks").select_option("2")
    expect(page.locator(".train-block[data-block='2']")).to_be_visible()
    expect(page.locator(".train-block[data-block='3']")).to_be_hidden()
    n = build_model(TrainSpec(blocks=2, epochs=2)).n_params
    expect(page.locator("#train-n-params")).to_have_attribute("data-n", str(n))
    expect(page.locator(".train-layers tbody tr")).to_have_count(1 + len(build_model(TrainSpec(blocks=2)).layers))
    expect(page.locator(".train-layers")).to_contain_text("block 2")
    expect(page.locator(".train-layers")).to_contain_text("(k·k·C + 1)·F = (3·3·16 + 1)·16 = 2\u202f320")
    expect(page.locator("#train-receptive")).to_contain_text("8×8 input pixels")
    assert query(page)["blocks"] == "2"
    assert_axe_clean(page, axe_source, "/train with two blocks")

    # block 2 without pooling: the table follows, the URL keeps it
    page.locator("#train-pool_size2").fill("1")
    page.locator("#train-pool_size2").dispatch_event("change")
    n = build_model(TrainSpec(blocks=2, pool_size2=1)).n_params
    expect(page.locator("#train-n-params")).to_have_attribute("data-n", str(n))
    assert query(page)["pool_size2"] == "1"
    projector_on(page)
    page.locator("#ctl-blocks").evaluate("el => el.scrollIntoView({block: 'start'})")
    save_shot(page, shots_dir, "train-blocks-projector-1280x720.png")
    page.locator("#train-summary").evaluate("el => el.scrollIntoView({block: 'start'})")
    save_shot(page, shots_dir, "train-blocks-projector-table-1280x720.png")
    no_horizontal_scroll(page)

    # it trains
    page.locator("#train-start").click()
    expect(page.locator("#train-live .train-status")).to_have_attribute("data-status", "done", timeout=60_000)
    assert_clean(page)

    phone = open_page(viewport={"width": 390, "height": 844}, locale="es-ES")
    goto(phone, f"{live_server}/train?blocks=3&filters2=8&pool_size3=1")
    phone.locator("#train-settings > summary").click()
    expect(phone.locator(".train-block[data-block='3']")).to_be_visible()
    expect(phone.locator("#train-receptive")).to_contain_text("Campo receptivo")
    phone.locator("#ctl-blocks").evaluate("el => el.scrollIntoView({block: 'start'})")
    save_shot(phone, shots_dir, "train-blocks-phone-390x844.png")
    phone.locator("#train-summary").evaluate("el => el.scrollIntoView({block: 'start'})")
    save_shot(phone, shots_dir, "train-blocks-phone-table-390x844.png")
    no_horizontal_scroll(phone)
    assert_clean(phone)
