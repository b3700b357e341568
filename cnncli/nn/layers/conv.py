"""2-D convolution as ``torch.nn.Conv2d``: cross-correlation with stride, padding, dilation,
groups. On the (C, H, W, N) layout a conv is im2col (a strided view) plus one matmul."""

from __future__ import annotations

import numpy as np

from cnncli.checks import check_bool as boolean
from cnncli.errors import ConfigError, ShapeError
from cnncli.nn import kernels
from cnncli.nn.layers.base import Layer, conv_output_size, int_pair, positive_int
from cnncli.nn.layers.init import check_scheme, init_bias, init_weight
from cnncli.nn.registry import register


def _by_group(a: np.ndarray, groups: int) -> np.ndarray:
    """(rows, L) -> (groups, rows/groups, L) view; plain 2-D (the fast matmul path) for 1 group."""
    if groups == 1:
        return a.reshape((a.shape[0], -1), copy=False)
    return a.reshape((groups, a.shape[0] // groups, -1), copy=False)


def _pair_text(pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """'same' padding of one axis as TensorFlow/Keras: ceil(size / stride) outputs; the total
    max((out-1)*s + d*(k-1) + 1 - size, 0) is split with the extra pixel at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


@register("conv2d")
class Conv2d(Layer):
    """Weight (O, C/groups, kh, kw), bias (O,). padding: int, [h, w], "same" or "valid"."""

    per_sample = True

    accepts_activation = True
    aliases = {"filters": "out_channels"}
    fresh_output = True       # y and dx are new arrays, never kept (see Layer)
    fresh_input_grad = True

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, in_channels=None, init="default", name: str | None = None):
        super().__init__(name)
        self.out_channels = positive_int("out_channels", out_channels)
        self.kernel_size = int_pair("kernel_size", kernel_size)
        self.stride = int_pair("stride", stride)
        self.dilation = int_pair("dilation", dilation)
        self.groups = positive_int("groups", groups)
        self.bias = boolean("bias", bias)
        self.init = check_scheme(init)
        self.in_channels = None if in_channels is None else positive_int("in_channels",
                                                                         in_channels)
        self.padding = padding
        self._pads = self._resolve_padding(padding)  # ((top, bottom), (left, right))
        if self.out_channels % self.groups:
            raise ConfigError(f"out_channels {self.out_channels} is not divisible by groups "
                              f"{self.groups}", key="groups")
        if self.in_channels is not None and self.in_channels % self.groups:
            raise ConfigError(f"in_channels {self.in_channels} is not divisible by groups "
                              f"{self.groups}", key="groups")
        self._buffers = kernels.BufferPool()
        #: Where arrays needed only within one call go (rebuilt im2col pieces, backward's
        #: padded and im2col'd gradients): this layer's own pool unless an execution plan
        #: hands it one shared by many layers (less memory).
        self.scratch: kernels.BufferPool = self._buffers
        self._x: np.ndarray | None = None       # padded input (or the input itself)
        self._cols_kept = False                  # cols buffer still holds the last forward's
        self._fold = False                       # the last forward's bias rode in its matmuls
        self._in_hw: tuple[int, int] | None = None
        self._im2col = kernels.Im2col()       # of the (padded) input
        self._dy_im2col = kernels.Im2col()    # of the padded output gradient (backward)

    def _resolve_padding(self, padding):
        if isinstance(padding, str):
            if padding == "valid":
                return (0, 0), (0, 0)
            if padding != "same":
                raise ConfigError(f"padding must be an int >= 0, [h, w], 'same' or 'valid'; "
                                  f"got {padding!r}", key="padding")
            if self.stride != (1, 1):
                return None  # depends on the input size: see _pads_for
            return tuple(same_padding(1, k, 1, d)
                         for k, d in zip(self.kernel_size, self.dilation, strict=True))
        ph, pw = int_pair("padding", padding, minimum=0)
        return (ph, ph), (pw, pw)

    def _pads_for(self, h, w):
        """((top, bottom), (left, right)) for an h x w input; only 'same' with a stride
        depends on the input size."""
        if not (self.padding == "same" and self.stride != (1, 1)):
            return self._pads
        return tuple(same_padding(size, k, s, d) for size, k, s, d in zip(
            (h, w), self.kernel_size, self.stride, self.dilation, strict=True))

    # -- shapes
    def _channels(self, input_shape) -> int:
        c = self.require_spatial(input_shape)[0]
        if self.in_channels is not None and self.in_channels != c:
            raise ShapeError(f"in_channels is {self.in_channels} but the input has {c} "
                             f"channels", key="in_channels", hint="remove in_channels to infer it")
        if c % self.groups:
            raise ShapeError(f"input channels {c} are not divisible by groups {self.groups}",
                             key="groups")
        return c

    def _out_hw(self, input_shape) -> tuple[int, int]:
        _, h, w = self.require_spatial(input_shape)
        out = []
        for size, k, s, (lo, hi), d in zip((h, w), self.kernel_size, self.stride,
                                          self._pads_for(h, w), self.dilation, strict=True):
            n = conv_output_size(size, k, s, lo, hi, d)
            if n <= 0:
                span = d * (k - 1) + 1
                raise ShapeError(f"kernel {_pair_text(self.kernel_size)} (dilated span {span}) "
                                 f"is larger than the padded input {size + lo + hi} "
                                 f"(input {h}x{w})", key="kernel_size",
                                 hint="use a smaller kernel or more padding")
            out.append(n)
        return out[0], out[1]

    def output_shape(self, input_shape):
        self._channels(input_shape)
        return (self.out_channels, *self._out_hw(input_shape))

    # -- weights
    def build(self, input_shape, rng, dtype=np.float32):
        super().build(input_shape, rng, dtype)
        c = self._channels(input_shape)
        kh, kw = self.kernel_size
        # As torch.nn.init and Keras: the weight's dims 1 and 0 times the receptive field, so
        # groups divide fan_in (through the weight's shape) but not fan_out.
        fan_in = c // self.groups * kh * kw
        fan_out = self.out_channels * kh * kw
        shape = (self.out_channels, c // self.groups, kh, kw)
        self.params = {"weight": init_weight(rng, shape, fan_in, fan_out, self.init, self.dtype)}
        if self.bias:
            self.params["bias"] = init_bias(rng, self.out_channels, fan_in, self.init,
                                            self.dtype)
        self._buffers.clear()
        self._im2col.forget()
        self._dy_im2col.forget()
        self.zero_grad()

    def use_scratch(self, pool: kernels.BufferPool | None) -> None:
        """Put arrays needed only within one call in ``pool`` (shared with other layers), or
        in this layer's own buffers (None)."""
        self.scratch = self._buffers if pool is None else pool

    # -- math
    def _padded_size(self, h, w) -> tuple[int, int]:
        (t, b), (lft, r) = self._pads
        return h + t + b, w + lft + r

    def _folds_bias(self) -> bool:
        """Whether the bias rides in the matmuls (``splitter.fold_bias``): [W | b] times the
        im2col matrix with a row of ones below it."""
        return self.bias and self.groups == 1 and self.splitter.fold_bias

    def _cols_rows(self, c) -> int:
        """Rows of the im2col matrix: the taps, and the row of ones of a folded bias."""
        kh, kw = self.kernel_size
        return c * kh * kw + self._fold

    def _chunks(self, c, out_h, out_w, n) -> list[tuple[int, int]]:
        return kernels.row_chunks(out_h, self._cols_rows(c) * out_w * n * self.dtype.itemsize,
                                  self.splitter.im2col_max_bytes)

    def _fill_cols(self, row0, rows, out_w, role, pool):
        """im2col for output rows [row0, row0 + rows) into ``pool``'s reused buffer ``role``
        (and its last row set to ones when the bias is folded: another layer's piece of the
        same shape may have used that row)."""
        c, n = self._x.shape[0], self._x.shape[3]
        cols = pool.get(role, (self._cols_rows(c), rows * out_w * n), self.dtype)
        self._im2col.fill(self._x, cols, self.kernel_size, self.stride, self.dilation, out_w,
                          row0, rows)
        if self._fold:
            cols[-1] = 1
        return cols

    def _cols_elements(self, out_h, out_w, n) -> int:
        kh, kw = self.kernel_size
        return self._x.shape[0] * kh * kw * out_h * out_w * n

    def _macs(self, out_h, out_w, n) -> int:
        """Multiply-adds of one forward matmul over the batch."""
        return self._cols_elements(out_h, out_w, n) * self.out_channels // self.groups

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        c, h, w, n = x.shape
        self._in_hw = (h, w)
        self._pads = self._pads_for(h, w)  # backward uses this forward's padding
        out_h, out_w = self._out_hw((c, h, w))
        (t, _), (lft, _) = self._pads
        if self._pads == ((0, 0), (0, 0)):
            self._x = x
        else:
            xp = self._buffers.get_bordered("xpad", (c, *self._padded_size(h, w), n),
                                            self.dtype, (h, w, t, lft))
            self._x = kernels.pad_into(xp, x, t, lft)
        g, o = self.groups, self.out_channels
        fold = self._fold = self._folds_bias()
        weight = _by_group(np.ascontiguousarray(self.params["weight"]), g)
        # OpenBLAS multiplies some small row counts (5-7, 9, 11, 13-15) slower than the next
        # multiple of 4 (benchmarks/RESULTS.md): pad the weight rows with zeros and drop those
        # output rows.
        padded = o if g > 1 or o <= 2 else -(-o // 4) * 4
        if padded != o or fold:
            wpad = self._buffers.get("wpad", (padded, weight.shape[-1] + fold), self.dtype,
                                     zero=True)
            wpad[:o, :weight.shape[-1]] = weight
            if fold:
                wpad[:o, -1] = self.params["bias"]
            weight = wpad
        y_all = np.empty((padded, out_h, out_w, n), self.dtype)
        y = y_all[:o]  # still C-contiguous
        chunks = self._chunks(c, out_h, out_w, n)
        bias = self.params["bias"][:, None, None, None] if self.bias and not fold else None
        # One piece is kept for backward (this layer's own buffer); pieces are rebuilt there.
        pool = self._buffers if len(chunks) == 1 else self.scratch

        def part(lo, hi):
            # Each thread fills its own im2col buffers; output rows do not overlap. The bias
            # goes on each piece while it is still in cache.
            for row0, rows in chunks[lo:hi]:
                role = f"cols{lo}" if rows == chunks[0][1] else "cols_tail"
                cols = self._fill_cols(row0, rows, out_w, role, pool)
                np.matmul(weight, _by_group(cols, g),
                          out=_by_group(y_all[:, row0:row0 + rows], g))
                if bias is not None:
                    y[:, row0:row0 + rows] += bias

        self.splitter.split_matmuls(part, len(chunks), self._macs(out_h, out_w, n))
        self._cols_kept = len(chunks) == 1  # then "cols0" still holds it for backward
        return y

    def _backward(self, dy: np.ndarray, need_dx: bool = True):
        dy = np.ascontiguousarray(dy)
        _, out_h, out_w, n = dy.shape
        if self.bias and not self._fold:  # a folded bias: from the weight-gradient product
            dbias = self.grads["bias"]

            def add_bias_grad(lo, hi):
                dbias[lo:hi] += dy[lo:hi].sum(axis=(1, 2, 3))

            self.splitter.split(add_bias_grad, dy.shape[0], dy.size)
        chunks = self._chunks(self._x.shape[0], out_h, out_w, n)
        if not need_dx:
            self._add_weight_grad(dy, chunks)
            return None
        # The weight and input gradients are independent: the splitter may run them at once.
        _, dx = self.splitter.pair(lambda: self._add_weight_grad(dy, chunks),
                                   lambda: self._input_grad(dy, chunks),
                                   2 * self._macs(out_h, out_w, n))
        return dx

    def _add_weight_grad(self, dy: np.ndarray, chunks) -> None:
        """dW += dy @ cols.T, chunk by chunk (rebuilding cols unless forward kept them), each
        product cut along its long axis if the splitter says so, so that the pieces stay in
        cache (split-K), or else computed transposed if the splitter says so."""
        g, out_w, n = self.groups, dy.shape[2], dy.shape[3]
        dweight = _by_group(self.grads["weight"], g)
        if self._fold:  # [dW | db]: the row of ones in cols sums dy for the bias gradient
            weight_grad = dweight
            dweight = np.zeros((weight_grad.shape[0], weight_grad.shape[1] + 1), self.dtype)
        for row0, rows in chunks:
            if self._cols_kept:
                cols = self._buffers.get("cols0", (self._cols_rows(self._x.shape[0]),
                                                   rows * out_w * n), self.dtype)
            else:  # scratch, like forward's pieces (less memory)
                cols = self._fill_cols(row0, rows, out_w,
                                       "cols0" if rows == chunks[0][1] else "cols_tail",
                                       self.scratch)
            cols_g = _by_group(cols, g)
            dy_g = _by_group(dy[:, row0:row0 + rows], g)
            length = dy_g.shape[-1]
            step = self._split_k_step(cols_g.shape[-2] + dy_g.shape[-2], length)
            least = self.splitter.transposed_weight_grad_macs
            if step >= length and least is not None and dweight.size * length >= least:
                # (cols @ dy.T).T: OpenBLAS runs the product with the taps as its long output
                # side faster than dy @ cols.T (benchmarks/RESULTS.md).
                dweight += np.matmul(cols_g, dy_g.swapaxes(-1, -2)).swapaxes(-1, -2)
                continue
            for start in range(0, length, step):
                piece = slice(start, start + step)
                dweight += np.matmul(dy_g[..., piece], cols_g[..., piece].swapaxes(-1, -2))
        if self._fold:
            weight_grad += dweight[:, :-1]
            self.grads["bias"] += dweight[:, -1]

    def _split_k_step(self, rows: int, length: int) -> int:
        """Columns per piece of a weight-gradient product over ``rows`` rows of operands."""
        piece_bytes = self.splitter.split_k_bytes
        if piece_bytes is None:
            return length
        step = piece_bytes // (rows * self.dtype.itemsize)
        return length if step < self.splitter.split_k_min else step

    def _input_grad(self, dy: np.ndarray, chunks) -> np.ndarray:
        """dx: a correlation with the flipped kernel where that pays, else col2im of
        W.T @ dy (for small layers over all rows at once: fewer, bigger adds)."""
        if self._dx_by_correlation():
            return self._dx_correlation(dy)
        g, (kh, kw) = self.groups, self.kernel_size
        _, out_h, out_w, n = dy.shape
        weight_t = _by_group(np.ascontiguousarray(self.params["weight"]), g).swapaxes(-1, -2)
        if self._pads == ((0, 0), (0, 0)):
            dxp = np.zeros(self._x.shape, self.dtype)  # returned as dx, so not reused
        else:
            dxp = self.scratch.get("dxpad", self._x.shape, self.dtype, zero=True)
        if (self._cols_elements(out_h, out_w, n) * self.dtype.itemsize
                <= self.splitter.whole_dcols_bytes):
            chunks = [(0, out_h)]
        for row0, rows in chunks:
            role = "dcols" if rows == chunks[0][1] else "dcols_tail"
            dcols = self.scratch.get(role, (self._x.shape[0] * kh * kw, rows * out_w * n),
                                      self.dtype)
            np.matmul(weight_t, _by_group(dy[:, row0:row0 + rows], g), out=_by_group(dcols, g))
            kernels.col2im_add(dxp, dcols, self.kernel_size, self.stride, self.dilation,
                               out_w, row0, rows)
        if self._pads == ((0, 0), (0, 0)):
            return dxp
        (t, _), (lft, _) = self._pads
        h, w = self._in_hw
        return dxp[:, t:t + h, lft:lft + w, :].copy()

    def _dx_by_correlation(self) -> bool:
        """Whether dx is better computed as a correlation of padded dy with the flipped
        kernel (one forward-shaped matmul, no col2im): stride 1, no dilation or groups,
        padding below the kernel size, and no more output than input channels (the matmul's
        inner size O*kh*kw is then no larger than the forward's)."""
        (kh, kw), ((t, b), (lft, r)) = self.kernel_size, self._pads
        return (self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                and max(t, b) < kh and max(lft, r) < kw
                and self.out_channels <= self._x.shape[0])

    def _dx_correlation(self, dy: np.ndarray) -> np.ndarray:
        """dx[c, i, j] = sum over o, a, b of W[o, c, kh-1-a, kw-1-b] * dyp[o, i+a, j+b], where
        dyp is dy padded by kernel - 1 - padding on each side."""
        o, out_h, out_w, n = dy.shape
        (kh, kw), ((t, b), (lft, r)) = self.kernel_size, self._pads
        c = self._x.shape[0]
        h, w = self._in_hw
        dyp = self.scratch.get_bordered("dypad", (o, out_h + 2 * kh - 2 - t - b,
                                                   out_w + 2 * kw - 2 - lft - r, n),
                                         self.dtype, (out_h, out_w, t, lft))
        kernels.pad_into(dyp, dy, kh - 1 - t, kw - 1 - lft)
        flipped = self.params["weight"][:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        flipped = np.ascontiguousarray(flipped).reshape(c, o * kh * kw)
        dx = np.empty((c, h, w, n), self.dtype)
        chunks = kernels.row_chunks(h, o * kh * kw * w * n * self.dtype.itemsize,
                                    self.splitter.im2col_max_bytes)
        for row0, rows in chunks:
            role = "dycols" if rows == chunks[0][1] else "dycols_tail"
            cols = self.scratch.get(role, (o * kh * kw, rows * w * n), self.dtype)
            self._dy_im2col.fill(dyp, cols, self.kernel_size, (1, 1), (1, 1), w, row0, rows)
            np.matmul(flipped, cols, out=dx[:, row0:row0 + rows].reshape(c, rows * w * n))
        return dx

    # -- description
    def num_params(self, input_shape=None) -> int:
        shape = input_shape if input_shape is not None else self.input_shape
        if shape is not None:
            c = self._channels(shape)
        elif self.in_channels is not None:
            c = self.in_channels
        else:
            raise ShapeError("conv2d needs its input shape to count parameters",
                             key="in_channels")
        kh, kw = self.kernel_size
        per_out = kh * kw * (c // self.groups) + (1 if self.bias else 0)
        return per_out * self.out_channels

    def macs(self, input_shape) -> int:
        c = self._channels(input_shape)
        out_h, out_w = self._out_hw(input_shape)
        kh, kw = self.kernel_size
        return self.out_channels * out_h * out_w * (c // self.groups) * kh * kw

    def geometry(self, input_shape):
        (t, _), (lft, _) = self._pads_for(*self.require_spatial(input_shape)[1:])
        return self.kernel_size, self.stride, (t, lft), self.dilation

    def padding_sides(self, input_shape) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)) zero padding for this input ('same' with a stride
        pads one more pixel at the end than at the start)."""
        return self._pads_for(*self.require_spatial(input_shape)[1:])

    def describe(self) -> str:
        kh, kw = self.kernel_size
        pad = f"p{self.padding}"  # 'same' with a stride: the padding depends on the input
        if not (self.padding == "same" and self.stride != (1, 1)):
            (t, b), (lft, r) = self._pads
            if (t, lft) == (b, r):
                pad = f"p{_pair_text((t, lft))}"
        text = f"{kh}x{kw} s{_pair_text(self.stride)} {pad}"
        if self.dilation != (1, 1):
            text += f" d{_pair_text(self.dilation)}"
        if self.groups != 1:
            text += f" g{self.groups}"
        return text
