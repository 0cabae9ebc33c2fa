"""Convolution and pooling speed, NumPy engine vs PyTorch CPU, measured in the same run.

    python benchmarks/bench_conv.py [--reps 30] [--threads N] [--only full|tiny] [--cpu-time]

Blocks of runs are interleaved (ours, theirs, ours, theirs, …, each after a short pause)
so a noisy machine slows both sides alike, and medians per call are quoted. PyTorch gets
as many threads as OpenBLAS has (or --threads, which sets both). Without torch, the
single-channel forward is compared with scipy.signal.correlate2d instead (and the rest is
skipped). OPENBLAS_* variables are reported, never changed: to compare, unset them on the
command line for a second run.

Cases (float32, as in training):
  conv 512×512 3×3 "same", C=1 → F=1 and C=3 → F=8: forward (goals: ≤ 0.8× and ≤ 2.5× torch),
      and forward + backward (reported, no goal);
  the tiny model's training step: conv 8@3×3 pad 1 → ReLU → max-pool 2 → dense 10 →
      softmax cross-entropy, backward, SGD; batch 64 of 28×28 (goal ≤ 0.5× torch) and batch
      32 of 8×8 (goal ≤ 0.3×). Measured twice: "engine" (core.conv/core.pool with the few
      other lines written here) and "core.model" (core.model.tiny_cnn with core.optim.SGD,
      when those import).
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnnlab.core.conv import Workspace, conv_backward, conv_forward  # noqa: E402
from cnnlab.core.pool import pool_backward, pool_forward  # noqa: E402

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # the benchmark still says something useful without torch
    torch = None


# ---------------------------------------------------------------------------
# BLAS threads
# ---------------------------------------------------------------------------

def _openblas():
    """NumPy's bundled OpenBLAS, or None (e.g. a NumPy built against another BLAS)."""
    folder = os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs")
    for path in glob.glob(os.path.join(folder, "libscipy_openblas*")) + glob.glob(os.path.join(folder, "libopenblas*")):
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    return get, put
    return None


def blas_threads(n=None):
    """Set OpenBLAS's thread count when n is given; return the count in effect."""
    fns = _openblas()
    if fns is None:
        return int(os.environ.get("OPENBLAS_NUM_THREADS", os.cpu_count() or 1))
    get, put = fns
    if n is not None:
        put(int(n))
    return int(get())


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

GAP = 0.1  # seconds of pause before each block (see interleaved)
CLOCK = time.perf_counter  # --cpu-time switches to the calling thread's CPU time


def interleaved(fns, reps, block=5, warmup=5):
    """Median seconds per call of each function.

    Blocks of ``block`` calls run round-robin (A B A B …) so drift on the machine hits
    every side alike. Each block starts after a short pause: OpenBLAS and torch's OpenMP
    workers busy-wait for a while after each call, and a block started straight after
    the other side's would share the two cores with those spinning threads.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            time.sleep(GAP)
            t0 = CLOCK()
            for _ in range(block):
                fn()
            ts.append((CLOCK() - t0) / block)
    return [statistics.median(ts) for ts in times]


def report(name, ours, theirs, goal=None, against="torch"):
    ratio = ours / theirs
    verdict = "" if goal is None else (f"  goal ≤ {goal}: {'met' if ratio <= goal else 'NOT met'}")
    print(f"{name:<46} ours {ours * 1e3:8.3f} ms   {against} {theirs * 1e3:8.3f} ms   ratio {ratio:5.2f}{verdict}")
    return ratio


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

def full_image(C, F, reps, rng):
    x = rng.standard_normal((1, C, 512, 512), dtype=np.float32)
    w = rng.standard_normal((F, C, 3, 3), dtype=np.float32)
    b = rng.standard_normal(F, dtype=np.float32)
    ws = Workspace()

    def ours():
        return conv_forward(x, w, b, padding="same", workspace=ws)[0]

    def ours_both():
        out, cache = conv_forward(x, w, b, padding="same", workspace=ws)
        return conv_backward(out, cache)

    out = ours()
    if torch is None:
        from scipy.signal import correlate2d

        if C == 1 and F == 1:
            def theirs():
                return correlate2d(x[0, 0], w[0, 0], mode="same") + b[0]

            np.testing.assert_allclose(out[0, 0], theirs(), rtol=1e-3, atol=1e-3)
            fwd = interleaved([ours, theirs], reps)
            report(f"conv 512² C={C}→F={F} forward", *fwd, goal=0.8, against="scipy")
        return
    xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)

    def theirs():
        with torch.no_grad():
            return TF.conv2d(xt, wt, bt, padding=1)

    xg, wg, bg = xt.clone().requires_grad_(), wt.clone().requires_grad_(), bt.clone().requires_grad_()

    def theirs_both():
        o = TF.conv2d(xg, wg, bg, padding=1)
        o.backward(o.detach())
        xg.grad = wg.grad = bg.grad = None

    np.testing.assert_allclose(out, theirs().numpy(), rtol=1e-3, atol=1e-3)
    fwd = interleaved([ours, theirs], reps)
    report(f"conv 512² 3×3 same C={C}→F={F} forward", *fwd, goal=0.8 if C == 1 else 2.5)
    both = interleaved([ours_both, theirs_both], max(5, reps // 4), block=2)
    report(f"conv 512² 3×3 same C={C}→F={F} fwd+bwd", *both)


def tiny_step_numpy(rng, x, y):
    """The tiny model's SGD step on core.conv/core.pool; ReLU, dense and the loss inline."""
    N, _, H, W = x.shape
    D = 8 * (H // 2) * (W // 2)
    w = (rng.standard_normal((8, 1, 3, 3)) * np.sqrt(2 / 9)).astype(np.float32)
    b = np.zeros(8, np.float32)
    wd = (rng.standard_normal((D, 10)) * np.sqrt(2 / D)).astype(np.float32)
    bd = np.zeros(10, np.float32)
    conv_ws, pool_ws = Workspace(), Workspace()
    rows = np.arange(N)

    def step():
        out, conv_cache = conv_forward(x, w, b, padding=1, workspace=conv_ws)
        np.maximum(out, 0, out=out)
        pooled, pool_cache = pool_forward(out, "max", 2, workspace=pool_ws)
        h = pooled.reshape(N, -1)
        logits = h @ wd + bd
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        p[rows, y] -= 1
        p /= N
        dwd, dbd, dh = h.T @ p, p.sum(axis=0), p @ wd.T
        dout = pool_backward(dh.reshape(pooled.shape), pool_cache)
        dout *= out > 0
        _, dw, db = conv_backward(dout, conv_cache, need_dx=False)
        for param, grad in ((w, dw), (b, db), (wd, dwd), (bd, dbd)):
            param -= np.float32(0.1) * grad

    return step


def tiny_step_model(x, y):
    """The same step through core.model.tiny_cnn, core.losses and core.optim.SGD."""
    from cnnlab.core.losses import cross_entropy
    from cnnlab.core.model import tiny_cnn
    from cnnlab.core.optim import SGD

    model = tiny_cnn(input_shape=x.shape[1:], seed=0)
    optimizer = SGD(0.1)
    params = model.parameters()

    def step():
        _, dlogits = cross_entropy(model.forward(x), y)
        model.backward(dlogits, need_dx=False)
        optimizer.step(params)

    step()
    return step


def tiny_step_torch(x, y):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 8, 3, padding=1)
    dense = torch.nn.Linear(8 * (x.shape[2] // 2) * (x.shape[3] // 2), 10)
    optimizer = torch.optim.SGD(list(conv.parameters()) + list(dense.parameters()), lr=0.1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        optimizer.zero_grad()
        h = TF.max_pool2d(TF.relu(conv(xt)), 2)
        TF.cross_entropy(dense(h.flatten(1)), yt).backward()
        optimizer.step()

    return step


def tiny_model(reps, rng, N, H, goal):
    """One case of the tiny model's training step: batch N of H×H images."""
    x = rng.random((N, 1, H, H), dtype=np.float32)
    x[x < 0.6] = 0  # MNIST-like: mostly blank, so ReLU → max-pool meets many ties
    y = rng.integers(0, 10, N)
    name = f"tiny model step {N}×1×{H}×{H}"
    if torch is None:
        print(f"{name}: torch not installed, skipped")
        return
    theirs = tiny_step_torch(x, y)
    engine = interleaved([tiny_step_numpy(rng, x, y), theirs], reps, block=20)
    report(f"{name}, engine", *engine, goal=goal)
    try:
        model_step = tiny_step_model(x, y)
    except Exception as exc:  # another part may not be finished; say so and go on
        print(f"{name}, core.model: unavailable ({type(exc).__name__}: {exc})")
        return
    model = interleaved([model_step, theirs], reps, block=20)
    report(f"{name}, core.model", *model, goal=goal)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=30, help="timed blocks per function (default 30)")
    parser.add_argument("--threads", type=int, default=None, help="BLAS and torch threads (default: BLAS's own)")
    parser.add_argument("--only", choices=["full", "tiny"], default=None, help="run one group of cases")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with the calling thread's CPU time instead of the wall clock (forces one "
                             "thread each side): on a machine busy with other work, time spent waiting for a "
                             "core is then not counted, for either side")
    args = parser.parse_args(argv)

    global CLOCK
    if args.cpu_time:
        if args.threads not in (None, 1):
            parser.error("--cpu-time measures one thread: use --threads 1 (or leave it out)")
        args.threads = 1
        CLOCK = time.thread_time
    threads = blas_threads(args.threads)
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS")
           if k in os.environ}
    print(f"clock: {'thread CPU time' if args.cpu_time else 'wall'}; "
          f"numpy {np.__version__}, BLAS threads {threads}, env {env or 'no OPENBLAS_* set'}, "
          f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())} (other work skews both sides)")
    if torch is not None:
        torch.set_num_threads(threads)
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    else:
        print("torch not installed: comparing with scipy.signal.correlate2d where possible")
    rng = np.random.default_rng(0)
    if args.only in (None, "full"):
        full_image(1, 1, args.reps, rng)
        full_image(3, 8, args.reps, rng)
    if args.only in (None, "tiny"):
        tiny_model(args.reps, rng, 64, 28, 0.5)
        tiny_model(args.reps, rng, 32, 8, 0.3)


if __name__ == "__main__":
    main()
