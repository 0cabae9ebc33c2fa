"""The class builds its own dataset (issue 15), in real Chromium: the assistant's projector
(1280×720, projector mode) opens a collection of three labels; two phones (390×844) join,
draw with strokes on the pad and send; the projector's counts and thumbnails follow; the
assistant removes a drawing and a phone takes its last one back.

The issue's proof: three phones (one in English) draw ten shapes each, the assistant removes
one and trains, the phones test the model and the projector's tally fills; the .npz and the
.zip download, and the .npz loads and trains again on /train."""

from __future__ import annotations

import itertools
import math
import random
import re
import zipfile

import numpy as np
import pytest
from pagecheck import assert_axe_clean, assert_clean, assert_on_first_screen, goto, projector_on, save_shot
from playwright.sync_api import expect
from test_browser_classroom import join, start_class
from test_browser_train import start as train_start
from test_browser_train import wait_finished

from cnnlab.app.main import app as cnnlab_app
from cnnlab.app.session import unsign
from cnnlab.app.settings import settings_for
from cnnlab.core.datasets import load_file

SHOTS = "collection"
LABELS = ("círculo", "cruz", "triángulo")

# Strokes as the pad's pointer events (pad coordinates 0..1): a circle, a cross, a triangle.
STROKES = {
    0: [[[0.5 + 0.3 * c, 0.5 + 0.3 * s] for c, s in
         ((1, 0), (0.7, 0.7), (0, 1), (-0.7, 0.7), (-1, 0), (-0.7, -0.7), (0, -1), (0.7, -0.7), (1, 0))]],
    1: [[[0.2, 0.2], [0.5, 0.5], [0.8, 0.8]], [[0.8, 0.2], [0.5, 0.5], [0.2, 0.8]]],
    2: [[[0.5, 0.15], [0.85, 0.8], [0.15, 0.8], [0.5, 0.15]]],
}

DRAW_JS = """(strokes) => {
  const pad = document.getElementById('collect-pad');
  const box = pad.getBoundingClientRect();
  const fire = (type, [x, y]) => pad.dispatchEvent(new PointerEvent(type, {
    pointerId: 1, pointerType: 'touch', isPrimary: true, bubbles: true, cancelable: true,
    buttons: type === 'pointerup' ? 0 : 1, clientX: box.left + x * box.width, clientY: box.top + y * box.height}));
  for (const stroke of strokes) {
    fire('pointerdown', stroke[0]);
    stroke.slice(1).forEach((point) => fire('pointermove', point));
    fire('pointerup', stroke[stroke.length - 1]);
  }
}"""


@pytest.fixture
def shots(shots_dir):
    folder = shots_dir / SHOTS
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def phone(open_page):
    return open_page(viewport={"width": 390, "height": 844}, locale="en-US", is_mobile=True, has_touch=True)


def open_collection(host, labels, target: int):
    """The assistant opens a collection of its own ``labels`` from the projector's panel;
    returns the label columns."""
    host.locator("#collection-open > summary").click()
    form = host.locator("#collection-open-form")
    form.locator("#collection-labels").fill(", ".join(labels))
    expect(form.locator("#collection-own")).to_be_checked()
    form.locator("#collection-target").fill(str(target))
    form.locator("#collection-start").click()
    columns = host.locator("#collection-cols > .collection-col")
    expect(columns).to_have_count(len(labels))
    expect(columns.locator(".collection-col__name")).to_have_text(list(labels))
    return columns


def join_and_collect(student, live_server, code: str, labels) -> None:
    """A phone joins the class; its follow page offers the pad, which asks for a label."""
    join(student, live_server, code)
    student.locator("#class-collect-link a").click()
    expect(student).to_have_url(f"{live_server}/class/{code}/collect")
    expect(student.locator("#collect-ask")).to_have_text(re.compile("|".join(labels)))


def sent(n: int) -> re.Pattern:
    return re.compile(rf"\b{n}$")


def draw_asked(student, strokes_for=lambda ask: STROKES[ask % 3]) -> int:
    """The label the phone asks for, drawn on its pad as strokes (not sent); returns the label."""
    ask = int(student.locator("#collect-ask").get_attribute("data-ask"))
    student.evaluate(DRAW_JS, strokes_for(ask))
    expect(student.locator("#collect-form input[name=grid]")).not_to_have_value("")
    return ask


def wait_sent(student, n: int) -> None:
    """The phone's own count says n, and the pad is clear for the next drawing."""
    expect(student.locator("#collect-mine")).to_have_text(sent(n))
    expect(student.locator("#collect-form input[name=grid]")).to_have_value("")


def draw_and_send(student, n: int, strokes_for=lambda ask: STROKES[ask % 3]) -> int:
    """The label asked for, drawn as strokes; "Send"; the phone's own count says n."""
    ask = draw_asked(student, strokes_for)
    student.locator("#collect-send").click()
    wait_sent(student, n)
    return ask


def test_phones_fill_the_projectors_columns(page, open_page, live_server, shots, axe_source):
    host = page
    code = start_class(host, live_server)
    projector_on(host)

    # The assistant opens a collection of three labels of its own.
    columns = open_collection(host, LABELS, 4)
    expect(host.locator("#collection-left")).to_have_text(re.compile(r"\d+:\d\d"))

    # Two phones join the class; the follow page offers the pad, which asks for a label.
    phones = [phone(open_page), phone(open_page)]
    for student in phones:
        join_and_collect(student, live_server, code, LABELS)

    # Nothing drawn: "Send" says so and sends nothing.
    phones[0].locator("#collect-send").click()
    expect(phones[0].locator("#collect-message")).not_to_be_empty()

    for n in (1, 2, 3):
        for student in phones:
            draw_and_send(student, n)
    expect(phones[0].locator("#collect-message")).to_be_empty()

    # The projector follows: counts, the total and a thumbnail per drawing.
    thumbs = host.locator("#collection-cols .collection-thumb")
    expect(host.locator("#collection-total")).to_have_text("6")
    expect(host.locator("#collection-contributors")).to_have_text("2")
    expect(thumbs).to_have_count(6)
    counts = [int(t) for t in columns.locator("[data-count]").all_inner_texts()]
    assert sum(counts) == 6 and max(counts) - min(counts) <= 1, counts  # every label fills evenly
    expect(thumbs.first.locator("img")).to_have_js_property("complete", True)
    assert thumbs.first.locator("img").evaluate("img => img.naturalWidth") > 0

    # The assistant removes one drawing: it leaves the projector (and the dataset). The phones
    # sent in turns, so the odd ids are the first phone's: its count drops too.
    thumbs.and_(host.locator("[data-id='5']")).locator("[data-remove]").click()
    expect(thumbs).to_have_count(5)
    expect(host.locator("#collection-cols [data-id='5']")).to_have_count(0)
    expect(host.locator("#collection-total")).to_have_text("5")
    expect(phones[0].locator("#collect-mine")).to_have_text(sent(2))

    # The second phone takes its last drawing back.
    student = phones[1]
    student.locator("#collect-undo").click()
    expect(student.locator("#collect-mine")).to_have_text(sent(2))
    expect(host.locator("#collection-total")).to_have_text("4")
    expect(thumbs).to_have_count(4)
    expect(host.locator("#collection-cols [data-id='6']")).to_have_count(0)

    # 1280×720, projector mode: the counts, the newest thumbnails and the buttons on one screen.
    assert_on_first_screen(host, "#collection-cols, #collection-train, #collection-close, #collection-total", 20)
    save_shot(host, shots, "collection-projector-1280x720.png")
    student.evaluate(DRAW_JS, STROKES[1])
    save_shot(student, shots, "collect-phone-390x844.png")
    assert_on_first_screen(student, "#collect-ask, #collect-pad, #collect-send, #collect-clear")
    assert_axe_clean(host, axe_source, "the projector's collection panel")
    assert_axe_clean(student, axe_source, "a phone's pad")
    for p in (host, *phones):
        assert_clean(p)


# ------------------------------------------------------------------ the proof ----------

CLASS_LABELS = ("círculo", "cruz", "línea")
DRAWINGS_EACH = 10


def shape(name: str, rng: random.Random) -> list[list[list[float]]]:
    """``name``'s strokes in pad coordinates (0..1), a little different each time: moved,
    resized, turned and shaken like a hand's."""
    cx, cy = 0.5 + rng.uniform(-0.06, 0.06), 0.5 + rng.uniform(-0.06, 0.06)
    size = rng.uniform(0.8, 1.1)
    turn = math.radians(rng.uniform(-10, 10))

    def at(x: float, y: float) -> list[float]:
        x, y = x * size, y * size
        x, y = x * math.cos(turn) - y * math.sin(turn), x * math.sin(turn) + y * math.cos(turn)
        return [cx + x + rng.uniform(-0.012, 0.012), cy + y + rng.uniform(-0.012, 0.012)]

    if name == "círculo":
        rx, ry, start = 0.3 * rng.uniform(0.9, 1.1), 0.3 * rng.uniform(0.9, 1.1), rng.uniform(0, math.tau)
        return [[at(rx * math.cos(start + math.tau * i / 20), ry * math.sin(start + math.tau * i / 20))
                 for i in range(21)]]
    if name == "cruz":
        return [[at(-0.3 + 0.12 * i, -0.3 + 0.12 * i) for i in range(6)],
                [at(0.3 - 0.12 * i, -0.3 + 0.12 * i) for i in range(6)]]
    if name == "línea":
        return [[at(-0.32 + 0.08 * i, 0.0) for i in range(9)]]
    if name == "triángulo":
        corners = [(0.0, -0.33), (0.33, 0.28), (-0.33, 0.28), (0.0, -0.33)]
        return [[at(x0 + (x1 - x0) * t / 4, y0 + (y1 - y0) * t / 4)
                 for (x0, y0), (x1, y1) in itertools.pairwise(corners) for t in range(4)] + [at(*corners[-1])]]
    raise ValueError(name)


def session_of(page) -> str:
    """The session id in a browser context's session cookie."""
    settings = settings_for(cnnlab_app)
    value = next(c["value"] for c in page.context.cookies() if c["name"] == settings.session_cookie)
    return unsign(value, settings)


def percent(text: str) -> float:
    return float(text.replace("%", "").replace(",", ".").strip())


def ask_the_model(student, drawn: str, meant: int, rng: random.Random) -> dict:
    """Test phase: the phone draws ``drawn``, says it meant label ``meant`` and asks the model;
    the answer the server sent (probabilities, predicted, right), checked against what the phone shows."""
    student.locator("#collect-clear").click()
    student.locator(f"#collect-meant input[value='{meant}']").check()
    student.evaluate(DRAW_JS, shape(drawn, rng))
    expect(student.locator("#collect-form input[name=grid]")).not_to_have_value("")
    with student.expect_response(lambda r: r.url.endswith("/collection/test") and r.request.method == "POST") as reply:
        student.locator("#collect-send").click()
    assert reply.value.status == 200, reply.value.text()
    answer = reply.value.json()
    result = student.locator("#collect-result")
    expect(result.locator("[data-predicted]")).to_have_text(CLASS_LABELS[answer["predicted"]])
    # The probabilities with the label names, as the server sent them.
    expect(result.locator(".collect-bars th")).to_have_text(list(CLASS_LABELS))
    texts = result.locator(".collect-bars__p").all_inner_texts()
    # Numbers in the page's language, as the server writes them: "98,1 %" / "98.1%".
    spanish = student.evaluate("() => document.documentElement.lang") == "es"
    assert all(re.fullmatch(r"\d+,\d\xa0%" if spanish else r"\d+\.\d%", t) for t in texts), texts
    shown = [percent(t) for t in texts]
    assert shown == pytest.approx([100 * p for p in answer["probabilities"]], abs=0.06), (shown, answer)
    assert sum(shown) == pytest.approx(100, abs=0.3)
    expect(result.locator(".collect-bars tr.is-top th")).to_have_text(CLASS_LABELS[answer["predicted"]])
    return answer


def test_the_class_collects_trains_tests_and_keeps_its_dataset(page, open_page, live_server, shots, tmp_path):
    """The issue's proof: three phones draw ten shapes each, the projector follows, the
    assistant removes one drawing and trains, the phones test the model and the tally fills;
    the dataset downloads (.npz, .zip) and trains again on /train."""
    rng = random.Random(15)
    host = page
    code = start_class(host, live_server)
    projector_on(host)
    columns = open_collection(host, CLASS_LABELS, DRAWINGS_EACH)

    # Three phones; two in Spanish (the default, whatever the browser says), one in English.
    # The first joins with the code and follows the link to the pad; the others open the pad's
    # address straight away (a student joining late: the page gives them a seat).
    phones = [phone(open_page) for _ in range(3)]
    english = phones[2]
    join_and_collect(phones[0], live_server, code, CLASS_LABELS)
    phones[1].goto(f"{live_server}/class/{code}/collect")
    english.goto(f"{live_server}/class/{code}/collect?lang=en")
    expect(host.locator("#class-count")).to_have_text("3")
    for student, (draw, send) in zip(phones, (("Dibuja:", "Enviar"), ("Dibuja:", "Enviar"), ("Draw:", "Send"))):
        expect(student.locator(".collect-ask__draw")).to_have_text(draw)
        expect(student.locator("#collect-send")).to_have_text(send, use_inner_text=True)

    # Ten drawings each: every phone draws the label it is asked for, then all three send.
    drawn = [0] * len(CLASS_LABELS)

    def strokes(ask: int):
        return shape(CLASS_LABELS[ask], rng)

    for n in range(1, DRAWINGS_EACH + 1):
        for student in phones:
            drawn[draw_asked(student, strokes)] += 1
            student.locator("#collect-send").click()
        for student in phones:
            wait_sent(student, n)
    expect(phones[0].locator("#collect-mine")).to_have_text(f"Has enviado {DRAWINGS_EACH}")
    expect(english.locator("#collect-mine")).to_have_text(f"You have sent {DRAWINGS_EACH}")
    # Every label fills evenly (phones sending at once may be asked for the same label).
    assert sum(drawn) == 30 and max(drawn) - min(drawn) <= 2, drawn

    # The projector: the counts per label, the total, the contributors and a thumbnail per drawing.
    total = 3 * DRAWINGS_EACH
    expect(host.locator("#collection-total")).to_have_text(str(total))
    expect(host.locator("#collection-contributors")).to_have_text("3")
    expect(columns.locator("[data-count]")).to_have_text([str(n) for n in drawn])
    thumbs = host.locator("#collection-cols .collection-thumb")
    expect(thumbs).to_have_count(total)
    for k, n in enumerate(drawn):
        expect(columns.nth(k).locator(".collection-thumb")).to_have_count(n)
    host.wait_for_function("() => Array.from(document.querySelectorAll('#collection-cols .collection-thumb img'))"
                           ".every(img => img.complete && img.naturalWidth === 56)")
    assert_on_first_screen(host, "#collection-cols, #collection-train, #collection-total", 20)
    save_shot(host, shots, "class-collecting-projector-1280x720.png")
    draw_asked(phones[0], strokes)  # on the pad, not sent: for the picture
    save_shot(phones[0], shots, "class-collecting-phone-390x844.png")
    # The label asked for, the pad, its buttons, the count and "undo": all on a phone's first screen.
    assert_on_first_screen(phones[0], "#collect-ask, #collect-pad, #collect-send, #collect-clear, #collect-mine, "
                                      "#collect-undo")

    # The assistant removes one drawing (the newest of the fullest label): gone from the projector
    # and the dataset.
    fullest = drawn.index(max(drawn))
    gone = columns.nth(fullest).locator(".collection-thumb").first
    gone_id = gone.get_attribute("data-id")
    gone.locator("[data-remove]").click()
    total -= 1
    drawn[fullest] -= 1
    expect(host.locator("#collection-total")).to_have_text(str(total))
    expect(thumbs).to_have_count(total)
    expect(host.locator(f"#collection-cols [data-id='{gone_id}']")).to_have_count(0)
    expect(columns.locator("[data-count]")).to_have_text([str(n) for n in drawn])

    # Train: the phase moves on to the test by itself once the run is done.
    host.locator("#collection-train").click()
    panel = host.locator("#class-collection")
    expect(panel).to_have_attribute("data-phase", "test", timeout=30_000)
    expect(host.locator("#collection-tally")).to_be_visible()
    for student in phones:
        expect(student.locator("#collect")).to_have_attribute("data-phase", "test")
        expect(student.locator("#collect-meant")).to_be_visible()
    expect(phones[0].locator("#collect-send")).to_have_text("Preguntar al modelo", use_inner_text=True)
    expect(english.locator("#collect-send")).to_have_text("Ask the model", use_inner_text=True)
    expect(english.locator(".collect-meant legend")).to_have_text("I drew:")
    expect(phones[0].locator(".collect-meant legend")).to_have_text("Dibujé:")
    expect(english.locator("#collect-meant label")).to_have_text(list(CLASS_LABELS))

    # Every phone tests each label honestly; the model knows them far better than chance.
    answers = []
    for student in phones:
        for k, name in enumerate(CLASS_LABELS):
            answers.append(ask_the_model(student, name, k, rng))
    honest_right = sum(a["right"] for a in answers)
    assert honest_right >= 7, [(a["label"], a["predicted"]) for a in answers]
    verdicts = {True: ("Acertó.", "It got it right."), False: ("¡Lo engañaste!", "You fooled it!")}
    expect(english.locator("#collect-result [data-verdict]")).to_have_text(verdicts[answers[-1]["right"]][1])
    expect(english.locator("#collect-result .collect-answer")).to_contain_text("It says:")
    expect(phones[1].locator("#collect-result [data-verdict]")).to_have_text(verdicts[answers[5]["right"]][0])
    # And one tries to fool it: a circle it says is a line.
    answers.append(ask_the_model(phones[1], "círculo", 2, rng))
    # The answer is on the phone's screen without scrolling, and so is the button to ask again.
    assert_on_first_screen(phones[1], "#collect-result, #collect-send")
    save_shot(phones[1], shots, "class-test-phone-390x844.png")

    # The projector's tally: right + fooled = the tests sent; each fooling drawing says "label → predicted".
    right = sum(a["right"] for a in answers)
    fooled = [f"{CLASS_LABELS[a['label']]} → {CLASS_LABELS[a['predicted']]}" for a in answers if not a["right"]]
    expect(host.locator("#collection-right")).to_have_text(str(right))
    expect(host.locator("#collection-fooled")).to_have_text(str(len(fooled)))
    assert right + len(fooled) == len(answers) == 10
    says = host.locator("#collection-fooled-list [data-says]")
    expect(says).to_have_count(len(fooled))
    assert sorted(says.all_inner_texts()) == sorted(fooled)
    save_shot(host, shots, "class-test-projector-1280x720.png")
    assert_on_first_screen(host, "#collection-tally, #collection-npz, #collection-zip, #collection-cols", 20)

    # Keep it: the .npz holds the 29 drawings, 3 labels and their names.
    with host.expect_download() as download:
        host.locator("#collection-npz").click()
    npz = tmp_path / "class.npz"
    download.value.save_as(npz)
    data = load_file(npz, name="class")
    assert data.label_names == CLASS_LABELS
    assert len(data.y_train) + len(data.y_test) == total == 29
    labels = np.concatenate([data.y_train, data.y_test])
    assert np.bincount(labels, minlength=3).tolist() == drawn
    with np.load(npz) as raw:
        assert set(raw.files) == {"images", "labels", "label_names"}

    # And the .zip: 29 PNGs in a folder per label, nothing naming a student.
    with host.expect_download() as download:
        host.locator("#collection-zip").click()
    zipped = tmp_path / "class.zip"
    download.value.save_as(zipped)
    with zipfile.ZipFile(zipped) as zf:
        names = zf.namelist()
        pngs = [n for n in names if n.endswith(".png")]
        assert len(pngs) == total
        assert {n.split("/")[0] for n in pngs} == set(CLASS_LABELS)
        assert all(re.fullmatch(r"[^/]+/\d+\.png", n) for n in pngs), names
        assert set(names) - set(pngs) == {f"{name}/" for name in CLASS_LABELS} | {"labels.csv"}
        everything = b"".join(zf.read(n) for n in names) + "".join(names).encode()
        rows = zf.read("labels.csv").decode().splitlines()
        assert rows[0] == "file,label,index" and len(rows) == 1 + total
        assert all(len(row.split(",")) == 3 for row in rows)
    for secret in [session_of(p) for p in phones]:
        assert secret.encode() not in everything and secret.encode() not in npz.read_bytes()

    # Load it back on /train (the assistant's browser): the page names it and trains it.
    goto(host, f"{live_server}/train")
    settings = host.locator("#train-settings")
    if settings.get_attribute("open") is None:
        settings.locator("> summary").click()
    host.locator("#train-dataset-file").set_input_files(npz)
    host.locator("#train-dataset-load-form button[type=submit]").click()
    expect(host).to_have_url(re.compile(r"/train\?dataset=set-[0-9a-f]{16}$"))
    named = "Tu conjunto de datos: 3 etiquetas (círculo, cruz, línea), 29 imágenes"
    expect(host.locator("#train-brief")).to_contain_text(named)
    goto(host, host.url + "&epochs=2")  # a short run: the page shows each epoch for 0.6 s
    expect(host.locator("#train-brief")).to_contain_text(named)
    train_start(host)
    expect(host.locator(".train-run__label")).to_contain_text(named)
    wait_finished(host)
    expect(host.locator("#train-final-acc")).to_have_text(re.compile(r"^\d+(,\d)?\s%$"))

    for p in (host, *phones):
        assert_clean(p)
