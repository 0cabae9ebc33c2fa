"""/pipeline in real Chromium: click a number → its computation, click the loss → H(p, q),
pick a kernel weight → ∂L/∂w and the two updates; projector mode and a phone; screenshots.

The ``page`` fixture fails (never skips) when Chromium is missing.
"""

from __future__ import annotations

from pagecheck import assert_clean, no_horizontal_scroll, query, save_shot
from playwright.sync_api import expect

from cnnlab.app import images
from cnnlab.app.routers.pipeline import picture_input
from cnnlab.app.settings import get_settings
from cnnlab.core import pipeline


def run():
    x, label = pipeline.digit_image(4)
    return pipeline.run(x, label)


def open_page(page, live_server, query_string="lang=en"):
    page.goto(f"{live_server}/pipeline?{query_string}")
    page.wait_for_function("() => window.htmx !== undefined")


def test_click_numbers_to_see_how_they_were_computed(page, live_server):
    p = run()
    open_page(page, live_server)
    page.locator('button[value="conv-0-2-3"]').click()
    expect(page.locator("#pl-explain-sum")).to_have_text(pipeline.explain_conv(p, 0, 2, 3).text)
    expect(page.locator('td.is-current button[value="conv-0-2-3"]')).to_have_count(0)  # only the panel is swapped
    assert query(page)["show"] == "conv-0-2-3"

    page.locator('button[value="pool-1-1-1"]').click()
    expect(page.locator("#pl-explain-sum")).to_have_text(pipeline.explain_pool(p, 1, 1, 1).text)
    page.locator('button[value="prob-9"]').click()
    expect(page.locator("#pl-explain-sum")).to_have_text(pipeline.explain_prob(p, 9).text)

    page.locator("#pl-loss-button").click()
    expect(page.locator("#pl-explain-sum")).to_have_text(pipeline.explain_loss(p).text)
    expect(page.locator("#pl-pq .pl-pq__p td")).to_have_count(10)
    # H(p, q) = −Σ p(x) log q(x), then "= loss" as a second piece (a phone wraps between them).
    expect(page.locator("#pipeline-explain math")).to_have_count(2)
    assert query(page)["show"] == "loss"
    assert_clean(page)


def test_pick_a_kernel_weight_to_see_its_gradient_and_both_updates(page, live_server):
    p = run()
    open_page(page, live_server, "lang=en&show=loss")
    page.locator('#pipeline-backprop button[value="2-2-0"]').click()
    g = pipeline.weight_gradient(p, 2, 0, 2, 0)
    expect(page.locator("#pl-grad-sum")).to_have_text(g.text)
    expect(page.locator('#pipeline-backprop td.is-current button[value="2-2-0"]')).to_have_count(1)
    expect(page.locator("#pl-sgd-text")).to_contain_text("w = ")
    expect(page.locator("#pl-adam-text li")).to_have_count(7)
    assert query(page)["weight"] == "2-2-0" and query(page)["show"] == "loss"
    # The weight stays chosen when another number is explained, and the explanation when the
    # learning rate changes: the forms got the new state out of band.
    page.locator('button[value="logit-9"]').click()
    expect(page.locator("#pl-explain-sum")).to_have_text(pipeline.explain_logit(p, 9).text)
    assert query(page)["weight"] == "2-2-0"
    page.select_option("#pl-lr", "0.5")
    page.wait_for_url(lambda url: "lr=0.5" in url)
    sgd, _adam = pipeline.updates(p, 2, 0, 2, 0, 0.5)
    expect(page.locator("#pl-grad-sum")).to_have_text(g.text)
    expect(page.locator("#pl-explain-sum")).to_have_text(pipeline.explain_logit(p, 9).text)
    expect(page.locator("#pl-sgd-text")).to_contain_text("0.5·")
    assert query(page)["weight"] == "2-2-0" and query(page)["show"] == "logit-9"
    assert sgd["lr"] == 0.5
    assert_clean(page)


def test_projector_and_phone_screenshots(page, live_server, shots_dir):
    open_page(page, live_server, "lang=es&show=conv-0-2-3")
    page.locator("#projector-toggle").click()
    expect(page.locator("html")).to_have_class("projector")
    for selector in (".pl-conv .pl-cell", "#pl-explain-sum", ".pl-weights .pl-cell"):
        size = page.eval_on_selector(selector, "el => parseFloat(getComputedStyle(el).fontSize)")
        assert size >= 28, (selector, size)
    page.evaluate("() => document.querySelector('#pipeline-stage-maps').scrollIntoView()")
    no_horizontal_scroll(page)
    save_shot(page, shots_dir, "pipeline-projector-1280x720.png")
    page.locator("#pl-loss-button").click()
    expect(page.locator("#pl-pq")).to_be_visible()
    page.evaluate("() => document.querySelector('#loss').scrollIntoView()")
    save_shot(page, shots_dir, "pipeline-loss-projector-1280x720.png")
    page.evaluate("() => document.querySelector('#pl-grad').scrollIntoView()")
    size = page.eval_on_selector("#pl-grad-sum", "el => parseFloat(getComputedStyle(el).fontSize)")
    assert size >= 28
    save_shot(page, shots_dir, "pipeline-backprop-projector-1280x720.png")

    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#projector-toggle").click()
    expect(page.locator("html")).not_to_have_class("projector")
    page.evaluate("() => document.querySelector('#pipeline-stage-maps').scrollIntoView()")
    page.locator('button[value="conv-0-2-3"]').click()
    expect(page.locator("#pl-explain-sum")).to_contain_text("= ")
    no_horizontal_scroll(page)
    save_shot(page, shots_dir, "pipeline-390x844.png")
    page.evaluate("() => document.querySelector('#pl-grad').scrollIntoView()")
    no_horizontal_scroll(page)
    save_shot(page, shots_dir, "pipeline-backprop-390x844.png")
    assert_clean(page)


def test_the_mnist_sample_from_its_link(page, live_server):
    open_page(page, live_server)
    page.locator("#pl-sample-digit").click()
    page.wait_for_url(lambda url: "image=digit" in url)
    expect(page.locator("#pl-input").locator("xpath=..").locator("xpath=..")).to_contain_text("your picture")
    page.wait_for_function("() => window.htmx !== undefined")
    page.locator('button[value="relu-2-4-4"]').click()
    x = picture_input(images.image_array("digit", get_settings(), 8, "gray"))
    p = pipeline.run(x, pipeline.run(x, 0).predicted)
    expect(page.locator("#pl-explain-sum")).to_have_text(pipeline.explain_relu(p, 2, 4, 4))
    assert query(page)["image"] == "digit" and query(page)["show"] == "relu-2-4-4"
    page.locator("#pl-back-to-digits").click()
    page.wait_for_url(lambda url: "index=4" in url)
    page.wait_for_function("() => window.htmx !== undefined")
    page.locator("#pl-next-digit").click()
    page.wait_for_url(lambda url: "index=5" in url)
    x5, label5 = pipeline.digit_image(5)
    expect(page.locator("#pl-loss-button")).to_have_text(pipeline.format_number(pipeline.run(x5, label5).loss))
    assert_clean(page)
