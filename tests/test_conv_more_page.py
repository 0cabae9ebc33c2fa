"""/conv's kinds beyond the slides over HTTP (issue 14): the 1×1, the depthwise-separable and the
transposed convolution, as pages and as JSON twins whose numbers are core/conv_more.py's; bad
input refused with a 422 and a message in Spanish or English; today's /conv addresses unchanged;
the notebook refusing what it cannot write out."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
from cnnlab.app.conv_state import SEED3_INPUT
from cnnlab.core import kernels
from cnnlab.core.conv import format_number
from cnnlab.core.conv_more import (
    conv_transpose_forward,
    pointwise_forward,
    pointwise_step,
    separable_counts,
    separable_forward,
    separable_step,
    transpose_step,
)
from pagecheck import soup, text, translated

SEED3 = SEED3_INPUT.tolist()
PW_KERNEL = np.array([[1, 1, 1], [1, 0, -1]])  # the 1×1 default: "1|1/0/-1"
DW = np.stack([kernels.PRESETS[n] for n in ("sobel_x", "sobel_y", "laplacian")])  # the separable default
PW = np.array([[1, 1, 1], [1, 0, -1]])
TK = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def status_value(page) -> str:
    return text(page.select_one("#conv-status strong"))


def query(response) -> dict:
    return dict(parse_qsl(urlsplit(response.headers["location"]).query))


# ============================================================================== the pages and their twins


@pytest.mark.parametrize("step", [0, 37])
def test_pointwise_page_and_twin_give_cores_numbers(client, step):
    r = client.get(f"/conv?kind=pointwise&bias=1,-2&step={step}")
    assert r.status_code == 200
    page = soup(r)
    want = pointwise_step(SEED3_INPUT, PW_KERNEL, np.array([1, -2]), step=step)
    assert status_value(page) == format_number(want.value)
    # the written sum on one line: w_1·x_1 + … + w_C·x_C + b
    assert [text(p) for p in page.select("#conv-sum .sum-line")] == [want.text]
    assert page.select_one("#conv-kind-panel h2").get_text() == translated("1×1 convolution: mixing channels")
    twin = client.post("/api/conv/pointwise/step", json={"input": SEED3, "weights": PW_KERNEL.tolist(), "bias": [1, -2],
                                                          "step": step}).json()
    assert (twin["value"], twin["text"], twin["steps"]) == (want.value, want.text, 2 * 25)
    whole = client.post("/api/conv/pointwise", json={"input": SEED3, "weights": PW_KERNEL.tolist(), "bias": [1, -2]}).json()
    assert whole["output"] == pointwise_forward(SEED3_INPUT[None], PW_KERNEL, [1, -2])[0].astype(int).tolist()


@pytest.mark.parametrize("step", [4, 30])  # a depthwise step, then a pointwise one
def test_separable_page_and_twin_give_cores_numbers(client, step):
    page = soup(client.get(f"/conv?kind=separable&dbias=1,0,-1&bias=2,0&step={step}&lang=en"))
    want = separable_step(SEED3_INPUT, DW, np.array([1, 0, -1]), PW, np.array([2, 0]), step=step)
    assert want.phase == ("depthwise" if step < 27 else "pointwise")
    assert status_value(page) == format_number(want.inner.value)
    assert text(page.select_one("#conv-sum .sum-line")).endswith(want.inner.text.split(" = ")[-1])
    assert text(page.select_one("#conv-sum .sum-expr")) == want.inner.text
    # the parameter counts beside the full convolution's, with numbers
    counts = separable_counts(C=3, F=2, HH=3, WW=3, Ho=3, Wo=3)
    table = text(page.select_one(".conv-kind__table"))
    assert "(3·3·3 + 1)·2 = 56" in table and "3·3·3 + 3 + (3 + 1)·2 = 38" in table
    assert counts["params_full"] == 56 and counts["params_separable"] == 38
    body = {"input": SEED3, "depthwise": DW.tolist(), "depthwise_bias": [1, 0, -1], "pointwise": PW.tolist(),
            "pointwise_bias": [2, 0]}
    twin = client.post("/api/conv/separable/step", json={**body, "step": step}).json()
    assert (twin["phase"], twin["value"], twin["text"]) == (want.phase, want.inner.value, want.inner.text)
    whole = client.post("/api/conv/separable", json=body).json()
    out, d = separable_forward(SEED3_INPUT[None], DW, [1, 0, -1], PW, [2, 0])
    assert whole["output"] == out[0].astype(int).tolist() and whole["depthwise_output"] == d[0].astype(int).tolist()
    assert whole["counts"]["params_separable_text"] == counts["params_separable_text"]


def test_transposed_page_and_twin_give_cores_numbers(client):
    step = 7
    page = soup(client.get(f"/conv?kind=transposed&stride=2&padding=1&bias=3&step={step}"))
    x = kernels.SEED_INPUT
    want = transpose_step(x[None], TK[None, None], np.array([3]), stride=2, padding=1, step=step)
    assert status_value(page) == format_number(want.input)
    # the output grid holds the running values where the steps so far reached, the window marked
    cells = page.select(".matrix--output td")
    assert len(cells) == 9 * 9
    for t in want.terms:
        if t.inside:
            td = cells[t.out_row * 9 + t.out_col]
            assert "is-current" in td["class"] and text(td) == format_number(t.after)
    pieces = [text(p) for p in page.select("#conv-sum .sum-scatter .term")]
    assert pieces[0] == f"{format_number(want.terms[0].before)} + {want.input}·1 = {format_number(want.terms[0].after)}"
    assert "(1·2 − 1, 2·2 − 1) = (1, 3)" in text(page.select_one("#conv-sum .sum-head"))
    assert "(5 − 1)·2 − 2·1 + 3 = 9" in text(page.select_one("#conv-kind-panel"))
    body = {"input": x.tolist(), "kernel": TK.tolist(), "bias": [3], "stride": 2, "padding": 1}
    twin = client.post("/api/conv/transposed/step", json={**body, "step": step}).json()
    assert twin["running"] == want.running and twin["top"] == want.top == 1
    whole = client.post("/api/conv/transposed", json=body).json()
    assert whole["output"] == conv_transpose_forward(x[None, None], TK[None, None], [3], stride=2, padding=1)[0].astype(int).tolist()
    assert whole["rows_formula"] == "(5 − 1)·2 − 2·1 + 3 = 9"
    # the last step: the running output is the whole output, as the result picture shows
    last = client.post("/api/conv/transposed/step", json={**body, "step": 24}).json()
    assert last["running"] == whole["output"][0]


def test_separable_depthwise_picture_and_result(client):
    r = client.get("/conv/output.png?kind=separable&part=depthwise&filter=2&res=work")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert client.get("/conv/output.png?preset=seed&part=depthwise").status_code == 422


# ============================================================================== refusals


@pytest.mark.parametrize("lang", ["es", "en"])
@pytest.mark.parametrize("params, field, msgid, values", [
    ("kind=bogus", "kind", "There is no kind of convolution called “%(name)s”: choose conv, pointwise, separable or "
     "transposed.", {"name": "bogus"}),
    ("kind=pointwise&kernel=sobel_x", "kernel", "A 1×1 convolution has 1×1 kernels (one weight per channel); this "
     "kernel is %(dims)s.", {"dims": "3×3"}),
    ("kind=separable&pointwise=1,2", "pointwise", "Pointwise filter %(f)s has %(got)s weights but the input has %(c)s "
     "channels: give one weight per channel.", {"f": 1, "got": 2, "c": 3}),
    ("kind=transposed&padding=same", "padding", "The transposed convolution takes a padding from 0 to %(max)s "
     "(“same” is for the ordinary convolution).", {"max": 8}),
    ("kind=transposed&image=camera&size=30&stride=8", "fit", "The output would be %(h)s×%(w)s; the stepper shows at "
     "most %(max)s rows and columns. Use a smaller stride, kernel or working size.", {"h": 235, "w": 235, "max": 96}),
])
def test_bad_settings_are_refused_in_the_pages_language(client, lang, params, field, msgid, values):
    r = client.get(f"/conv?{params}&lang={lang}")
    assert r.status_code == 422
    item = soup(r).select_one(f'#conv-problems li[data-field="{field}"]')
    assert text(item) == translated(msgid, lang, **values)


@pytest.mark.parametrize("lang", ["es", "en"])
def test_the_twins_refuse_with_a_message(client, lang):
    r = client.post(f"/api/conv/separable?lang={lang}", json={"input": SEED3, "depthwise": [[[1]]] * 2, "pointwise": [[1, 1, 1]]})
    assert r.status_code == 422
    assert r.json()["detail"] == translated("The input has %(c)s channels but there are %(k)s depthwise kernels: give "
                                            "one kernel per channel.", lang, c=3, k=2)
    r = client.post(f"/api/conv/transposed?lang={lang}", json={"input": [[1, 2]], "kernel": [[1]], "padding": 1})
    assert r.status_code == 422 and "(1 − 1)·1 − 2·1 + 1 = −1" in r.json()["detail"]
    r = client.post(f"/api/conv/transposed?lang={lang}", json={"input": [[1] * 40] * 40, "kernel": [[1]], "stride": 64})
    assert r.status_code == 422
    assert r.json()["detail"].startswith(translated("The output would be too large: %(formula)s rows or columns, at most "
                                                    "%(max)s. Use a smaller stride or input.", lang,
                                                    formula="(40 − 1)·64 − 2·0 + 1 = 2497", max=1024))
    r = client.post(f"/api/conv/pointwise/step?lang={lang}", json={"input": SEED3, "weights": [[1, 1]], "step": 0})
    assert r.status_code == 422 and "2" in r.json()["detail"]
    r = client.post(f"/api/conv/pointwise/step?lang={lang}", json={"input": SEED3, "weights": [[1, 1, 1]], "step": 25})
    assert r.status_code == 422


def test_openapi_describes_the_twins(client):
    paths = client.get("/openapi.json").json()["paths"]
    for kind in ("pointwise", "separable", "transposed"):
        for path in (f"/api/conv/{kind}", f"/api/conv/{kind}/step"):
            assert paths[path]["post"]["description"], path
            assert "422" in paths[path]["post"]["responses"], path


# ============================================================================== today's addresses, the form, the notebook


def test_todays_addresses_are_unchanged(client):
    r = client.get("/conv?source=seed&kind=conv&kind_was=conv&kernel=seed&stride=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/conv?preset=seed&kernel=seed"
    page = soup(client.get("/conv?preset=seed"))
    assert status_value(page) == "78"
    assert page.select_one("#conv-kind-panel") is None
    assert page.select_one('#conv-form select[name="kind"] option[selected]')["value"] == "conv"


def test_changing_the_kind_in_the_form_starts_from_its_defaults(client):
    r = client.get("/conv?source=seed&kind=pointwise&kind_was=conv&kernel=seed&ksize=3&filters=1&stride=1",
                   follow_redirects=False)
    assert query(r) == {"preset": "seed3", "kind": "pointwise", "kernel": "1|1/0/-1"}
    r = client.get("/conv?source=seed3&kind=transposed&kind_was=pointwise&kernel=1|1/0/-1&stride=1",
                   follow_redirects=False)
    assert query(r) == {"preset": "seed", "kind": "transposed", "kernel": "1,2,1;2,4,2;1,2,1", "stride": "2", "padding": "1"}
    r = client.get("/conv?source=seed3&kind=separable&kind_was=pointwise&kernel=1|1/0/-1", follow_redirects=False)
    assert query(r) == {"preset": "seed3", "kind": "separable", "kernel": "-1,0,1;-2,0,2;-1,0,1/-1,-2,-1;0,0,0;1,2,1/"
                        "0,1,0;1,-4,1;0,1,0", "pointwise": "1,1,1|1,0,-1"}


def test_the_notebook_writes_the_1x1_and_refuses_the_others(client):
    assert client.get("/notebook/conv?kind=pointwise&step=3").status_code == 200
    for kind in ("separable", "transposed"):
        r = client.get(f"/notebook/conv?kind={kind}")
        assert r.status_code == 422
        assert translated("The notebook covers the ordinary and the 1×1 convolution; for the depthwise-separable and the "
                          "transposed convolution use the stepper and its JSON twin (/api/conv/%(kind)s).", kind=kind) in r.text
