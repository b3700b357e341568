"""Where a training step's and an inference batch's time goes: per layer and per phase, and
the conv layers' GFLOP/s as a fraction of this machine's sgemm peak.

    python benchmarks/profile_step.py configs/lenet5.yaml [--batch-size 64] [--steps 30]
        [--threads 1] [--peak GFLOPS]

Wall-clock timers wrap each layer's forward and backward, the conv kernels' phases (im2col,
the matmuls, col2im, padding), the optimizer, the loss, the layout
changes and the data pipeline (the config's batching and augmentation on synthetic images),
so the figures are direct, not sampled. Run with one thread (the default: CNNCLI_THREADS=1,
BLAS on one thread) to attribute the time cleanly; with more, phases that run on several
threads at once add up their threads' time. The peak is one-thread sgemm
(benchmarks/gemm_peak.py's shapes, measured here unless ``--peak`` is given) times the threads.
Speed-ups follow CNNCLI_SPEEDUPS as in cnncli itself; batches are never split over processes
here (every layer must be timed in this process).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

# Thread settings before NumPy or cnncli load.
if __name__ == "__main__":
    _threads = "1"
    for k, arg in enumerate(sys.argv):
        if arg == "--threads" and k + 1 < len(sys.argv):
            _threads = sys.argv[k + 1]
        elif arg.startswith("--threads="):
            _threads = arg.split("=", 1)[1]
    os.environ.setdefault("CNNCLI_THREADS", _threads)
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gemm_peak  # noqa: E402

TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(key: str, fn):
    """fn, adding its wall time to TIMES[key]."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[key] += time.perf_counter() - start
            CALLS[key] += 1
    wrapper.__wrapped__ = fn
    return wrapper


class TimedNumpy:
    """Stands in for ``np`` in one module: its matmul is timed under ``key``."""

    def __init__(self, key: str):
        self.matmul = timed(key, np.matmul)

    def __getattr__(self, name):
        return getattr(np, name)


def instrument_library() -> None:
    """Timers around the kernels' phases, wherever cnncli defines them."""
    import cnncli.nn.kernels as kernels
    import cnncli.nn.layers.conv as conv
    import cnncli.nn.layers.dense as dense
    import cnncli.nn.model as model_module

    for name, phase in (("im2col", "im2col"), ("col2im_add", "col2im"), ("pad_into", "pad")):
        setattr(kernels, name, timed(phase, getattr(kernels, name)))
    kernels.Im2col.fill = timed("im2col", kernels.Im2col.fill)  # the layers' kept views
    conv.np = TimedNumpy("conv GEMM")
    dense.np = TimedNumpy("dense GEMM")
    for name in ("to_internal", "from_internal"):
        setattr(model_module, name, timed("layout", getattr(model_module, name)))


def instrument_model(model) -> list[str]:
    """Per-instance timers on each layer's forward and backward; returns the layer keys."""
    keys = []
    for index, (layer, label) in enumerate(zip(model.layers, model.labels, strict=True)):
        key = f"{index:02d} {label}"
        keys.append(key)
        layer.forward = timed(f"{key}|fwd", layer.forward)
        layer.backward = timed(f"{key}|bwd", layer.backward)
    return keys


def reset() -> None:
    TIMES.clear()
    CALLS.clear()


def kind_of(layer) -> str:
    from cnncli.nn.layers.activation import Activation
    from cnncli.nn.layers.conv import Conv2d
    from cnncli.nn.layers.dense import Dense
    from cnncli.nn.layers.pool import GlobalPool, WindowPool

    for cls, kind in ((Conv2d, "conv"), (WindowPool, "pool"), (GlobalPool, "pool"),
                      (Activation, "activation"), (Dense, "dense")):
        if isinstance(layer, cls):
            return kind
    return "other layers"


def measure_peak(threads: int) -> float:
    best = max(gemm_peak.gflops(m, k, n, 0.2) for label, m, k, n in gemm_peak.SHAPES
               if label.startswith("square"))
    return best * threads


def data_seconds(config_path: str, batch: int, steps: int) -> float:
    """Seconds per batch of the training data pipeline (shuffled indexing, the config's
    augmentation) on synthetic images of the model's input shape."""
    from cnncli.config import resolve_config
    from cnncli.data import iterate_batches

    run = resolve_config(config_path)
    shape = tuple(run.model.input_shape)
    rng = np.random.default_rng(0)
    count = batch * (steps + 1)
    x = rng.standard_normal((count,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, size=count)
    start = time.perf_counter()
    for _ in iterate_batches(x, y, batch, rng, augment=run.data.augment):
        pass
    return (time.perf_counter() - start) / (steps + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1,
                    help="cnncli threads (BLAS stays on one); 1 attributes time cleanly")
    ap.add_argument("--peak", type=float, help="one-thread sgemm GFLOP/s (default: measure)")
    args = ap.parse_args()

    import cnncli.nn.model as model_module
    from cnncli import build_model
    from cnncli.nn.losses import softmax_cross_entropy
    from cnncli.parallel import threads
    from cnncli.training import trainer
    from cnncli.training.optim import SGD

    threads.set_threads(args.threads)
    peak = (args.peak * args.threads) if args.peak else measure_peak(args.threads)
    instrument_library()
    model = build_model(args.config)
    keys = instrument_model(model)
    model_module.softmax_cross_entropy = timed("loss", softmax_cross_entropy)
    rng = np.random.default_rng(0)
    n = args.batch_size
    x = rng.standard_normal((n,) + model.input_shape, dtype=np.float32)
    y = rng.integers(0, model.output_shape[0], size=n)
    optimizer = SGD(lr=0.01, momentum=0.9)
    optimizer.step = timed("optimizer", optimizer.step)

    results = {}
    for mode in ("train", "infer"):
        def run(mode=mode):
            if mode == "train":
                trainer.train_step(model, optimizer, x, y)
            else:
                model.forward(x, train=False)
        for _ in range(5):
            run()
        reset()
        start = time.perf_counter()
        for _ in range(args.steps):
            run()
        total = (time.perf_counter() - start) / args.steps
        results[mode] = (total, {k: v / args.steps for k, v in TIMES.items()})
    data = data_seconds(args.config, n, args.steps)

    speed = os.environ.get("CNNCLI_SPEEDUPS", "on")
    print(f"{args.config}, batch {n}, {args.threads} thread(s), speed-ups {speed}; "
          f"CPU {gemm_peak.cpu_model()}; BLAS {gemm_peak.blas_kernel()}; "
          f"{gemm_peak.blas_variables()}; sgemm peak {peak:.1f} GFLOP/s "
          f"({args.threads} x one thread); load average {os.getloadavg()[0]:.2f}")
    train_total, train = results["train"]
    infer_total, infer = results["infer"]
    print(f"\ntraining step {1e3 * train_total:.2f} ms ({n / train_total:.0f} images/s), "
          f"inference batch {1e3 * infer_total:.2f} ms ({n / infer_total:.0f} images/s)\n")

    print("| layer | kind | train fwd ms | train bwd ms | infer ms | conv GFLOP/s train "
          "(% peak) | conv GFLOP/s infer (% peak) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    by_kind = defaultdict(lambda: [0.0, 0.0])
    conv_flops = 0.0
    for key, layer, shape in zip(keys, model.layers, model.shapes, strict=False):
        fwd, bwd = train.get(f"{key}|fwd", 0.0), train.get(f"{key}|bwd", 0.0)
        inf = infer.get(f"{key}|fwd", 0.0)
        kind = kind_of(layer)
        by_kind[kind][0] += fwd + bwd
        by_kind[kind][1] += inf
        cells = ["", ""]
        if kind == "conv":
            flops = 2.0 * layer.macs(shape) * n
            conv_flops += flops
            # backward: the weight gradient, plus the input gradient unless it is the first
            # layer (whose dx nobody needs)
            back = flops * (1 if key == keys[0] else 2)
            rate_train = (flops + back) / (fwd + bwd) / 1e9
            rate_infer = flops / inf / 1e9
            cells = [f"{rate_train:.1f} ({100 * rate_train / peak:.0f}%)",
                     f"{rate_infer:.1f} ({100 * rate_infer / peak:.0f}%)"]
        print(f"| {key[3:]} | {kind} | {1e3 * fwd:.3f} | {1e3 * bwd:.3f} | {1e3 * inf:.3f} | "
              f"{cells[0]} | {cells[1]} |")

    print("\nper phase, ms per step/batch (share of the whole); conv's own rows are inside "
          "its layers' time\n")
    print("| phase | training step | share | inference batch | share |")
    print("|---|---:|---:|---:|---:|")

    def row(name, t, i):
        print(f"| {name} | {1e3 * t:.3f} | {100 * t / train_total:.0f}% | {1e3 * i:.3f} | "
              f"{100 * i / infer_total:.0f}% |")

    conv_parts = ["im2col", "conv GEMM", "col2im", "pad"]
    conv_t, conv_i = by_kind.pop("conv", [0.0, 0.0])
    for phase in conv_parts:
        row(f"conv: {phase}", train.get(phase, 0.0), infer.get(phase, 0.0))
    row("conv: rest (bias and its gradient, buffers, glue)",
        conv_t - sum(train.get(p, 0.0) for p in conv_parts),
        conv_i - sum(infer.get(p, 0.0) for p in conv_parts))
    for kind in ("pool", "activation", "dense", "other layers"):
        t, i = by_kind.get(kind, [0.0, 0.0])
        row(kind, t, i)
    row("loss", train.get("loss", 0.0), 0.0)
    row("optimizer", train.get("optimizer", 0.0), 0.0)
    row("layout (NCHW <-> batch-last)", train.get("layout", 0.0), infer.get("layout", 0.0))
    layers_t = sum(v for k, v in train.items() if "|" in k)
    layers_i = sum(v for k, v in infer.items() if "|" in k)
    row("rest (zero_grad, argmax, Python)",
        train_total - layers_t - sum(train.get(k, 0.0) for k in ("loss", "optimizer",
                                                                 "layout")),
        infer_total - layers_i - infer.get("layout", 0.0))
    print(f"| data (batching + augmentation; not in the step) | {1e3 * data:.3f} | "
          f"{100 * data / train_total:.0f}% | | |")
    train_flops = 3 * conv_flops  # forward, weight gradient, input gradient (nearly)
    print(f"\nend to end: conv FLOPs over the whole step {train_flops / train_total / 1e9:.1f} "
          f"GFLOP/s = {100 * train_flops / train_total / 1e9 / peak:.0f}% of peak (training), "
          f"{conv_flops / infer_total / 1e9:.1f} GFLOP/s = "
          f"{100 * conv_flops / infer_total / 1e9 / peak:.0f}% (inference)")


if __name__ == "__main__":
    main()
