"""Metrics against hand-computed values and brute force; the patient-grouped bootstrap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facederm.training.metrics import (
    binary_auc,
    classification_report,
    confusion_matrix,
    macro_recall,
    patient_bootstrap,
    per_class_auc,
    roc_curve,
)


def _one_hot_probs(pred, num_classes):
    probs = np.full((len(pred), num_classes), 0.1)
    probs[np.arange(len(pred)), pred] = 0.9
    return probs / probs.sum(axis=1, keepdims=True)


def test_report_matches_hand_computed_values():
    # true:  A A A B B C ; predicted: A B A B C C
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 0, 1, 2, 2])
    report = classification_report(y_true, _one_hot_probs(y_pred, 3), ["A", "B", "C"], n_boot=0)
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    a, b, c = (report["per_class"][k] for k in "ABC")
    assert (a["recall"], b["recall"], c["recall"]) == pytest.approx((2 / 3, 1 / 2, 1.0))
    assert (a["precision"], b["precision"], c["precision"]) == pytest.approx((1.0, 1 / 2, 1 / 2))
    assert a["f1"] == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    assert [a["support"], b["support"], c["support"]] == [3, 2, 1]
    assert report["macro_recall"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert report["macro_precision"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["n_images"] == 6


def test_absent_class_is_left_out_of_macro_averages_and_missed_class_counts_zero():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 0])  # class 1 never predicted; class 2 absent
    report = classification_report(y_true, _one_hot_probs(y_pred, 3), ["A", "B", "C"], n_boot=0)
    assert report["per_class"]["C"]["recall"] is None and report["per_class"]["C"]["support"] == 0
    assert report["per_class"]["B"]["precision"] == 0.0
    assert report["macro_recall"] == pytest.approx(0.5)  # (1 + 0) / 2 = balanced accuracy


def _brute_force_auc(positive, scores):
    pos, neg = scores[positive], scores[~positive]
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p, n in itertools.product(pos, neg)]
    return float(np.mean(pairs))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40))
def test_auc_equals_brute_force_pairwise_count(pairs):
    positive = np.array([p for p, _ in pairs])
    scores = np.array([s for _, s in pairs], dtype=float)  # few distinct values: many ties
    if positive.all() or not positive.any():
        assert np.isnan(binary_auc(positive, scores))
    else:
        assert binary_auc(positive, scores) == pytest.approx(_brute_force_auc(positive, scores))


def test_per_class_auc_and_roc_curve_end_points():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 50)
    probs = rng.dirichlet(np.ones(3), 50)
    aucs = per_class_auc(y_true, probs)
    for c in range(3):
        assert aucs[c] == pytest.approx(_brute_force_auc(y_true == c, probs[:, c]))
        fpr, tpr = roc_curve(y_true == c, probs[:, c])
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
        assert np.trapezoid(tpr, fpr) == pytest.approx(aucs[c])  # the curve integrates to the AUC


def test_confusion_matrix_counts_every_sample_once():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 4, 100), rng.integers(0, 4, 100)
    cm = confusion_matrix(y_true, y_pred, 4)
    assert cm.sum() == 100 and np.trace(cm) == (y_true == y_pred).sum()


def _noisy_problem(n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 3, n_patients)
    pred = np.where(rng.random(n_patients) < 0.7, y_true, rng.integers(0, 3, n_patients))
    return y_true, _one_hot_probs(pred, 3)


def test_bootstrap_ci_contains_the_point_estimate():
    y_true, probs = _noisy_problem()
    low, high = patient_bootstrap(macro_recall, y_true, probs, np.arange(len(y_true)), n_boot=300, seed=0)
    assert low <= macro_recall(y_true, probs) <= high and low < high


def test_bootstrap_resamples_patients_not_images():
    """Three identical images per patient carry no more information than one: resampling patients gives
    the same interval as the de-duplicated data, while resampling images would make it narrower."""
    y_true, probs = _noisy_problem()
    patients = np.arange(len(y_true))
    tripled = (np.repeat(y_true, 3), np.repeat(probs, 3, axis=0))
    by_patient = patient_bootstrap(macro_recall, *tripled, np.repeat(patients, 3), n_boot=300, seed=3)
    deduplicated = patient_bootstrap(macro_recall, y_true, probs, patients, n_boot=300, seed=3)
    assert by_patient == pytest.approx(deduplicated)
    by_image = patient_bootstrap(macro_recall, *tripled, np.arange(len(patients) * 3), n_boot=300, seed=3)
    assert by_image[1] - by_image[0] < by_patient[1] - by_patient[0]


def test_report_cis_are_seeded():
    y_true, probs = _noisy_problem()
    groups = [f"P{i // 2}" for i in range(len(y_true))]
    first = classification_report(y_true, probs, ["A", "B", "C"], groups, n_boot=100, seed=5)
    again = classification_report(y_true, probs, ["A", "B", "C"], groups, n_boot=100, seed=5)
    assert first["macro_recall_ci"] == again["macro_recall_ci"]
    assert first["n_patients"] == 20
    for label in "ABC":
        low, high = first["per_class"][label]["recall_ci"]
        assert low <= first["per_class"][label]["recall"] <= high
