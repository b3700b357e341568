"""Data-parallel training over MPI ranks: ``mpiexec -n N cnncli train CONFIG``.

Every rank holds the whole model, the whole dataset and the same random streams, so every rank
draws the same global batch (shuffle and augmentation) and the same dropout masks for it; it
then runs forward and backward on its own slice of that batch. Three exchanges make the step
the single-process one (docs/distributed.md):

* the logits of every slice are gathered, so that each rank computes the loss, its gradient
  and the accuracy of the whole batch (the loss is a mean over the global batch);
* batch norm's per-channel sums are gathered and added in rank order (``RankSums``), so each
  slice is normalised with the statistics of the global batch;
* the flat weight-gradient buffers are gathered and added in rank order, so every rank
  applies the same update and keeps bit-identical weights.

Sums in rank order (an Allgather, then adds here) rather than MPI's Allreduce: its order may
depend on the library's algorithm; this one depends only on N, so runs repeat bit for bit.
Every wait polls with a deadline (``CNNCLI_MPI_TIMEOUT`` seconds, default ``DEFAULT_TIMEOUT``):
a rank that hangs makes the others stop with one line instead of waiting forever. A rank that
dies is noticed by ``mpiexec``, which stops the others at once.

Importing this module does not import mpi4py; ``world()`` does, and only when the environment
says that an MPI launcher started this process (``cnncli.parallel.mpi_launched``).
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from cnncli.errors import CnncliError, ConfigError
from cnncli.parallel import mpi_launched

#: How long a rank waits for the others in one exchange before it gives up (seconds).
TIMEOUT_VAR = "CNNCLI_MPI_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
#: How long a wait spins before it sleeps between polls (seconds).
SPIN_SECONDS = 0.05
#: What to install for MPI (mpi4py and the mpich wheel, which provides mpiexec).
INSTALL_HINT = "pip install 'cnncli[mpi]'"


class RankTimeout(CnncliError):
    """Another rank did not take part in an exchange within the timeout."""

    exit_code = 1


def mpi_missing() -> ConfigError:
    return ConfigError("training on several ranks needs mpi4py and mpiexec, which are not "
                       "installed", hint=f"run {INSTALL_HINT}")


def exchange_timeout() -> float:
    """CNNCLI_MPI_TIMEOUT as a positive number of seconds (DEFAULT_TIMEOUT if unset)."""
    value = os.environ.get(TIMEOUT_VAR, "").strip()
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_VAR} must be a positive number of seconds, got {value!r}",
                          hint=f"unset it for {DEFAULT_TIMEOUT:g} s")
    return seconds


class World:
    """The ranks of one training run and the exchanges between them."""

    def __init__(self, comm, timeout: float):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout = timeout
        self.bytes_sent = 0  # by this rank, in every exchange so far (benchmarks)
        self.exchange_seconds = 0.0  # spent in exchanges so far, waiting included (benchmarks)
        # A second communicator for stopping together: an interrupted exchange may still be
        # pending on the first, and collectives on one communicator must pair up in order.
        self.control = comm.Dup()

    def gather(self, array):
        """Every rank's ``array`` (same shape and dtype on each), stacked in rank order."""
        import numpy as np

        array = np.ascontiguousarray(array)
        out = np.empty((self.size,) + array.shape, array.dtype)
        self._wait(self.comm.Iallgather(array, out), "an exchange")
        self.bytes_sent += array.nbytes
        return out

    def total(self, array):
        """The sum over ranks of ``array``, added in rank order: the same bits on every rank."""
        parts = self.gather(array)
        result = parts[0].copy()
        for part in parts[1:]:
            result += part
        return result

    def _wait(self, request, what: str) -> None:
        from mpi4py import MPI

        started = time.monotonic()
        deadline = started + self.timeout
        while not request.Test():
            if self.rank == 0:
                self._raise_a_follower_error()
            else:
                self._raise_if_stopped()
            if time.monotonic() > deadline:
                raise RankTimeout(
                    f"rank {self.rank} of {self.size}: no reply from the other ranks in "
                    f"{what} for {self.timeout:g} s; a rank died, hangs or stopped early "
                    f"({MPI.Get_processor_name()})",
                    hint=f"look for the other ranks' errors; set {TIMEOUT_VAR}=SECONDS to "
                         "wait longer")
            # Spin (yielding the core) while the others are about to arrive, as MPI's own
            # blocking calls do; sleep once they are late, so a wait costs no core.
            time.sleep(0 if time.monotonic() - started < SPIN_SECONDS else 0.001)
        self.exchange_seconds += time.monotonic() - started

    def _raise_a_follower_error(self) -> None:
        """Rank 0, while it waits: raise the error a follower sent (``tell_rank_0``), if any."""
        from mpi4py import MPI

        received = self._take(MPI.ANY_SOURCE, ERROR_TAG)
        if received is not None:
            source, text = received
            code, _, message = text.partition(" ")
            raise RankFailed(f"rank {source} of {self.size}: {message}", _exit_code(code))

    def _raise_if_stopped(self) -> None:
        """A rank other than 0, while it waits: raise ``RunStopped`` if rank 0 ended the run
        (``stop_now``)."""
        code = self._stop_code()
        if code is not None:
            raise RunStopped(code)

    def _stop_code(self) -> int | None:
        """The exit code rank 0 ended the run with, if its word has come."""
        received = self._take(0, STOP_TAG)
        return None if received is None else _exit_code(received[1])

    def _take(self, source, tag: int) -> tuple[int, str] | None:
        """(sender, text) of a control message with ``tag`` from ``source`` that has come,
        or None; never waits."""
        from mpi4py import MPI

        status = MPI.Status()
        if not self.control.Iprobe(source=source, tag=tag, status=status):
            return None
        text = bytearray(status.Get_count(MPI.BYTE))
        self.control.Recv([text, MPI.BYTE], source=status.Get_source(), tag=tag)
        return status.Get_source(), text.decode("utf-8", "replace")

    def _tell_the_others_to_stop(self, code: int) -> None:
        """Rank 0: tell every other rank that the run ends with ``code`` (they exit without a
        word), and wait until the messages are on their way (at most a second)."""
        from mpi4py import MPI

        text = bytearray(str(code).encode())
        requests = [self.control.Isend([text, MPI.BYTE], dest=rank, tag=STOP_TAG)
                    for rank in range(1, self.size)]
        deadline = time.monotonic() + 1.0
        while not MPI.Request.Testall(requests) and time.monotonic() < deadline:
            time.sleep(0.001)


def _exit_code(text: str) -> int:
    return int(text) if text.isdigit() else 1


_world: World | None = None


def world() -> World | None:
    """The MPI ranks this process trains with, or None when it runs alone (no launcher in
    the environment, or a world of one rank)."""
    global _world
    if _world is not None or not mpi_launched():
        return _world
    try:
        from mpi4py import MPI
    except ImportError:
        raise mpi_missing() from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() > 1:
        _world = World(comm, exchange_timeout())
    return _world


def is_follower() -> bool:
    """Whether this process is a rank other than 0 of an MPI run (it prints nothing)."""
    return _world is not None and _world.rank != 0


#: Tags on the control communicator: a follower's error for rank 0 to tell; rank 0's word
#: that the run ends (with the exit code).
ERROR_TAG = 1
STOP_TAG = 2


class RankFailed(CnncliError):
    """The error another rank met, as rank 0 tells it."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class RunStopped(CnncliError):
    """Rank 0 ended the run after an error it has told: a rank other than 0 exits with
    ``exit_code`` and says nothing."""

    def __init__(self, exit_code: int):
        super().__init__("rank 0 ended the run")
        self.exit_code = exit_code


def tell_rank_0(message: str, code: int) -> int | None:
    """A rank other than 0 met an error: send ``message`` and exit ``code`` to rank 0, which
    tells it (or its own, when it met one too: a bad config, a diverged loss) and ends the run,
    and wait for rank 0's word that it has. So each error is told once, by rank 0, however late
    rank 0 reaches it. Returns the exit code rank 0 ended the run with (the caller exits with it
    and says nothing), or None (the caller tells the error itself): on rank 0, without MPI, or
    if no word came within the exchange timeout."""
    if not is_follower():
        return None
    from mpi4py import MPI

    text = bytearray(f"{code} {message}".encode())
    request = _world.control.Isend([text, MPI.BYTE], dest=0, tag=ERROR_TAG)
    deadline = time.monotonic() + _world.timeout
    while time.monotonic() < deadline:
        request.Test()  # lets MPI move the message along
        stopped = _world._stop_code()
        if stopped is not None:
            return stopped
        time.sleep(0.01)
    return None


def stop_now(code: int) -> None:
    """Under MPI, end this rank at once with exit ``code`` after a failure, without
    MPI_Finalize (which would wait for the others, possibly forever). Rank 0 first tells the
    others (``RunStopped``), which then exit too: ``mpiexec`` stops them when one rank exits
    this way, but not always (it left them running in 2 of 30 runs whose output went to pipes;
    MPI_Abort stops them but may drop the last lines of output). Without MPI, return."""
    if _world is None:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    if _world.rank == 0:
        _world._tell_the_others_to_stop(code)
    os._exit(code)


def stop_together(code: int) -> None:
    """Under MPI, after Ctrl-C or SIGTERM: wait until every rank got here (rank 0 once it has
    saved; at most the timeout), then end this rank with ``code``, skipping MPI_Finalize,
    which would complain about the exchange the signal interrupted. Without MPI, return."""
    if _world is None:
        return
    try:
        _world._wait(_world.control.Ibarrier(), "stopping")
    except (RankTimeout, RankFailed, RunStopped, KeyboardInterrupt):
        pass
    stop_now(code)


class RankSums:
    """Batch norm's ``batch_sums`` hook on a split batch: sums over every rank's slice."""

    def __init__(self, world: World):
        self.world = world

    def total(self, sums):
        return self.world.total(sums)


def slice_bounds(n: int, size: int) -> list[int]:
    """Where each rank's slice of a batch of ``n`` starts (and the last ends): near-equal
    slices, the larger ones first."""
    return [n * k // size for k in range(size + 1)]


class RankSliceModel:
    """Stands in for ``model`` in ``train_step`` on one rank: a training batch of at least one
    image per rank runs its slice here, exchanging what makes the step the whole batch's (see
    the module docstring); evaluation and smaller batches run whole on every rank."""

    def __init__(self, model, world: World):
        from cnncli.nn.layers.dropout import Dropout
        from cnncli.nn.layers.norm import _BatchNorm

        self.model, self.world = model, world
        self._norms = [layer for layer in model.layers if isinstance(layer, _BatchNorm)]
        self._dropouts = [k for k, layer in enumerate(model.layers)
                          if isinstance(layer, Dropout) and layer.p > 0]
        self._slice: tuple[int, int] | None = None
        self._sums = RankSums(world)

    def zero_grad(self) -> None:
        self.model.zero_grad()

    def parameters(self):
        return self.model.parameters()

    def forward(self, x, train: bool = False):
        import numpy as np

        n = len(x)
        if not train or n < self.world.size:
            self._slice = None
            return self.model.forward(x, train)
        bounds = slice_bounds(n, self.world.size)
        lo, hi = bounds[self.world.rank], bounds[self.world.rank + 1]
        model = self.model
        for k in self._dropouts:  # the whole batch's masks, as one process draws them
            mask = model.layers[k].draw_mask(model.shapes[k] + (n,), model.dtype)
            model.layers[k].use_mask(np.ascontiguousarray(mask[..., lo:hi]))
        for layer in self._norms:
            layer.batch_sums = self._sums
        try:
            logits = model.forward(x[lo:hi], train=True)
        finally:
            for layer in self._norms:
                del layer.batch_sums  # back to the class's LOCAL_BATCH
        self._slice = (lo, hi)
        widest = max(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True))
        padded = np.zeros((widest,) + logits.shape[1:], logits.dtype)
        padded[:hi - lo] = logits
        parts = self.world.gather(padded)
        return np.concatenate([parts[r][:bounds[r + 1] - bounds[r]]
                               for r in range(self.world.size)])

    def backward(self, dlogits, need_input_grad: bool = True):
        import numpy as np

        if self._slice is None:
            return self.model.backward(dlogits, need_input_grad)
        if need_input_grad:
            raise CnncliError("a batch split over MPI ranks gives no input gradient")
        lo, hi = self._slice
        self._slice = None
        for layer in self._norms:
            layer.batch_sums = self._sums
        try:
            self.model.backward(dlogits[lo:hi], need_input_grad=False)
        finally:
            for layer in self._norms:
                del layer.batch_sums
        grads = [g for _, _, g in self.model.parameters()]
        if grads:
            flat = self.world.total(np.concatenate([g.ravel() for g in grads]))
            start = 0
            for g in grads:
                g[...] = flat[start:start + g.size].reshape(g.shape)
                start += g.size
        return None

    def close(self) -> None:
        for layer in self._norms:
            layer.__dict__.pop("batch_sums", None)


def launch(ranks: int, argv: list[str]) -> int:
    """Run ``cnncli`` with ``argv`` on ``ranks`` ranks of this machine (``mpiexec -n``);
    returns its exit code. Raises ConfigError without mpi4py or mpiexec."""
    import signal
    import subprocess
    import threading

    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise mpi_missing() from None
    here = os.path.dirname(sys.executable)
    mpiexec = shutil.which("mpiexec", path=here) or shutil.which("mpiexec")
    if mpiexec is None:
        raise mpi_missing()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # Not ``-m cnncli``: that puts the working directory first on the import path (see
    # processes.py); each rank imports the very cnncli this process runs.
    start = (f"import sys; sys.path[0] = {root!r}; from cnncli.cli import main; "
             f"main(prog_name='cnncli')")
    # Its own session: a Ctrl-C at the terminal reaches this process alone, which passes it
    # on once (mpiexec takes a second one as "abort now").
    mpiexec_run = subprocess.Popen([mpiexec, "-n", str(ranks), sys.executable, "-c", start,
                                    *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, bufsize=1, start_new_session=True)
    # Relayed line by line rather than inherited: this process's sys.stdout may not be its
    # file descriptor 1 (a caller that captures the output).
    relays = [threading.Thread(target=_relay, args=(source, target), daemon=True)
              for source, target in ((mpiexec_run.stdout, sys.stdout),
                                     (mpiexec_run.stderr, sys.stderr))]
    for relay in relays:
        relay.start()
    previous = signal.signal(signal.SIGTERM, lambda *_: mpiexec_run.send_signal(signal.SIGTERM))
    try:
        while True:
            try:
                code = mpiexec_run.wait()
                break
            except KeyboardInterrupt:  # mpiexec passes it on to the ranks, which save once
                mpiexec_run.send_signal(signal.SIGINT)  # and stop; wait for that
    finally:
        signal.signal(signal.SIGTERM, previous)
    for relay in relays:
        relay.join()
    return code


def _relay(source, target) -> None:
    for line in source:
        target.write(line)
        target.flush()
    source.close()
