"""The memory estimate (cnncli/nn/memory.py) against the measured NumPy peak of training steps.

    python benchmarks/memory_estimate.py [configs/lenet5.yaml:64 ...]

Each CONFIG:BATCH is built and trained for two steps (the second has the optimizer's state)
under tracemalloc, weights included; prints the estimate, the peak and peak / estimate.
CNNCLI_THREADS=1 keeps the steps in one process (a worker's memory is not traced).
"""

from __future__ import annotations

import sys
import tracemalloc

import numpy as np

from cnncli.config import check_config
from cnncli.inspect.summary import summarize
from cnncli.nn.memory import format_bytes
from cnncli.nn.model import model_from_entries
from cnncli.parallel import threads
from cnncli.training.optim import make_optimizer
from cnncli.training.trainer import train_step

DEFAULT = ["configs/digits.yaml:32", "configs/lenet5.yaml:8", "configs/lenet5.yaml:64",
           "configs/cifar_small.yaml:16", "configs/cifar_small.yaml:64"]


def measure(path: str, batch_size: int) -> tuple[int, int]:
    checked = check_config(path)
    run = checked.run
    estimate = summarize(checked, batch_size=batch_size).memory["total_bytes"]
    tracemalloc.start()
    model = model_from_entries(run.model.input_shape, run.model.entries())
    optimizer = make_optimizer(run.train)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, *run.model.input_shape), dtype=np.float32)
    y = rng.integers(0, model.output_shape[0], batch_size)
    for _ in range(2):
        train_step(model, optimizer, x, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return estimate, peak


def main(specs: list[str]) -> None:
    threads.set_threads(1)
    print("| config | batch | estimate | measured peak | peak / estimate |")
    print("|---|---:|---:|---:|---:|")
    for spec in specs:
        path, _, batch = spec.partition(":")
        estimate, peak = measure(path, int(batch or 64))
        print(f"| {path} | {batch} | {format_bytes(estimate)} | {format_bytes(peak)} | "
              f"{peak / estimate:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
