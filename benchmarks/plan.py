"""The plan: a benchmark's rows, one per (artifact, backend, device), the baseline (torch fp32 eager) first. Backends
are asked, never named: the files they read, whether they run here, their devices, their exact and twin options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facederm.runtime import backends as runtime_backends
from facederm.runtime.backends import Backend
from facederm.runtime.layout import WEIGHTS_FILE, ArtifactRecord, FileEntry, Manifest, resolve_inside
from facederm.runtime.schema import to_dict

BASELINE_KEY = "torch:fp32@torch/cpu"


@dataclass(frozen=True)
class RowSpec:
    """Everything a row's measurements need to know about it; JSON-able (it is sent to the row's process)."""

    key: str
    artifact: str
    target: str
    precision: str
    runner: str  # a key of measure.RUNNERS ("torch" | "runtime"), "" when nothing runs here
    backend: str
    device: str
    path: str  # what the row's process opens
    display_path: str  # relative to the export dir (or run dir), for the report
    options: dict[str, Any] = field(default_factory=dict)
    validated: str = "native"
    note: str = ""
    size_bytes: int | None = None
    speed_skip: str = ""  # why speed is not measured here ("": it is)
    accuracy_skip: str = ""  # why accuracy is not measured here ("": it is)
    failed: str = ""  # the artifact itself failed at export
    parity: dict[str, Any] | None = None  # the export's parity record (twin figures)
    parity_validated: str = "none"

    @property
    def runs_here(self) -> bool:
        return not self.speed_skip and not self.failed and bool(self.runner)

    @property
    def is_baseline(self) -> bool:
        return self.runner == "torch"


def baseline_row(run_dir: Path | None) -> RowSpec:
    """The torch fp32 eager row; skipped when no run dir holds the weights."""
    weights = run_dir / WEIGHTS_FILE if run_dir else None
    skip = "" if weights and weights.is_file() else "no run dir with the torch weights (pass --run RUN)"
    size, runner = (weights.stat().st_size, "torch") if weights and not skip else (None, "")
    where = (runner, "torch", "cpu", str(run_dir or ""), WEIGHTS_FILE if run_dir else "")
    skips = {"speed_skip": skip, "accuracy_skip": skip, "note": "eager, channels_last, inference_mode"}
    return RowSpec(BASELINE_KEY, "torch:fp32", "torch", "fp32", *where, size_bytes=size, **skips)


def _row(
    root: Path,
    record: ArtifactRecord,
    backend: type[Backend] | None,
    device: str | None,
    *,
    entry: FileEntry | None = None,
    validated: str = "native",
    skip: str = "",
) -> RowSpec:
    """``record`` (or ``entry``, one of its graphs) on ``backend``; none, or not runnable here: why, twin figures."""
    file = entry.path if entry else record.path
    artifact = f"{record.key}/{Path(file).suffix.lstrip('.')}" if entry else record.key
    size = entry.bytes if entry else record.bytes + sum(f.bytes for f in record.files)
    twin_figures = record.validated == "twin" and record.parity is not None
    name, chosen, options, notes = "-", "-", {}, []
    if backend is not None:
        name = backend.name
        available, why = backend.availability()
        found = backend.match_device(device) if available else None
        if available and found is None:
            why = f"no device {device!r} here (it has {', '.join(backend.devices()) or 'none'})"
        if found is None:
            skip = f"{name} unavailable: {why}"
        else:
            chosen, options = found, backend.exact_options(record.precision)
            if validated == "twin":
                options.update(backend.twin_options())
            notes = [f"{k}={v}" for k, v in options.items()]
            if validated == "twin":
                notes.insert(0, f"{record.target}'s twin run by {name}: the twin's numbers, NOT {record.target} speed")
    if skip and twin_figures:
        notes.append(f"accuracy from the export's twin ({record.validated_reason or 'twin'})")
    row: dict[str, Any] = {"target": record.target, "precision": record.precision, "runner": "" if skip else "runtime"}
    row.update(backend=name, device=chosen, path=str(resolve_inside(root, file)) if backend else "", display_path=file)
    row.update(options=options, validated=("twin" if twin_figures else "none") if skip else validated)
    row.update(note="; ".join(notes), size_bytes=size or None, speed_skip=skip)
    row.update(accuracy_skip="" if twin_figures else skip, parity_validated=record.validated)
    row.update(failed=f"export failed: {record.error or 'no reason recorded'}" if record.status == "failed" else "")
    parity = to_dict(record.parity) if record.parity is not None else None
    return RowSpec(f"{artifact}@{name}/{chosen}", artifact, **row, parity=parity)


def _artifact_rows(root: Path, record: ArtifactRecord, wanted: set[str] | None, device: str | None) -> list[RowSpec]:
    """A row per backend reading ``record``, then per graph among its files another reads (TensorRT's Q/DQ ONNX)."""
    if record.status == "skipped":
        why = f"export skipped it: {record.error or record.validated_reason or 'no reason recorded'}"
        return [_row(root, record, None, device, skip=why)]
    readers = runtime_backends.readers(resolve_inside(root, record.path), record.format)
    validated = "twin" if record.validated == "twin" else "native"
    rows = [_row(root, record, b, device, validated=validated) for b in readers if b.name in (wanted or {b.name})]
    if not readers:
        why = f"no facederm backend reads format {record.format or record.path!r}"
        rows.append(_row(root, record, None, device, skip=why))
    for entry in record.files:
        others = [b for b in runtime_backends.readers(resolve_inside(root, entry.path)) if b not in readers][:1]
        others = [b for b in others if b.name in (wanted or {b.name})]
        rows += [_row(root, record, b, device, entry=entry, validated="twin") for b in others]
    return rows


def plan_rows(
    root: Path, manifest: Manifest, run_dir: Path | None, backends: list[str] | None = None, device: str | None = None
) -> list[RowSpec]:
    """The baseline row, then one per (artifact, backend) of export dir ``root``; ``device`` None: each's default."""
    wanted = set(backends) if backends else None
    rows = [baseline_row(run_dir)] if wanted is None or "torch" in wanted else []
    for record in manifest.artifacts:
        rows.extend(_artifact_rows(root, record, wanted, device))
    return rows
