"""/practice in real Chromium: open an exercise, type a wrong answer → the wrong cells are
marked; type the right one → correct, the score goes up (and survives a reload); show the
solution step by step; the worksheet prints with its key on a page of its own. Screenshots
at 1280×720 (projector mode too) and 390×844 go to the shots folder.

The right answers are recomputed here with NumPy from the numbers the page shows.
"""

from __future__ import annotations

import re

import numpy as np
from pagecheck import assert_clean, no_horizontal_scroll, projector_on, save_shot
from playwright.sync_api import expect


def number(s: str) -> float:
    return float(s.strip().replace("\u2212", "-").replace(",", "."))  # 0,25 in Spanish


def signed(v) -> str:
    return f"\u2212{-int(v)}" if v < 0 else str(int(v))


def factor(v) -> str:
    """As the slides write a product's factor: 40·(−1)."""
    return f"({signed(v)})" if v < 0 else signed(v)


def shown_matrix(page, selector):
    return np.array(page.eval_on_selector(selector, "t => [...t.rows].map(r => [...r.cells].map(c => c.textContent))"),
                    dtype=object)


def read_conv(page):
    """Input, kernel and settings as the page shows them (level 1: one channel, no bias)."""
    x = np.vectorize(number)(shown_matrix(page, "#practice-exercise table.matrix--input")).astype(float)
    w = np.vectorize(number)(shown_matrix(page, "#practice-exercise table.matrix--kernel")).astype(float)
    return x, w


def conv_valid(x, w):
    K = w.shape[0]
    Ho, Wo = x.shape[0] - K + 1, x.shape[1] - K + 1
    return np.array([[np.sum(x[i:i + K, j:j + K] * w) for j in range(Wo)] for i in range(Ho)])


def type_grid(page, values):
    cells = page.locator("#practice-form input.practice-cell")
    for i, v in enumerate(np.ravel(values)):
        cells.nth(i).fill(f"{int(v)}".replace("-", "\u2212") if i % 2 else f"{int(v)}")


def open_exercise(page, live_server, query):
    page.goto(f"{live_server}/practice?{query}")
    page.wait_for_function("() => window.htmx !== undefined")


def test_wrong_cells_marked_then_right_answer_scores_then_solution(page, live_server, shots_dir):
    open_exercise(page, live_server, "kind=conv_output&level=1&seed=31&lang=en")
    x, w = read_conv(page)
    right = conv_valid(x, w)
    expect(page.locator("#practice-form input.practice-cell")).to_have_count(right.size)
    expect(page.locator("#practice-attempts")).to_have_text("0")

    wrong = right.copy()
    wrong[0, 0] += 2
    wrong[1, 1] -= 1
    type_grid(page, wrong)
    page.locator("#practice-check").click()
    expect(page.locator("#practice-verdict")).to_have_class("practice-verdict is-wrong")
    cells = page.locator("#practice-form table.practice-grid td")
    W = right.shape[1]
    for i in range(right.size):
        r, c = divmod(i, W)
        want = "is-wrong" if (r, c) in ((0, 0), (1, 1)) else "is-right"
        expect(cells.nth(i)).to_have_class(want)
    expect(page.locator("#practice-attempts")).to_have_text("1")
    expect(page.locator("#practice-correct")).to_have_text("0")
    # the cursor waits in the first wrong cell, the typed numbers stay
    expect(page.locator("#practice-form input[name=c0]")).to_be_focused()
    expect(page.locator("#practice-form input[name=c1]")).to_have_value(f"{int(wrong[0, 1])}".replace("-", "\u2212"))
    save_shot(page, shots_dir, "practice-wrong-1280x720.png")

    page.locator("#practice-form input[name=c0]").fill(str(int(right[0, 0])))
    diagonal = page.locator(f"#practice-form input[name=c{W + 1}]")
    diagonal.fill(str(int(right[1, 1])))
    diagonal.press("Enter")
    expect(page.locator("#practice-verdict")).to_have_class("practice-verdict is-correct")
    expect(page.locator("#practice-form td.is-wrong")).to_have_count(0)
    expect(page.locator("#practice-correct")).to_have_text("1")
    expect(page.locator("#practice-streak")).to_have_text("1")

    # show the solution: one step, then the next, with the window framed on the input
    page.locator("#practice-show-solution").click()
    expect(page.locator(".practice-step")).to_have_count(1)
    page.locator("#practice-next-step").click()
    expect(page.locator(".practice-step")).to_have_count(2)
    current = page.locator(".practice-step.is-current")
    K = w.shape[0]
    terms = " + ".join(f"{factor(a)}·{factor(b)}" for a, b in zip(x[:K, :K].ravel(), w.ravel()))
    expect(current.locator(".practice-step__text")).to_have_text(f"{terms} = {signed(right[0, 0])}")
    expect(current.locator("table.matrix--input td.is-window")).to_have_count(w.size)
    expect(page.locator("#practice-filled td.is-current")).to_have_text(signed(right[0, 0]))
    page.locator("#practice-all-steps").click()
    expect(page.locator(".practice-step")).to_have_count(1 + right.size)
    expect(page.locator("#practice-filled td.is-todo")).to_have_count(0)
    # the solution did not reset the score, and a reload keeps it
    page.reload()
    expect(page.locator("#practice-correct")).to_have_text("1")
    expect(page.locator("#practice-attempts")).to_have_text("2")
    assert_clean(page)


def test_projector_and_phone_cells_are_big(page, live_server, shots_dir):
    open_exercise(page, live_server, "kind=conv_output&level=2&seed=4")
    projector_on(page)
    box = page.locator("#practice-form input.practice-cell").first.bounding_box()
    assert box["height"] >= 48 and box["width"] >= 80
    # the whole exercise (input, answer grid and Check) fits the projector's 720 px
    page.locator("#practice-exercise").scroll_into_view_if_needed()
    check = page.locator("#practice-check").bounding_box()
    top = page.locator("#practice-exercise").bounding_box()["y"]
    assert check["y"] + check["height"] - top <= 720
    save_shot(page, shots_dir, "practice-projector-1280x720.png")
    page.goto(f"{live_server}/practice?kind=conv_value&level=3&seed=4&solution=3")
    page.locator(".practice-step.is-current").scroll_into_view_if_needed()
    save_shot(page, shots_dir, "practice-solution-projector-1280x720.png")

    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#projector-toggle").click()       # projector mode off again
    for query in ("kind=conv_output&level=2&seed=4", "kind=softmax&level=3&seed=4", "kind=relu&level=3&seed=4",
                  "kind=adam_step&level=3&seed=4&solution=all", "kind=pool&level=3&seed=4&solution=3"):
        open_exercise(page, live_server, query)
        no_horizontal_scroll(page)
        box = page.locator("#practice-form input.practice-cell").first.bounding_box()
        assert box["height"] >= 44 and box["width"] >= 60
    open_exercise(page, live_server, "kind=softmax&level=3&seed=4")
    page.locator("#practice-form input.practice-cell").first.fill("0,5")
    page.locator("#practice-check").click()
    expect(page.locator("#practice-message")).to_be_visible()      # 4 of 5 empty: said so, nothing counted
    page.locator("#practice-exercise").scroll_into_view_if_needed()
    save_shot(page, shots_dir, "practice-softmax-390x844.png")
    assert_clean(page)


def test_worksheet_prints_with_the_key_on_its_own_page(page, live_server, shots_dir):
    page.goto(f"{live_server}/practice/worksheet?seed=12&n=10&level=1&lang=en")
    expect(page.locator("#worksheet-list > li")).to_have_count(10)
    page.emulate_media(media="print")
    expect(page.locator(".site-header")).to_be_hidden()
    expect(page.locator(".worksheet-controls")).to_be_hidden()
    assert page.eval_on_selector("#worksheet-key", "e => getComputedStyle(e).breakBefore") == "page"
    assert page.eval_on_selector(".worksheet-item", "e => getComputedStyle(e).breakInside") == "avoid"
    pdf = page.pdf(format="A4")
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", pdf))
    assert pdf[:4] == b"%PDF" and pages >= 3, pages        # the exercises, then the key on a page of its own
    # one short exercise fits a page, so a second page can only be the key's own
    page.goto(f"{live_server}/practice/worksheet?seed=12&n=1&level=1&kind=output_size&lang=en")
    one = page.pdf(format="A4")
    assert len(re.findall(rb"/Type\s*/Page(?!s)", one)) == 2
    page.goto(f"{live_server}/practice/worksheet?seed=12&n=10&level=1&lang=en")
    save_shot(page, shots_dir, "practice-worksheet-print-1280x720.png")
    page.emulate_media(media="screen")
    expect(page.locator(".worksheet-controls")).to_be_visible()
    assert_clean(page)
