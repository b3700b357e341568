"""Mini-batches: seeded shuffling, full coverage per epoch, crop and flip augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnncli.config import AugmentConfig
from cnncli.data import iterate_batches
from cnncli.errors import ConfigError


def _data(n, c=2, h=5, w=6):
    # each image's pixels encode its index, so a batch row says which sample it is
    x = np.arange(n * c * h * w, dtype=np.float32).reshape(n, c, h, w)
    return x, np.arange(n, dtype=np.int64)


@given(n=st.integers(1, 50), batch=st.integers(1, 20), seed=st.integers(0, 2**32 - 1))
def test_every_sample_once_per_epoch_and_pairs_stay_together(n, batch, seed):
    x, y = _data(n)
    batches = list(iterate_batches(x, y, batch, np.random.default_rng(seed)))
    sizes = [len(yb) for _, yb in batches]
    assert sizes == [batch] * (n // batch) + ([n % batch] if n % batch else [])
    seen = np.concatenate([yb for _, yb in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    for xb, yb in batches:
        np.testing.assert_array_equal(xb, x[yb])
        assert xb.flags.c_contiguous


def test_seeded_rng_is_deterministic_and_epochs_differ():
    x, y = _data(40)
    run = lambda rng: [yb for _, yb in iterate_batches(x, y, 8, rng)]  # noqa: E731
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    first_a, first_b = run(a), run(b)
    for u, v in zip(first_a, first_b, strict=True):
        np.testing.assert_array_equal(u, v)
    second = np.concatenate(run(a))
    assert not np.array_equal(second, np.concatenate(first_a))


def test_no_shuffle_keeps_order():
    x, y = _data(7)
    got = np.concatenate([yb for _, yb in iterate_batches(x, y, 3, np.random.default_rng(0),
                                                          shuffle=False)])
    np.testing.assert_array_equal(got, y)


def _shift_of(crop, image, pad):
    """The (dy, dx) such that crop equals image shifted by it, with zero fill; None if none."""
    h, w = image.shape[-2:]
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            if np.array_equal(padded[:, dy:dy + h, dx:dx + w], crop):
                return dy - pad, dx - pad
    return None


@given(pad=st.integers(1, 3), seed=st.integers(0, 1000))
def test_random_crop_shifts_content_by_at_most_pad(pad, seed):
    x, y = _data(9)
    x += 1  # no zero pixels inside the images, so zero fill is recognisable
    shifts = set()
    for xb, yb in iterate_batches(x, y, 4, np.random.default_rng(seed),
                                  augment=AugmentConfig(random_crop=pad, horizontal_flip=False)):
        assert xb.shape[1:] == x.shape[1:]
        for crop, index in zip(xb, yb, strict=True):
            shift = _shift_of(crop, x[index], pad)
            assert shift is not None and max(map(abs, shift)) <= pad
            shifts.add(shift)
    assert len(shifts) > 1  # the offsets really vary


def test_horizontal_flip_reverses_width_for_about_half():
    x, y = _data(400, c=1, h=2, w=3)
    flipped = 0
    for xb, yb in iterate_batches(x, y, 64, np.random.default_rng(0),
                                  augment=AugmentConfig(random_crop=0, horizontal_flip=True)):
        mirrored = np.all(xb == x[yb][..., ::-1], axis=(1, 2, 3))
        same = np.all(xb == x[yb], axis=(1, 2, 3))
        assert np.all(mirrored | same)
        flipped += int(mirrored.sum())
    assert 150 < flipped < 250


def test_disabled_augmentation_returns_the_images_unchanged():
    x, y = _data(10)
    for xb, yb in iterate_batches(x, y, 4, np.random.default_rng(0),
                                  augment=AugmentConfig(random_crop=0, horizontal_flip=False)):
        np.testing.assert_array_equal(xb, x[yb])


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_batch_size(bad):
    x, y = _data(3)
    with pytest.raises(ConfigError, match="batch_size"):
        list(iterate_batches(x, y, bad, np.random.default_rng(0)))


def test_a_lone_final_sample_joins_the_previous_batch():
    x = np.arange(7, dtype=np.float32).reshape(7, 1, 1, 1)
    y = np.arange(7)
    rng = np.random.default_rng(0)
    sizes = [len(yb) for _, yb in iterate_batches(x, y, 3, rng, min_last_batch=2)]
    assert sizes == [3, 4]
    seen = np.concatenate([yb for _, yb in iterate_batches(x, y, 3, rng, min_last_batch=2)])
    assert sorted(seen) == list(range(7))
    assert [len(yb) for _, yb in iterate_batches(x, y, 3, rng)] == [3, 3, 1]
