"""Flatten: (C, H, W) -> (C*H*W,), in the same C, H, W order as ``torch.flatten(x, 1)``."""

from __future__ import annotations

import math

import numpy as np

from cnncli.nn.layers.base import Layer
from cnncli.nn.registry import register


@register("flatten")
class Flatten(Layer):
    """Collapse all per-sample axes into one; free with the batch-last layout."""

    per_sample = True

    def __init__(self, name: str | None = None):
        super().__init__(name)
        self._in_shape: tuple[int, ...] | None = None

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape, dtype=np.int64)),)

    def _forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        # (C, H, W, N) -> (C*H*W, N): the batch stays last, so C,H,W order is kept
        # and a C-contiguous input needs no copy.
        self._in_shape = x.shape
        return x.reshape(math.prod(x.shape[:-1]), x.shape[-1])

    def _backward(self, dy: np.ndarray, need_dx: bool = True):
        return dy.reshape(self._in_shape) if need_dx else None
