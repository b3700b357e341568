"""Batch normalisation, as ``torch.nn.BatchNorm1d`` (F,) and ``BatchNorm2d`` (C, H, W)."""

from __future__ import annotations

import math

import numpy as np

from cnncli.checks import check_bool as boolean
from cnncli.checks import check_number as real_number
from cnncli.errors import DataError, ShapeError
from cnncli.nn.layers.base import Layer
from cnncli.nn.registry import register


class LocalBatch:
    """Where a batch-norm layer's training batch is: all here (the default). A batch split
    over processes (``parallel.mpi``) installs an object whose ``total`` adds up the per-channel
    sums of every part, in a fixed order, so that each part normalises with the statistics of
    the whole batch."""

    def total(self, sums: np.ndarray) -> np.ndarray:
        """The sums over the whole batch of ``sums``, this part's sums; here they are all."""
        return sums


LOCAL_BATCH = LocalBatch()


class _BatchNorm(Layer):
    """Normalise each channel over every other axis (batch and space).

    With the batch-last layout, (C, H, W, N) and (F, N) both reshape for free to
    (C, M), so both variants share one implementation on a 2-D array.
    """

    spatial_rank = 0  # number of per-sample axes after the channel axis
    fresh_output = True       # y and dx are new arrays, never kept (see Layer)
    fresh_input_grad = True
    #: The batch statistics' reduction hook (``LocalBatch``); set per layer to synchronise.
    batch_sums = LOCAL_BATCH

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 name: str | None = None):
        super().__init__(name)
        self.eps = real_number("eps", eps, low=0.0, low_open=True)
        self.momentum = None if momentum is None else real_number("momentum", momentum,
                                                                  low=0.0, high=1.0)
        self.affine = boolean("affine", affine)
        self.track_running_stats = boolean("track_running_stats", track_running_stats)
        self._cache = None

    def output_shape(self, input_shape):
        if len(input_shape) != 1 + self.spatial_rank:
            want = "(C, H, W)" if self.spatial_rank else "(features,)"
            other = "batchnorm1d" if self.spatial_rank else "batchnorm2d"
            raise ShapeError(f"{self.type_name} needs a {want} input, got shape "
                             f"{list(input_shape)}", hint=f"use {other} here")
        return tuple(input_shape)

    def build(self, input_shape, rng, dtype=np.float32):
        super().build(input_shape, rng, dtype)
        channels = int(input_shape[0])
        self.params = {}
        if self.affine:
            self.params = {"weight": np.ones(channels, self.dtype),
                           "bias": np.zeros(channels, self.dtype)}
        self.buffers = {}
        if self.track_running_stats:
            self.buffers = {"running_mean": np.zeros(channels, self.dtype),
                            "running_var": np.ones(channels, self.dtype),
                            "num_batches_tracked": np.zeros((), np.int64)}
        self.zero_grad()

    def _forward(self, x, train=False):
        shape = x.shape
        x2 = x.reshape(shape[0], math.prod(shape[1:]))
        count = length = x2.shape[1]  # count: the values per channel of the whole batch
        t = x.dtype.type
        use_batch_stats = train or not self.track_running_stats
        split = train and self.batch_sums is not LOCAL_BATCH
        if split:  # statistics of the whole batch, of which x is a part
            count = int(self.batch_sums.total(np.array([count], np.float64))[0])
        if use_batch_stats and train and count <= 1:
            raise DataError(f"Expected more than 1 value per channel when training, got "
                            f"input size {[shape[-1], *shape[:-1]]}",
                            layer=f"'{self.name}' ({self.type_name})",
                            hint="train with batch_size >= 2 and no final batch of 1 sample")
        if use_batch_stats:
            mean, var = np.empty(shape[0], x.dtype), np.empty(shape[0], x.dtype)
        else:
            mean = self.buffers["running_mean"].astype(x.dtype, copy=False)
            var = self.buffers["running_var"].astype(x.dtype, copy=False)
        inv_std = np.empty(shape[0], x.dtype)
        # x_hat is kept for backward; it may take x's place when the plan hands x over.
        x_hat = x2 if self.may_overwrite_input else np.empty_like(x2)
        y = np.empty_like(x2)
        weight = self.params["weight"] if self.affine else None
        bias = self.params["bias"] if self.affine else None

        # Pairwise summation (mean/sum along the contiguous axis) keeps float32 close to
        # PyTorch's double accumulation; einsum's running sum drifts. On a split batch the
        # means are the exchanged sums / count, the same numbers computed on one part.
        def centre(a, b):
            centred = np.subtract(x2[a:b], mean[a:b, None], out=x_hat[a:b])
            if use_batch_stats:
                squares = np.multiply(centred, centred, out=y[a:b])
                var[a:b] = squares.sum(axis=1) if split else squares.mean(axis=1)

        def normalise(a, b):
            out, centred = y[a:b], x_hat[a:b]
            np.divide(1, np.sqrt(var[a:b] + t(self.eps)), out=inv_std[a:b])
            centred *= inv_std[a:b, None]
            if weight is None:
                out[...] = centred
            else:
                np.multiply(centred, weight[a:b, None], out=out)
                out += bias[a:b, None]

        def part(lo, hi):
            # A few channels at a time, so each pass over them reads what the last one left
            # in cache; every channel's numbers are those of whole-array NumPy.
            for a, b in _row_groups(lo, hi, length):
                if use_batch_stats:
                    mean[a:b] = x2[a:b].mean(axis=1)
                centre(a, b)
                normalise(a, b)

        if split:  # sums, exchanged between the parts, between the passes
            self.splitter.split(_in_groups(lambda a, b: np.sum(x2[a:b], axis=1, out=mean[a:b]),
                                           length), shape[0], x2.size)
            mean[:] = self.batch_sums.total(mean) / count
            self.splitter.split(_in_groups(centre, length), shape[0], x2.size)
            var[:] = self.batch_sums.total(var) / count
            self.splitter.split(_in_groups(normalise, length), shape[0], x2.size)
        else:
            self.splitter.split(part, shape[0], x2.size)
        if use_batch_stats and train and self.track_running_stats:
            self._update_running(mean, var, count)
        self._cache = (x_hat, inv_std, use_batch_stats, shape, count if split else None)
        return y.reshape(shape)

    def _update_running(self, mean, var, count):
        tracked = self.buffers["num_batches_tracked"]
        tracked += 1
        # momentum None is PyTorch's cumulative moving average.
        m = 1.0 / float(tracked) if self.momentum is None else self.momentum
        unbiased = var * (count / (count - 1))
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        rm *= 1 - m
        rm += m * mean
        rv *= 1 - m
        rv += m * unbiased

    def _backward(self, dy, need_dx=True):
        x_hat, inv_std, batch_stats, shape, split_count = self._cache
        dy2 = dy.reshape(shape[0], math.prod(shape[1:]))
        # On a split batch the means are over the whole batch (the weight gradients stay
        # this part's sums: they are summed with the other parts' later).
        count = dy2.shape[1] if split_count is None else split_count
        length = dy2.shape[1]
        sum_dy = np.empty(shape[0], dy.dtype)
        sum_dy_xhat = np.empty(shape[0], dy.dtype)
        gamma = self.params["weight"] if self.affine else np.ones_like(inv_std)
        scale = gamma * inv_std
        dx = None
        if need_dx:
            dx = dy2 if self.may_overwrite_grad else np.empty_like(dy2)

        def sums(a, b, scratch):
            grad = dy2[a:b]
            sum_dy[a:b] = grad.sum(axis=1)
            sum_dy_xhat[a:b] = np.multiply(grad, x_hat[a:b], out=scratch).sum(axis=1)

        def input_grad(a, b, scratch, mean_dy, mean_dy_xhat):
            grad, out = dy2[a:b], dx[a:b]
            if not batch_stats:  # eval with running stats: a fixed affine map per channel
                np.multiply(grad, scale[a:b, None], out=out)
                return
            # d/dx of (x - mean) / std with batch mean and biased batch variance:
            # (dy - mean(dy) - x_hat * mean(dy * x_hat)) * gamma / std
            np.subtract(grad, mean_dy[:, None], out=out)
            out -= np.multiply(x_hat[a:b], mean_dy_xhat[:, None], out=scratch)
            out *= scale[a:b, None]

        def part(lo, hi):
            for a, b, scratch in _row_groups_with_scratch(lo, hi, length, dy.dtype):
                sums(a, b, scratch)
                if dx is not None:
                    input_grad(a, b, scratch, sum_dy[a:b] / count, sum_dy_xhat[a:b] / count)

        if split_count is None:
            self.splitter.split(part, shape[0], dy2.size)
        else:
            self.splitter.split(_in_groups(sums, length, dy.dtype), shape[0], dy2.size)
            if dx is not None:
                mean_dy = self.batch_sums.total(sum_dy) / count
                mean_dy_xhat = self.batch_sums.total(sum_dy_xhat) / count
                self.splitter.split(_in_groups(
                    lambda a, b, scratch: input_grad(a, b, scratch, mean_dy[a:b],
                                                     mean_dy_xhat[a:b]), length, dy.dtype),
                    shape[0], dy2.size)
        if self.affine:
            self.grads["weight"] += sum_dy_xhat
            self.grads["bias"] += sum_dy
        return None if dx is None else dx.reshape(shape)

    def num_params(self, input_shape=None):
        shape = input_shape if input_shape is not None else self.input_shape
        return 2 * int(shape[0]) if self.affine and shape is not None else 0

    def macs(self, input_shape):
        return 2 * int(np.prod(input_shape, dtype=np.int64))

    def describe(self):
        return f"eps={self.eps:g}"


def _row_groups(lo: int, hi: int, length: int, elements: int = 1 << 15):
    """[lo, hi) in runs of rows of ``length`` values each, about ``elements`` values a run."""
    step = max(1, elements // max(1, length))
    return [(a, min(a + step, hi)) for a in range(lo, hi, step)]


def _row_groups_with_scratch(lo: int, hi: int, length: int, dtype):
    """``_row_groups`` with a scratch array of each run's shape, reused between runs."""
    scratch = None
    for a, b in _row_groups(lo, hi, length):
        if scratch is None or scratch.shape[0] != b - a:
            scratch = np.empty((b - a, length), dtype)
        yield a, b, scratch


def _in_groups(step, length: int, dtype=None):
    """A splitter part that runs ``step(a, b)`` (or ``step(a, b, scratch)`` given a dtype)
    over [lo, hi) a few rows at a time."""
    if dtype is None:
        return lambda lo, hi: [step(a, b) for a, b in _row_groups(lo, hi, length)]
    return lambda lo, hi: [step(a, b, scratch)
                           for a, b, scratch in _row_groups_with_scratch(lo, hi, length, dtype)]


@register("batchnorm2d")
class BatchNorm2d(_BatchNorm):
    """Per-channel normalisation of (C, H, W) activations."""

    spatial_rank = 2


@register("batchnorm1d")
class BatchNorm1d(_BatchNorm):
    """Per-feature normalisation of flat (F,) activations."""

    spatial_rank = 0
