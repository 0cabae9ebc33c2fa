"""The most memory one request can make the server take (issue 12, finding 1).

Starts the real server (uvicorn, one worker, on a free loopback port), uploads the largest
picture it stores (1024×1024 RGB noise: nothing compresses), then sends, one at a time, the
largest request of each kind the limits allow (app/budget.py) and the requests the issue
found (which must be refused), and reads the server's memory from /proc/PID/status: VmRSS
before the request, VmHWM (the peak, reset before each request through /proc/PID/clear_refs)
after it. Prints a markdown table; exits 1 if any request raised the peak by more than
``--goal`` MB (100) or if a request the limits allow was refused.

    python benchmarks/worst_request.py            # about a minute

Every request has a 120 s timeout; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from threading import Lock
from types import SimpleNamespace

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import free_port, stop_server, wait_until_up  # noqa: E402

MB = 1024 * 1024
TIMEOUT_S = 120.0


class Server:
    def __init__(self, port: int, proc: subprocess.Popen) -> None:
        self.port, self.proc = port, proc

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM in MB."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) // 1024
        return out

    def reset_peak(self) -> None:
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM := VmRSS

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_S)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def multipart(name: str, filename: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "cnnlab-worst-request"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def noise_png(side: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def largest_model_file() -> bytes:
    from cnnlab.app.budget import largest_model_spec
    from cnnlab.app.jobs import build_model, export_npz

    spec = largest_model_spec()
    return export_npz(SimpleNamespace(model=build_model(spec), spec=spec, cond=Lock()))


def cases(image_id: str, settings) -> list[tuple[str, str, str, bytes | None, dict, bool]]:
    """(what, method, path, body, headers, allowed): ``allowed`` requests must answer 2xx."""
    J = {"content-type": "application/json"}

    def post(body: dict) -> bytes:
        return json.dumps(body).encode()

    # A 1×1 float kernel with padding 35 gives the most numbers one answer may carry (1094² ≤
    # max_json_values), a 15×15 one on the RGB picture nearly the most multiply-adds.
    side_json = int((settings.max_json_values) ** 0.5)
    pad = (side_json - 1024) // 2
    grid = [[0.5] * 1024 for _ in range(1024)]
    rows4m = b"[0]," * 4_000_000
    k7 = ";".join([",".join(["1"] * 7)] * 7)
    conv_page = (f"image={image_id}&size=32&color=rgb&kernel={k7}|{k7}|{k7}|{k7}&padding=8")
    conv_page_1x1 = f"image={image_id}&size=32&color=rgb&kernel=1|2|3|-1&padding=8"
    # /pool and /activation show at most 16×16 numbers: the working size 16, 4 filters 1×1.
    carried = f"image={image_id}&size=16&color=rgb&kernel=1|2|3|-1"
    return [
        ("the issue's POST /api/conv: 64 kernels 15×15, padding 64, on the 1024² upload", "POST", "/api/conv",
         post({"image_id": image_id, "kernel": [[[[1] * 15] * 15]] * 64, "padding": 64}), J, False),
        (f"POST /api/conv, most numbers answered: 1 float kernel 1×1, padding {pad} ({1024 + 2 * pad}² values)",
         "POST", "/api/conv", post({"image_id": image_id, "kernel": [[0.1]], "padding": pad}), J, True),
        ("POST /api/conv, most work answered: RGB, one 15×15 filter, padding 7 (708 M multiply-adds)",
         "POST", "/api/conv", post({"image_id": image_id, "color": "rgb", "kernel": [[0.1] * 15] * 15, "padding": 7}),
         J, True),
        ("POST /api/conv, the largest typed input: 1024×1024 numbers", "POST", "/api/conv",
         post({"input": grid, "kernel": [[0.5]]}), J, True),
        ("POST /api/conv/step, RGB, 64 filters 15×15, padding 64, last step", "POST", "/api/conv/step",
         post({"image_id": image_id, "color": "rgb", "kernel": [[[[1] * 15] * 15] * 3] * 64, "padding": 64,
               "step": 64 * 1138 * 1138 - 1}), J, True),
        ("POST /api/pool, 1024×1024 input, window 1 (1 M values answered)", "POST", "/api/pool",
         post({"input": grid, "size": 1}), J, True),
        ("POST /api/softmax, a body of 600 k short strings", "POST", "/api/softmax",
         b'{"logits": [' + b",".join([b'"ab"'] * 590_000) + b"]}", J, False),
        ("POST /api/class/…/answer, 100 k nested [", "POST", "/api/class/ABCDE/answer", b"[" * 100_000, J, False),
        ("POST /api/train/…/predict, 16 MB of 4 M rows", "POST", "/api/train/nojob/predict",
         b'{"grid": [' + rows4m[:-1] + b"]}", J, False),
        ("POST /train/jobs/…/predict (page), 16 MB of 4 M rows", "POST", "/train/jobs/nojob/predict",
         b"grid=" + b"0%2C" * 4_000_000, {"content-type": "application/x-www-form-urlencoded"}, False),
        ("GET /conv, 4 filters 7×7, padding 8, RGB 1024² (full-resolution maps)", "GET", f"/conv?{conv_page}",
         None, {}, True),
        ("GET /conv/output.png, the same, res=full", "GET", f"/conv/output.png?{conv_page}&res=full&filter=3",
         None, {}, True),
        ("GET /conv, 4 filters 1×1, padding 8, RGB 1024² (the largest maps)", "GET", f"/conv?{conv_page_1x1}",
         None, {}, True),
        ("GET /conv/input.png, res=full", "GET", f"/conv/input.png?{conv_page}&res=full", None, {}, True),
        ("GET /pool from the /conv page's maps", "GET", "/pool?" + _q({"input": "conv", "from": carried, "size": "1"}),
         None, {}, True),
        ("GET /activation from the /conv page's maps", "GET",
         "/activation?" + _q({"input": "conv", "from": carried}), None, {}, True),
        ("GET /grid, the upload at 32 pixels, RGB", "GET", f"/grid?image={image_id}&size=32&color=rgb", None, {}, True),
        ("GET /pipeline on the upload", "GET", f"/pipeline?image={image_id}", None, {}, True),
        ("GET /api/pipeline on the upload", "GET", f"/api/pipeline?image={image_id}", None, {}, True),
    ]


def _q(params: dict) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--goal", type=float, default=100.0, help="most MB one request may add to the peak")
    args = parser.parse_args()
    from cnnlab.app.settings import Settings

    settings = Settings()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cnnlab-worst-") as workdir:
        env = {**os.environ, "CNNLAB_UPLOAD_DIR": str(Path(workdir) / "uploads")}
        log = Path(workdir) / "server.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "cnnlab.app.main:app", "--host", "127.0.0.1",
                                     "--port", str(port), "--log-level", "warning"],
                                    cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True)
        try:
            wait_until_up(proc, port, log)
            server = Server(port, proc)
            return run(server, settings, args.goal)
        finally:
            stop_server(proc)


def measure(server: Server, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes, float, int, int]:
    """Status, answer, seconds, VmRSS before (MB) and how far the peak rose above it (MB)."""
    time.sleep(0.3)  # let the previous answer's memory settle
    before = server.memory()["VmRSS"]
    server.reset_peak()
    start = time.perf_counter()
    status, data = server.request(method, path, body, headers)
    seconds = time.perf_counter() - start
    return status, data, seconds, before, server.memory()["VmHWM"] - before


def run(server: Server, settings, goal: float) -> int:
    rows = []
    picture = noise_png(1024)
    body, headers = multipart("file", "noise.png", picture)
    status, data, *figures = measure(server, "POST", "/api/images", body, headers)
    image_id = json.loads(data)["id"]
    rows.append((f"POST /api/images, 1024×1024 RGB noise ({len(picture) / MB:.1f} MB)", status, data, *figures, True))
    model = largest_model_file()
    body, headers = multipart("file", "model.npz", model)
    rows.append(("POST /api/train/load, the largest model the form allows "
                 f"({len(model) / MB:.1f} MB)", *measure(server, "POST", "/api/train/load", body, headers), True))
    for what, method, path, body, headers, allowed in cases(image_id, settings):
        rows.append((what, *measure(server, method, path, body, headers), allowed))
    print("| request | status | answer | time | RSS before | peak growth |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    failed = False
    for what, status, data, seconds, before, grown, allowed in rows:
        bad = grown > goal or (allowed and status >= 300) or (not allowed and status < 400) or status >= 500
        failed |= bad
        print(f"| {what} | {status} | {len(data) / MB:.2f} MB | {seconds:.2f} s | {before} MB | "
              f"{'**' if bad else ''}+{grown} MB{'**' if bad else ''} |")
    worst = max(rows, key=lambda row: row[5])
    print(f"\nworst: {worst[0]}: +{worst[5]} MB (goal ≤ {goal:g} MB); "
          f"server peak {server.memory()['VmHWM']} MB at the end")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
