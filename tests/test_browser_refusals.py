"""No refusal is silent (static/js/refusals.js), in real Chromium: every page's htmx requests,
refused with 400, 404, 413, 422, 429 (Retry-After), 500 or not answered at all, show a message
in the page's language next to the control the person used, and leave the previous view as it
was (the stepper's grid and address) or mark what no longer matches the inputs as out of date.

The real server refuses where it can (a practice answer checked too often, an upload over the
request limit, an upload with no file, an unknown class code); Playwright's route interception
refuses the rest, with an empty body so the page's own catalog texts are what shows.
"""

from __future__ import annotations

import re

import pytest
from pagecheck import csp_violations, save_shot, translated
from playwright.sync_api import expect

RETRY_AFTER = 7

# (status, msgid of the text the page shows for it, its parameters); None: the server is not reached.
CASES = [
    (400, "The server could not use this request. Reload the page and try again.", {}),
    (404, "Not found: it may no longer exist. Reload the page and try again.", {}),
    (413, "This is too large for the server: try a smaller file.", {}),
    (422, "Some values are not valid: check them and try again.", {}),
    (429, "Too many requests in a short time. Please wait %(seconds)s seconds and try again.", {"seconds": RETRY_AFTER}),
    (500, "The server could not complete the request. Please try again.", {}),
    (None, "The server cannot be reached. Check the connection and try again.", {}),
]
STALE = "Out of date: from before your last change"


def refuse_htmx(page) -> dict:
    """From now on the page's htmx requests are answered with ``mode["status"]`` (None: the
    connection fails); every other request goes on as usual. Returns ``mode`` to change."""
    mode: dict = {"status": 0}

    def handle(route, request) -> None:
        if request.headers.get("hx-request") != "true" or mode["status"] == 0:
            route.fallback()
        elif mode["status"] is None:
            route.abort("connectionrefused")
        else:
            headers = {"Retry-After": str(RETRY_AFTER)} if mode["status"] == 429 else {}
            route.fulfill(status=mode["status"], headers=headers, content_type="text/plain", body="")

    page.route("**/*", handle)
    return mode


def open_lab(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => window.htmx !== undefined && document.readyState === 'complete'")


def assert_said_near(page, where, message: str, max_gap: float = 160) -> None:
    """``message`` is shown, inside the viewport, within ``max_gap`` px of ``where`` (a locator)."""
    said = page.locator(".refusal, [data-refusal-for]").filter(has_text=message)
    expect(said).to_have_count(1)
    expect(said).to_be_visible()
    box, near = said.bounding_box(), where.bounding_box()
    viewport = page.viewport_size
    assert -1 <= box["y"] and box["y"] + box["height"] <= viewport["height"] + 1, (box, viewport)
    gap = max(box["y"] - (near["y"] + near["height"]), near["y"] - (box["y"] + box["height"]), 0)
    assert gap <= max_gap, f"the message is {gap:.0f} px from the control"


def assert_only_refusal_noise(page) -> None:
    """The browser's and htmx's own console lines about the refused requests, nothing else."""
    assert csp_violations(page) == []
    assert page.outside_requests == []
    expected = re.compile(r"Failed to load resource|Response Status Error Code|htmx:(responseError|sendError|afterRequest)|ERR_CONNECTION_REFUSED")
    unexpected = [line for line in page.console_errors if not expected.search(line)]
    assert unexpected == [], unexpected


def run_cases(page, act, where, locale: str = "es", kept=None, stale: str | None = None, max_gap: float = 160) -> None:
    """Refuse the request ``act()`` makes in every way; each time the message shows near
    ``where``, ``kept()`` (the state that must not change) stays the same, and ``stale``
    (a selector) is marked out of date."""
    before = kept() if kept else None
    url = page.url
    mode = refuse_htmx(page)
    for status, msgid, params in CASES:
        mode["status"] = status
        act()
        assert_said_near(page, where, translated(msgid, locale, **params), max_gap)
        assert page.url == url
        if kept:
            assert kept() == before, status
        if stale:
            marked = page.locator(stale)
            expect(marked.first).to_have_class(re.compile(r"\bis-stale\b"))
            expect(marked.first).to_have_attribute("data-stale-label", translated(STALE, locale))
    assert page.locator(".refusal").count() <= 1  # one message at a time, never a pile
    assert_only_refusal_noise(page)


# ---------------------------------------------------------------- steppers: the view stays as it was


def stepper_state(page, prefix: str):
    return lambda: (page.locator(f"#{prefix}-status").inner_text(), page.locator(f"#{prefix}-stepper").get_attribute("data-step"))


def test_conv_stepper_refusals_keep_the_step_in_spanish(page, live_server, shots_dir):
    open_lab(page, f"{live_server}/conv?preset=seed&kernel=seed")
    run_cases(page, lambda: page.locator("#conv-next").click(), page.locator("#conv-next"),
              kept=stepper_state(page, "conv"))
    # Refusals gone, the same button works again and the message goes away.
    page.unroute("**/*")
    page.locator("#conv-next").click()
    expect(page.locator("#conv-stepper")).to_have_attribute("data-step", "1")
    expect(page.locator(".refusal")).to_have_count(0)


def test_pool_stepper_refusals_in_english(open_page, live_server, shots_dir):
    page = open_page(viewport={"width": 1280, "height": 720})
    open_lab(page, f"{live_server}/pool?lang=en")
    run_cases(page, lambda: page.locator("#pool-next").click(), page.locator("#pool-next"), locale="en",
              kept=stepper_state(page, "pool"))
    page.locator("#projector-toggle").click()
    save_shot(page, shots_dir, "refusal-pool-en-projector-1280x720.png")


# ---------------------------------------------------------------- settings forms: the old result is marked


def change(control):
    """Change ``control`` as a person would, to a value it does not have now."""
    if control.evaluate("e => e.tagName") == "SELECT":
        values = control.evaluate("e => [...e.options].map(o => o.value).filter(v => v !== e.value)")
        control.select_option(values[0])
    else:
        control.fill(str(int(control.input_value()) % 5 + 2))
        control.dispatch_event("change")


@pytest.mark.parametrize(("url", "control", "stale"), [
    ("/conv?preset=seed&kernel=seed", "#conv-ksize", "#conv-stepper"),
    ("/activation", "#act-fn", ".act-maps"),
    ("/grid", "#grid-zoom", "#grid-lab figure"),
    ("/local", "#local-k", ".local-compare"),
    ("/pipeline", "#pl-lr", "#pipeline-forward"),
    ("/train", "#train-optimizer", "#train-summary"),
])
def test_settings_refused_mark_the_old_result_out_of_date(page, live_server, url, control, stale):
    open_lab(page, live_server + url)
    if url == "/train":  # its settings are folded away on the first screen
        page.locator("#train-settings > summary").click()
    result = page.locator(stale).first
    run_cases(page, lambda: change(page.locator(control)), page.locator(control),
              kept=lambda: result.inner_text(), stale=stale)
    # Answered again: the new result replaces the marked one.
    page.unroute("**/*")
    change(page.locator(control))
    expect(page.locator(".is-stale")).to_have_count(0)
    expect(page.locator(".refusal")).to_have_count(0)


def test_train_start_refused_says_so_beside_the_button(page, live_server):
    open_lab(page, f"{live_server}/train")
    run_cases(page, lambda: page.locator("#train-start").click(), page.locator("#train-start"),
              kept=lambda: page.locator("#train-run").inner_html())


# ---------------------------------------------------------------- practice


def open_relu(page, live_server, seed: int = 5):
    open_lab(page, f"{live_server}/practice?kind=relu&level=1&seed={seed}")
    cells = page.eval_on_selector("#practice-exercise table.matrix--input",
                                  "t => [...t.rows].map(r => [...r.cells].map(c => c.textContent))")
    values = [max(0, int(v.strip().replace("\u2212", "-"))) for row in cells for v in row]
    return page.locator("#practice-form input.practice-cell"), values


def test_practice_checked_too_often_says_wait_and_marks_the_old_verdict(page, live_server, shots_dir):
    """The issue's case: ten quick checks, then a right ReLU grid got 429 and the page still said
    "✗ 8 of 16 cells are wrong". Now the wait is said under the button and the verdict is marked."""
    cells, right = open_relu(page, live_server)
    for i in range(cells.count()):
        cells.nth(i).fill(str(right[i] + 1))
    verdict = page.locator("#practice-verdict")
    check = page.locator("#practice-check")
    for _ in range(12):  # the answers' burst is 10 a session
        with page.expect_response("**/practice/check") as answer:
            check.click()
        if answer.value.status == 429:
            break
        expect(verdict).to_be_visible()
    assert answer.value.status == 429
    assert answer.value.headers["retry-after"].isdigit()
    expect(verdict).to_have_class(re.compile(r"\bis-stale\b"))
    for i in range(cells.count()):  # now the right answer
        cells.nth(i).fill(str(right[i]))
    with page.expect_response("**/practice/check") as answer:
        check.click()
    assert answer.value.status == 429
    wait = int(answer.value.headers["retry-after"])
    said = translated("Too many requests in a short time. Please wait %(seconds)d seconds and try again.", seconds=wait)
    assert_said_near(page, check, said)
    expect(verdict).to_have_class(re.compile(r"\bis-stale\b"))
    expect(verdict).to_have_attribute("data-stale-label", translated(STALE))
    save_shot(page, shots_dir, "refusal-practice-429-1280x720.png")
    assert_only_refusal_noise(page)


def test_practice_solution_and_check_refused_by_route(open_page, live_server, shots_dir):
    page = open_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    cells, right = open_relu(page, live_server, seed=6)
    for i in range(cells.count()):
        cells.nth(i).fill(str(right[i]))
    page.locator("#practice-check").click()
    expect(page.locator("#practice-verdict")).to_have_class(re.compile(r"\bis-correct\b"))
    cells.nth(0).fill(str(right[0] + 1))
    run_cases(page, lambda: page.locator("#practice-check").click(), page.locator("#practice-check"),
              stale="#practice-verdict")
    save_shot(page, shots_dir, "refusal-practice-phone-390x844.png")
    page.unroute("**/*")  # answered again: a fresh verdict, and the message goes
    page.locator("#practice-check").click()
    expect(page.locator("#practice-verdict")).to_have_class(re.compile(r"\bis-wrong\b"))
    expect(page.locator(".refusal, .is-stale")).to_have_count(0)
    show = page.locator("#practice-show-solution")
    show.scroll_into_view_if_needed()
    run_cases(page, lambda: show.click(), show, kept=lambda: (show.is_visible(), show.get_attribute("href")))


# ---------------------------------------------------------------- uploads on /conv, through the real server


def test_conv_upload_too_large_or_missing_is_said_like_a_bad_file(page, live_server, tmp_path):
    open_lab(page, f"{live_server}/conv?preset=seed&kernel=seed&step=3")
    before = page.locator("#conv-status").inner_text()
    url = page.url
    button = page.locator("#conv-upload-button")
    # No file chosen: the person's words, not the API's.
    button.click()
    expect(page.locator("#conv-upload")).to_contain_text(translated("Choose a picture first."))
    # Over the whole request limit (16 MB): refused before routing, said like a 5–16 MB file.
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG" + bytes(17 * 1024 * 1024))
    with page.expect_response("**/conv/upload") as answer:
        page.locator("#conv-file").set_input_files(str(huge))
    assert answer.value.status == 413
    said = translated("The file is too large: the limit is %(limit)s.", limit="5 MB")
    assert_said_near(page, page.locator("#conv-file"), said)
    assert page.locator("#conv-status").inner_text() == before
    assert page.url == url
    assert_only_refusal_noise(page)


@pytest.mark.parametrize("path", ["/conv/upload", "/grid/upload", "/pipeline/upload"])
def test_every_page_upload_with_no_file_says_choose_a_picture(client, html, path):
    # What a browser sends for a file field left empty: a nameless, empty part.
    response = client.post(path, files={"file": ("", b"", "application/octet-stream")}, data={"state": ""})
    assert response.status_code == 422
    assert translated("Choose a picture first.") in html(response).get_text()


# ---------------------------------------------------------------- classes


@pytest.mark.parametrize("locale", ["es", "en"])
def test_unknown_class_code_says_so_and_offers_the_form(page, live_server, locale):
    response = page.goto(f"{live_server}/class/ZZZZZ?lang={locale}")
    assert response.status == 404
    said = translated("There is no class with the code “%(code)s”. Check the code on the projector: "
                      "the class may have ended.", locale, code="ZZZZZ")
    expect(page.locator("#class-code-error")).to_have_text(said)
    expect(page.locator("h1")).to_have_text(translated("Join a class", locale))
    field = page.locator("#class-code-input")
    expect(field).to_have_value("ZZZZZ")
    field.fill("")
    field.type("QQQQQ")
    page.locator("#class-join-form button[type=submit]").click()
    expect(page.locator("#class-code-error")).to_contain_text("QQQQQ")


def test_student_answer_refused_is_said_in_the_class_bar(page, open_page, live_server):
    host = page
    host.goto(f"{live_server}/class")
    host.locator("#class-start").click()
    code = host.locator("#class-code-big").inner_text().strip()
    student = open_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    student.goto(f"{live_server}/class/{code}")
    student.wait_for_function("() => window.htmx !== undefined && document.readyState === 'complete'")
    host.goto(f"{live_server}/conv?preset=seed&kernel=seed")
    host.locator("#class-ask").click()
    field = student.locator("#class-answer-value")
    expect(field).to_be_visible()
    field.fill("87")
    send = student.locator("#class-send")
    # The class bar says every refusal in its own message line, at the top of the same card.
    run_cases(student, lambda: send.click(), send, max_gap=220)
    expect(field).to_have_value("87")
