"""Data specs (``prefix:location``) -> readers, and the checks every reader's rows go through."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from facederm.runtime.errors import ConfigError, DataError

from .data_report import DataReport
from .dataset import DataSet, Sample
from .labels import FACE_REGIONS, LabelSet, get_label_set, infer_label_set
from .readers import RawRecord, Reader, ReadRequest, read_csv, read_folder, read_pad_ufes_20
from .synthetic import read_synthetic

#: Registry of readers keyed by spec prefix. Add a reader here to support a new source.
READERS: dict[str, Reader] = {
    "pad-ufes-20": read_pad_ufes_20,
    "folder": read_folder,
    "csv": read_csv,
    "synthetic": read_synthetic,
}

#: How a bare path (no ``prefix:``) is recognised: the first test that holds gives the prefix.
_BARE_PATH_RULES: tuple[tuple[str, Callable[[Path], bool]], ...] = (
    ("pad-ufes-20", lambda p: p.is_dir() and (p / "metadata.csv").is_file()),
    ("csv", lambda p: p.is_file() and p.suffix.lower() == ".csv"),
)


def parse_spec(spec: str) -> tuple[str, str]:
    """``"pad-ufes-20:/data/pad"`` -> ("pad-ufes-20", "/data/pad"). A bare PAD-UFES-20 directory or a
    .csv file is recognised; anything else raises :class:`ConfigError` listing the known prefixes."""
    spec = spec.strip()
    prefix, sep, location = spec.partition(":")
    if prefix in READERS:
        return prefix, location.strip() if sep else ""
    path = Path(spec).expanduser()
    for name, matches in _BARE_PATH_RULES:
        if matches(path):
            return name, spec
    known = ", ".join(f"{p}:" for p in READERS)
    hint = " (the path does not exist)" if not path.exists() else ""
    raise ConfigError(f"data {spec!r}: unknown kind{hint}; use one of {known} (e.g. pad-ufes-20:DIR, synthetic:600)")


def open_dataset(
    spec: str,
    *,
    label_set: str | LabelSet | None = None,
    strict: bool = False,
    face_regions: Sequence[str] = FACE_REGIONS,
    verify: bool = False,
    progress: bool = False,
) -> DataSet:
    """Read the data set ``spec`` (``pad-ufes-20:DIR``, ``folder:DIR``, ``csv:FILE``, ``synthetic[:N]``).

    Bad samples (missing file, unknown label, duplicate image id, missing patient id; with ``verify``
    also undecodable images) are skipped and listed in ``dataset.report``; with ``strict`` the first
    one raises :class:`DataError`. ``label_set`` names a registered set (``"pad"``, ``"study"``); by
    default the reader's own, else the first registered set that knows every label, else the labels
    found. The returned label set keeps only the labels present, in the set's order.
    """
    prefix, location = parse_spec(spec)
    wanted = get_label_set(label_set) if isinstance(label_set, str) else label_set
    report = DataReport(source=spec, strict=strict)
    result = READERS[prefix](ReadRequest(location=location, label_set=wanted, report=report))
    for note in result.notes:
        report.note(note)
    labels = wanted or result.label_set or infer_label_set((r.label for r in result.records), name=prefix)
    samples = _checked_samples(result.records, labels, report)
    if not samples:
        first = f" (first problem: {report.problems[0]})" if report.problems else ""
        raise DataError(f"{spec}: no usable images: {report.count} problem(s){first}")
    present = {s.label for s in samples}
    dataset = DataSet(
        spec=spec,
        samples=samples,
        label_set=labels.restrict(present),
        report=report,
        synthetic=result.synthetic,
        loader=result.loader,
        face_regions=tuple(r.upper() for r in face_regions),
    )
    return dataset.verify(progress=progress) if verify else dataset


def _checked_samples(records: list[RawRecord], label_set: LabelSet, report: DataReport) -> list[Sample]:
    """Rows -> samples with canonical labels; rows with a problem are reported and left out."""
    seen: dict[str, str] = {}
    samples = []
    for record in records:
        if not record.patient_id:
            report.add("missing_patient_id", record.item, "no patient_id: a patient-grouped split needs one")
            continue
        label = label_set.canonical(record.label)
        if label is None:
            known = ", ".join(label_set.labels)
            report.add(
                "unknown_label", record.item, f"label {record.label!r} is not in label set {label_set.name!r} ({known})"
            )
            continue
        if record.image_id in seen:
            report.add(
                "duplicate_image_id",
                record.item,
                f"image id {record.image_id!r} already used by {seen[record.image_id]}",
            )
            continue
        seen[record.image_id] = record.item
        samples.append(
            Sample(
                path=record.path,
                label=label,
                patient_id=record.patient_id,
                lesion_id=record.lesion_id,
                region=record.region.strip().upper(),
                image_id=record.image_id,
                clinical=record.clinical,
            )
        )
    return samples
