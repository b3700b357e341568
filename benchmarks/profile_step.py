"""Where a training step's time goes, by kind of work, from cProfile over many steps.

    python benchmarks/profile_step.py configs/lenet5.yaml [--batch-size 64] [--steps 50]

Kinds: conv matmul (conv forward/backward minus the im2col and col2im they call), im2col,
col2im, pooling, activations, dense, loss, optimizer, other (zero_grad, layout changes,
flatten, dropout, Python glue). Percentages are of the profiled steps' total time; cProfile
adds a little overhead per Python call, so small layers look slightly dearer than they are.
Run it with OPENBLAS_NUM_THREADS set to the thread count you care about.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

from cnncli import build_model
from cnncli.training.optim import SGD
from cnncli.training.trainer import train_step

# (kind, module suffix, function names): cumulative time of these functions.
KINDS = [
    ("im2col", "cnncli/nn/kernels.py", {"im2col"}),
    ("col2im", "cnncli/nn/kernels.py", {"col2im_add"}),
    ("conv (matmul, bias, pad)", "cnncli/nn/layers/conv.py", {"forward", "backward"}),
    ("pooling", "cnncli/nn/layers/pool.py", {"forward", "backward"}),
    ("activations", "cnncli/nn/layers/activation.py", {"forward", "backward"}),
    ("dense", "cnncli/nn/layers/dense.py", {"forward", "backward"}),
    ("loss", "cnncli/nn/losses.py", {"softmax_cross_entropy"}),
    ("optimizer", "cnncli/training/optim.py", {"step"}),
]


def breakdown(stats: pstats.Stats, total: float) -> list[tuple[str, float]]:
    """Seconds per kind; conv excludes the im2col/col2im time it calls."""
    cum = {kind: 0.0 for kind, _, _ in KINDS}
    for (path, _, func), (_, _, _, ct, _) in stats.stats.items():
        for kind, suffix, funcs in KINDS:
            if path.replace("\\", "/").endswith(suffix) and func in funcs:
                cum[kind] += ct
    cum["conv (matmul, bias, pad)"] -= cum["im2col"] + cum["col2im"]
    rows = list(cum.items())
    rows.append(("other", total - sum(cum.values())))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()

    model = build_model(args.config)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size,) + model.input_shape, dtype=np.float32)
    y = rng.integers(0, model.output_shape[0], size=args.batch_size)
    optimizer = SGD(lr=0.01, momentum=0.9)
    for _ in range(5):
        train_step(model, optimizer, x, y)

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(args.steps):
        train_step(model, optimizer, x, y)
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    print(f"{args.config}, batch {args.batch_size}: {1e3 * total / args.steps:.2f} ms per "
          f"profiled step ({args.steps} steps)")
    print("| kind | ms per step | share |\n|---|---:|---:|")
    for kind, seconds in breakdown(stats, total):
        print(f"| {kind} | {1e3 * seconds / args.steps:.2f} | {100 * seconds / total:.0f}% |")


if __name__ == "__main__":
    main()
