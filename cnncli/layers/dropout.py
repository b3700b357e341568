"""Inverted dropout, as ``torch.nn.Dropout``: zero with probability p, scale by 1/(1-p)."""

from __future__ import annotations

import numpy as np

from ..registry import register
from .base import Layer, real_number


@register("dropout")
class Dropout(Layer):
    """Training: keep each value with probability 1-p and scale it by 1/(1-p). Eval: identity."""

    def __init__(self, p=0.5, name: str | None = None):
        super().__init__(name)
        self.p = real_number("p", p, low=0.0, high=1.0, high_open=True)
        self._rng = np.random.default_rng(0)
        self._mask: np.ndarray | None = None

    def build(self, input_shape, rng, dtype=np.float32):
        super().build(input_shape, rng, dtype)
        # An own stream seeded from the model's: masks are reproducible with the model seed
        # and do not depend on how many numbers other layers draw later.
        self._rng = np.random.default_rng(rng.integers(2**63))

    def forward(self, x, train=False):
        if not train or self.p == 0.0:
            self._mask = None
            return x
        # The mask already holds the 1/(1-p) scale, so backward is one multiply.
        keep = self._rng.random(x.shape, dtype=_random_dtype(x.dtype)) >= self.p
        self._mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._mask

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        return dy if self._mask is None else dy * self._mask

    def describe(self):
        return f"p={self.p:g}"


def _random_dtype(dtype) -> type:
    return np.float32 if dtype == np.float32 else np.float64
