"""2-D convolution as ``torch.nn.Conv2d``: cross-correlation with stride, padding, dilation,
groups. On the (C, H, W, N) layout a conv is im2col (a strided view) plus one matmul."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..errors import ConfigError, ShapeError
from ..registry import register
from .base import Layer, boolean, conv_output_size, int_pair, positive_int
from .init import check_scheme, init_bias, init_weight

#: Split-K for the weight gradient: cut the long (H'*W'*N) axis into pieces whose im2col slice
#: is about this many bytes, so it stays in cache (pays for few input taps, e.g. LeNet's conv1).
SPLIT_K_BYTES = 256 * 2**10
#: Pieces shorter than this are not worth it: with many taps BLAS blocks the product better.
SPLIT_K_MIN = 1024


def _by_group(a: np.ndarray, groups: int) -> np.ndarray:
    """(rows, L) -> (groups, rows/groups, L) view; plain 2-D (the fast matmul path) for 1 group."""
    if groups == 1:
        return np.reshape(a, (a.shape[0], -1), copy=False)
    return np.reshape(a, (groups, a.shape[0] // groups, -1), copy=False)


def _pair_text(pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


@register("conv2d")
class Conv2d(Layer):
    """Weight (O, C/groups, kh, kw), bias (O,). padding: int, [h, w], "same" or "valid"."""

    accepts_activation = True
    aliases = {"filters": "out_channels"}

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
        self._x: np.ndarray | None = None       # padded input (or the input itself)
        self._cols_kept = False                  # cols buffer still holds the last forward's
        self._in_hw: tuple[int, int] | None = None

    def _resolve_padding(self, padding):
        if isinstance(padding, str):
            if padding == "valid":
                return (0, 0), (0, 0)
            if padding != "same":
                raise ConfigError(f"padding must be an int >= 0, [h, w], 'same' or 'valid'; "
                                  f"got {padding!r}", key="padding")
            if self.stride != (1, 1):
                raise ConfigError(f"padding 'same' needs stride 1 (as in PyTorch), got stride "
                                  f"{_pair_text(self.stride)}", key="padding",
                                  hint="give the padding as a number instead")
            pads = []
            for k, d in zip(self.kernel_size, self.dilation, strict=True):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        ph, pw = int_pair("padding", padding, minimum=0)
        return (ph, ph), (pw, pw)

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
        for size, k, s, (lo, hi), d in zip((h, w), self.kernel_size, self.stride, self._pads,
                                          self.dilation, strict=True):
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
        fan_in = c // self.groups * kh * kw
        fan_out = self.out_channels // self.groups * kh * kw
        shape = (self.out_channels, c // self.groups, kh, kw)
        self.params = {"weight": init_weight(rng, shape, fan_in, fan_out, self.init, self.dtype)}
        if self.bias:
            self.params["bias"] = init_bias(rng, self.out_channels, fan_in, self.init,
                                            self.dtype)
        self._buffers.clear()
        self.zero_grad()

    # -- math
    def _padded_size(self, h, w) -> tuple[int, int]:
        (t, b), (lft, r) = self._pads
        return h + t + b, w + lft + r

    def _chunks(self, c, out_h, out_w, n) -> list[tuple[int, int]]:
        kh, kw = self.kernel_size
        return kernels.row_chunks(out_h, c * kh * kw * out_w * n * self.dtype.itemsize)

    def _fill_cols(self, full_rows, row0, rows, out_w):
        """im2col for output rows [row0, row0 + rows) into a reused buffer (one per size)."""
        c, n = self._x.shape[0], self._x.shape[3]
        kh, kw = self.kernel_size
        role = "cols" if rows == full_rows else "cols_tail"
        cols = self._buffers.get(role, (c * kh * kw, rows * out_w * n), self.dtype)
        return kernels.im2col(self._x, cols, self.kernel_size, self.stride, self.dilation,
                              out_w, row0, rows)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        c, h, w, n = x.shape
        self._in_hw = (h, w)
        out_h, out_w = self._out_hw((c, h, w))
        (t, _), (lft, _) = self._pads
        if self._pads == ((0, 0), (0, 0)):
            self._x = x
        else:
            xp = self._buffers.get("xpad", (c, *self._padded_size(h, w), n), self.dtype,
                                   zero=True)
            self._x = kernels.pad_into(xp, x, t, lft)
        g, o = self.groups, self.out_channels
        weight = _by_group(np.ascontiguousarray(self.params["weight"]), g)
        y = np.empty((o, out_h, out_w, n), self.dtype)
        chunks = self._chunks(c, out_h, out_w, n)
        for row0, rows in chunks:
            cols = self._fill_cols(chunks[0][1], row0, rows, out_w)
            np.matmul(weight, _by_group(cols, g), out=_by_group(y[:, row0:row0 + rows], g))
        self._cols_kept = len(chunks) == 1
        if self.bias:
            y += self.params["bias"][:, None, None, None]
        return y

    def backward(self, dy: np.ndarray, need_dx: bool = True):
        dy = np.ascontiguousarray(dy)
        o, out_h, out_w, n = dy.shape
        g, (kh, kw) = self.groups, self.kernel_size
        c = self._x.shape[0]
        if self.bias:
            self.grads["bias"] += dy.sum(axis=(1, 2, 3))
        weight = _by_group(np.ascontiguousarray(self.params["weight"]), g)
        dweight = _by_group(self.grads["weight"], g)
        dxp = None
        if need_dx and self._pads == ((0, 0), (0, 0)):
            dxp = np.zeros(self._x.shape, self.dtype)  # returned as dx, so not reused
        elif need_dx:
            dxp = self._buffers.get("dxpad", self._x.shape, self.dtype, zero=True)
        chunks = self._chunks(c, out_h, out_w, n)
        for row0, rows in chunks:
            if self._cols_kept:
                cols = self._buffers.get("cols", (c * kh * kw, out_h * out_w * n), self.dtype)
            else:
                cols = self._fill_cols(chunks[0][1], row0, rows, out_w)
            cols_g = _by_group(cols, g)
            dy_g = _by_group(dy[:, row0:row0 + rows], g)
            length = dy_g.shape[-1]
            step = SPLIT_K_BYTES // (cols_g.shape[-2] * self.dtype.itemsize)
            step = length if step < SPLIT_K_MIN else step
            for start in range(0, length, step):
                piece = slice(start, start + step)
                dweight += np.matmul(dy_g[..., piece], cols_g[..., piece].swapaxes(-1, -2))
            if need_dx:
                dcols = self._buffers.get("dcols", cols.shape, self.dtype)
                np.matmul(weight.swapaxes(-1, -2), dy_g, out=_by_group(dcols, g))
                kernels.col2im_add(dxp, dcols, self.kernel_size, self.stride, self.dilation,
                                   out_w, row0, rows)
        if not need_dx:
            return None
        if self._pads == ((0, 0), (0, 0)):
            return dxp
        (t, _), (lft, _) = self._pads
        h, w = self._in_hw
        return dxp[:, t:t + h, lft:lft + w, :].copy()

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
        (t, _), (lft, _) = self._pads
        return self.kernel_size, self.stride, (t, lft), self.dilation

    def describe(self) -> str:
        kh, kw = self.kernel_size
        (t, b), (lft, r) = self._pads
        pad = (f"p{_pair_text((t, lft))}" if (t, lft) == (b, r)
               else f"p{self.padding}")
        text = f"{kh}x{kw} s{_pair_text(self.stride)} {pad}"
        if self.dilation != (1, 1):
            text += f" d{_pair_text(self.dilation)}"
        if self.groups != 1:
            text += f" g{self.groups}"
        return text
