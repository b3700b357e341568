"""Training on two cores: the second half of each batch in a worker process.

Small layers are too small to share out over threads: every NumPy call takes the GIL, so
the two halves of a LeNet-5 batch on two threads run hardly faster than the whole batch. Two
processes have no GIL between them: a worker process holds a copy of the network and computes
the forward, backward and weight gradients of the batch's second half while this process
does the first half (figures in benchmarks/RESULTS.md). The worker's gradients are added to
this process's after its own, so a run gives the same numbers every time; they differ from a
one-process run's in the last bits only (a sum in a different order).

This module is the mechanism; ``plan.can_split`` decides where it is used (where it is exact
and pays): Linux (shared memory by ``memfd_create``), two cnncli threads, big enough batches,
every layer per-sample (no batch statistics; dropout masks are drawn here for the whole
batch, so they are the masks a one-process run draws) and not too many weights to copy.

The two processes share one block of memory: parameters (written here before each forward),
the worker's gradients, and its images, logits, logit gradients and dropout masks. They talk
over the worker's stdin and stdout, one short line per message.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import subprocess
import sys
import tempfile

import numpy as np

from cnncli.errors import CnncliError
from cnncli.nn.layers.dropout import Dropout
from cnncli.parallel import threads, thresholds


class WorkerError(CnncliError):
    """The worker process failed or stopped."""


class _Layout:
    """Where each array sits in the shared block: parameters, worker gradients, images,
    logits and logit gradients of up to ``images`` images."""

    def __init__(self, model, images: int):
        self.dtype = model.dtype
        self.param_shapes = [(name, value.shape) for name, value, _ in model.parameters()]
        sizes = {"params": sum(int(np.prod(s)) for _, s in self.param_shapes)}
        sizes["grads"] = sizes["params"]
        sizes["x"] = images * int(np.prod(model.input_shape))
        sizes["logits"] = sizes["dlogits"] = images * int(np.prod(model.output_shape))
        #: dropout layers by index, and the per-sample shape of their masks
        self.masks = {k: model.input_shapes[k] for k, layer in enumerate(model.layers)
                      if isinstance(layer, Dropout) and layer.p > 0}
        for k, shape in self.masks.items():
            sizes[f"mask{k}"] = images * int(np.prod(shape))
        self.offsets, offset = {}, 0
        for key, size in sizes.items():
            self.offsets[key] = (offset, size)
            offset += size * self.dtype.itemsize
        self.nbytes = max(offset, 1)
        self.images = images
        self.input_shape, self.output_shape = model.input_shape, model.output_shape

    def views(self, buffer) -> dict[str, np.ndarray]:
        views = {key: np.frombuffer(buffer, self.dtype, size, offset)
                 for key, (offset, size) in self.offsets.items()}
        views["x"] = views["x"].reshape((self.images,) + tuple(self.input_shape))
        for key in ("logits", "dlogits"):
            views[key] = views[key].reshape((self.images,) + tuple(self.output_shape))
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


class SplitBatchModel:
    """Stands in for ``model`` in ``train_step``: training batches of 2 * PROCESS_MIN_IMAGES or
    more run their first half here and their second half in the worker process; anything
    else runs here whole. ``close()`` (or leaving the ``with`` block) stops the worker."""

    def __init__(self, model, batch_size: int):
        self.model = model
        self._layout = _Layout(model, batch_size - batch_size // 2)
        self._fd = _memfd_above_stdio("cnncli-split")
        os.ftruncate(self._fd, self._layout.nbytes)
        self._buffer = mmap.mmap(self._fd, self._layout.nbytes)
        self._views = self._layout.views(self._buffer)
        self._params = self._layout.per_param(self._views["params"])
        self._grads = self._layout.per_param(self._views["grads"])
        self._split: tuple[int, int] | None = None  # (first half, second half) of the batch
        spec = {"input_shape": list(model.input_shape), "dtype": model.dtype.name,
                "layers": model.layer_entries(),
                "params": [[name, list(shape)] for name, shape in self._layout.param_shapes],
                "images": self._layout.images, "fd": self._fd}
        env = {**os.environ, "CNNCLI_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self._stderr = tempfile.TemporaryFile()
        # Not ``-m cnncli.parallel.processes``: that puts the working directory first on the
        # worker's import path, where a user's random.py or numbers.py would shadow the
        # standard library. The worker imports the very cnncli this process runs.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        start = (f"import sys; sys.path[0] = {root!r}; "
                 f"from cnncli.parallel.worker import serve; serve(sys.argv[1])")
        self._worker = subprocess.Popen(
            [sys.executable, "-c", start, json.dumps(spec)], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            pass_fds=(self._fd,), text=True, bufsize=1)
        # No waiting here: the worker reads its first request once it has built the network
        # (about 0.3 s), while this process goes on loading data.

    # -- the model interface train_step uses
    def zero_grad(self) -> None:
        self.model.zero_grad()

    def parameters(self):
        return self.model.parameters()

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        x = np.asarray(x)
        n = len(x) if x.ndim else 0
        half = n // 2
        if (not train or half < thresholds.PROCESS_MIN_IMAGES or n - half > self._layout.images
                or x.shape[1:] != tuple(self.model.input_shape)):  # the model's own checks
            self._split = None
            return self.model.forward(x, train)
        rest = n - half
        for shared, (_, value, _) in zip(self._params, self.model.parameters(), strict=True):
            shared[...] = value
        self._views["x"][:rest] = x[half:]
        for k in self._layout.masks:  # the whole batch's masks, from this process's streams
            shape = tuple(self.model.input_shapes[k]) + (n,)
            mask = self.model.layers[k].draw_mask(shape, self.model.dtype)
            self.model.layers[k].use_mask(np.ascontiguousarray(mask[..., :half]))
            self._views[f"mask{k}"][..., :rest] = mask[..., half:]
        self._send(f"forward {rest}")
        try:
            with threads.serial():  # the worker has the other core
                first = self.model.forward(x[:half], train=True)
        finally:
            self._reply()  # even if this half failed, so that requests and replies stay paired
        self._split = (half, rest)
        return np.concatenate([first, self._views["logits"][:rest]])

    def backward(self, dlogits: np.ndarray, need_input_grad: bool = True):
        if self._split is None:
            return self.model.backward(dlogits, need_input_grad)
        half, rest = self._split
        if need_input_grad:
            raise WorkerError("a split training batch gives no input gradient")
        if dlogits.shape != (half + rest,) + tuple(self.model.output_shape):
            raise WorkerError(f"dlogits must have the shape of the last forward output "
                              f"{(half + rest,) + tuple(self.model.output_shape)}, "
                              f"got {tuple(dlogits.shape)}")
        self._views["dlogits"][:rest] = dlogits[half:]
        self._send(f"backward {rest}")
        try:
            with threads.serial():
                self.model.backward(dlogits[:half], need_input_grad=False)
        finally:
            self._reply()
        for (_, _, grad), worker_grad in zip(self.model.parameters(), self._grads, strict=True):
            grad += worker_grad
        self._split = None
        return None

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
        if self._stderr is not None:
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
            last = f": {lines[-1]}" if lines else ""
        return WorkerError(f"the worker process for the second half of each batch stopped{last}",
                           hint="set CNNCLI_THREADS=1 to train in one process")


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
