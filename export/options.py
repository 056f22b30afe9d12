"""What an export is asked to do (:class:`ExportOptions`) and what it did (:class:`ExportResult`).

One options object travels from the CLI through :func:`facederm.export.export_run` and the pipeline into each
target's :class:`~facederm.export.context.BuildContext`; it is validated once, here, and written into the
manifest (``Manifest.options``) so an export dir says how it was made. Light on purpose: no torch, no converter
(``facederm-export --help`` stays fast).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facederm.runtime.errors import ConfigError
from facederm.runtime.layout import MANIFEST_FILE, ArtifactRecord, Manifest

from .calibration import VIEWS
from .parity import DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT, GateRules

#: Default cap on calibration inputs (class-stratified, patient-grouped, from every image the run trained on).
DEFAULT_CALIB_SIZE = 300

#: Default minimum deployment target of the Core ML packages (``coreml_target``): ``auto`` gives iOS16 to fp16 and
#: int8-weights and iOS18 to palettized weights (one lookup table per group of output channels: per-tensor tables,
#: all iOS16 allows, cannot hold Lite0's weights).
DEFAULT_COREML_TARGET = "auto"
COREML_TARGETS = ("auto", "iOS16", "iOS18")
#: ``int8_weight_bits`` of ONNX Runtime's and OpenVINO's int8 (``auto``: see :attr:`ExportOptions.weight_bits`).
INT8_WEIGHT_BITS_CHOICES = ("auto", "7", "8")
#: ``eval_views``: flipped views per agreement image (identity, hflip, vflip, hvflip), or ``auto``.
MAX_EVAL_VIEWS = len(VIEWS)


@dataclass(frozen=True)
class ExportOptions:
    """Every choice of one export, validated on construction (a bad value raises :class:`ConfigError` naming the
    flag). Fields mirror ``facederm-export``'s flags; see :func:`facederm.export.export_run` for their meaning."""

    targets: tuple[str, ...] = ("all",)
    precisions: tuple[str, ...] | None = None  # None: each target's defaults
    calib_data: str | None = None
    eval_data: str | None = None
    eval_views: int | str = "auto"
    calib_size: int = DEFAULT_CALIB_SIZE
    max_drop: float = DEFAULT_MAX_DROP
    max_class_drop: Mapping[str, float] = field(default_factory=dict)
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    accuracy_control: bool = False
    int8_search: bool = False
    # ONNX Runtime / OpenVINO int8 weights: 7 (every CPU decides alike), 8 (exact on VNNI, AMX, ARM), or auto:
    # 8 where this machine's products are exact (the gate then measures that arithmetic), else 7
    int8_weight_bits: int | str = "auto"
    ensemble: bool = False  # run_dir is a CV dir: export its folds as one graph
    coreml_target: str = DEFAULT_COREML_TARGET
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        # Normalise the forms callers naturally pass (a single string, a list) to the canonical ones.
        set_ = object.__setattr__
        set_(self, "targets", (self.targets,) if isinstance(self.targets, str) else tuple(self.targets))
        if self.precisions is not None:
            given = (self.precisions,) if isinstance(self.precisions, str) else tuple(self.precisions)
            set_(self, "precisions", given or None)
        set_(self, "max_class_drop", {str(k): float(v) for k, v in dict(self.max_class_drop).items()})
        set_(self, "eval_views", _eval_views(self.eval_views))
        set_(self, "coreml_target", _coreml_target(self.coreml_target))
        if not self.targets:
            raise ConfigError("no export target given; use --target onnx|openvino|coreml|tensorrt|all")
        if self.calib_size < 1:
            raise ConfigError(f"--calib-size must be >= 1, got {self.calib_size}")
        if str(self.int8_weight_bits) not in INT8_WEIGHT_BITS_CHOICES:
            raise ConfigError(f"--int8-weight-bits must be auto, 7 or 8, got {self.int8_weight_bits}")
        if self.int8_weight_bits != "auto":
            set_(self, "int8_weight_bits", int(self.int8_weight_bits))
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        self.gate_rules()  # checks --min-agreement, --max-drop

    @property
    def weight_bits(self) -> int:
        """The int8 weight bits this export uses: ``int8_weight_bits``, with ``auto`` resolved on this machine."""
        if self.int8_weight_bits != "auto":
            return int(self.int8_weight_bits)
        from facederm.runtime.cpu import exact_int8_products

        return 8 if exact_int8_products() else 7

    def gate_rules(self) -> GateRules:
        """The fidelity gate's thresholds (:mod:`facederm.export.parity`)."""
        return GateRules(
            min_agreement=self.min_agreement, max_drop=self.max_drop, max_class_drop=dict(self.max_class_drop)
        )

    def replace(self, **changes: Any) -> ExportOptions:
        """A copy with ``changes``; an unknown name is a :class:`ConfigError` listing the known ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown export option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the manifest."""
        data = dataclasses.asdict(self)
        data["targets"] = list(self.targets)
        data["precisions"] = list(self.precisions) if self.precisions else None
        return data


def _eval_views(value: int | str) -> int | str:
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        views = int(text)
    except ValueError:
        views = 0
    if not 1 <= views <= MAX_EVAL_VIEWS:
        raise ConfigError(f"--eval-views {value!r}: expected auto or 1..{MAX_EVAL_VIEWS}")
    return views


def _coreml_target(name: str) -> str:
    for known in COREML_TARGETS:
        if str(name).strip().lower() == known.lower():
            return known
    raise ConfigError(f"--coreml-target {name!r}: expected one of {', '.join(COREML_TARGETS)}")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`~facederm.export.export_run` did: the manifest as written, and this call's records in order."""

    manifest: Manifest
    records: tuple[ArtifactRecord, ...]
    out_dir: Path

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST_FILE

    @property
    def ok(self) -> bool:
        """True when no artifact of this call failed (skipped ones, e.g. a missing backend, are fine)."""
        return not self.failed

    @property
    def failed(self) -> tuple[ArtifactRecord, ...]:
        return tuple(r for r in self.records if r.status == "failed")

    @property
    def skipped(self) -> tuple[ArtifactRecord, ...]:
        return tuple(r for r in self.records if r.status == "skipped")
