"""/practice over HTTP: the givens shown are the exercise's, answers are checked cell by cell
(wrong cells marked), the score lives in a signed cookie, the solution comes step by step,
the worksheet prints with its key on a page of its own, and /api/practice is its JSON twin.
Right answers are recomputed here with NumPy, not read from the engine."""

from __future__ import annotations

import math
import re
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
from bs4 import BeautifulSoup
from pagecheck import soup, text

from cnnlab.app.practice import COOKIE
from cnnlab.app.templating import STATIC_DIR
from cnnlab.core.exercises import KINDS, LEVELS, generate

HX_EXERCISE = {"HX-Request": "true", "HX-Target": "practice-exercise"}
HX_SOLUTION = {"HX-Request": "true", "HX-Target": "practice-solution"}


def number(s: str) -> float:
    return float(s.strip().replace("\u2212", "-").replace(",", "."))  # 0,25 in Spanish


def conv_by_hand(g) -> np.ndarray:
    """The exercise's convolution with NumPy windows (no engine code)."""
    x = np.pad(np.array(g["x"], float), ((0, 0), (g["padding"],) * 2, (g["padding"],) * 2))
    w = np.array(g["w"], float)
    K, S, D = w.shape[-1], g["stride"], g["dilation"]
    Ho, Wo = g["out_shape"]
    out = np.zeros((Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            win = x[:, i * S: i * S + D * (K - 1) + 1: D, j * S: j * S + D * (K - 1) + 1: D]
            out[i, j] = (win * w).sum() + (g["bias"] or 0)
    return out


def form_for(ex, values) -> dict:
    data = {"kind": ex.kind, "level": str(ex.level), "seed": str(ex.seed)}
    for i, v in enumerate(np.ravel(values)):
        data[f"c{i}"] = v if isinstance(v, str) else repr(float(v))
    return data


def score(page: BeautifulSoup) -> dict:
    return {k: int(page.select_one(f"#practice-{k}").get_text()) for k in ("correct", "attempts", "streak", "best")}


# ------------------------------------------------------------------ the page


def test_no_seed_redirects_to_an_address_with_one(client):
    r = client.get("/practice?kind=relu&level=2", follow_redirects=False)
    assert r.status_code == 303
    q = dict(parse_qsl(urlsplit(r.headers["location"]).query))
    assert q["kind"] == "relu" and q["level"] == "2" and q["seed"].isdigit()
    page = soup(client.get(r.headers["location"]))
    assert page.select_one("#practice-form input[name=seed]")["value"] == q["seed"]
    # the controls' empty seed field means "a new one" too
    assert client.get("/practice?kind=relu&level=2&seed=", follow_redirects=False).status_code == 303
    # a bookmark in projector mode stays in projector mode
    kept = client.get("/practice?present=1&lang=en", follow_redirects=False).headers["location"]
    assert dict(parse_qsl(urlsplit(kept).query)).items() >= {"present": "1", "lang": "en"}.items()


def test_spanish_first_and_english_on_request(client):
    es = soup(client.get("/practice?kind=softmax&seed=3"))
    assert text(es.select_one("h1")) == "Ejercicios"
    assert text(es.select_one("#practice-check")) == "Revisar"
    assert "± 0,01" in text(es.select_one("#practice-tolerance"))
    en = soup(client.get("/practice?kind=softmax&seed=3&lang=en"))
    assert text(en.select_one("h1")) == "Practice"
    assert text(en.select_one("#practice-tolerance")).startswith("Real numbers: answers within ± 0.01")


@pytest.mark.parametrize("level", LEVELS)
def test_the_conv_givens_shown_are_the_exercises(client, level):
    ex = generate("conv_output", 21, level)
    page = soup(client.get(f"/practice?kind=conv_output&seed=21&level={level}"))
    inputs = page.select("#practice-exercise .practice-block table.matrix--input")
    kernels = page.select("#practice-exercise .practice-block table.matrix--kernel")
    assert len(inputs) == len(kernels) == len(ex.givens["x"])
    for table, want in zip(inputs, ex.givens["x"]):
        shown = [[number(td.get_text()) for td in tr.select("td")] for tr in table.select("tr")]
        assert shown == want
    for table, want in zip(kernels, ex.givens["w"]):
        shown = [[number(td.get_text()) for td in tr.select("td")] for tr in table.select("tr")]
        assert shown == want
    facts = {text(d.select_one("dt .sym")): number(d.select_one("dd").get_text())
             for d in page.select(".practice-facts > div") if d.select_one("dt .sym")}
    assert facts["S"] == ex.givens["stride"] and facts["P"] == ex.givens["padding"]
    assert facts["D"] == ex.givens["dilation"]
    assert facts.get("b") == ex.givens["bias"]
    # one big input per output cell, in rows
    rows = page.select("#practice-form table.practice-grid tr")
    assert [len(tr.select("input.practice-cell")) for tr in rows] == [ex.givens["out_shape"][1]] * ex.givens["out_shape"][0]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_with_one_input_per_answer_cell(client, kind):
    for level in LEVELS:
        ex = generate(kind, 8, level)
        page = soup(client.get(f"/practice?kind={kind}&seed=8&level={level}&lang=en"))
        cells = page.select("#practice-form input.practice-cell")
        assert len(cells) == ex.answer.size
        assert [c["name"] for c in cells] == [f"c{i}" for i in range(ex.answer.size)]
        assert all(c.get("aria-label") for c in cells)
        tol = text(page.select_one("#practice-tolerance"))
        if ex.tolerance == 0:
            assert tol == "A whole number: the answer must be exact."
        else:
            assert f"± {ex.tolerance:g}" in tol
        assert text(page.select_one("#practice-prompt"))


def test_the_page_follows_the_content_security_policy(client):
    for kind in KINDS:
        page = soup(client.get(f"/practice?kind={kind}&seed=4&level=3&solution=all"))
        assert not page.select("[style]")
        assert all(s.get("src") for s in page.select("script"))
        assert not [t for t in page.find_all(True) if any(a.startswith("on") for a in t.attrs)]
    assert not soup(client.get("/practice/worksheet?seed=4&n=10")).select("[style]")


def test_home_links_to_practice(client):
    assert soup(client.get("/")).select_one("a#home-practice-link")["href"] == "/practice"


# ------------------------------------------------------------------ checking


def test_wrong_cells_are_marked_and_the_right_answer_scores(client):
    ex = generate("conv_output", 5, 2)
    right = conv_by_hand(ex.givens)
    wrong = right.copy()
    wrong[0, 1] += 1
    wrong[-1, 0] -= 3
    page = soup(client.post("/practice/check", data=form_for(ex, wrong), headers=HX_EXERCISE))
    assert page.select_one("html") is None            # htmx gets the exercise block only
    cells = page.select("table.practice-grid td")
    marked = [i for i, td in enumerate(cells) if "is-wrong" in td.get("class", [])]
    W = right.shape[1]
    assert marked == sorted([1, (right.shape[0] - 1) * W])
    assert [i for i, td in enumerate(cells) if td.select_one("input").get("aria-invalid")] == marked
    assert all("is-right" in td["class"] for i, td in enumerate(cells) if i not in marked)
    # what was typed stays in the cells
    assert [number(td.select_one("input")["value"]) for td in cells] == list(wrong.ravel())
    assert "is-wrong" in page.select_one("#practice-verdict")["class"]
    assert score(page) == {"correct": 0, "attempts": 1, "streak": 0, "best": 0}

    page = soup(client.post("/practice/check", data=form_for(ex, right), headers=HX_EXERCISE))
    assert "is-correct" in page.select_one("#practice-verdict")["class"]
    assert not page.select("table.practice-grid td.is-wrong")
    assert score(page) == {"correct": 1, "attempts": 2, "streak": 1, "best": 1}

    # the score survives a reload (signed cookie) …
    assert score(soup(client.get("/practice?kind=relu&seed=1"))) == {"correct": 1, "attempts": 2, "streak": 1, "best": 1}
    # … and the same exercise does not count twice
    page = soup(client.post("/practice/check", data=form_for(ex, right), headers=HX_EXERCISE))
    assert score(page)["correct"] == 1 and page.select_one("#practice-verdict .hint")


def test_streak_grows_and_a_mistake_resets_it(client):
    for seed in (1, 2, 3):
        ex = generate("output_size", seed, 2)
        g = ex.givens
        right = (g["n"] + 2 * g["padding"] - g["dilation"] * (g["k"] - 1) - 1) // g["stride"] + 1
        page = soup(client.post("/practice/check", data=form_for(ex, [right])))
    assert score(page) == {"correct": 3, "attempts": 3, "streak": 3, "best": 3}
    ex = generate("output_size", 4, 2)
    page = soup(client.post("/practice/check", data=form_for(ex, [0])))
    assert score(page) == {"correct": 3, "attempts": 4, "streak": 0, "best": 3}


def test_showing_the_solution_ends_the_streak_and_the_exercise_no_longer_scores(client):
    ex = generate("output_size", 1, 2)
    g = ex.givens
    right = (g["n"] + 2 * g["padding"] - g["dilation"] * (g["k"] - 1) - 1) // g["stride"] + 1
    assert score(soup(client.post("/practice/check", data=form_for(ex, [right]))))["streak"] == 1
    peeked = generate("output_size", 2, 2)
    g = peeked.givens
    right = (g["n"] + 2 * g["padding"] - g["dilation"] * (g["k"] - 1) - 1) // g["stride"] + 1
    page = soup(client.get("/practice?kind=output_size&level=2&seed=2&solution=all"))
    assert score(page) == {"correct": 1, "attempts": 1, "streak": 0, "best": 1}
    page = soup(client.post("/practice/check", data=form_for(peeked, [right])))
    assert "is-correct" in page.select_one("#practice-verdict")["class"]
    assert score(page) == {"correct": 1, "attempts": 1, "streak": 0, "best": 1}
    # the solution of a solved exercise costs nothing
    assert score(soup(client.get("/practice?kind=output_size&level=2&seed=1&solution=1")))["best"] == 1


def test_a_tampered_score_cookie_is_a_fresh_score(client):
    client.cookies.set(COOKIE, "WzEwMCwxMDAsMTAwLDEwMCxbXV0.forged")
    assert score(soup(client.get("/practice?kind=relu&seed=1"))) == {"correct": 0, "attempts": 0, "streak": 0, "best": 0}


def test_reals_are_checked_within_the_stated_tolerance_and_accept_a_decimal_comma(client):
    ex = generate("softmax", 12, 2)
    z = np.array(ex.givens["logits"], float)
    q = np.exp(z) / np.exp(z).sum()
    typed = [f"{v:.2f}".replace(".", ",") for v in q]      # what a student in Chile types
    page = soup(client.post("/practice/check", data=form_for(ex, typed)))
    assert "is-correct" in page.select_one("#practice-verdict")["class"]
    off = list(q)
    off[1] += 0.02                                          # outside ± 0.01
    page = soup(client.post("/practice/check", data=form_for(ex, off)))
    labels = page.select(".practice-grid--vector label")
    assert ["is-wrong" in lab["class"] for lab in labels] == [i == 1 for i in range(len(q))]


def test_cross_entropy_of_the_true_class(client):
    ex = generate("cross_entropy", 6, 2)
    z = np.array(ex.givens["logits"], float)
    loss = -(z[ex.givens["label"]] - math.log(np.exp(z).sum()))
    page = soup(client.post("/practice/check", data=form_for(ex, [round(loss, 2)])))
    assert "is-correct" in page.select_one("#practice-verdict")["class"]
    page = soup(client.post("/practice/check", data=form_for(ex, [round(loss, 2) + 0.05])))
    assert "is-wrong" in page.select_one("#practice-verdict")["class"]


@pytest.mark.parametrize("cells, message", [
    (["", "1", "2", "3", "4", "5", "6", "7", "8"], "Fill in every cell: 1 of 9 are empty."),
    (["1", "2", "x", "3", "4", "5", "6", "7", "8"], "“x” is not a number (row 1, column 3)."),
    (["1", "2", "3", "nan", "4", "5", "6", "7", "8"], "“nan” is not a number (row 2, column 1)."),
    (["1", "2", "3", "4", "inf", "5", "6", "7", "8"], "“inf” is not a number (row 2, column 2)."),
])
def test_cells_that_are_not_numbers_are_named_and_nothing_is_counted(client, cells, message):
    ex = generate("relu", 2, 1)                                # 3×3
    data = form_for(ex, cells) | {"lang": "en"}
    r = client.post("/practice/check?lang=en", data=data)
    assert r.status_code == 422
    page = soup(r)
    assert text(page.select_one("#practice-message")).startswith(message)
    bad = [i for i, td in enumerate(page.select("table.practice-grid td")) if "is-bad" in td.get("class", [])]
    assert bad == [i for i, c in enumerate(cells) if c in ("", "x", "nan", "inf")]
    assert page.select_one("#practice-verdict") is None
    assert score(page)["attempts"] == 0
    # htmx gets the same as 200, so it swaps the message in
    assert client.post("/practice/check", data=data, headers=HX_EXERCISE).status_code == 200


@pytest.mark.parametrize("data", [
    {"kind": "nope", "level": "1", "seed": "1"},
    {"kind": "relu", "level": "7", "seed": "1"},
    {"kind": "relu", "level": "1", "seed": "-4"},
    {"kind": "relu", "level": "1"},
])
def test_a_broken_check_form_is_a_clear_422(client, data):
    r = client.post("/practice/check", data=data)
    assert r.status_code == 422
    assert soup(r).select_one("main")


def test_too_many_checks_are_slowed_down(client):
    ex = generate("output_size", 1, 1)
    codes = [client.post("/practice/check", data=form_for(ex, [1])).status_code for _ in range(12)]
    assert codes[:10] == [200] * 10 and codes[-1] == 429


# ------------------------------------------------------------------ the solution


def test_the_solution_comes_step_by_step(client):
    ex = generate("conv_output", 9, 1)
    right = conv_by_hand(ex.givens)
    page = soup(client.get("/practice?kind=conv_output&seed=9&level=1"))
    show = page.select_one("#practice-show-solution")
    assert show["hx-target"] == "#practice-solution"
    first = soup(client.get(show["hx-get"], headers=HX_SOLUTION))
    assert first.select_one("html") is None
    assert len(first.select(".practice-step")) == 1
    # step 1: the size formula with the numbers filled in
    assert text(first.select_one(".practice-step__text")).endswith(f"= {right.shape[0]}")
    nxt = first.select_one("#practice-next-step")["hx-get"]
    assert dict(parse_qsl(urlsplit(nxt).query))["solution"] == "2"
    second = soup(client.get(nxt, headers=HX_SOLUTION))
    steps = second.select(".practice-step")
    assert len(steps) == 2 and "is-current" in steps[1]["class"]
    # step 2 is the slides' written-out dot product for output (1, 1), window framed
    expr = text(steps[1].select_one(".practice-step__text"))
    pairs = re.findall(r"(\(?−?\d+\)?)·(\(?−?\d+\)?)", expr)
    x = np.array(ex.givens["x"][0])
    w = np.array(ex.givens["w"][0])
    assert [(number(a.strip("()")), number(b.strip("()"))) for a, b in pairs] == \
        list(zip(x[:3, :3].ravel().tolist(), w.ravel().tolist()))
    assert number(expr.rsplit("= ", 1)[1]) == right[0, 0]
    framed = steps[1].select("table.matrix--input td.is-window")
    assert sorted(number(td.get_text()) for td in framed) == sorted(x[:3, :3].ravel().tolist())
    filled = second.select("#practice-filled td")
    assert number(filled[0].get_text()) == right[0, 0] and filled[1].get_text() == ""
    # all steps: every output value, and the answer written out
    full = soup(client.get("/practice?kind=conv_output&seed=9&level=1&solution=all"))
    assert [number(td.get_text()) for td in full.select("#practice-filled td")] == right.ravel().tolist()
    assert full.select_one("#practice-next-step") is None and full.select_one(".practice-final")


def test_pool_solution_frames_the_window_and_the_winner(client):
    for seed in range(30):
        ex = generate("pool", seed, 2)
        if ex.givens["mode"] == "max":
            break
    page = soup(client.get(f"/practice?kind=pool&seed={seed}&level=2&solution=2"))
    cur = page.select_one(".practice-step.is-current")
    x = np.array(ex.givens["x"])
    k = ex.givens["size"]
    assert sorted(number(td.get_text()) for td in cur.select("td.is-window")) == sorted(x[:k, :k].ravel().tolist())
    assert number(cur.select_one("td.is-winner").get_text()) == x[:k, :k].max()


@pytest.mark.parametrize("bad", ["kind=nope", "level=0", "level=x", "seed=-1", "seed=abc", "seed=99999999999999999999",
                                 "solution=many"])
def test_bad_parameters_give_a_clear_page(client, bad):
    params = {"kind": "relu", "seed": "1", "level": "1", "lang": "en"} | dict([bad.split("=")])
    r = client.get("/practice", params=params)
    assert r.status_code == 422
    assert soup(r).select_one("main").get_text().strip()


# ------------------------------------------------------------------ the worksheet


def test_worksheet_has_n_exercises_and_a_key_on_its_own_page(client):
    page = soup(client.get("/practice/worksheet?seed=50&n=12&level=2"))
    items = page.select("#worksheet-list > li")
    assert len(items) == 12
    keys = page.select("#worksheet-key .worksheet-key__item")
    assert len(keys) == 12
    # every kind in turn: exercise 3 is the output size of seed 50, level 2
    ex = generate(KINDS[2], 50, 2)
    g = ex.givens
    assert number(keys[2].select_one("td").get_text()) == \
        (g["n"] + 2 * g["padding"] - g["dilation"] * (g["k"] - 1) - 1) // g["stride"] + 1
    # exercise 12 is kind 2 (conv_output) of the next seed
    ex = generate(KINDS[1], 51, 2)
    shown = [[number(td.get_text()) for td in tr.select("td")] for tr in keys[11].select("tr")]
    assert shown == conv_by_hand(ex.givens).tolist()
    # blank boxes to write in, no inputs
    assert not page.select("#worksheet-list input") and page.select("#worksheet-list table.worksheet-boxes td")
    css = (STATIC_DIR / "css" / "app.css").read_text()
    media = css[css.index("@media print"):]
    assert re.search(r"\.worksheet-key\s*\{[^}]*break-before:\s*page", media)


def test_worksheet_of_one_kind_and_its_limits(client):
    page = soup(client.get("/practice/worksheet?seed=7&n=3&kind=relu&level=1"))
    for i, key in enumerate(page.select("#worksheet-key .worksheet-key__item")):
        x = np.array(generate("relu", 7 + i, 1).givens["x"])
        assert [[number(td.get_text()) for td in tr.select("td")] for tr in key.select("tr")] == np.maximum(x, 0).tolist()
    r = client.get("/practice/worksheet?n=4", follow_redirects=False)
    assert r.status_code == 303 and "seed=" in r.headers["location"]
    for bad in ("n=0", "n=31", "n=x", "level=5", "kind=nope", "seed=-3"):
        assert client.get("/practice/worksheet", params={"seed": "1"} | dict([bad.split("=")])).status_code == 422


# ------------------------------------------------------------------ the JSON twin


def test_api_generate_is_reproducible_and_hides_the_answer(client):
    a = client.get("/api/practice", params={"kind": "pool", "seed": 77, "level": 3}).json()
    b = client.get("/api/practice", params={"kind": "pool", "seed": 77, "level": 3}).json()
    assert a == b and "answer" not in a
    assert a["answer_shape"] == list(generate("pool", 77, 3).answer.shape) and a["tolerance"] == 0
    assert a["givens"] != client.get("/api/practice", params={"kind": "pool", "seed": 78, "level": 3}).json()["givens"]
    assert client.get("/api/practice", params={"kind": "relu"}).json()["seed"] >= 0


def test_api_solution_and_check(client):
    sol = client.get("/api/practice/solution", params={"kind": "conv_value", "seed": 3, "level": 2}).json()
    g = sol["givens"]
    want = conv_by_hand(g)[g["row"], g["col"]]
    assert sol["answer"] == want and sol["steps"][-1]["text"].endswith(f"= {int(want)}".replace("-", "\u2212"))
    body = {"kind": "conv_value", "seed": 3, "level": 2, "answer": want}
    assert client.post("/api/practice/check", json=body).json() == {"correct": True, "wrong": False, "tolerance": 0.0}
    body["answer"] = want + 1
    assert client.post("/api/practice/check", json=body).json()["correct"] is False
    ex = generate("relu", 5, 2)
    ans = np.maximum(np.array(ex.givens["x"]), 0)
    ans[1, 2] += 1
    r = client.post("/api/practice/check", json={"kind": "relu", "seed": 5, "level": 2, "answer": ans.tolist()}).json()
    assert np.argwhere(np.array(r["wrong"])).tolist() == [[1, 2]]


@pytest.mark.parametrize("body, needle", [
    ({"kind": "relu", "seed": 5, "answer": [[1, 2, 3]]}, "shape"),
    ({"kind": "relu", "seed": 5, "answer": "12"}, "not a number"),
    ({"kind": "relu", "seed": 5, "answer": [[1, 2, "x"], [1, 2, 3], [1, 2, 3]]}, "answer[0][2] is not a number"),
    ({"kind": "relu", "seed": 5, "answer": [[1, 2], [3]]}, "rectangular"),
    ({"kind": "relu", "seed": 5, "answer": True}, "not a number"),
    ({"kind": "relu", "seed": 5, "answer": [[[1]]]}, "list of rows"),
    ({"kind": "nope", "seed": 5, "answer": 1}, "kind"),
    ({"kind": "relu", "seed": -1, "answer": 1}, "seed"),
    ({"kind": "relu", "seed": "5", "answer": 1}, "seed"),
    ({"kind": "relu", "seed": 5, "level": 4, "answer": 1}, "level"),
    ({"kind": "relu", "seed": 5, "answer": 1, "extra": 1}, "extra"),
    ({"kind": "relu", "seed": 5}, "answer"),
])
def test_api_check_refuses_bad_bodies_with_a_message(client, body, needle):
    r = client.post("/api/practice/check?lang=en", json=body)
    assert r.status_code == 422
    assert needle in r.json()["detail"]


@pytest.mark.parametrize("raw", ['{"kind": "softmax", "seed": 1, "answer": [NaN, 0, 0]}',
                                 '{"kind": "softmax", "seed": 1, "answer": [Infinity, 0, 0]}'])
def test_api_check_refuses_nan_and_infinity(client, raw):
    r = client.post("/api/practice/check?lang=en", content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422)
    assert "finite" in r.json()["detail"] or "JSON" in r.json()["detail"]


def test_api_generate_refuses_bad_queries(client):
    for q in ("kind=nope", "level=9", "seed=-2", "seed=x"):
        r = client.get(f"/api/practice?{q}&lang=en")
        assert r.status_code == 422 and r.json()["detail"]


@pytest.mark.parametrize("kind, level", [("conv_value", 1), ("conv_value", 2), ("pool", 2), ("pool", 3)])
def test_the_solution_opens_the_same_numbers_in_the_lessons_stepper(client, kind, level):
    """The stepper computes the asked cell itself: its value must be the exercise's answer."""
    for seed in range(4):
        ex = generate(kind, seed, level)
        page = soup(client.get(f"/practice?kind={kind}&level={level}&seed={seed}&solution=all"))
        stepper = soup(client.get(page.select_one("#practice-stepper-link")["href"]))
        value = number(stepper.select_one("#conv-status strong, #pool-status strong").get_text())
        if kind == "conv_value":
            assert value == conv_by_hand(ex.givens)[ex.givens["row"], ex.givens["col"]]
        else:
            x = np.array(ex.givens["x"], float)
            k = ex.givens["size"]
            window = x[:k, :k]
            assert value == (window.max() if ex.givens["mode"] == "max" else window.mean())


def test_two_channel_exercises_have_no_stepper_link(client):
    page = soup(client.get("/practice?kind=conv_output&level=3&seed=1&solution=all"))
    assert page.select_one("#practice-stepper-link") is None
