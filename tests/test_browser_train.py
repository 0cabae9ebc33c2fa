"""/train in real Chromium: a short digits training streams its progress and curves, ends
with its accuracy, answers a drawn digit, compares two runs; Stop ends a long run; the
screenshots at 1280×720 (projector) and 390×844.

The ``page`` fixture fails (never skips) when Chromium is missing.
"""

from __future__ import annotations

import re

import numpy as np
from pagecheck import assert_clean, draw_stroke, no_horizontal_scroll, save_shot
from playwright.sync_api import expect

# Long enough to see it move: the page replays a fast run at ≥ 0.6 s per epoch.
SHORT_RUN = "/train?dataset=digits&epochs=3"

# Every update of the run panel, as [loss-curve points, progress value], in order.
WATCH_JS = """() => {
  window.trainSeen = [];
  const record = () => {
    const line = document.querySelector('#train-chart-loss polyline.is-current.chart__line--train');
    const bar = document.getElementById('train-progress');
    if (bar) window.trainSeen.push([line ? line.points.numberOfItems : 0, Number(bar.value)]);
  };
  new MutationObserver(record).observe(document.body, {childList: true, subtree: true});
}"""


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => window.htmx !== undefined && document.readyState === 'complete'")


def start(page) -> None:
    """Press Start and wait for the new run's panel (the previous one may still be shown)."""
    before = page.evaluate("() => { const s = document.getElementById('train-stream'); return s ? s.dataset.job : null; }")
    page.locator("#train-start").click()
    page.wait_for_function("(old) => { const s = document.getElementById('train-stream'); return s && s.dataset.job !== old; }",
                           arg=before)


def wait_finished(page, status: str = "done") -> None:
    expect(page.locator("#train-live .train-status")).to_have_attribute("data-status", status, timeout=60_000)


def displayed_probabilities(page) -> list[float]:
    texts = page.locator("#train-bars .train-bars__p").all_inner_texts()
    return [float(t.replace("%", "").replace(",", ".").strip()) / 100 for t in texts]


def test_a_short_training_streams_finishes_and_answers_a_drawing(page, live_server, shots_dir):
    open_page(page, f"{live_server}{SHORT_RUN}")
    page.evaluate(WATCH_JS)
    start(page)

    wait_finished(page)
    accuracy = page.locator("#train-final-acc").inner_text()
    assert re.fullmatch(r"\d+,\d\s%", accuracy), accuracy  # the Spanish page: 98,1 %
    assert float(accuracy.split()[0].replace(",", ".")) >= 90
    seen = page.evaluate("() => window.trainSeen")
    points = [p for p, _ in seen]
    progress = [v for _, v in seen]
    # The curve grew update by update, and the bar moved through values between 0 and 100.
    assert len(set(points)) >= 3, seen
    assert points == sorted(points), seen
    assert any(0 < v < 100 for v in progress), seen
    assert progress == sorted(progress) and progress[-1] == 100, seen
    assert page.locator("#train-confusion tbody tr").count() == 10
    assert page.locator("#train-confusion tbody tr:first-child td").count() == 10
    expect(page.locator("#train-stop")).to_be_hidden()

    draw_stroke(page)
    expect(page.locator("#train-bars tbody tr")).to_have_count(10)
    probabilities = displayed_probabilities(page)
    assert abs(sum(probabilities) - 1) <= 0.01, probabilities
    assert page.locator("#train-predicted").inner_text() == str(max(range(10), key=probabilities.__getitem__))
    assert page.locator(".train-maps img").count() > 0

    # The keyboard draws a "1" too: focus the pad, lift the pen, go to the top, put it down,
    # draw straight down, and Enter reads it.
    page.locator("#train-clear").click()
    expect(page.locator("#train-bars")).to_have_count(0)
    pad = page.locator("#train-pad")
    pad.focus()
    expect(page.locator("[data-draw-pen]")).to_be_visible()
    page.keyboard.press("Space")
    expect(page.locator("#train-pad-pen")).to_contain_text("7")
    for _ in range(4):
        page.keyboard.press("ArrowUp")
    page.keyboard.press("Space")
    expect(page.locator("[data-draw-pen]")).to_have_class(re.compile("is-down"))
    for _ in range(8):
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(page.locator("#train-bars tbody tr")).to_have_count(10)
    grid = [float(v) for v in page.locator("#train-draw-form input[name=grid]").input_value().split(",")]
    side = int(len(grid) ** 0.5)
    ink = np.array(grid).reshape(side, side) > 0.5
    rows, cols = np.nonzero(ink)
    assert rows.max() - rows.min() > 3 * (cols.max() - cols.min()), "a vertical stroke, taller than wide"
    assert abs(sum(displayed_probabilities(page)) - 1) <= 0.01

    page.locator("#train-test-index").fill("5")
    page.locator("#train-pick-form button[type=submit]").click()
    expect(page.locator(".train-answer .hint")).to_contain_text("5")
    page.locator("#train-clear").click()
    expect(page.locator("#train-bars")).to_have_count(0)
    assert_clean(page)


def test_two_runs_share_one_plot_and_the_same_seed_repeats_the_curve(page, live_server, shots_dir):
    open_page(page, f"{live_server}{SHORT_RUN}")
    start(page)
    wait_finished(page)
    first = page.locator("#train-chart-loss polyline.is-current.chart__line--train").get_attribute("points")

    # Same seed, same setup again: the same curve; the earlier run is drawn with it.
    start(page)
    wait_finished(page)
    again = page.locator("#train-chart-loss polyline.is-current.chart__line--train").get_attribute("points")
    assert again == first
    earlier = page.locator('#train-chart-loss polyline[data-run="1"].chart__line--train').get_attribute("points")
    assert earlier == first

    # SGD instead of Adam: a different curve, both in the legend. The fields are under
    # "Change the settings", closed beside the one-line setup.
    expect(page.locator("#train-optimizer")).to_be_hidden()
    page.locator("#train-settings > summary").click()
    page.locator("#train-optimizer").select_option("sgd")
    page.locator("#train-lr").fill("0.1")
    page.locator("#train-lr").dispatch_event("change")
    expect(page.locator("#ctl-beta1")).to_be_hidden()
    start(page)
    wait_finished(page)
    sgd = page.locator("#train-chart-loss polyline.is-current.chart__line--train").get_attribute("points")
    assert sgd != first
    legend = page.locator(".chart-legend li:not(.chart-legend__kinds)")
    expect(legend).to_have_count(3)
    expect(legend.first).to_contain_text("SGD")
    assert_clean(page)


def test_stop_ends_a_long_run_and_its_model_stays_usable(page, live_server):
    open_page(page, f"{live_server}/train?dataset=mnist&epochs=30")
    start(page)
    expect(page.locator("#train-loss")).not_to_have_text("–", timeout=30_000)
    page.locator("#train-stop").click()
    wait_finished(page, "stopped")
    expect(page.locator("#train-stop")).to_be_hidden()
    # Stopped early: less than one pass over the 30 epochs.
    assert int(page.locator("#train-progress").get_attribute("value")) < 100
    page.locator("#train-pick-form button[type=submit]").click()
    expect(page.locator("#train-bars tbody tr")).to_have_count(10)
    assert abs(sum(displayed_probabilities(page)) - 1) <= 0.01
    assert_clean(page)


def test_screenshots_projector_and_phone(page, live_server, shots_dir):
    open_page(page, f"{live_server}{SHORT_RUN}")
    if page.locator("html.projector").count() == 0:
        page.locator("#projector-toggle").click()
    expect(page.locator("html")).to_have_class("projector")
    save_shot(page, shots_dir, "train-setup-projector.png")
    start(page)
    wait_finished(page)
    draw_stroke(page)
    expect(page.locator("#train-bars tbody tr")).to_have_count(10)
    no_horizontal_scroll(page)
    page.locator("#train-live").evaluate("el => el.scrollIntoView()")
    save_shot(page, shots_dir, "train-run-projector.png")
    page.locator("#train-results").evaluate("el => el.scrollIntoView()")
    save_shot(page, shots_dir, "train-results-projector.png")
    page.locator("#train-use-title").evaluate("el => el.scrollIntoView()")
    save_shot(page, shots_dir, "train-use-projector.png")

    page.locator("#projector-toggle").click()
    page.set_viewport_size({"width": 390, "height": 844})
    no_horizontal_scroll(page)
    pad = page.locator("#train-pad").bounding_box()
    assert pad["x"] >= 0 and pad["x"] + pad["width"] <= 390
    page.locator("#train-live").evaluate("el => el.scrollIntoView()")
    save_shot(page, shots_dir, "train-run-phone.png")
    page.locator("#train-use-title").evaluate("el => el.scrollIntoView()")
    save_shot(page, shots_dir, "train-use-phone.png")
    assert_clean(page)
