"""The one small interface every backend implements.

A :class:`Backend` says whether it can run here (:meth:`Backend.availability`), which files it reads
(``suffixes``, manifest ``formats``) and opens an artifact into a :class:`Session`. A session runs a
float32 NCHW 0-255 batch and returns the probabilities; it also reports the model card stored inside
the artifact, so the loader can check it against the manifest. Sessions must be safe to call from
several threads at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..card import ModelCard
from ..errors import BackendUnavailableError


@dataclass(frozen=True)
class BackendInfo:
    """Whether a backend can run on this machine, and if not, why (with what to install)."""

    name: str
    available: bool
    reason: str
    suffixes: tuple[str, ...]
    devices: tuple[str, ...]


class Session(ABC):
    """An artifact opened by a backend, ready to run. Thread-safe."""

    #: The model card read from the artifact's own metadata.
    card: ModelCard
    #: Device the session runs on, as the backend names it ("cpu", "CPU", "cuda:0", ...).
    device: str
    #: Batch size baked into the graph, or None when the batch dimension is dynamic.
    static_batch: int | None = None
    #: Largest batch the artifact accepts in one call (e.g. a TensorRT profile's max), None: unbounded.
    max_batch: int | None = None
    #: Precision the device actually computes in when it differs from the artifact (OpenVINO: bf16 on AMX CPUs).
    compute_precision: str | None = None

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, H, W) 0-255, C-contiguous -> float32 (N, num_classes) probabilities.

        ``N`` respects :attr:`static_batch` and :attr:`max_batch`; the model does the chunking.
        """

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release native resources early (GPU memory); the garbage collector does it otherwise."""


class Backend(ABC):
    """A runtime that can execute some artifact formats. Subclasses register in ``backends.registry``."""

    name: ClassVar[str]
    #: File suffixes this backend reads, lower case with the dot (".onnx", ".xml", ".mlpackage").
    suffixes: ClassVar[tuple[str, ...]]
    #: ``ArtifactRecord.format`` values this backend reads ("onnx", "ort", "openvino", ...).
    formats: ClassVar[tuple[str, ...]]
    #: Human name of the file kind, for error messages ("ONNX", "OpenVINO IR").
    kind: ClassVar[str]
    #: Lower runs first when several available backends can run the same artifact.
    priority: ClassVar[int] = 50

    @classmethod
    @abstractmethod
    def availability(cls) -> tuple[bool, str]:
        """(available, reason). Must be cheap and never raise: it fills ``facederm-predict --list-backends``."""

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        """Device names accepted by :meth:`open` on this machine (empty when unavailable)."""
        return ()

    @classmethod
    def info(cls) -> BackendInfo:
        available, reason = cls.availability()
        return BackendInfo(cls.name, available, reason, cls.suffixes, cls.devices() if available else ())

    @classmethod
    def require_available(cls, path: Path) -> None:
        """Raise :class:`BackendUnavailableError` naming ``path`` and the reason when this backend cannot run here."""
        available, reason = cls.availability()
        if not available:
            raise BackendUnavailableError(f"{path}: {reason}")

    @classmethod
    def reads(cls, path: Path, fmt: str = "") -> bool:
        """True when this backend can read the file, judged by manifest format or else by suffix."""
        if fmt:
            return fmt in cls.formats
        return artifact_suffix(path) in cls.suffixes

    @classmethod
    @abstractmethod
    def open(cls, path: Path, *, device: str | None, options: Mapping[str, Any]) -> Session:
        """Open ``path`` on ``device`` (None: the best device here). Raises a FacedermError subclass."""


def artifact_suffix(path: Path) -> str:
    """Lower-case suffix; a directory bundle such as ``model.mlpackage`` keeps its own suffix."""
    return Path(path).suffix.lower()
