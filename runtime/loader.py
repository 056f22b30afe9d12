"""``load()``: an export dir or a single artifact -> a :class:`~facederm.runtime.model.Model`.

From an export dir, the manifest lists the artifacts; the best one that runs here is chosen (most
accurate precision first, then the preferred backend), unless a backend, target or precision is asked
for. Every file is checked against the manifest's sha256 before a backend reads it, and the labels and
preprocessing stored inside the artifact must match the manifest's card.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends import all_backends, check_reads, readers
from .backends import get as get_backend
from .backends.base import Backend
from .cpu import int8_saturates
from .errors import (
    ArtifactError,
    BackendMismatchError,
    BackendUnavailableError,
    ConfigError,
    FacedermError,
    Int8SaturationWarning,
    IntegrityError,
    SchemaError,
)
from .layout import MANIFEST_FILE, ArtifactRecord, Manifest, file_digest, resolve_inside
from .metadata import check_agreement
from .model import DEFAULT_MAX_BATCH, Model

#: Options passed through to backends; each backend uses the ones that concern it.
BACKEND_OPTIONS = ("threads", "precision_hint", "graph_optimization")
#: Most accurate first: the default choice when no precision is asked for.
PRECISION_ORDER = ("fp32", "bf16", "fp16", "int8-weights", "palettize6", "int8", "palettize4")
#: Among artifacts of equal precision on the same backend: the reference format first.
TARGET_ORDER = ("onnx", "ort", "openvino", "coreml", "tensorrt")


@dataclass(frozen=True)
class _Candidate:
    record: ArtifactRecord | None
    path: Path
    backend: type[Backend]


def load(
    path: str | Path,
    backend: str | None = None,
    device: str | None = None,
    *,
    precision: str | None = None,
    target: str | None = None,
    verify: bool = True,
    max_batch: int = DEFAULT_MAX_BATCH,
    **options: Any,
) -> Model:
    """Load an export dir or one artifact file for prediction.

    ``backend``: "onnxruntime", "openvino", "coreml", "tensorrt" (None: the best available here).
    ``device``: a device name of that backend ("cpu", "cuda:0", "GPU", "NPU"; None: the default).
    ``precision`` / ``target``: pick an artifact of an export dir by its manifest entry.
    ``verify=False`` skips the sha256 check. Options: ``threads`` (intra-op threads) and
    ``precision_hint`` (OpenVINO: "f32" to compute fp32 on CPUs that default to bf16).
    """
    path = Path(path)
    unknown = sorted(set(options) - set(BACKEND_OPTIONS))
    if unknown:
        raise ConfigError(f"load(): unknown option(s) {', '.join(unknown)}; known: {', '.join(BACKEND_OPTIONS)}")
    if max_batch < 1:
        raise ConfigError(f"load(): max_batch must be >= 1, got {max_batch}")
    wanted = get_backend(backend) if backend else None
    if not path.exists():
        raise ArtifactError(f"{path}: no such export dir or artifact file")
    if path.is_dir() and not readers(path):  # a directory that is not a bundle like .mlpackage
        manifest_file = path / MANIFEST_FILE
        if not manifest_file.is_file():
            raise ArtifactError(f"{path}: not an export dir ({MANIFEST_FILE} is missing) and not an artifact")
        manifest: Manifest | None = Manifest.load(manifest_file)
        assert manifest is not None
        candidates = _export_dir_candidates(path, manifest, wanted, device, precision, target)
        root: Path | None = path
    else:
        if precision or target:
            raise ConfigError(f"{path}: precision=/target= choose among an export dir's artifacts, not a single file")
        manifest, root, record = _manifest_listing(path)
        candidates = _file_candidates(path, record, wanted)
    return _open_first(candidates, manifest, root, wanted, device, verify, max_batch, options)


# --- choosing -------------------------------------------------------------------------------------
def _export_dir_candidates(
    root: Path,
    manifest: Manifest,
    wanted: type[Backend] | None,
    device: str | None,
    precision: str | None,
    target: str | None,
) -> list[_Candidate]:
    records = [
        r
        for r in manifest.ok_artifacts()
        if (precision is None or r.precision == precision) and (target is None or r.target == target)
    ]
    if not records:
        have = ", ".join(r.key for r in manifest.ok_artifacts()) or "none"
        asked = " ".join(f"{k}={v}" for k, v in (("target", target), ("precision", precision)) if v)
        raise ArtifactError(f"{root}: no ok artifact matches {asked or 'the request'}; ok artifacts: {have}")
    candidates = []
    for index, record in enumerate(records):
        path = resolve_inside(root, record.path)
        for backend in readers(path, record.format):
            if wanted is not None and backend is not wanted:
                continue
            if wanted is None and device is not None and not _has_device(backend, device):
                continue
            candidates.append((_rank(record, backend, index), _Candidate(record, path, backend)))
    if not candidates:
        have = ", ".join(f"{r.key} ({r.format or Path(r.path).suffix})" for r in records)
        who = f"backend {wanted.name!r}" if wanted else f"any backend with device {device!r}"
        raise BackendMismatchError(f"{root}: no artifact that {who} can run; artifacts here: {have}")
    return [c for _, c in sorted(candidates, key=lambda pair: pair[0])]


def _rank(record: ArtifactRecord, backend: type[Backend], index: int) -> tuple[int, int, int, int]:
    precision = PRECISION_ORDER.index(record.precision) if record.precision in PRECISION_ORDER else len(PRECISION_ORDER)
    target = TARGET_ORDER.index(record.target) if record.target in TARGET_ORDER else len(TARGET_ORDER)
    return (precision, backend.priority, target, index)


def _has_device(backend: type[Backend], device: str) -> bool:
    available, _ = backend.availability()
    if not available:
        return True  # keep it: its unavailability is reported if nothing else runs
    kind = device.lower().split(":")[0].split(".")[0]
    return any(d.lower().split(":")[0].split(".")[0] == kind for d in backend.devices())


def _file_candidates(path: Path, record: ArtifactRecord | None, wanted: type[Backend] | None) -> list[_Candidate]:
    fmt = record.format if record else ""
    if wanted is not None:
        check_reads(wanted, path, fmt)
        return [_Candidate(record, path, wanted)]
    found = readers(path, fmt)
    if not found:
        known = ", ".join(sorted({s for b in all_backends() for s in b.suffixes}))
        raise BackendMismatchError(
            f"{path}: no backend reads {path.suffix or 'files without a suffix'}; known: {known}"
        )
    return [_Candidate(record, path, b) for b in found]


def _manifest_listing(path: Path) -> tuple[Manifest | None, Path | None, ArtifactRecord | None]:
    """A lone artifact inside an export dir is still checked against that dir's manifest."""
    target = path.resolve()
    for root in list(path.resolve().parents)[:3]:
        manifest_file = root / MANIFEST_FILE
        if not manifest_file.is_file():
            continue
        try:
            manifest = Manifest.load(manifest_file)
        except SchemaError:
            continue  # an unrelated or broken manifest does not stop loading a file by itself
        for record in manifest.artifacts:
            try:
                if resolve_inside(root, record.path) == target:
                    return manifest, root, record
            except FacedermError:
                continue
    return None, None, None


# --- opening --------------------------------------------------------------------------------------
def _open_first(
    candidates: list[_Candidate],
    manifest: Manifest | None,
    root: Path | None,
    wanted: type[Backend] | None,
    device: str | None,
    verify: bool,
    max_batch: int,
    options: dict[str, Any],
) -> Model:
    reasons: list[str] = []
    for candidate in candidates:
        available, reason = candidate.backend.availability()
        if not available:
            if wanted is not None:
                raise BackendUnavailableError(f"{candidate.path}: backend {wanted.name!r} is unavailable: {reason}")
            reasons.append(f"{candidate.backend.name}: {reason}")
            continue
        if verify and candidate.record is not None and root is not None:
            verify_artifact(root, candidate.record)
        try:
            session = candidate.backend.open(candidate.path, device=device, options=options)
        except BackendUnavailableError as exc:
            if wanted is not None or len(candidates) == 1:
                raise
            reasons.append(f"{candidate.backend.name}: {exc}")
            continue
        _warn_if_int8_saturates(candidate)
        card = session.card
        if manifest is not None:
            check_agreement(card, manifest.card, str(candidate.path))
            card = manifest.card
        return Model(
            session,
            card=card,
            backend_name=candidate.backend.name,
            path=candidate.path,
            artifact=candidate.record,
            manifest=manifest,
            max_batch=max_batch,
        )
    what = str(candidates[0].path) if len({c.path for c in candidates}) == 1 else "any of the matching artifacts"
    raise BackendUnavailableError(f"no backend on this machine can run {what}: {'; '.join(reasons)}")


def verify_artifact(root: Path, record: ArtifactRecord) -> None:
    """Check the sha256 of an artifact and of each of its extra files against the manifest."""
    entries = [(record.path, record.sha256)] + [(f.path, f.sha256) for f in record.files]
    for relative, expected in entries:
        file = resolve_inside(root, relative)
        if not file.exists():
            raise IntegrityError(
                f"{file}: listed in {MANIFEST_FILE} but missing; re-export or copy the whole export dir"
            )
        actual, _ = file_digest(file)
        if actual != expected:
            raise IntegrityError(
                f"{file}: sha256 {actual[:12]}... does not match {MANIFEST_FILE} ({expected[:12]}...): the file was"
                " modified or corrupted; re-export it (or load(..., verify=False) if you changed it on purpose)"
            )


def _warn_if_int8_saturates(candidate: _Candidate) -> None:
    record = candidate.record
    if record is None or record.precision != "int8" or not candidate.backend.x86_int8_kernels:
        return
    if record.options.get("weight_bits") == 8 and int8_saturates():
        warnings.warn(
            f"{candidate.path}: int8 with 8-bit weights on an x86 CPU without VNNI: {candidate.backend.name}'s "
            "kernels may saturate and decide differently from the export's fidelity gate; on this CPU use an "
            "artifact exported with --int8-weight-bits 7 (the same decisions on every CPU)",
            Int8SaturationWarning,
            stacklevel=3,
        )
