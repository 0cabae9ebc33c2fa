"""The JSON API of the engine: the seed's example end to end, and bad input answered 4xx."""

from __future__ import annotations

import math

import pytest

SEED_INPUT = [
    [35, 40, 41, 45, 50],
    [40, 40, 42, 46, 52],
    [42, 46, 50, 55, 55],
    [48, 52, 56, 58, 60],
    [56, 60, 65, 70, 75],
]
SEED_KERNEL = [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]


def seed_valid_output() -> list[list[int]]:
    """The 3×3 valid cross-correlation worked out with plain Python sums."""
    return [
        [sum(SEED_INPUT[r + i][c + j] * SEED_KERNEL[i][j] for i in range(3) for j in range(3)) for c in range(3)]
        for r in range(3)
    ]


def test_seed_example_by_hand_is_78_and_87():
    out = seed_valid_output()
    # The slides' sums, term by term.
    assert 35 * -2 + 40 * -1 + 41 * 0 + 40 * -1 + 40 * 1 + 42 * 1 + 42 * 0 + 46 * 1 + 50 * 2 == out[0][0] == 78
    assert 40 * -2 + 41 * -1 + 45 * 0 + 40 * -1 + 42 * 1 + 46 * 1 + 46 * 0 + 50 * 1 + 55 * 2 == out[0][1] == 87


def test_conv_gives_the_seed_output(client):
    r = client.post("/api/conv", json={"input": SEED_INPUT, "kernel": SEED_KERNEL})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output_shape"] == [3, 3]
    assert body["output"] == seed_valid_output()
    assert all(type(v) is int for row in body["output"] for v in row)


def test_conv_step_writes_the_sum_like_the_slides(client):
    r0 = client.post("/api/conv/step", json={"input": SEED_INPUT, "kernel": SEED_KERNEL, "step": 0}).json()
    r1 = client.post("/api/conv/step", json={"input": SEED_INPUT, "kernel": SEED_KERNEL, "step": 1}).json()
    assert r0["text"] == "35·(−2) + 40·(−1) + 41·0 + 40·(−1) + 40·1 + 42·1 + 42·0 + 46·1 + 50·2 = 78"
    assert r1["text"] == "40·(−2) + 41·(−1) + 45·0 + 40·(−1) + 42·1 + 46·1 + 46·0 + 50·1 + 55·2 = 87"
    assert (r0["value"], r1["value"]) == (78, 87)
    assert (r1["filter"], r1["row"], r1["col"], r1["steps"]) == (0, 0, 1, 9)
    assert [t["product"] for t in r1["terms"]] == [-80, -41, 0, -40, 42, 46, 0, 50, 110]
    assert r1["channel_sums"] == [87] and r1["bias"] is None


def test_conv_step_agrees_with_conv_everywhere(client):
    body = {"input": SEED_INPUT, "kernel": SEED_KERNEL, "stride": 2, "padding": "same", "bias": [3]}
    full = client.post("/api/conv", json=body).json()
    Ho, Wo = full["output_shape"]
    for k in range(Ho * Wo):
        step = client.post("/api/conv/step", json={**body, "step": k}).json()
        assert step["value"] == full["output"][k // Wo][k % Wo]
        assert step["text"].endswith(f"+ 3 = {step['value']}".replace("-", "−"))


def test_rgb_input_with_several_filters(client):
    rgb = [[[c * 10 + r * 3 + q for q in range(4)] for r in range(4)] for c in range(3)]
    kernel = [[[[1, 0], [0, -1]]] * 3, [[[0, 1], [1, 0]]] * 3]
    body = {"input": rgb, "kernel": kernel, "bias": [1, -1]}
    full = client.post("/api/conv", json=body).json()
    assert full["output_shape"] == [2, 3, 3]
    expected = sum(rgb[c][1][1] * 0 + rgb[c][1][2] * 1 + rgb[c][2][1] * 1 + rgb[c][2][2] * 0 for c in range(3)) - 1
    assert full["output"][1][1][1] == expected
    step = client.post("/api/conv/step", json={**body, "step": 9 + 4}).json()
    assert (step["filter"], step["row"], step["col"], step["value"]) == (1, 1, 1, expected)
    assert len(step["channel_sums"]) == 3 and len(step["terms"]) == 12


def test_pool_and_softmax(client):
    x = [[1, 3, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]
    assert client.post("/api/pool", json={"input": x}).json() == {"output": [[6, 8], [3, 4]], "output_shape": [2, 2]}
    avg = client.post("/api/pool", json={"input": x, "kind": "avg"}).json()["output"]
    assert avg == [[15 / 4, 21 / 4], [8 / 4, 8 / 4]]
    assert client.post("/api/pool", json={"input": x, "kind": "global_avg"}).json()["output"] == [[sum(map(sum, x)) / 16]]
    logits = [2.0, 1.0, 0.1]
    body = client.post("/api/softmax", json={"logits": logits, "label": 0}).json()
    q = [math.exp(z) / sum(math.exp(v) for v in logits) for z in logits]
    assert body["probabilities"] == pytest.approx(q, rel=1e-12)
    assert body["cross_entropy"] == pytest.approx(-math.log(q[0]), rel=1e-12)
    assert client.post("/api/softmax", json={"logits": logits}).json()["cross_entropy"] is None


CONV = {"input": SEED_INPUT, "kernel": SEED_KERNEL}

BAD = [
    ("/api/conv", {"input": [[1, 2], [3]], "kernel": SEED_KERNEL}, "rectangular"),
    ("/api/conv", {"input": [[1, "a"], [1, 2]], "kernel": [[1]]}, "input[0][1]"),
    ("/api/conv", {"input": "abc", "kernel": [[1]]}, "input"),
    ("/api/conv", {"input": [[True, 1]], "kernel": [[1]]}, "input[0][0]"),
    ("/api/conv", {"input": [], "kernel": [[1]]}, "input"),
    ("/api/conv", {"input": [[[[1]]]], "kernel": [[1]]}, "input"),
    ("/api/conv", {"input": SEED_INPUT, "kernel": [[1] * 7] * 7}, "⌊(5 + 0 − 1·(7 − 1) − 1)/1⌋ + 1 = −1"),
    ("/api/conv", {**CONV, "stride": 0}, "stride"),
    ("/api/conv", {**CONV, "stride": "2"}, "stride"),
    ("/api/conv", {**CONV, "dilation": 0}, "dilation"),
    ("/api/conv", {**CONV, "padding": -1}, "padding"),
    ("/api/conv", {**CONV, "padding": "full"}, "padding"),
    ("/api/conv", {**CONV, "mode": "flip"}, "mode"),
    ("/api/conv", {**CONV, "bias": [1, 2]}, "bias"),
    ("/api/conv", {"input": [[1] * 2000] * 2, "kernel": [[1]]}, "1024"),
    ("/api/conv", {"input": SEED_INPUT, "kernel": [[[[1]]]] * 65}, "64"),
    ("/api/conv", {"input": [SEED_INPUT] * 2, "kernel": [[[1]]] * 3}, "channels"),
    ("/api/conv", {"kernel": [[1]]}, "input"),
    ("/api/conv/step", {**CONV, "step": 9}, "9"),
    ("/api/conv/step", {**CONV, "step": -1}, "step"),
    ("/api/pool", {"input": [[1, 2], [3, 4]], "size": 3}, "⌊"),
    ("/api/pool", {"input": [[1, 2], [3, 4]], "kind": "median"}, "kind"),
    ("/api/pool", {"input": [[1, 2], [3, 4]], "stride": 0}, "stride"),
    ("/api/softmax", {"logits": []}, "logits"),
    ("/api/softmax", {"logits": [1, 2], "label": 2}, "2"),
    ("/api/softmax", {"logits": [1, "x"]}, "logits"),
]


@pytest.mark.parametrize(("path", "body", "needle"), BAD, ids=[f"{p}:{n}" for p, _, n in BAD])
def test_bad_input_is_a_4xx_with_a_message(client, path, body, needle):
    r = client.post(f"{path}?lang=en", json=body)
    assert 400 <= r.status_code < 500, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and needle in detail


@pytest.mark.parametrize("raw", [b'{"input": [[NaN, 1]], "kernel": [[1]]}', b'{"input": [[Infinity]], "kernel": [[1]]}', b"{not json"])
def test_non_finite_numbers_and_broken_json_are_refused(client, raw):
    r = client.post("/api/conv", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"]


def test_messages_follow_the_language(client):
    body = {"input": SEED_INPUT, "kernel": [[1] * 7] * 7}
    es = client.post("/api/conv", json=body).json()["detail"]
    en = client.post("/api/conv?lang=en", json=body).json()["detail"]
    assert en.startswith("The kernel does not fit")
    assert es != en and "⌊" in es


def test_the_api_is_in_the_openapi_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/conv", "/api/conv/step", "/api/pool", "/api/softmax"):
        assert "post" in paths[path]


def test_conv_on_a_stored_image_by_id(client):
    import io

    import numpy as np
    from PIL import Image

    pixels = (np.arange(12 * 10).reshape(10, 12) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    stored = client.post("/api/images", files={"file": ("ramp.png", buf.getvalue(), "image/png")}).json()
    body = {"image_id": stored["id"], "kernel": SEED_KERNEL}
    out = client.post("/api/conv", json=body).json()
    assert out["output_shape"] == [8, 10]
    r, c = 4, 7
    assert out["output"][r][c] == sum(int(pixels[r + i, c + j]) * SEED_KERNEL[i][j] for i in range(3) for j in range(3))
    step = client.post("/api/conv/step", json={**body, "step": r * 10 + c}).json()
    assert step["value"] == out["output"][r][c]
    rgb = client.post("/api/conv", json={"image_id": "coffee", "size": 8, "color": "rgb", "kernel": [[1]]}).json()
    assert rgb["output_shape"][0] <= 8 and len(rgb["output"]) == rgb["output_shape"][0]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"input": SEED_INPUT, "image_id": "camera", "kernel": [[1]]}, 422),
        ({"kernel": [[1]]}, 422),
        ({"image_id": "0" * 32, "kernel": [[1]]}, 404),
        ({"image_id": "../../etc/passwd", "kernel": [[1]]}, 422),
        ({"image_id": "camera", "size": 0, "kernel": [[1]]}, 422),
        ({"image_id": "camera", "color": "cmyk", "kernel": [[1]]}, 422),
        ({"image_id": "camera", "color": "rgb", "kernel": [[[1]]] * 2}, 422),
    ],
)
def test_bad_image_requests(client, body, status):
    r = client.post("/api/conv", json=body)
    assert r.status_code == status and r.json()["detail"]
