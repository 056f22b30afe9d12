"""facederm.training: data, models, training, evaluation and explanations (needs the ``train`` extra).

The main entry points are importable from here lazily (importing this package stays cheap):
``train``, ``TrainConfig``, ``TrainResult``, ``predict_probabilities``, ``explain``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "train": ".trainer",
    "TrainResult": ".trainer",
    "TrainConfig": ".config",
    "predict_probabilities": ".evaluate",
    "explain": ".gradcam",
    "GradCAM": ".gradcam",
    "create_model": ".models",
    "load_run": ".rundir",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
