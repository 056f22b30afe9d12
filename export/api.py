"""The Python entry point of export: :func:`export_run` (the CLI ``facederm-export`` calls only this).

One call exports a run dir to every requested (target, precision), validates each artifact against
the fp32 torch model (the clinical parity gate) and writes ``manifest.json`` atomically after each one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from facederm.runtime.layout import MANIFEST_FILE, ArtifactRecord, Manifest

from .parity import DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT

__all__ = ["DEFAULT_CALIB_SIZE", "DEFAULT_MAX_DROP", "DEFAULT_MIN_AGREEMENT", "ExportResult", "export_run"]

#: Default cap on calibration inputs (class-stratified, patient-grouped, from every image the run trained on).
DEFAULT_CALIB_SIZE = 300

#: Default minimum deployment target of the Core ML packages (``coreml_target``): ``auto`` gives iOS16 to fp16 and
#: int8-weights and iOS18 to palettized weights (one lookup table per group of output channels: per-tensor tables,
#: all iOS16 allows, cannot hold Lite0's weights).
DEFAULT_COREML_TARGET = "auto"
COREML_TARGETS = ("auto", "iOS16", "iOS18")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` did: the manifest as written, and this call's records in order."""

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


def export_run(
    run_dir: str | Path,
    *,
    out_dir: str | Path,
    targets: Sequence[str] = ("all",),
    precisions: Sequence[str] | None = None,
    calib_data: str | None = None,
    eval_data: str | None = None,
    eval_views: int | str = "auto",
    calib_size: int = DEFAULT_CALIB_SIZE,
    max_drop: float = DEFAULT_MAX_DROP,
    max_class_drop: Mapping[str, float] | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    accuracy_control: bool = False,
    int8_search: bool = False,
    coreml_target: str = DEFAULT_COREML_TARGET,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
    on_record: Callable[[ArtifactRecord], None] | None = None,
) -> ExportResult:
    """Export the trained model in ``run_dir`` to ``out_dir``.

    - ``targets``: names or aliases (onnx/ort, openvino/ov, coreml/ios/mlpackage, tensorrt/trt/engine, all).
    - ``precisions``: e.g. ("fp32", "int8"); None: each target's defaults. A target that lacks a requested
      precision gets a skipped record saying so.
    - ``calib_data``: a data spec (``pad-ufes-20:DIR``, ``folder:DIR``, ``csv:FILE``, ``synthetic:N``); None: every
      image the run trained on (all stages), class-stratified and patient-grouped, filled with flipped views when
      fewer than ``calib_size``. Never an image or patient the gate judges on.
    - ``eval_data``: more held-out images for the gate's label-free agreement (added to the run's validation and
      test patients' images, all sites); the labelled effect is measured on the run's test images (on
      ``eval_data`` when the run records no split). ``eval_views``: views per image (1-4: identity, hflip, vflip,
      hvflip) or ``auto`` (enough for >= 300 compared inputs).
    - The fidelity gate (:mod:`facederm.export.parity`): the one-sided 95 % Clopper-Pearson lower bound of
      agreement with fp32 must reach ``min_agreement`` percent (0: off); the macro recall delta on the test images
      fails on evidence of harm: its patient-bootstrap 95 % CI entirely below 0, or a point drop beyond
      ``max_drop`` points with a CI that excludes 0; ``max_class_drop`` ({label: points}) adds point limits per
      class. A failing artifact is ``failed`` in the manifest with the reason in ``error`` and is not installed.
    - ``accuracy_control``: OpenVINO int8 via ``nncf.quantize_with_accuracy_control`` on the calibration images
      (metric: argmax agreement with fp32 within ``min_agreement``; macro recall within ``max_drop`` when it is 0).
    - ``int8_search``: ONNX Runtime int8 builds per-channel and per-tensor candidates and keeps the faster one
      that agrees with fp32 on the calibration images (default: per-channel only; both measured equally fast).
    - ``coreml_target``: minimum iOS of the Core ML packages: ``auto`` (iOS16, palettized packages iOS18), ``iOS16``
      or ``iOS18`` for every package (palettized
      weights then get one lookup table per group of output channels instead of one per tensor).
    - ``on_record``: called with each record as soon as it is in the manifest (the CLI prints progress with it).

    Returns an :class:`ExportResult`; it does not raise for failed or skipped artifacts (check ``result.ok``).
    Raises :class:`~facederm.runtime.errors.ConfigError` for bad options (unknown target, bad threshold) and
    :class:`~facederm.runtime.errors.ExportError` when calibration is impossible (a class without images).
    """
    from .pipeline import run_export

    return run_export(
        run_dir,
        out_dir=out_dir,
        targets=targets,
        precisions=precisions,
        calib_data=calib_data,
        eval_data=eval_data,
        eval_views=eval_views,
        calib_size=calib_size,
        max_drop=max_drop,
        max_class_drop=dict(max_class_drop or {}),
        min_agreement=min_agreement,
        accuracy_control=accuracy_control,
        int8_search=int8_search,
        coreml_target=coreml_target,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        on_record=on_record,
    )
