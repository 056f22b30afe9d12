"""Native accuracy: score a row's probabilities on the evaluation images with facederm.training.metrics,
and compare them with the reference row through export's parity computation (agreement, max |delta p|,
per-class and macro recall deltas, patient-bootstrap CI): the same figures the export gate uses."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..plan import RowSpec
from .base import Measurement, Settings, register
from .predict import native_scoring_skip, scored_natively


def score(y_true: np.ndarray, probs: np.ndarray, labels: tuple[str, ...], groups: np.ndarray,
          reference: np.ndarray | None, reference_key: str) -> dict[str, Any]:
    """Every accuracy column of a row (fractions; NaN -> None)."""
    from facederm.training.metrics import classification_report

    report = classification_report(y_true, probs, labels, groups, n_boot=0)
    per_class = {label: report["per_class"][label]["recall"] for label in labels}
    out: dict[str, Any] = {
        "macro_recall": report["macro_recall"], "macro_precision": report["macro_precision"],
        "auc_macro": report["auc_macro"], "per_class_recall": per_class,
        "n_images": report["n_images"], "n_patients": report["n_patients"], "reference": reference_key,
        "agreement": None, "delta_macro_recall": None, "delta_macro_recall_ci": [None, None],
        "per_class_recall_delta": {}, "max_abs_prob_delta": None,
    }
    if reference is not None:
        # The export's parity figures, computed the same way (one implementation of the gate's numbers).
        from facederm.export.parity import compute_parity

        parity = compute_parity(reference, probs, y_true, list(groups), labels)
        ci = list(parity.macro_recall_delta_ci) + [None, None]
        out.update(agreement=parity.agreement, max_abs_prob_delta=parity.max_abs_prob_delta,
                   delta_macro_recall=parity.macro_recall_delta, delta_macro_recall_ci=ci[:2],
                   per_class_recall_delta={label: parity.per_class_recall_delta.get(label) for label in labels})
    return out


@register
class NativeAccuracy(Measurement):
    name = "accuracy"
    where = "parent"
    every_repeat = False
    describe = "macro recall / precision, per-class recall, macro AUC; agreement and delta vs the reference"

    def applies(self, row: RowSpec) -> bool:
        return scored_natively(row)

    def skip_reason(self, row: RowSpec, settings: Settings) -> str:
        return native_scoring_skip(row, settings)

    def run(self, ctx: Any) -> dict[str, Any]:
        predicted = ctx.measured.first("predict")
        if not predicted.get("probabilities"):
            raise RuntimeError(predicted.get("error") or "no probabilities were produced")
        probs = np.load(predicted["probabilities"])
        reference = ctx.reference_probabilities()
        if ctx.row.key == ctx.reference_key:
            reference = probs
        ev = ctx.eval
        twin = ctx.row.validated == "twin"  # e.g. TensorRT's graph run by onnxruntime
        source = f"{ctx.row.backend} on this machine" + (" (twin of the target's runtime)" if twin else "")
        return {**score(ev.y_true, probs, ev.info.labels, ev.groups, reference, ctx.reference_key),
                "validated": "twin" if twin else "native", "source": source}
