"""Probabilities for every evaluation image (first repeat only); the parent scores them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import Measurement, Settings, register
from ..plan import RowSpec

CHUNK = 16


def scored_natively(row: RowSpec) -> bool:
    """Rows whose accuracy is computed here; twin rows are scored from the export's parity figures."""
    return bool(row.runner) or not row.parity


def native_scoring_skip(row: RowSpec, settings: Settings) -> str:
    """Why a row's probabilities cannot be computed and scored here ("" when they can)."""
    if row.accuracy_skip or not row.runner or row.failed:
        return row.failed or row.accuracy_skip or row.speed_skip
    return "" if settings.eval_tensor else "no evaluation data (pass --data)"


def probabilities_path(settings: Settings, row: RowSpec) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in row.key)
    return Path(settings.work_dir) / f"probs-{safe}.npy"


@register
class Predict(Measurement):
    name = "predict"
    where = "worker"
    every_repeat = False
    describe = "probabilities on every evaluation image, saved for scoring"

    def applies(self, row: RowSpec) -> bool:
        return scored_natively(row)

    def skip_reason(self, row: RowSpec, settings: Settings) -> str:
        return native_scoring_skip(row, settings)

    def run(self, ctx: Any) -> dict[str, Any]:
        images = np.load(ctx.settings.eval_tensor, mmap_mode="r")
        out = [ctx.opened.run(np.ascontiguousarray(images[i : i + CHUNK], dtype=np.float32))
               for i in range(0, len(images), CHUNK)]
        probs = np.concatenate(out).astype(np.float32)
        path = probabilities_path(ctx.settings, ctx.row)
        np.save(path, probs)
        return {"probabilities": str(path), "n_images": int(len(probs))}
