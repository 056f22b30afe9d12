"""Core ML: .mlpackage / .mlmodel on macOS (CPU, GPU, Neural Engine).

coremltools installs on Linux and converts there, but ``MLModel.predict`` only runs on macOS, so
elsewhere this backend reports itself unavailable and says so.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError
from ..metadata import CLINICAL_INPUT_NAME, INPUT_NAME, OUTPUT_NAME, card_from_metadata
from . import register
from .base import Backend, Session, check_clinical_input

# facederm device name -> coremltools.ComputeUnit member name.
_COMPUTE_UNITS = {
    "all": "ALL",
    "cpu": "CPU_ONLY",
    "cpu+gpu": "CPU_AND_GPU",
    "cpu+ne": "CPU_AND_NE",
    "ane": "CPU_AND_NE",
}


@register
class CoreMlBackend(Backend):
    name = "coreml"
    suffixes = (".mlpackage", ".mlmodel")
    formats = ("mlpackage", "coreml", "mlmodel")
    kind = "Core ML packages"
    priority = 10
    short_name = "coreml"
    library = "coremltools"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if sys.platform != "darwin":
            return False, f"Core ML runs only on macOS (this is {sys.platform}); use onnxruntime or openvino here"
        if importlib.util.find_spec("coremltools") is None:
            return False, "coremltools is not installed: pip install 'facederm[coreml]'"
        return True, "macOS with coremltools"

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        return tuple(_COMPUTE_UNITS)

    @classmethod
    def open(cls, path: Path, *, device: str | None, options: Mapping[str, Any]) -> Session:
        cls.require_available(path)
        return CoreMlSession(path, device, options)


class CoreMlSession(Session):
    """Core ML takes one RGB image per predict call (ImageType input), so batches are looped; a clinical model's
    answers go in beside it as the MultiArray input ``clinical`` (float32 [1, F])."""

    static_batch = 1

    def __init__(self, path: Path, device: str | None, options: Mapping[str, Any]) -> None:
        import coremltools as ct
        from PIL import Image

        self._image = Image
        self.device = (device or "all").lower()
        if self.device not in _COMPUTE_UNITS:
            raise ConfigError(f"coreml: unknown device {device!r}; use one of {', '.join(_COMPUTE_UNITS)}")
        try:
            self._model = ct.models.MLModel(
                str(path), compute_units=getattr(ct.ComputeUnit, _COMPUTE_UNITS[self.device])
            )
        except Exception as exc:
            raise ArtifactError(f"{path}: Core ML cannot load it: {exc}") from exc
        self.card = card_from_metadata(dict(self._model.user_defined_metadata), str(path))
        inputs = {i.name for i in self._model.get_spec().description.input}
        check_clinical_input(self.card, CLINICAL_INPUT_NAME in inputs, str(path))
        self._labels = list(self.card.labels)
        self._lock = threading.Lock()  # MLModel.predict is not documented as thread-safe

    def run(self, batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        answers = self.clinical_input(len(batch), clinical)
        out = np.empty((len(batch), len(self._labels)), dtype=np.float32)
        for i, chw in enumerate(batch):
            rgb = np.clip(chw.transpose(1, 2, 0), 0, 255).astype(np.uint8)
            feed: dict[str, Any] = {INPUT_NAME: self._image.fromarray(rgb, "RGB")}
            if answers is not None:
                feed[CLINICAL_INPUT_NAME] = answers[i : i + 1]
            with self._lock:
                result = self._model.predict(feed)
            out[i] = self._probabilities(result)
        return out

    def _probabilities(self, result: Mapping[str, Any]) -> np.ndarray:
        value = result.get(OUTPUT_NAME)
        if value is None:  # a classifier names its dict output after the probabilities output
            value = next(v for v in result.values() if isinstance(v, (dict, np.ndarray)))
        if isinstance(value, dict):  # ClassifierConfig: {label: probability}
            return np.array([value[label] for label in self._labels], dtype=np.float32)
        return np.asarray(value, dtype=np.float32).reshape(-1)
