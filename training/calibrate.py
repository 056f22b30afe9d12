"""Confidence calibration: one temperature fitted on the validation images (Guo et al., 2017), and the
expected calibration error (ECE) before and after it.

A network trained with cross-entropy on a few hundred images is over-confident: its top probability runs
ahead of how often it is right. Dividing the logits by a temperature ``T`` fitted on held-out images (by
negative log-likelihood) fixes most of that without changing any decision (argmax is unchanged), so the
referral thresholds in the card read as probabilities a clinician can trust. The fitted ``T`` goes into the
card and into every exported graph (``ProbabilityModel``). With few validation images the fit is noisy, so
``T`` is bounded and the report gives the ECE on the test images too, which the fit never saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

#: Bounds of the fitted temperature: outside them a small validation set is telling noise, not calibration.
TEMPERATURE_BOUNDS = (0.25, 8.0)
#: Equal-width confidence bins of the ECE (the usual 15).
ECE_BINS = 15
#: Fewer validation images than this: no fit (T = 1), the report says why.
MIN_FIT_IMAGES = 10


def _logits(probs: np.ndarray) -> np.ndarray:
    # log-probabilities are the logits up to a per-row constant, which softmax ignores
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities re-scaled as ``softmax(logits / temperature)`` (what the exported graph computes)."""
    return softmax(_logits(probs) / temperature, axis=1).astype(np.float32)


def negative_log_likelihood(probs: np.ndarray, y_true: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of the true class after ``temperature``."""
    logp = log_softmax(_logits(probs) / temperature, axis=1)
    return float(-logp[np.arange(len(y_true)), np.asarray(y_true, dtype=np.int64)].mean())


def fit_temperature(probs: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature minimizing the NLL of ``y_true`` (bounded to :data:`TEMPERATURE_BOUNDS`)."""
    low, high = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(probs, y_true, float(np.exp(log_t))), bounds=(low, high), method="bounded"
    )
    return float(np.exp(result.x))


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the image-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    probs = np.asarray(probs, dtype=np.float64)
    if not len(probs):
        return float("nan")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    # bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of 0 joins the first bin
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in np.unique(which):
        members = which == b
        total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / len(probs))


def calibration_report(
    temperature: float, splits: dict[str, tuple[np.ndarray, np.ndarray]], *, fitted_on: str, reason: str = ""
) -> dict[str, Any]:
    """The metrics file's ``calibration`` entry: ``T``, where it was fitted, and per split (probabilities,
    true classes) its n, ECE and NLL before and after ``T``."""
    report: dict[str, Any] = {"temperature": round(temperature, 4), "fitted_on": fitted_on, "ece_bins": ECE_BINS}
    if reason:
        report["not_fitted"] = reason
    for name, (probs, y_true) in splits.items():
        if not len(probs):
            continue
        after = apply_temperature(probs, temperature)
        report[name] = {
            "n": int(len(probs)),
            "ece_before": round(expected_calibration_error(probs, y_true), 4),
            "ece_after": round(expected_calibration_error(after, y_true), 4),
            "nll_before": round(negative_log_likelihood(probs, y_true), 4),
            "nll_after": round(negative_log_likelihood(probs, y_true, temperature), 4),
        }
    return report


def fit_on_validation(
    val: tuple[np.ndarray, np.ndarray], others: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[float, dict[str, Any]]:
    """``T`` fitted on ``val`` (1.0 when it has too few images or one class) and the report on every split."""
    probs, y_true = val
    reason = ""
    if len(probs) < MIN_FIT_IMAGES:
        reason = f"{len(probs)} validation image(s), fewer than {MIN_FIT_IMAGES}"
    elif len(np.unique(y_true)) < 2:
        reason = "validation images of one class only"
    temperature = 1.0 if reason else fit_temperature(probs, y_true)
    return temperature, calibration_report(temperature, {"val": val, **others}, fitted_on="val", reason=reason)
