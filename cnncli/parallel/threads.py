"""cnncli's own threads: big NumPy work split over the cores, BLAS single-threaded inside.

NumPy's element-wise work (ReLU, pooling, im2col copies, col2im adds, bias) runs on one core,
and OpenBLAS's threading of the conv matmuls pays poorly for their skinny shapes and falls
apart when another process holds a core. So cnncli runs BLAS on one thread and splits the
work itself: ``split`` runs ``fn(lo, hi)`` on disjoint ranges of a leading axis at once (NumPy
releases the GIL inside its loops), ``pair`` runs two independent tasks at once (a conv's
weight and input gradients). Each element is computed by one thread with the same operations,
so threads never change training results. This module is the mechanism only: which work is
big enough to share out is ``plan.ThreadSplitter``'s decision (``thresholds``).

Importing cnncli before NumPy, with no BLAS thread variable set and speed-ups not switched
off (CNNCLI_SPEEDUPS=off), sets OPENBLAS_NUM_THREADS (and MKL_NUM_THREADS) to 1 and cnncli's
thread count to the number of cores. Otherwise cnncli uses CNNCLI_THREADS threads (default 1,
so as not to oversubscribe a multi-threaded BLAS).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from cnncli.parallel import OFF_VALUES, SPEEDUPS_VAR, mpi_launched

BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOTO_NUM_THREADS")


def _claim_blas() -> None:
    """Before NumPy loads, and if nobody chose BLAS threads: BLAS on one thread, cnncli's own
    threads on every core (measured faster on 2 cores than BLAS threading; benchmarks/)."""
    if ("numpy" in sys.modules or any(var in os.environ for var in BLAS_VARS)
            or os.environ.get(SPEEDUPS_VAR, "").strip().lower() in OFF_VALUES):
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    # Under MPI the ranks share the machine's cores: one thread each unless told otherwise.
    os.environ.setdefault("CNNCLI_THREADS", "1" if mpi_launched() else str(usable_cores()))


def usable_cores() -> int:
    """Cores this process may run on (``taskset`` and containers can allow fewer than the
    machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_threads() -> int:
    """CNNCLI_THREADS if set to a positive int, else 1."""
    value = os.environ.get("CNNCLI_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


_claim_blas()
_threads = default_threads()
_pool: ThreadPoolExecutor | None = None
#: Set on a thread while it runs a part: work it starts runs on it alone (a part waiting for
#: a pool thread that is busy with another part would wait forever).
_inside = threading.local()


def _serial() -> bool:
    return _threads < 2 or getattr(_inside, "busy", False)


@contextlib.contextmanager
def serial():
    """Work started inside the block runs on the calling thread alone (for when another
    process has the other cores)."""
    before = getattr(_inside, "busy", False)
    _inside.busy = True
    try:
        yield
    finally:
        _inside.busy = before


def _as_part(fn):
    def run(*args):
        with serial():
            return fn(*args)
    return run


def get_threads() -> int:
    return _threads


def set_threads(count: int) -> None:
    """Use ``count`` threads (1 = everything on the calling thread) from now on."""
    global _threads, _pool
    count = max(1, int(count))
    if count != _threads and _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _threads = count


def _worker_pool() -> ThreadPoolExecutor:
    """The other threads (the caller is one), started on first use."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads - 1, thread_name_prefix="cnncli")
    return _pool


def split(fn, length: int) -> None:
    """Call ``fn(lo, hi)`` over [0, length) in contiguous parts, one per thread (once, on this
    thread, if there is one thread or this is already a part)."""
    parts = min(_threads, length)
    if parts < 2 or _serial():
        fn(0, length)
        return
    pool = _worker_pool()
    bounds = [length * i // parts for i in range(parts + 1)]
    part = _as_part(fn)
    futures = [pool.submit(part, bounds[i], bounds[i + 1]) for i in range(1, parts)]
    try:
        part(bounds[0], bounds[1])
    finally:
        for future in futures:
            future.result()


def pair(first, second):
    """``(first(), second())``, the two run at once if there are threads to spare."""
    if _serial():
        return first(), second()
    future = _worker_pool().submit(_as_part(first))
    try:
        result = _as_part(second)()
    finally:
        out = future.result()
    return out, result
