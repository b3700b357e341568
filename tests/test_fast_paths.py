"""Speed-only code paths give the same numbers as the general ones they replace."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnncli.nn.layers.base import to_internal
from cnncli.nn.layers.conv import Conv2d
from cnncli.nn.splitter import SerialSplitter


def _grads(layer, x, dy):
    layer.zero_grad()
    layer.forward(x.copy(), train=True)
    dx = layer.backward(dy.copy())
    return dx, {k: v.copy() for k, v in layer.grads.items()}


@given(c=st.integers(1, 5), o=st.integers(1, 5), k=st.integers(1, 4), pad=st.integers(0, 3),
       size=st.integers(4, 9), n=st.integers(1, 3), same=st.booleans())
def test_conv_dx_by_correlation_matches_col2im(c, o, k, pad, size, n, same):
    layer = Conv2d(o, k, padding="same" if same else pad)
    layer.build((c, size, size), np.random.default_rng(0), np.float64)
    rng = np.random.default_rng(1)
    x = to_internal(rng.standard_normal((n, c, size, size)))
    out = layer.output_shape((c, size, size))
    dy = to_internal(rng.standard_normal((n,) + out))
    layer.forward(x, train=True)
    usable = layer._dx_by_correlation()
    fast_dx, fast_grads = _grads(layer, x, dy)
    layer._dx_by_correlation = lambda: False
    slow_dx, slow_grads = _grads(layer, x, dy)
    np.testing.assert_allclose(fast_dx, slow_dx, rtol=1e-12, atol=1e-12)
    for key in slow_grads:
        np.testing.assert_allclose(fast_grads[key], slow_grads[key], rtol=1e-12, atol=1e-12)
    # The fast path is taken where its conditions hold (and only there).
    expected = o <= c and max(layer._pads[0]) < k and max(layer._pads[1]) < k
    assert usable == expected


@pytest.mark.parametrize("limit", [1, 10_000, 1 << 30])
def test_conv_dx_by_correlation_in_row_chunks(limit):
    # Tiny chunk limits force one output row per im2col piece, including a shorter tail.
    layer = Conv2d(3, 3, padding=1)
    layer.splitter = SerialSplitter()
    layer.splitter.im2col_max_bytes = limit
    layer.build((4, 7, 7), np.random.default_rng(0), np.float64)
    rng = np.random.default_rng(2)
    x = to_internal(rng.standard_normal((2, 4, 7, 7)))
    dy = to_internal(rng.standard_normal((2, 3, 7, 7)))
    fast_dx, _ = _grads(layer, x, dy)
    layer._dx_by_correlation = lambda: False
    slow_dx, _ = _grads(layer, x, dy)
    np.testing.assert_allclose(fast_dx, slow_dx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("limit", [1, 1 << 30])
def test_conv_with_kept_im2col_views_equals_a_fresh_conv_step_after_step(padding, limit):
    """The im2col views a conv keeps between calls (kernels.Im2col) always read the current
    input: new values in the same padded buffer, a new input array (no padding), another
    batch size, in one piece or in row pieces; a copy of the layer starts without them."""
    import copy

    layer = Conv2d(3, 3, padding=padding)
    layer.splitter = SerialSplitter()
    layer.splitter.im2col_max_bytes = limit
    layer.build((2, 6, 6), np.random.default_rng(0), np.float64)
    rng = np.random.default_rng(5)
    for n in (2, 2, 3, 2):
        x = to_internal(rng.standard_normal((n, 2, 6, 6)))
        fresh = copy.deepcopy(layer)                 # no kept views
        assert fresh._im2col._state[0] is None
        y = layer.forward(x.copy(), train=True)
        np.testing.assert_array_equal(y, fresh.forward(x.copy(), train=True))
        dy = rng.standard_normal(y.shape)
        layer.zero_grad()
        fresh.zero_grad()
        np.testing.assert_array_equal(layer.backward(dy.copy()), fresh.backward(dy.copy()))
        np.testing.assert_array_equal(layer.grads["weight"], fresh.grads["weight"])
