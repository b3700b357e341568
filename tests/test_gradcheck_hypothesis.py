"""Finite-difference gradient checks on hypothesis-drawn hyperparameters and shapes for the
layers whose own test files check fixed cases only: dropout (training mode) and flatten."""

from __future__ import annotations

import numpy as np
from gradcheck import build_layer, check_layer_gradients
from hypothesis import given
from hypothesis import strategies as st

from cnncli.nn.layers.dropout import Dropout
from cnncli.nn.layers.reshape import Flatten

shapes = st.one_of(st.tuples(st.integers(1, 5)),
                   st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)))


class ReplayDropout(Dropout):
    """Draws the same mask on every call, so central differences see one fixed mask."""

    def forward(self, x, train=False):
        self._rng.bit_generator.state = self.saved_state
        return super().forward(x, train)


@given(p=st.floats(0.0, 0.9), shape=shapes, n=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_dropout_gradients_in_training(p, shape, n, seed):
    layer = build_layer(ReplayDropout(p), shape, seed=seed)
    layer.saved_state = layer._rng.bit_generator.state
    x = np.random.default_rng(seed).standard_normal((n, *shape))
    dx, _ = check_layer_gradients(layer, x, train=True, seed=seed)
    if p >= 0.5 and x.size >= 20:
        assert np.any(dx == 0)  # the check really ran with units dropped


@given(shape=shapes, n=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_flatten_gradients(shape, n, seed):
    layer = build_layer(Flatten(), shape, seed=seed)
    x = np.random.default_rng(seed).standard_normal((n, *shape))
    dx, _ = check_layer_gradients(layer, x, seed=seed)
    assert layer.output_shape(shape) == (int(np.prod(shape)),)
    assert dx.shape == x.shape
