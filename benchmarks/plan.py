"""The plan: which rows a benchmark has and which measurements each row gets.

A row is one (artifact, backend, device). :func:`plan_rows` lists them from an export dir's manifest and
the runtime's backend registry (the baseline, torch fp32 eager, first); :func:`plan_steps` expands
them into the steps the progress bar counts, in the order they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facederm.runtime import backends as runtime_backends
from facederm.runtime.layout import ArtifactRecord, Manifest, Parity, resolve_inside

BASELINE_KEY = "torch:fp32@torch/cpu"
#: OpenVINO computes fp32 artifacts in bf16 by default on AMX / AVX-512 BF16 CPUs; the fp32 row asks for
#: fp32 so it is the fp32 figure (and so benchmark_app gets -infer_precision f32 too).
_OPENVINO_FP32_OPTIONS = {"precision_hint": "f32"}
_TENSORRT_TARGETS = ("tensorrt",)
_NOT_TENSORRT = "TensorRT's ONNX graph run by onnxruntime: the twin's numbers, NOT TensorRT speed"


@dataclass(frozen=True)
class RowSpec:
    """Everything a row's measurements need to know about it; JSON-able (it is sent to the worker)."""

    key: str
    artifact: str
    target: str
    precision: str
    runner: str  # "torch" | "runtime" | "" (nothing runs here)
    backend: str
    device: str
    path: str  # absolute path the worker opens
    display_path: str  # relative to the export dir (or run dir) for the report
    options: dict[str, Any] = field(default_factory=dict)
    validated: str = "native"
    note: str = ""
    size_bytes: int | None = None
    speed_skip: str = ""  # why speed is not measured here ("" = it is)
    accuracy_skip: str = ""  # why accuracy is not measured here ("" = it is)
    failed: str = ""  # the artifact itself failed at export (manifest status)
    parity: dict[str, Any] | None = None  # the export's parity record (twin rows)
    parity_validated: str = "none"

    @property
    def runs_here(self) -> bool:
        return not self.speed_skip and not self.failed and bool(self.runner)

    @property
    def is_baseline(self) -> bool:
        return self.runner == "torch"


def baseline_row(run_dir: Path | None, skip: str = "") -> RowSpec:
    """The torch fp32 eager row (always first). ``skip`` when no run dir holds the weights."""
    weights = run_dir / "model.safetensors" if run_dir else None
    size = weights.stat().st_size if weights and weights.is_file() else None
    return RowSpec(
        key=BASELINE_KEY,
        artifact="torch:fp32",
        target="torch",
        precision="fp32",
        runner="torch" if not skip else "",
        backend="torch",
        device="cpu",
        path=str(run_dir or ""),
        display_path="model.safetensors" if run_dir else "",
        note="eager, channels_last, inference_mode",
        size_bytes=size,
        speed_skip=skip,
        accuracy_skip=skip,
    )


def _parity_dict(parity: Parity | None) -> dict[str, Any] | None:
    from facederm.runtime.schema import to_dict

    return to_dict(parity) if parity is not None else None


def _size(record: ArtifactRecord) -> int:
    return record.bytes + sum(f.bytes for f in record.files)


def _artifact_rows(root: Path, record: ArtifactRecord, wanted: set[str] | None) -> list[RowSpec]:
    """One row per backend that reads ``record``; unavailable backends still get a row, skipped."""
    path = resolve_inside(root, record.path)
    rows = []
    readers = runtime_backends.readers(path, record.format)
    for backend in readers:
        if wanted is not None and backend.name not in wanted:
            continue
        available, reason = backend.availability()
        device = _default_device(backend) if available else "-"
        options = dict(_OPENVINO_FP32_OPTIONS) if backend.name == "openvino" and record.precision == "fp32" else {}
        twin = record.validated == "twin"
        rows.append(
            RowSpec(
                key=f"{record.key}@{backend.name}/{device}",
                artifact=record.key,
                target=record.target,
                precision=record.precision,
                runner="runtime" if available else "",
                backend=backend.name,
                device=device,
                path=str(path),
                display_path=record.path,
                options=options,
                validated=_validated(record, backend.name, available),
                note=_row_note(record, backend.name, available, options),
                size_bytes=_size(record),
                speed_skip="" if available else f"{backend.name} unavailable: {reason}",
                accuracy_skip="" if available or twin else f"{backend.name} unavailable and the export has no twin figures",
                failed=f"export failed: {record.error or 'no reason recorded'}" if record.status == "failed" else "",
                parity=_parity_dict(record.parity),
                parity_validated=record.validated,
            )
        )
    if not readers:
        rows.append(_unreadable_row(record))
    rows.extend(_qdq_rows(root, record, wanted))
    return rows


def _row_note(record: ArtifactRecord, backend: str, available: bool, options: dict[str, Any]) -> str:
    notes = []
    if record.target in _TENSORRT_TARGETS and backend == "onnxruntime":
        notes.append(_NOT_TENSORRT)
    if options.get("precision_hint"):
        notes.append(f"INFERENCE_PRECISION_HINT={options['precision_hint']}")
    if not available and record.validated == "twin":
        notes.append(f"accuracy from the export's twin ({record.validated_reason or 'twin'})")
    return "; ".join(notes)


def _validated(record: ArtifactRecord, backend: str, available: bool) -> str:
    if record.target in _TENSORRT_TARGETS and backend == "onnxruntime":
        return "twin"  # TensorRT's graph in onnxruntime is the twin, whatever runs it
    if available:
        return "native"
    return "twin" if record.validated == "twin" else "none"


def _unreadable_row(record: ArtifactRecord) -> RowSpec:
    reason = f"no facederm backend reads format {record.format or record.path!r}"
    return RowSpec(key=f"{record.key}@-/-", artifact=record.key, target=record.target, precision=record.precision,
                   runner="", backend="-", device="-", path="", display_path=record.path, size_bytes=_size(record),
                   speed_skip=reason, accuracy_skip=reason, validated="none")


def _skipped_row(record: ArtifactRecord) -> RowSpec:
    """An artifact the export skipped (a missing converter): a row that says so, with any twin figures."""
    reason = f"export skipped it: {record.error or record.validated_reason or 'no reason recorded'}"
    twin = record.validated == "twin" and record.parity is not None
    return RowSpec(key=f"{record.key}@-/-", artifact=record.key, target=record.target, precision=record.precision,
                   runner="", backend="-", device="-", path="", display_path=record.path, size_bytes=_size(record) or None,
                   speed_skip=reason, accuracy_skip="" if twin else reason, validated="twin" if twin else "none",
                   parity=_parity_dict(record.parity), parity_validated=record.validated)


def _qdq_rows(root: Path, record: ArtifactRecord, wanted: set[str] | None) -> list[RowSpec]:
    """A TensorRT artifact's explicit Q/DQ ONNX graph, timed in onnxruntime and labelled as such.

    It is the TensorRT twin's graph (symmetric int8): its onnxruntime speed says nothing about TensorRT's.
    """
    if record.target != "tensorrt" or (wanted is not None and "onnxruntime" not in wanted):
        return []
    # When the record itself is the ONNX graph, onnxruntime already has a row for it (labelled in _row_note).
    onnx_files = [f for f in record.files if f.path.endswith(".onnx")] if not record.path.endswith(".onnx") else []
    available, reason = runtime_backends.get("onnxruntime").availability()
    rows = []
    for entry in onnx_files:
        rows.append(
            RowSpec(
                key=f"{record.key}/qdq-onnx@onnxruntime/cpu",
                artifact=f"{record.key}/qdq-onnx",
                target=record.target,
                precision=record.precision,
                runner="runtime" if available else "",
                backend="onnxruntime",
                device="cpu",
                path=str(resolve_inside(root, entry.path)),
                display_path=entry.path,
                validated="twin",
                note=_NOT_TENSORRT,
                size_bytes=entry.bytes,
                speed_skip="" if available else reason,
                accuracy_skip="" if available else reason,
                failed=f"export failed: {record.error}" if record.status == "failed" else "",
            )
        )
    return rows


def _default_device(backend: type) -> str:
    try:
        devices = backend.devices()
    except Exception:  # a backend that cannot list devices still runs on its default one
        devices = ()
    for cpu in ("cpu", "CPU"):
        if cpu in devices:
            return cpu
    return devices[0] if devices else "default"


def plan_rows(
    export_dir: Path, manifest: Manifest, run_dir: Path | None, backends: list[str] | None = None
) -> list[RowSpec]:
    """The baseline row, then one row per (artifact, backend) of ``manifest``; ``backends`` filters."""
    wanted = set(backends) if backends else None
    skip = "" if run_dir and (run_dir / "model.safetensors").is_file() else "no run dir with the torch weights (pass --run RUN)"
    rows = [baseline_row(run_dir, skip)] if wanted is None or "torch" in wanted else []
    for record in manifest.artifacts:
        if record.status == "skipped":
            rows.append(_skipped_row(record))
        else:
            rows.extend(_artifact_rows(export_dir, record, wanted))
    return rows
