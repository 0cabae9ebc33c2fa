""""Open as notebook" on /conv and /pool (app/notebooks/conv.py, pool.py): the notebook runs in a
real kernel, its numbers equal the JSON twin's (/api/conv/step, /api/conv, /api/pool) on random
states, it refuses what the page refuses with the page's message, the page links to it from the
stepper (so the link follows every step), and its explanations are in the page's language."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
import pytest
from notebookrun import in_kernel, in_process, outputs_text, parse
from pagecheck import soup, translated

import cnnlab

DONE = "NumPy and the engine both give the page's numbers."
MODES = {"xcorr": "cross-correlation", "conv": "convolution"}


def notebook(client, url: str):
    response = client.get(url)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("application/x-ipynb+json")
    return parse(response.content)


def markdown(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


def code(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")


def post(client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------- (1) in a real kernel ----------


def test_the_seed_convolution_at_step_1_runs_in_a_kernel(client, tmp_path):
    nb = notebook(client, "/notebook/conv?preset=seed&step=1")
    # The current step's dot product written as code, with the page's written sum beside it.
    source = code(nb)
    assert "window = xp[0, r0:r0 + 3, c0:c0 + 3]" in source
    assert "# 40·(−2) + 41·(−1) + 45·0 + 40·(−1) + 42·1 + 46·1 + 46·0 + 50·1 + 55·2 = 87" in source
    assert "cnnlab.conv_step(" in source and "cnnlab.conv_forward(" in source
    in_kernel(nb, str(tmp_path))
    printed = outputs_text(nb)
    assert translated(DONE) in printed
    assert "87" in printed


def test_a_pooling_runs_in_a_kernel(client, tmp_path):
    nb = notebook(client, "/notebook/pool?input=seed&kind=max&size=2&stride=1&step=5")
    assert "cnnlab.pool_step(" in code(nb) and "cnnlab.pool_forward(" in code(nb)
    in_kernel(nb, str(tmp_path))
    assert translated(DONE) in outputs_text(nb)


@pytest.mark.parametrize("step, value", [(0, 78), (1, 87)])
def test_the_seed_notebook_gives_the_slides_numbers(client, step, value):
    ns = in_process(notebook(client, f"/notebook/conv?preset=seed&step={step}"))
    assert ns["value"] == value and ns["step"].value == value and ns["PAGE"]["step_value"] == value
    assert ns["out"][0, 0, :2].tolist() == [78, 87] and ns["out"].shape == (1, 3, 3)


# ---------------------------------------------------------------- (2) against the JSON twin ----------


def _rows(a: np.ndarray) -> str:
    return ";".join(",".join(repr(v) if isinstance(v, float) else str(v) for v in row) for row in a.tolist())


def random_conv_state(rng: np.random.Generator, variant: int) -> tuple[dict, dict]:
    """The page's query and the same state as a body of /api/conv (input, kernel F×C×HH×WW, …)."""
    params: dict[str, str] = {}
    body: dict = {}
    if variant == 0:  # a typed grid, random whole kernels, dilation and a true convolution
        H, W = rng.integers(5, 9, size=2)
        grid = rng.integers(-20, 51, size=(H, W))
        params["grid"] = _rows(grid)
        body["input"] = grid.tolist()
        C, F, K = 1, int(rng.integers(1, 4)), int(rng.choice([2, 3]))
        kernel = rng.integers(-3, 4, size=(F, C, K, K))
        params["kernel"] = "|".join(_rows(kernel[f, 0]) for f in range(F))
        params["padding"] = str(rng.choice(["1", "same"]))
        params["dilation"] = "2"
        params["stride"] = str(rng.integers(1, 3))
        params["mode"] = "conv"
    elif variant == 1:  # a sample picture in gray, preset kernels, "same" padding
        params.update(image=str(rng.choice(["camera", "digit", "coffee"])), size=str(rng.integers(8, 15)), color="gray")
        C = 1
        names = [str(n) for n in rng.choice(["sobel_x", "laplacian", "gaussian", "emboss", "sharpen"], size=rng.integers(1, 3),
                                            replace=False)]
        kernel = np.stack([np.broadcast_to(cnnlab.preset(n), (C, 3, 3)) for n in names]).astype(float)
        params["kernel"] = "|".join(names)
        params["padding"] = str(rng.choice(["same", "2"]))
        params["stride"] = str(rng.integers(1, 4))
        params["mode"] = str(rng.choice(["xcorr", "conv"]))
    else:  # a colour picture, one random (decimal) kernel per channel, several filters
        params.update(image=str(rng.choice(["chelsea", "astronaut"])), size=str(rng.integers(8, 11)), color="rgb")
        C, F = 3, int(rng.integers(1, 3))
        kernel = np.round(rng.uniform(-2, 2, size=(F, C, 3, 3)), 1)
        params["kernel"] = "|".join("/".join(_rows(kernel[f, c]) for c in range(C)) for f in range(F))
        params["padding"] = "1"
        params["dilation"] = str(rng.integers(1, 3))
        params["stride"] = str(rng.integers(1, 3))
    if "image" in params:
        body.update(image_id=params["image"], size=int(params["size"]), color=params["color"])
    F = kernel.shape[0]
    if rng.random() < 0.7:
        bias = [float(np.round(rng.uniform(-5, 5), 2)) for _f in range(F)]
        params["bias"] = ",".join(repr(b) for b in bias)
        body["bias"] = bias
    if rng.random() < 0.5:
        params["relu"] = "1"
    padding = params.get("padding", "valid")
    body.update(kernel=kernel.tolist(), stride=int(params.get("stride", 1)), dilation=int(params.get("dilation", 1)),
                padding=padding if padding in ("valid", "same") else int(padding), mode=MODES[params.get("mode", "xcorr")])
    return params, body


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_random_convolutions_give_the_json_twins_numbers(client, variant):
    rng = np.random.default_rng(1600 + variant)
    params, body = random_conv_state(rng, variant)
    steps = post(client, "/api/conv/step", {**body, "step": 0})["steps"]
    step = int(rng.integers(steps))
    nb = notebook(client, "/notebook/conv?" + urlencode({**params, "step": str(step)}))
    ns = in_process(nb)

    twin_step = post(client, "/api/conv/step", {**body, "step": step})
    twin = np.array(post(client, "/api/conv", body)["output"], dtype=float)
    for got in (ns["value"], ns["step"].value, ns["PAGE"]["step_value"]):
        assert got == pytest.approx(twin_step["value"], rel=1e-9, abs=1e-9)
    assert ns["step"].text == twin_step["text"]
    for got in (ns["out"], ns["engine_out"], ns["PAGE"]["output"]):
        np.testing.assert_allclose(got, twin, rtol=1e-9, atol=1e-9)
    if params.get("relu"):
        for got in (ns["out_relu"], ns["PAGE"]["output_relu"]):
            np.testing.assert_allclose(got, np.maximum(twin, 0), rtol=1e-9, atol=1e-9)
        assert ns["PAGE"]["step_relu"] == pytest.approx(max(twin_step["value"], 0))
    if params.get("mode") == "conv":
        assert "kernel = w[:, :, ::-1, ::-1]" in code(nb)


def random_pool_state(client, rng: np.random.Generator, variant: int) -> tuple[dict, np.ndarray, dict]:
    """The page's query, the input it pools (C, H, W) worked out independently, and /api/pool's settings."""
    if variant == 0:  # a typed grid with ties and negative values, overlapping windows, ReLU first
        H, W = rng.integers(4, 8, size=2)
        grid = rng.integers(-3, 6, size=(H, W))
        params = {"input": "grid", "grid": _rows(grid), "relu": "1", "kind": "max", "size": str(rng.integers(2, 4)),
                  "stride": str(rng.integers(1, 3))}
        x = np.maximum(grid, 0)[None]
    elif variant == 1:  # the feature map carried from /conv (two filters, decimal weights)
        grid = rng.integers(0, 10, size=(7, 6))
        kernel = np.round(rng.uniform(-1, 1, size=(2, 1, 3, 3)), 2)
        conv_query = urlencode({"grid": _rows(grid), "kernel": "|".join(_rows(kernel[f, 0]) for f in range(2))})
        params = {"input": "conv", "from": conv_query, "kind": "avg", "size": "2", "stride": "1"}
        x = np.array(post(client, "/api/conv", {"input": grid.tolist(), "kernel": kernel.tolist()})["output"])
    else:  # the slides' matrix, global average
        params = {"input": "seed", "kind": "global_avg", "size": "3", "stride": "2"}
        x = np.array(cnnlab.SEED_INPUT)[None]
    body = {"kind": params["kind"], "size": int(params["size"]), "stride": int(params["stride"])}
    return params, x, body


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_random_poolings_give_the_json_twins_numbers(client, variant):
    rng = np.random.default_rng(1700 + variant)
    params, x, body = random_pool_state(client, rng, variant)
    twin = np.array(post(client, "/api/pool", {"input": x.tolist(), **body})["output"], dtype=float)
    C, Ho, Wo = twin.shape
    step = int(rng.integers(C * Ho * Wo))
    ns = in_process(notebook(client, "/notebook/pool?" + urlencode({**params, "step": str(step)})))

    c, rest = divmod(step, Ho * Wo)
    row, col = divmod(rest, Wo)
    for got in (ns["value"], ns["step"].value, ns["PAGE"]["step_value"]):
        assert got == pytest.approx(twin[c, row, col], rel=1e-9, abs=1e-9)
    for got in (ns["out"], ns["engine_out"], ns["PAGE"]["output"]):
        np.testing.assert_allclose(got, twin, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ns["x"], x, rtol=1e-9, atol=1e-9)
    if body["kind"] == "max":
        # The winner is the window's first maximum in reading order.
        k, s = body["size"], body["stride"]
        window = x[c, row * s: row * s + k, col * s: col * s + k]
        i, j = np.unravel_index(np.argmax(window), window.shape)
        assert tuple(ns["winner"]) == (row * s + i, col * s + j) == tuple(ns["step"].winner)


# ---------------------------------------------------------------- (3) what the page refuses ----------


def test_a_convolution_the_page_refuses_is_refused_with_its_message(client):
    message = translated("The stride must be a whole number from %(min)s to %(max)s.", min=1, max=8)
    assert message.startswith("El stride")
    response = client.get("/notebook/conv?preset=seed&stride=9")
    assert response.status_code == 422
    assert message in soup(response).get_text()
    assert message in client.get("/conv?preset=seed&stride=9").text
    too_far = client.get("/notebook/conv?preset=seed&step=9")
    assert too_far.status_code == 422
    assert translated("There is no step %(step)s: with these settings there are %(n)s steps, numbered 0 to %(last)s.",
                      step=9, n=9, last=8) in soup(too_far).get_text()


def test_a_pooling_the_page_refuses_is_refused_with_its_message(client):
    response = client.get("/notebook/pool?kind=median")
    assert response.status_code == 422
    message = translated("The pooling must be “max”, “avg” or “global_avg”.")
    assert message != "The pooling must be “max”, “avg” or “global_avg”."
    assert message in soup(response).get_text()
    assert message in client.get("/pool?kind=median").text
    misfit = client.get("/notebook/pool?size=5")
    assert misfit.status_code == 422
    assert translated("The %(k)s×%(k)s window does not fit in the %(h)s×%(w)s input: choose a smaller window.",
                      k=5, h=4, w=4) in soup(misfit).get_text()


# ---------------------------------------------------------------- (4) the link on the page ----------


def _link(page, stepper: str):
    links = page.select(f"#{stepper} a.notebook-link[href][download]")
    assert len(links) == 1
    return links[0]["href"]


def test_the_conv_page_links_its_notebook_and_the_link_follows_the_step(client):
    page = soup(client.get("/conv?preset=seed"))
    href = _link(page, "conv-stepper")
    assert urlsplit(href).path == "/notebook/conv"
    assert dict(parse_qsl(urlsplit(href).query)) == {"preset": "seed", "kernel": "seed"}
    assert in_process(notebook(client, href))["value"] == 78
    # A step swaps only the stepper: its link now carries the step.
    fragment = client.get("/conv?preset=seed&kernel=seed&step=1", headers={"HX-Request": "true", "HX-Target": "conv-stepper"})
    href = _link(soup(fragment), "conv-stepper")
    assert dict(parse_qsl(urlsplit(href).query))["step"] == "1"
    assert in_process(notebook(client, href))["value"] == 87
    # A state the page refuses shows no link.
    assert not soup(client.get("/conv?preset=seed&stride=9")).select("a.notebook-link")


def test_the_pool_page_links_its_notebook_and_the_link_follows_the_step(client):
    query = urlencode({"input": "conv", "from": "preset=seed&kernel=sobel_x&padding=1", "kind": "max", "size": "2"})
    href = _link(soup(client.get(f"/pool?{query}&step=2")), "pool-stepper")
    assert urlsplit(href).path == "/notebook/pool"
    assert dict(parse_qsl(urlsplit(href).query))["step"] == "2"
    fragment = client.get(f"/pool?{query}&step=3", headers={"HX-Request": "true", "HX-Target": "pool-stepper"})
    href3 = _link(soup(fragment), "pool-stepper")
    assert dict(parse_qsl(urlsplit(href3).query))["step"] == "3"
    ns = in_process(notebook(client, href3))
    assert ns["step"].step == 3
    shown = soup(fragment).select_one("#pool-status strong").get_text()
    assert float(shown.replace(",", ".").replace("−", "-")) == pytest.approx(ns["PAGE"]["step_value"], abs=1e-4)
    assert not soup(client.get("/pool?kind=median")).select("a.notebook-link")


# ---------------------------------------------------------------- (5) the page's language ----------


def test_the_notebooks_speak_spanish_by_default_and_english_on_request(client):
    conv_es = markdown(notebook(client, "/notebook/conv?preset=seed&mode=conv"))
    assert "Kernels y convolución, paso a paso" in conv_es and "El paso actual a mano" in conv_es
    assert "Tamaño de la salida" in conv_es and "gira el kernel 180°" in conv_es
    assert "⌊(5 + 0 − 1·(3 − 1) − 1)/1⌋ + 1 = 3" in conv_es
    pool_es = markdown(notebook(client, "/notebook/pool?input=seed"))
    assert "Pooling, paso a paso" in pool_es and "Gana el valor más grande de la ventana" in pool_es

    conv_en = markdown(notebook(client, "/notebook/conv?preset=seed&mode=conv&lang=en"))
    assert "Kernels and convolution, step by step" in conv_en and "The current step by hand" in conv_en
    assert "flips the kernel 180°" in conv_en and "El paso" not in conv_en
    pool_en = markdown(notebook(client, "/notebook/pool?input=seed&lang=en"))
    assert "Pooling, step by step" in pool_en and "The window’s largest value wins" in pool_en
