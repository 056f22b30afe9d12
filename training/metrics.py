"""Classification metrics in pure numpy: per-class recall / precision / F1, macro recall (balanced
accuracy), one-vs-rest ROC AUC through ranks, confusion matrix, and bootstrap CIs resampled by patient.

No torch, no sklearn: export parity and the benchmarks reuse these on any backend's probabilities.
Conventions: ``y_true`` is an int array of class indices, ``probs`` is [N, C]; a class with no true
sample has no recall (NaN) and is left out of the macro averages ("over classes present").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Statistic = Callable[[np.ndarray, np.ndarray], float]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, C] counts; rows are true classes, columns predicted classes."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall (sensitivity) per class; NaN where the class has no true sample."""
    return _ratio(np.diag(cm).astype(float), cm.sum(axis=1).astype(float))


def per_class_precision(cm: np.ndarray) -> np.ndarray:
    """Precision per class: NaN where the class has no true sample (not scored); 0 where it has
    samples but was never predicted (the model missed all of them, which must count against it)."""
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    support = cm.sum(axis=1)
    precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
    return np.where(support > 0, precision, np.nan)


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    recall, precision = per_class_recall(cm), per_class_precision(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(recall + precision > 0, 2 * recall * precision / (recall + precision), 0.0)
    return np.where(np.isnan(recall), np.nan, f1)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def macro_recall(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (= balanced accuracy)."""
    cm = confusion_matrix(y_true, np.asarray(probs).argmax(axis=1), np.asarray(probs).shape[1])
    return _nanmean(per_class_recall(cm))


def macro_precision(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean precision over the classes present in ``y_true``."""
    cm = confusion_matrix(y_true, np.asarray(probs).argmax(axis=1), np.asarray(probs).shape[1])
    return _nanmean(per_class_precision(cm))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (what the Mann-Whitney U needs)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    ranks_sorted = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = ranks_sorted
    return ranks


def binary_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC = P(score of a positive > score of a negative), ties count half; NaN without both kinds."""
    is_positive = np.asarray(is_positive, dtype=bool)
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, dtype=float))
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def per_class_auc(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC for every class (NaN where a class has no positive or no negative)."""
    probs = np.asarray(probs)
    return np.array([binary_auc(np.asarray(y_true) == c, probs[:, c]) for c in range(probs.shape[1])])


def roc_curve(is_positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=float), kind="mergesort")
    sorted_scores = np.asarray(scores, dtype=float)[order]
    hits = is_positive[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(hits) - 1]
    tps = np.cumsum(hits)[last_of_threshold]
    fps = np.cumsum(~hits)[last_of_threshold]
    n_pos, n_neg = max(int(is_positive.sum()), 1), max(int((~is_positive).sum()), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]


def patient_bootstrap(
    statistic: Statistic,
    y_true: np.ndarray,
    probs: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic(y_true, probs)``, resampling whole patients (``groups``).

    Images of one patient are correlated, so resampling images would make the interval too narrow.
    Resamples where the statistic is undefined (NaN, e.g. a class drawn with no sample) are skipped.
    Returns (NaN, NaN) when no resample is defined.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    _, group_index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n_groups = int(group_index.max()) + 1 if len(group_index) else 0
    if n_groups == 0:
        return float("nan"), float("nan")
    members = [np.flatnonzero(group_index == g) for g in range(n_groups)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        chosen = rng.integers(0, n_groups, size=n_groups)
        idx = np.concatenate([members[g] for g in chosen])
        value = statistic(y_true[idx], probs[idx])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def class_recall_statistic(class_index: int) -> Statistic:
    """A bootstrap statistic: recall of one class (NaN when the resample has none of it)."""

    def statistic(y_true: np.ndarray, probs: np.ndarray) -> float:
        mask = y_true == class_index
        return float((probs[mask].argmax(axis=1) == class_index).mean()) if mask.any() else float("nan")

    return statistic


def macro_recall_over(class_indices: Sequence[int]) -> Statistic:
    """A statistic: mean recall over ``class_indices`` only (those present in the sample), e.g. the classes
    with enough images in a pool for their recall to mean something."""
    chosen = np.asarray(class_indices, dtype=np.int64)

    def statistic(y_true: np.ndarray, probs: np.ndarray) -> float:
        cm = confusion_matrix(y_true, np.asarray(probs).argmax(axis=1), np.asarray(probs).shape[1])
        return _nanmean(per_class_recall(cm)[chosen])

    return statistic


def _json_float(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def classification_report(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    groups: Sequence[str] | np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything metrics.json holds for one split. NaN (undefined) values are written as null.

    ``groups`` are patient ids for the bootstrap CIs (each image its own group when omitted).
    ``n_boot=0`` skips the CIs (used for per-epoch validation).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    groups = np.asarray(groups if groups is not None else np.arange(len(y_true))).astype(str)
    num_classes = len(labels)
    cm = confusion_matrix(y_true, probs.argmax(axis=1) if len(probs) else np.zeros(0, int), num_classes)
    recall, precision, f1 = per_class_recall(cm), per_class_precision(cm), per_class_f1(cm)
    auc = per_class_auc(y_true, probs) if len(probs) else np.full(num_classes, np.nan)
    support = cm.sum(axis=1)

    def ci(statistic: Statistic) -> list[float | None]:
        if n_boot <= 0 or len(y_true) == 0:
            return [None, None]
        return [_json_float(v) for v in patient_bootstrap(statistic, y_true, probs, groups, n_boot=n_boot, seed=seed)]

    per_class = {}
    for c, label in enumerate(labels):
        per_class[label] = {
            "recall": _json_float(recall[c]),
            "precision": _json_float(precision[c]),
            "f1": _json_float(f1[c]),
            "support": int(support[c]),
            "auc": _json_float(auc[c]),
            "recall_ci": ci(class_recall_statistic(c)) if support[c] else [None, None],
        }
    return {
        "macro_recall": _json_float(_nanmean(recall)),
        "macro_precision": _json_float(_nanmean(precision)),
        "macro_recall_ci": ci(macro_recall),
        "macro_precision_ci": ci(macro_precision),
        "auc_macro": _json_float(_nanmean(auc)),
        "accuracy": _json_float(float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan")),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "labels": list(labels),
        "n_images": int(len(y_true)),
        "n_patients": int(len(np.unique(groups))),
    }
