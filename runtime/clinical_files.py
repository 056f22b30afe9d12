"""Clinical answers from a file, for ``facederm-predict --clinical FILE``.

- **CSV** with an ``img_id`` column (PAD-UFES-20's ``metadata.csv`` works as is): each row answers for the image
  whose file name equals its ``img_id`` (or, failing that, whose name without the suffix does). Columns the model's
  schema lacks are ignored and reported (another model's fields; PAD's ids, diagnosis and ``biopsed`` are never
  read); values are as written (``""`` and ``UNK`` are missing).
- **JSON**: an object mapping image file names to records (``{"a.jpg": {"age": 67}, ...}``), a list of records
  each with an ``img_id``, or one record (``{"age": 67, "bleed": true}``) for every image.

An image with no record is predicted with every field missing, and said so. Values are validated against the
schema when predicting (one-line errors naming the field and the value).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clinical import FORBIDDEN_FIELDS, ClinicalSchema
from .errors import ClinicalError, UnknownClinicalFieldError
from .preprocess import describe_source

#: The column (or JSON key) naming the image a record answers for.
ID_COLUMN = "img_id"


@dataclass
class ClinicalAnswersFile:
    """The records of one file: by image name, or one for every image (``single``)."""

    path: Path
    by_image: dict[str, dict[str, Any]] = field(default_factory=dict)
    single: dict[str, Any] | None = None
    ignored_columns: tuple[str, ...] = ()
    unmatched: list[str] = field(default_factory=list)  # sources that had no record (filled while predicting)

    def __call__(self, source: Any) -> dict[str, Any] | None:
        """The record for ``source`` (an image path), None when the file has none for it."""
        if self.single is not None:
            return self.single
        name = Path(describe_source(source)).name
        record = self.by_image.get(name)
        if record is None:
            record = self._by_stem().get(Path(name).stem)
        if record is None:
            self.unmatched.append(name)
        return record

    def _by_stem(self) -> dict[str, dict[str, Any]]:
        return {Path(k).stem: v for k, v in self.by_image.items()}

    def describe(self) -> str:
        """One line for the CLI: what was read and what was ignored."""
        what = "one record for every image" if self.single is not None else f"{len(self.by_image)} image record(s)"
        ignored = f"; columns not in the model's schema, ignored: {', '.join(self.ignored_columns)}"
        return f"clinical answers: {self.path.name}, {what}" + (ignored if self.ignored_columns else "")


def read_answers(path: str | Path, schema: ClinicalSchema) -> ClinicalAnswersFile:
    """Read ``path`` (``.csv``, else JSON) for a model with ``schema``; malformed files raise :class:`ClinicalError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClinicalError(f"--clinical {path}: cannot read it: {exc}") from exc
    if path.suffix.lower() == ".csv":
        return _read_csv(path, text, schema)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClinicalError(f"--clinical {path}: not a CSV (by its suffix) and malformed JSON: {exc}") from exc
    return _read_json(path, data, schema)


def _read_csv(path: Path, text: str, schema: ClinicalSchema) -> ClinicalAnswersFile:
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if ID_COLUMN not in header:
        raise ClinicalError(f"--clinical {path}: no {ID_COLUMN} column (it names the image each row answers for)")
    wanted = [h for h in header if h in schema.names]
    if not wanted:
        raise UnknownClinicalFieldError(
            f"--clinical {path}: none of its columns is a field of the model ({', '.join(schema.names)})"
        )
    ignored = tuple(h for h in header if h != ID_COLUMN and h not in wanted and h.lower() not in FORBIDDEN_FIELDS)
    reader.fieldnames = header
    by_image: dict[str, dict[str, Any]] = {}
    try:
        for row in reader:
            image = (row.get(ID_COLUMN) or "").strip()
            if not image:
                raise ClinicalError(f"--clinical {path} line {reader.line_num}: empty {ID_COLUMN}")
            by_image[image] = {k: (row.get(k) or "").strip() for k in wanted}
    except csv.Error as exc:
        raise ClinicalError(f"--clinical {path} line {reader.line_num}: malformed CSV: {exc}") from exc
    return ClinicalAnswersFile(path, by_image=by_image, ignored_columns=ignored)


def _record(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ClinicalError(f"{where}: a record must be a JSON object of field: value, got {type(value).__name__}")
    return dict(value)


def _read_json(path: Path, data: Any, schema: ClinicalSchema) -> ClinicalAnswersFile:
    where = f"--clinical {path}"
    if isinstance(data, list):  # [{"img_id": "a.jpg", "age": 67}, ...]
        by_image = {}
        for i, item in enumerate(data):
            record = _record(item, f"{where}[{i}]")
            image = str(record.pop(ID_COLUMN, "")).strip()
            if not image:
                raise ClinicalError(f"{where}[{i}]: no {ID_COLUMN}")
            by_image[image] = record
        return ClinicalAnswersFile(path, by_image=by_image)
    record = _record(data, where)
    if record and all(isinstance(v, Mapping) or v is None for v in record.values()):  # {"a.jpg": {...}, ...}
        return ClinicalAnswersFile(path, by_image={k: dict(v or {}) for k, v in record.items()})
    schema.validate(record)  # one record for every image: check it once, up front
    return ClinicalAnswersFile(path, single=record)
