"""Training steps of small CNNs: CNN Lab's NumPy engine against PyTorch (CPU), at 1 and 2 threads.

    python benchmarks/bench_train_step.py [--threads 1,2] [--reps 15] [--no-profile]

One command prints, for every thread count:

* the time of one training step (forward → cross-entropy → backward → Adam update, on the
  same batch) of three models, each built twice with the same weights (once with
  ``cnnlab.core``, once with ``torch.nn``), and the ratio CNN Lab ÷ PyTorch against the goal:
    - one block, the lab's MNIST model: conv 8@3×3 pad 1 → ReLU → max-pool 2 → dense 10,
      batch 64 of 28×28 (goal ≤ 0.25×);
    - the same on 8×8 digits, batch 32 (goal ≤ 0.2×);
    - two blocks: conv 8@3×3 pad 1 → ReLU → max 2 → conv 16@3×3 pad 1 → ReLU → max 2 →
      dense 10 on 28×28, batch 64 (goal ≤ 0.5×), built with core.model.Sequential and
      core.layers directly;
* the step's arithmetic (FLOPs of its matrix products: conv and dense, forward and
  backward; the element-wise work of pooling, ReLU, softmax and Adam is not counted) and
  the share of this machine's float32 matrix-product peak it reaches, the peak measured in
  the same run with a big np.matmul on the same number of threads;
* the same ratio from the fastest block of each, and from CPU time (time.process_time, which
  leaves out the time other processes hold the cores; at 2 threads it adds up both
  threads, PyTorch's spinning included, so only the 1-thread CPU ratio is a fair one);
* (unless --no-profile) where the NumPy step's time goes: forward and backward of every
  layer, the loss and the optimizer, as medians over single steps.

Threads: PyTorch through torch.set_num_threads, NumPy's OpenBLAS through its
openblas_set_num_threads (found with ctypes, as bench_conv.py does; the engine keeps its
training-sized products single-threaded anyway, see core/layers.py's _matmul).

The two engines run interleaved (A B A B ...), each block of steps timed with
time.perf_counter, and the per-step medians compared. Blocks are separated by a pause
(``--gap`` seconds): OpenBLAS (NumPy) and OpenMP (torch) worker threads busy-wait for a
while after each call, so a block started right after the other engine's block would share
the two cores with those spinning threads. Before timing, one step of each is compared
(loss and updated weights) to make sure both compute the same thing. The machine's load
average is printed: other work slows both engines, PyTorch's threads usually more.

Exits with status 1 when a goal is missed. torch is a benchmark-only dependency
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cnnlab.core.layers import Activation, Conv2D, Dense, Flatten, Pool2D  # noqa: E402
from cnnlab.core.losses import cross_entropy  # noqa: E402
from cnnlab.core.model import Sequential, tiny_cnn  # noqa: E402
from cnnlab.core.optim import Adam  # noqa: E402


def two_blocks(input_shape=(1, 28, 28), seed=0):
    """conv 8@3×3 pad 1 → ReLU → max 2 → conv 16@3×3 pad 1 → ReLU → max 2 → dense 10."""
    rng = np.random.default_rng(seed)
    C, H, W = input_shape
    layers = [Conv2D(C, 8, 3, padding=1, rng=rng), Activation("relu"), Pool2D("max", 2),
              Conv2D(8, 16, 3, padding=1, rng=rng), Activation("relu"), Pool2D("max", 2), Flatten()]
    D = math.prod(Sequential(layers).output_shapes(input_shape)[-1])
    return Sequential(layers + [Dense(D, 10, rng=rng)], input_shape=input_shape)


CASES = [  # (label, model builder, batch N, image H = W, goal for numpy/torch)
    ("one block 64×1×28×28", lambda shape: tiny_cnn(input_shape=shape, seed=0), 64, 28, 0.25),
    ("one block 32×1×8×8", lambda shape: tiny_cnn(input_shape=shape, seed=0), 32, 8, 0.2),
    ("two blocks 64×1×28×28", two_blocks, 64, 28, 0.5),
]


def numpy_setup(build, N, H, seed=0):
    model = build((1, H, H))
    optimizer = Adam(lr=1e-3)
    rng = np.random.default_rng(seed)
    x = rng.random((N, 1, H, H), dtype=np.float32)
    y = rng.integers(0, 10, N)
    params = model.parameters()

    def step():
        logits = model.forward(x)
        loss, dlogits = cross_entropy(logits, y)
        model.backward(dlogits, need_dx=False)
        optimizer.step(params)
        return loss

    return model, x, y, step


def torch_net(torch, model):
    """The same layers in torch.nn, with the same weights; [(our layer, torch module)] pairs too."""
    modules, pairs = [], []
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            m = torch.nn.Conv2d(layer.C, layer.F, layer.k, stride=layer.stride, padding=layer.padding,
                                dilation=layer.dilation)
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(layer.params["w"]))
                m.bias.copy_(torch.from_numpy(layer.params["b"]))
            pairs.append((layer, m))
        elif isinstance(layer, Dense):
            m = torch.nn.Linear(layer.D_in, layer.D_out)
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(layer.params["w"].T.copy()))
                m.bias.copy_(torch.from_numpy(layer.params["b"]))
            pairs.append((layer, m))
        elif isinstance(layer, Activation) and layer.name == "relu":
            m = torch.nn.ReLU()
        elif isinstance(layer, Pool2D) and layer.kind == "max":
            m = torch.nn.MaxPool2d(layer.size, layer.stride)
        elif isinstance(layer, Flatten):
            m = torch.nn.Flatten()
        else:
            raise ValueError(f"no torch twin for {layer.describe()}")
        modules.append(m)
    return torch.nn.Sequential(*modules), pairs


def torch_setup(torch, model, x, y):
    net, pairs = torch_net(torch, model)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(tx), ty)
        loss.backward()
        optimizer.step()
        return loss

    return pairs, step


def check_same_computation(np_step, pairs, torch_step):
    """One step each from identical weights: same loss and (nearly) the same updated weights."""
    np_loss = np_step()
    torch_loss = float(torch_step().detach())
    assert abs(np_loss - torch_loss) < 1e-4 * max(1.0, abs(np_loss)), (np_loss, torch_loss)
    for layer, m in pairs:
        w = m.weight.detach().numpy()
        # Adam's first step moves every weight by ≈ lr; a gradient that differs would show here.
        assert np.allclose(layer.params["w"], w.T if isinstance(layer, Dense) else w, atol=2e-5), layer.describe()
        assert np.allclose(layer.params["b"], m.bias.detach().numpy(), atol=2e-5), layer.describe()


def time_blocks(steps, reps, funcs, gap=0.0, warm=3, cpu=None):
    """Per-step seconds of each func, block by block, the funcs interleaved A B A B ...

    Each block: a pause of ``gap`` s (the other engine's threads go idle), ``warm``
    untimed steps (this engine's caches and threads wake up), then ``steps`` timed steps.
    cpu: an optional list that receives, per func, the per-step CPU time of the process
    (time.process_time) in each block: unlike the wall clock it does not count the time
    other processes hold the cores, but it adds up every thread's CPU time.
    """
    times = [[] for _ in funcs]
    if cpu is not None:
        cpu[:] = [[] for _ in funcs]
    for _ in range(reps):
        for i, f in enumerate(funcs):
            if gap:
                time.sleep(gap)
            for _ in range(warm):
                f()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(steps):
                f()
            times[i].append((time.perf_counter() - t0) / steps)
            if cpu is not None:
                cpu[i].append((time.process_time() - c0) / steps)
    return times


# ---------------------------------------------------------------------------
# Arithmetic and the machine's peak
# ---------------------------------------------------------------------------

def step_flops(model, N, input_shape):
    """FLOPs (a multiply-add = 2) of one training step's matrix products, per layer.

    Conv2D: forward 2·N·F·Ho·Wo·C·k², the same for dw, and again for dx unless the layer is
    the first (training skips that input gradient); Dense likewise with D_in·D_out.
    Returns {layer description: flops} and the total.
    """
    shapes = [tuple(input_shape)] + model.output_shapes(input_shape)
    per, first = {}, model._execution_order()[0]
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Conv2D):
            F, Ho, Wo = shapes[i + 1]
            macs = N * F * Ho * Wo * layer.C * layer.k * layer.k
        elif isinstance(layer, Dense):
            macs = N * layer.D_in * layer.D_out
        else:
            continue
        passes = 2 if i == first else 3
        per[f"{i} {layer.describe()}"] = 2 * macs * passes
    return per, sum(per.values())


def matmul_peak(n=2048, reps=5):
    """Best float32 FLOP/s of an n×n @ n×n np.matmul (on the threads OpenBLAS has now)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)
    best = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(reps))
    return 2 * n ** 3 / best


def _timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------
# Where the NumPy step's time goes
# ---------------------------------------------------------------------------

def profile_numpy(build, N, H, steps=200):
    """Median seconds per part of single training steps: {part: seconds}."""
    model, x, y, _ = numpy_setup(build, N, H)
    optimizer, params = Adam(1e-3), model.parameters()
    order = model._execution_order()      # relu → max-pool runs pool first (core/model.py)
    parts = {}

    def add(key, t0):
        t1 = time.perf_counter()
        parts.setdefault(key, []).append(t1 - t0)
        return t1

    for step in range(steps + 20):
        if step == 20:
            parts.clear()
        t = time.perf_counter()
        a = x
        for i in order:
            a = model.layers[i].forward(a)
            t = add(f"forward  {i} {model.layers[i].describe()}", t)
        _, d = cross_entropy(a, y)
        t = add("loss     softmax + cross-entropy", t)
        for i in reversed(order):
            d = model.layers[i].backward(d, need_dx=i != order[0])
            t = add(f"backward {i} {model.layers[i].describe()}", t)
        optimizer.step(params)
        add("optimizer Adam", t)
    return {key: statistics.median(ts) for key, ts in parts.items()}


def print_profile(label, medians):
    total = sum(medians.values())
    print(f"\n  {label}: NumPy step per part (median of single steps; execution order)")
    for key, seconds in medians.items():
        print(f"    {key:<44} {seconds * 1e3:7.3f} ms  {seconds / total:6.1%}")
    print(f"    {'sum of the medians':<44} {total * 1e3:7.3f} ms")


# ---------------------------------------------------------------------------

def run(torch, threads, args):
    """All cases at one thread count: a list of result dicts."""
    from bench_conv import blas_threads   # OpenBLAS's thread count through ctypes

    torch.set_num_threads(threads)
    blas = blas_threads(threads)
    peak = matmul_peak()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n== {threads} thread{'s' if threads > 1 else ''} (torch {torch.get_num_threads()}, OpenBLAS {blas}); "
          f"float32 matmul peak 2048² here: {peak / 1e9:.1f} GFLOP/s; load average {load}")
    print(f"  {'case':<23} {'numpy ms':>9} {'torch ms':>9} {'ratio':>6} {'goal':>6}        "
          f"{'best numpy':>10} {'torch':>7} {'ratio':>6}   {'CPU numpy':>9} {'torch':>7} {'ratio':>6}   "
          f"{'MFLOP':>6} {'GFLOP/s':>7} {'of peak':>7}")
    results = []
    for label, build, N, H, goal in CASES:
        model, x, y, np_step = numpy_setup(build, N, H)
        pairs, torch_step = torch_setup(torch, model, x, y)
        check_same_computation(np_step, pairs, torch_step)
        warm = time_blocks(args.steps, 3, [np_step, torch_step])   # warm-up: caches, allocator, threads
        # Blocks of at least ~30 ms, so the timer and the first step's wake-up stay negligible.
        steps = max(args.steps, math.ceil(0.03 / min(min(w) for w in warm)))
        cpu = []
        np_times, torch_times = time_blocks(steps, args.reps, [np_step, torch_step], args.gap, cpu=cpu)
        np_med, torch_med = statistics.median(np_times), statistics.median(torch_times)
        np_cpu, torch_cpu = (statistics.median(c) for c in cpu)
        ratio = np_med / torch_med
        _, flops = step_flops(model, N, (1, H, H))
        rate = flops / np_med
        np_min, torch_min = min(np_times), min(torch_times)
        print(f"  {label:<23} {np_med * 1e3:9.3f} {torch_med * 1e3:9.3f} {ratio:6.2f} {'≤' + str(goal):>6}"
              f"  {'ok' if ratio <= goal else 'MISSED':<6}{np_min * 1e3:10.3f} {torch_min * 1e3:7.3f} "
              f"{np_min / torch_min:6.2f}   {np_cpu * 1e3:9.3f} {torch_cpu * 1e3:7.3f} {np_cpu / torch_cpu:6.2f}   "
              f"{flops / 1e6:6.1f} {rate / 1e9:7.2f} {rate / peak:7.1%}")
        results.append({"threads": threads, "case": label, "numpy": np_med, "torch": torch_med, "ratio": ratio,
                        "goal": goal, "flops": flops, "peak": peak, "share": rate / peak,
                        "cpu_ratio": np_cpu / torch_cpu, "best_ratio": np_min / torch_min})
    if args.profile:
        for label, build, N, H, _ in CASES:
            print_profile(label, profile_numpy(build, N, H))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="thread counts to measure, comma-separated")
    parser.add_argument("--reps", type=int, default=15, help="timed blocks per engine")
    parser.add_argument("--steps", type=int, default=10,
                        help="timed training steps per block (at least ~30 ms worth of steps are run)")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds of pause before each block")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the per-layer profile")
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        sys.exit("torch is not installed: pip install -e '.[bench]' (benchmark-only dependency)")

    env = {k: os.environ.get(k, "(unset)") for k in
           ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OMP_NUM_THREADS")}
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    print("env: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"{args.reps} interleaved blocks of ≥ {args.steps} steps each (after 3 untimed), {args.gap} s apart; "
          f"medians per step (\"best\": the fastest block of each)")

    results = []
    for threads in (int(t) for t in args.threads.split(",")):
        results += run(torch, threads, args)

    print("\n  summary (medians of wall-clock blocks; ratio = CNN Lab ÷ PyTorch; best blocks; CPU time)")
    print("  | case | threads | CNN Lab | PyTorch | ratio | goal | best blocks | CPU time | share of matmul peak |")
    print("  | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"  | {r['case']} | {r['threads']} | {r['numpy'] * 1e3:.3f} ms | {r['torch'] * 1e3:.3f} ms | "
              f"{r['ratio']:.2f}× | ≤ {r['goal']}× {'' if r['ratio'] <= r['goal'] else '(missed)'} | "
              f"{r['best_ratio']:.2f}× | {r['cpu_ratio']:.2f}× | {r['share']:.1%} |")
    return 0 if all(r["ratio"] <= r["goal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
