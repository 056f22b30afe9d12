"""Where things live: the file names and structure of a run dir, an export dir and a bench output dir, and
the export manifest's schema. The only module that spells these names; everything else imports them.

Run dir (``facederm-train --out``)::

    config.json          the model card (:class:`~facederm.runtime.card.ModelCard`)
    model.safetensors    the weights
    metrics.json         per split metrics with CIs (+ PNG plots)
    splits.json          image ids per split, what any stage trained on, what is held out
    history.json         per epoch losses and validation metrics
    checkpoint/          resumable state (state.json + tensors-*.safetensors), removed when training ends

Export dir (``facederm-export --out``)::

    manifest.json        :class:`Manifest`: the card, one :class:`ArtifactRecord` per (target, precision)
    model.onnx ...       the artifacts, at the paths their targets declare (``facederm.export.targets``)
    .facederm-tmp-*      staging folders of builds in progress (never listed in the manifest)

Cross-validation dir (``facederm-train --cv K --out``)::

    cv.json              the fold plan: K, the training options, each fold's test image ids (``--resume`` checks it)
    fold-<k>/            a normal run dir per fold (``facederm-export`` takes it), plus its fold's oof.csv
    oof.csv              out-of-fold probabilities: one row per image, every image once
    cv_summary.json      per fold and pooled out-of-fold metrics, face and all sites, with CIs and spread

Bench output dir (``facederm-bench --out``): ``results.json``, ``results.csv``, ``report.md`` and PNG plots.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .card import CARD_SCHEMA, ModelCard, check_schema
from .errors import SchemaError, UnsafePathError, UnsupportedSchemaVersionError
from .schema import from_dict, read_json, to_dict, write_json_atomic

# -- run dir -------------------------------------------------------------------------------------------------
CARD_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
SPLITS_FILE = "splits.json"
HISTORY_FILE = "history.json"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE_FILE = "state.json"

# -- cross-validation dir -----------------------------------------------------------------------------------
CV_PLAN_FILE = "cv.json"
OOF_FILE = "oof.csv"
CV_SUMMARY_FILE = "cv_summary.json"
FOLD_DIR_PREFIX = "fold-"

# -- export dir ----------------------------------------------------------------------------------------------
MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = "facederm.manifest/1"
STAGING_PREFIX = ".facederm-tmp-"

# -- bench output dir ----------------------------------------------------------------------------------------
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
REPORT_MD = "report.md"

Status = Literal["ok", "failed", "skipped"]
Validated = Literal["native", "twin", "none"]


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` holds a trained model (its card and weights)."""
    path = Path(path)
    return (path / CARD_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def fold_dir(cv_dir: str | Path, fold: int) -> Path:
    """The run dir of cross-validation fold ``fold`` (0-based) inside ``cv_dir``."""
    return Path(cv_dir) / f"{FOLD_DIR_PREFIX}{fold}"


def is_export_dir(path: str | Path) -> bool:
    """True when ``path`` holds an export manifest."""
    return (Path(path) / MANIFEST_FILE).is_file()


@dataclass(frozen=True)
class FileEntry:
    """A file that belongs to an artifact (e.g. OpenVINO's .bin beside its .xml)."""

    path: str
    sha256: str
    bytes: int

    def __post_init__(self) -> None:
        check_relative_path(self.path)
        _check_sha256(self.sha256, self.path)


@dataclass(frozen=True)
class Flip:
    """One input whose top label the artifact changed: its fp32 margin says whether it was a near-tie."""

    image_id: str
    view: str  # "identity", "hflip", "vflip" or "hvflip"
    fp32_label: str
    artifact_label: str
    fp32_margin: float  # fp32 top-1 minus top-2 probability


@dataclass(frozen=True)
class Parity:
    """An artifact against the fp32 torch model: the export gate's two questions.

    1. Label-free agreement (``agreement*``, ``n_pairs``, ``mean_kl``, ``flips``): same top label as fp32 on every
       held-out input (images neither trained on nor calibrated with, and their flipped views), with a one-sided
       95 % Clopper-Pearson lower bound.
    2. Labelled effect (``macro_recall*``, ``per_class_recall_delta*``, ``n_images``, ``n_patients``): recall of
       the artifact minus recall of fp32 on the labelled test images, paired, with patient-bootstrap 95 % CIs.

    Fractions throughout (0.01 = one percentage point); deltas are artifact minus fp32.
    """

    agreement: float
    max_abs_prob_delta: float
    macro_recall: float
    macro_recall_delta: float
    per_class_recall_delta: dict[str, float]
    macro_recall_delta_ci: tuple[float, ...] = ()
    agreement_ci: tuple[float, ...] = ()  # patient bootstrap over the labelled images (older manifests)
    n_images: int = 0  # labelled test images
    n_patients: int = 0
    eval_data: str = ""
    n_pairs: int = 0  # agreement inputs (images x views)
    n_agreement_images: int = 0
    agreement_data: str = ""
    agreement_lower_bound: float | None = None  # one-sided 95 % Clopper-Pearson
    mean_kl: float | None = None  # mean KL(fp32 || artifact), nats
    mean_top1_prob_delta: float | None = None  # mean |p_artifact - p_fp32| at fp32's top label
    flips: tuple[Flip, ...] = ()
    per_class_recall_delta_ci: dict[str, tuple[float, ...]] = field(default_factory=dict)
    decision: str = ""  # which rule decided, in words


@dataclass(frozen=True)
class ArtifactRecord:
    """One exported artifact: a (target, precision) pair, its files, and how it was validated."""

    target: str
    precision: str
    path: str
    status: Status
    sha256: str = ""
    bytes: int = 0
    format: str = ""  # onnx, ort, openvino, mlpackage, engine
    files: tuple[FileEntry, ...] = ()  # extra files that belong to it (sidecars, weights)
    validated: Validated = "none"
    validated_reason: str = ""
    parity: Parity | None = None
    converter_versions: dict[str, str] = field(default_factory=dict)
    calibration_ids: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        check_relative_path(self.path)
        if self.status == "ok":
            _check_sha256(self.sha256, self.path)

    @property
    def key(self) -> str:
        return f"{self.target}:{self.precision}"


@dataclass(frozen=True)
class Probe:
    """A seeded synthetic input and the fp32 probabilities for it, for ``model.self_test()``."""

    seed: int
    batch: int
    probabilities: tuple[tuple[float, ...], ...]
    tolerance: dict[str, float] = field(default_factory=dict)  # precision -> max |delta p|


@dataclass(frozen=True)
class Manifest:
    """What an export dir holds: the card and one record per artifact."""

    card: ModelCard
    artifacts: tuple[ArtifactRecord, ...] = ()
    probe: Probe | None = None
    created: str | None = None
    facederm_version: str = ""
    source_run: str = ""
    #: What the export calibrated with and was judged on, and the gate's rules (see facederm.export.parity).
    calibration: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # the export's options (facederm.export.ExportOptions)
    schema: str = MANIFEST_SCHEMA

    def __post_init__(self) -> None:
        if self.schema != MANIFEST_SCHEMA:
            raise UnsupportedSchemaVersionError(
                f"manifest schema {self.schema!r} is not supported (this facederm reads {MANIFEST_SCHEMA})"
            )
        keys = [a.key for a in self.artifacts]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise SchemaError(f"artifacts: duplicate target:precision {', '.join(duplicates)}")

    def ok_artifacts(self) -> list[ArtifactRecord]:
        return [a for a in self.artifacts if a.status == "ok"]

    def find(self, target: str, precision: str | None = None) -> ArtifactRecord | None:
        for a in self.artifacts:
            if a.target == target and (precision is None or a.precision == precision):
                return a
        return None

    def with_artifact(self, record: ArtifactRecord) -> Manifest:
        """A copy with ``record`` added, replacing any record for the same target:precision."""
        kept = tuple(a for a in self.artifacts if a.key != record.key)
        return replace(self, artifacts=kept + (record,))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = to_dict(self)
        data["card"] = self.card.to_dict()  # the card's own JSON (an image-only card has no clinical entry)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest") -> Manifest:
        check_schema(data, MANIFEST_SCHEMA, where)
        if isinstance(data.get("card"), dict):
            check_schema(data["card"], CARD_SCHEMA, f"{where}.card")
        return from_dict(cls, data, where)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        return cls.from_dict(read_json(path), where=str(path))

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())


def _check_sha256(value: str, path: str) -> None:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise SchemaError(f"{path}: sha256 must be 64 lowercase hex digits")


def check_relative_path(path: str) -> str:
    """Refuse paths that could escape their directory: absolute, drive letters, '..', empty parts."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise UnsafePathError(f"file entry {path!r}: empty or invalid path")
    if "\\" in path or path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafePathError(f"file entry {path!r}: must be a relative POSIX path inside the export dir")
    # Split by hand: PurePosixPath would silently normalise "a//b" and "./a", so one file could be
    # spelled several ways. Entries are canonical: no empty, "." or ".." parts.
    parts = path.split("/")
    if ".." in parts:
        raise UnsafePathError(f"file entry {path!r}: '..' is not allowed")
    if any(p in ("", ".") for p in parts):
        raise UnsafePathError(f"file entry {path!r}: empty or '.' path parts are not allowed")
    return path


def resolve_inside(root: str | Path, relative: str) -> Path:
    """Join ``relative`` onto ``root`` and refuse the result if it (or a symlink on the way) leaves ``root``."""
    check_relative_path(relative)
    root_real = Path(os.path.realpath(root))
    target = Path(os.path.realpath(root_real / relative))
    if target != root_real and root_real not in target.parents:
        raise UnsafePathError(f"file entry {relative!r} resolves outside {root} (symlink?)")
    return target


def file_digest(path: str | Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """sha256 and size of a file, or of a directory tree (e.g. an .mlpackage) hashed in sorted order.

    For a directory, each file contributes its relative path and its length before its bytes, so bytes
    moved from one file to another (or a file split in two) change the digest. A symlink in the tree that
    resolves outside the directory raises :class:`UnsafePathError` instead of being read.
    """
    path = Path(path)
    h = hashlib.sha256()
    size = 0
    if path.is_dir():
        root = Path(os.path.realpath(path))
        for sub in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = sub.relative_to(path).as_posix()
            if sub.is_symlink() and root not in Path(os.path.realpath(sub)).parents:
                raise UnsafePathError(f"{path}: {rel!r} is a symlink pointing outside the directory")
            h.update(rel.encode() + b"\0" + sub.stat().st_size.to_bytes(8, "little"))
            with open(sub, "rb") as f:
                while block := f.read(chunk):
                    h.update(block)
                    size += len(block)
        return h.hexdigest(), size
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size
