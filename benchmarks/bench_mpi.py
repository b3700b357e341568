"""Training throughput on 1 and 2 MPI ranks, and the bytes each rank exchanges per step.

    python benchmarks/bench_mpi.py [--configs configs/digits.yaml ...] [--steps 20]
                                   [--rounds 3]

For each config: training steps on random images at the config's batch size, timed in one
plain process (cnncli's default speed path: threads or a worker process where they pay) and
on 2 ranks under ``mpiexec -n 2`` (one thread each), in interleaved rounds, the medians side
by side with their ratio and the median of the per-round ratios; then the
bytes one rank sends per step (logits, batch-norm sums, the flat gradient buffer) and the
seconds per step it spends in exchanges (waiting for the other rank included) against the
step time. AlexNet and ResNet-18 (224x224 inputs) are not timed on 2 ranks unless
--time-big: their bytes per step come from the model alone (the same formula, checked on the
timed ones). Last, the scaling table of docs/distributed.md: one core's seconds per image (one
process, CNNCLI_THREADS=1; the 224x224 ones on a batch of 4) against the gradient exchange of
a gather over a ring on 8 and 64 ranks at 10 and 100 Gb/s. Needs the [mpi] extra. Figures go
to RESULTS.md and docs/distributed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["configs/digits.yaml", "configs/lenet5.yaml", "configs/cifar_small.yaml",
           "configs/dense_digits.yaml", "configs/resnet20_cifar.yaml", "configs/alexnet.yaml",
           "configs/resnet18.yaml"]
BIG = ("alexnet", "resnet18")


def _model_and_batch(config_path: str):
    from cnncli.config import check_config
    from cnncli.nn.model import model_from_entries

    run = check_config(config_path).run
    model = model_from_entries(run.model.input_shape, run.model.entries(), seed=0)
    return model, run.train.batch_size, run.name


def expected_bytes(model, batch: int, ranks: int) -> int:
    """What one rank sends per training step (parallel/mpi.py): its padded logits, two sums
    per batch-norm channel forward (mean, variance) plus a count, two backward, and the flat
    gradient buffer."""
    from cnncli.nn.layers.norm import _BatchNorm

    itemsize = model.dtype.itemsize
    widest = -(-batch // ranks)
    sent = widest * int(model.output_shape[0]) * itemsize
    for layer, shape in zip(model.layers, model.shapes, strict=False):
        if isinstance(layer, _BatchNorm):
            sent += 8 + 4 * int(shape[0]) * itemsize
    sent += sum(value.size for _, value, _ in model.parameters()) * itemsize
    return sent


def worker(config_path: str, steps: int, warmup: int, batch: int | None = None) -> None:
    """One rank (or the one process): time ``steps`` training steps; rank 0 prints JSON."""
    import numpy as np

    from cnncli.parallel import mpi
    from cnncli.parallel.plan import apply_plan, plan_training
    from cnncli.training.optim import SGD
    from cnncli.training.trainer import train_step

    model, config_batch, name = _model_and_batch(config_path)
    batch = batch or config_batch
    world = mpi.world()
    if world is None:
        stepper = plan_training(model, batch) or model
    else:
        stepper = mpi.RankSliceModel(apply_plan(model), world)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + tuple(model.input_shape)).astype(model.dtype)
    y = rng.integers(0, int(model.output_shape[0]), size=batch)
    optimizer = SGD(lr=0.01, momentum=0.9)
    for _ in range(warmup):
        train_step(stepper, optimizer, x, y)
    sent, waited = (world.bytes_sent, world.exchange_seconds) if world else (0, 0.0)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(stepper, optimizer, x, y)
    seconds = (time.perf_counter() - started) / steps
    if hasattr(stepper, "close"):
        stepper.close()
    if world is None or world.rank == 0:
        ranks = 1 if world is None else world.size
        print(json.dumps({
            "name": name, "ranks": ranks, "batch": batch, "step_seconds": seconds,
            "images_per_second": batch / seconds,
            "bytes_per_step": (world.bytes_sent - sent) / steps if world else 0,
            "expected_bytes_per_step": expected_bytes(model, batch, ranks) if world else 0,
            "exchange_seconds_per_step": (world.exchange_seconds - waited) / steps
            if world else 0.0,
            "parameters": sum(v.size for _, v, _ in model.parameters())}), flush=True)


def _mpiexec() -> str:
    found = (shutil.which("mpiexec", path=os.path.dirname(sys.executable))
             or shutil.which("mpiexec"))
    if found is None:
        sys.exit("needs mpiexec and mpi4py: pip install 'cnncli[mpi]'")
    return found


def _measure(config: str, ranks: int, steps: int, warmup: int, batch: int | None = None,
             **env_extra) -> dict:
    me = [sys.executable, __file__, "--worker", config, "--steps", str(steps),
          "--warmup", str(warmup)] + (["--batch", str(batch)] if batch else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "OMPI", "PMIX"))}
    env.update(env_extra)
    command = me if ranks == 1 else [_mpiexec(), "-n", str(ranks), *me]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--time-big", action="store_true",
                        help="time AlexNet and ResNet-18 too (slow)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.worker:
        worker(args.worker, args.steps, args.warmup, args.batch)
        return
    print(f"{'config':<12} {'batch':>5} {'1 process img/s':>16} {'2 ranks img/s':>14} "
          f"{'ratio':>6} {'per-round':>9} {'bytes/step/rank':>16} {'exchange s/step':>16} "
          f"{'step s':>8}")
    for config in args.configs:
        model, batch, name = _model_and_batch(config)
        if name in BIG and not args.time_big:
            print(f"{name:<12} {batch:>5} {'-':>16} {'-':>14} {'-':>6} {'-':>9} "
                  f"{expected_bytes(model, batch, 2):>16,} {'-':>16} {'-':>8}")
            continue
        ones, twos = [], []
        for _ in range(args.rounds):
            ones.append(_measure(config, 1, args.steps, args.warmup))
            twos.append(_measure(config, 2, args.steps, args.warmup))
            assert twos[-1]["bytes_per_step"] == twos[-1]["expected_bytes_per_step"], twos[-1]
        one, two = (statistics.median(r["images_per_second"] for r in runs)
                    for runs in (ones, twos))
        per_round = statistics.median(b["images_per_second"] / a["images_per_second"]
                                      for a, b in zip(ones, twos, strict=True))
        exchange, step = (statistics.median(r[key] for r in twos)
                          for key in ("exchange_seconds_per_step", "step_seconds"))
        print(f"{name:<12} {batch:>5} {one:>16,.0f} {two:>14,.0f} {two / one:>6.2f} "
              f"{per_round:>9.2f} {int(twos[0]['bytes_per_step']):>16,} {exchange:>16.5f} "
              f"{step:>8.4f}")
    scaling(args.configs, args.steps, args.warmup)


NETWORKS = {"10 Gb/s": 1.25e9, "100 Gb/s": 12.5e9}  # bytes per second


def scaling(configs: list[str], steps: int, warmup: int) -> None:
    """Compute per step (one core's time for the global batch / N) against the gradient
    gather's (N - 1) G bytes per rank, bandwidth only."""
    print(f"\n{'config':<12} {'1 core s/img':>12} {'ranks':>5} {'compute s/step':>14} "
          + " ".join(f"{'exchange ' + k:>18}" for k in NETWORKS))
    for config in configs:
        model, batch, name = _model_and_batch(config)
        big = name in BIG
        one = _measure(config, 1, 2 if big else steps, 1 if big else warmup,
                       batch=4 if big else None, CNNCLI_THREADS="1")
        per_image = one["step_seconds"] / one["batch"]
        for ranks in (8, 64):
            gathered = (ranks - 1) * expected_bytes(model, batch, ranks)
            print(f"{name:<12} {per_image:>12.5f} {ranks:>5} {per_image * batch / ranks:>14.4f} "
                  + " ".join(f"{gathered / speed:>18.4f}" for speed in NETWORKS.values()))


if __name__ == "__main__":
    main()
