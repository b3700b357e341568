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
        count = x2.shape[1]
        t = x.dtype.type
        use_batch_stats = train or not self.track_running_stats
        split = train and self.batch_sums is not LOCAL_BATCH
        if split:  # statistics of the whole batch, of which x is a part
            count = int(self.batch_sums.total(np.array([count], np.float64))[0])
        if use_batch_stats:
            if train and count <= 1:
                raise DataError(f"Expected more than 1 value per channel when training, got "
                                f"input size {[shape[-1], *shape[:-1]]}",
                                layer=f"'{self.name}' ({self.type_name})",
                                hint="train with batch_size >= 2 and no final batch of 1 sample")
        channels = shape[0]
        mean = np.empty(channels, x.dtype)
        var = np.empty(channels, x.dtype)
        inv_std = np.empty(channels, x.dtype)
        if not use_batch_stats:
            mean[:] = self.buffers["running_mean"]
            var[:] = self.buffers["running_var"]
        # Each channel is normalised by itself, so the work splits by channel (the same
        # operations per element on any split). In place where the array is this layer's own.
        # Pairwise summation (sum along the contiguous axis) keeps float32 close to PyTorch's
        # double accumulation; einsum's running sum drifts by ~1e-5. A mean is its sum / count
        # (np.mean's own arithmetic), so a split batch's summed parts give the same numbers.
        x_hat = np.empty_like(x2)
        y = np.empty_like(x2) if self.affine else x_hat

        def sum_x(lo, hi):
            mean[lo:hi] = x2[lo:hi].sum(axis=1)

        def centre(lo, hi):  # x_hat = x - mean; var holds the sums of its squares
            centred = np.subtract(x2[lo:hi], mean[lo:hi, None], out=x_hat[lo:hi])
            if use_batch_stats:
                var[lo:hi] = np.multiply(centred, centred).sum(axis=1)

        def normalise(lo, hi):
            inv_std[lo:hi] = 1 / np.sqrt(var[lo:hi] + t(self.eps))
            np.multiply(x_hat[lo:hi], inv_std[lo:hi, None], out=x_hat[lo:hi])
            if self.affine:
                np.multiply(x_hat[lo:hi], self.params["weight"][lo:hi, None], out=y[lo:hi])
                y[lo:hi] += self.params["bias"][lo:hi, None]

        def part(lo, hi):
            if use_batch_stats:
                sum_x(lo, hi)
                mean[lo:hi] /= count
            centre(lo, hi)
            if use_batch_stats:
                var[lo:hi] /= count
            normalise(lo, hi)

        if split:  # statistics of the whole batch, of which x is a part: sums exchanged
            self.splitter.split(sum_x, channels, x2.size)
            mean[:] = self.batch_sums.total(mean) / count
            self.splitter.split(centre, channels, x2.size)
            var[:] = self.batch_sums.total(var) / count
            self.splitter.split(normalise, channels, x2.size)
        else:
            self.splitter.split(part, channels, x2.size)
        if train and self.track_running_stats:
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
        sum_dy = np.empty_like(inv_std)
        sum_dy_xhat = np.empty_like(inv_std)
        gamma = self.params["weight"] if self.affine else np.ones_like(inv_std)
        dx = np.empty_like(dy2) if need_dx else None

        def sums(lo, hi):
            product = np.multiply(dy2[lo:hi], x_hat[lo:hi])
            sum_dy[lo:hi] = dy2[lo:hi].sum(axis=1)
            sum_dy_xhat[lo:hi] = product.sum(axis=1)
            return product

        def input_grad(lo, hi, mean_dy, mean_dy_xhat, product=None):
            d = dy2[lo:hi]
            scale = (gamma[lo:hi] * inv_std[lo:hi])[:, None]
            if not batch_stats:  # eval with running stats: a fixed affine map per channel
                np.multiply(d, scale, out=dx[lo:hi])
                return
            # d/dx of (x - mean) / std with batch mean and biased batch variance:
            # (dy - mean_dy - x_hat * mean_dy_xhat) * scale, in that order.
            correction = np.multiply(x_hat[lo:hi], mean_dy_xhat[:, None], out=product)
            out = np.subtract(d, mean_dy[:, None], out=dx[lo:hi])
            out -= correction
            out *= scale

        def part(lo, hi):
            product = sums(lo, hi)
            if dx is not None:
                input_grad(lo, hi, sum_dy[lo:hi] / count, sum_dy_xhat[lo:hi] / count, product)

        if split_count is None:
            self.splitter.split(part, shape[0], dy2.size)
        else:
            self.splitter.split(sums, shape[0], dy2.size)
            if dx is not None:
                mean_dy = self.batch_sums.total(sum_dy) / count
                mean_dy_xhat = self.batch_sums.total(sum_dy_xhat) / count
                self.splitter.split(lambda lo, hi: input_grad(lo, hi, mean_dy[lo:hi],
                                                              mean_dy_xhat[lo:hi]),
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


@register("batchnorm2d")
class BatchNorm2d(_BatchNorm):
    """Per-channel normalisation of (C, H, W) activations."""

    spatial_rank = 2


@register("batchnorm1d")
class BatchNorm1d(_BatchNorm):
    """Per-feature normalisation of flat (F,) activations."""

    spatial_rank = 0
