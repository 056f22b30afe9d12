"""Clinical fields in training: fit the schema on a run's training images, encode samples, field dropout, and
the evaluation that says what the fields add (recall with every field as answered vs all masked) and whether
their *missingness alone* predicts the label (a data-collection artifact a model can learn instead of the answers).

The encoding itself is :mod:`facederm.runtime.clinical` (torch-free, shared with every artifact and the runtime).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from facederm.runtime.clinical import ClinicalSchema, fit_schema, parse_fields

from .dataset import Sample
from .evaluate import split_metrics
from .metrics import macro_recall, patient_bootstrap

#: Share of training records whose every field is masked on top of the per-field dropout: a skipped questionnaire
#: is a common case (PAD-UFES-20: 205 of 541 images lack all the lifestyle fields), and per-field dropout alone
#: almost never shows the model a record with nothing answered (0.3^6 = 0.07 % for six fields).
WHOLE_RECORD_SHARE = 1 / 3


def fit_run_schema(spec: str, training: Sequence[Sample]) -> ClinicalSchema:
    """The schema of ``--clinical spec`` fitted on the answers of ``training`` (the run's training images only:
    the validation and test images' answers never shape the encoding)."""
    return fit_schema(parse_fields(spec), [s.clinical_record for s in training])


def encode_samples(schema: ClinicalSchema, samples: Sequence[Sample]) -> np.ndarray:
    """float32 [N, F] of the samples' answers as recorded (their other columns ignored); a category the training
    images never showed (a rare birthplace in the test split) encodes as missing rather than failing the run."""
    return schema.encode([s.clinical_record for s in samples], unseen="missing", extra="ignore")


def drop_fields(schema: ClinicalSchema, encoded: np.ndarray, rng: np.random.Generator, rate: float) -> np.ndarray:
    """Field dropout for one training record [F]: each field masked (set missing) with probability ``rate``, and
    the whole record with ``rate * WHOLE_RECORD_SHARE``, so the model stays sound when answers are missing."""
    if rate <= 0:
        return encoded
    n = len(schema.fields)
    drop = rng.random(n) < rate
    if rng.random() < rate * WHOLE_RECORD_SHARE:
        drop[:] = True
    return schema.mask(encoded[None, :], drop[None, :])[0]


def missingness_predicts_label(
    schema: ClinicalSchema,
    samples: Sequence[Sample],
    labels: Sequence[str],
    *,
    folds: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Does *which fields are missing* predict the label? A logistic regression on the missing-indicator columns
    only, patient-grouped stratified ``folds``-fold cross-validation, out-of-fold balanced accuracy (= macro recall)
    with a patient-bootstrap CI, against chance (1 / number of classes present). ``predicts_label`` is True when the
    whole CI lies above chance: then the data's gaps carry label information (PAD-UFES-20: the lifestyle fields are
    missing for many non-biopsied patients), and "all masked" vs "as answered" recall must be read with that in mind.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold

    index = {label: i for i, label in enumerate(labels)}
    y = np.asarray([index[s.label] for s in samples], dtype=np.int64)
    groups = np.asarray([s.patient_id for s in samples])
    x = schema.missing_indicators(encode_samples(schema, samples))
    present = np.unique(y)
    chance = 1.0 / max(len(present), 1)
    base: dict[str, Any] = {
        "features": [f"{name}:missing" for name in schema.names],
        "n_images": len(samples),
        "chance": chance,
        "method": f"logistic regression on the missing indicators only, {folds}-fold patient-grouped CV",
    }
    k = min(folds, len({str(g) for g in groups}))
    if len(present) < 2 or k < 2:
        return {**base, "balanced_accuracy": None, "ci": [None, None], "predicts_label": None, "note": "too few images"}
    probs = np.zeros((len(y), len(labels)), dtype=np.float64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class rarer than k (PAD lesions: one MEL) only lands in fewer folds
        warnings.simplefilter("ignore", UserWarning)
        fold_indices = list(splitter.split(x, y, groups))
    for train_idx, test_idx in fold_indices:
        if len(np.unique(y[train_idx])) < 2:  # one class only: that class everywhere
            probs[test_idx, y[train_idx][0]] = 1.0
            continue
        model = LogisticRegression(max_iter=1000, class_weight="balanced")
        model.fit(x[train_idx], y[train_idx])
        probs[np.ix_(test_idx, model.classes_)] = model.predict_proba(x[test_idx])
    score = macro_recall(y, probs)
    low, high = patient_bootstrap(macro_recall, y, probs, groups, n_boot=n_boot, seed=seed)
    ci = [None if np.isnan(v) else float(v) for v in (low, high)]
    return {
        **base,
        "folds": k,
        "balanced_accuracy": float(score),
        "ci": ci,
        "predicts_label": bool(ci[0] is not None and ci[0] > chance),
    }


def fusion_report(
    schema: ClinicalSchema,
    dropout: float,
    splits: dict[str, tuple[Sequence[Sample], np.ndarray, np.ndarray]],
    everything: Sequence[Sample],
    labels: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The metrics file's ``clinical`` entry. ``splits`` maps a split name to (samples, probabilities with the answers
    as recorded, probabilities with every field masked); ``everything`` are all the data set's images (the
    missingness check looks at how the data was collected, not at one split)."""
    out: dict[str, Any] = {
        "fields": len(schema.fields),
        "names": list(schema.names),
        "columns": schema.width,
        "dropout": {"per_field": dropout, "whole_record": dropout * WHOLE_RECORD_SHARE},
        "splits": {},
    }
    for name, (samples, present, masked) in splits.items():
        entry = {}
        for key, probs in (("present", present), ("masked", masked)):
            m = split_metrics(probs, samples, labels, n_boot=n_boot, seed=seed)
            entry[key] = {
                "macro_recall": m["macro_recall"],
                "macro_recall_ci": m["macro_recall_ci"],
                "per_class_recall": {label: m["per_class"][label]["recall"] for label in labels},
            }
        entry["n_images"] = len(samples)
        out["splits"][name] = entry
    out["missingness"] = missingness_predicts_label(schema, everything, labels, n_boot=n_boot, seed=seed)
    out["note"] = (
        "present: every image's answers as recorded (its unanswered fields stay missing); masked: every field "
        "missing, i.e. the image alone through the same model"
    )
    return out


def summary_line(report: dict[str, Any]) -> str:
    """The printed line: test macro recall as answered vs all masked, and the missingness check."""
    parts = [f"clinical ({report['fields']} fields)"]
    for name, entry in report.get("splits", {}).items():
        present, masked = entry["present"], entry["masked"]
        parts.append(
            f"{name} macro recall {_fmt(present['macro_recall'])} as answered vs {_fmt(masked['macro_recall'])} "
            f"with every field masked"
        )
    miss = report.get("missingness", {})
    if miss.get("balanced_accuracy") is not None:
        verdict = "PREDICTS the label" if miss["predicts_label"] else "does not predict the label"
        parts.append(
            f"missingness alone {verdict} (balanced accuracy {miss['balanced_accuracy']:.3f} "
            f"[{_fmt(miss['ci'][0])}, {_fmt(miss['ci'][1])}], chance {miss['chance']:.3f}, {miss['n_images']} images)"
        )
    return "; ".join(parts)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
