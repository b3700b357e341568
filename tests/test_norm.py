"""Batch norm: gradients in train and eval mode, running statistics, PyTorch reference."""

from pathlib import Path

import numpy as np
import pytest
from gradcheck import build_layer, check_layer_gradients
from hypothesis import given
from hypothesis import strategies as st

from cnncli.errors import ConfigError, DataError, ShapeError
from cnncli.nn.layers.base import from_internal, to_internal
from cnncli.nn.layers.norm import BatchNorm1d, BatchNorm2d
from cnncli.nn.model import make_layers, model_from_entries

REF = np.load(Path(__file__).parent / "fixtures" / "dense_reference.npz", allow_pickle=False)


def _randomise_affine(layer, seed):
    rng = np.random.default_rng(seed + 1)
    for value in layer.params.values():
        value[...] = rng.standard_normal(value.shape)


@given(c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3), n=st.integers(2, 4),
       affine=st.booleans(), seed=st.integers(0, 10_000))
def test_batchnorm2d_train_gradients(c, h, w, n, affine, seed):
    layer = build_layer(BatchNorm2d(affine=affine), (c, h, w))
    _randomise_affine(layer, seed)
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)) * 2 + 1
    check_layer_gradients(layer, x, train=True, seed=seed, rtol=1e-5, atol=1e-7)


@given(f=st.integers(1, 5), n=st.integers(2, 6), seed=st.integers(0, 10_000))
def test_batchnorm1d_train_gradients(f, n, seed):
    layer = build_layer(BatchNorm1d(), (f,))
    _randomise_affine(layer, seed)
    x = np.random.default_rng(seed).standard_normal((n, f))
    check_layer_gradients(layer, x, train=True, seed=seed, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls, shape", [(BatchNorm2d, (3, 2, 2)), (BatchNorm1d, (4,))])
def test_eval_gradients_use_running_stats(cls, shape):
    layer = build_layer(cls(), shape)
    _randomise_affine(layer, 0)
    rng = np.random.default_rng(0)
    layer.buffers["running_mean"][...] = rng.standard_normal(shape[0])
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, shape[0])
    x = rng.standard_normal((3, *shape))
    check_layer_gradients(layer, x, train=False)
    y = from_internal(layer.forward(to_internal(x), train=False))
    axes = (slice(None),) + (None,) * (len(shape) - 1)
    expected = ((x - layer.buffers["running_mean"][axes])
                / np.sqrt(layer.buffers["running_var"][axes] + 1e-5)
                * layer.params["weight"][axes] + layer.params["bias"][axes])
    np.testing.assert_allclose(y, expected, rtol=1e-13)
    assert layer.buffers["num_batches_tracked"] == 0  # eval never updates the buffers


def test_running_stats_follow_the_momentum_formula_with_unbiased_variance():
    momentum = 0.2
    layer = build_layer(BatchNorm2d(momentum=momentum), (3, 4, 4))
    rng = np.random.default_rng(0)
    mean, var = np.zeros(3), np.ones(3)
    for step in range(5):
        x = rng.standard_normal((6, 3, 4, 4)) * (step + 1) + step
        y = from_internal(layer.forward(to_internal(x), train=True))
        count = 6 * 4 * 4
        batch_mean = x.mean(axis=(0, 2, 3))
        batch_var = x.var(axis=(0, 2, 3))
        mean = (1 - momentum) * mean + momentum * batch_mean
        var = (1 - momentum) * var + momentum * batch_var * count / (count - 1)
        np.testing.assert_allclose(layer.buffers["running_mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(layer.buffers["running_var"], var, rtol=1e-12)
        # Training output uses the biased batch variance.
        expected = (x - batch_mean[:, None, None]) / np.sqrt(batch_var[:, None, None] + 1e-5)
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    tracked = layer.buffers["num_batches_tracked"]
    assert tracked.dtype == np.int64 and tracked.shape == () and tracked == 5


def test_momentum_none_is_a_cumulative_average():
    layer = build_layer(BatchNorm1d(momentum=None), (2,))
    rng = np.random.default_rng(0)
    means = []
    for _ in range(4):
        x = rng.standard_normal((5, 2)) + rng.standard_normal(2)
        layer.forward(to_internal(x), train=True)
        means.append(x.mean(axis=0))
    np.testing.assert_allclose(layer.buffers["running_mean"], np.mean(means, axis=0), rtol=1e-12)


@pytest.mark.parametrize("kind, cls", [("2d", BatchNorm2d), ("1d", BatchNorm1d)])
def test_matches_pytorch_over_several_steps_then_eval(kind, cls):
    key = f"bn{kind}"
    x0 = REF[f"{key}.x0"]
    kwargs = {"momentum": 0.1, "eps": 1e-5} if kind == "2d" else {"momentum": 0.3, "eps": 1e-3}
    layer = build_layer(cls(**kwargs), x0.shape[1:])
    layer.params["weight"][...] = REF[f"{key}.weight"]
    layer.params["bias"][...] = REF[f"{key}.bias"]
    for step in range(3):
        layer.zero_grad()
        y = layer.forward(to_internal(REF[f"{key}.x{step}"]), train=True)
        dx = layer.backward(to_internal(REF[f"{key}.dy{step}"]))
        np.testing.assert_allclose(from_internal(y), REF[f"{key}.y{step}"], rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(from_internal(dx), REF[f"{key}.dx{step}"], rtol=1e-9,
                                   atol=1e-12)
        for name in ("weight", "bias"):
            np.testing.assert_allclose(layer.grads[name], REF[f"{key}.d{name}{step}"],
                                       rtol=1e-10)
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(layer.buffers[name], REF[f"{key}.{name}{step}"],
                                       rtol=1e-12)
    y = layer.forward(to_internal(REF[f"{key}.eval_x"]), train=False)
    dx = layer.backward(to_internal(REF[f"{key}.eval_dy"]))
    np.testing.assert_allclose(from_internal(y), REF[f"{key}.eval_y"], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(from_internal(dx), REF[f"{key}.eval_dx"], rtol=1e-12)


def test_single_value_per_channel_in_training_is_an_error():
    layer = build_layer(BatchNorm1d(), (4,))
    with pytest.raises(DataError, match=r"Expected more than 1 value per channel when "
                                        r"training, got input size \[1, 4\]"):
        layer.forward(np.ones((4, 1)), train=True)
    layer.forward(np.ones((4, 1)), train=False)  # eval with one sample is fine
    bn2 = build_layer(BatchNorm2d(), (3, 1, 1))
    with pytest.raises(DataError, match=r"got input size \[1, 3, 1, 1\]"):
        bn2.forward(np.ones((3, 1, 1, 1)), train=True)
    bn2.forward(np.ones((3, 2, 1, 1)), train=True)  # one pixel, two samples: fine


def test_without_running_stats_eval_uses_batch_stats_and_has_no_buffers():
    layer = build_layer(BatchNorm1d(track_running_stats=False, affine=False), (3,))
    assert layer.buffers == {} and layer.params == {}
    x = np.random.default_rng(0).standard_normal((3, 8)) * 4 + 2
    np.testing.assert_allclose(layer.forward(x, train=False), layer.forward(x, train=True))
    check_layer_gradients(layer, from_internal(x), train=False)


def test_state_dict_keys_and_float32():
    model = model_from_entries((2, 3, 3), [{"type": "batchnorm2d"}, {"type": "flatten"},
                                           {"type": "batchnorm1d"}])
    state = model.state_dict()
    assert list(state) == [f"batchnorm{k}_1.{p}" for k in ("2d", "1d") for p in (
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    assert state["batchnorm2d_1.running_var"].dtype == np.float32
    y = model.forward(np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32),
                      train=True)
    assert y.dtype == np.float32
    model.load_state_dict(state)


def test_shapes_counts_and_errors():
    assert BatchNorm2d().num_params((8, 4, 4)) == 16
    assert BatchNorm2d(affine=False).num_params((8, 4, 4)) == 0
    assert BatchNorm2d().describe() == "eps=1e-05"
    with pytest.raises(ShapeError, match=r"batchnorm2d needs a \(C, H, W\) input.*batchnorm1d"):
        BatchNorm2d().output_shape((10,))
    with pytest.raises(ShapeError, match=r"batchnorm1d needs a \(features,\) input"):
        BatchNorm1d().output_shape((3, 4, 4))
    for entry, key in [({"type": "batchnorm2d", "eps": 0}, "eps"),
                       ({"type": "batchnorm2d", "momentum": 1.5}, "momentum"),
                       ({"type": "batchnorm1d", "affine": "no"}, "affine"),
                       ({"type": "batchnorm1d", "track_running_stats": 1},
                        "track_running_stats")]:
        with pytest.raises(ConfigError) as err:
            make_layers(entry)
        assert err.value.key == key


def test_float32_statistics_stay_accurate_on_large_batches():
    x = (np.random.default_rng(0).standard_normal((4, 32, 32, 64)) * 3 + 5)
    dy = np.random.default_rng(1).standard_normal(x.shape)
    out = {}
    for dtype in (np.float32, np.float64):
        layer = build_layer(BatchNorm2d(), (4, 32, 32), dtype=dtype)
        y = layer.forward(x.astype(dtype), train=True)
        layer.backward(dy.astype(dtype))
        out[dtype] = (y, layer.buffers["running_var"], layer.grads["weight"])
    for got, want in zip(out[np.float32], out[np.float64], strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-5)


@pytest.mark.parametrize("train", [True, False])
def test_channels_on_threads_change_no_bit(two_threads, train):
    # Big enough for the plan's splitter to share the channels over two threads.
    from cnncli.parallel.plan import THREADED
    from cnncli.parallel.thresholds import MIN_ELEMENTS

    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 16, 16, MIN_ELEMENTS // (6 * 256) + 1)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for threaded in (False, True):
        layer = build_layer(BatchNorm2d(), x.shape[:3], seed=3, dtype=np.float32)
        _randomise_affine(layer, 3)
        layer.buffers["running_var"][...] = 2.5
        if threaded:
            layer.splitter = THREADED
        y = layer.forward(x, train=train)
        dx = layer.backward(dy)
        results.append((y, dx, *layer.grads.values(), *layer.buffers.values()))
    for plain, threaded in zip(*results, strict=True):
        np.testing.assert_array_equal(plain, threaded)
