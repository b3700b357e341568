"""The fastest any im2col + BLAS implementation could train and infer a config, set beside PyTorch.

    python benchmarks/gemm_floor.py configs/resnet20_cifar.yaml [--batch-size 64]
        [--rounds 7] [--torch-python PY] [--steps 20] [--warmup 3]

Every conv of the network, run as cnncli runs it (im2col then one matrix product), costs three
float32 matrix products per training step: the forward ``W @ cols`` (O x C*k*k @ C*k*k x L,
L = output pixels x batch), the weight gradient ``dy @ cols.T`` and the input gradient
``W.T @ dy``; inference costs the first. Dense layers add theirs. This script times exactly those
products through NumPy's BLAS on one core (this process pinned to CPU 0, BLAS on one thread),
each in the faster of its two operand orders, with preallocated outputs and warm caches:
their sum is what a step would cost if im2col, col2im, batch norm, activations, the optimizer
and Python took no time at all.

With ``--torch-python`` it then times PyTorch 2.13's whole training step and inference batch of
the same network on the same core with one thread (``bench_worker.py``, side by side in this
run) and prints the ratio PyTorch / floor: the best speed-up over PyTorch that an im2col + BLAS
implementation could reach on this machine. Below 1.0 means that the matrix products alone,
at the speed this BLAS reaches on these shapes, take longer than PyTorch's whole step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _pin_one_core() -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})


def products(config: str, batch: int) -> tuple[list, list]:
    """(layer, phase, M, K, N) of every matrix product of a training step at ``batch`` (phase:
    forward, weight-grad or input-grad), and (C, H, W, k, stride, padding) of every conv with
    a window larger than 1x1 (its im2col)."""
    from cnncli import build_model
    from cnncli.nn.layers.conv import Conv2d
    from cnncli.nn.layers.dense import Dense

    model = build_model(config, speedups=False)
    out, copies = [], []
    for index, (layer, shape_in, shape_out) in enumerate(
            zip(model.layers, model.input_shapes, model.shapes[1:], strict=True)):
        name = layer.name or f"layer {index + 1}"
        if isinstance(layer, Conv2d):
            if layer.groups != 1:
                continue  # grouped convs: products per group, not in the shipped configs
            kh, kw = layer.kernel_size
            o, rows = layer.out_channels, shape_in[0] * kh * kw
            cols = batch * shape_out[1] * shape_out[2]
            if kh > 1 or kw > 1:
                (top, _), _ = layer.padding_sides(shape_in)
                copies.append((shape_in[0], shape_in[1], shape_in[2], kh, layer.stride[0], top))
        elif isinstance(layer, Dense):
            o, rows, cols = shape_out[0], shape_in[0], batch
        else:
            continue
        out.append((name, "forward", o, rows, cols))       # W @ cols
        out.append((name, "weight-grad", o, cols, rows))   # dy @ cols.T
        if index > 0:  # the first layer's input needs no gradient
            out.append((name, "input-grad", rows, o, cols))  # W.T @ dy
    return out, copies


def time_product(m: int, k: int, n: int, rounds: int) -> float:
    """Median seconds of the faster operand order of an (m x k) @ (k x n) float32 product."""
    import numpy as np

    rng = np.random.default_rng(0)
    best = float("inf")
    for transposed in (False, True):
        if transposed:  # C.T = B.T @ A.T: the same product, the other way round for BLAS
            a = rng.standard_normal((n, k), dtype=np.float32)
            b = rng.standard_normal((k, m), dtype=np.float32)
            out = np.empty((n, m), np.float32)
        else:
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            out = np.empty((m, n), np.float32)
        np.matmul(a, b, out=out)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            times.append(time.perf_counter() - start)
        best = min(best, statistics.median(times))
    return best


def time_im2col(c: int, h: int, w: int, k: int, stride: int, pad: int, batch: int,
                rounds: int) -> float:
    """Median seconds of one im2col copy in cnncli's batch-last layout: the strided view
    (C, k, k, H', W', N) of the padded (C, H+2p, W+2p, N) input into a contiguous buffer."""
    import numpy as np
    from numpy.lib.stride_tricks import as_strided

    x = np.random.default_rng(0).standard_normal((c, h + 2 * pad, w + 2 * pad, batch),
                                                 dtype=np.float32)
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    s = x.strides
    view = as_strided(x, (c, k, k, oh, ow, batch),
                      (s[0], s[1], s[2], s[1] * stride, s[2] * stride, s[3]), writeable=False)
    cols = np.empty(view.shape, np.float32)
    np.copyto(cols, view)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        np.copyto(cols, view)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_times(python: str, config: str, batch: int, steps: int, warmup: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    cmd = ["taskset", "-c", "0", python, str(HERE / "bench_worker.py"), "--framework", "torch",
           "--config", config, "--batch-size", str(batch), "--steps", str(steps),
           "--warmup", str(warmup), "--threads", "1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode:
        raise SystemExit(f"torch worker failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--torch-python", help="a Python with torch==2.13.0, for the side-by-side")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    _pin_one_core()
    sys.path.insert(0, str(ROOT))
    from gemm_peak import blas_kernel, cpu_model

    rows, copies = products(args.config, args.batch_size)
    totals = {"forward": 0.0, "weight-grad": 0.0, "input-grad": 0.0}
    flops = dict.fromkeys(totals, 0)
    print(f"{args.config}, batch {args.batch_size}, one core (CPU 0), BLAS on one thread; "
          f"{cpu_model()}; BLAS kernel {blas_kernel()}; load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| layer | product | M x K x N | ms | GFLOP/s |")
    print("|---|---|---|---:|---:|")
    for name, phase, m, k, n in rows:
        seconds = time_product(m, k, n, args.rounds)
        totals[phase] += seconds
        flops[phase] += 2 * m * k * n
        print(f"| {name} | {phase} | {m} x {k} x {n} | {seconds * 1e3:.2f} | "
              f"{2 * m * k * n / seconds / 1e9:.1f} |")
    train_s, infer_s = sum(totals.values()), totals["forward"]
    print(f"\nmatrix products alone: training step {train_s * 1e3:.1f} ms "
          f"({args.batch_size / train_s:.0f} img/s at best), inference batch "
          f"{infer_s * 1e3:.1f} ms ({args.batch_size / infer_s:.0f} img/s at best); "
          f"{sum(flops.values()) / train_s / 1e9:.1f} GFLOP/s over the step")
    im2col_s = sum(time_im2col(*shape, args.batch_size, args.rounds) for shape in copies)
    print(f"im2col copies of the forward alone: {im2col_s * 1e3:.1f} ms; products + those "
          f"copies: training step {(train_s + im2col_s) * 1e3:.1f} ms, inference batch "
          f"{(infer_s + im2col_s) * 1e3:.1f} ms")
    if args.torch_python:
        ref = torch_times(args.torch_python, args.config, args.batch_size, args.steps,
                          args.warmup)
        torch_train = args.batch_size / ref["train_images_per_s"]
        torch_infer = args.batch_size / ref["infer_images_per_s"]
        print(f"PyTorch on the same core, one thread: training step "
              f"{torch_train * 1e3:.1f} ms, inference batch {torch_infer * 1e3:.1f} ms")
        print(f"best reachable speed vs PyTorch (its step / the products alone): training "
              f"{torch_train / train_s:.2f}x, inference {torch_infer / infer_s:.2f}x; with the "
              f"im2col copies: training {torch_train / (train_s + im2col_s):.2f}x, inference "
              f"{torch_infer / (infer_s + im2col_s):.2f}x")


if __name__ == "__main__":
    main()
