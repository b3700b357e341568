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
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise DataError(f"logits must have shape (N, classes) with N, classes >= 1, got "
                        f"{tuple(logits.shape)}")
    n, k = logits.shape
    labels = _check_labels(labels, n, k)
    eps = _check_smoothing(label_smoothing)

    logp = log_softmax(logits)
    rows = np.arange(n)
    picked = logp[rows, labels]
    per_sample = -(1 - eps) * picked
    if eps:
        per_sample = per_sample - (eps / k) * logp.sum(axis=1)
    loss = float(per_sample.mean(dtype=np.float64))

    # d/dz of -sum(target * log_softmax(z)) is softmax(z) - target (targets sum to 1).
    grad = np.exp(logp)
    if eps:
        grad -= grad.dtype.type(eps / k)
    grad[rows, labels] -= grad.dtype.type(1 - eps)
    grad /= grad.dtype.type(n)
    return loss, grad


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
