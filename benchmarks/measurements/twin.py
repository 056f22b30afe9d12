"""Twin accuracy: rows whose backend cannot run here (Core ML off macOS, TensorRT without a GPU) take
their accuracy from the export's parity record, computed on a twin (the same compression in torch, or
the Q/DQ graph in onnxruntime). Figures the record lacks stay null; every figure says it is a twin's."""

from __future__ import annotations

from typing import Any

from ..plan import RowSpec
from .base import Measurement, Settings, register


@register
class TwinAccuracy(Measurement):
    name = "twin"
    where = "parent"
    every_repeat = False
    describe = "accuracy columns from the export's twin parity figures (validated=twin)"

    def applies(self, row: RowSpec) -> bool:
        return not row.runner  # rows that run here are scored natively

    def skip_reason(self, row: RowSpec, settings: Settings) -> str:
        if row.parity is None or row.parity_validated != "twin":
            return row.accuracy_skip or "the export recorded no twin parity figures"
        return ""

    def run(self, ctx: Any) -> dict[str, Any]:
        parity: dict[str, Any] = ctx.row.parity
        reference = ctx.reference_accuracy()
        deltas = {k: v for k, v in parity.get("per_class_recall_delta", {}).items()}
        per_class: dict[str, Any] = {}
        same_images = reference is not None and reference.get("n_images") == parity.get("n_images")
        for label, delta in deltas.items():
            base = (reference or {}).get("per_class_recall", {}).get(label) if same_images else None
            per_class[label] = base + delta if base is not None and delta is not None else None
        ci = list(parity.get("macro_recall_delta_ci") or [None, None])
        return {
            "validated": "twin",
            "source": f"export parity (twin) on {parity.get('eval_data') or 'the export evaluation set'}",
            "n_images": int(parity.get("n_images", 0)), "n_patients": int(parity.get("n_patients", 0)),
            "macro_recall": parity.get("macro_recall"), "macro_precision": None, "auc_macro": None,
            "per_class_recall": per_class, "agreement": parity.get("agreement"),
            "delta_macro_recall": parity.get("macro_recall_delta"), "delta_macro_recall_ci": ci[:2],
            "per_class_recall_delta": deltas, "max_abs_prob_delta": parity.get("max_abs_prob_delta"),
            "reference": "torch fp32 (export parity)",
        }
