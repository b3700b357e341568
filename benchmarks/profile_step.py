"""Where a training step's time goes, by kind of work, from cProfile over many steps.

    python benchmarks/profile_step.py configs/lenet5.yaml [--batch-size 64] [--steps 50]

Kinds: the file of cnncli that spends the time: im2col/col2im (nn/kernels.py), conv (the rest
of nn/layers/conv.py: matmuls, bias, padding), batch norm, activations, pooling, dense, add /
concat, graph bookkeeping (nn/model.py), loss, optimizer, other. Time in NumPy (C functions
and NumPy's own Python) counts for the cnncli function that called it. The model runs with
its execution plan but on one thread (cProfile sees only the calling thread), so shares are
of the work, not of the wall time with threads. Percentages are of the profiled steps' total
time; cProfile adds a little overhead per Python call, so small layers look slightly dearer
than they are. Run it with OPENBLAS_NUM_THREADS set to the thread count you care about.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

from cnncli import build_model
from cnncli.parallel import threads
from cnncli.training.optim import SGD
from cnncli.training.trainer import train_step

# (kind, cnncli file suffix, function names or None for every function of the file)
KINDS = [
    ("im2col", "cnncli/nn/kernels.py", {"im2col", "window_view", "pad_into"}),
    ("col2im", "cnncli/nn/kernels.py", {"col2im_add"}),
    ("conv (matmul, bias, pad)", "cnncli/nn/layers/conv.py", None),
    ("conv (matmul, bias, pad)", "cnncli/nn/kernels.py", None),
    ("batch norm", "cnncli/nn/layers/norm.py", None),
    ("activations", "cnncli/nn/layers/activation.py", None),
    ("pooling", "cnncli/nn/layers/pool.py", None),
    ("dense", "cnncli/nn/layers/dense.py", None),
    ("add / concat", "cnncli/nn/layers/merge.py", None),
    ("graph bookkeeping (model.py)", "cnncli/nn/model.py", None),
    ("loss", "cnncli/nn/losses.py", None),
    ("optimizer", "cnncli/training/optim.py", None),
]


def _kind(func) -> str | None:
    path, _, name = func
    path = path.replace("\\", "/")
    for kind, suffix, names in KINDS:
        if path.endswith(suffix) and (names is None or name in names):
            return kind
    return "other" if "/cnncli/" in path else None


def breakdown(stats: pstats.Stats, total: float) -> list[tuple[str, float]]:
    """Seconds per kind: each function's own time, NumPy's counted for its cnncli caller
    (split over several callers as cProfile measured them)."""
    shares: dict = {}

    def owners(func, seen=frozenset()) -> dict[str, float]:
        """{kind: fraction} of ``func``'s time."""
        if func in shares:
            return shares[func]
        kind = _kind(func)
        if kind is not None:
            result = {kind: 1.0}
        else:
            callers = stats.stats[func][4]
            weight = sum(entry[2] for entry in callers.values()) or 1.0
            result = {}
            for caller, entry in callers.items():
                if caller in seen or caller not in stats.stats:
                    continue
                for k, part in owners(caller, seen | {func}).items():
                    result[k] = result.get(k, 0.0) + part * entry[2] / weight
            result = result or {"other": 1.0}
        shares[func] = result
        return result

    seconds = {kind: 0.0 for kind, _, _ in KINDS}
    seconds["other"] = 0.0
    for func, (_, _, own, _, _) in stats.stats.items():
        for kind, part in owners(func).items():
            seconds[kind] += own * part
    seconds["other"] += total - sum(seconds.values())   # cProfile's own and untracked time
    return list(seconds.items())


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
    with threads.serial():  # every part on this thread, where cProfile sees it
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
