"""Accessibility: every page passes axe-core with no serious or critical finding (Spanish and
English, a phone, projector mode, after htmx swaps, after a training run); the keyboard reaches
and works every control on /conv with a visible focus ring; the colour scales stay readable
with a colour-vision deficiency; pictures of numbers carry their numbers as text.

axe-core is a test-only npm package (tests/a11y/package.json, installed by scripts/test.sh with
``npm ci --prefix tests/a11y``). It is injected with ``page.evaluate``, which the page's
Content-Security-Policy does not govern. When it is missing these tests fail, never skip.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from pagecheck import (
    AXE_DIR,
    BLOCKING,
    assert_axe_clean,
    assert_clean,
    axe_findings,
    projector_on,
)
from PIL import Image
from playwright.sync_api import expect

from cnnlab.app.conv_view import NEGATIVE, POSITIVE, colourize
from cnnlab.app.train_view import png_data_uri
from cnnlab.core import kernels
from cnnlab.core.conv import conv_forward_naive, conv_step

ROOT = Path(__file__).resolve().parent.parent

PHOTO_CONV = "/conv?image=chelsea&size=16&kernel=sobel_x|sobel_y"
NOT_FOUND = "/no-such-page"
INVALID = "/images/camera.png?size=abc"  # a validation error: the 422 page with its list

# Every page, as a visitor opens it.
PAGES = [
    "/",
    "/grid",
    "/grid?color=rgb",
    "/local",
    "/conv?preset=seed",
    "/conv?preset=seed&kernel=laplacian&step=8",  # every output tint, the deepest negative too
    PHOTO_CONV,
    "/pool",
    "/activation",
    "/activation?input=conv&from=preset%3Dseed%26kernel%3Dlaplacian",
    "/pipeline",
    "/train",
    "/practice",
    "/practice?kind=conv_output&level=2&seed=7",
    "/practice/worksheet?n=3",
    "/class",
    NOT_FOUND,
    INVALID,
]

ENGLISH = ["/", "/conv?preset=seed", "/pipeline", "/train", NOT_FOUND, INVALID]
# On a phone, wide matrices and formulas scroll sideways inside their boxes.
PHONE = ["/grid", "/conv?preset=seed", PHOTO_CONV, "/pool", "/activation", "/pipeline", "/practice"]
PROJECTOR = ["/conv?preset=seed", PHOTO_CONV, "/pipeline"]

EXPECTED_STATUS = {NOT_FOUND: 404, INVALID: 422}


def with_query(url: str, extra: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def open_page(page, url: str, status: int = 200) -> None:
    response = page.goto(url)
    assert response is not None and response.status == status, (url, response and response.status)
    page.wait_for_function("() => window.htmx !== undefined && document.readyState === 'complete'")


def assert_clean_page(page, url: str) -> None:
    """``assert_clean``; an error page's own status is the one console error it may log."""
    status = EXPECTED_STATUS.get(url.split("&lang=")[0].split("?lang=")[0])
    if status:
        own = f"the server responded with a status of {status}"
        page.console_errors[:] = [e for e in page.console_errors if not (own in e and f"[{page.url}]" in e)]
    assert_clean(page)


def test_the_locked_axe_core_is_the_one_injected(page, live_server, axe_source):
    lock = json.loads((AXE_DIR / "package-lock.json").read_text(encoding="utf-8"))
    locked = lock["packages"]["node_modules/axe-core"]["version"]
    assert json.loads((AXE_DIR / "package.json").read_text(encoding="utf-8"))["dependencies"]["axe-core"] == locked
    open_page(page, f"{live_server}/")
    page.evaluate(axe_source)
    assert page.evaluate("() => axe.version") == locked


def test_axe_finds_a_planted_problem(page, live_server, axe_source):
    """The check can fail: a button without a name and an image without alt are reported."""
    open_page(page, f"{live_server}/")
    page.evaluate("""() => {
      const main = document.getElementById('main');
      main.insertAdjacentHTML('beforeend', '<button type="button" id="planted"></button><img src="/static/img/favicon.svg">');
    }""")
    ids = {v["id"] for v in axe_findings(page, axe_source) if v["impact"] in BLOCKING}
    assert {"button-name", "image-alt"} <= ids, ids


@pytest.mark.parametrize("url", PAGES)
def test_every_page_in_spanish(page, live_server, axe_source, url):
    open_page(page, f"{live_server}{url}", EXPECTED_STATUS.get(url, 200))
    assert page.locator("html").get_attribute("lang") == "es"
    assert_axe_clean(page, axe_source, url)
    assert_clean_page(page, url)


@pytest.mark.parametrize("url", ENGLISH)
def test_pages_in_english(page, live_server, axe_source, url):
    open_page(page, f"{live_server}{with_query(url, 'lang=en')}", EXPECTED_STATUS.get(url, 200))
    assert page.locator("html").get_attribute("lang") == "en"
    assert_axe_clean(page, axe_source, f"{url} (en)")
    assert_clean_page(page, url)


@pytest.mark.parametrize("url", PHONE)
def test_pages_on_a_phone(page, live_server, axe_source, url):
    page.set_viewport_size({"width": 390, "height": 844})
    open_page(page, f"{live_server}{url}")
    assert_axe_clean(page, axe_source, f"{url} at 390×844")
    assert_clean(page)


@pytest.mark.parametrize("url", ["/pipeline?show=conv-0-0-3", "/conv?preset=seed", "/train"])
def test_pages_on_a_phone_in_projector_mode(page, live_server, axe_source, url):
    page.set_viewport_size({"width": 390, "height": 844})
    open_page(page, f"{live_server}{url}")
    projector_on(page)
    assert_axe_clean(page, axe_source, f"{url} at 390×844 in projector mode")
    assert_clean(page)


@pytest.mark.parametrize("url", PROJECTOR)
def test_pages_in_projector_mode(page, live_server, axe_source, url):
    open_page(page, f"{live_server}{url}")
    projector_on(page)
    assert_axe_clean(page, axe_source, f"{url} in projector mode")
    assert_clean(page)


def test_conv_after_htmx_swaps(page, live_server, axe_source):
    open_page(page, f"{live_server}/conv?preset=seed")
    page.keyboard.press("ArrowRight")  # a step: the stepper is swapped
    expect(page.locator("#conv-stepper")).to_have_attribute("data-step", "1")
    assert_axe_clean(page, axe_source, "/conv after one step")
    page.locator("#conv-use-0").select_option("laplacian")  # a setting: the whole lab is swapped
    expect(page).to_have_url(re.compile(r"kernel=laplacian"))
    expect(page.locator("#conv-sum .sum-expr").first).to_have_text(
        conv_step(kernels.SEED_INPUT, kernels.preset("laplacian"), step=0).text)
    assert_axe_clean(page, axe_source, "/conv after changing the kernel")
    assert_clean(page)


# ---------------------------------------------------------------- keyboard ----------

# Marks every element a keyboard should reach: enabled controls, links, focusable boxes that
# are rendered and not hidden; of a group of radio buttons, the checked one (Tab enters the
# group there, the arrow keys move inside it). Returns how many.
MARK_FOCUSABLE_JS = """() => {
  const selector = 'a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]';
  const radioStop = (el) => {
    const group = [...document.getElementsByName(el.name)].filter(r => r.type === 'radio' && r.form === el.form && !r.disabled);
    return (group.find(r => r.checked) || group[0]) === el;
  };
  let n = 0;
  for (const el of document.querySelectorAll(selector)) {
    if (el.disabled || el.getAttribute('tabindex') === '-1' || el.closest('[inert], details:not([open]) > :not(summary)')) continue;
    if (el.type === 'radio' && !radioStop(el)) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || el.getClientRects().length === 0) continue;
    el.dataset.kb = String(n++);
  }
  return n;
}"""

# The focused element: its mark, whether it shows a focus ring, and what it is.
FOCUSED_JS = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2;
  const shadow = style.boxShadow !== 'none';
  return {kb: el.dataset.kb ?? null, ring: el.matches(':focus-visible') && (outline || shadow),
          what: el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.name ? '[name=' + el.name + ']' : '')};
}"""


def tab_through(page, limit: int) -> list[dict]:
    """Press Tab until the focus leaves the page or comes back to the first stop."""
    stops: list[dict] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED_JS)
        if focused is None or (stops and focused["kb"] is not None and focused["kb"] == stops[0]["kb"]):
            break
        stops.append(focused)
    return stops


@pytest.mark.parametrize(("url", "at_least"), [
    ("/conv?preset=seed", 40),  # the editors, the stepper's buttons, the output cells, the links
    ("/conv?grid=1,2,3;4,5,6;7,8,9&kernel=sobel_x|laplacian", 50),
    ("/", 10), ("/grid", 10), ("/local", 5), ("/pool", 10), ("/activation", 10), ("/pipeline", 20), ("/train", 10),
])
def test_tab_reaches_every_control_with_a_visible_focus(page, live_server, url, at_least):
    open_page(page, f"{live_server}{url}")
    expected = page.evaluate(MARK_FOCUSABLE_JS)
    assert expected >= at_least
    stops = tab_through(page, expected + 20)
    reached = {stop["kb"] for stop in stops}
    missed = page.evaluate(
        "(reached) => [...document.querySelectorAll('[data-kb]')].filter(el => !reached.includes(el.dataset.kb))"
        ".map(el => el.outerHTML.slice(0, 120))", [k for k in reached if k is not None])
    assert missed == [], f"{len(missed)} of {expected} controls are never reached by Tab: {missed[:5]}"
    assert len(stops) >= expected
    no_ring = [stop["what"] for stop in stops if not stop["ring"]]
    assert no_ring == [], f"focused without a visible focus ring: {no_ring[:10]}"
    assert_clean(page)


def test_the_stepper_works_from_the_keyboard_alone(page, live_server):
    open_page(page, f"{live_server}/conv?preset=seed")
    sums = page.locator("#conv-sum .sum-expr").first
    # Tab to the "next" button and press Enter, then Space: two steps, the focus stays on it.
    for _ in range(200):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "conv-next":
            break
    else:
        pytest.fail("Tab never reached #conv-next")
    page.keyboard.press("Enter")
    expect(sums).to_have_text(conv_step(kernels.SEED_INPUT, kernels.SEED_KERNEL, step=1).text)
    expect(page.locator("#conv-next")).to_be_focused()
    page.keyboard.press("Space")
    expect(page.locator("#conv-stepper")).to_have_attribute("data-step", "2")
    expect(sums).to_have_text(conv_step(kernels.SEED_INPUT, kernels.SEED_KERNEL, step=2).text)
    expect(page.locator("#conv-next")).to_be_focused()
    assert page.evaluate("() => document.activeElement.matches(':focus-visible')")
    assert_clean(page)


@pytest.mark.parametrize(("url", "cell"), [("/conv?preset=seed", "#conv-cell-4"), ("/pool", "#pool-cell-2")])
def test_a_cell_pressed_with_the_keyboard_keeps_the_focus(page, live_server, url, cell):
    """Pressing an output cell swaps the stepper; the focus comes back to the new cell, not to
    the top of the page."""
    open_page(page, f"{live_server}{url}")
    step = cell.rsplit("-", 1)[1]
    page.locator(cell).focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"[?&]step={step}(&|$)"))
    expect(page.locator(cell)).to_have_attribute("aria-current", "step")
    expect(page.locator(cell)).to_be_focused()
    assert_clean(page)


def test_the_mode_radio_buttons_work_with_the_arrow_keys(page, live_server):
    open_page(page, f"{live_server}/conv?preset=seed")
    checked = page.locator("input[name=mode]:checked")
    assert checked.get_attribute("value") == "xcorr"
    checked.focus()
    page.keyboard.press("ArrowDown")
    expect(page).to_have_url(re.compile(r"mode=conv"))
    # The kernel flipped 180°: the first product pairs the window's corner with the kernel's last weight.
    flipped = np.asarray(kernels.SEED_KERNEL)[::-1, ::-1]
    expect(page.locator("#conv-sum .sum-expr").first).to_have_text(conv_step(kernels.SEED_INPUT, flipped, step=0).text)
    expect(page.locator("input[name=mode]:checked")).to_be_focused()
    assert_clean(page)


# ---------------------------------------------------------------- colour ----------

# Machado, Oliveira & Fernandes (2009), severity 1.0: linear RGB in, linear RGB out.
MACHADO_2009 = {
    "protanopia": np.array([[0.152286, 1.052583, -0.204868],
                            [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968],
                              [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779],
                            [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}
# CIE76 ΔE: about 2.3 is just noticeable; a red–green scale's ends fall to 6–31 for a
# deuteranope or protanope, a blue–red one stays above 60.
MIN_END_DELTA_E = 40.0
MIN_HALF_DELTA_E = 20.0


def linear(rgb) -> np.ndarray:
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def lab(lin: np.ndarray) -> np.ndarray:
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ np.clip(lin, 0, 1)
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def delta_e(a, b, deficiency: str | None = None) -> float:
    la, lb = linear(a), linear(b)
    if deficiency:
        la, lb = MACHADO_2009[deficiency] @ la, MACHADO_2009[deficiency] @ lb
    return float(np.linalg.norm(lab(la) - lab(lb)))


def readable_for_everyone(negative, positive, half_negative=None, half_positive=None) -> list[str]:
    """What fails: each deficiency's ΔE between the scale's ends (and its halves)."""
    problems = []
    for deficiency in (None, *MACHADO_2009):
        d = delta_e(negative, positive, deficiency)
        if d < MIN_END_DELTA_E:
            problems.append(f"ends {negative} / {positive}: ΔE {d:.1f} for {deficiency or 'normal vision'}")
        if half_negative is not None:
            d = delta_e(half_negative, half_positive, deficiency)
            if d < MIN_HALF_DELTA_E:
                problems.append(f"halves {half_negative} / {half_positive}: ΔE {d:.1f} for {deficiency or 'normal vision'}")
    return problems


def test_the_colour_check_rejects_red_green_scales():
    # ColorBrewer RdYlGn's ends and a plain red/green: fine for most people, not for all.
    assert readable_for_everyone((0xA5, 0x00, 0x26), (0x00, 0x68, 0x37))
    assert readable_for_everyone((213, 0, 0), (0, 150, 0))
    assert readable_for_everyone((178, 24, 43), (33, 102, 172)) == []


def decode_data_uri(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def test_the_feature_map_scale_is_blue_white_red_for_every_viewer():
    values = np.array([[-8.0, -4.0, 0.0, 4.0, 8.0]])
    rgb, legend = colourize(values)
    assert legend == {"kind": "diverging", "lo": -8.0, "hi": 8.0}
    neg, half_neg, zero, half_pos, pos = (tuple(int(v) for v in px) for px in rgb[0])
    assert zero == (255, 255, 255)
    assert neg == tuple(int(v) for v in NEGATIVE) and pos == tuple(int(v) for v in POSITIVE)
    # Blue against red: the two ends differ on the blue–yellow axis too, not on red–green alone.
    assert pos[2] > pos[0] + 100 and neg[0] > neg[2] + 100
    assert readable_for_everyone(neg, pos, half_neg, half_pos) == []


def test_the_training_pictures_scale_is_blue_white_vermillion_for_every_viewer():
    rgb = decode_data_uri(png_data_uri(np.array([[-2.0, -1.0, 0.0, 1.0, 2.0]]), diverging=True))
    neg, half_neg, zero, half_pos, pos = (tuple(int(v) for v in px) for px in rgb[0])
    assert zero == (255, 255, 255)
    assert pos[2] > pos[0] + 100 and neg[0] > neg[2] + 100
    assert readable_for_everyone(neg, pos, half_neg, half_pos) == []


def css_colour(css: str, selector: str) -> tuple[int, int, int]:
    match = re.search(re.escape(selector) + r"\s*\{\s*background:\s*#([0-9a-f]{6})", css, re.IGNORECASE)
    assert match, selector
    return tuple(int(match.group(1)[i:i + 2], 16) for i in (0, 2, 4))


def test_the_stylesheet_scales_match_the_pictures_and_stay_readable():
    css = (ROOT / "static" / "css" / "app.css").read_text(encoding="utf-8")
    # The output grid's tints (deepest and middle level) and the legend under each picture.
    assert readable_for_everyone(css_colour(css, ".matrix td.vn5"), css_colour(css, ".matrix td.v5"),
                                 css_colour(css, ".matrix td.vn3"), css_colour(css, ".matrix td.v3")) == []
    gradient = re.search(r"\.legend--diverging \.legend__bar\s*\{\s*background:\s*linear-gradient\(([^;]*)\);", css)
    assert gradient, "the diverging legend's gradient"
    stops = re.findall(r"rgb\((\d+) (\d+) (\d+)\)|#([0-9a-f]{6})", gradient.group(1), re.IGNORECASE)
    colours = [tuple(int(v) for v in s[:3]) if s[0] else tuple(int(s[3][i:i + 2], 16) for i in (0, 2, 4)) for s in stops]
    # Left to right: negative, white, positive, the same colours as the picture it explains.
    assert colours == [tuple(int(v) for v in NEGATIVE), (255, 255, 255), tuple(int(v) for v in POSITIVE)]
    positive = re.search(r"--positive:\s*var\(--oi-blue\)", css) and re.search(r"--oi-blue:\s*#([0-9a-f]{6})", css)
    negative = re.search(r"--negative:\s*#([0-9a-f]{6})", css)
    assert positive and negative
    hex_rgb = [tuple(int(m.group(1)[i:i + 2], 16) for i in (0, 2, 4)) for m in (negative, positive)]
    assert readable_for_everyone(*hex_rgb) == []


# ---------------------------------------------------------------- pictures of numbers ----------


def numbers_in(text: str) -> list[float]:
    found = re.findall(r"[−-]?\d+(?:[.,]\d+)?(?:e[−+-]?\d+)?", text)
    return [float(n.replace("−", "-").replace(",", ".")) for n in found]


def test_feature_map_pictures_say_their_size_and_range(client, html):
    sobel_x = kernels.preset("sobel_x")
    laplacian = kernels.preset("laplacian")
    soup = html(client.get("/conv?preset=seed&kernel=sobel_x|laplacian&lang=en"))
    alts = [img["alt"] for img in soup.select(".result-item img")]
    assert len(alts) == 3, alts  # the input and two feature maps
    assert numbers_in(alts[0]) == [5, 5]
    x = np.asarray(kernels.SEED_INPUT, dtype=np.float64)[None, None]
    for f, w in enumerate((sobel_x, laplacian)):
        out = conv_forward_naive(x, np.asarray(w, dtype=np.float64)[None, None], np.zeros(1))[0, 0]
        n, h, w_, lo, hi = numbers_in(alts[f + 1])
        assert (n, h, w_) == (f + 1, out.shape[0], out.shape[1])
        assert (lo, hi) == pytest.approx((out.min(), out.max()))
    assert out.min() < 0 < out.max()  # the case where the legend (±max) and the range differ


def test_every_picture_and_chart_has_a_text_alternative(page, live_server):
    for url in ("/grid", "/local", PHOTO_CONV, "/pool", "/activation", "/pipeline"):
        open_page(page, f"{live_server}{url}")
        unnamed = page.evaluate("""() => [...document.querySelectorAll('main img, main svg[role=img], main canvas')]
          .filter(el => {
            const name = (el.getAttribute('alt') || el.getAttribute('aria-label') || '').trim()
              || (el.getAttribute('aria-labelledby') || '').split(/\\s+/).map(id => document.getElementById(id))
                   .filter(Boolean).map(e => e.textContent).join(' ').trim();
            return name === '';
          }).map(el => el.outerHTML.slice(0, 100))""")
        assert unnamed == [], (url, unnamed)
        undescribed = page.evaluate("() => [...document.querySelectorAll('main svg:not([role]):not([aria-hidden=true])')]"
                                    ".filter(svg => !svg.closest('[role=img], [aria-hidden=true]')).length")
        assert undescribed == 0, url
    assert_clean(page)


# ---------------------------------------------------------------- after a training run ----------


def test_train_after_a_short_run(page, live_server, axe_source):
    open_page(page, f"{live_server}/train?dataset=digits&epochs=2")
    page.locator("#train-start").click()
    expect(page.locator("#train-live .train-status")).to_have_attribute("data-status", "done", timeout=60_000)
    assert_axe_clean(page, axe_source, "/train after a run")

    job_id = page.locator("#train-stream").get_attribute("data-job")
    job = page.request.get(f"{live_server}/api/train/{job_id}").json()
    # Each filter's picture carries its weights (channel 0), row by row, to two decimals.
    filters = np.asarray(job["filters"], dtype=np.float64)
    alts = page.locator(".train-filters img").evaluate_all("imgs => imgs.map(img => img.alt)")
    assert len(alts) == filters.shape[0]
    for f, alt in enumerate(alts):
        numbers = numbers_in(alt)
        assert numbers[0] == f + 1
        # Rounded to two decimals (half up, as every number shown): within 0.005 of the weight.
        assert numbers[1:] == pytest.approx(filters[f, 0].ravel().tolist(), abs=0.005 + 1e-6), alt

    # The sample's feature maps carry their smallest and largest value (three digits).
    answer = page.request.post(f"{live_server}/api/train/{job_id}/predict", data={"test_index": 0}).json()
    maps = np.asarray(answer["layers"][1]["values"], dtype=np.float64)
    alts = page.locator(".train-sample img:not(.train-sample__input)").evaluate_all("imgs => imgs.map(img => img.alt)")
    assert len(alts) == maps.shape[0]
    for c, alt in enumerate(alts):
        n, lo, hi = numbers_in(alt)
        assert n == c + 1
        assert (lo, hi) == pytest.approx((maps[c].min(), maps[c].max()), rel=0.006, abs=1e-9), alt

    # The curves' numbers, epoch by epoch, as the job recorded them.
    epochs = [r for r in job["records"] if r.get("kind") == "epoch"]
    assert len(epochs) == 2
    table = page.locator("#train-chart-numbers")
    table.locator("summary").press("Enter")  # opens from the keyboard
    expect(table.locator("table")).to_be_visible()
    rows = table.locator("tbody tr").evaluate_all("trs => trs.map(tr => [...tr.cells].map(c => c.textContent.trim()))")
    assert len(rows) == len(epochs)
    for row, record in zip(rows, epochs):
        epoch, train_loss, test_loss, train_acc, test_acc = (numbers_in(cell)[0] for cell in row)
        assert epoch == record["epoch"]
        assert train_loss == pytest.approx(record["train_eval_loss"], abs=0.0006)
        assert test_loss == pytest.approx(record["test_loss"], abs=0.0006)
        assert train_acc == pytest.approx(100 * record["train_eval_accuracy"], abs=0.06)
        assert test_acc == pytest.approx(100 * record["test_accuracy"], abs=0.06)
    assert_axe_clean(page, axe_source, "/train after a run, numbers open")
    # Turned into a phone: the confusion matrix and the numbers now scroll inside their boxes.
    page.set_viewport_size({"width": 390, "height": 844})
    assert_axe_clean(page, axe_source, "/train after a run at 390×844")
    assert_clean(page)
