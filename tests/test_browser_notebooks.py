""""Abrir como notebook" in real Chromium: the link follows the state htmx changes, the file it
downloads recomputes the number the page shows, and it stays off the projector's working set.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from notebookrun import in_process, parse
from pagecheck import assert_clean, goto, no_horizontal_scroll, projector_on, save_shot
from playwright.sync_api import expect


def link_query(page) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(page.locator(".notebook-link").get_attribute("href")).query))


def download(page):
    with page.expect_download() as info:
        page.locator(".notebook-link").click()
    with open(info.value.path(), "rb") as fh:
        return info.value.suggested_filename, parse(fh.read())


def test_the_conv_link_follows_the_step_and_its_notebook_gives_the_shown_number(page, live_server):
    goto(page, f"{live_server}/conv?preset=seed")
    expect(page.locator("#conv-status strong")).to_have_text("78")
    assert link_query(page).get("step") is None
    page.keyboard.press("ArrowRight")
    expect(page.locator("#conv-status strong")).to_have_text("87")
    assert link_query(page)["step"] == "1"
    name, nb = download(page)
    assert name == "cnnlab-conv.ipynb"
    assert nb.cells[0].source.startswith("# Kernels y convolución")  # the page's language
    namespace = in_process(nb)
    assert namespace["PAGE"]["step_value"] == 87 and namespace["value"] == 87 and namespace["step"].value == 87
    assert namespace["out"][0, 0, :2].tolist() == [78, 87]
    assert_clean(page)


def test_the_pipeline_link_follows_a_clicked_number(page, live_server):
    goto(page, f"{live_server}/pipeline")
    page.locator('button[value="prob-9"]').click()
    expect(page.locator(".notebook-link")).to_have_attribute("href", re.compile(r"^/notebook/pipeline\?.*show=prob-9"))
    name, nb = download(page)
    namespace = in_process(nb)
    shown = page.locator('button[value="prob-9"]').inner_text().strip().replace(",", ".")
    assert abs(float(namespace["shown"]) - float(shown)) < 0.006, (namespace["shown"], shown)
    assert_clean(page)


def test_the_link_stays_off_the_projector_and_fits_a_phone(open_page, live_server, shots_dir):
    phone = open_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    for path in ("/conv?preset=seed&step=4", "/pool", "/pipeline", "/activation", "/practice?kind=pool&seed=7"):
        goto(phone, live_server + path)
        link = phone.locator(".notebook-link")
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (path, box)
        no_horizontal_scroll(phone)
    goto(phone, f"{live_server}/conv?preset=seed&step=4")
    phone.locator(".notebook-link").scroll_into_view_if_needed()
    save_shot(phone, shots_dir, "notebook-link-phone.png")

    projector = open_page(viewport={"width": 1280, "height": 720})
    goto(projector, f"{live_server}/conv?preset=seed")
    projector_on(projector)
    for path in ("/conv?preset=seed", "/pipeline"):
        goto(projector, live_server + path)
        expect(projector.locator(".notebook-link")).to_be_hidden()
    projector.keyboard.press("p")  # P leaves projector mode: the link is back
    expect(projector.locator(".notebook-link")).to_be_visible()
