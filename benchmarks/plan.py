"""The plan: which rows a benchmark has. A row is one (artifact, backend, device).

:func:`plan_rows` lists them from an export dir's manifest and the runtime's backend registry, the baseline
(torch fp32 eager) first. Backends are asked, never named: which files they read, whether they run here, their
default device, the options that make them compute in the artifact's own precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facederm.runtime import backends as runtime_backends
from facederm.runtime.backends import Backend
from facederm.runtime.layout import WEIGHTS_FILE, ArtifactRecord, Manifest, resolve_inside
from facederm.runtime.schema import to_dict

BASELINE_KEY = "torch:fp32@torch/cpu"


@dataclass(frozen=True)
class RowSpec:
    """Everything a row's measurements need to know about it; JSON-able (it is sent to the worker)."""

    key: str
    artifact: str
    target: str
    precision: str
    runner: str  # "torch" | "runtime" | "" (nothing runs here): a key of measure.RUNNERS
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


def baseline_row(run_dir: Path | None) -> RowSpec:
    """The torch fp32 eager row (always first); skipped when no run dir holds the weights."""
    weights = run_dir / WEIGHTS_FILE if run_dir else None
    skip = "" if weights and weights.is_file() else "no run dir with the torch weights (pass --run RUN)"
    return RowSpec(
        key=BASELINE_KEY,
        artifact="torch:fp32",
        target="torch",
        precision="fp32",
        runner="" if skip else "torch",
        backend="torch",
        device="cpu",
        path=str(run_dir or ""),
        display_path=WEIGHTS_FILE if run_dir else "",
        note="eager, channels_last, inference_mode",
        size_bytes=weights.stat().st_size if not skip else None,
        speed_skip=skip,
        accuracy_skip=skip,
    )


def _backend_row(
    record: ArtifactRecord,
    backend: type[Backend],
    path: Path,
    display_path: str,
    *,
    artifact: str,
    size: int,
    validated: str,
    device: str | None,
) -> RowSpec:
    """One artifact (or one graph of an artifact) on one backend; a backend that cannot run here still gets a row."""
    available, reason = backend.availability()
    chosen = backend.match_device(device) if available else "-"
    if chosen is None:
        available, chosen = False, "-"
        reason = f"no device {device!r} here (it has {', '.join(backend.devices()) or 'none'})"
    options = backend.exact_options(record.precision) if available else {}
    if validated == "twin" and available:
        options.update(backend.twin_options())
    has_twin_figures = record.validated == "twin" and record.parity is not None
    notes = [f"{k}={v}" for k, v in options.items()]
    if validated == "twin" and available:
        notes.insert(0, f"{record.target}'s twin run by {backend.name}: the twin's numbers, NOT {record.target} speed")
    if not available and has_twin_figures:
        notes.append(f"accuracy from the export's twin ({record.validated_reason or 'twin'})")
    return RowSpec(
        key=f"{artifact}@{backend.name}/{chosen}",
        artifact=artifact,
        target=record.target,
        precision=record.precision,
        runner="runtime" if available else "",
        backend=backend.name,
        device=chosen,
        path=str(path),
        display_path=display_path,
        options=options,
        validated=validated if available else ("twin" if has_twin_figures else "none"),
        note="; ".join(notes),
        size_bytes=size,
        speed_skip="" if available else f"{backend.name} unavailable: {reason}",
        accuracy_skip=""
        if available or has_twin_figures
        else f"{backend.name} unavailable and the export has no twin figures",
        failed=f"export failed: {record.error or 'no reason recorded'}" if record.status == "failed" else "",
        parity=to_dict(record.parity) if record.parity is not None else None,
        parity_validated=record.validated,
    )


def _placeholder_row(record: ArtifactRecord, reason: str) -> RowSpec:
    """An artifact nothing here reads, or one the export skipped: a row that says so, with any twin figures."""
    twin = record.validated == "twin" and record.parity is not None
    return RowSpec(
        key=f"{record.key}@-/-",
        artifact=record.key,
        target=record.target,
        precision=record.precision,
        runner="",
        backend="-",
        device="-",
        path="",
        display_path=record.path,
        size_bytes=record.bytes + sum(f.bytes for f in record.files) or None,
        speed_skip=reason,
        accuracy_skip="" if twin else reason,
        validated="twin" if twin else "none",
        parity=to_dict(record.parity) if record.parity is not None else None,
        parity_validated=record.validated,
    )


def _artifact_rows(root: Path, record: ArtifactRecord, wanted: set[str] | None, device: str | None) -> list[RowSpec]:
    """One row per backend that reads ``record``, then one per graph among its files that another backend reads
    (TensorRT's Q/DQ ONNX beside its engine: the twin's graph, timed but saying nothing of TensorRT's speed)."""
    if record.status == "skipped":
        return [
            _placeholder_row(
                record, f"export skipped it: {record.error or record.validated_reason or 'no reason recorded'}"
            )
        ]
    path = resolve_inside(root, record.path)
    readers = runtime_backends.readers(path, record.format)
    validated = "twin" if record.validated == "twin" else "native"
    size = record.bytes + sum(f.bytes for f in record.files)
    rows = [
        _backend_row(record, b, path, record.path, artifact=record.key, size=size, validated=validated, device=device)
        for b in readers
        if wanted is None or b.name in wanted
    ]
    if not readers:
        rows.append(_placeholder_row(record, f"no facederm backend reads format {record.format or record.path!r}"))
    for entry in record.files:
        graph = resolve_inside(root, entry.path)
        others = [b for b in runtime_backends.readers(graph) if b not in readers][:1]
        rows += [
            _backend_row(
                record,
                b,
                graph,
                entry.path,
                artifact=f"{record.key}/{graph.suffix.lstrip('.')}",
                size=entry.bytes,
                validated="twin",
                device=device,
            )
            for b in others
            if wanted is None or b.name in wanted
        ]
    return rows


def plan_rows(
    export_dir: Path,
    manifest: Manifest,
    run_dir: Path | None,
    backends: list[str] | None = None,
    device: str | None = None,
) -> list[RowSpec]:
    """The baseline row, then one row per (artifact, backend) of ``manifest``; ``backends`` filters, ``device``
    picks each backend's device (None: its default, the CPU where it has one)."""
    wanted = set(backends) if backends else None
    rows = [baseline_row(run_dir)] if wanted is None or "torch" in wanted else []
    for record in manifest.artifacts:
        rows.extend(_artifact_rows(export_dir, record, wanted, device))
    return rows
