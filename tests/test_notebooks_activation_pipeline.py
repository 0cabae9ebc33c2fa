"""“Open as notebook” for /activation and /pipeline (app/notebooks/activation.py, pipeline.py).

For each page: one notebook runs in a real kernel; three random states' notebooks (run in
process) give the page's numbers; a state the page refuses is refused with the page's message;
the page links to the notebook of its current state; the markdown follows the language.

/pipeline has a JSON twin (GET /api/pipeline) and the notebooks are compared with it. /activation
has none: its notebooks are compared with an independent NumPy computation of the page's map and
with the numbers the page's HTML shows (the cells' titles).
"""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import pytest
from notebookrun import in_kernel, in_process, outputs_text, parse
from pagecheck import soup, text, translated

from cnnlab.core import kernels
from cnnlab.core.datasets import load

HX = {"HX-Request": "true"}
DONE = "NumPy and the engine both give the page's numbers."
FUNCTIONS = ("relu", "sigmoid", "tanh", "leaky_relu")


def number(s: str) -> float:
    """A number as a page writes it, in either language (0,47 or 0.47, 6.465e−5)."""
    return float(s.replace("\u2212", "-").replace(",", "."))


def notebook(client, page: str, query: str):
    response = client.get(f"/notebook/{page}?{query}")
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("application/x-ipynb+json")
    return parse(response.content)


def markdown(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


# ============================================================================ /activation


def independent_activation(typed: np.ndarray, fn: str, relu: bool) -> tuple[np.ndarray, np.ndarray]:
    """The page's map and its image under ``fn``, computed here from the lesson's rules: ReLU on
    the input when asked; a map with no negative value gets b = −(its mean, rounded half up)."""
    x = np.asarray(typed, dtype=np.float64)
    if relu:
        x = np.maximum(x, 0)
    elif x.min() >= 0 and x.max() > 0:
        x = x - np.floor(x.mean() + 0.5)
    y = {"relu": lambda: np.maximum(x, 0), "leaky_relu": lambda: np.where(x > 0, x, 0.1 * x),
         "sigmoid": lambda: 1 / (1 + np.exp(-x)), "tanh": lambda: np.tanh(x)}[fn]()
    return x, y


def html_table(page, selector: str) -> np.ndarray:
    return np.array([[number(td["title"]) for td in tr.select("td")] for tr in page.select_one(selector).select("tr")])


def test_activation_notebook_runs_in_a_kernel(client, tmp_path):
    # The slides' map has no negative value: the notebook adds the page's bias, then leaky ReLU.
    nb = notebook(client, "activation", "input=seed&fn=leaky_relu")
    in_kernel(nb, str(tmp_path))
    assert translated(DONE) in outputs_text(nb)
    assert all(not any(o.get("output_type") == "error" for o in c.get("outputs", []))
               for c in nb.cells if c.cell_type == "code")


def _activation_states(rng) -> list[tuple[dict, np.ndarray]]:
    """Three states: a typed grid (negatives, decimals), /conv's feature map, the slides' matrix."""
    fns = [str(fn) for fn in rng.permutation(FUNCTIONS)]
    h, w = rng.integers(2, 6, size=2)
    grid = rng.integers(-40, 41, size=(h, w)) / 4  # quarters: decimals, exact in binary
    grid_text = ";".join(",".join(f"{v:g}" for v in row) for row in grid)
    preset = str(rng.choice(["laplacian", "sobel_x", "identity", "box_blur"]))
    conv = kernels.SEED_INPUT.astype(np.float64)
    k = kernels.preset(preset).astype(np.float64)
    fmap = np.array([[np.sum(conv[r:r + 3, c:c + 3] * k) for c in range(3)] for r in range(3)])
    relu = bool(rng.integers(2))
    return [
        ({"input": "grid", "grid": grid_text, "fn": fns[0]}, grid),
        ({"input": "conv", "from": urlencode({"preset": "seed", "kernel": preset}), "fn": fns[1],
          **({"relu": "1"} if relu else {})}, fmap),
        ({"input": "seed", "fn": fns[2], **({"relu": "1"} if not relu else {})}, kernels.SEED_INPUT),
    ]


def test_activation_notebooks_give_the_pages_numbers(client):
    for params, typed in _activation_states(np.random.default_rng(16)):
        fn, relu = params["fn"], params.get("relu") == "1"
        ns = in_process(notebook(client, "activation", urlencode(params)))
        x, y = independent_activation(typed, fn, relu)
        np.testing.assert_allclose(ns["x"][0], x, rtol=1e-12, atol=1e-12)
        for name in ("y_numpy", "y_engine"):
            np.testing.assert_allclose(ns[name][0], y, rtol=1e-9, atol=1e-12, err_msg=f"{params} {name}")
        np.testing.assert_allclose(ns["PAGE"]["after"][0], y, rtol=1e-9, atol=1e-12)
        # The JSON twin, with the same query.
        twin = client.get("/api/activation", params=params).json()
        np.testing.assert_allclose(ns["x"], twin["input"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ns["y_numpy"], twin["output"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ns["y_engine"], twin["output"], rtol=1e-9, atol=1e-12)
        assert ns["y0"] == pytest.approx(y[0, 0], rel=1e-9, abs=1e-12)
        # What the page's HTML shows (four decimals at most).
        page = soup(client.get("/activation", params={**params, "lang": "en"}))
        np.testing.assert_allclose(html_table(page, ".act-before"), ns["x"][0], atol=5e-5)
        np.testing.assert_allclose(html_table(page, ".act-after"), ns["y_engine"][0], atol=5e-5, rtol=1e-3)


def test_activation_refusals_are_the_pages(client):
    for params in ({"fn": "softplus"}, {"input": "grid", "grid": "1,x"}, {"input": "conv"}):
        page = soup(client.get("/activation", params=params))
        message = text(page.select_one(".error-list li"))
        response = client.get("/notebook/activation", params=params)
        assert response.status_code == 422
        assert message in text(soup(response))
        twin = client.get("/api/activation", params=params)
        assert twin.status_code == 422 and message in twin.json()["detail"]
    response = client.get("/notebook/activation", params={"fn": "softplus"})
    assert translated("There is no activation called “%(name)s”: choose relu, sigmoid, tanh or leaky_relu.",
                      name="softplus") in text(soup(response))


def test_activation_page_links_to_its_notebook(client):
    params = {"input": "grid", "grid": "3,-1;-2,0.5", "fn": "tanh"}
    page = soup(client.get("/activation", params=params))
    href = page.select_one("#act-lab a.notebook-link[download]")["href"]
    assert href.startswith("/notebook/activation?")
    ns = in_process(parse(client.get(href).content))
    np.testing.assert_allclose(ns["y_engine"][0], html_table(page, ".act-after"), atol=5e-5)
    # The htmx fragment carries the link of the new state; a refused state has none.
    fragment = soup(client.get("/activation", params={"fn": "sigmoid"}, headers=HX))
    assert fragment.select_one("#act-lab a.notebook-link")["href"] == "/notebook/activation?input=example&fn=sigmoid"
    assert soup(client.get("/activation", params={"fn": "softplus"})).select_one("a.notebook-link") is None


def test_activation_notebook_language(client):
    es, en = (markdown(notebook(client, "activation", f"input=seed&fn=leaky_relu{q}")) for q in ("", "&lang=en"))
    assert "# ReLU y otras funciones de activación" in es and "Aquí la pendiente para los valores negativos" in es
    assert "El mapa entero con NumPy" in es
    assert "# ReLU and other activation functions" in en and "Here the slope for negative values" in en
    assert "The whole map with NumPy" in en and "El mapa" not in en


# ============================================================================ /pipeline

PIPELINE_KERNEL_QUERY = "index=7&label=3&lr=0.5&weight=2-0-2&show=conv-1-0-7"


def test_pipeline_notebook_runs_in_a_kernel(client, tmp_path):
    nb = notebook(client, "pipeline", PIPELINE_KERNEL_QUERY)
    in_kernel(nb, str(tmp_path))
    out = outputs_text(nb)
    assert translated(DONE) in out
    assert "smooth" in out  # the central-difference check ran and asserted


def _pipeline_states(rng) -> list[dict]:
    N = len(load("digits").y_test)
    kinds = rng.permutation(["conv", "relu", "pool", "logit", "prob", "loss"])[:3]
    states = []
    for n, kind in enumerate(kinds):
        q = {"index": str(rng.integers(N))} if n else {"image": "digit"}  # one picture, two held-out digits
        if rng.integers(2):
            q["label"] = str(rng.integers(10))
        q["lr"] = str(rng.choice(["0.001", "0.01", "0.5", "1", "3.7"]))
        q["weight"] = "-".join(str(v) for v in rng.integers(0, 3, size=3))
        f, r, c = rng.integers(0, 3), rng.integers(0, 8), rng.integers(0, 8)
        q["show"] = {"conv": f"conv-{f}-{r}-{c}", "relu": f"relu-{f}-{r}-{c}", "pool": f"pool-{f}-{r // 2}-{c // 2}",
                     "logit": f"logit-{r}", "prob": f"prob-{c}", "loss": "loss"}[kind]
        states.append(q)
    return states


def assert_pipeline_numbers(ns: dict, body: dict, show: str | None = None) -> None:
    w = body["weight"]
    pairs = [("z", body["logits"]), ("z_e", body["logits"]), ("q", body["probabilities"]),
             ("q_e", body["probabilities"]), ("loss", body["loss"]), ("loss_e", body["loss"]),
             ("grad", w["grad"]), ("grad_e", w["grad"]), ("sgd_new", w["sgd"]["new"]),
             ("m_hat", w["adam"]["m_hat"]), ("v_hat", w["adam"]["v_hat"])]
    for name, expected in pairs:
        np.testing.assert_allclose(ns[name], expected, rtol=1e-9, atol=1e-12, err_msg=name)
    for name in ("adam_step", "adam_new"):
        np.testing.assert_allclose(ns[name], w["adam"][name.split("_")[1]], rtol=1e-8, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(ns["x"], body["x"], rtol=0, atol=0)
    np.testing.assert_allclose(ns["dw_e"], body["dw"], rtol=1e-9, atol=1e-12)
    assert ns["target"] == body["target"]
    if show:
        kind, *at = show.split("-")
        at = tuple(int(v) for v in at)
        expected = {"conv": lambda: body["conv"][at[0]][at[1]][at[2]], "relu": lambda: body["relu"][at[0]][at[1]][at[2]],
                    "pool": lambda: body["pool"][at[0]][at[1]][at[2]], "logit": lambda: body["logits"][at[0]],
                    "prob": lambda: body["probabilities"][at[0]], "loss": lambda: body["loss"]}[kind]()
        assert ns["shown"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_pipeline_notebooks_equal_the_json_twin(client):
    for params in _pipeline_states(np.random.default_rng(16)):
        query = urlencode(params)
        ns = in_process(notebook(client, "pipeline", query))
        body = client.get(f"/api/pipeline?{query}").json()
        assert_pipeline_numbers(ns, body, params["show"])
        if ns["smooth"]:
            assert ns["numeric"] == pytest.approx(body["weight"]["grad"], rel=1e-4, abs=1e-6)


def test_pipeline_refusals_are_the_pages(client):
    N = len(load("digits").y_test)
    for params in ({"index": "9999"}, {"weight": "9-9-9"}, {"lr": "0"}, {"image": "no-such-picture"}):
        page = soup(client.get("/pipeline", params=params))
        message = text(page.select_one("#pipeline-problems li"))
        response = client.get("/notebook/pipeline", params=params)
        assert response.status_code == 422
        assert message in text(soup(response))
        assert page.select_one("a.notebook-link") is None
    response = client.get("/notebook/pipeline", params={"index": "9999"})
    assert translated("The digit must be a whole number from 0 to %(max)s.", max=N - 1) in text(soup(response))


def test_pipeline_page_links_to_its_notebook(client):
    hrefs = {}
    page = soup(client.get("/pipeline", params={"index": "12", "lr": "0.5", "show": "prob-3"}))
    hrefs["page"] = page.select_one("#pipeline-lab #pl-notebook a.notebook-link[download]")["href"]
    # A clicked number (explain) and a clicked weight (backprop) send an out-of-band copy of the link.
    explain = soup(client.get("/pipeline", params={"index": "12", "lr": "0.5", "show": "loss", "weight": "1-0-2"},
                              headers={**HX, "HX-Target": "pipeline-explain"}))
    hrefs["explain"] = explain.select_one('#pl-notebook[hx-swap-oob="true"] a.notebook-link')["href"]
    backprop = soup(client.get("/pipeline", params={"index": "12", "lr": "0.5", "show": "loss", "weight": "2-2-1"},
                               headers={**HX, "HX-Target": "pipeline-backprop"}))
    hrefs["backprop"] = backprop.select_one('#pl-notebook[hx-swap-oob="true"] a.notebook-link')["href"]
    assert hrefs == {"page": "/notebook/pipeline?index=12&lr=0.5&show=prob-3",
                     "explain": "/notebook/pipeline?index=12&lr=0.5&show=loss&weight=1-0-2",
                     "backprop": "/notebook/pipeline?index=12&lr=0.5&show=loss&weight=2-2-1"}
    ns = in_process(parse(client.get(hrefs["backprop"]).content))
    body = client.get("/api/pipeline?" + hrefs["backprop"].split("?", 1)[1]).json()
    assert_pipeline_numbers(ns, body, "loss")


def test_pipeline_notebook_language(client):
    es, en = (markdown(notebook(client, "pipeline", f"show=loss{q}")) for q in ("", "&lang=en"))
    assert "# La red completa, número por número" in es and "Un paso de Adam desde cero" in es
    assert "Una comprobación del gradiente por diferencias centrales" in es
    assert "# The whole network, number by number" in en and "One Adam step from a fresh start" in en
    assert "A check of the gradient by central differences" in en and "Paso 1" not in en
