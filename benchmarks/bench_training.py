"""Training through the API, unpaced: time from POST /api/train to the finished job, and the stepper under training load.

    python benchmarks/bench_training.py [--runs 3] [--students 30] [--duration 20] [--trainings 4] [--skip-load]

On loopback only, the real server in a subprocess (benchmarks/bench_stepper_load.py's
machinery: uvicorn, one worker, the app wrapped to time each request inside it).

1. Time to accuracy: for the digits and the MNIST defaults (``{"dataset": ...}`` alone),
   ``--runs`` times each, one at a time: POST /api/train, then GET /api/train/{id} every
   20 ms until it has finished. Reported (median of the runs): wall time from the POST to
   the finished job, the job's own time until the held-out accuracy first reached the
   target (from its epoch records), the final held-out accuracy, and images/s.
   Targets (issue 5): digits ≥ 95 % within 5 s; MNIST ≥ 96 % within 20 s.
2. The stepper while trainings run: ``--trainings`` MNIST trainings (30 epochs, each from
   its own browser session, kept alive by a poll a second; the server allows that many at
   once through CNNLAB_MAX_RUNNING_JOBS) while ``--students`` simulated students step on
   /conv for ``--duration`` s (bench_stepper_load's students, walks and client).
   Target: p95 ≤ 100 ms per step, 0 errors.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time

import bench_stepper_load as load
from _server import stop_server

TARGETS = {"digits": (0.95, 5.0), "mnist": (0.96, 20.0)}
TARGET_STEP_P95_MS = 100.0


class Browser:
    """One keep-alive connection with its own session cookie."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookie = ""

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        try:
            return self._request(method, path, body)
        except (http.client.RemoteDisconnected, ConnectionError):  # an idle keep-alive connection closed
            self.conn.close()
            return self._request(method, path, body)

    def _request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = {"Cookie": self.cookie} if self.cookie else {}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        raw = r.read()
        set_cookie = r.getheader("set-cookie")
        if set_cookie and set_cookie.startswith("cnnlab_session="):
            self.cookie = set_cookie.split(";", 1)[0]
        return r.status, json.loads(raw) if raw else {}


def time_to_accuracy(port: int, dataset: str) -> dict:
    browser = Browser(port)
    t0 = time.perf_counter()
    status, created = browser.request("POST", "/api/train", {"dataset": dataset})
    if status != 201:
        raise SystemExit(f"POST /api/train answered {status}: {created}")
    while True:
        _, body = browser.request("GET", f"/api/train/{created['id']}?records=false")
        if body["status"] not in ("queued", "running"):
            break
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    _, body = browser.request("GET", f"/api/train/{created['id']}")
    target, _limit = TARGETS[dataset]
    reached = next((r["elapsed"] for r in body["records"]
                    if r["kind"] == "epoch" and (r["test_accuracy"] or 0) >= target), None)
    m = body["metrics"]
    return {"status": body["status"], "wall": wall, "reached": reached, "accuracy": m["test_accuracy"],
            "ips": m["images_per_second"], "job_elapsed": m["elapsed"]}


def keep_training(port: int, n: int, stop: threading.Event, seen: list) -> None:
    """Start n long MNIST trainings (one browser each) and poll them until ``stop``."""
    browsers, ids = [], []
    for i in range(n):
        b = Browser(port)
        status, created = b.request("POST", "/api/train", {"dataset": "mnist", "epochs": 30, "seed": i})
        if status != 201:
            raise SystemExit(f"could not start training {i}: {status} {created}")
        browsers.append(b)
        ids.append(created["id"])
    while not stop.wait(1.0):
        seen.append(sum(b.request("GET", f"/api/train/{job_id}?records=false")[1]["status"] == "running"
                        for b, job_id in zip(browsers, ids)))
    for b, job_id in zip(browsers, ids):
        b.request("DELETE", f"/api/train/{job_id}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--trainings", type=int, default=4)
    parser.add_argument("--think", type=int, nargs=2, default=(100, 300))
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args(argv)
    os.environ["CNNLAB_MAX_RUNNING_JOBS"] = str(max(2, args.trainings))
    ok = True
    with tempfile.TemporaryDirectory(prefix="cnnlab-train-bench-") as workdir:
        port = load.free_port()
        records_path = os.path.join(workdir, "server.json")
        server = load.start_server(port, records_path)
        try:
            # Other processes on the machine change every number here: say how busy it was.
            print(f"\nTime to accuracy, unpaced, one job at a time, median of {args.runs} runs "
                  f"({os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the start)\n")
            print("| dataset (default) | POST → finished | job time to target | final held-out accuracy "
                  "| images/s | target | met |")
            print("|---|---:|---:|---:|---:|---|---|")
            for dataset in ("digits", "mnist"):
                runs = [time_to_accuracy(port, dataset) for _ in range(args.runs)]
                target, limit = TARGETS[dataset]
                wall = statistics.median(r["wall"] for r in runs)
                reached = [r["reached"] for r in runs]
                acc = statistics.median(r["accuracy"] for r in runs)
                ips = statistics.median(r["ips"] for r in runs)
                met = all(r["status"] == "done" for r in runs) and None not in reached and wall <= limit
                ok &= met
                reached_text = f"{statistics.median(reached):.2f} s" if None not in reached else "not reached"
                print(f"| {dataset} | {wall:.2f} s | {reached_text} | {acc:.1%} | {ips:,.0f} "
                      f"| ≥ {target:.0%} in ≤ {limit:g} s | {'yes' if met else 'NO'} |")

            if not args.skip_load:
                stop, seen = threading.Event(), []
                trainer = threading.Thread(target=keep_training, args=(port, args.trainings, stop, seen))
                trainer.start()
                time.sleep(2.0)  # the trainings are under way before the class starts
                length = args.duration * 1000 // max(args.think[0], 1) + 10
                walks, opened = load.make_students(port, args.students, 0, length)
                t_start = time.time()
                client = load.run_python(port, walks, args.duration, tuple(args.think), 0, workdir)
                t_end = time.time()
                stop.set()
                trainer.join()
        finally:
            stop_server(server, signal.SIGINT, 30)
        if args.skip_load:
            return 0 if ok else 1
        with open(records_path) as f:
            records = json.load(f)
    steps = [r[1] for r in records if r[2] and t_start <= r[0] <= t_end]
    errors = client["non200"] + client["timeouts"] + client["socket_errors"]
    met = errors == 0 and client["p95"] <= TARGET_STEP_P95_MS and load.pct(steps, 95) <= TARGET_STEP_P95_MS
    ok &= met
    print(f"\n{args.students} students stepping on /conv for {args.duration} s while {args.trainings} MNIST "
          f"trainings run (running at each poll: {sorted(set(seen))}; load average {os.getloadavg()[0]:.1f} "
          f"at the end)\n")
    print("| per step | client (round trip) | server (inside the app) |")
    print("|---|---:|---:|")
    print(f"| steps answered | {client['requests']} | {len(steps)} |")
    for p in (50, 95, 99):
        print(f"| p{p} | {client[f'p{p}']:.1f} ms | {load.pct(steps, p):.1f} ms |")
    print(f"| errors (non-200 / timeouts / socket) | {client['non200']} / {client['timeouts']} / "
          f"{client['socket_errors']} | |")
    print(f"\nTarget (p95 ≤ {TARGET_STEP_P95_MS:g} ms, 0 errors): {'met' if met else 'MISSED'}.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
