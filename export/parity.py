"""The fidelity gate: does an artifact decide like the fp32 torch model, and does it change clinical performance?

Two questions, answered separately, each with its uncertainty (see the README, "The fidelity gate"):

1. **Agreement** (label-free): the share of held-out inputs (images neither trained on nor calibrated with, and
   their flipped views) whose top label equals fp32's, with a one-sided 95 % Clopper-Pearson lower bound. The
   gate reads the bound: ``min_agreement`` (percent) must not exceed it. Every flip is listed with its fp32
   margin (top-1 minus top-2 probability), and the mean KL divergence says how far the probabilities moved.
2. **Labelled effect**: macro and per-class recall of the artifact minus fp32's on the labelled test images,
   paired (the same images), with patient-bootstrap 95 % CIs. The gate fails on evidence of harm (the whole CI
   of the macro recall delta below 0, or a point drop beyond ``max_drop`` with a CI that excludes 0), never on
   one flipped image.

Units: ``agreement`` and every ``*_delta`` are fractions (0.01 = one point); thresholds are in points / percent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from facederm.runtime.errors import ConfigError
from facederm.runtime.layout import Flip, Parity
from facederm.training import metrics

N_BOOT = 1000
CONFIDENCE = 0.95
#: Default gate on the one-sided 95 % lower bound of agreement, percent. At the >= 300 inputs the gate is
#: designed for, an artifact that truly agrees 99 % passes with probability >= 0.97 and one that agrees 95 %
#: with probability <= 0.007 (binomial; see README for the table).
DEFAULT_MIN_AGREEMENT = 96.0
#: Default largest macro recall drop (points) tolerated when the data cannot rule out harm.
DEFAULT_MAX_DROP = 1.0
#: The agreement set the gate is designed for; below it the summary warns that the bound is weak.
DESIGN_PAIRS = 300
#: Flips kept in the manifest (largest fp32 margin first: the ones that are not near-ties).
MAX_FLIPS_LISTED = 50
_EPS = 1e-12


@dataclass(frozen=True)
class AgreementInputs:
    """Label-free inputs: fp32 and artifact probabilities for each (image, view) pair."""

    reference: np.ndarray
    probs: np.ndarray
    image_ids: Sequence[str]
    views: Sequence[str]
    data: str = ""


@dataclass(frozen=True)
class GateRules:
    """The gate's thresholds: ``min_agreement`` percent on the lower bound (0 disables it), ``max_drop`` points
    of macro recall, ``max_class_drop`` {label: points} of a class's recall (point estimates: opt-in limits)."""

    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_drop: float = DEFAULT_MAX_DROP
    max_class_drop: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.max_drop) and self.max_drop >= 0):
            raise ConfigError(f"--max-drop must be a number of points >= 0, got {self.max_drop}")
        if not (np.isfinite(self.min_agreement) and 0 <= self.min_agreement <= 100):
            raise ConfigError(f"--min-agreement must be a percentage in [0, 100], got {self.min_agreement}")

    def to_dict(self) -> dict[str, object]:
        return {
            "min_agreement_lower_bound_percent": self.min_agreement,
            "confidence": CONFIDENCE,
            "max_drop_points": self.max_drop,
            "max_class_drop_points": dict(self.max_class_drop),
        }


def clopper_pearson_lower(successes: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided ``confidence`` lower bound of a binomial proportion (exact, Clopper-Pearson); 0 for n = 0."""
    from scipy.stats import beta  # here, not at import: scipy.stats costs ~1.5 s of every CLI's start-up

    if n <= 0 or successes <= 0:
        return 0.0
    return float(beta.ppf(1 - confidence, successes, n - successes + 1))


def pass_probability(true_agreement: float, n: int, min_agreement: float) -> float:
    """Probability that an artifact with ``true_agreement`` passes the bound rule on ``n`` independent inputs."""
    from scipy.stats import binom

    allowed = [k for k in range(n + 1) if clopper_pearson_lower(n - k, n) * 100 >= min_agreement - 1e-9]
    return float(binom.cdf(max(allowed), n, 1 - true_agreement)) if allowed else 0.0


#: fp32 top-1 margins (probability) below which an input counts as a near-tie in the export's summary.
NEAR_TIE_MARGINS = (0.05, 0.1)


def top1_margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row (the top-1 probability for a one-class output)."""
    ordered = np.sort(np.asarray(probs, dtype=np.float64), axis=1)
    return ordered[:, -1] - ordered[:, -2] if ordered.shape[1] > 1 else ordered[:, -1]


def margin_profile(reference: np.ndarray) -> dict[str, object]:
    """How decided the fp32 model is on the agreement inputs: the median top-1 margin and the share of near-ties
    (margin below each of :data:`NEAR_TIE_MARGINS`). Any artifact whose probabilities move by a few hundredths
    can flip a near-tie, so this share says how much agreement a model leaves to quantize with."""
    margin = top1_margins(reference)
    if not len(margin):
        return {"inputs": 0, "median": None, "below": {}}
    return {
        "inputs": int(len(margin)),
        "median": round(float(np.median(margin)), 4),
        "below": {f"{t:g}": round(float((margin < t).mean()), 4) for t in NEAR_TIE_MARGINS},
    }


def _agreement(inputs: AgreementInputs, labels: Sequence[str]) -> dict[str, object]:
    ref = np.asarray(inputs.reference, dtype=np.float64)
    art = np.asarray(inputs.probs, dtype=np.float64)
    if ref.shape != art.shape:
        raise ValueError(f"artifact output shape {art.shape} differs from the fp32 model's {ref.shape}")
    n = len(ref)
    if n == 0:
        return {
            "agreement": float("nan"),
            "n_pairs": 0,
            "n_agreement_images": 0,
            "agreement_lower_bound": None,
            "mean_kl": None,
            "mean_top1_prob_delta": None,
            "flips": (),
            "max_abs_prob_delta": 0.0,
        }
    ref_top, art_top = ref.argmax(1), art.argmax(1)
    same = ref_top == art_top
    margin = top1_margins(ref)
    kl = np.sum(ref * (np.log(ref + _EPS) - np.log(art + _EPS)), axis=1)
    top1_delta = np.abs(art[np.arange(n), ref_top] - ref[np.arange(n), ref_top])
    flips = sorted(
        (
            Flip(
                image_id=str(inputs.image_ids[i]),
                view=str(inputs.views[i]),
                fp32_label=labels[ref_top[i]],
                artifact_label=labels[art_top[i]],
                fp32_margin=round(float(margin[i]), 4),
            )
            for i in np.flatnonzero(~same)
        ),
        key=lambda f: -f.fp32_margin,
    )
    return {
        "agreement": float(same.mean()),
        "n_pairs": int(n),
        "n_agreement_images": len(set(map(str, inputs.image_ids))),
        "agreement_lower_bound": round(clopper_pearson_lower(int(same.sum()), n), 6),
        "mean_kl": round(float(np.mean(np.maximum(kl, 0.0))), 6),
        "mean_top1_prob_delta": round(float(top1_delta.mean()), 6),
        "flips": tuple(flips[:MAX_FLIPS_LISTED]),
        "max_abs_prob_delta": float(np.abs(art - ref).max()),
    }


def _finite(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values if np.isfinite(v))


def _recall_effect(
    reference: np.ndarray,
    probs: np.ndarray,
    y_true: np.ndarray,
    patients: Sequence[str],
    labels: Sequence[str],
    n_boot: int,
    seed: int,
) -> dict[str, object]:
    c = len(labels)
    both = np.concatenate([reference, probs], axis=1)  # one array: the bootstrap resamples pairs together

    def delta_macro(y: np.ndarray, p: np.ndarray) -> float:
        return metrics.macro_recall(y, p[:, c:]) - metrics.macro_recall(y, p[:, :c])

    def delta_class(k: int):
        recall = metrics.class_recall_statistic(k)
        return lambda y, p: recall(y, p[:, c:]) - recall(y, p[:, :c])

    def agreement(_y: np.ndarray, p: np.ndarray) -> float:
        return float((p[:, :c].argmax(1) == p[:, c:].argmax(1)).mean())

    ref_recall = metrics.per_class_recall(metrics.confusion_matrix(y_true, reference.argmax(1), c))
    art_recall = metrics.per_class_recall(metrics.confusion_matrix(y_true, probs.argmax(1), c))
    present = [i for i in range(c) if not np.isnan(ref_recall[i])]
    boot = dict(n_boot=n_boot, seed=seed)
    return {
        "macro_recall": float(metrics.macro_recall(y_true, probs)) if len(y_true) else float("nan"),
        "macro_recall_delta": float(delta_macro(y_true, both)) if len(y_true) else 0.0,
        "per_class_recall_delta": {labels[i]: float(art_recall[i] - ref_recall[i]) for i in present},
        "macro_recall_delta_ci": _finite(metrics.patient_bootstrap(delta_macro, y_true, both, patients, **boot)),
        "per_class_recall_delta_ci": {
            labels[i]: _finite(metrics.patient_bootstrap(delta_class(i), y_true, both, patients, **boot))
            for i in present
        },
        "agreement_ci": _finite(metrics.patient_bootstrap(agreement, y_true, both, patients, **boot)),
        "n_images": int(len(y_true)),
        "n_patients": int(len(set(map(str, patients)))),
    }


def compute_parity(
    reference: np.ndarray,
    probs: np.ndarray,
    y_true: np.ndarray,
    patients: Sequence[str],
    labels: Sequence[str],
    *,
    agreement: AgreementInputs | None = None,
    eval_data: str = "",
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Parity:
    """Both gate questions for one artifact.

    ``reference`` / ``probs`` are fp32 and artifact probabilities on the labelled images (``y_true``,
    ``patients``); ``agreement`` the label-free held-out inputs (default: the labelled images themselves).
    """
    reference = np.asarray(reference, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != reference.shape:
        raise ValueError(f"artifact output shape {probs.shape} differs from the fp32 model's {reference.shape}")
    y_true = np.asarray(y_true, dtype=np.int64)
    if agreement is None:
        agreement = AgreementInputs(
            reference, probs, [str(i) for i in range(len(reference))], ["identity"] * len(reference), eval_data
        )
    figures = _agreement(agreement, labels)
    labelled = _recall_effect(reference, probs, y_true, patients, labels, n_boot, seed)
    max_abs = max(
        float(figures.pop("max_abs_prob_delta")), float(np.abs(probs - reference).max()) if probs.size else 0.0
    )
    return Parity(max_abs_prob_delta=max_abs, eval_data=eval_data, agreement_data=agreement.data, **figures, **labelled)  # type: ignore[arg-type]


def _points(value: float) -> str:
    return f"{value * 100:+.2f}"


def _ci_points(ci: Sequence[float]) -> str:
    return f"[{ci[0] * 100:+.2f}, {ci[1] * 100:+.2f}]" if len(ci) == 2 else "[no CI]"


def gate_verdict(parity: Parity, rules: GateRules) -> tuple[str | None, str]:
    """(the reason the gate fails or None, the decision in words: which rule decided, with its figures)."""
    failures: list[str] = []
    passes: list[str] = []
    if not np.isfinite(parity.max_abs_prob_delta):
        failures.append("the artifact produced non-finite probabilities")

    # 1. Agreement, on the lower bound.
    if rules.min_agreement > 0:
        bound = parity.agreement_lower_bound
        if bound is None and parity.n_pairs == 0 and parity.n_images:  # an older Parity: bound from the point
            bound = clopper_pearson_lower(round(parity.agreement * parity.n_images), parity.n_images)
        n = parity.n_pairs or parity.n_images
        changed = round((1 - parity.agreement) * n) if np.isfinite(parity.agreement) else n
        text = (
            f"agreement {parity.agreement * 100:.1f}% of {n} inputs ({changed} changed), 95% lower bound "
            f"{(bound or 0) * 100:.1f}%"
        )
        weak = ""
        judged = bound
        if n and rules.min_agreement < 100 and clopper_pearson_lower(n, n) * 100 < rules.min_agreement:
            # Too few inputs for any artifact to reach the bound: judge the point estimate, and say so.
            judged = parity.agreement
            weak = (
                f" (only {n} inputs: even full agreement bounds at {clopper_pearson_lower(n, n) * 100:.1f}%, so "
                f"the point estimate was judged; pass --eval-data or --eval-views for a real bound)"
            )
        elif n < DESIGN_PAIRS:
            weak = (
                f" (only {n} inputs, < {DESIGN_PAIRS}: an artifact that truly agrees 99% passes with probability "
                f"{pass_probability(0.99, n, rules.min_agreement):.2f})"
            )
        if judged is None or not np.isfinite(judged) or judged * 100 < rules.min_agreement - 1e-9:
            failures.append(f"{text} < --min-agreement {rules.min_agreement:g}%{weak}")
        else:
            passes.append(f"{text} >= {rules.min_agreement:g}%{weak}")

    # 2. Labelled effect: fail on evidence of harm.
    if parity.n_images:
        delta, ci = parity.macro_recall_delta, parity.macro_recall_delta_ci
        text = f"macro recall delta {_points(delta)} points, 95% CI {_ci_points(ci)} on {parity.n_images} test images"
        if len(ci) == 2 and ci[1] < 0:
            failures.append(f"harm shown: {text} lies entirely below 0")
        elif len(ci) == 2 and -delta * 100 > rules.max_drop + 1e-9 and not (ci[0] <= 0 <= ci[1]):
            failures.append(f"{text}: a drop beyond --max-drop {rules.max_drop:g} with a CI that excludes 0")
        else:
            passes.append(f"{text}: no evidence of harm")
    else:
        passes.append("no labelled test images: recall effect not judged")
    for label, limit in rules.max_class_drop.items():
        class_drop = -parity.per_class_recall_delta.get(label, 0.0) * 100.0
        if class_drop > limit + 1e-9:
            failures.append(f"{label} recall dropped {class_drop:.2f} points (> --max-class-drop {label}={limit:g})")
    if failures:
        return "fidelity gate: " + "; ".join(failures), "failed: " + "; ".join(failures)
    return None, "passed: " + "; ".join(passes)


#: The gate's reasons in short (terminal lines; the reports keep them whole); older exports wrote "parity gate".
_SHORT = (
    (r"^export failed: (?:fidelity|parity) gate:", "export gate:"),
    (r" \(only \d+ inputs, [^)]*\)", ""),
    (
        r"agreement (\S+) of (\d+) inputs \((\d+) changed\), 95% lower bound (\S+) < --min-agreement (\S+)",
        r"agree \1 (\3 of \2 changed), lower bound \4 < \5",
    ),
    (r"argmax agreement (\S+) \(< --min-agreement (\S+)\)", r"agree \1 < \2"),
    (
        r"harm shown: macro recall delta (\S+) points, 95% CI (\[[^]]*\]) on \d+ test images lies entirely below 0",
        r"recall \1 pts, CI \2 < 0",
    ),
    (
        r"macro recall delta (\S+) points, 95% CI (\[[^]]*\]) on \d+ test images: a drop beyond --max-drop (\S+) "
        r"with a CI that excludes 0",
        r"recall \1 pts (> \3), CI \2 excludes 0",
    ),
    (r"(\S+) recall dropped (\S+) points \(> --max(?:-class)?-drop (?:\S+=)?(\S+)\)", r"\1 recall -\2 pts > \3"),
)


def short_reason(reason: str) -> str:
    """The gate's failure reasons within ``reason`` in a few words each."""
    for pattern, short in _SHORT:
        reason = re.sub(pattern, short, reason)
    return reason


def failed_checks(reason: str) -> list[str]:
    """The gate's failed checks named in an artifact's ``reason``: "agree", "recall", a class, "non-finite"."""
    parts = re.split(r"\b(?:fidelity|parity) gate:", reason, maxsplit=1)
    failed = []
    for part in (p.strip() for p in parts[1].split(";") if p.strip()) if len(parts) == 2 else ():
        if part.startswith(("agreement", "argmax agreement")):
            failed.append("agree")
        elif part.startswith(("harm shown", "macro recall")):
            failed.append("recall")
        elif match := re.match(r"(\S+) recall dropped", part):
            failed.append(match.group(1))
        else:
            failed.append("non-finite" if "non-finite" in part else part.split()[0])
    return list(dict.fromkeys(failed))


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
        raise ConfigError(
            f"--max-class-drop: unknown label(s) {', '.join(unknown)}; the model's labels: {', '.join(labels)}"
        )
