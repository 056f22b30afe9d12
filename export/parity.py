"""The clinical parity gate: an artifact's predictions against the fp32 torch model's.

Figures use :mod:`facederm.training.metrics` (the one metrics implementation). Units: ``agreement``,
``macro_recall`` and every ``*_delta`` are fractions (0.01 = one percentage point); deltas are artifact
minus fp32, so a drop is negative. The thresholds (``max_drop``, ``max_class_drop``) are in points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from facederm.runtime.card import Parity
from facederm.runtime.errors import ConfigError
from facederm.training import metrics

N_BOOT = 1000


def _split(probs: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    return probs[:, :c], probs[:, c:]


def compute_parity(
    reference: np.ndarray,
    probs: np.ndarray,
    y_true: np.ndarray,
    patients: Sequence[str],
    labels: Sequence[str],
    *,
    eval_data: str = "",
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Parity:
    """Agreement, max |delta p|, per-class and macro recall deltas, with patient-bootstrap 95% CIs."""
    reference = np.asarray(reference, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != reference.shape:
        raise ValueError(f"artifact output shape {probs.shape} differs from the fp32 model's {reference.shape}")
    c = len(labels)
    y_true = np.asarray(y_true, dtype=np.int64)
    both = np.concatenate([reference, probs], axis=1)  # one array so the bootstrap resamples pairs together

    def delta_macro(y: np.ndarray, p: np.ndarray) -> float:
        ref, art = _split(p, c)
        return metrics.macro_recall(y, art) - metrics.macro_recall(y, ref)

    def agreement(_y: np.ndarray, p: np.ndarray) -> float:
        ref, art = _split(p, c)
        return float((ref.argmax(1) == art.argmax(1)).mean())

    ref_recall = metrics.per_class_recall(metrics.confusion_matrix(y_true, reference.argmax(1), c))
    art_recall = metrics.per_class_recall(metrics.confusion_matrix(y_true, probs.argmax(1), c))
    per_class = {
        label: float(art_recall[i] - ref_recall[i]) for i, label in enumerate(labels) if not np.isnan(ref_recall[i])
    }
    ci_macro = metrics.patient_bootstrap(delta_macro, y_true, both, patients, n_boot=n_boot, seed=seed)
    ci_agree = metrics.patient_bootstrap(agreement, y_true, both, patients, n_boot=n_boot, seed=seed)
    return Parity(
        agreement=agreement(y_true, both) if len(y_true) else float("nan"),
        max_abs_prob_delta=float(np.abs(probs - reference).max()) if probs.size else 0.0,
        macro_recall=float(metrics.macro_recall(y_true, probs)),
        macro_recall_delta=float(delta_macro(y_true, both)),
        per_class_recall_delta=per_class,
        macro_recall_delta_ci=tuple(_finite(ci_macro)),
        agreement_ci=tuple(_finite(ci_agree)),
        n_images=int(len(y_true)),
        n_patients=int(len(set(map(str, patients)))),
        eval_data=eval_data,
    )


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if np.isfinite(v)]


def check_gate(parity: Parity, max_drop: float, max_class_drop: Mapping[str, float],
               min_agreement: float = 0.0) -> str | None:
    """The reason the gate fails (None when it passes). Recall thresholds are percentage points;
    ``min_agreement`` is a percentage of evaluation images whose argmax equals fp32's."""
    reasons = []
    if parity.agreement * 100.0 < min_agreement - 1e-9:
        reasons.append(f"argmax agreement {parity.agreement * 100:.1f}% (< --min-agreement {min_agreement:g}%)")
    drop = -parity.macro_recall_delta * 100.0
    if drop > max_drop + 1e-9:
        reasons.append(f"macro recall dropped {drop:.2f} points (> --max-drop {max_drop:g})")
    for label, limit in max_class_drop.items():
        class_drop = -parity.per_class_recall_delta.get(label, 0.0) * 100.0
        if class_drop > limit + 1e-9:
            reasons.append(f"{label} recall dropped {class_drop:.2f} points (> --max-class-drop {label}={limit:g})")
    if not np.isfinite(parity.max_abs_prob_delta):
        reasons.append("the artifact produced non-finite probabilities")
    return "parity gate: " + "; ".join(reasons) if reasons else None


def parse_class_drops(items: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """``["BCC=2", "MEL=0.5"]`` -> {"BCC": 2.0, "MEL": 0.5}; unknown labels and bad numbers are ConfigErrors."""
    out: dict[str, float] = {}
    for item in items:
        label, sep, value = item.partition("=")
        label = label.strip()
        try:
            points = float(value)
        except ValueError:
            points = float("nan")
        if not sep or not label or not np.isfinite(points) or points < 0:
            raise ConfigError(f"--max-class-drop {item!r}: expected LABEL=POINTS with POINTS >= 0, e.g. BCC=2")
        out[label] = points
    check_class_drops(out, labels)
    return out


def check_class_drops(drops: Mapping[str, float], labels: Sequence[str]) -> None:
    unknown = sorted(set(drops) - set(labels))
    if unknown:
        raise ConfigError(f"--max-class-drop: unknown label(s) {', '.join(unknown)}; the model's labels: {', '.join(labels)}")
