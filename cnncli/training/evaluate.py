"""Classification metrics from logits: loss, accuracy, top-k, per-class scores, confusion matrix."""

from __future__ import annotations

import numpy as np

from cnncli.errors import CheckpointError, DataError
from cnncli.nn.inference import probabilities
from cnncli.nn.losses import log_softmax
from cnncli.training.memory import inference_batch_size


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (no label smoothing)."""
    if len(labels) == 0:
        return float("nan")
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def top_k_indices(logits: np.ndarray, k: int) -> np.ndarray:
    """(N, k) class indices, most likely first."""
    k = min(k, logits.shape[1])
    part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(logits, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes (scikit-learn's convention)."""
    flat = labels.astype(np.int64) * num_classes + predicted.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes,
                                                                           num_classes)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_report(logits: np.ndarray, labels: np.ndarray, class_names: list[str],
                          top_k: int = 5) -> dict:
    """Every metric `cnncli eval` prints, as plain JSON-ready data."""
    logits = np.asarray(logits)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = logits.shape[1]
    if len(labels) == 0:
        raise DataError("the split to evaluate is empty",
                        hint="choose another with split=NAME, or pass data=PATH")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"labels must be in 0..{num_classes - 1} for this model, got "
                        f"{int(labels.min())}..{int(labels.max())}")
    names = list(class_names) if len(class_names) == num_classes else \
        [str(i) for i in range(num_classes)]
    predicted = logits.argmax(axis=1)
    cm = confusion_matrix(labels, predicted, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _safe_ratio(tp, cm.sum(axis=0).astype(np.float64))
    recall = _safe_ratio(tp, support.astype(np.float64))
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    # As scikit-learn's f1_score(average="macro") without labels=: the mean over the classes
    # that occur in the labels or the predictions, so absent classes do not count as 0.
    present = (support > 0) | (cm.sum(axis=0) > 0)
    k = max(1, min(int(top_k), num_classes))
    in_top_k = (top_k_indices(logits, k) == labels[:, None]).any(axis=1)
    return {
        "loss": cross_entropy(logits, labels),
        "accuracy": float((predicted == labels).mean()),
        "top_k": k,
        "top_k_accuracy": float(in_top_k.mean()),
        "num_samples": int(len(labels)),
        "macro_f1": float(f1[present].mean()),
        "macro_f1_classes": int(present.sum()),
        "per_class": [{"class": names[i], "precision": float(precision[i]),
                       "recall": float(recall[i]), "f1": float(f1[i]),
                       "support": int(support[i])} for i in range(num_classes)],
        "confusion_matrix": cm.tolist(),
    }


def top_predictions(model, x: np.ndarray, labels: list[str], class_names: list[str],
                    top: int, batch_size: int = 256) -> list[tuple[str, list[tuple[str, float]]]]:
    """``cnncli predict``: per input its label and its ``top`` (class name, probability),
    most likely first. Class names that do not fit the model's output become 0, 1, ..."""
    logits = check_logits(model.predict_logits(x, batch_size=inference_batch_size(model,
                                                                              batch_size)))
    probs = probabilities(logits)
    best = top_k_indices(logits, min(top, probs.shape[1]))
    names = list(class_names) if len(class_names) == probs.shape[1] else \
        [str(i) for i in range(probs.shape[1])]
    return [(label, [(names[c], float(probs[i, c])) for c in best[i]])
            for i, label in enumerate(labels)]


def loss_and_accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 256):
    """(mean cross-entropy, accuracy) of a model in eval mode; (nan, nan) for an empty split."""
    if len(y) == 0:
        return float("nan"), float("nan")
    logits = model.predict_logits(x, batch_size=batch_size)
    return cross_entropy(logits, y), float((logits.argmax(axis=1) == y).mean())


def check_logits(logits: np.ndarray) -> np.ndarray:
    """Scores that overflowed to inf or NaN would print as NaN loss and arbitrary classes."""
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        raise CheckpointError(f"the model's class scores overflow to inf or NaN for "
                              f"{int(bad.sum())} of {len(logits)} inputs (first: input "
                              f"{int(np.flatnonzero(bad)[0])})",
                              hint="its weights are far too large for these inputs: a damaged "
                                   "or diverged checkpoint; use an earlier one")
    return logits


def evaluate(model, x: np.ndarray, y: np.ndarray, class_names: list[str], top_k: int = 5,
             batch_size: int = 256) -> dict:
    logits = model.predict_logits(x, batch_size=inference_batch_size(model, batch_size))
    return classification_report(check_logits(logits), y, class_names, top_k)
