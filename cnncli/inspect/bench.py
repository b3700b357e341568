"""Timing a model on synthetic data, like ``caffe time``: per layer, whole steps, memory.

Returns plain data (``BenchResult``); the CLI renders it. Three timed phases, each after
``warmup`` untimed repetitions: whole training steps exactly as ``cnncli train`` runs them
(forward, loss, backward, SGD update), the same steps with a clock around every layer's
forward and backward, and inference forwards. Figures are medians over ``steps``.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field

import numpy as np

from cnncli.errors import ConfigError
from cnncli.inspect.walk import walk
from cnncli.nn.losses import softmax_cross_entropy
from cnncli.nn.memory import check_memory
from cnncli.parallel import threads
from cnncli.parallel.plan import plan_training, wait_for_inference_worker
from cnncli.training.memory import still_needed
from cnncli.training.optim import SGD
from cnncli.training.trainer import train_step

MATMUL_SIZE = 2048


@dataclass
class LayerTiming:
    """Median milliseconds of one layer's forward and backward pass over the timed steps.

    ``*_gflops`` is the achieved rate of layers that multiply (conv, dense), else None.
    """

    name: str
    type: str
    forward_ms: float
    backward_ms: float
    output_shape: list
    forward_gflops: float | None = None
    backward_gflops: float | None = None


@dataclass
class BenchResult:
    """Everything ``cnncli bench`` reports; ``to_json`` gives the documented schema."""

    batch_size: int
    steps: int
    warmup: int
    threads: int | None
    cnncli_threads: int
    train_step_ms: float
    train_step_ms_min: float
    train_step_ms_max: float
    train_images_per_s: float
    infer_batch_ms: float
    infer_images_per_s: float
    peak_rss_mb: float
    step_numpy_peak_mb: float
    matmul_peak_gflops: float | None
    matmul_peak_all_cores_gflops: float | None
    #: Peak resident set of the worker process that trains each batch's second half
    #: (``processes``), None when training runs in one process.
    worker_peak_rss_mb: float | None = None
    layers: list[LayerTiming] = field(default_factory=list)
    #: How the run differs from the config's reading, e.g. a ReLU that runs after its pool.
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        out = asdict(self)
        out["layers"] = [asdict(t) for t in self.layers]
        return out


# ---------------------------------------------------------------- machine facts

def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (``getrusage`` ru_maxrss), in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def blas_threads() -> int | None:
    """Threads the BLAS library will use, if threadpoolctl can tell (else the env var)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        value = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
        return int(value) if value and value.isdigit() else None
    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return counts[0] if counts else None


def matmul_peak_gflops(size: int = MATMUL_SIZE, repeats: int = 3) -> float:
    """Best float32 rate of a size x size matmul: the machine's practical BLAS ceiling."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)  # warm-up: threads started, pages touched
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def all_cores_matmul_peak() -> float | None:
    """The same probe with BLAS on every core (needs threadpoolctl); None if BLAS already
    uses them all or its threads cannot be changed here."""
    cores = os.cpu_count() or 1
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    if (blas_threads() or cores) >= cores:
        return None
    with threadpool_limits(limits=cores, user_api="blas"):
        return matmul_peak_gflops()


# ---------------------------------------------------------------- timing

def _synthetic_batch(model, batch_size: int, rng: np.random.Generator):
    """Standard-normal images and uniform labels shaped for ``model``."""
    classes = model.output_shape
    if len(classes) != 1:
        raise ConfigError(f"bench needs a model that ends in class scores (N, classes), but it "
                          f"outputs per-sample shape {list(classes)}",
                          hint="end the model with flatten and dense layers")
    x = rng.standard_normal((batch_size,) + model.input_shape, dtype=np.float32)
    y = rng.integers(0, classes[0], size=batch_size)
    return x.astype(model.dtype, copy=False), y


def _median_ms(seconds: list[float]) -> float:
    return float(np.median(seconds)) * 1e3 if seconds else 0.0


def _time_train_steps(model, optimizer, x, y, steps: int, warmup: int) -> list[float]:
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        train_step(model, optimizer, x, y)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def _time_inference(model, x, steps: int, warmup: int) -> list[float]:
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        model.predict_logits(x, batch_size=len(x))  # as eval and predict run it
        if i == 0:  # a worker process for inference starts on the first batch
            wait_for_inference_worker(model)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def _time_layers(model, optimizer, x, y, steps: int, warmup: int):
    """Per-layer forward/backward seconds of training steps, as lists per layer."""
    n_layers = len(model.layers)
    fwd = [[] for _ in range(n_layers)]
    bwd = [[] for _ in range(n_layers)]
    for i in range(warmup + steps):
        keep = i >= warmup
        model.zero_grad()
        # The model's own walk (chain or graph, in run_order), each layer's calls timed.
        timed = [_TimedLayer(layer, fwd[k] if keep else [], bwd[k] if keep else [])
                 for k, layer in enumerate(model.layers)]
        logits = model.forward_through(timed, x.astype(model.dtype, copy=False), True)
        _, dlogits = softmax_cross_entropy(logits, y)
        model.backward_through(timed, dlogits.astype(model.dtype, copy=False), False)
        optimizer.step(model.parameters())
    return fwd, bwd


class _TimedLayer:
    """A layer whose forward and backward append their seconds to two lists."""

    def __init__(self, layer, forward_times: list, backward_times: list):
        self.layer, self.forward_times, self.backward_times = layer, forward_times, backward_times

    def __getattr__(self, name):
        return getattr(self.layer, name)

    def forward(self, h, train=False):
        start = time.perf_counter()
        out = self.layer.forward(h, train=train)
        self.forward_times.append(time.perf_counter() - start)
        return out

    def backward(self, g, need_dx=True):
        start = time.perf_counter()
        out = self.layer.backward(g, need_dx=need_dx)
        self.backward_times.append(time.perf_counter() - start)
        return out


def _step_numpy_peak_mb(model, optimizer, x, y) -> float:
    """Peak NumPy allocation during one training step (tracemalloc sees NumPy's buffers)."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    train_step(model, optimizer, x, y)
    _, peak = tracemalloc.get_traced_memory()
    if not was_tracing:
        tracemalloc.stop()
    return (peak - base) / 2**20


def _rate(flops: float, ms: float) -> float | None:
    return flops / (ms * 1e-3) / 1e9 if flops and ms > 0 else None


def bench_model(model, *, batch_size: int = 64, steps: int = 20, warmup: int = 3,
                seed: int = 0, measure_peak: bool = True) -> BenchResult:
    """Time ``model`` on one synthetic batch; see the module docstring for the phases."""
    if batch_size < 1 or steps < 1 or warmup < 0:
        raise ConfigError(f"bench needs batch_size >= 1, steps >= 1, warmup >= 0; got "
                          f"{batch_size}, {steps}, {warmup}")
    check_memory(still_needed(model, batch_size, "sgd+momentum"), what="bench",
                 batch_key="batch_size=")
    rng = np.random.default_rng(seed)
    x, y = _synthetic_batch(model, batch_size, rng)
    optimizer = SGD(lr=0.01, momentum=0.9)

    split = plan_training(model, batch_size)  # as cnncli train would run it
    try:
        train_times = _time_train_steps(split or model, optimizer, x, y, steps, warmup)
        numpy_peak = _step_numpy_peak_mb(split or model, optimizer, x, y)
        worker_rss = split.worker_memory_mb()[1] if split is not None else None
    finally:
        if split is not None:
            split.close()
    fwd, bwd = _time_layers(model, optimizer, x, y, steps, warmup)
    infer_times = _time_inference(model, x, steps, warmup)

    layers = []
    for step in walk(model.layers, model.input_shape, model.shapes, model.sources):
        k, layer = step.index, step.layer
        f_ms, b_ms = _median_ms(fwd[k]), _median_ms(bwd[k])
        # Rates only for layers that multiply by weights (conv, dense); a pool's "MACs" are
        # comparisons, not arithmetic the GFLOP/s ceiling is about.
        macs = layer.macs(step.in_shape) * batch_size if "weight" in layer.params else 0
        # Backward multiplies twice (weights and input) except where dx is skipped.
        bwd_flops = 2 * macs * (2 if k > 0 else 1)
        layers.append(LayerTiming(
            name=layer.name, type=layer.type_name, forward_ms=f_ms, backward_ms=b_ms,
            output_shape=list(step.out_shape),
            forward_gflops=_rate(2 * macs, f_ms), backward_gflops=_rate(bwd_flops, b_ms)))

    notes = [f"{model.layers[k].name} runs after {model.layers[model.run_order[pos - 1]].name}"
             f" (max pooling commutes with ReLU: the same numbers, fewer values to touch)"
             for pos, k in enumerate(model.run_order) if pos > 0 and k < model.run_order[pos - 1]]
    if getattr(model.runner, "worker", None) is not None:
        notes.append("inference runs the second half of each batch in a worker process")
    if split is not None:
        notes.append("training steps run the second half of each batch in a worker process "
                     "(the layers' times are for the whole batch in one process; the step "
                     "NumPy peak is this process's, for its half)")
    train_ms, infer_ms = _median_ms(train_times), _median_ms(infer_times)
    rss = peak_rss_mb()  # before the matmul probe, whose 48 MB operands are not the model's
    return BenchResult(
        batch_size=batch_size, steps=steps, warmup=warmup, threads=blas_threads(),
        cnncli_threads=threads.get_threads(),
        train_step_ms=train_ms, train_step_ms_min=1e3 * min(train_times),
        train_step_ms_max=1e3 * max(train_times), train_images_per_s=batch_size / (train_ms * 1e-3),
        infer_batch_ms=infer_ms, infer_images_per_s=batch_size / (infer_ms * 1e-3),
        peak_rss_mb=rss, step_numpy_peak_mb=numpy_peak, worker_peak_rss_mb=worker_rss,
        matmul_peak_gflops=matmul_peak_gflops() if measure_peak else None,
        matmul_peak_all_cores_gflops=all_cores_matmul_peak() if measure_peak else None,
        notes=notes,
        layers=layers)
