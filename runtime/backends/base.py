"""The one small interface every backend implements.

A :class:`Backend` says whether it can run here (:meth:`Backend.availability`), which files it reads
(``suffixes``, manifest ``formats``) and opens an artifact into a :class:`Session`. A session runs a
float32 NCHW 0-255 batch (and, for a model with clinical fields, the encoded answers: the graph's second input
``clinical``, float32 [N, F]) and returns the probabilities; it also reports the model card stored inside
the artifact, so the loader can check it against the manifest. Sessions must be safe to call from
several threads at once.

A backend also declares its *capabilities*, so that tools (``facederm-bench``, the overhead benchmark) ask
it instead of naming it: the library it imports (:attr:`Backend.library`), its device list and default
device, the options that make it compute in the artifact's own precision (:meth:`Backend.exact_options`),
its own benchmark program (:attr:`Backend.native_tool`) and its library call without facederm in between
(:meth:`Backend.bare_call`).
"""

from __future__ import annotations

import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..card import ModelCard
from ..errors import BackendUnavailableError, ClinicalError, MetadataMismatchError, ToolError


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
    def run(self, batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        """float32 (N, 3, H, W) 0-255, C-contiguous -> float32 (N, num_classes) probabilities.

        ``clinical``: float32 (N, F), the answers encoded by the card's clinical schema, fed to the graph's second
        input ``clinical``. For an artifact with clinical fields, None means nothing was answered: every field is
        encoded missing (:meth:`clinical_input`). An image-only artifact given clinical values raises
        :class:`~facederm.runtime.errors.ClinicalError`. ``N`` respects :attr:`static_batch` and :attr:`max_batch`;
        the model does the chunking.
        """

    def clinical_input(self, n: int, clinical: np.ndarray | None) -> np.ndarray | None:
        """The ``clinical`` graph input for a batch of ``n`` images: None for an image-only artifact (which refuses
        values), the all-missing encoding when the artifact has clinical fields and none are given, else
        ``clinical`` checked as float32 C-contiguous (n, F)."""
        schema = self.card.clinical
        if schema is None:
            if clinical is not None:
                raise ClinicalError(
                    "this artifact is image-only (trained without clinical fields): it takes no clinical values"
                )
            return None
        if clinical is None:
            return schema.missing_batch(n)
        return schema.check_array(clinical, n)

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release native resources early (GPU memory); the garbage collector does it otherwise."""


class NativeTool(ABC):
    """A backend's own benchmark program (OpenVINO's ``benchmark_app``): how to call it and read its figures."""

    #: The executable's name, looked up on PATH.
    name: ClassVar[str]
    #: Where it comes from, for the reason of a skipped figure.
    install_hint: ClassVar[str] = ""

    def executable(self) -> str | None:
        """The program's path, or None when it is not on PATH."""
        return shutil.which(self.name)

    @abstractmethod
    def command(
        self,
        path: str,
        *,
        device: str | None,
        threads: int,
        batch: int,
        input_size: int,
        seconds: float,
        options: Mapping[str, Any],
        extra_inputs: Mapping[str, tuple[int, ...]] | None = None,
    ) -> list[str]:
        """The argv timing ``path`` at ``batch`` (NCHW, square ``input_size``) for about ``seconds``, with the
        same threads and backend ``options`` (``precision_hint``) that facederm's own session gets.
        ``extra_inputs``: the other inputs' shapes without the batch (a clinical model's ``clinical``: (F,))."""

    @abstractmethod
    def parse(self, output: str) -> dict[str, float]:
        """``{"median_ms": ..., "throughput_ips": ...}`` (those found) from the program's output."""

    def run(self, argv: list[str], timeout_s: float) -> dict[str, float]:
        """Run ``argv`` (:meth:`command`) and read its figures; :class:`ToolError` when it fails or prints none."""
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ToolError(f"{self.name} did not finish within {timeout_s:.0f} s") from exc
        output = done.stdout + done.stderr
        figures = self.parse(output)
        if done.returncode != 0 or not figures:
            tail = [line.strip() for line in output.splitlines() if "rror" in line][-1:] or ["no figures in its output"]
            raise ToolError(f"{self.name} exited {done.returncode}: {tail[0]}")
        return figures


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
    #: Short name for narrow tables ("ort", "ov"); "" = the name.
    short_name: ClassVar[str] = ""
    #: The Python module the backend imports to run (benchmarks time its import apart from the cold load).
    library: ClassVar[str] = ""
    #: The backend's own benchmark program, where it has one (OpenVINO: benchmark_app).
    native_tool: ClassVar[NativeTool | None] = None
    #: Whether :meth:`bare_call` is implemented.
    has_bare_call: ClassVar[bool] = False
    #: Whether its int8 runs on x86 u8 x s8 kernels that saturate 8-bit weights without VNNI (runtime/cpu.py).
    x86_int8_kernels: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def availability(cls) -> tuple[bool, str]:
        """(available, reason). Must be cheap and never raise: it fills ``facederm-predict --list-backends``."""

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        """Device names accepted by :meth:`open` on this machine (empty when unavailable)."""
        return ()

    @classmethod
    def can_run_here(cls) -> bool:
        """True when :meth:`availability` says this backend runs on this machine."""
        return cls.availability()[0]

    @classmethod
    def default_device(cls) -> str:
        """The device a tool uses when none is asked for: the CPU where listed, else the first device."""
        try:
            devices = cls.devices()
        except Exception:  # a backend that cannot list its devices still runs on its default one
            devices = ()
        return next((d for d in devices if d.lower() == "cpu"), devices[0] if devices else "default")

    @classmethod
    def match_device(cls, requested: str | None) -> str | None:
        """This backend's name for ``requested`` ("cuda:1", "GPU"; None or "auto": :meth:`default_device`), or None when
        the backend has no such device here. Kinds compare case-insensitively; an index is kept."""
        if requested is None or requested.lower() == "auto":
            return cls.default_device()
        kind = requested.lower().split(":")[0].split(".")[0]
        try:
            devices = cls.devices()
        except Exception:
            return None
        found = next((d for d in devices if d.lower().split(":")[0].split(".")[0] == kind), None)
        return None if found is None else found[: len(kind)] + requested[len(kind) :]  # the backend's casing

    @classmethod
    def twin_options(cls) -> dict[str, Any]:
        """Options of :meth:`open` under which this backend runs another runtime's graph as that runtime computes it
        (a twin: the TensorRT Q/DQ graph by its exact arithmetic). Empty by default."""
        return {}

    @classmethod
    def exact_options(cls, precision: str) -> dict[str, Any]:
        """Options of :meth:`open` that make the device compute in ``precision`` itself, where it would otherwise
        pick another (OpenVINO computes fp32 artifacts in bf16 on AMX CPUs). Empty by default."""
        return {}

    @classmethod
    def bare_call(
        cls, path: Path, *, device: str | None, threads: int, options: Mapping[str, Any]
    ) -> Callable[[np.ndarray], Any]:
        """The backend library's own call on ``path`` (no facederm checks, conversions or chunking) with the
        session options facederm uses: what overhead is measured against. Only where :attr:`has_bare_call`."""
        raise NotImplementedError(f"backend {cls.name!r} has no bare call")

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


def check_clinical_input(card: ModelCard, has_input: bool, where: str) -> None:
    """The graph must have a ``clinical`` input exactly when its card has a clinical schema."""
    if card.clinical is not None and not has_input:
        raise MetadataMismatchError(f"{where}: its card has clinical fields but the graph has no 'clinical' input")
    if card.clinical is None and has_input:
        raise MetadataMismatchError(f"{where}: the graph has a 'clinical' input but its card has no clinical schema")


def artifact_suffix(path: Path) -> str:
    """Lower-case suffix; a directory bundle such as ``model.mlpackage`` keeps its own suffix."""
    return Path(path).suffix.lower()
