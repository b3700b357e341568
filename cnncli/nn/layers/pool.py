"""Pooling layers with PyTorch 2.13 semantics: max, average, power-average (LP), global.

All work on the internal (C, H, W, N) layout. A window pool visits its kh*kw kernel offsets;
each offset is one strided view of a (padded) input, so every step is a whole-array NumPy
operation over all channels, positions and samples at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cnncli.checks import check_bool as boolean
from cnncli.checks import check_number as real_number
from cnncli.errors import ConfigError, ShapeError
from cnncli.nn.layers.base import Layer, conv_output_size, int_pair
from cnncli.nn.registry import register

Pair = tuple[int, int]


def _text(pair: Pair) -> str:
    """``2`` for (2, 2), ``[2, 3]`` otherwise: how the user most likely wrote it."""
    return str(pair[0]) if pair[0] == pair[1] else f"[{pair[0]}, {pair[1]}]"


@dataclass(frozen=True)
class WindowPlan:
    """Where every window of a pool sits for one input size (H, W)."""

    size: Pair        # input H, W
    kernel: Pair
    stride: Pair
    pad: Pair
    dilation: Pair
    out: Pair         # output H', W'
    extent: Pair      # padded buffer H, W: left pad + input + whatever the last window needs

    @cached_property
    def needs_buffer(self) -> bool:
        """True when some window reaches outside the input (padding or a ceil_mode overhang)."""
        return self.pad != (0, 0) or self.extent != self.size

    @cached_property
    def tiled(self) -> bool:
        """Windows cover the input exactly once (kernel == stride, no padding, divisible size)."""
        exact = all(o * k == n for o, k, n in zip(self.out, self.kernel, self.size, strict=True))
        return (exact and not self.needs_buffer and self.dilation == (1, 1)
                and self.kernel == self.stride)

    @cached_property
    def offsets(self) -> list[tuple[slice, slice]]:
        """(rows, cols) slices of the padded buffer for each kernel offset, in row-major order."""
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = self.kernel, self.stride, self.dilation, self.out
        return [(slice(i * dh, i * dh + (oh - 1) * sh + 1, sh),
                 slice(j * dw, j * dw + (ow - 1) * sw + 1, sw))
                for i in range(kh) for j in range(kw)]

    def axis_bounds(self, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per output index: window start, end capped at input+pad, and the unpadded start
        and end clipped to the input (PyTorch's avg-pool bookkeeping)."""
        n, k, s, p = self.size[axis], self.kernel[axis], self.stride[axis], self.pad[axis]
        start = np.arange(self.out[axis]) * s - p
        end = np.minimum(start + k, n + p)
        return start, end, np.maximum(start, 0), np.minimum(end, n)

    def divisor(self, count_include_pad: bool) -> np.ndarray:
        """(H', W', 1) divisors as PyTorch's CPU avg_pool2d: window area up to input+pad, or the
        area inside the input. Separable, so an outer product of per-axis lengths."""
        lengths = []
        for axis in (0, 1):
            start, end, lo, hi = self.axis_bounds(axis)
            lengths.append(end - start if count_include_pad else hi - lo)
        return np.multiply.outer(*lengths).astype(np.float64)[:, :, None]

    def windows_see_input(self) -> bool:
        """False if some (dilated) window has every tap in the padding."""
        for axis in (0, 1):
            n, k, s, p, d = (self.size[axis], self.kernel[axis], self.stride[axis],
                             self.pad[axis], self.dilation[axis])
            taps = np.arange(self.out[axis])[:, None] * s - p + np.arange(k)[None, :] * d
            if not ((taps >= 0) & (taps < n)).any(axis=1).all():
                return False
        return True


def make_plan(size: Pair, kernel: Pair, stride: Pair, pad: Pair, dilation: Pair,
              ceil_mode: bool) -> WindowPlan:
    out, extent = [], []
    for n, k, s, p, d in zip(size, kernel, stride, pad, dilation, strict=True):
        o = conv_output_size(n, k, s, p, p, d, ceil_mode)
        out.append(o)
        extent.append(max(p + n, (o - 1) * s + d * (k - 1) + 1))
    return WindowPlan(tuple(size), kernel, stride, pad, dilation, tuple(out), tuple(extent))


class WindowPool(Layer):
    """Shared hyperparameters, shape arithmetic and padded views of the kh*kw window pools."""

    per_sample = True

    pad_value = 0.0
    aliases = {"pool_size": "kernel_size"}
    # forward and backward return new arrays that the pool never reads again
    fresh_output = True
    fresh_input_grad = True

    def _set_window(self, kernel_size, stride, padding, dilation, ceil_mode) -> None:
        self.kernel_size = int_pair("kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else int_pair("stride", stride)
        self.padding = int_pair("padding", padding, minimum=0)
        self.dilation = int_pair("dilation", dilation)
        self.ceil_mode = boolean("ceil_mode", ceil_mode)
        # PyTorch checks pad <= kernel // 2 (pool2d_shape_check), whatever the dilation.
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ConfigError(
                f"padding {_text(self.padding)} is more than half of kernel_size "
                f"{_text(self.kernel_size)} (pad should be at most half of the kernel size)",
                key="padding",
                hint=f"use padding <= {_text(tuple(k // 2 for k in self.kernel_size))}")
        self._plans: dict[Pair, WindowPlan] = {}
        self._buffers: dict[tuple, np.ndarray] = {}

    def plan(self, h: int, w: int) -> WindowPlan:
        """The window plan for an (H, W) input, checked; raises ShapeError if no window fits."""
        plan = self._plans.get((h, w))
        if plan is not None:
            return plan
        plan = make_plan((h, w), self.kernel_size, self.stride, self.padding, self.dilation,
                         self.ceil_mode)
        if min(plan.out) <= 0:
            raise ShapeError(
                f"the {self.describe()} window does not fit the {h}x{w} input (output would be "
                f"{plan.out[0]}x{plan.out[1]})", key="kernel_size",
                hint="use a smaller kernel_size, more padding, or a larger input")
        if not plan.windows_see_input():
            raise ShapeError(
                f"with dilation {_text(self.dilation)} and padding {_text(self.padding)} some "
                f"{self.describe()} window on the {h}x{w} input covers only padding",
                key="dilation", hint="use a smaller dilation or padding")
        self._plans[(h, w)] = plan
        return plan

    def output_shape(self, input_shape):
        c, h, w = self.require_spatial(input_shape)
        return (c,) + self.plan(h, w).out

    def geometry(self, input_shape):
        return self.kernel_size, self.stride, self.padding, self.dilation

    def macs(self, input_shape) -> int:
        c, oh, ow = self.output_shape(input_shape)
        return c * oh * ow * self.kernel_size[0] * self.kernel_size[1]

    def describe(self) -> str:
        (kh, kw), parts = self.kernel_size, []
        parts.append(f"{kh}x{kw}")
        parts.append(f"s{self.stride[0]}" if self.stride[0] == self.stride[1]
                     else f"s{self.stride[0]}x{self.stride[1]}")
        for letter, pair in (("p", self.padding), ("d", self.dilation)):
            default = 0 if letter == "p" else 1
            if pair != (default, default):
                parts.append(f"{letter}{pair[0]}" if pair[0] == pair[1]
                             else f"{letter}{pair[0]}x{pair[1]}")
        if self.ceil_mode:
            parts.append("ceil")
        return " ".join(parts)

    def padded(self, x: np.ndarray, plan: WindowPlan) -> np.ndarray:
        """x itself, or x copied into a reused buffer whose border holds ``pad_value``."""
        if not plan.needs_buffer:
            return x
        c, _, _, n = x.shape
        key = (c, plan.extent, n, x.dtype)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) >= 4:  # the batch size changes rarely: keep a few
                self._buffers.clear()
            buf = self._buffers[key] = np.full((c,) + plan.extent + (n,), self.pad_value,
                                               dtype=x.dtype)
        (ph, pw), (h, w) = plan.pad, plan.size
        buf[:, ph:ph + h, pw:pw + w] = x
        return buf

    @staticmethod
    def scatter_into(plan: WindowPlan, shape, dtype, parts):
        """Sum per-offset (C, H', W', N) gradients into an input-shaped gradient.

        ``parts(t)`` is the gradient for kernel offset t; overlapping windows accumulate.
        """
        c, h, w, n = shape
        if plan.tiled:
            dx = np.empty(shape, dtype)
            for t, (rows, cols) in enumerate(plan.offsets):
                parts(t, out=dx[:, rows, cols])
            return dx
        dxp = np.zeros((c,) + plan.extent + (n,), dtype)
        for t, (rows, cols) in enumerate(plan.offsets):
            dxp[:, rows, cols] += parts(t)
        if not plan.needs_buffer:
            return dxp
        (ph, pw) = plan.pad
        return np.ascontiguousarray(dxp[:, ph:ph + h, pw:pw + w])


@register("maxpool2d", "max_pool2d", "maxpool")
class MaxPool2d(WindowPool):
    """``nn.MaxPool2d``: -inf padding; the gradient goes to the first maximum of each window."""

    pad_value = -np.inf

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 name: str | None = None):
        super().__init__(name)
        self._set_window(kernel_size, stride, padding, dilation, ceil_mode)
        self._argmax: np.ndarray | None = None
        self._eval_input: np.ndarray | None = None

    def _forward(self, x, train=False):
        plan = self.plan(x.shape[1], x.shape[2])
        xp = self.padded(x, plan)
        self._plan, self._x_shape = plan, x.shape
        out, self._argmax = self._pool(xp, plan, with_argmax=train)
        # An eval forward skips the argmax bookkeeping but keeps its input, so that a backward
        # after it (gradients of an evaluation, as PyTorch allows) can find the maxima then.
        self._eval_input = None if train else xp
        return out

    def _pool(self, xp, plan, with_argmax: bool):
        """(maxima, which window offset holds each maximum or None) of the padded input."""
        views = [xp[:, rows, cols] for rows, cols in plan.offsets]
        if len(views) == 1:
            return views[0].copy(), np.zeros(views[0].shape, np.uint8) if with_argmax else None
        out = np.empty(views[0].shape, xp.dtype)
        # Which offset holds the window's maximum: strict ">" in row-major scan keeps the first
        # of equal maxima, as PyTorch's CPU kernel does. Offsets come in increasing order, so
        # the winner is the largest t whose view beat the running maximum: a branch-free
        # max(argmax, t * beat) (masked writes with random masks are much slower).
        kind = np.uint8 if len(views) < 256 else np.int32
        argmax = np.empty(out.shape, kind) if with_argmax else None

        def part(lo, hi):  # channels [lo, hi)
            v, o = [view[lo:hi] for view in views], out[lo:hi]
            np.maximum(v[0], v[1], out=o)
            if argmax is None:
                for view in v[2:]:
                    np.maximum(o, view, out=o)
                return
            a = argmax[lo:hi]
            np.greater(v[1], v[0], out=a)
            step = np.empty_like(a)
            for t, view in enumerate(v[2:], start=2):
                np.multiply(np.greater(view, o), kind(t), out=step)
                np.maximum(a, step, out=a)
                np.maximum(o, view, out=o)

        self.splitter.split(part, out.shape[0], xp.size)
        return out, argmax

    def _backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        argmax = self._argmax
        if argmax is None:  # the last forward was an evaluation's
            _, argmax = self._pool(self._eval_input, self._plan, with_argmax=True)
        if self._plan.tiled:  # every input in exactly one window: one write per input
            dx = np.empty(self._x_shape, dy.dtype)

            def channels(lo, hi):
                for t, (rows, cols) in enumerate(self._plan.offsets):
                    np.multiply(dy[lo:hi], argmax[lo:hi] == t, out=dx[lo:hi, rows, cols])

            self.splitter.split(channels, dx.shape[0], dx.size)
            return dx

        def part(t, out=None):
            return np.multiply(dy, argmax == t, out=out)

        return self.scatter_into(self._plan, self._x_shape, dy.dtype, part)


@register("avgpool2d", "avg_pool2d", "avgpool")
class AvgPool2d(WindowPool):
    """``nn.AvgPool2d`` with PyTorch's CPU divisor rules for padding and ceil_mode."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, name: str | None = None):
        super().__init__(name)
        self._set_window(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = boolean("count_include_pad", count_include_pad)
        self._divisors: dict[tuple, np.ndarray | float] = {}

    def divisor(self, plan: WindowPlan, dtype):
        """A scalar for tiled windows, else (H', W', 1) divisors, cached per size and dtype."""
        key = (plan.size, np.dtype(dtype))
        if key not in self._divisors:
            self._divisors[key] = (float(plan.kernel[0] * plan.kernel[1]) if plan.tiled
                                   else plan.divisor(self.count_include_pad).astype(dtype))
        return self._divisors[key]

    def _forward(self, x, train=False):
        return self.average(x)

    def _backward(self, dy, need_dx=True):
        return self.average_backward(dy) if need_dx else None

    def average(self, x):
        plan = self.plan(x.shape[1], x.shape[2])
        out = window_sum(self.padded(x, plan), plan)
        out /= self.divisor(plan, x.dtype)
        self._plan, self._x_shape = plan, x.shape
        return out

    def average_backward(self, dy):
        share = dy / self.divisor(self._plan, dy.dtype)

        def part(t, out=None):
            if out is None:
                return share
            out[...] = share
            return out

        return self.scatter_into(self._plan, self._x_shape, dy.dtype, part)

    def describe(self) -> str:
        text = super().describe()
        return text + " excl-pad" if not self.count_include_pad and self.padding != (0, 0) else text


def window_sum(xp: np.ndarray, plan: WindowPlan) -> np.ndarray:
    """Sum of each window, adding the kernel offsets in row-major order (as PyTorch does)."""
    views = [xp[:, rows, cols] for rows, cols in plan.offsets]
    out = views[0].copy() if len(views) == 1 else np.add(views[0], views[1])
    for view in views[2:]:
        out += view
    return out


@register("lppool2d", "lp_pool2d")
class LPPool2d(AvgPool2d):
    """``nn.LPPool2d``: (sum over the window of x^p)^(1/p), computed exactly as PyTorch does:
    avg_pool2d(x^p) * (kh*kw), then ^(1/p), so ceil_mode edge windows are scaled up too."""

    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False,
                 name: str | None = None):
        # Average pooling without padding, whose window sums PyTorch's formula rescales.
        super().__init__(kernel_size, stride, padding=0, ceil_mode=ceil_mode,
                         count_include_pad=True, name=name)
        self.norm_type = real_number("norm_type", norm_type, low=0.0, low_open=True)

    def _forward(self, x, train=False):
        p = self.norm_type
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            powered = np.power(x, x.dtype.type(p))
            mean = self.average(powered)
            scaled = mean * x.dtype.type(self.kernel_size[0] * self.kernel_size[1])
            out = np.power(scaled, x.dtype.type(1.0 / p))
        self._x, self._mean, self._scaled = x, mean, scaled
        return out

    def _backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        p, area = self.norm_type, self.kernel_size[0] * self.kernel_size[1]
        t = dy.dtype.type
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            dscaled = dy * (t(1.0 / p) * np.power(self._scaled, t(1.0 / p - 1.0)))
            # sign(m) * relu(|m|) passes no gradient where the window mean is exactly 0
            dmean = np.where(self._mean == 0, t(0), dscaled * t(area))
            dpowered = self.average_backward(dmean)
            return dpowered * (t(p) * np.power(self._x, t(p - 1.0)))

    def describe(self) -> str:
        return f"L{self.norm_type:g} " + super().describe()


class GlobalPool(Layer):
    """(C, H, W) -> (C, 1, 1), kept spatial like ``nn.AdaptiveXPool2d(1)``."""

    per_sample = True

    fresh_output = True
    fresh_input_grad = True

    def output_shape(self, input_shape):
        c, _, _ = self.require_spatial(input_shape)
        return (c, 1, 1)

    def geometry(self, input_shape):
        _, h, w = self.require_spatial(input_shape)
        return (h, w), (1, 1), (0, 0), (1, 1)

    def macs(self, input_shape) -> int:
        c, h, w = self.require_spatial(input_shape)
        return c * h * w

    def describe(self) -> str:
        return "global"


@register("global_avg_pool2d", "global_average_pooling2d")
class GlobalAvgPool2d(GlobalPool):
    """Mean over each channel's whole map (``nn.AdaptiveAvgPool2d(1)``)."""

    def _forward(self, x, train=False):
        c, h, w, n = self._x_shape = x.shape
        return (x.reshape(c, h * w, n).sum(axis=1) / x.dtype.type(h * w)).reshape(c, 1, 1, n)

    def _backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        c, h, w, n = self._x_shape
        share = dy / dy.dtype.type(h * w)
        return np.ascontiguousarray(np.broadcast_to(share, self._x_shape))


@register("global_max_pool2d", "global_max_pooling2d")
class GlobalMaxPool2d(GlobalPool):
    """Max over each channel's whole map (``nn.AdaptiveMaxPool2d(1)``); first maximum wins."""

    _argmax: np.ndarray | None = None      # set by a forward pass with train=True
    _eval_input: np.ndarray | None = None  # kept by an eval forward instead (see MaxPool2d)

    def _forward(self, x, train=False):
        c, h, w, n = self._x_shape = x.shape
        flat = x.reshape(c, h * w, n)
        if not train:
            self._argmax, self._eval_input = None, flat
            return flat.max(axis=1).reshape(c, 1, 1, n)
        self._argmax, self._eval_input = flat.argmax(axis=1)[:, None, :], None
        return np.take_along_axis(flat, self._argmax, axis=1).reshape(c, 1, 1, n)

    def _backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        argmax = self._argmax
        if argmax is None:  # the last forward was an evaluation's
            argmax = self._eval_input.argmax(axis=1)[:, None, :]  # the first maximum
        c, h, w, n = self._x_shape
        dx = np.zeros((c, h * w, n), dy.dtype)
        np.put_along_axis(dx, argmax, dy.reshape(c, 1, n), axis=1)
        return dx.reshape(self._x_shape)
