"""Pooling layers: PyTorch reference, naive-loop references, gradient checks, ties, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from gradcheck import build_layer, check_layer_gradients
from hypothesis import assume, given
from hypothesis import strategies as st

from cnncli.errors import ConfigError, DataError, ShapeError
from cnncli.nn.layers.base import from_internal, to_internal
from cnncli.nn.layers.pool import AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d, LPPool2d, MaxPool2d
from cnncli.nn.model import make_layers, model_from_entries
from cnncli.nn.registry import layer_class

REF = np.load(Path(__file__).parent / "fixtures" / "pool_reference.npz", allow_pickle=False)
CASES = json.loads(str(REF["cases"]))


def run(layer, x_nchw, dy_nchw=None, train=True):
    """Forward (and backward with dy) on NCHW arrays; returns NCHW y and dx."""
    y = layer.forward(to_internal(x_nchw), train=train)
    dx = None
    if dy_nchw is not None:
        dx = from_internal(layer.backward(to_internal(dy_nchw)))
    return from_internal(y), dx


# ---------------------------------------------------------------- PyTorch reference

@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_pytorch(case):
    name, kind, hyper, shape, _, dtype = case
    (layer,) = make_layers({"type": kind, **hyper})
    build_layer(layer, shape[1:], dtype=np.dtype(dtype))
    x, dy = REF[f"{name}.x"], REF[f"{name}.dy"]
    assert layer.output_shape(tuple(shape[1:])) == REF[f"{name}.y"].shape[1:]
    y, dx = run(layer, x, dy)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == "float64" else {"rtol": 2e-6, "atol": 2e-6}
    assert y.dtype == np.dtype(dtype) and dx.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y, REF[f"{name}.y"], **tol)
    np.testing.assert_allclose(dx, REF[f"{name}.dx"], **tol)


# ---------------------------------------------------------------- naive loop references

def out_size(n, k, s, p, d, ceil):
    """PyTorch's pooling_output_shape_pad_lr, written out independently of the package."""
    o = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (o - 1) * s >= n + p:
        o -= 1
    return o


def naive_max(x, k, s, p, d, ceil):
    """Max over each window's in-input taps; also the (row, col) of the first maximum."""
    n_, c_, h, w = x.shape
    oh, ow = (out_size(h, k[0], s[0], p[0], d[0], ceil), out_size(w, k[1], s[1], p[1], d[1], ceil))
    y = np.full((n_, c_, oh, ow), -np.inf)
    where = np.zeros((n_, c_, oh, ow, 2), int)
    for n in range(n_):
        for c in range(c_):
            for a in range(oh):
                for b in range(ow):
                    for i in range(k[0]):
                        for j in range(k[1]):
                            r, q = a * s[0] - p[0] + i * d[0], b * s[1] - p[1] + j * d[1]
                            if 0 <= r < h and 0 <= q < w and x[n, c, r, q] > y[n, c, a, b]:
                                y[n, c, a, b] = x[n, c, r, q]
                                where[n, c, a, b] = r, q
    return y, where


def naive_max_backward(x_shape, where, dy):
    dx = np.zeros(x_shape)
    for idx in np.ndindex(dy.shape):
        r, q = where[idx]
        dx[idx[0], idx[1], r, q] += dy[idx]
    return dx


def avg_windows(h, w, k, s, p, ceil, include_pad):
    """[(a, b, rows, cols, divisor)] following PyTorch's CPU avg_pool2d bookkeeping."""
    oh, ow = out_size(h, k[0], s[0], p[0], 1, ceil), out_size(w, k[1], s[1], p[1], 1, ceil)
    out = []
    for a in range(oh):
        for b in range(ow):
            r0, q0 = a * s[0] - p[0], b * s[1] - p[1]
            r1, q1 = min(r0 + k[0], h + p[0]), min(q0 + k[1], w + p[1])
            pool_size = (r1 - r0) * (q1 - q0)
            r0, q0, r1, q1 = max(r0, 0), max(q0, 0), min(r1, h), min(q1, w)
            divisor = pool_size if include_pad else (r1 - r0) * (q1 - q0)
            out.append((a, b, slice(r0, r1), slice(q0, q1), divisor))
    return out, (oh, ow)


def naive_avg(x, k, s, p, ceil, include_pad, dy=None):
    n_, c_, h, w = x.shape
    windows, (oh, ow) = avg_windows(h, w, k, s, p, ceil, include_pad)
    y, dx = np.zeros((n_, c_, oh, ow)), np.zeros(x.shape)
    for a, b, rows, cols, divisor in windows:
        y[:, :, a, b] = x[:, :, rows, cols].sum(axis=(2, 3)) / divisor
        if dy is not None:
            dx[:, :, rows, cols] += (dy[:, :, a, b] / divisor)[:, :, None, None]
    return y, dx


def naive_lp(x, p_norm, k, s, ceil):
    """(sum of x^p over the window)^(1/p); a ceil_mode window cut by the border is scaled
    by kh*kw / (its area), which is what PyTorch's avg_pool2d-based formula amounts to."""
    n_, c_, h, w = x.shape
    windows, (oh, ow) = avg_windows(h, w, k, s, (0, 0), ceil, True)
    y = np.zeros((n_, c_, oh, ow))
    for a, b, rows, cols, area in windows:
        total = (x[:, :, rows, cols] ** p_norm).sum(axis=(2, 3))
        y[:, :, a, b] = (total * (k[0] * k[1] / area)) ** (1 / p_norm)
    return y


@st.composite
def windows(draw, dilation=True, padding=True, max_size=7):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    pad = ((draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2))) if padding
           else (0, 0))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)),
             draw(st.integers(1, max_size)), draw(st.integers(1, max_size)))
    return {"k": k, "s": stride, "p": pad, "d": dil, "ceil": draw(st.booleans()),
            "shape": shape, "seed": draw(st.integers(0, 10_000))}


def eff_stride(cfg):
    return cfg["k"] if cfg["s"] is None else cfg["s"]


def sizes_fit(cfg):
    (_, _, h, w), s = cfg["shape"], eff_stride(cfg)
    return all(out_size(n, cfg["k"][a], s[a], cfg["p"][a], cfg["d"][a], cfg["ceil"]) > 0
               for a, n in enumerate((h, w)))


def distinct_input(shape, seed):
    """Values with no ties (a shuffled ramp), so max pooling is differentiable everywhere."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape) / 5.0 - 2.0


def max_layer(cfg):
    stride = None if cfg["s"] is None else list(cfg["s"])
    return MaxPool2d(list(cfg["k"]), stride, list(cfg["p"]), list(cfg["d"]), cfg["ceil"])


@given(cfg=windows())
def test_maxpool_forward_matches_naive_loops(cfg):
    x = distinct_input(cfg["shape"], cfg["seed"])
    layer = max_layer(cfg)
    if not sizes_fit(cfg):
        with pytest.raises(ShapeError, match="does not fit"):
            layer.output_shape(cfg["shape"][1:])
        return
    expected, _ = naive_max(x, cfg["k"], eff_stride(cfg), cfg["p"], cfg["d"], cfg["ceil"])
    if np.isinf(expected).any():  # a dilated window that sees only padding: refused
        with pytest.raises(ShapeError, match="only padding"):
            layer.output_shape(cfg["shape"][1:])
        return
    build_layer(layer, cfg["shape"][1:])
    y, _ = run(layer, x, train=False)
    assert layer.output_shape(cfg["shape"][1:]) == y.shape[1:]
    np.testing.assert_array_equal(y, expected)
    y_train, _ = run(layer, x, train=True)
    np.testing.assert_array_equal(y_train, expected)


@given(cfg=windows(dilation=False), include_pad=st.booleans())
def test_avgpool_matches_naive_loops(cfg, include_pad):
    assume(sizes_fit(cfg))
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal(cfg["shape"])
    stride = None if cfg["s"] is None else list(cfg["s"])
    layer = build_layer(AvgPool2d(list(cfg["k"]), stride, list(cfg["p"]), cfg["ceil"],
                                  include_pad), cfg["shape"][1:])
    out_shape = layer.output_shape(cfg["shape"][1:])
    dy = rng.standard_normal((cfg["shape"][0],) + out_shape)
    y, dx = run(layer, x, dy)
    expected_y, expected_dx = naive_avg(x, cfg["k"], eff_stride(cfg), cfg["p"], cfg["ceil"],
                                        include_pad, dy)
    assert y.shape == expected_y.shape
    np.testing.assert_allclose(y, expected_y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-14)


@given(cfg=windows(dilation=False, padding=False), p_norm=st.sampled_from([1.0, 1.5, 2, 3.0]))
def test_lppool_matches_naive_loops(cfg, p_norm):
    assume(sizes_fit(cfg))
    x = np.random.default_rng(cfg["seed"]).uniform(0.1, 2.0, cfg["shape"])
    stride = None if cfg["s"] is None else list(cfg["s"])
    layer = build_layer(LPPool2d(p_norm, list(cfg["k"]), stride, cfg["ceil"]), cfg["shape"][1:])
    y, _ = run(layer, x)
    assert layer.output_shape(cfg["shape"][1:]) == y.shape[1:]
    np.testing.assert_allclose(y, naive_lp(x, p_norm, cfg["k"], eff_stride(cfg), cfg["ceil"]),
                               rtol=1e-12)


# ---------------------------------------------------------------- gradient checks (float64)

@given(cfg=windows(max_size=6))
def test_maxpool_gradients(cfg):
    assume(sizes_fit(cfg))
    x = distinct_input(cfg["shape"], cfg["seed"])
    expected, _ = naive_max(x, cfg["k"], eff_stride(cfg), cfg["p"], cfg["d"], cfg["ceil"])
    assume(not np.isinf(expected).any())
    layer = build_layer(max_layer(cfg), cfg["shape"][1:])
    check_layer_gradients(layer, x, seed=cfg["seed"])


@given(cfg=windows(dilation=False, max_size=6), include_pad=st.booleans())
def test_avgpool_gradients(cfg, include_pad):
    assume(sizes_fit(cfg))
    x = np.random.default_rng(cfg["seed"]).standard_normal(cfg["shape"])
    stride = None if cfg["s"] is None else list(cfg["s"])
    layer = build_layer(AvgPool2d(list(cfg["k"]), stride, list(cfg["p"]), cfg["ceil"],
                                  include_pad), cfg["shape"][1:])
    check_layer_gradients(layer, x, seed=cfg["seed"])


@given(cfg=windows(dilation=False, padding=False, max_size=6),
       p_norm=st.sampled_from([1.0, 1.5, 2, 3.0, 4.5]))
def test_lppool_gradients(cfg, p_norm):
    assume(sizes_fit(cfg))
    x = np.random.default_rng(cfg["seed"]).uniform(0.2, 2.0, cfg["shape"])
    stride = None if cfg["s"] is None else list(cfg["s"])
    layer = build_layer(LPPool2d(p_norm, list(cfg["k"]), stride, cfg["ceil"]), cfg["shape"][1:])
    check_layer_gradients(layer, x, seed=cfg["seed"], rtol=1e-5, atol=1e-6)


@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 5), w=st.integers(1, 5),
       seed=st.integers(0, 1000))
def test_global_pool_gradients(n, c, h, w, seed):
    x = distinct_input((n, c, h, w), seed)
    for layer in (GlobalAvgPool2d(), GlobalMaxPool2d()):
        build_layer(layer, (c, h, w))
        assert layer.output_shape((c, h, w)) == (c, 1, 1)
        check_layer_gradients(layer, x, seed=seed)
    y, _ = run(layer, x)
    np.testing.assert_array_equal(y[:, :, 0, 0], x.max(axis=(2, 3)))


# ---------------------------------------------------------------- ties: first maximum wins

def test_equal_window_sends_gradient_to_its_first_element():
    layer = build_layer(MaxPool2d(2), (1, 2, 2))
    _, dx = run(layer, np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(dx[0, 0], [[1.0, 0.0], [0.0, 0.0]])


@given(cfg=windows(), seed=st.integers(0, 1000))
def test_maxpool_ties_route_gradient_to_first_maximum(cfg, seed):
    assume(sizes_fit(cfg))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, cfg["shape"]).astype(np.float64)  # many ties
    expected, where = naive_max(x, cfg["k"], eff_stride(cfg), cfg["p"], cfg["d"], cfg["ceil"])
    assume(not np.isinf(expected).any())
    layer = build_layer(max_layer(cfg), cfg["shape"][1:])
    dy = rng.standard_normal(expected.shape)
    y, dx = run(layer, x, dy)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_allclose(dx, naive_max_backward(x.shape, where, dy), rtol=1e-12,
                               atol=1e-15)


def test_global_max_ties_go_to_first_position():
    layer = build_layer(GlobalMaxPool2d(), (1, 2, 3))
    x = np.array([[[[0.0, 5.0, 1.0], [5.0, 2.0, 5.0]]]])
    _, dx = run(layer, x, np.full((1, 1, 1, 1), 2.0))
    np.testing.assert_array_equal(dx[0, 0], [[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])


# ---------------------------------------------------------------- shapes, config, description

def test_stride_defaults_to_kernel_size():
    for layer in (MaxPool2d([2, 3]), AvgPool2d(3), LPPool2d(2, 2)):
        assert layer.stride == layer.kernel_size
    assert MaxPool2d([2, 3]).output_shape((4, 8, 9)) == (4, 4, 3)


def test_config_round_trip_and_descriptions():
    layer = MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True)
    cfg = layer.get_config()
    rebuilt = layer_class(cfg.pop("type"))(**cfg)
    assert rebuilt.output_shape((3, 17, 13)) == layer.output_shape((3, 17, 13))
    assert layer.describe() == "3x3 s2 p1 d2 ceil"
    assert MaxPool2d(2).describe() == "2x2 s2"
    assert AvgPool2d([3, 2], [2, 1], [1, 0], count_include_pad=False).describe() == \
        "3x2 s2x1 p1x0 excl-pad"
    assert LPPool2d(2, 2).describe() == "L2 2x2 s2"
    assert GlobalAvgPool2d().describe() == "global"


def test_geometry_and_macs():
    layer = MaxPool2d(3, 2, 1, dilation=2)
    assert layer.geometry((3, 9, 9)) == ((3, 3), (2, 2), (1, 1), (2, 2))
    # one comparison/add per window element: C * H' * W' * kh * kw
    assert MaxPool2d(2).macs((3, 8, 8)) == 3 * 4 * 4 * 2 * 2
    assert AvgPool2d([3, 2], 1).macs((2, 5, 4)) == 2 * 3 * 3 * 3 * 2
    assert GlobalMaxPool2d().macs((4, 5, 6)) == 4 * 5 * 6
    assert GlobalAvgPool2d().geometry((4, 5, 6)) == ((5, 6), (1, 1), (0, 0), (1, 1))


def test_aliases_and_keras_pool_size():
    (layer,) = make_layers({"type": "max_pool2d", "pool_size": 3})
    assert isinstance(layer, MaxPool2d) and layer.kernel_size == (3, 3)
    (layer,) = make_layers({"type": "avgpool", "kernel_size": [2, 1]})
    assert isinstance(layer, AvgPool2d) and layer.stride == (2, 1)


def test_model_with_pools_trains_shapes_end_to_end():
    entries = [{"type": "maxpool2d", "kernel_size": 2},
               {"type": "avgpool2d", "kernel_size": 3, "stride": 1, "padding": 1},
               {"type": "lppool2d", "norm_type": 2, "kernel_size": 2, "ceil_mode": True},
               {"type": "global_max_pool2d"}, {"type": "flatten"}, {"type": "dense", "units": 3}]
    model = model_from_entries((2, 10, 9), entries, dtype=np.float64)
    assert model.shapes[1:5] == [(2, 5, 4), (2, 5, 4), (2, 3, 2), (2, 1, 1)]
    x = np.random.default_rng(0).uniform(0.1, 1.0, (4, 2, 10, 9))
    logits = model.forward(x, train=True)
    assert logits.shape == (4, 3)
    assert model.backward(np.ones_like(logits)).shape == x.shape


def test_padded_buffer_reuse_across_batch_sizes_and_dtypes():
    layer = build_layer(MaxPool2d(3, 2, 1), (2, 7, 7))
    rng = np.random.default_rng(3)
    for n, dtype in [(2, np.float64), (3, np.float64), (2, np.float32), (2, np.float64)]:
        x = rng.standard_normal((n, 2, 7, 7)).astype(dtype)
        y, _ = run(layer, x, train=True)
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, naive_max(x.astype(np.float64), (3, 3), (2, 2),
                                                   (1, 1), (1, 1), False)[0].astype(dtype))


def test_need_dx_false_returns_none():
    for layer in (MaxPool2d(2), AvgPool2d(2), LPPool2d(2, 2), GlobalAvgPool2d(),
                  GlobalMaxPool2d()):
        build_layer(layer, (1, 4, 4))
        y = layer.forward(to_internal(np.ones((1, 1, 4, 4))), train=True)
        assert layer.backward(np.ones_like(y), need_dx=False) is None


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, key, quoted", [
    ({"kernel_size": 0}, "kernel_size", "0"),
    ({"kernel_size": -2}, "kernel_size", "-2"),
    ({"kernel_size": "2"}, "kernel_size", "'2'"),
    ({"kernel_size": [2]}, "kernel_size", "[2]"),
    ({"kernel_size": True}, "kernel_size", "got true"),
    ({"kernel_size": 2.0}, "kernel_size", "2.0"),
    ({"kernel_size": 2, "stride": 0}, "stride", "0"),
    ({"kernel_size": 2, "padding": -1}, "padding", "-1"),
    ({"kernel_size": 2, "dilation": 0}, "dilation", "0"),
    ({"kernel_size": 2, "ceil_mode": "yes"}, "ceil_mode", "'yes'"),
])
def test_bad_hyperparameters_raise_config_error(kwargs, key, quoted):
    with pytest.raises(ConfigError) as err:
        MaxPool2d(**kwargs)
    assert err.value.key == key and quoted in str(err.value)


@pytest.mark.parametrize("cls, kwargs", [
    (MaxPool2d, {"kernel_size": 3, "padding": 2}),
    (MaxPool2d, {"kernel_size": 3, "padding": 2, "dilation": 2}),  # PyTorch refuses this too
    (AvgPool2d, {"kernel_size": [4, 2], "padding": [1, 2]}),
])
def test_padding_more_than_half_the_kernel_is_refused(cls, kwargs):
    with pytest.raises(ConfigError, match="at most half") as err:
        cls(**kwargs)
    assert err.value.key == "padding"
    assert str(kwargs["padding"]) in str(err.value) and str(kwargs["kernel_size"]) in str(err.value)


@pytest.mark.parametrize("value", [0, -1, "2", float("nan"), float("inf"), None, True])
def test_bad_norm_type(value):
    with pytest.raises(ConfigError) as err:
        LPPool2d(value, 2)
    assert err.value.key == "norm_type"


def test_bad_count_include_pad():
    with pytest.raises(ConfigError, match="count_include_pad"):
        AvgPool2d(2, count_include_pad=1)


def test_window_larger_than_input_is_a_shape_error():
    with pytest.raises(ShapeError, match="does not fit the 2x5 input") as err:
        MaxPool2d(3).output_shape((1, 2, 5))
    assert err.value.key == "kernel_size"
    # ceil_mode lets one window overhang the input, exactly as PyTorch (fixture max_ceil_big_window)
    assert MaxPool2d(3, ceil_mode=True).output_shape((1, 2, 2)) == (1, 1, 1)


def test_dilated_window_of_only_padding_is_a_shape_error():
    # PyTorch returns -inf here; that is never what the user wants.
    with pytest.raises(ShapeError, match="only padding"):
        MaxPool2d(2, 2, 1, dilation=3, ceil_mode=True).output_shape((1, 1, 1))


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d])
def test_flat_input_is_a_shape_error(cls):
    layer = cls(2) if cls in (MaxPool2d, AvgPool2d) else cls()
    with pytest.raises(ShapeError, match="needs a"):
        layer.output_shape((12,))


@pytest.mark.parametrize("make", [lambda: MaxPool2d(2), lambda: MaxPool2d(3, 2, 1),
                                  lambda: MaxPool2d(1), GlobalMaxPool2d])
def test_backward_after_an_eval_forward_equals_the_training_one(make):
    """An eval forward skips the argmax but keeps its input: backward then (gradients of an
    evaluation, as PyTorch allows) finds the maxima and gives the training backward's dx,
    ties included; with no forward at all it is a DataError."""
    layer = build_layer(make(), (2, 6, 6))
    rng = np.random.default_rng(0)
    x = to_internal(rng.integers(-2, 3, (3, 2, 6, 6)).astype(float))  # many ties
    dy = rng.standard_normal(layer.forward(x, train=True).shape)
    want = layer.backward(dy)
    layer.forward(x, train=False)
    np.testing.assert_array_equal(layer.backward(dy), want)
    with pytest.raises(DataError, match=r"backward needs a forward pass first"):
        build_layer(make(), (2, 6, 6)).backward(dy)


def test_model_backward_after_an_eval_forward_is_the_eval_gradient():
    model = model_from_entries((1, 4, 4), [{"type": "maxpool2d", "kernel_size": 2},
                                           {"type": "flatten"}, {"type": "dense", "units": 2}],
                               dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 1, 4, 4))
    model.forward(x, train=True)
    want = model.backward(np.ones((2, 2)))
    model.forward(x, train=False)
    np.testing.assert_array_equal(model.backward(np.ones((2, 2))), want)


def test_model_errors_name_the_layer():
    with pytest.raises(ShapeError) as err:
        model_from_entries((1, 4, 4), [{"type": "maxpool2d", "kernel_size": 2, "name": "p1"},
                                       {"type": "maxpool2d", "kernel_size": 3}])
    assert "layer 2" in str(err.value) and "2x2 input" in str(err.value)
    with pytest.raises(ConfigError, match="needs 'norm_type'"):
        make_layers({"type": "lppool2d", "kernel_size": 2})


@pytest.mark.parametrize("make", [lambda: MaxPool2d(2), lambda: MaxPool2d(3, 2, 1),
                                  lambda: AvgPool2d(3, 2, 1), lambda: LPPool2d(2, 2),
                                  GlobalAvgPool2d, GlobalMaxPool2d])
def test_outputs_and_gradients_are_fresh_arrays(make):
    """Pools declare fresh_output/fresh_input_grad: the next layer may overwrite them."""
    layer = build_layer(make(), (2, 6, 6))
    assert layer.fresh_output and layer.fresh_input_grad
    rng = np.random.default_rng(0)
    x = to_internal(rng.uniform(0.1, 1.0, (3, 2, 6, 6)))
    y = layer.forward(x, train=True)
    dy = rng.standard_normal(y.shape)
    expected = layer.backward(dy.copy())
    y2 = layer.forward(x, train=True)
    assert not np.shares_memory(y2, x)
    y2[...] = np.nan  # the next layer overwrites our output in place
    dx = layer.backward(dy)
    assert not np.shares_memory(dx, dy) and not np.shares_memory(dx, x)
    np.testing.assert_array_equal(dx, expected)
