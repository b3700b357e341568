"""Big element-wise NumPy work split over the cores (NumPy releases the GIL in ufunc loops).

BLAS already runs the matmuls on every core; the element-wise work around them (ReLU, pooling,
im2col copies, col2im adds, bias) is single-threaded in NumPy. ``split`` runs ``fn(lo, hi)`` on
disjoint ranges of a leading axis at once when the work is big enough to repay the hand-off
(tens of microseconds). Each element is computed by one thread with the same operations, so
results are bitwise identical for any thread count.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

#: Below this many elements the hand-off to another thread costs more than it saves.
MIN_ELEMENTS = 1 << 19
ENV_VARS = ("CNNCLI_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def default_threads() -> int:
    """The first thread count set in CNNCLI_THREADS, OMP_NUM_THREADS or OPENBLAS_NUM_THREADS,
    else the number of cores."""
    for var in ENV_VARS:
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return os.cpu_count() or 1


_threads = default_threads()
_pool: ThreadPoolExecutor | None = None


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


def split(fn, length: int, elements: int) -> None:
    """Call ``fn(lo, hi)`` over [0, length) in contiguous parts, one per thread, if
    ``elements`` (the work's size) is at least MIN_ELEMENTS; else once, on this thread."""
    global _pool
    parts = min(_threads, length)
    if parts < 2 or elements < MIN_ELEMENTS:
        fn(0, length)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads - 1, thread_name_prefix="cnncli")
    bounds = [length * i // parts for i in range(parts + 1)]
    futures = [_pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, parts)]
    try:
        fn(bounds[0], bounds[1])
    finally:
        for future in futures:
            future.result()


def pair(first, second, elements: int):
    """``(first(), second())``, the two run at once if there are threads to spare and
    ``elements`` (the work's size) is at least MIN_ELEMENTS."""
    global _pool
    if _threads < 2 or elements < MIN_ELEMENTS:
        return first(), second()
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads - 1, thread_name_prefix="cnncli")
    future = _pool.submit(first)
    try:
        result = second()
    finally:
        out = future.result()
    return out, result
