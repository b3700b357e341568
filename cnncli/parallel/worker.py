"""The worker process of split training and inference: it builds the parent's network with
the speed-ups and answers one request a line (the second half of each batch) through shared
memory.

Started by ``processes.SplitBatchModel`` and ``processes.InferenceWorker`` as
``python -c "... serve(spec)"``.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import resource
import select
import sys

import numpy as np

from cnncli.nn.kernels import BufferPool, Im2col
from cnncli.nn.losses import cross_entropy_rows_gradient
from cnncli.nn.model import WholeBatch, model_from_entries
from cnncli.parallel.plan import apply_plan
from cnncli.parallel.processes import (
    HalfBatch,
    PairSums,
    _Layout,
    batch_norms,
    wait_readable,
    weight_slots,
)


def serve(spec_json: str) -> None:
    """The worker: build the network, then answer one line per request until stdin ends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # Replies go to a private copy of stdout; anything else printed goes to stderr (a file
    # the parent reads only to explain a failure), so it cannot pass for a reply.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    spec = json.loads(spec_json)
    model = apply_plan(model_from_entries(spec["input_shape"], spec["layers"],
                                          dtype=spec["dtype"]))
    model.runner = WholeBatch()  # this process is the second one: never a third
    inference = spec.get("inference", False)
    layout = _Layout(model, spec["images"], inference=inference)
    if [[n, list(s)] for n, s in layout.param_shapes] != spec["params"]:
        raise SystemExit("the worker's network does not match its parent's")
    views = layout.views(mmap.mmap(spec["fd"], layout.nbytes))
    worker = _Worker(model, layout, views, inference)
    if not inference:  # this process trains the second half of each batch
        for layer in model.layers:
            layer.splitter = HalfBatch(layer.splitter)
    if spec.get("exchange"):
        worker.sums = PairSums(views["sums"], 1, *spec["exchange"])
        for layer in batch_norms(model):
            layer.batch_sums = worker.sums
    if inference:
        out.write("ready\n")  # the parent sends halves from now on
    holding = False  # the last inference batch's arrays
    while True:
        # One request at a time (the parent waits for each reply), so nothing waits in
        # stdin's buffer when select says that the pipe is empty.
        if holding and not select.select([sys.stdin], [], [], IDLE_SECONDS)[0]:
            _let_go(model)
            holding = False
        wait_readable(sys.stdin.fileno())
        line = sys.stdin.readline()
        if not line:
            break
        command, _, arg = line.strip().partition(" ")
        holding = holding or command == "infer"
        try:
            # Like the training loop around this process's half: overflow or NaN in a
            # diverging run is for the parent to detect from the loss, not a worker failure.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                reply = worker.answer(command, arg)
            out.write("ok" + reply + "\n")
        except Exception as err:  # reported to the parent, which raises a WorkerError
            if worker.sums is not None:  # the parent may be waiting for this half's sums
                worker.sums.abort()
            first_line = (str(err).splitlines() or [""])[0]
            out.write(f"error {type(err).__name__}: {first_line}\n")


class _Worker:
    """The worker's network, whose weights (and gradients, or running statistics for
    inference) are the shared block's arrays: nothing is copied in or out per batch."""

    def __init__(self, model, layout: _Layout, views: dict, inference: bool):
        self.model, self.layout, self.views = model, layout, views
        self.sums: PairSums | None = None
        slots = weight_slots(model, inference)
        for (layer, store, key), shared in zip(slots, layout.per_param(views["params"]),
                                               strict=True):
            getattr(layer, store)[key] = shared
        if not inference:  # layers add to their gradients in place
            for (layer, _, key), grad in zip(slots, layout.per_param(views["grads"]),
                                             strict=True):
                layer.grads[key] = grad

    def answer(self, command: str, arg: str) -> str:
        """Carry out one request; return the text after "ok" in the reply."""
        model, views = self.model, self.views
        if command == "step":  # forward, this half's logit gradients, backward
            rest, batch, label_smoothing = arg.split()
            n = int(rest)
            for k in self.layout.masks:
                model.layers[k].use_mask(np.ascontiguousarray(views[f"mask{k}"][..., :n]))
            logits = views["logits"][:n] = model.forward(views["x"][:n], train=True)
            model.zero_grad()
            labels = views["labels"][:n].astype(np.intp)
            model.backward(cross_entropy_rows_gradient(logits, labels, float(label_smoothing),
                                                       int(batch)), need_input_grad=False)
        elif command == "infer":
            n = int(arg)
            views["logits"][:n] = model.forward(views["x"][:n], train=False)
        elif command == "memory":
            return " {:.1f} {:.1f}".format(*_rss_mb())
        elif command == "reset-peak":
            with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        else:
            raise ValueError(f"unknown request {command!r}")
        return ""


#: An inference worker idle this long lets go of its last batch's arrays (seconds).
IDLE_SECONDS = 1.0
#: What layers keep from a forward for their backward (each forward sets them anew).
CACHES = ("_cache", "_x", "_eval_input", "_argmax", "_aux", "_mean", "_scaled")


def _let_go(model) -> None:
    """Drop what an inference worker's layers kept for a backward that never comes here (the
    parent runs it) and their scratch arrays, and hand the memory back to the system: between
    validations, the worker of a training run holds its network alone, not the last batch's
    activations (ResNet-20, half a batch of 256: 353 MB resident, then 40)."""
    for layer in model.layers:
        for name in CACHES:
            if isinstance(layer.__dict__.get(name), (np.ndarray, tuple)):
                layer.__dict__[name] = None
        for pool in (layer.__dict__.get("_buffers"), layer.__dict__.get("scratch")):
            if isinstance(pool, BufferPool):
                pool.clear()
        for value in layer.__dict__.values():
            if isinstance(value, Im2col):  # its views hold the input and im2col buffers
                value.forget()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_mb() -> tuple[float, float]:
    now = peak = 0.0
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    now = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
    if not peak:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return now, peak
