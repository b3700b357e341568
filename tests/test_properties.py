"""Properties from the course notes that hold for whole stacks of layers."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cnncli.nn.layers.base import to_internal
from cnncli.nn.model import model_from_entries

BLOCK = 6  # one spike per 6x6 block: its 3x3 conv response never meets a neighbour's


def conv_pool_model(out_channels, rng):
    """conv 3x3 (padding 1) whose kernels have a positive centre and negative surround, then a
    2x2 max pool. A lone spike then gives one positive peak at its own position, negatives
    around it, and the bias everywhere else."""
    model = model_from_entries((1, 12, 12), [
        {"type": "conv2d", "filters": out_channels, "kernel_size": 3, "padding": 1},
        {"type": "maxpool2d", "kernel_size": 2}], dtype=np.float64)
    conv = model.layers[0]
    weight = -rng.uniform(0.1, 1.0, conv.params["weight"].shape)
    weight[:, :, 1, 1] = rng.uniform(0.5, 2.0, (out_channels, 1))
    conv.params["weight"][...] = weight
    conv.params["bias"][...] = rng.uniform(-1.0, 1.0, out_channels)
    return model


def spikes(rng, n, size, shift):
    """Sparse images: in some 6x6 blocks one positive spike inside the block's first 2x2 pooling
    window, at a place from which ``shift`` keeps it inside that window."""
    x = np.zeros((n, 1, size, size))
    for img in range(n):
        for bi in range(size // BLOCK):
            for bj in range(size // BLOCK):
                if rng.random() < 0.3:
                    continue
                # window offset 0 may move by +1, offset 1 by -1, either by 0
                dr = (0 if shift[0] == 1 else 1 if shift[0] == -1 else rng.integers(2))
                dc = (0 if shift[1] == 1 else 1 if shift[1] == -1 else rng.integers(2))
                x[img, 0, bi * BLOCK + dr, bj * BLOCK + dc] = rng.uniform(0.5, 3.0)
    return x


def shifted(x, shift):
    return np.roll(x, shift, axis=(2, 3))  # spikes never reach the border, so no wrap-around


@given(shift=st.sampled_from([(0, 1), (1, 0), (1, 1), (-1, 0), (0, -1), (-1, 1), (1, -1)]),
       channels=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_conv_then_maxpool_ignores_shifts_that_stay_inside_pool_windows(shift, channels, seed):
    rng = np.random.default_rng(seed)
    model = conv_pool_model(channels, rng)
    x = spikes(rng, 2, 12, shift)
    conv, pool = model.layers
    before = conv.forward(to_internal(x))
    after = conv.forward(to_internal(shifted(x, shift)))
    if x.any():
        assert not np.array_equal(before, after)  # the conv output itself moved
    np.testing.assert_array_equal(pool.forward(before), pool.forward(after))
    np.testing.assert_array_equal(model.forward(x), model.forward(shifted(x, shift)))


def test_shift_out_of_a_pool_window_changes_the_output():
    """The control: the same construction, but the spike crosses into the next window."""
    rng = np.random.default_rng(0)
    model = conv_pool_model(2, rng)
    x = np.zeros((1, 1, 12, 12))
    x[0, 0, 1, 1] = 2.0  # second row and column of the first window
    np.testing.assert_array_equal(model.forward(x), model.forward(shifted(x, (-1, -1))))
    assert not np.array_equal(model.forward(x), model.forward(shifted(x, (1, 0))))
