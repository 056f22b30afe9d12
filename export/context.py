"""What a target receives (:class:`BuildContext`) and what it hands back (:class:`BuiltArtifact`).

Every target module has the same shape: ``build(ctx) -> BuiltArtifact``, writing its files under
``ctx.workdir`` (a staging folder inside the export dir) at ``ctx.path``. The pipeline then validates the
artifact with ``BuiltArtifact.predict``, applies the parity gate, and moves the files into place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facederm.runtime.card import ModelCard

from .calibration import Calibration
from .options import ExportOptions

#: Runs an artifact (or its twin) on float32 NCHW 0-255 images; a model with clinical fields also takes the
#: images' encoded answers [N, F] as a second argument (omitted: nothing answered).
Predict = Callable[..., np.ndarray]


@dataclass
class BuildContext:
    """Inputs of one (target, precision) build.

    ``model`` is the fp32 :class:`~facederm.training.models.ProbabilityModel` in eval mode (image 0-255 in,
    probabilities out); ``shared`` is a per-export scratch dict so variants can reuse work (the fp32 ONNX
    graph is exported once and quantized several ways); ``scratch`` is a folder for such reusable files.
    """

    model: torch.nn.Module
    card: ModelCard
    precision: str
    path: str
    workdir: Path
    scratch: Path
    calibration: Calibration
    batch_size: int = 16
    options: ExportOptions = field(default_factory=ExportOptions)
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> Path:
        """Where the artifact's main file (or bundle folder) must be written."""
        out = self.workdir / self.path
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    @property
    def input_size(self) -> int:
        return self.card.input_size

    @property
    def quant_aware(self) -> dict[str, Any] | None:
        """The run's quantization-aware record (card ``data.training.quant_aware``; training/quant_aware.py), or
        None: its weights sit on an int8 grid that the int8 graphs must quantize onto exactly."""
        return quant_aware_record(self.card)

    @property
    def int8_weight_bits(self) -> int:
        """Weight bits of ONNX Runtime's and OpenVINO's int8: 7 for a quant-aware run with ``--int8-weight-bits auto``
        (its grid, levels -64..64: quantized exactly, and no x86 CPU saturates on it), else the options' width."""
        if self.quant_aware is not None and self.options.int8_weight_bits == "auto":
            return 7
        return self.options.weight_bits

    @property
    def weight_grid(self) -> int | None:
        """Levels ``L`` of a quant-aware run's weight grid (``-L..L`` steps of ``max|w| / L`` per output channel), which
        the int8 weights of every target are set to exactly; None for an ordinary run."""
        return int(self.quant_aware.get("weight_levels", 64)) if self.quant_aware is not None else None

    @property
    def float_layers(self) -> int:
        """How many leading convolutions the int8 graphs keep in float (a quant-aware run trained them so; 0 else)."""
        return len(self.quant_aware.get("float_layers", ())) if self.quant_aware is not None else 0


def quant_aware_record(card: ModelCard) -> dict[str, Any] | None:
    """A run's quantization-aware record (card ``data.training.quant_aware``; training/quant_aware.py), or None."""
    record = (card.data or {}).get("training", {}).get("quant_aware")
    return record if isinstance(record, dict) else None


@dataclass
class BuiltArtifact:
    """A built artifact, not yet validated or installed.

    ``predict`` runs the artifact (native) or its twin on float32 NCHW 0-255 batches; ``files`` lists extra
    files (relative to the export dir) that belong to it.
    """

    format: str
    predict: Predict
    validated: str  # "native" | "twin"
    validated_reason: str
    files: tuple[str, ...] = ()
    converter_versions: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] | None = None


def run_batched(fn: Predict, images: np.ndarray, batch_size: int, clinical: np.ndarray | None = None) -> np.ndarray:
    """Apply ``fn`` to ``images`` (and their clinical answers) in chunks (memory stays flat for any evaluation size)."""
    out = []
    for i in range(0, len(images), batch_size):
        batch = np.ascontiguousarray(images[i : i + batch_size])
        result = fn(batch) if clinical is None else fn(batch, np.ascontiguousarray(clinical[i : i + batch_size]))
        out.append(np.asarray(result, dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def torch_predict(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> Predict:
    """A predictor for a torch module taking 0-255 NCHW input (fp32 reference, or a Core ML twin), and a clinical
    model's answers as a second argument (None: the model's own "nothing answered" vector)."""

    def predict(batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(dtype)
            if clinical is None:
                return model(x).float().numpy()
            return model(x, torch.from_numpy(clinical).to(dtype)).float().numpy()

    return predict
