"""Training and inference on two cores: the second half of each batch in a worker process.

Small layers are too small to share out over threads: every NumPy call takes the GIL, so
the two halves of a LeNet-5 batch on two threads run hardly faster than the whole batch. Two
processes have no GIL between them: a worker process holds a copy of the network and computes
the forward, backward and weight gradients of the batch's second half while this process
does the first half (figures in benchmarks/RESULTS.md). The worker's gradients are added to
this process's after its own, so a run gives the same numbers every time; they differ from a
one-process run's in the last bits only (a sum in a different order).

This module is the mechanism; ``plan.can_split`` decides where it is used (where it is exact
and pays): Linux (shared memory by ``memfd_create``), two cnncli threads, big enough batches,
layers that are per-sample or made so (dropout masks are drawn here for the whole batch, so
they are the masks a one-process run draws; batch norm's per-channel sums are exchanged,
``PairSums``, so both halves are normalised with the whole batch's statistics) and not too
many weights to copy. ``InferenceWorker`` does the same for inference batches
(``plan.ProcessInference``, ``plan.can_split_inference``).

The two processes share one block of memory: parameters (written here before each batch;
the worker's network uses them in place), the worker's gradients, its images, labels, logits
and dropout masks, and batch norm's exchange slots. They talk over the worker's stdin and
stdout, one short line per message: a training batch is one request ("step": the worker runs
its forward, computes its half's logit gradients and runs its backward) and one reply.
Batch norm's wake-ups are one byte each through a pair of pipes. Each wait for the other
process polls for a few milliseconds before it sleeps (``wait_readable``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import mmap
import os
import select
import subprocess
import sys
import tempfile
import time
import weakref

import numpy as np

from cnncli.errors import CnncliError
from cnncli.nn import losses
from cnncli.nn.layers.dropout import Dropout
from cnncli.nn.layers.norm import _BatchNorm
from cnncli.nn.model import forward_backward
from cnncli.parallel import threads, thresholds


class WorkerError(CnncliError):
    """The worker process failed or stopped."""


#: Batch norm's exchange wake-ups: one byte through a pipe, "my sums are in" or "my half failed".
SUMS_IN, HALF_FAILED = b"+", b"!"


def weight_slots(model, inference: bool) -> list[tuple[object, str, str]]:
    """(layer, "params" or "buffers", key) of what the worker shares of the weights: the
    parameters in layer order, and for inference the running statistics too (floating-point
    buffers). Both processes lay out the shared block, and the worker puts its arrays there,
    in this one order."""
    slots = [(layer, "params", key) for layer in model.layers for key in layer.params]
    if inference:
        slots += [(layer, "buffers", key) for layer in model.layers
                  for key, value in layer.buffers.items() if value.dtype.kind == "f"]
    return slots


def shared_weights(model, inference: bool) -> list[tuple[str, np.ndarray]]:
    """(name, array) of ``weight_slots``."""
    return [(f"{layer.name}.{key}", getattr(layer, store)[key])
            for layer, store, key in weight_slots(model, inference)]


def batch_norms(model) -> list:
    """The model's batch-norm layers (their ``batch_sums`` hook synchronises a split batch)."""
    return [layer for layer in model.layers if isinstance(layer, _BatchNorm)]


class _Layout:
    """Where each array sits in the shared block: batch norm's exchange slots, weights, the
    worker's gradients, dropout masks, and images, logits and labels of up to ``images``
    images (for ``inference``: weights with running statistics, images and logits only)."""

    def __init__(self, model, images: int, *, inference: bool = False):
        self.dtype = model.dtype
        self.param_shapes = [(name, value.shape)
                             for name, value in shared_weights(model, inference)]
        # Two rounds of slots (this process's sums, the worker's), so that one side may write
        # its next sums while the other still reads the last ones; float64 at most.
        channels = [int(layer.input_shape[0]) for layer in batch_norms(model)]
        self.slot_bytes = 8 * max(channels) if channels and not inference else 0
        sizes = {"sums": 4 * self.slot_bytes // self.dtype.itemsize,
                 "params": sum(int(np.prod(s)) for _, s in self.param_shapes)}
        if not inference:
            sizes["grads"] = sizes["params"]
        sizes["x"] = images * int(np.prod(model.input_shape))
        sizes["logits"] = images * int(np.prod(model.output_shape))
        #: dropout layers by index, and the per-sample shape of their masks
        self.masks = {} if inference else {
            k: model.input_shapes[k] for k, layer in enumerate(model.layers)
            if isinstance(layer, Dropout) and layer.p > 0}
        for k, shape in self.masks.items():
            sizes[f"mask{k}"] = images * int(np.prod(shape))
        self.offsets, offset = {}, 0
        for key, size in sizes.items():
            self.offsets[key] = (offset, size, self.dtype)
            offset += size * self.dtype.itemsize
        if not inference:  # the worker's labels
            offset = -(-offset // 8) * 8
            self.offsets["labels"] = (offset, images, np.dtype(np.int64))
            offset += 8 * images
        self.nbytes = max(offset, 1)
        self.images = images
        self.input_shape, self.output_shape = model.input_shape, model.output_shape

    def views(self, buffer) -> dict[str, np.ndarray]:
        views = {key: np.frombuffer(buffer, dtype, size, offset)
                 for key, (offset, size, dtype) in self.offsets.items()}
        views["sums"] = views["sums"].view(np.uint8).reshape(2, 2, self.slot_bytes)
        views["x"] = views["x"].reshape((self.images,) + tuple(self.input_shape))
        views["logits"] = views["logits"].reshape((self.images,) + tuple(self.output_shape))
        for k, shape in self.masks.items():  # the internal batch-last layout
            views[f"mask{k}"] = views[f"mask{k}"].reshape(tuple(shape) + (self.images,))
        return views

    def per_param(self, flat: np.ndarray) -> list[np.ndarray]:
        out, start = [], 0
        for _, shape in self.param_shapes:
            size = int(np.prod(shape))
            out.append(flat[start:start + size].reshape(shape))
            start += size
        return out


#: How long a wait for the other process polls before it sleeps (seconds): waking a sleeping
#: process costs a virtual machine ~0.1 ms, a poll a microsecond, and the two halves of a
#: batch end within about a millisecond of each other (benchmarks/RESULTS.md).
POLL_SECONDS = 0.003


def wait_readable(fd: int, seconds: float | None = None) -> None:
    """Return soon after ``fd`` has something to read (or its writer closed it), polling it
    for up to ``seconds`` (``POLL_SECONDS``) before leaving the wait to a blocking read."""
    deadline = time.perf_counter() + (POLL_SECONDS if seconds is None else seconds)
    while not select.select([fd], [], [], 0)[0]:
        if time.perf_counter() >= deadline:
            return


class PairSums:
    """Batch norm's ``batch_sums`` hook on a batch split between this process (side 0, the
    first half) and the worker (side 1): each side writes its per-channel sums to its slot in
    shared memory and wakes the other with a byte through a pipe; both add the two slots first
    half then second, so both get the same bits, those of a fixed order."""

    def __init__(self, slots: np.ndarray, side: int, read_fd: int, write_fd: int):
        self.slots, self.side = slots, side
        self.read_fd, self.write_fd = read_fd, write_fd
        self.exchanges = 0  # so far: both sides make the same ones, in the same order

    def total(self, sums: np.ndarray) -> np.ndarray:
        sums = np.ascontiguousarray(sums)
        slots = self.slots[self.exchanges % 2]
        self.exchanges += 1
        slots[self.side, :sums.nbytes] = sums.reshape(-1).view(np.uint8)
        try:
            os.write(self.write_fd, SUMS_IN)
            wait_readable(self.read_fd)
            got = os.read(self.read_fd, 1)
        except OSError:
            got = b""
        if got != SUMS_IN:
            raise PartnerFailed(got)
        def part(side):
            return slots[side, :sums.nbytes].view(sums.dtype).reshape(sums.shape)
        result = part(0).copy()
        result += part(1)
        return result

    def abort(self) -> None:
        """Tell the other side that this half failed (it may be waiting for its sums)."""
        with contextlib.suppress(OSError):
            os.write(self.write_fd, HALF_FAILED)


class PartnerFailed(Exception):
    """The other side of a batch-norm exchange failed (``HALF_FAILED``) or stopped (no byte)."""

    def __init__(self, got: bytes):
        super().__init__("the other half of the batch failed" if got else
                         "the other half of the batch stopped")
        self.stopped = not got


class _Worker:
    """A worker process (``worker.serve``) with the block of shared memory ``layout``
    describes; its replies come one line per request. ``exchange``: give it a pipe pair for
    batch norm's sums (``PairSums``)."""

    def __init__(self, model, layout: _Layout, *, inference: bool = False,
                 exchange: bool = False):
        self.model = model
        self._layout = layout
        self._pid = os.getpid()  # a forked child must not use (or stop) its parent's worker
        self._fd = _memfd_above_stdio("cnncli-split")
        os.ftruncate(self._fd, self._layout.nbytes)
        self._buffer = mmap.mmap(self._fd, self._layout.nbytes)
        self._views = self._layout.views(self._buffer)
        self._params = self._layout.per_param(self._views["params"])
        self._sums: PairSums | None = None
        passed, theirs = [self._fd], None
        if exchange:
            to_worker, from_worker = os.pipe(), os.pipe()
            theirs = [to_worker[0], from_worker[1]]
            passed += theirs
            self._sums = PairSums(self._views["sums"], 0, from_worker[0], to_worker[1])
        spec = {"input_shape": list(model.input_shape), "dtype": model.dtype.name,
                "layers": model.layer_entries(),
                "params": [[name, list(shape)] for name, shape in self._layout.param_shapes],
                "images": self._layout.images, "fd": self._fd, "inference": inference,
                "exchange": theirs}
        env = {**os.environ, "CNNCLI_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self._stderr = tempfile.TemporaryFile()
        # Not ``-m cnncli.parallel.processes``: that puts the working directory first on the
        # worker's import path, where a user's random.py or numbers.py would shadow the
        # standard library. The worker imports the very cnncli this process runs.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        start = (f"import sys; sys.path[0] = {root!r}; "
                 f"from cnncli.parallel.worker import serve; serve(sys.argv[1])")
        try:
            self._worker = subprocess.Popen(
                [sys.executable, "-c", start, json.dumps(spec)], env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                pass_fds=tuple(passed), text=True, bufsize=1)
        finally:
            for fd in theirs or []:  # the worker's ends: its exit must end our reads
                os.close(fd)

    @property
    def shared_mb(self) -> float:
        """The shared block's size in MB: both processes' resident sets count its pages."""
        return self._layout.nbytes / 2**20

    def worker_memory_mb(self) -> tuple[float, float]:
        """The worker's (resident set now, peak resident set) in MB."""
        now, peak = self._ask("memory").split()
        return float(now), float(peak)

    def reset_worker_peak(self) -> None:
        """Reset the worker's peak resident set to its current size (Linux)."""
        self._ask("reset-peak")

    # -- lifetime
    def close(self) -> None:
        worker, self._worker = getattr(self, "_worker", None), None
        if getattr(self, "_pid", None) != os.getpid():
            return  # a forked child's copy: the worker and the descriptors are its parent's
        if worker is not None:
            # The worker holds nothing worth keeping: stop it at once, so that closing on the
            # way out of a Ctrl-C takes a millisecond and a second Ctrl-C finds it done.
            worker.kill()
            while True:
                try:
                    worker.wait()
                    break
                except KeyboardInterrupt:  # the kill is on its way; the wait ends in ms
                    continue
            for pipe in (worker.stdin, worker.stdout):
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()
        sums, self._sums = getattr(self, "_sums", None), None
        if sums is not None:
            for fd in (sums.read_fd, sums.write_fd):
                os.close(fd)
        self._views = self._params = self._grads = None
        if getattr(self, "_buffer", None) is not None:
            with contextlib.suppress(BufferError):
                self._buffer.close()
            self._buffer = None
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()

    # -- messages
    def _send(self, line: str) -> None:
        try:
            self._worker.stdin.write(line + "\n")
        except (OSError, ValueError, AttributeError):
            raise self._stopped() from None

    def _reply(self) -> str:
        if self._worker is not None:
            wait_readable(self._worker.stdout.fileno())
        line = self._worker.stdout.readline() if self._worker is not None else ""
        if not line:
            raise self._stopped()
        status, _, rest = line.rstrip("\n").partition(" ")
        if status != "ok":
            raise WorkerError(f"the worker process for the second half of each batch failed: "
                              f"{rest}")
        return rest

    def _ask(self, line: str) -> str:
        self._send(line)
        return self._reply()

    def _stopped(self) -> WorkerError:
        last = ""
        if getattr(self, "_stderr", None) is not None:
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
            last = f": {lines[-1]}" if lines else ""
        return WorkerError(f"the worker process for the second half of each batch stopped{last}",
                           hint="set CNNCLI_THREADS=1 to train in one process")


class SplitBatchModel(_Worker):
    """Stands in for ``model`` in ``train_step`` (``zero_grad``, ``train_batch``,
    ``parameters``): training batches of 2 * PROCESS_MIN_IMAGES or more run their first half
    here and their second half in the worker process; anything else runs here whole.
    ``close()`` (or leaving the ``with`` block) stops the worker."""

    def __init__(self, model, batch_size: int):
        norms = batch_norms(model)
        super().__init__(model, _Layout(model, batch_size - batch_size // 2),
                         exchange=bool(norms))
        self._norms = norms
        self._grads = self._layout.per_param(self._views["grads"])
        # No waiting here: the worker reads its first request once it has built the network
        # (about 0.3 s), while this process goes on loading data.

    # -- the model interface train_step uses
    def zero_grad(self) -> None:
        self.model.zero_grad()

    def parameters(self):
        return self.model.parameters()

    def train_batch(self, x: np.ndarray, y, label_smoothing: float = 0.0):
        """Forward, softmax cross-entropy and backward of a training batch, as ``train_step``
        runs them: (logits, loss); the parameters' gradients are added to unless the loss is
        not finite (then they are not to be used). Each process computes its half's logit
        gradients itself (each row's is its own but for the division by the batch size), so
        the worker goes from its forward to its backward without waiting for this process:
        one exchange a batch instead of two."""
        x = np.asarray(x)
        if not self._splits(x):
            return forward_backward(self.model, x, y, label_smoothing)
        n = len(x)
        labels, eps = losses.checked_targets(y, n, self.model.output_shape[0], label_smoothing)
        half, rest = self._hand_over(x, labels)
        self._send(f"step {rest} {n} {eps!r}")

        def first_half():
            # A diverging batch runs its backward before its loss is seen: overflow and NaN
            # there are for the loss check, as in the worker.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                logits = self.model.forward(x[:half], train=True)
                self.model.backward(losses.cross_entropy_rows_gradient(
                    logits, labels[:half], eps, n), need_input_grad=False)
            return logits

        logits = np.concatenate([self._half(first_half), self._views["logits"][:rest]])
        for (_, _, grad), worker_grad in zip(self.model.parameters(), self._grads, strict=True):
            grad += worker_grad
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return logits, losses.cross_entropy_loss(logits, labels, eps)

    def _splits(self, x: np.ndarray) -> bool:
        """Whether a training batch ``x`` runs in two halves (else whole, here)."""
        n = len(x) if x.ndim else 0
        return (n // 2 >= thresholds.PROCESS_MIN_IMAGES and n - n // 2 <= self._layout.images
                and x.shape[1:] == tuple(self.model.input_shape))  # else the model's checks

    def _hand_over(self, x: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
        """Put the weights, the second half of ``x`` and ``labels`` and the whole batch's
        dropout masks in the shared block; (first half, second half)."""
        n = len(x)
        half, rest = n // 2, n - n // 2
        if self._worker is None:  # closed, or stopped by a failure midway through a batch
            raise self._stopped()
        for shared, (_, value, _) in zip(self._params, self.model.parameters(), strict=True):
            shared[...] = value
        self._views["x"][:rest] = x[half:]
        self._views["labels"][:rest] = labels[half:]
        for k in self._layout.masks:  # the whole batch's masks, from this process's streams
            shape = tuple(self.model.input_shapes[k]) + (n,)
            mask = self.model.layers[k].draw_mask(shape, self.model.dtype)
            self.model.layers[k].use_mask(np.ascontiguousarray(mask[..., :half]))
            self._views[f"mask{k}"][..., :rest] = mask[..., half:]
        return half, rest

    def _half(self, run):
        """``run()`` (this process's half, on one thread: the worker has the other core) while
        the worker runs its half; then its reply. With batch norm the two exchange sums
        midway: if either half fails then, the worker may wait for sums that never come, so it
        is stopped (the error says why; later batches say that it stopped)."""
        layers = self.model.layers
        splitters = [layer.splitter for layer in layers]
        for layer, splitter in zip(layers, splitters, strict=True):
            layer.splitter = HalfBatch(splitter)
        try:
            if self._sums is None:
                try:
                    with threads.serial():
                        return run()
                finally:
                    self._reply()  # even if this half failed: requests and replies pair up
            return self._exchanging(run)
        finally:
            for layer, splitter in zip(layers, splitters, strict=True):
                layer.splitter = splitter

    def _exchanging(self, run):
        for layer in self._norms:
            layer.batch_sums = self._sums
        try:
            with threads.serial():
                result = run()
            self._reply()
            return result
        except PartnerFailed as err:
            problem = self._stopped() if err.stopped else None
            if problem is None:  # the worker's half failed: its reply says why
                try:
                    self._reply()
                except WorkerError as reply:
                    problem = reply
            self.close()
            raise problem or self._stopped() from None
        except BaseException:
            self._sums.abort()
            self.close()
            raise
        finally:
            for layer in self._norms:
                layer.__dict__.pop("batch_sums", None)  # back to the class's LOCAL_BATCH


class HalfBatch:
    """A layer's ``splitter`` for one half of a split training batch: ``splitter``, except
    that a conv's input gradient is one product over all rows only where the whole batch's
    would be, so the two processes' scratch arrays together stay the whole batch's (ResNet-20
    at batch 64: 9 MB less)."""

    def __init__(self, splitter):
        self.splitter = splitter

    def __getattr__(self, name):  # only for what this class does not define
        if name == "splitter":  # not set yet (a copy being made)
            raise AttributeError(name)
        return getattr(self.splitter, name)

    @property
    def whole_dcols_bytes(self) -> int:
        return self.splitter.whole_dcols_bytes // 2


class InferenceWorker(_Worker):
    """A worker process that evaluates the second half of inference batches of up to
    ``2 * images`` images. It starts in the background; ``usable()`` says when it has built
    the network. Its weights and running statistics are the shared block's: ``send`` copies
    this process's there before each batch, which costs a third of comparing them (7 us for
    LeNet-5, 54 for ResNet-20; benchmarks/RESULTS.md), and whatever changed them (an optimizer
    step, a checkpoint load, a user's assignment) the worker sees."""

    def __init__(self, model, images: int):
        super().__init__(model, _Layout(model, images, inference=True), inference=True)
        self._ready = False
        self._waiting = 0  # images of the request sent and not answered yet
        _live.add(self)

    @property
    def capacity(self) -> int:
        """The most images ``send`` takes."""
        return self._layout.images

    def usable(self) -> bool:
        """Whether this process may use the worker: it runs (this is the process that
        started it, not a forked child) and has built its network; never waits."""
        if self._pid != os.getpid() or self._worker is None:
            return False
        if not self._ready:
            readable, _, _ = select.select([self._worker.stdout], [], [], 0)
            if readable:
                line = self._worker.stdout.readline()
                if line.strip() != "ready":
                    raise self._stopped()
                self._ready = True
        return self._ready

    def wait_until_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``usable()``; returns it."""
        deadline = time.monotonic() + timeout
        while not self.usable() and time.monotonic() < deadline and self._worker is not None:
            select.select([self._worker.stdout], [], [], max(0.0, deadline - time.monotonic()))
        return self.usable()

    def send(self, x: np.ndarray) -> None:
        """Start the worker on ``x`` with this process's weights; ``receive`` returns the
        logits."""
        # Read from the layers each time: an array they were given since (a rebuilt layer)
        # is what the worker must see.
        for shared, (_, value) in zip(self._params, shared_weights(self.model, True),
                                      strict=True):
            shared[...] = value
        self._views["x"][:len(x)] = x
        self._send(f"infer {len(x)}")
        self._waiting = len(x)

    def receive(self) -> np.ndarray:
        """The logits of the images last sent (a new array)."""
        n, self._waiting = self._waiting, 0
        self._reply()
        return self._views["logits"][:n].copy()

    def close(self) -> None:
        _live.discard(self)
        super().close()


#: Inference workers not closed yet: stopped at interpreter exit (a worker whose parent is
#: killed stops too, when its stdin ends).
_live: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_inference_workers() -> None:
    for worker in list(_live):
        worker.close()


def _memfd_above_stdio(name: str) -> int:
    """A shared-memory file descriptor numbered 3 or more: with stdin or stderr closed, a new
    descriptor could take number 0 or 2, which the worker's pipes then replace."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    if fd < 3:
        import fcntl

        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        os.close(fd)
        fd = high
    return fd


# ---------------------------------------------------------------- the worker's side
