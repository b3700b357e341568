"""Softmax cross-entropy loss, as ``torch.nn.CrossEntropyLoss`` (mean reduction)."""

from __future__ import annotations

import numbers

import numpy as np

from cnncli.errors import ConfigError, DataError


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(softmax(x)) via log-sum-exp, finite for any finite logits."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)), shifted by the max so exp never overflows."""
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_cross_entropy(logits: np.ndarray, labels, label_smoothing: float = 0.0):
    """Mean cross-entropy of ``logits`` (N, K) against int ``labels`` (N,).

    Returns ``(loss, dlogits)``: a Python float and dL/dlogits shaped like the logits
    (float logits keep their dtype; integer logits give float64).
    Label smoothing targets ``(1 - eps) * onehot + eps / K``, exactly as PyTorch.
    """
    logits, labels, eps = checked(logits, labels, label_smoothing)
    logp = log_softmax(logits)
    return _mean_loss(logp, labels, eps), _gradient(logp, labels, eps, len(labels))


def checked(logits, labels, label_smoothing: float = 0.0):
    """(logits, labels as intp class indices, label smoothing as a float) after the checks
    ``softmax_cross_entropy`` makes: a DataError or ConfigError that says what is wrong."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise DataError(f"logits must have shape (N, classes) with N, classes >= 1, got "
                        f"{tuple(logits.shape)}")
    return (logits,) + checked_targets(labels, *logits.shape, label_smoothing)


def checked_targets(labels, n: int, k: int, label_smoothing: float = 0.0):
    """(labels, label smoothing) of ``checked`` for logits of shape (n, k)."""
    return _check_labels(labels, n, k), _check_smoothing(label_smoothing)


def cross_entropy_loss(logits: np.ndarray, labels: np.ndarray, label_smoothing: float) -> float:
    """``softmax_cross_entropy``'s loss alone; ``labels``, ``label_smoothing`` as ``checked``
    returns them."""
    return _mean_loss(log_softmax(np.asarray(logits)), labels, label_smoothing)


def cross_entropy_rows_gradient(logits: np.ndarray, labels: np.ndarray, label_smoothing: float,
                                batch: int) -> np.ndarray:
    """The rows of ``softmax_cross_entropy``'s dlogits for these rows of a batch of ``batch``
    images, bit for bit (every operation is per row but the division by the batch size), for
    a part of a batch computed on its own. ``labels``, ``label_smoothing``: as ``checked``
    returns them."""
    return _gradient(log_softmax(np.asarray(logits)), labels, label_smoothing, batch)


def _mean_loss(logp: np.ndarray, labels: np.ndarray, eps: float) -> float:
    picked = logp[np.arange(len(labels)), labels]
    per_sample = -(1 - eps) * picked
    if eps:
        per_sample = per_sample - (eps / logp.shape[1]) * logp.sum(axis=1)
    return float(per_sample.mean(dtype=np.float64))


def _gradient(logp: np.ndarray, labels: np.ndarray, eps: float, batch: int) -> np.ndarray:
    # d/dz of -sum(target * log_softmax(z)) is softmax(z) - target (targets sum to 1).
    grad = np.exp(logp)
    if eps:
        grad -= grad.dtype.type(eps / logp.shape[1])
    grad[np.arange(len(labels)), labels] -= grad.dtype.type(1 - eps)
    grad /= grad.dtype.type(batch)
    return grad


def _check_labels(labels, n: int, k: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise DataError(f"labels must have shape ({n},) to match the logits, got "
                        f"{tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) \
                and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise DataError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= k):
        bad = labels[(labels < 0) | (labels >= k)][0]
        raise DataError(f"label {int(bad)} is out of range for {k} classes "
                        f"(labels must be 0..{k - 1})")
    return labels.astype(np.intp, copy=False)


def _check_smoothing(value) -> float:
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and np.isfinite(value) and 0.0 <= value <= 1.0)
    if not ok:
        raise ConfigError(f"label_smoothing must be a number in [0, 1], got {value!r}",
                          key="label_smoothing")
    return float(value)
