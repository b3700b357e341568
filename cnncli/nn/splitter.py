"""How a layer runs its whole-array work: the plain way, all at once on the calling thread.

A layer never decides by itself to use threads or cache-sized pieces: it hands its work to
``self.splitter`` (see ``Layer``). This module's ``SERIAL`` is every layer's default and runs
the plain math; ``cnncli.parallel.plan`` installs a splitter that shares big work over
threads and cuts matmuls into cache-sized pieces (docs/speed.md).
"""

from __future__ import annotations

#: The largest im2col matrix built in one piece when nothing faster is asked for: it bounds
#: memory only (a big conv is built row by row rather than needing gigabytes at once).
PLAIN_IM2COL_MAX_BYTES = 64 * 2**20


class SerialSplitter:
    """Runs every task on the calling thread, whole: ``fn(0, length)``.

    The contract a layer relies on: ``split(fn, length, elements)`` and
    ``split_matmuls(fn, length, macs)`` call ``fn(lo, hi)`` on disjoint ranges that cover
    [0, length) exactly once (possibly at once, so ``fn`` may write only its own range);
    ``pair(first, second, macs)`` returns ``(first(), second())`` for two independent tasks.
    ``elements`` and ``macs`` say how big the work is, so that a splitter can keep small work
    on one thread. The piece sizes below are the conv kernels' (``nn/kernels.py``).
    """

    #: im2col matrices bigger than this are built in row pieces (never less than one row).
    im2col_max_bytes = PLAIN_IM2COL_MAX_BYTES
    #: Cut the weight gradient's long axis into pieces of this many bytes (None: do not).
    split_k_bytes: int | None = None
    #: Pieces shorter than this are not cut (used with split_k_bytes).
    split_k_min = 0
    #: An input gradient whose im2col matrix is at most this big skips the row pieces.
    whole_dcols_bytes = 0
    #: Compute an uncut weight-gradient product of at least this many multiply-adds as
    #: (cols @ dy.T).T, the same sum to rounding (None: never).
    transposed_weight_grad_macs: int | None = None
    #: A conv with a bias multiplies [W | b] by its im2col matrix with a row of ones below it,
    #: so that the product adds the bias and the weight-gradient product yields its gradient
    #: (no pass of their own; the same sums to rounding).
    fold_bias = False

    def split(self, fn, length: int, elements: int) -> None:
        """Element-wise work over [0, length) of a leading axis."""
        fn(0, length)

    def split_matmuls(self, fn, length: int, macs: int) -> None:
        """Matmul pieces [0, length) doing ``macs`` multiply-adds in all."""
        fn(0, length)

    def pair(self, first, second, macs: int):
        """Two independent tasks doing ``macs`` multiply-adds in all."""
        return first(), second()


SERIAL = SerialSplitter()
