"""Dense and flatten: gradients, PyTorch reference, init schemes, errors, a whole model."""

from pathlib import Path

import numpy as np
import pytest
from gradcheck import build_layer, check_layer_gradients
from hypothesis import given
from hypothesis import strategies as st

from cnncli.errors import ConfigError, ShapeError
from cnncli.nn.layers.base import from_internal, shown, to_internal
from cnncli.nn.layers.dense import Dense
from cnncli.nn.layers.init import INIT_SCHEMES, init_bias, init_weight
from cnncli.nn.layers.reshape import Flatten
from cnncli.nn.losses import softmax_cross_entropy
from cnncli.nn.model import make_layers, model_from_entries

REF = np.load(Path(__file__).parent / "fixtures" / "dense_reference.npz", allow_pickle=False)


@given(n=st.integers(1, 4), features=st.integers(1, 6), units=st.integers(1, 5),
       bias=st.booleans(), seed=st.integers(0, 1000))
def test_dense_gradients_flat(n, features, units, bias, seed):
    layer = build_layer(Dense(units, bias=bias), (features,), seed=seed)
    x = np.random.default_rng(seed).standard_normal((n, features))
    check_layer_gradients(layer, x, seed=seed)


@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3),
       seed=st.integers(0, 1000))
def test_dense_gradients_spatial_input(n, c, h, w, seed):
    layer = build_layer(Dense(4), (c, h, w), seed=seed)
    x = np.random.default_rng(seed).standard_normal((n, c, h, w))
    dx, _ = check_layer_gradients(layer, x, seed=seed)
    assert dx.shape == x.shape


def test_dense_matches_pytorch_linear_on_spatial_input():
    x = REF["dense.x"]
    layer = build_layer(Dense(7), x.shape[1:])
    layer.params["weight"][...] = REF["dense.weight"]
    layer.params["bias"][...] = REF["dense.bias"]
    y = layer.forward(to_internal(x), train=True)
    np.testing.assert_allclose(from_internal(y), REF["dense.y"], rtol=1e-12, atol=1e-12)
    layer.zero_grad()
    dx = layer.backward(to_internal(REF["dense.dy"]))
    np.testing.assert_allclose(from_internal(dx), REF["dense.dx"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["weight"], REF["dense.dweight"], rtol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], REF["dense.dbias"], rtol=1e-12)


def test_spatial_input_is_flattened_in_chw_order():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 4, 5))
    direct = build_layer(Dense(6), (2, 4, 5))
    flat = build_layer(Dense(6), (40,))
    flat.params.update({k: v.copy() for k, v in direct.params.items()})
    y_direct = direct.forward(to_internal(x))
    y_flat = flat.forward(to_internal(x.reshape(3, -1)))
    np.testing.assert_allclose(y_direct, y_flat, rtol=1e-13)


def test_backward_accumulates_gradients():
    layer = build_layer(Dense(3), (4,))
    x = to_internal(np.random.default_rng(1).standard_normal((2, 4)))
    dy = np.ones((3, 2))
    layer.zero_grad()
    layer.forward(x)
    layer.backward(dy)
    once = layer.grads["weight"].copy()
    layer.forward(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.grads["weight"], 2 * once)


def test_flatten_matches_torch_flatten_order_and_gradient():
    x = np.random.default_rng(2).standard_normal((3, 2, 3, 4))
    layer = build_layer(Flatten(), (2, 3, 4))
    assert layer.output_shape((2, 3, 4)) == (24,)
    y = from_internal(layer.forward(to_internal(x)))
    np.testing.assert_array_equal(y, x.reshape(3, -1))
    check_layer_gradients(layer, x)


def test_default_init_is_uniform_with_pytorch_bound():
    rng = np.random.default_rng(0)
    w = init_weight(rng, (400, 100), 100, 400, "default", np.float64)
    b = init_bias(rng, 400, 100, "default", np.float64)
    for a in (w, b):
        assert np.abs(a).max() <= 0.1
        assert np.abs(a).max() > 0.095  # actually spans the interval
    assert abs(w.std() - 0.1 / np.sqrt(3)) < 0.002  # std of U(-a, a) is a/sqrt(3)


@pytest.mark.parametrize("scheme, std", [
    ("he_normal", np.sqrt(2 / 200)), ("he_uniform", np.sqrt(2 / 200)),
    ("glorot_uniform", np.sqrt(2 / 300)), ("glorot_normal", np.sqrt(2 / 300))])
def test_fan_based_inits_have_the_right_spread_and_zero_bias(scheme, std):
    rng = np.random.default_rng(0)
    w = init_weight(rng, (100, 200), 200, 100, scheme, np.float32)
    assert w.dtype == np.float32 and w.flags.c_contiguous
    assert abs(w.std() - std) < 0.03 * std
    assert not init_bias(rng, 100, 200, scheme, np.float32).any()


def test_init_is_reproducible_with_the_model_seed():
    entries = [{"type": "flatten"}, {"type": "dense", "units": 5, "init": "he_normal"}]
    a = model_from_entries((1, 3, 3), entries, seed=7).state_dict()
    b = model_from_entries((1, 3, 3), entries, seed=7).state_dict()
    c = model_from_entries((1, 3, 3), entries, seed=8).state_dict()
    np.testing.assert_array_equal(a["dense_1.weight"], b["dense_1.weight"])
    assert not np.array_equal(a["dense_1.weight"], c["dense_1.weight"])


def test_counts_and_aliases():
    layer = make_layers({"type": "linear", "out_features": 10, "activation": "relu"})
    assert [type(l).__name__ for l in layer] == ["Dense", "ReLU"]
    dense = layer[0]
    assert dense.num_params((3, 4, 4)) == 48 * 10 + 10
    assert Dense(10, bias=False).num_params((48,)) == 480
    assert dense.macs((48,)) == 480
    assert dense.output_shape((3, 4, 4)) == (10,)
    assert dense.geometry((48,)) is None
    assert dense.get_config() == {"type": "dense", "units": 10, "bias": True,
                                  "init": "default", "in_features": None}


def test_in_features_must_match_the_input():
    assert Dense(3, in_features=12).output_shape((3, 2, 2)) == (3,)
    with pytest.raises(ShapeError, match="in_features is 10 but the input has 12") as err:
        Dense(3, in_features=10).output_shape((12,))
    assert err.value.key == "in_features"


@pytest.mark.parametrize("kwargs, key", [
    ({"units": 0}, "units"), ({"units": -3}, "units"), ({"units": 2.5}, "units"),
    ({"units": "ten"}, "units"), ({"units": True}, "units"),
    ({"units": 4, "init": "xavier"}, "init"), ({"units": 4, "bias": "yes"}, "bias"),
    ({"units": 4, "in_features": 0}, "in_features")])
def test_bad_hyperparameters_raise_config_error_with_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        Dense(**kwargs)
    assert err.value.key == key
    assert shown(kwargs[key]) in str(err.value)     # as the YAML spells it: true, not True


def test_unknown_key_and_missing_units_are_config_errors():
    with pytest.raises(ConfigError, match="unknown key 'unit'") as err:
        make_layers({"type": "dense", "unit": 3})
    assert "did you mean 'units'" in str(err.value)
    with pytest.raises(ConfigError, match="needs 'units'"):
        make_layers({"type": "dense"})
    for bad in ("softplus", "flatten", 3):
        with pytest.raises(ConfigError, match="activation must be one of .*relu") as err:
            make_layers({"type": "dense", "units": 3, "activation": bad})
        assert err.value.key == "activation"


def test_float32_model_stays_float32():
    model = model_from_entries((2, 3, 3), [{"type": "dense", "units": 4}])
    y = model.forward(np.ones((5, 2, 3, 3), np.float32))
    assert y.dtype == np.float32 and y.shape == (5, 4)


def test_whole_model_gradient_with_loss_matches_finite_differences():
    entries = [{"type": "flatten"}, {"type": "dense", "units": 10, "activation": "tanh"},
               {"type": "batchnorm1d"}, {"type": "dense", "units": 6, "activation": "gelu"},
               {"type": "dense", "units": 4}]
    model = model_from_entries((1, 8, 8), entries, dtype=np.float64, seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 1, 8, 8))
    labels = rng.integers(0, 4, 5)

    def loss():
        return softmax_cross_entropy(model.forward(x, train=True), labels, 0.1)[0]

    value, dlogits = softmax_cross_entropy(model.forward(x, train=True), labels, 0.1)
    assert np.isfinite(value)
    model.zero_grad()
    dx = model.backward(dlogits)
    eps = 1e-6
    for name, param, grad in model.parameters():
        flat = param.reshape(-1)
        picks = rng.choice(flat.size, size=min(flat.size, 12), replace=False)
        for i in picks:
            old = flat[i]
            flat[i] = old + eps
            up = loss()
            flat[i] = old - eps
            down = loss()
            flat[i] = old
            np.testing.assert_allclose(grad.reshape(-1)[i], (up - down) / (2 * eps),
                                       rtol=1e-5, atol=1e-8, err_msg=name)
    xf = x.reshape(-1)
    for i in rng.choice(xf.size, size=10, replace=False):
        old = xf[i]
        xf[i] = old + eps
        up = loss()
        xf[i] = old - eps
        down = loss()
        xf[i] = old
        np.testing.assert_allclose(dx.reshape(-1)[i], (up - down) / (2 * eps),
                                   rtol=1e-5, atol=1e-8)


def test_init_schemes_are_listed():
    assert INIT_SCHEMES == ("default", "he_normal", "he_uniform", "glorot_uniform",
                            "glorot_normal")


@pytest.mark.parametrize("entry", [
    {"type": "flatten"}, {"type": "dense", "units": 3, "bias": False, "init": "he_uniform"},
    {"type": "relu", "name": "act"}, {"type": "leaky_relu", "negative_slope": 0.2},
    {"type": "elu", "alpha": 0.5}, {"type": "gelu", "approximate": "tanh"}, {"type": "tanh"},
    {"type": "sigmoid"}, {"type": "dropout", "p": 0.1},
    {"type": "batchnorm1d", "momentum": None, "affine": False},
    {"type": "batchnorm2d", "eps": 1e-3, "track_running_stats": False}])
def test_get_config_rebuilds_the_same_layer(entry):
    (layer,) = make_layers(entry)
    config = layer.get_config()
    for key, value in entry.items():
        assert config[key] == value
    (again,) = make_layers(config)
    assert again.get_config() == config


def test_an_empty_batch_passes_through_in_eval():
    entries = [{"type": "batchnorm2d"}, {"type": "flatten"}, {"type": "dropout"},
               {"type": "dense", "units": 3, "activation": "gelu"}, {"type": "batchnorm1d"}]
    model = model_from_entries((2, 4, 4), entries)
    assert model.forward(np.zeros((0, 2, 4, 4), np.float32)).shape == (0, 3)
