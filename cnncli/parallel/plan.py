"""The execution plan: everything cnncli does to run a model faster than its plain math,
decided and applied in one place.

A ``Model`` as ``nn/`` builds it runs the plain math: its layers in the config's order, no
array overwritten, each layer's work whole on the calling thread (``nn/splitter.py``), every
batch whole. Applying a plan (``apply_plan``: ``build_model``, checkpoints' ``.model()``,
bench and training do) changes how it runs, never what it computes:

* run order: a ReLU directly before a max pool runs after it (bit for bit the same numbers);
* in place: a ReLU overwrites the array its neighbour hands over for good (bit for bit);
* splitter: big layer work on cnncli's threads (bit for bit), conv matmuls in cache-sized
  pieces (the weight gradient summed in another order: the same to rounding);
* chunked inference: an inference batch of a small network as one chunk per thread, each on
  its own copy of the layers (the same logits to BLAS's rounding per chunk);
* inference on two processes: a big enough inference batch's second half in a worker
  process (``ProcessInference``; the logits of the two halves computed here, bit for bit);
* training (``plan_training``): each batch's second half in a worker process
  (``processes``; gradients summed in two halves, batch norm's sums exchanged: the same to
  rounding).

``CNNCLI_SPEEDUPS=off`` or ``speedups=False`` plans none of them (docs/speed.md). Every size
at which one starts to pay is in ``thresholds``.
"""

from __future__ import annotations

import copy
import os

import numpy as np

from cnncli.nn.kernels import SharedScratch
from cnncli.nn.layers.activation import ReLU
from cnncli.nn.layers.base import Layer
from cnncli.nn.layers.conv import Conv2d
from cnncli.nn.layers.dropout import Dropout
from cnncli.nn.layers.norm import _BatchNorm
from cnncli.nn.layers.pool import GlobalMaxPool2d, MaxPool2d
from cnncli.nn.model import Model, WholeBatch
from cnncli.nn.splitter import SERIAL, SerialSplitter
from cnncli.parallel import speedups_on, threads, thresholds
from cnncli.parallel.processes import (
    InferenceWorker,
    SplitBatchModel,
    WorkerError,
    shared_weights,
)


class ThreadSplitter(SerialSplitter):
    """Layer work on cnncli's threads when it is big enough, conv matmuls in cache-sized
    pieces; every size is read from ``thresholds`` when used."""

    @property
    def im2col_max_bytes(self) -> int:
        return thresholds.IM2COL_PIECE_BYTES

    @property
    def split_k_bytes(self) -> int:
        return thresholds.SPLIT_K_BYTES

    @property
    def split_k_min(self) -> int:
        return thresholds.SPLIT_K_MIN

    @property
    def whole_dcols_bytes(self) -> int:
        return thresholds.WHOLE_DCOLS_BYTES

    @property
    def transposed_weight_grad_macs(self) -> int:
        return thresholds.TRANSPOSED_WEIGHT_GRAD_MACS

    #: The bias in the conv's matmuls (SerialSplitter.fold_bias): faster on every shipped
    #: conv shape measured (benchmarks/RESULTS.md).
    fold_bias = True

    def split(self, fn, length: int, elements: int) -> None:
        if elements >= thresholds.MIN_ELEMENTS:
            threads.split(fn, length)
        else:
            fn(0, length)

    def split_matmuls(self, fn, length: int, macs: int) -> None:
        if macs >= thresholds.CONV_THREADS_MIN_MACS:
            threads.split(fn, length)
        else:
            fn(0, length)

    def pair(self, first, second, macs: int):
        if macs >= thresholds.CONV_PAIR_MIN_MACS:
            return threads.pair(first, second)
        return first(), second()


THREADED = ThreadSplitter()


def execution_order(layers: list[Layer]) -> list[int]:
    """The order in which forward runs the layers (backward runs it in reverse): the config's,
    except that a ReLU directly before a max pool runs after it. Max pooling commutes with the
    non-decreasing ReLU, so outputs are the same numbers, and so are gradients: where the
    window's maximum is positive both orders route it to its first position, elsewhere both
    give zero. The ReLU then touches a quarter of the data (2x2 pooling)."""
    order = list(range(len(layers)))
    k = 0
    while k < len(order) - 1:
        if (type(layers[k]) is ReLU
                and isinstance(layers[k + 1], (MaxPool2d, GlobalMaxPool2d))):
            order[k], order[k + 1] = order[k + 1], order[k]
            k += 2
        else:
            k += 1
    return order


def small_convs(model: Model, batch: int) -> bool:
    """Whether every conv does fewer than CHUNK_MAX_MACS multiply-adds on ``batch`` images:
    too little to share out over threads inside the layer."""
    return all(layer.macs(shape) * batch < thresholds.CHUNK_MAX_MACS
               for layer, shape in zip(model.layers, model.shapes, strict=False)
               if isinstance(layer, Conv2d))


class ChunkedInference(WholeBatch):
    """A model's runner that evaluates a batch of a small network as one chunk per thread,
    chunk k on layer copy k (their own buffers and caches, the model's parameter arrays);
    training batches and anything too small run whole."""

    def __init__(self):
        self.replicas: list[list[Layer]] = []  # layer copies for the chunks after the first
        self.bounds = [0]  # how the last forward split its batch

    def chunks(self, model: Model, batch: int) -> int:
        """One per thread when every chunk gets CHUNK_MIN_IMAGES and every conv is small,
        else 1 (the whole batch)."""
        count = min(threads.get_threads(), batch // thresholds.CHUNK_MIN_IMAGES)
        return count if count > 1 and small_convs(model, batch) else 1

    def forward(self, model: Model, x: np.ndarray, train: bool) -> np.ndarray:
        count = 1 if train else self.chunks(model, len(x))
        bounds = self.bounds = [len(x) * k // count for k in range(count + 1)]
        if count == 1:
            return super().forward(model, x, train)
        while len(self.replicas) < count - 1:
            self.replicas.append(_replica(model.layers))
        copies = self._copies(model, count)
        outs: list = [None] * count

        def part(lo, hi):
            for k in range(lo, hi):
                outs[k] = model.forward_through(copies[k], x[bounds[k]:bounds[k + 1]], False)

        threads.split(part, count)
        return np.concatenate(outs)

    def backward(self, model: Model, dlogits: np.ndarray, need_input_grad: bool):
        bounds = self.bounds
        if len(bounds) <= 2:
            return super().backward(model, dlogits, need_input_grad)
        # The chunks went through their own layer copies, which share the parameter and
        # gradient arrays: their backwards run one after the other.
        dxs = [model.backward_through(layers, dlogits[lo:hi], need_input_grad)
               for layers, lo, hi in zip(self._copies(model, len(bounds) - 1), bounds[:-1],
                                         bounds[1:], strict=True)]
        return np.concatenate(dxs) if need_input_grad else None

    def _copies(self, model: Model, count: int) -> list[list[Layer]]:
        return [model.layers, *self.replicas][:count]


class ProcessInference(ChunkedInference):
    """``ChunkedInference``, except that an inference batch big enough to repay a second
    process (``can_split_inference``) runs as two halves: the first here, the second in a
    worker process (``processes.InferenceWorker``), started in the background on the first
    such batch. Until it is ready the second half runs here, after the first: the same
    numbers (the same code on the same shapes, one thread each). If it cannot start or
    fails, batches run as ``ChunkedInference`` runs them. ``close()`` stops the worker."""

    def __init__(self):
        super().__init__()
        self.worker: InferenceWorker | None = None
        self.worker_failed = False  # no second process for this model any more
        self._remote: np.ndarray | None = None  # the images the worker ran, for backward

    def forward(self, model: Model, x: np.ndarray, train: bool) -> np.ndarray:
        self._remote = None
        if train or self.worker_failed or not can_split_inference(model, len(x)):
            return super().forward(model, x, train)
        half = len(x) // 2
        worker = self._worker(model, len(x) - half)
        if not self.replicas:
            self.replicas.append(_replica(model.layers))
        self.bounds = [0, half, len(x)]
        try:
            if worker is not None:
                worker.send(x[half:])
            with threads.serial():  # the worker has the other core
                first = model.forward_through(model.layers, x[:half], False)
                if worker is None:  # (the copy: backward needs both halves' caches)
                    second = model.forward_through(self.replicas[0], x[half:], False)
                else:
                    second = worker.receive()
                    self._remote = x[half:]
        except WorkerError:  # the answer does not need the worker: threads it is, from now on
            self.close()
            self.worker_failed = True
            return super().forward(model, x, train)
        except BaseException:
            self.close()  # it may still be busy with this batch; a later one starts another
            raise
        return np.concatenate([first, second])

    def backward(self, model: Model, dlogits: np.ndarray, need_input_grad: bool):
        if self._remote is not None:  # the worker ran the second half: run it again here
            with threads.serial():
                model.forward_through(self.replicas[0], self._remote, False)
            self._remote = None
        return super().backward(model, dlogits, need_input_grad)

    def wait_for_worker(self, timeout: float = 30.0) -> bool:
        """Wait until a started worker can take batches (benchmarks time the steady state);
        whether one can."""
        return self.worker is not None and self.worker.wait_until_ready(timeout)

    def close(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.close()

    def __del__(self):
        self.close()

    def _worker(self, model: Model, images: int) -> InferenceWorker | None:
        """The worker if it can take ``images`` images now; starts one (for next time) if
        there is none or it is too small."""
        if self.worker_failed:
            return None
        if self.worker is not None and images > self.worker.capacity:
            self.close()
        try:
            if self.worker is None:
                self.worker = InferenceWorker(model, images)
            return self.worker if self.worker.usable() else None
        except (OSError, WorkerError):  # no shared memory, no process to spare, or it died
            self.close()
            self.worker_failed = True
            return None


def _replica(layers: list[Layer]) -> list[Layer]:
    """Copies of the layers that share their parameter arrays (and running statistics) with
    the originals but own every cache and buffer, so that both can run at once (the copies
    share one new scratch pool among themselves: they run one after the other)."""
    copies, scratch = [], {}
    for layer in layers:
        shared = {id(store): store for store in (layer.params, layer.grads, layer.buffers)}
        shared[id(layer.splitter)] = layer.splitter
        pool = getattr(layer, "scratch", None)
        if isinstance(pool, SharedScratch):
            shared[id(pool)] = scratch.setdefault(id(pool), SharedScratch())
        copies.append(copy.deepcopy(layer, memo=shared))
    return copies


class ExecutionPlan:
    """How one model runs: decided from its layers and the switch here, set by ``apply``.

    ``run_order``, ``may_overwrite_input``/``may_overwrite_grad`` (per layer, in the model's
    layer order), ``splitter`` (handed to every layer), ``chunked_inference`` and, through
    ``split_training``, whether training splits batches over two processes."""

    def __init__(self, model: Model, *, speedups: bool | None = None):
        self.model = model
        self.speedups = speedups_on(speedups)
        layers = model.layers
        count = len(layers)
        # A branching model keeps the config's order: a reorder across a branch point would
        # hand the wrong array to the other readers.
        self.run_order = (execution_order(layers) if self.speedups and model.is_chain
                          else list(range(count)))
        self.may_overwrite_input = [False] * count
        self.may_overwrite_grad = [False] * count
        if self.speedups and not model.is_chain:
            # In place only along an edge that is its node's one reader: never an array that
            # another layer reads too (a shortcut), nor a gradient handed to several layers.
            for nxt, src in enumerate(model.sources):
                if len(src) == 1 and src[0] > 0 and model.consumers[src[0]] == 1:
                    prev = src[0] - 1
                    self.may_overwrite_input[nxt] = layers[prev].fresh_output
                    self.may_overwrite_grad[prev] = layers[nxt].fresh_input_grad
        elif self.speedups:
            # In-place work (ReLU) is allowed only on arrays the neighbour hands over for good.
            for prev, nxt in zip(self.run_order[:-1], self.run_order[1:], strict=True):
                self.may_overwrite_input[nxt] = layers[prev].fresh_output
                self.may_overwrite_grad[prev] = layers[nxt].fresh_input_grad
        self.splitter = THREADED if self.speedups else SERIAL
        self.chunked_inference = self.speedups

    def apply(self) -> Model:
        """Set the plan on the model (replacing any earlier plan); returns the model."""
        model = self.model
        model.run_order = list(self.run_order)
        for k, layer in enumerate(model.layers):
            layer.splitter = self.splitter
            layer.may_overwrite_input = self.may_overwrite_input[k]
            layer.may_overwrite_grad = self.may_overwrite_grad[k]
        close = getattr(model.runner, "close", None)
        if close is not None:  # an earlier plan's worker process
            close()
        model.runner = ProcessInference() if self.chunked_inference else WholeBatch()
        # Convs' one-call arrays in one pool for the model (they run one after the other),
        # not one set per layer: a deep network's step needs far less memory.
        scratch = SharedScratch() if self.speedups else None
        for layer in model.layers:
            if isinstance(layer, Conv2d):
                layer.use_scratch(scratch)
        return model

    def split_training(self, batch_size: int) -> SplitBatchModel | None:
        """A ``SplitBatchModel`` to train in place of the model (close it when done) if
        speed-ups are on and ``can_split``, else None: then train the model itself."""
        return split_model(self.model, batch_size) if self.speedups else None


def apply_plan(model: Model, *, speedups: bool | None = None) -> Model:
    """Run ``model`` with every speed-up that applies (none with ``speedups=False`` or
    CNNCLI_SPEEDUPS=off); returns the model."""
    return ExecutionPlan(model, speedups=speedups).apply()


def plan_training(model: Model, batch_size: int, *,
                  speedups: bool | None = None) -> SplitBatchModel | None:
    """``apply_plan`` for training at ``batch_size``; returns a ``SplitBatchModel`` to train
    in place of the model (close it when done) when batches split over two processes, else
    None."""
    plan = ExecutionPlan(model, speedups=speedups)
    plan.apply()
    return plan.split_training(batch_size)


def per_sample_in_training(layer: Layer) -> bool:
    """Whether a training batch may run ``layer`` in parts: per-sample layers, dropout (its
    masks are drawn for the whole batch) and batch norm (its sums are exchanged)."""
    return layer.per_sample or isinstance(layer, (Dropout, _BatchNorm))


def can_split(model: Model, batch_size: int) -> bool:
    """Whether training ``model`` at ``batch_size`` would split each batch over two processes:
    on Linux, with 2 cnncli threads (or more, for networks whose convs are too small to use
    them) and 2 usable cores, batches of 2 * PROCESS_MIN_IMAGES or more with PROCESS_MIN_MACS
    of work per half, layers that ``per_sample_in_training`` admits and at most
    PROCESS_MAX_PARAMETERS parameters."""
    count = threads.get_threads()
    macs = sum(layer.macs(shape) for layer, shape in zip(model.layers, model.shapes,
                                                          strict=False))
    return (hasattr(os, "memfd_create") and count >= 2 and threads.usable_cores() >= 2
            and (count == 2 or small_convs(model, batch_size))
            and batch_size >= 2 * thresholds.PROCESS_MIN_IMAGES
            and macs * (batch_size // 2) >= thresholds.PROCESS_MIN_MACS
            and all(per_sample_in_training(layer) for layer in model.layers)
            and (sum(value.size for _, value, _ in model.parameters())
                 <= thresholds.PROCESS_MAX_PARAMETERS))


def per_sample_in_evaluation(layer: Layer) -> bool:
    """Whether an inference batch may run ``layer`` in parts: per-sample layers, dropout (the
    identity) and batch norm with running statistics."""
    return (layer.per_sample or isinstance(layer, Dropout)
            or (isinstance(layer, _BatchNorm) and layer.track_running_stats))


def can_split_inference(model: Model, batch: int) -> bool:
    """Whether evaluating a batch of ``batch`` images splits it with a worker process: as
    ``can_split`` for training, with INFERENCE_PROCESS_MIN_IMAGES images and
    INFERENCE_PROCESS_MIN_MACS multiply-adds per half and ``per_sample_in_evaluation``."""
    count = threads.get_threads()
    if (count < 2 or batch < 2 * thresholds.INFERENCE_PROCESS_MIN_IMAGES
            or not hasattr(os, "memfd_create")):
        return False  # the cheap tests first: this runs on every inference batch
    macs = sum(layer.macs(shape) for layer, shape in zip(model.layers, model.shapes,
                                                          strict=False))
    return (macs * (batch // 2) >= thresholds.INFERENCE_PROCESS_MIN_MACS
            and threads.usable_cores() >= 2 and (count == 2 or small_convs(model, batch))
            and all(per_sample_in_evaluation(layer) for layer in model.layers)
            and (sum(value.size for _, value in shared_weights(model, True))
                 <= thresholds.PROCESS_MAX_PARAMETERS))


def wait_for_inference_worker(model: Model, timeout: float = 30.0) -> bool:
    """After a first inference batch that started a worker process: wait until it takes the
    second halves (benchmarks time the steady state); whether it does."""
    wait = getattr(model.runner, "wait_for_worker", None)
    return bool(wait is not None and wait(timeout))


def split_model(model: Model, batch_size: int) -> SplitBatchModel | None:
    """A ``SplitBatchModel`` for ``model`` (close it when done) if ``can_split`` and the worker
    process starts, else None."""
    if not can_split(model, batch_size):
        return None
    try:
        return SplitBatchModel(model, batch_size)
    except OSError:  # no shared memory or no process to spare: one process it is
        return None
