"""Activations: gradients, PyTorch reference, erf accuracy, overflow safety, config errors."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.special
from gradcheck import build_layer, check_layer_gradients
from hypothesis import given
from hypothesis import strategies as st

from cnncli.errors import ConfigError
from cnncli.nn.layers.activation import ELU, GELU, LeakyReLU, ReLU, Sigmoid, Tanh, erf, sigmoid
from cnncli.nn.layers.base import from_internal, to_internal
from cnncli.nn.model import make_layers

REF = np.load(Path(__file__).parent / "fixtures" / "dense_reference.npz", allow_pickle=False)

LAYERS = {
    "relu": ReLU, "leaky_relu": lambda: LeakyReLU(0.2), "elu": lambda: ELU(0.7),
    "gelu": GELU, "gelu_tanh": lambda: GELU(approximate="tanh"), "tanh": Tanh,
    "sigmoid": Sigmoid,
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_matches_pytorch(name):
    x, dy = REF["act.x"], REF["act.dy"]  # (N, C, L): element-wise, so any layout works
    layer = build_layer(LAYERS[name](), x.shape[1:])
    y = from_internal(layer.forward(to_internal(x), train=True))
    dx = from_internal(layer.backward(to_internal(dy)))
    np.testing.assert_allclose(y, REF[f"act.{name}.y"], rtol=1e-13, atol=1e-15)
    # atol: torch's vectorised tanh differs by an ulp where 1 + tanh cancels (gelu_tanh).
    np.testing.assert_allclose(dx, REF[f"act.{name}.dx"], rtol=1e-12, atol=1e-14)


def _away_from_kink(x):
    # Finite differences straddling 0 are meaningless for relu-like kinks.
    return np.where(np.abs(x) < 1e-3, 0.5, x)


@pytest.mark.parametrize("name", sorted(LAYERS))
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), n=st.integers(1, 3),
       seed=st.integers(0, 10_000))
def test_gradients(name, shape, n, seed):
    x = _away_from_kink(np.random.default_rng(seed).standard_normal((n, *shape)) * 3)
    layer = build_layer(LAYERS[name](), shape)
    check_layer_gradients(layer, x, seed=seed, rtol=1e-6, atol=1e-7)  # atol: FD rounding


def test_erf_matches_scipy_to_1e_12():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        np.linspace(-8, 8, 20_001), rng.standard_normal(5000) * 3, [0.0, -0.0, 1e-300, -1e-20],
        np.nextafter(0.46875, [-1, 1]), np.nextafter(4.0, [-1, 1]), [-0.46875, 0.46875, 4.0],
        [26.0, 26.6, 27.0, 30.0, 1e3, 1e300, -1e300]])
    np.testing.assert_allclose(erf(x), scipy.special.erf(x), rtol=1e-12, atol=1e-15)


def test_erf_special_values_and_float32():
    np.testing.assert_array_equal(erf(np.array([np.inf, -np.inf])), [1.0, -1.0])
    assert np.isnan(erf(np.array([np.nan, 1.0]))[0])
    # float32 takes a branch-free rational: a few float32 ulp, relative as well as absolute.
    x32 = np.concatenate([np.linspace(-6, 6, 100_001), [1e-30, -1e-20, 50.0]]).astype(np.float32)
    y32 = erf(x32)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, scipy.special.erf(x32.astype(np.float64)), rtol=5e-7,
                               atol=1e-37)
    special = erf(np.array([np.nan, np.inf, -np.inf], np.float32))
    assert np.isnan(special[0]) and list(special[1:]) == [1.0, -1.0]
    assert float(erf(np.float64(0.5))) == pytest.approx(scipy.special.erf(0.5), rel=1e-15)


def test_gelu_exact_is_x_times_normal_cdf():
    x = np.linspace(-10, 10, 2001)
    y = from_internal(build_layer(GELU(), (2001,)).forward(to_internal(x[None])))[0]
    np.testing.assert_allclose(y, x * scipy.special.ndtr(x), rtol=1e-12, atol=1e-15)


def test_extreme_inputs_produce_no_warnings_and_saturate():
    x = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            for make in LAYERS.values():
                layer = build_layer(make(), (5,))
                y = layer.forward(to_internal(x), train=True)
                dx = layer.backward(np.ones_like(y))
                assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
            s = sigmoid(np.array([-1000.0, 1000.0], np.float32))
    np.testing.assert_array_equal(s, [0.0, 1.0])
    np.testing.assert_allclose(sigmoid(np.linspace(-30, 30, 61)),
                               scipy.special.expit(np.linspace(-30, 30, 61)), rtol=1e-14)


def test_relu_gradient_at_zero_is_zero_and_dtype_is_kept():
    layer = build_layer(ReLU(), (3,), dtype=np.float32)
    x = np.array([[-1.0], [0.0], [2.0]], np.float32)
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == np.float32
    np.testing.assert_array_equal(dx[:, 0], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(x[:, 0], [-1.0, 0.0, 2.0])  # input untouched


def test_activation_layers_have_no_params_and_keep_shape():
    for make in LAYERS.values():
        layer = make()
        assert layer.is_activation
        assert layer.output_shape((3, 5, 5)) == (3, 5, 5)
        assert layer.num_params((3, 5, 5)) == 0 and layer.geometry((3, 5, 5)) is None
    assert LeakyReLU().describe() == "slope=0.01"
    assert ELU(alpha=2).describe() == "alpha=2"
    assert GELU("tanh").describe() == "approximate=tanh"


def test_config_entries_and_errors():
    (layer,) = make_layers({"type": "leaky_relu", "negative_slope": 0.1})
    assert layer.negative_slope == 0.1
    assert layer.get_config() == {"type": "leaky_relu", "negative_slope": 0.1}
    for entry, key in [({"type": "gelu", "approximate": "fast"}, "approximate"),
                       ({"type": "leaky_relu", "negative_slope": "big"}, "negative_slope"),
                       ({"type": "elu", "alpha": float("nan")}, "alpha")]:
        with pytest.raises(ConfigError) as err:
            make_layers(entry)
        assert err.value.key == key
        assert repr(entry[key]) in str(err.value)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_float32_agrees_with_float64(name):
    x = np.linspace(-12, 12, 2401).reshape(1, -1)
    dy = np.cos(x)
    results = {}
    for dtype in (np.float32, np.float64):
        layer = build_layer(LAYERS[name](), (x.shape[1],), dtype=dtype)
        y = layer.forward(to_internal(x.astype(dtype)), train=True)
        dx = layer.backward(to_internal(dy.astype(dtype)))
        assert y.dtype == dx.dtype == dtype
        results[dtype] = (y, dx)
    for got, want in zip(results[np.float32], results[np.float64], strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
