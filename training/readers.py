"""Readers for image collections on disk: PAD-UFES-20's official layout, one folder per class, a CSV.

A reader turns a location into :class:`RawRecord` rows (labels still as written in the source) and
reports what it cannot use (missing files, unusable rows) into the :class:`DataReport`. Label mapping,
duplicate and patient-id checks are shared by every reader (see :mod:`facederm.training.sources`).
Existence is checked here; decoding every image is left to ``DataSet.verify`` (costly).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from facederm.runtime.clinical import FORBIDDEN_FIELDS
from facederm.runtime.errors import DataError

from .data_report import DataReport
from .dataset import ImageLoader, load_file
from .labels import LabelSet

#: File suffixes a folder reader takes as images (others, such as notes or .DS_Store, are ignored).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})


@dataclass(frozen=True)
class RawRecord:
    """One row as the source wrote it. ``item`` names it in problem reports (file or CSV line); ``clinical`` its
    clinical answers as (column, value) pairs (see :attr:`facederm.training.dataset.Sample.clinical`)."""

    item: str
    path: str
    label: str
    patient_id: str
    lesion_id: str
    region: str
    image_id: str
    clinical: tuple[tuple[str, str], ...] = ()


@dataclass
class ReadResult:
    """What a reader found. ``label_set`` is the reader's own (synthetic) or default (PAD) set."""

    records: list[RawRecord]
    label_set: LabelSet | None = None
    synthetic: bool = False
    loader: ImageLoader = load_file
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReadRequest:
    """The arguments every reader gets: the part of the spec after ``prefix:``, the label set the
    caller asked for (None: the reader's default or inferred) and the report to fill."""

    location: str
    label_set: LabelSet | None
    report: DataReport


Reader = Callable[[ReadRequest], ReadResult]


def _existing_dir(location: str, what: str) -> Path:
    if not location:
        raise DataError(f"{what}: no directory given (e.g. {what}:/data/my-set)")
    path = Path(location).expanduser()
    if not path.is_dir():
        raise DataError(f"{what}:{location}: no such directory")
    return path


def _read_csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row; a missing file or column raises :class:`DataError`."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115  (closed by the with below; only the open's error is ours)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'})")
        reader.fieldnames = header
        try:
            for row in reader:
                yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}
        except csv.Error as exc:
            raise DataError(f"{path} line {reader.line_num}: malformed CSV: {exc}") from exc


def clinical_columns(row: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A row's columns that may be clinical answers: everything but the label, the ids and ``biopsed``
    (:data:`~facederm.runtime.clinical.FORBIDDEN_FIELDS`: never carried, so never a feature by mistake)."""
    return tuple((k, v) for k, v in row.items() if k.strip().lower() not in FORBIDDEN_FIELDS)


# --- PAD-UFES-20 ---------------------------------------------------------------------------------
def _pad_image_dirs(root: Path) -> list[Path]:
    """Where PAD-UFES-20 images may be: images/, and the publisher's zip parts imgs_part_1..3
    (under images/ or the root, sometimes nested once more as imgs_part_k/imgs_part_k)."""
    dirs = []
    for base in (root / "images", root):
        if not base.is_dir():
            continue
        dirs.append(base)
        for part in sorted(base.glob("imgs_part_*")):
            if part.is_dir():
                dirs.append(part)
                dirs.extend(sorted(p for p in part.glob("imgs_part_*") if p.is_dir()))
    return dirs


def _index_files(dirs: list[Path]) -> dict[str, str]:
    """File name -> path over ``dirs`` (first one wins), one directory listing each: cheap existence check."""
    index: dict[str, str] = {}
    for directory in dirs:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name not in index and entry.is_file():
                    index[entry.name] = entry.path
    return index


def read_pad_ufes_20(request: ReadRequest) -> ReadResult:
    """``pad-ufes-20:DIR``: DIR/metadata.csv plus images in DIR/images (or the zip's imgs_part_1..3)."""
    from .labels import get_label_set

    root = _existing_dir(request.location, "pad-ufes-20")
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        raise DataError(f"pad-ufes-20:{request.location}: no metadata.csv (expected the official PAD-UFES-20 layout)")
    files = _index_files(_pad_image_dirs(root))
    records = []
    for line, row in _read_csv_rows(metadata, ("patient_id", "lesion_id", "img_id", "region", "diagnostic")):
        item = f"{metadata.name} line {line}"
        image_id = row["img_id"]
        if not image_id:
            request.report.add("bad_row", item, "empty img_id")
            continue
        path = files.get(image_id)
        if path is None:
            request.report.add("missing_file", image_id, f"listed in {item} but not found under {root}")
            continue
        records.append(
            RawRecord(
                item=image_id,
                path=path,
                label=row["diagnostic"],
                patient_id=row["patient_id"],
                lesion_id=row["lesion_id"],
                region=row["region"],
                image_id=image_id,
                clinical=clinical_columns(row),  # the patient / lesion fields of metadata.csv
            )
        )
    return ReadResult(records=records, label_set=get_label_set("pad"))


# --- one folder per class ------------------------------------------------------------------------
def read_folder(request: ReadRequest) -> ReadResult:
    """``folder:DIR``: DIR/<class>/**/<image>. No patient ids: each image is its own patient."""
    root = _existing_dir(request.location, "folder")
    records = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.rglob("*")):
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            image_id = path.relative_to(root).as_posix()
            records.append(
                RawRecord(
                    item=str(path),
                    path=str(path),
                    label=class_dir.name,
                    patient_id=image_id,
                    lesion_id=image_id,
                    region="",
                    image_id=image_id,
                )
            )
    notes = ["no patient ids in a folder data set: each image counts as its own patient, so the split is by image"]
    return ReadResult(records=records, notes=notes)


# --- a CSV list ----------------------------------------------------------------------------------
def read_csv(request: ReadRequest) -> ReadResult:
    """``csv:FILE``: columns path,label[,patient_id][,region][,lesion_id]; paths relative to FILE's folder. Further
    columns (age, bleed ...) are the images' clinical answers (``facederm-train --clinical``)."""
    if not request.location:
        raise DataError("csv: no file given (e.g. csv:/data/list.csv)")
    table = Path(request.location).expanduser()
    if not table.is_file():
        raise DataError(f"csv:{request.location}: no such file")
    base = table.parent
    records = []
    has_patients = False
    for line, row in _read_csv_rows(table, ("path", "label")):
        item = f"{table.name} line {line}"
        has_patients = has_patients or "patient_id" in row
        written = row["path"]
        if not written:
            request.report.add("bad_row", item, "empty path")
            continue
        path = Path(written).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            request.report.add("missing_file", written, f"listed in {item} but {path} does not exist")
            continue
        image_id = Path(written).as_posix()
        patient = row.get("patient_id", image_id)
        records.append(
            RawRecord(
                item=written,
                path=str(path),
                label=row["label"],
                patient_id=patient,
                lesion_id=row.get("lesion_id") or image_id,
                region=row.get("region", ""),
                image_id=image_id,
                clinical=clinical_columns(row),  # any further columns (region included)
            )
        )
    notes = (
        []
        if has_patients
        else [f"{table.name} has no patient_id column: each image counts as its own patient, so the split is by image"]
    )
    return ReadResult(records=records, notes=notes)
