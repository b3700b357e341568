"""Hot array code for windowed layers on the batch-last (C, H, W, N) layout.

im2col is a strided view copied into a reused buffer; col2im is kh*kw strided adds into a
padded buffer (never ``np.add.at``). Nothing here allocates per call except where noted.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

Pair = tuple[int, int]


class BufferPool:
    """Arrays reused across steps, keyed by role; reallocated only when shape or dtype changes."""

    def __init__(self):
        self._arrays: dict = {}  # by role (by role, shape and dtype in SharedScratch)
        self._interiors: dict = {}  # get_bordered's interior per key

    def get(self, role: str, shape, dtype, zero: bool = False) -> np.ndarray:
        shape = tuple(map(int, shape))
        return self._fetch(self._key(role, shape, dtype), shape, dtype, zero)

    def get_bordered(self, role: str, shape, dtype, interior) -> np.ndarray:
        """A zero-bordered buffer, zeroed only when it is new or ``interior`` (a key for where
        callers write: the input's size and offset) changes: every caller overwrites the same
        interior and never the border, so the border is still zero."""
        shape = tuple(map(int, shape))
        key = self._key(role, shape, dtype)
        where = (shape, np.dtype(dtype), interior)
        if self._interiors.get(key) != where:
            self._fetch(key, shape, dtype, zero=True)
            self._interiors[key] = where
        return self._arrays[key]

    def clear(self) -> None:
        self._arrays.clear()
        self._interiors.clear()

    def _key(self, role: str, shape: tuple, dtype):
        return role

    def _fetch(self, key, shape: tuple, dtype, zero: bool) -> np.ndarray:
        if self._interiors:
            self._interiors.pop(key, None)  # contents are the caller's from here on
        arr = self._arrays.get(key)
        if arr is None or arr.shape != shape or arr.dtype != dtype:
            arr = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
            self._arrays[key] = arr
        elif zero:
            arr.fill(0)
        return arr


class SharedScratch(BufferPool):
    """One pool of scratch arrays for many layers: arrays a layer needs only within one call
    (im2col pieces it rebuilds, backward's padded and im2col'd gradients), kept by role and
    shape, so that layers of the same shape reuse one set instead of each holding its own."""

    def _key(self, role: str, shape: tuple, dtype):
        # A tuple, not a formatted string: this runs for every im2col piece.
        return role, shape, dtype


def pad_into(buf: np.ndarray, x: np.ndarray, top: int, left: int) -> np.ndarray:
    """Copy x (C, H, W, N) into buf at (top, left); buf's border must already be zero."""
    _, h, w, _ = x.shape
    np.copyto(buf[:, top:top + h, left:left + w, :], x, casting="same_kind")
    return buf


def window_view(xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_w: int,
                row0: int, rows: int) -> np.ndarray:
    """Read-only (C, kh, kw, rows, W', N) view of xp: every window tap for output rows
    [row0, row0 + rows)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    sc, sy, sx, sn = xp.strides
    shape = (xp.shape[0], kh, kw, rows, out_w, xp.shape[3])
    strides = (sc, dh * sy, dw * sx, sh * sy, sw * sx, sn)
    if xp.flags.c_contiguous:
        # The ndarray constructor over xp's buffer makes the same view several times faster
        # than as_strided, which goes through __array_interface__ (a conv calls this once per
        # im2col piece, dozens of times a step).
        view = np.ndarray(shape, xp.dtype, buffer=xp, offset=row0 * sh * sy, strides=strides)
        view.flags.writeable = False
        return view
    return as_strided(xp[:, row0 * sh:], shape=shape, strides=strides, writeable=False)


def im2col(xp: np.ndarray, cols: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair,
           out_w: int, row0: int, rows: int) -> np.ndarray:
    """Fill cols (C*kh*kw, rows*W'*N) from the padded input xp; returns cols."""
    view = window_view(xp, kernel, stride, dilation, out_w, row0, rows)
    np.copyto(cols.reshape(view.shape), view, casting="same_kind")
    return cols


class Im2col:
    """im2col for one layer's pieces, each piece's strided view (and its buffer shaped like
    it) kept while the input and the buffer are the same arrays: a conv fills the same pieces
    of the same padded buffer every step, and building the views costs more Python time than
    a small piece's copy."""

    def __init__(self):
        # (the input the views are of, {piece: (cols, view, cols shaped as view)}), replaced
        # as one object so that threads filling other pieces never pair a new input with
        # views of the old one.
        self._state: tuple = (None, {})

    def fill(self, xp: np.ndarray, cols: np.ndarray, kernel: Pair, stride: Pair,
             dilation: Pair, out_w: int, row0: int, rows: int) -> np.ndarray:
        """As ``im2col`` into the first C*kh*kw rows of cols (a row below them is the
        caller's); returns cols."""
        state = self._state
        if state[0] is not xp:
            state = self._state = (xp, {})
        key = (row0, rows, kernel, stride, dilation, out_w)
        piece = state[1].get(key)
        if piece is None or piece[0] is not cols:
            view = window_view(xp, kernel, stride, dilation, out_w, row0, rows)
            taps = view.shape[0] * view.shape[1] * view.shape[2]
            piece = state[1][key] = (cols, view, cols[:taps].reshape(view.shape))
        np.copyto(piece[2], piece[1], casting="same_kind")
        return cols

    def forget(self) -> None:
        """Let go of the input and buffers the views are of."""
        self._state = (None, {})

    def __reduce__(self):
        # A copy of a layer (deepcopy, pickle) owns other buffers: it starts with no views.
        return Im2col, ()


def col2im_add(dxp: np.ndarray, dcols: np.ndarray, kernel: Pair, stride: Pair,
               dilation: Pair, out_w: int, row0: int, rows: int) -> None:
    """Add dcols (C*kh*kw, rows*W'*N) back onto the padded gradient dxp (C, Hp, Wp, N)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    c, n = dxp.shape[0], dxp.shape[3]
    d6 = dcols.reshape(c, kh, kw, rows, out_w, n)
    for i in range(kh):
        top = row0 * sh + i * dh
        rs = slice(top, top + (rows - 1) * sh + 1, sh)
        for j in range(kw):
            cs = slice(j * dw, j * dw + (out_w - 1) * sw + 1, sw)
            dxp[:, rs, cs, :] += d6[:, i, j]


def row_chunks(out_h: int, bytes_per_row: int, limit: int) -> list[tuple[int, int]]:
    """Split output rows into (row0, rows) pieces whose im2col matrix fits in ``limit`` bytes
    (at least one row each). A layer that fits in one piece keeps its im2col matrix for
    backward; one built in pieces rebuilds them."""
    per = max(1, min(out_h, limit // max(bytes_per_row, 1)))
    return [(r, min(per, out_h - r)) for r in range(0, out_h, per)]
