"""Classrooms in real Chromium: two browser contexts, the assistant (1280×720, projector
mode) and a student (a 390×844 phone), talking through the live server."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from pagecheck import assert_axe_clean, assert_clean, projector_on, save_shot
from playwright.sync_api import expect

from cnnlab.core import kernels
from cnnlab.core.conv import conv_step, format_number

SHOTS = "classroom"


def seed_value(step: int) -> str:
    """The value the seed stepper shows at ``step``, straight from the engine."""
    return format_number(conv_step(kernels.SEED_INPUT, kernels.SEED_KERNEL, step=step).value)


@pytest.fixture
def student(open_page):
    """A second browser context, a phone, checked like conftest's ``page``."""
    return open_page(viewport={"width": 390, "height": 844}, locale="en-US", is_mobile=True, has_touch=True)


@pytest.fixture
def shots(shots_dir):
    folder = shots_dir / SHOTS
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_class(host, live_server) -> str:
    host.goto(f"{live_server}/class")
    host.locator("#class-start").click()
    expect(host.locator("#class-code-big")).to_be_visible()
    host.wait_for_load_state()  # app.js wires the projector button on DOMContentLoaded
    return host.locator("#class-code-big").inner_text().strip()


def join(student, live_server, code: str) -> None:
    student.goto(f"{live_server}/class")
    student.locator("#class-code-input").fill(code.lower())
    student.locator("#class-join-form button[type=submit]").click()
    expect(student).to_have_url(f"{live_server}/class/{code}")


def test_student_follows_three_steps_detaches_and_follows_again(page, student, live_server, shots):
    host = page
    code = start_class(host, live_server)
    projector_on(host)
    join(student, live_server, code)
    # The assistant's projector counts the student as soon as the phone's stream is open.
    expect(host.locator("#class-count")).to_have_text("1")
    save_shot(host, shots, "present-projector-1280x720.png")

    host.locator(".class-views__list a[href='/conv?preset=seed']").click()
    expect(host.locator("#class-bar")).to_be_visible()
    expect(host.locator("#conv-status strong")).to_have_text(seed_value(0))
    stage = student.locator("#class-stage")
    expect(stage.locator("#conv-status strong")).to_have_text(seed_value(0))

    for k in (1, 2, 3):
        host.locator("#conv-next").click()
        expect(host.locator("#conv-status strong")).to_have_text(seed_value(k))
        expect(stage.locator("#conv-status strong")).to_have_text(seed_value(k))
        expect(stage.locator("#conv-status")).to_contain_text(f"{k + 1}")
    assert urlsplit(student.url).path == f"/class/{code}"
    # Following is watching: the followed view cannot be clicked.
    assert stage.get_attribute("inert") is not None
    save_shot(student, shots, "follow-phone-390x844.png")

    # Detach: the phone opens that view as a page of its own and stays there.
    student.locator("#class-detach").click()
    expect(student.locator("#class-refollow")).to_be_visible()
    assert urlsplit(student.url).path == "/conv"
    expect(student.locator("#conv-status strong")).to_have_text(seed_value(3))
    host.locator("#conv-next").click()
    expect(host.locator("#conv-status strong")).to_have_text(seed_value(4))
    student.wait_for_timeout(600)
    expect(student.locator("#conv-status strong")).to_have_text(seed_value(3))
    save_shot(student, shots, "detached-phone-390x844.png")

    # One click follows again, at the assistant's step.
    student.locator("#class-refollow").click()
    expect(student).to_have_url(f"{live_server}/class/{code}")
    expect(stage.locator("#conv-status strong")).to_have_text(seed_value(4))
    assert_clean(host)
    assert_clean(student)


def test_quick_question_reaches_the_assistants_histogram(page, student, live_server, shots, axe_source):
    host = page
    code = start_class(host, live_server)
    projector_on(host)
    join(student, live_server, code)
    host.goto(f"{live_server}/conv?preset=seed&kernel=seed&step=2")
    expect(host.locator("#class-ask")).to_be_visible()
    stage = student.locator("#class-stage")
    expect(stage.locator("#conv-status strong")).to_have_text(seed_value(2))
    save_shot(host, shots, "bar-projector-1280x720.png")

    detach = student.locator("#class-detach")
    expect(detach).to_be_enabled()
    host.locator("#class-ask").click()
    expect(host.locator("#class-answered")).to_have_text("0")
    # While the question is open, the followed view offers no way to the next step (issue 12).
    expect(detach).to_be_disabled()
    answer_field = student.locator("#class-answer-value")
    expect(answer_field).to_be_visible()
    right = seed_value(3)
    wrong = str(int(right.replace("\u2212", "-")) + 5)
    # A first, wrong answer, then the right one: the last one counts.
    answer_field.fill(wrong)
    student.locator("#class-send").click()
    expect(student.locator("#class-sent")).to_contain_text(wrong)
    expect(host.locator(f"#class-hist g[data-value='{wrong}']")).to_have_attribute("data-count", "1")
    student.locator("#class-answer-value").fill(right.replace("\u2212", "-"))
    student.locator("#class-send").click()
    expect(student.locator("#class-sent")).to_contain_text(right)
    bar = host.locator(f"#class-hist g[data-value='{right}']")
    expect(bar).to_have_attribute("data-count", "1")
    expect(host.locator(f"#class-hist g[data-value='{wrong}']")).to_have_count(0)
    expect(host.locator("#class-answered")).to_have_text("1")
    save_shot(host, shots, "question-projector-1280x720.png")
    save_shot(student, shots, "question-phone-390x844.png")

    host.locator("#class-reveal").click()
    expect(host.locator("#class-right-answer")).to_have_text(right)
    expect(bar).to_have_class("class-hist__bar is-right")
    expect(student.locator("#class-right-answer")).to_have_text(right)
    expect(student.locator("#class-verdict")).to_contain_text("✓")
    expect(detach).to_be_enabled()
    expect(student.locator("#class-solution")).to_have_text(
        conv_step(kernels.SEED_INPUT, kernels.SEED_KERNEL, step=3).text)
    save_shot(host, shots, "revealed-projector-1280x720.png")
    save_shot(student, shots, "revealed-phone-390x844.png")
    assert_axe_clean(host, axe_source, "the assistant's bar with a revealed question")
    assert_axe_clean(student, axe_source, "the follow page with a revealed question")
    assert_clean(host)
    assert_clean(student)


def test_student_follows_pooling_and_sees_the_class_end(page, student, live_server):
    host = page
    code = start_class(host, live_server)
    join(student, live_server, code)
    fetched: list[tuple[str, str | None]] = []
    student.on("request", lambda r: fetched.append((urlsplit(r.url).path, r.headers.get("hx-target")))
               if urlsplit(r.url).path == "/pool" else None)
    host.goto(f"{live_server}/pool?input=example&kind=max&size=2")
    stage = student.locator("#class-stage")
    example = [[1, 3, 2, 1], [4, 6, 5, 0], [3, 1, 1, 2], [7, 2, 8, 4]]
    maxima = [max(example[r][c] for r in (2 * i, 2 * i + 1) for c in (2 * j, 2 * j + 1)) for i in (0, 1) for j in (0, 1)]
    expect(stage.locator("form[data-stepper='pool'][data-step='0']")).to_have_count(1)
    for k in (1, 2):
        host.locator("#pool-next").click()
        expect(host.locator("#pool-stepper")).to_have_attribute("data-step", str(k))
        expect(stage.locator("#pool-stepper")).to_have_attribute("data-step", str(k))
        expect(stage.locator("#pool-status strong")).to_have_text(str(maxima[k]))
    # The first view is the whole page, fetched; each step's stepper came with the event stream.
    assert fetched == [("/pool", None)]
    # The assistant ends the class from the projector page: the phone is told.
    host.locator("#class-code").click()
    expect(host).to_have_url(f"{live_server}/class/{code}/present")
    host.wait_for_load_state()  # htmx wires the button once the page has loaded
    host.locator("#class-end").click()
    expect(student.locator("#class-closed-message")).to_be_visible()
    expect(host.locator("#class-closed-message")).to_be_visible()
    assert student.evaluate("() => sessionStorage.getItem('cnnlab-class')") is None
    assert_clean(host)
    assert_clean(student)


def test_assistant_sees_the_seats_locks_the_class_and_frees_a_seat(page, student, open_page, live_server, shots):
    host = page
    code = start_class(host, live_server)
    projector_on(host)
    join(student, live_server, code)
    seats = host.locator("#class-seats")
    expect(seats.locator("#class-seats-count")).to_have_text("1")
    seats.locator("summary").click()
    seat = seats.locator(".class-seat[data-seat='1']")
    expect(seat).to_be_visible()
    expect(seat).not_to_have_class("class-seat is-away")
    host.locator("#class-lock").click()
    expect(host.locator("#class-lock")).to_have_attribute("aria-pressed", "true")
    save_shot(host, shots, "seats-projector-1280x720.png")
    late = open_page(viewport={"width": 390, "height": 844}, locale="en-US", is_mobile=True, has_touch=True)
    late.goto(f"{live_server}/class/{code}")
    expect(late.locator(".error-page__message")).to_contain_text("cerrada a estudiantes nuevos")
    # Free the student's seat: the phone is told, and the list is empty again.
    seat.locator(".class-seat__free").click()
    expect(student.locator("#class-closed-message")).to_contain_text("liberó tu asiento")
    expect(seats.locator(".class-seats__none")).to_be_visible()
    expect(seats.locator("#class-seats-count")).to_have_text("0")
    expect(host.locator("#class-count")).to_have_text("0")
    save_shot(student, shots, "seat-freed-phone-390x844.png")
    assert_clean(host)
    assert_clean(student)


def test_class_pages_pass_axe(page, student, live_server, axe_source):
    code = start_class(page, live_server)
    assert_axe_clean(page, axe_source, "/class/<code>/present")
    student.goto(f"{live_server}/class/go?code=nope")
    assert_axe_clean(student, axe_source, "/class/go with a bad code")
    join(student, live_server, code)
    assert_axe_clean(student, axe_source, "/class/<code>")
    assert_clean(page)
