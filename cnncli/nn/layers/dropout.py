"""Inverted dropout, as ``torch.nn.Dropout``: zero with probability p, scale by 1/(1-p)."""

from __future__ import annotations

import numpy as np

from cnncli.checks import check_number as real_number
from cnncli.errors import DataError
from cnncli.nn.layers.base import Layer
from cnncli.nn.registry import register


@register("dropout")
class Dropout(Layer):
    """Training: keep each value with probability 1-p and scale it by 1/(1-p). Eval: identity."""

    def __init__(self, p=0.5, name: str | None = None):
        super().__init__(name)
        self.p = real_number("p", p, low=0.0, high=1.0, high_open=True)
        self._rng = np.random.default_rng(0)
        self._mask: np.ndarray | None = None
        self._given_mask: np.ndarray | None = None  # for the next training forward

    def build(self, input_shape, rng, dtype=np.float32):
        super().build(input_shape, rng, dtype)
        # An own stream seeded from the model's: masks are reproducible with the model seed
        # and do not depend on how many numbers other layers draw later.
        self._rng = np.random.default_rng(rng.integers(2**63))

    def draw_mask(self, shape, dtype) -> np.ndarray | None:
        """The mask a training forward of an input of ``shape`` (internal layout) uses, drawn
        from this layer's stream; None if p = 0. It holds the 1/(1-p) scale, so backward is
        one multiply."""
        if self.p == 0.0:
            return None
        dtype = np.dtype(dtype)
        keep = self._rng.random(shape, dtype=_random_dtype(dtype)) >= self.p
        return keep.astype(dtype) * dtype.type(1.0 / (1.0 - self.p))

    def use_mask(self, mask: np.ndarray | None) -> None:
        """Use ``mask`` (part of a mask drawn for a whole batch) in the next training forward
        instead of drawing one: how a batch split over two processes keeps the whole batch's
        masks (``processes``)."""
        self._given_mask = mask

    def _forward(self, x, train=False):
        given, self._given_mask = self._given_mask, None
        if not train or self.p == 0.0:
            self._mask = None
            return x
        self._mask = given if given is not None else self.draw_mask(x.shape, x.dtype)
        if self._mask.shape != x.shape:
            raise DataError(f"dropout: the given mask has shape {list(self._mask.shape)}, "
                            f"the input {list(x.shape)}")
        return x * self._mask

    def _backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        return dy if self._mask is None else dy * self._mask

    def describe(self):
        return f"p={self.p:g}"


def _random_dtype(dtype) -> type:
    return np.float32 if dtype == np.float32 else np.float64
