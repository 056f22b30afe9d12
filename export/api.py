"""The Python entry point of export: :func:`export_run` (the CLI ``facederm-export`` calls only this).

One call exports a run dir to every requested (target, precision), validates each artifact against
the fp32 torch model (the clinical parity gate) and writes the manifest atomically after each one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from facederm.runtime.layout import ArtifactRecord

from .options import DEFAULT_CALIB_SIZE, ExportOptions, ExportResult
from .parity import DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT

__all__ = [
    "DEFAULT_CALIB_SIZE",
    "DEFAULT_MAX_DROP",
    "DEFAULT_MIN_AGREEMENT",
    "ExportOptions",
    "ExportResult",
    "export_run",
]


def export_run(
    run_dir: str | Path,
    *,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    progress: bool = False,
    on_record: Callable[[ArtifactRecord], None] | None = None,
    **option_values: Any,
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
    - ``int8_weight_bits``: ``auto`` (default), 7 or 8 bits for the weights of ONNX Runtime's and OpenVINO's int8
      (web int8 always 7): 8 is more faithful on CPUs with exact u8 x s8 products (VNNI, AMX, ARM) and saturates
      on x86 without VNNI; ``auto`` takes 8 where this machine's products are exact (so the gate measures them)
      and 7 elsewhere. Each int8 artifact records its ``weight_bits``.
    - ``coreml_target``: minimum iOS of the Core ML packages: ``auto`` (iOS16, palettized packages iOS18), ``iOS16``
      or ``iOS18`` for every package (palettized weights then get one lookup table per group of output channels
      instead of one per tensor).
    - ``on_record``: called with each record as soon as it is in the manifest (the CLI prints progress with it).

    Options come as an :class:`ExportOptions` (``options``), as keywords (``targets=["onnx"]``), or both (keywords
    win). Returns an :class:`ExportResult`; it does not raise for failed or skipped artifacts (check ``result.ok``).
    Raises :class:`~facederm.runtime.errors.ConfigError` for bad options (unknown target, bad threshold) and
    :class:`~facederm.runtime.errors.ExportError` when calibration is impossible (a class without images).
    """
    from .pipeline import run_export  # torch and the converters load only when an export really runs

    chosen = (options or ExportOptions()).replace(**option_values)
    return run_export(run_dir, out_dir=out_dir, options=chosen, progress=progress, on_record=on_record)
