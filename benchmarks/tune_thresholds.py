"""Where each of cnncli's speed-ups starts to pay: the figures behind cnncli/parallel/thresholds.py.

For every threshold it times the same work with the speed-up forced off and forced on (by
setting the constant to 0 or to a huge value in this process) over a range of sizes, and
prints the medians, the ratio (plain time / sped-up time: above 1 means the speed-up pays)
and the smallest size from which it pays at every larger size measured. Run it on an idle
machine with cnncli's default threads (one per core); figures from a shared machine move
between runs, so compare the crossover with the current value rather than copy it blindly.

    python benchmarks/tune_thresholds.py [--repeats 15] [--only conv_threads,chunks]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import cnncli  # noqa: F401  (before NumPy: sets BLAS threads)

# isort: split
import numpy as np

from cnncli.nn.layers.activation import ReLU
from cnncli.nn.layers.base import to_internal
from cnncli.nn.layers.conv import Conv2d
from cnncli.nn.model import model_from_entries
from cnncli.parallel import threads, thresholds
from cnncli.parallel.plan import apply_plan, split_model, wait_for_inference_worker
from cnncli.training.optim import SGD
from cnncli.training.trainer import train_step

HUGE = 1 << 62
LENET = [{"type": "conv2d", "out_channels": 6, "kernel_size": 5, "padding": 2,
          "activation": "relu"},
         {"type": "maxpool2d", "kernel_size": 2},
         {"type": "conv2d", "out_channels": 16, "kernel_size": 5, "activation": "relu"},
         {"type": "maxpool2d", "kernel_size": 2},
         {"type": "flatten"},
         {"type": "dense", "units": 120, "activation": "relu"},
         {"type": "dense", "units": 84, "activation": "relu"},
         {"type": "dense", "units": 10}]


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def with_threshold(name: str, value, fn):
    """fn() with thresholds.<name> set to value."""
    before = getattr(thresholds, name)
    setattr(thresholds, name, value)
    try:
        return fn()
    finally:
        setattr(thresholds, name, before)


def crossover(rows: list[tuple]) -> str:
    """The smallest size from which every ratio is above 1 (rows: size, plain, fast, ratio)."""
    for k, row in enumerate(rows):
        if all(r[3] > 1.0 for r in rows[k:]):
            return f"{row[0]:,}"
    return "none measured"


def report(title: str, unit: str, rows: list[tuple], current) -> None:
    print(f"\n{title}  (current value {current:,})")
    print(f"  {unit:>14}  {'plain ms':>9}  {'sped-up ms':>10}  {'ratio':>6}")
    for size, plain, fast, ratio in rows:
        print(f"  {size:>14,}  {plain:>9.3f}  {fast:>10.3f}  {ratio:>6.2f}")
    print(f"  pays from: {crossover(rows)}")


def toggled(name: str, off, on, fn, repeats: int) -> tuple[float, float, float]:
    plain = with_threshold(name, off, lambda: median_ms(fn, repeats))
    fast = with_threshold(name, on, lambda: median_ms(fn, repeats))
    return plain, fast, plain / fast


def _conv(c, o, size, batch, k=3, pad=1):
    layer = apply_plan_layer(Conv2d(o, k, padding=pad), (c, size, size))
    x = to_internal(np.random.default_rng(0).standard_normal((batch, c, size, size),
                                                              dtype=np.float32))
    return layer, x


def apply_plan_layer(layer, shape):
    """A layer built for ``shape`` with the plan's threaded splitter."""
    model = apply_plan(model_from_entries(shape, [layer.get_config()]))
    return model.layers[0]


# ---------------------------------------------------------------- the measurements

def min_elements(repeats):
    rows = []
    for log2 in range(15, 23):
        relu = apply_plan_layer(ReLU(), (64, 8, 8))
        n = 2**log2 // (64 * 64)
        x = np.random.default_rng(0).standard_normal((64, 8, 8, max(n, 1)), dtype=np.float32)
        size = x.size
        rows.append((size, *toggled("MIN_ELEMENTS", HUGE, 0,
                                    partial(relu.forward, x, train=True), repeats)))
    report("MIN_ELEMENTS: ReLU forward on threads", "elements", rows, thresholds.MIN_ELEMENTS)


def conv_threads(repeats):
    rows = []
    for batch in (4, 8, 16, 32, 64, 128):
        layer, x = _conv(16, 32, 16, batch)
        macs = layer.macs((16, 16, 16)) * batch
        rows.append((macs, *toggled("CONV_THREADS_MIN_MACS", HUGE, 0,
                                    partial(layer.forward, x, train=True), repeats)))
    report("CONV_THREADS_MIN_MACS: conv forward pieces on threads", "macs", rows,
           thresholds.CONV_THREADS_MIN_MACS)


def conv_pair(repeats):
    rows = []
    for batch in (2, 4, 8, 16, 32, 64):
        layer, x = _conv(16, 16, 16, batch)
        y = layer.forward(x, train=True)
        dy = np.ones_like(y)
        macs = 2 * layer.macs((16, 16, 16)) * batch
        rows.append((macs, *toggled("CONV_PAIR_MIN_MACS", HUGE, 0,
                                    partial(layer.backward, dy), repeats)))
    report("CONV_PAIR_MIN_MACS: conv weight and input gradients at once", "macs", rows,
           thresholds.CONV_PAIR_MIN_MACS)


def _train_ms(layer, x, repeats):
    def step():
        y = layer.forward(x, train=True)
        layer.backward(np.ones_like(y))
    return median_ms(step, repeats)


def im2col_pieces(repeats):
    print(f"\nIM2COL_PIECE_BYTES: conv forward + backward by piece size  (current value "
          f"{thresholds.IM2COL_PIECE_BYTES:,})")
    for label, (c, o, size, batch) in {"32->32 3x3 on 32x32, batch 64": (32, 32, 32, 64),
                                       "6->16 5x5 on 14x14, batch 64": (6, 16, 14, 64)}.items():
        layer, x = _conv(c, o, size, batch, k=3 if c == 32 else 5, pad=1 if c == 32 else 0)
        times = {piece: with_threshold("IM2COL_PIECE_BYTES", piece,
                                       partial(_train_ms, layer, x, repeats))
                 for piece in (2**18, 2**19, 2**20, 2**21, 2**23, 2**26)}
        best = min(times, key=times.get)
        print(f"  {label}: " + ", ".join(f"{p // 1024} KiB {t:.2f} ms" for p, t in times.items())
              + f"; fastest {best // 1024} KiB")


def split_k(repeats):
    rows = []
    for batch in (8, 16, 32, 64, 128):
        layer, x = _conv(1, 6, 28, batch, k=5, pad=2)
        y = layer.forward(x, train=True)
        dy = np.ones_like(y)
        length = 28 * 28 * batch
        rows.append((length, *toggled("SPLIT_K_MIN", HUGE, 0,
                                      partial(layer.backward, dy, need_dx=False), repeats)))
    step = layer._split_k_step(25 + 6, HUGE)
    report(f"SPLIT_K_MIN: LeNet conv1 weight gradient cut in pieces of {step:,} columns "
           f"(SPLIT_K_BYTES {thresholds.SPLIT_K_BYTES:,})", "long axis", rows,
           thresholds.SPLIT_K_MIN)


def whole_dcols(repeats):
    rows = []
    for batch in (8, 16, 32, 64, 128):
        layer, x = _conv(16, 32, 16, batch, k=3, pad=1)
        layer._dx_by_correlation = lambda: False  # the col2im path this threshold is for
        y = layer.forward(x, train=True)
        dy = np.ones_like(y)
        cols_bytes = 16 * 3 * 3 * 16 * 16 * batch * 4  # C*kh*kw by H'*W'*N, float32
        rows.append((cols_bytes, *toggled("WHOLE_DCOLS_BYTES", 0, HUGE,
                                          partial(layer._input_grad, dy,
                                                  layer._chunks(16, 16, 16, batch)),
                                          repeats)))
    report("WHOLE_DCOLS_BYTES: input gradient over all rows at once", "cols bytes", rows,
           thresholds.WHOLE_DCOLS_BYTES)


def chunks(repeats):
    rows = []
    model = apply_plan(model_from_entries((1, 28, 28), LENET))
    for batch in (32, 48, 64, 96, 128, 256):
        x = np.random.default_rng(0).standard_normal((batch, 1, 28, 28), dtype=np.float32)
        rows.append((batch, *toggled("CHUNK_MIN_IMAGES", HUGE, 1,
                                     partial(model.forward, x, train=False), repeats)))
    report("CHUNK_MIN_IMAGES: LeNet-5 inference in one chunk per thread", "batch", rows,
           thresholds.CHUNK_MIN_IMAGES)
    rows = []
    for channels in (8, 16, 32, 64):
        net = model_from_entries((16, 32, 32), [
            {"type": "conv2d", "out_channels": channels, "kernel_size": 3, "padding": 1,
             "activation": "relu"}, {"type": "maxpool2d", "kernel_size": 2},
            {"type": "flatten"}, {"type": "dense", "units": 10}])
        net = apply_plan(net)
        x = np.random.default_rng(0).standard_normal((64, 16, 32, 32), dtype=np.float32)
        macs = net.layers[0].macs(net.shapes[0]) * 64
        rows.append((macs, *with_threshold("CHUNK_MIN_IMAGES", 1, partial(
            toggled, "CHUNK_MAX_MACS", 0, HUGE, partial(net.forward, x, train=False),
            repeats))))
    report("CHUNK_MAX_MACS: chunks vs threads inside a conv, batch 64 (ratio > 1: chunks "
           "pay)", "conv macs", rows, thresholds.CHUNK_MAX_MACS)


def processes(repeats):
    rows = []
    nets = {"dense 64-32": ((1, 8, 8), [{"type": "flatten"},
                                        {"type": "dense", "units": 64, "activation": "relu"},
                                        {"type": "dense", "units": 10}]),
            "digits conv": ((1, 8, 8), [{"type": "conv2d", "out_channels": 16,
                                         "kernel_size": 3, "padding": 1,
                                         "activation": "relu"},
                                        {"type": "maxpool2d", "kernel_size": 2},
                                        {"type": "flatten"}, {"type": "dense", "units": 10}]),
            "LeNet-5": ((1, 28, 28), LENET)}
    for name, (shape, entries) in nets.items():
        for batch in (64, 128):
            model = apply_plan(model_from_entries(shape, entries))
            rng = np.random.default_rng(0)
            x = rng.standard_normal((batch,) + shape, dtype=np.float32)
            y = rng.integers(0, 10, size=batch)
            optimizer = SGD(lr=0.01)
            plain = median_ms(partial(train_step, model, optimizer, x, y), repeats)
            split = with_threshold("PROCESS_MIN_MACS", 0, partial(split_model, model, batch))
            if split is None:
                print(f"\nPROCESS_MIN_MACS: no worker process here (needs Linux, 2 usable "
                      f"cores and 2 cnncli threads; {threads.usable_cores()} cores, "
                      f"{threads.get_threads()} threads)")
                return
            with split:
                fast = median_ms(partial(train_step, split, optimizer, x, y), repeats)
            macs = sum(layer.macs(s) for layer, s in zip(model.layers, model.shapes,
                                                         strict=False)) * (batch // 2)
            rows.append((macs, plain, fast, plain / fast))
            print(f"  ({name}, batch {batch}: {macs:,} multiply-adds per half batch)")
    rows.sort()
    report("PROCESS_MIN_MACS: training the second half of each batch in a worker process",
           "half macs", rows, thresholds.PROCESS_MIN_MACS)


def _split_inference(model, x, repeats) -> tuple[float, float, float]:
    """(chunks on threads ms, halves with a worker process ms, ratio) for ``x``."""
    forward = partial(model.forward, x, train=False)
    plain = with_threshold("INFERENCE_PROCESS_MIN_MACS", HUGE,
                           lambda: median_ms(forward, repeats))
    before = thresholds.INFERENCE_PROCESS_MIN_MACS, thresholds.INFERENCE_PROCESS_MIN_IMAGES
    thresholds.INFERENCE_PROCESS_MIN_MACS, thresholds.INFERENCE_PROCESS_MIN_IMAGES = 0, 1
    try:
        forward()
        if not wait_for_inference_worker(model):  # its worker runs before the timing starts
            raise SystemExit("INFERENCE_PROCESS_MIN_MACS: no worker process here (needs "
                             "Linux, 2 usable cores and 2 cnncli threads)")
        fast = median_ms(forward, repeats)
    finally:
        thresholds.INFERENCE_PROCESS_MIN_MACS, thresholds.INFERENCE_PROCESS_MIN_IMAGES = before
    return plain, fast, plain / fast


def inference_processes(repeats):
    rows = []
    for config, sizes in (("configs/digits.yaml", (32, 64, 256)),
                          ("configs/lenet5.yaml", (16, 32, 64, 128, 256)),
                          ("configs/cifar_small.yaml", (8, 16, 32, 64))):
        with cnncli.build_model(config) as model:
            per_image = sum(layer.macs(s) for layer, s in zip(model.layers, model.shapes,
                                                              strict=False))
            for batch in sizes:
                x = np.random.default_rng(0).standard_normal((batch,) + model.input_shape,
                                                             dtype=np.float32)
                rows.append((per_image * (batch // 2), *_split_inference(model, x, repeats)))
                print(f"  ({config}, batch {batch}: {rows[-1][0]:,} multiply-adds per half)")
    rows.sort()
    report("INFERENCE_PROCESS_MIN_MACS: an inference batch's second half in a worker process "
           "(plain: as chunks on threads)", "half macs", rows,
           thresholds.INFERENCE_PROCESS_MIN_MACS)


MEASUREMENTS = {"min_elements": min_elements, "conv_threads": conv_threads,
                "conv_pair": conv_pair, "im2col_pieces": im2col_pieces, "split_k": split_k,
                "whole_dcols": whole_dcols, "chunks": chunks, "processes": processes,
                "inference_processes": inference_processes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed repetitions per point")
    ap.add_argument("--only", default="", help="comma-separated subset of "
                    + ", ".join(MEASUREMENTS))
    args = ap.parse_args()
    chosen = [m for m in args.only.split(",") if m] or list(MEASUREMENTS)
    unknown = [m for m in chosen if m not in MEASUREMENTS]
    if unknown:
        raise SystemExit(f"unknown measurement {unknown[0]!r}; choose from "
                         + ", ".join(MEASUREMENTS))
    print(f"cnncli threads {threads.get_threads()}, usable cores {threads.usable_cores()}, "
          f"median of {args.repeats} runs per point, float32")
    for name in chosen:
        MEASUREMENTS[name](args.repeats)


if __name__ == "__main__":
    main()
