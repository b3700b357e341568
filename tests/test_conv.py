"""conv2d: gradients, a naive reference, scipy agreement, equivariance, shapes, init, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
from gradcheck import build_layer, check_layer_gradients
from hypothesis import given
from hypothesis import strategies as st

from cnncli.errors import ConfigError, ShapeError
from cnncli.nn import kernels
from cnncli.nn.layers.base import from_internal, to_internal
from cnncli.nn.layers.conv import Conv2d
from cnncli.nn.model import make_layers
from cnncli.nn.splitter import SerialSplitter


def naive_conv(x, weight, bias, stride, pads, dilation, groups):
    """Direct loops over outputs, PyTorch Conv2d semantics; pads = ((top, bottom), (left, right)).
    """
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    oh = (xp.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (xp.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    og = o // groups
    y = np.zeros((n, o, oh, ow))
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg,
                           i * stride[0]:i * stride[0] + dilation[0] * (kh - 1) + 1:dilation[0],
                           j * stride[1]:j * stride[1] + dilation[1] * (kw - 1) + 1:dilation[1]]
                y[:, oc, i, j] = np.sum(patch * weight[oc], axis=(1, 2, 3))
        if bias is not None:
            y[:, oc] += bias[oc]
    return y


def run(layer, x_nchw):
    return from_internal(layer.forward(to_internal(x_nchw)))


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    c = groups * draw(st.integers(1, 2))
    o = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                             st.sampled_from(["same", "valid"])))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    min_h, min_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    h, w = draw(st.integers(min_h, min_h + 4)), draw(st.integers(min_w, min_w + 4))
    n = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    kwargs = dict(out_channels=o, kernel_size=(kh, kw), stride=stride, padding=padding,
                  dilation=(dh, dw), groups=groups, bias=bias)
    return kwargs, (n, c, h, w), draw(st.integers(0, 2**16))


@given(conv_cases())
def test_gradients_match_finite_differences(case):
    kwargs, shape, seed = case
    layer = build_layer(Conv2d(**kwargs), shape[1:], seed=seed)
    x = np.random.default_rng(seed).standard_normal(shape)
    check_layer_gradients(layer, x, seed=seed)


@given(conv_cases())
def test_forward_matches_naive_reference_and_output_shape(case):
    kwargs, shape, seed = case
    layer = build_layer(Conv2d(**kwargs), shape[1:], seed=seed)
    x = np.random.default_rng(seed).standard_normal(shape)
    y = run(layer, x)
    ref = naive_conv(x, layer.params["weight"], layer.params.get("bias"), layer.stride,
                     layer._pads, layer.dilation, layer.groups)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert y.shape[1:] == layer.output_shape(shape[1:])
    kh, kw = layer.kernel_size
    assert layer.num_params() == (kh * kw * shape[1] // layer.groups + kwargs["bias"]) * \
        kwargs["out_channels"]
    assert layer.num_params() == sum(p.size for p in layer.params.values())


def test_same_padding_is_asymmetric_for_even_kernels_like_pytorch():
    layer = Conv2d(out_channels=1, kernel_size=(4, 2), padding="same", dilation=(1, 3))
    # total d*(k-1): rows 3 -> (1, 2), cols 3 -> (1, 2)
    assert layer._pads == ((1, 2), (1, 2))
    assert layer.output_shape((1, 5, 6)) == (1, 5, 6)
    assert layer.geometry((1, 5, 6)) == ((4, 2), (1, 1), (1, 1), (1, 3))


def tf_same_pads(size, k, s, d):
    """TensorFlow's 'SAME' rule, written out independently of the layer."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return out, (total // 2, total - total // 2)


@pytest.mark.parametrize("kernel, stride, dilation, hw", [
    ((3, 5), (1, 2), (1, 1), (9, 10)),   # docs/layers-conv.md's example
    ((3, 3), (2, 2), (1, 1), (8, 7)),
    ((4, 2), (3, 2), (1, 2), (10, 9)),
    ((1, 1), (2, 3), (1, 1), (5, 7)),    # total padding clipped at 0
    ((5, 3), (2, 2), (2, 1), (4, 4)),    # dilated span past the input
])
def test_same_padding_with_stride_is_tensorflows_rule(kernel, stride, dilation, hw):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, *hw))
    layer = build_layer(Conv2d(out_channels=3, kernel_size=kernel, stride=stride,
                               padding="same", dilation=dilation), (2, *hw))
    (oh, ph), (ow, pw) = (tf_same_pads(n, k, s, d) for n, k, s, d in
                          zip(hw, kernel, stride, dilation, strict=True))
    assert layer.output_shape((2, *hw)) == (3, oh, ow)
    ref = naive_conv(x, layer.params["weight"], layer.params["bias"], stride, (ph, pw),
                     dilation, 1)  # an explicitly padded input
    y = run(layer, x)
    assert y.shape == ref.shape == (2, 3, oh, ow)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    check_layer_gradients(layer, x)
    assert layer.geometry((2, *hw)) == (kernel, stride, (ph[0], pw[0]), dilation)
    assert " psame" in layer.describe()


def test_same_padding_with_stride_from_a_config_is_accepted(tmp_path):
    from cnncli.config import check_config

    path = tmp_path / "net.yaml"
    path.write_text("model:\n  input_shape: [3, 9, 10]\n  layers:\n"
                    "    - {type: conv2d, filters: 32, kernel_size: [3, 5], stride: [1, 2], "
                    "padding: same}\n    - {type: flatten}\n    - {type: dense, units: 2}\n")
    assert check_config(path).shapes[1] == (32, 9, 5)


def test_scipy_correlate2d_agrees_and_convolve2d_does_not():
    rng = np.random.default_rng(1)
    image = rng.standard_normal((9, 8))
    kernel = np.arange(6.0).reshape(2, 3) ** 2 - 3  # not symmetric under a 180-degree flip
    layer = build_layer(Conv2d(out_channels=1, kernel_size=(2, 3), bias=False), (1, 9, 8))
    layer.params["weight"][...] = kernel
    y = run(layer, image[None, None])[0, 0]
    np.testing.assert_allclose(y, scipy.signal.correlate2d(image, kernel, mode="valid"),
                               rtol=1e-12, atol=1e-12)
    assert not np.allclose(y, scipy.signal.convolve2d(image, kernel, mode="valid"))


@given(st.integers(-2, 2), st.integers(-2, 2), st.integers(0, 2**16))
def test_translation_equivariance_at_stride_one(dy, dx, seed):
    rng = np.random.default_rng(seed)
    layer = build_layer(Conv2d(out_channels=2, kernel_size=3, padding=1, dilation=1,
                               bias=True), (2, 12, 12), seed=seed)
    x = np.zeros((1, 2, 12, 12))
    x[:, :, 4:8, 4:8] = rng.standard_normal((1, 2, 4, 4))
    shifted = np.roll(x, (dy, dx), axis=(2, 3))  # the content never reaches the border
    y, ys = run(layer, x), run(layer, shifted)
    np.testing.assert_allclose(np.roll(y, (dy, dx), axis=(2, 3))[:, :, 3:9, 3:9],
                               ys[:, :, 3:9, 3:9], rtol=1e-12, atol=1e-12)


def _pieces_of(limit: int) -> SerialSplitter:
    """The plain splitter with im2col pieces of at most ``limit`` bytes."""
    splitter = SerialSplitter()
    splitter.im2col_max_bytes = limit
    return splitter


def test_chunked_im2col_equals_unchunked():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 11, 9))
    dy = None
    results = []
    row_bytes = 2 * 3 * 3 * 5 * 3 * 8  # C*kh*kw*W'*N float64s per output row
    # one piece; one row per piece; pieces of 7 rows and a shorter 4-row tail
    for limit in (SerialSplitter.im2col_max_bytes, 1, 7 * row_bytes):
        layer = build_layer(Conv2d(out_channels=4, kernel_size=3, stride=(1, 2), padding=1,
                                   groups=2), (2, 11, 9), seed=5)
        layer.splitter = _pieces_of(limit)
        y = layer.forward(to_internal(x), train=True)
        dy = rng.standard_normal(y.shape) if dy is None else dy
        layer.zero_grad()
        dx = layer.backward(dy.copy())
        results.append((y, dx, layer.grads["weight"].copy(), layer.grads["bias"].copy()))
    assert kernels.row_chunks(11, row_bytes, 1) == [(r, 1) for r in range(11)]
    assert kernels.row_chunks(11, row_bytes, 7 * row_bytes) == [(0, 7), (7, 4)]
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_weight_gradient_equals_the_plain_product(groups):
    # (cols @ dy.T).T sums the same products as dy @ cols.T, in another order.
    rng = np.random.default_rng(6)
    x, results = rng.standard_normal((4, 4, 9, 7)), []
    for least in (None, 0):
        layer = build_layer(Conv2d(out_channels=6, kernel_size=3, padding=1, groups=groups),
                            (4, 9, 7), seed=2)
        layer.splitter = SerialSplitter()
        layer.splitter.transposed_weight_grad_macs = least
        y = layer.forward(to_internal(x), train=True)
        dy = rng.standard_normal(y.shape) if not results else results[0][0]
        layer.zero_grad()
        layer.backward(dy, need_dx=False)
        results.append((dy, layer.grads["weight"].copy()))
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-12, atol=1e-12)
    assert np.abs(results[0][1]).sum() > 0


def test_reused_padding_buffer_keeps_a_zero_border_when_the_input_size_changes():
    # 'same' with stride 2 pads 6 rows as 0 + 1 and 5 rows as 1 + 1: the same 7-row buffer
    # with the input at another offset, so the zero border must be laid again.
    layer = build_layer(Conv2d(out_channels=2, kernel_size=3, stride=2, padding="same"),
                        (1, 6, 6), seed=1)
    weight, bias = layer.params["weight"], layer.params["bias"]
    rng = np.random.default_rng(4)
    for size in (6, 5, 5, 6, 6):
        x = rng.standard_normal((2, 1, size, size)) + 10.0  # no zeros that could hide stale rows
        pads = layer._pads_for(size, size)
        np.testing.assert_allclose(run(layer, x), naive_conv(x, weight, bias, (2, 2), pads,
                                                             (1, 1), 1), rtol=1e-10, atol=1e-10)
        dy = rng.standard_normal(layer.forward_output_shape)
        layer.zero_grad()
        dx = from_internal(layer.backward(dy))
        reference = build_layer(Conv2d(out_channels=2, kernel_size=3, stride=2, padding="same"),
                                (1, size, size), seed=1)
        reference.forward(to_internal(x), train=True)
        np.testing.assert_allclose(dx, from_internal(reference.backward(dy)), rtol=1e-12)
        np.testing.assert_allclose(layer.grads["weight"], reference.grads["weight"],
                                   rtol=1e-10, atol=1e-10)


def test_buffer_pool_bordered_buffer_is_zeroed_when_new_or_moved():
    pool = kernels.BufferPool()
    buf = pool.get_bordered("pad", (1, 4, 4, 1), np.float32, (2, 2, 1, 1))
    assert not buf.any()
    buf[:, 1:3, 1:3] = 7.0
    assert pool.get_bordered("pad", (1, 4, 4, 1), np.float32, (2, 2, 1, 1)) is buf
    assert buf[:, 1:3, 1:3].all()  # the same interior: left as it is (the caller overwrites)
    assert not pool.get_bordered("pad", (1, 4, 4, 1), np.float32, (2, 2, 0, 0)).any()
    pool.get("pad", (1, 4, 4, 1), np.float32)[...] = 1.0  # a plain get hands the contents over
    assert not pool.get_bordered("pad", (1, 4, 4, 1), np.float32, (2, 2, 0, 0)).any()


def test_need_dx_false_still_accumulates_weight_gradients():
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6))
    layer = build_layer(Conv2d(out_channels=2, kernel_size=3), (1, 6, 6))
    y = layer.forward(to_internal(x), train=True)
    assert layer.backward(np.ones_like(y), need_dx=False) is None
    twice = layer.grads["weight"].copy()
    layer.backward(np.ones_like(y), need_dx=False)
    np.testing.assert_allclose(layer.grads["weight"], 2 * twice)
    assert np.abs(twice).sum() > 0


def test_float32_matches_float64():
    x = np.random.default_rng(0).standard_normal((4, 3, 10, 10))
    l64 = build_layer(Conv2d(out_channels=5, kernel_size=3, padding="same"), (3, 10, 10))
    l32 = build_layer(Conv2d(out_channels=5, kernel_size=3, padding="same"), (3, 10, 10),
                      dtype=np.float32)
    for name, value in l64.params.items():  # float32 weights are drawn in float32: copy them
        l32.params[name][...] = value
    y32 = run(l32, x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, run(l64, x), rtol=1e-4, atol=1e-5)


def test_macs_describe_and_filters_alias():
    layer = make_layers({"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": 1,
                         "activation": "relu"})
    conv = layer[0]
    assert isinstance(conv, Conv2d) and conv.out_channels == 8 and len(layer) == 2
    assert conv.macs((3, 32, 32)) == 8 * 32 * 32 * 3 * 9
    assert conv.describe() == "3x3 s1 p1"
    assert Conv2d(4, (3, 5), stride=2, dilation=2, groups=2).describe() == "3x5 s2 p0 d2 g2"
    assert Conv2d(4, 2, padding="same").describe() == "2x2 s1 psame"
    assert Conv2d(4, 3, padding=[1, 2], stride=[1, 2]).get_config()["padding"] == [1, 2]


@pytest.mark.parametrize("scheme", ["default", "he_normal", "he_uniform", "glorot_uniform",
                                    "glorot_normal"])
def test_init_statistics(scheme):
    c, o, k = 16, 64, 3
    layer = build_layer(Conv2d(out_channels=o, kernel_size=k, init=scheme, groups=2),
                        (c, 8, 8), seed=7)
    w = layer.params["weight"]
    fan_in, fan_out = c // 2 * k * k, o * k * k  # groups divide fan_in only, as in PyTorch
    if scheme == "default":
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(w).max() <= bound and np.abs(layer.params["bias"]).max() <= bound
        expected = bound / math.sqrt(3)
    else:
        assert not layer.params["bias"].any()
        expected = {"he_normal": math.sqrt(2 / fan_in), "he_uniform": math.sqrt(2 / fan_in),
                    "glorot_uniform": math.sqrt(2 / (fan_in + fan_out)),
                    "glorot_normal": math.sqrt(2 / (fan_in + fan_out))}[scheme]
    assert abs(w.std() / expected - 1) < 0.05  # 4608 draws: std error about 1-2%


def test_glorot_uniform_grouped_fan_out_is_not_divided_by_groups():
    # torch.nn.init._calculate_fan_in_and_fan_out and Keras: fan_out = out_channels * kh * kw.
    c, o, k, groups = 32, 128, 5, 2
    layer = build_layer(Conv2d(out_channels=o, kernel_size=k, init="glorot_uniform",
                               groups=groups), (c, 8, 8), seed=11)
    w = layer.params["weight"]
    fan_in, fan_out = c // groups * k * k, o * k * k  # 400 and 3200
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert w.shape == (o, c // groups, k, k)
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound  # 51,200 draws reach the edge of the range
    # Relative std error of the sample std is about 0.2% here; fan_out / groups would be +34%.
    assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.02


@pytest.mark.parametrize("kwargs, key", [
    (dict(out_channels=0, kernel_size=3), "out_channels"),
    (dict(out_channels=-2, kernel_size=3), "out_channels"),
    (dict(out_channels=2.5, kernel_size=3), "out_channels"),
    (dict(out_channels=4, kernel_size=0), "kernel_size"),
    (dict(out_channels=4, kernel_size=[3, -1]), "kernel_size"),
    (dict(out_channels=4, kernel_size=[3, 3, 3]), "kernel_size"),
    (dict(out_channels=4, kernel_size=3, stride=0), "stride"),
    (dict(out_channels=4, kernel_size=3, dilation=0), "dilation"),
    (dict(out_channels=4, kernel_size=3, padding=-1), "padding"),
    (dict(out_channels=4, kernel_size=3, padding="full"), "padding"),
    (dict(out_channels=4, kernel_size=3, groups=0), "groups"),
    (dict(out_channels=4, kernel_size=3, groups=3), "groups"),
    (dict(out_channels=4, kernel_size=3, groups=2, in_channels=3), "groups"),
    (dict(out_channels=4, kernel_size=3, bias="yes"), "bias"),
    (dict(out_channels=4, kernel_size=3, init="xavier"), "init"),
    (dict(out_channels=4, kernel_size=3, in_channels=0), "in_channels"),
])
def test_bad_hyperparameters_raise_config_error(kwargs, key):
    with pytest.raises(ConfigError) as err:
        Conv2d(**kwargs)
    assert err.value.key == key
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("kwargs, shape, key, words", [
    (dict(out_channels=4, kernel_size=3, in_channels=3), (1, 8, 8), "in_channels", ["3", "1"]),
    (dict(out_channels=4, kernel_size=3, groups=2), (3, 8, 8), "groups", ["3", "2"]),
    (dict(out_channels=4, kernel_size=5), (1, 4, 9), "kernel_size", ["5", "4"]),
    (dict(out_channels=4, kernel_size=3, dilation=3), (1, 6, 6), "kernel_size", ["7", "6"]),
    (dict(out_channels=4, kernel_size=3), (10,), None, ["10"]),
])
def test_bad_input_shapes_raise_shape_error(kwargs, shape, key, words):
    layer = Conv2d(**kwargs)
    with pytest.raises(ShapeError) as err:
        layer.output_shape(shape)
    assert err.value.key == key
    assert all(word in str(err.value) for word in words)
    with pytest.raises(ShapeError):
        layer.build(shape, np.random.default_rng(0))
