"""Softmax cross-entropy: PyTorch reference, gradient, stability, smoothing, bad labels."""

from pathlib import Path

import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st

from cnncli.errors import ConfigError, DataError
from cnncli.nn.losses import (
    checked,
    cross_entropy_loss,
    cross_entropy_rows_gradient,
    log_softmax,
    softmax,
    softmax_cross_entropy,
)

REF = np.load(Path(__file__).parent / "fixtures" / "dense_reference.npz", allow_pickle=False)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35])
def test_matches_pytorch_cross_entropy(smoothing):
    loss, grad = softmax_cross_entropy(REF["loss.logits"], REF["loss.labels"], smoothing)
    assert loss == pytest.approx(float(REF[f"loss.{smoothing}.value"]), rel=1e-13)
    np.testing.assert_allclose(grad, REF[f"loss.{smoothing}.dlogits"], rtol=1e-12, atol=1e-16)


@given(n=st.integers(1, 5), k=st.integers(1, 6), smoothing=st.sampled_from([0.0, 0.2, 1.0]),
       seed=st.integers(0, 10_000))
def test_gradient_matches_finite_differences(n, k, smoothing, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, k)) * 3
    labels = rng.integers(0, k, n)
    _, grad = softmax_cross_entropy(logits, labels, smoothing)
    numeric = np.zeros_like(logits)
    eps = 1e-6
    for idx in np.ndindex(logits.shape):
        up, down = logits.copy(), logits.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (softmax_cross_entropy(up, labels, smoothing)[0]
                        - softmax_cross_entropy(down, labels, smoothing)[0]) / (2 * eps)
    # Central differences carry a rounding error of about 1e-16 * |loss| / eps, over 1e-9 for
    # losses above ~5 (seed 492 found one): atol 1e-8 covers it, rtol 1e-6 does the checking.
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_label_smoothing_matches_the_target_formula():
    rng = np.random.default_rng(1)
    logits, labels, eps = rng.standard_normal((7, 4)), rng.integers(0, 4, 7), 0.15
    target = (1 - eps) * np.eye(4)[labels] + eps / 4
    expected = -(target * scipy.special.log_softmax(logits, axis=1)).sum(axis=1).mean()
    assert softmax_cross_entropy(logits, labels, eps)[0] == pytest.approx(expected, rel=1e-14)


def test_large_logits_stay_finite():
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grad = softmax_cross_entropy(logits, np.array([2, 0]), 0.1)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert grad.dtype == np.float32
    target = 0.9 * np.eye(3)[[2, 0]] + 0.1 / 3
    expected = -(target * scipy.special.log_softmax(logits.astype(np.float64), axis=1)).sum(1)
    assert loss == pytest.approx(expected.mean(), rel=1e-6)


def test_softmax_helpers_match_scipy():
    x = np.random.default_rng(2).standard_normal((5, 9)) * 50
    np.testing.assert_allclose(log_softmax(x), scipy.special.log_softmax(x, axis=-1),
                               rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(softmax(x), scipy.special.softmax(x, axis=-1), rtol=1e-12,
                               atol=1e-300)
    np.testing.assert_allclose(softmax(x, axis=0).sum(axis=0), 1.0, rtol=1e-14)


@pytest.mark.parametrize("labels, message", [
    ([0, 1, 5], "label 5 is out of range for 5 classes"),
    ([0, -1, 2], "label -1 is out of range"),
    ([0, 1], r"labels must have shape \(3,\)"),
    ([[0, 1, 2]], r"labels must have shape \(3,\)"),
    (np.array([0.5, 1, 2]), "labels must be integer class indices"),
    (np.array(["a", "b", "c"]), "labels must be integer class indices")])
def test_bad_labels_are_data_errors(labels, message):
    with pytest.raises(DataError, match=message):
        softmax_cross_entropy(np.zeros((3, 5)), labels)


def test_bad_logits_and_smoothing():
    with pytest.raises(DataError, match=r"logits must have shape \(N, classes\)"):
        softmax_cross_entropy(np.zeros(5), [0])
    for bad in (-0.1, 1.5, "0.1", None):
        with pytest.raises(ConfigError) as err:
            softmax_cross_entropy(np.zeros((1, 2)), [0], bad)
        assert err.value.key == "label_smoothing"


def test_integer_logits_give_the_same_result_as_float_logits():
    ints = np.array([[1, 2, 3], [0, -4, 2]])
    a = softmax_cross_entropy(ints, [2, 0], 0.2)
    b = softmax_cross_entropy(ints.astype(np.float64), [2, 0], 0.2)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@given(n=st.integers(2, 70), k=st.integers(1, 12), cut=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**16))
def test_a_part_of_a_batch_gets_the_whole_batchs_gradient_rows_bit_for_bit(dtype, smoothing, n,
                                                                          k, cut, seed):
    """What each process of a split batch computes for its own rows (processes.train_batch)."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, k)) * 5).astype(dtype)
    labels = rng.integers(0, k, size=n)
    loss, grad = softmax_cross_entropy(logits, labels, smoothing)
    _, checked_labels, eps = checked(logits, labels, smoothing)
    split = int(cut * n)
    for rows in (slice(0, split), slice(split, n)):
        part = cross_entropy_rows_gradient(np.ascontiguousarray(logits[rows]),
                                           checked_labels[rows], eps, n)
        np.testing.assert_array_equal(part, grad[rows])
    assert cross_entropy_loss(logits, checked_labels, eps) == loss
