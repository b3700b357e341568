"""Dropout: reproducible masks, gradient = mask * scale, eval identity, mean preserved."""

import numpy as np
import pytest
from gradcheck import build_layer, check_layer_gradients

from cnncli.errors import ConfigError
from cnncli.nn.layers.dropout import Dropout
from cnncli.nn.model import make_layers, model_from_entries


def _built(p, shape=(4, 5, 5), seed=0, dtype=np.float64):
    return build_layer(Dropout(p), shape, seed=seed, dtype=dtype)


def test_same_seed_same_mask_and_different_seed_different_mask():
    x = np.ones((4, 5, 5, 8))
    a = _built(0.5, seed=3).forward(x, train=True)
    b = _built(0.5, seed=3).forward(x, train=True)
    c = _built(0.5, seed=4).forward(x, train=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_masks_change_between_steps():
    layer = _built(0.5)
    x = np.ones((4, 5, 5, 8))
    assert not np.array_equal(layer.forward(x, train=True), layer.forward(x, train=True))


def test_output_and_gradient_are_mask_times_scale():
    p = 0.3
    layer = _built(p)
    x = np.random.default_rng(0).standard_normal((4, 5, 5, 16)) + 3
    y = layer.forward(x, train=True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, np.where(kept, dy / (1 - p), 0.0), rtol=1e-15)


class ReplayDropout(Dropout):
    """Dropout that redraws the same mask on every call, so finite differences see one mask."""

    def forward(self, x, train=False):
        self._rng.bit_generator.state = self.saved_state
        return super().forward(x, train)


def test_gradient_check_with_the_mask_held_fixed():
    layer = build_layer(ReplayDropout(0.4), (6,))
    layer.saved_state = layer._rng.bit_generator.state
    x = np.random.default_rng(2).standard_normal((5, 6))
    dx, _ = check_layer_gradients(layer, x)
    assert np.any(dx == 0) and np.any(dx != 0)


def test_eval_is_identity_and_p_zero_is_identity():
    x = np.random.default_rng(0).standard_normal((4, 5, 5, 3))
    layer = _built(0.5)
    assert layer.forward(x, train=False) is x
    assert layer.backward(x) is x
    assert _built(0.0).forward(x, train=True) is x


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_and_mean_are_preserved(p):
    layer = _built(p, shape=(200_000,), dtype=np.float32)
    x = np.ones((200_000, 1), np.float32)
    y = layer.forward(x, train=True)
    assert y.dtype == np.float32
    n = x.size
    sigma = np.sqrt(p * (1 - p) / n)  # std of the kept fraction
    assert abs(np.mean(y != 0) - (1 - p)) < 5 * sigma
    assert abs(y.mean() - 1.0) < 5 * sigma / (1 - p)


def test_model_seed_reproduces_dropout_in_training():
    entries = [{"type": "flatten"}, {"type": "dropout", "p": 0.5}, {"type": "dense", "units": 3}]
    x = np.ones((2, 1, 4, 4), np.float32)
    a = model_from_entries((1, 4, 4), entries, seed=5).forward(x, train=True)
    b = model_from_entries((1, 4, 4), entries, seed=5).forward(x, train=True)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, "half", True, float("nan")])
def test_p_out_of_range_is_a_config_error(p):
    with pytest.raises(ConfigError, match=r"p must be a finite number in \[0.0, 1.0\)") as err:
        make_layers({"type": "dropout", "p": p})
    assert err.value.key == "p"


def test_describe_and_counts():
    layer = Dropout(0.25)
    assert layer.describe() == "p=0.25"
    assert layer.num_params((3, 4, 4)) == 0 and layer.output_shape((3, 4, 4)) == (3, 4, 4)
