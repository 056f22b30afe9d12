"""Clinical fields, the optional second model input: the schema that turns answers into a float32 vector.

A :class:`ClinicalSchema` is fitted on a run's training images only (numbers: their mean and standard deviation;
categories: the categories seen there) and travels in the model card, so training, export, every artifact and
the runtime encode the same answers the same way. Fields are encoded in the schema's order, each as its value
columns followed by one missing-indicator column:

==========  ==========================================  =================
kind        value columns                               missing
==========  ==========================================  =================
number      one: ``(value - mean) / std``               values 0, flag 1
bool        one: 0 (false) or 1 (true)                  values 0, flag 1
category    one-hot over the training categories        values 0, flag 1
==========  ==========================================  =================

A missing answer is a state of its own, never an error: an absent field, ``None``, ``""``, NaN, or one of
``missing_tokens`` (PAD-UFES-20 writes ``UNK`` for "not known"). Everything else is validated: a field the schema
does not have raises :class:`UnknownClinicalFieldError`, a value that does not fit its field (age ``"abc"``, a
category never seen in training) :class:`InvalidClinicalValueError`, each with a one-line message naming the field
and the value. Fields that encode the label or identify an image (PAD-UFES-20's ``biopsed``: BCC, SCC and MEL are
all biopsy-proven) are refused as features with :class:`ForbiddenClinicalFieldError`.

Torch-free (numpy only): apps encode their answers with the schema inside the artifact they load.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from .errors import (
    ForbiddenClinicalFieldError,
    InvalidClinicalValueError,
    SchemaError,
    UnknownClinicalFieldError,
    UnsupportedSchemaVersionError,
)
from .schema import from_dict, to_dict

CLINICAL_SCHEMA = "facederm.clinical/1"
Kind = Literal["number", "bool", "category"]
KINDS: tuple[str, ...] = ("number", "bool", "category")
#: What :meth:`ClinicalSchema.encode` does with a category the training images never showed: refuse it (user
#: input), or encode the field as missing (data sets read for evaluation, which may hold rare categories).
Unseen = Literal["raise", "missing"]
#: What :meth:`ClinicalSchema.encode` does with a field the schema does not have: refuse it (user input), or ignore
#: it (a data set's other columns, e.g. a model trained on some of PAD-UFES-20's fields reading all of them).
Extra = Literal["raise", "ignore"]

#: Written answers that mean "not known" (compared case-insensitively, after stripping spaces).
DEFAULT_MISSING_TOKENS: tuple[str, ...] = ("", "UNK", "UNKNOWN", "NA", "N/A", "NAN", "NONE", "NULL")
_TRUE = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "0.0"})
_BOOL_WORDS = frozenset({"true", "t", "yes", "y", "false", "f", "no", "n"})

#: Columns that must never be features, and why.
FORBIDDEN_FIELDS: dict[str, str] = {
    "biopsed": "it encodes the diagnosis (BCC, SCC and MEL are all biopsy-proven in PAD-UFES-20)",
    "diagnostic": "it is the label",
    "label": "it is the label",
    "img_id": "it identifies the image, not the patient's condition",
    "image_id": "it identifies the image, not the patient's condition",
    "patient_id": "it identifies the patient, not the condition",
    "lesion_id": "it identifies the lesion, not the condition",
    "path": "it is the image's file name",
}

#: PAD-UFES-20's patient and lesion fields with their kinds (``metadata.csv`` columns), in the publisher's order.
PAD_FIELDS: dict[str, Kind] = {
    "age": "number",
    "gender": "category",
    "fitspatrick": "number",  # Fitzpatrick skin type 1..6 (the column's spelling): ordinal
    "region": "category",
    "diameter_1": "number",
    "diameter_2": "number",
    "itch": "bool",
    "grew": "bool",
    "hurt": "bool",
    "changed": "bool",
    "bleed": "bool",
    "elevation": "bool",
    "smoke": "bool",
    "drink": "bool",
    "pesticide": "bool",
    "skin_cancer_history": "bool",
    "cancer_history": "bool",
    "has_piped_water": "bool",
    "has_sewage_system": "bool",
    "background_father": "category",
    "background_mother": "category",
}
#: Named field lists ``--clinical`` accepts besides a comma list.
PRESETS: dict[str, tuple[str, ...]] = {"pad": tuple(PAD_FIELDS)}


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_feature_name(name: str) -> None:
    """Refuse a field that must never be a model input (:data:`FORBIDDEN_FIELDS`) or an empty name."""
    key = name.strip().lower()
    if not key:
        raise UnknownClinicalFieldError("clinical fields: an empty field name")
    if key in FORBIDDEN_FIELDS:
        raise ForbiddenClinicalFieldError(f"clinical field {name!r} is refused as a feature: {FORBIDDEN_FIELDS[key]}")


def parse_fields(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"pad"`` or ``"age,bleed,gender"`` (presets may be mixed in) -> the ordered field names, each once.

    Raises :class:`ForbiddenClinicalFieldError` for ``biopsed``, the label or an id column, and
    :class:`UnknownClinicalFieldError` for an empty list.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        for name in PRESETS.get(item.lower(), (item,)):
            check_feature_name(name)
            if name not in names:
                names.append(name)
    if not names:
        raise UnknownClinicalFieldError(
            f"clinical fields {spec!r}: no field named; give a comma list (age,bleed) or a preset ({', '.join(PRESETS)})"
        )
    return tuple(names)


@dataclass(frozen=True)
class ClinicalField:
    """One field: its kind and the encoding fitted on the training images.

    ``mean``/``std`` standardize a number; ``categories`` are the one-hot columns of a category (training order);
    ``observed`` counts the training images that answered it (a field with none only ever encodes missing).
    """

    name: str
    kind: Kind
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()
    observed: int = 0

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise SchemaError("clinical.fields: a field needs a name")
        check_feature_name(self.name)
        if self.kind not in KINDS:
            raise SchemaError(f"clinical field {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise SchemaError(f"clinical field {self.name!r}: mean and std must be finite, std > 0")
        if self.kind != "category" and self.categories:
            raise SchemaError(f"clinical field {self.name!r}: only a category field has categories")
        folded = [c.strip().casefold() for c in self.categories]
        if any(not c for c in folded) or len(set(folded)) != len(folded):
            raise SchemaError(f"clinical field {self.name!r}: categories must be non-empty and distinct")
        if self.observed < 0:
            raise SchemaError(f"clinical field {self.name!r}: observed must be >= 0")

    @property
    def width(self) -> int:
        """Columns this field takes: its value columns plus the missing indicator."""
        return (len(self.categories) if self.kind == "category" else 1) + 1

    @property
    def column_names(self) -> tuple[str, ...]:
        """``age``, ``age:missing``; ``gender=FEMALE``, ``gender=MALE``, ``gender:missing``."""
        values = [f"{self.name}={c}" for c in self.categories] if self.kind == "category" else [self.name]
        return (*values, f"{self.name}:missing")


def _is_missing(value: Any, tokens: frozenset[str]) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().upper() in tokens


@dataclass(frozen=True)
class ClinicalSchema:
    """Ordered clinical fields and how each is encoded (see the module docstring); JSON in the model card."""

    fields: tuple[ClinicalField, ...]
    missing_tokens: tuple[str, ...] = DEFAULT_MISSING_TOKENS
    schema: str = CLINICAL_SCHEMA

    def __post_init__(self) -> None:
        if self.schema != CLINICAL_SCHEMA:
            raise UnsupportedSchemaVersionError(
                f"clinical schema {self.schema!r} is not supported (this facederm reads {CLINICAL_SCHEMA})"
            )
        if not self.fields:
            raise SchemaError("clinical.fields: a clinical schema needs at least one field")
        names = [f.name for f in self.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SchemaError(f"clinical.fields: duplicate field(s) {', '.join(duplicates)}")

    # Derived lookups, computed once per instance (cached_property writes the instance dict, which a frozen
    # dataclass allows); they are not dataclass fields, so equality and JSON see only the three fields above.
    @cached_property
    def _index(self) -> dict[str, int]:
        return {f.name: i for i, f in enumerate(self.fields)}

    @cached_property
    def _offsets(self) -> tuple[int, ...]:
        starts = np.cumsum([0] + [f.width for f in self.fields[:-1]])
        return tuple(int(s) for s in starts)

    @cached_property
    def _tokens(self) -> frozenset[str]:
        return frozenset(t.strip().upper() for t in self.missing_tokens)

    @cached_property
    def _lookup(self) -> tuple[dict[str, int], ...]:
        return tuple({c.strip().casefold(): j for j, c in enumerate(f.categories)} for f in self.fields)

    # --- shape ------------------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """The field names, in encoding order."""
        return tuple(f.name for f in self.fields)

    @property
    def width(self) -> int:
        """F: the length of one encoded record (the graph input ``clinical`` is float32 [N, F])."""
        return sum(f.width for f in self.fields)

    @property
    def column_names(self) -> tuple[str, ...]:
        """A name per encoded column (``age``, ``age:missing``, ``gender=MALE`` ...)."""
        return tuple(c for f in self.fields for c in f.column_names)

    @property
    def indicator_columns(self) -> tuple[int, ...]:
        """The column of each field's missing indicator, in field order."""
        return tuple(o + f.width - 1 for o, f in zip(self._offsets, self.fields))

    def field_columns(self, name: str) -> tuple[int, int]:
        """(first, stop) columns of field ``name``, the indicator being ``stop - 1``."""
        i = self._field_index(name)
        return self._offsets[i], self._offsets[i] + self.fields[i].width

    def _field_index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._index, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownClinicalFieldError(
                f"clinical field {name!r} is not in this model's schema{hint}; fields: {', '.join(self.names)}"
            ) from None

    # --- encoding ---------------------------------------------------------------------------------
    def missing_vector(self) -> np.ndarray:
        """float32 [F]: every field unanswered."""
        out = np.zeros(self.width, dtype=np.float32)
        out[list(self.indicator_columns)] = 1.0
        return out

    def missing_batch(self, n: int) -> np.ndarray:
        """float32 [n, F]: ``n`` records with every field unanswered."""
        return np.tile(self.missing_vector(), (n, 1))

    def validate(
        self, record: Mapping[str, Any] | None, *, unseen: Unseen = "raise", extra: Extra = "raise"
    ) -> dict[str, Any]:
        """``record`` checked against the schema -> {field: parsed value or None (missing)} for every field."""
        if record is None:
            return dict.fromkeys(self.names)
        if not isinstance(record, Mapping):
            raise InvalidClinicalValueError(
                f"a clinical record must map field names to values, got {type(record).__name__}"
            )
        for key in record if extra == "raise" else ():
            if not isinstance(key, str):
                raise UnknownClinicalFieldError(f"clinical field names must be strings, got {_short(key)}")
            if key not in self._index:
                check_feature_name(key)  # biopsed & co. get their own reason
                self._field_index(key)  # raises, with a did-you-mean
        return {f.name: self._parse(i, record.get(f.name), unseen) for i, f in enumerate(self.fields)}

    def _parse(self, i: int, value: Any, unseen: Unseen) -> Any:
        f = self.fields[i]
        if _is_missing(value, self._tokens):
            return None
        where = f"clinical field {f.name!r}"
        if f.kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float, str, np.integer, np.floating)):
                raise InvalidClinicalValueError(f"{where}: {_short(value)} is not a number")
            try:
                number = float(value)
            except ValueError:
                raise InvalidClinicalValueError(f"{where}: {_short(value)} is not a number") from None
            if not math.isfinite(number):
                raise InvalidClinicalValueError(f"{where}: {_short(value)} is not a finite number")
            return number
        if f.kind == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            text = str(value).strip().lower() if isinstance(value, (str, int, float, np.integer)) else None
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise InvalidClinicalValueError(f"{where}: {_short(value)} is not true/false (or yes/no, 1/0)")
        if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
            raise InvalidClinicalValueError(f"{where}: {_short(value)} is not a category name")
        text = str(value).strip()
        j = self._lookup[i].get(text.casefold())
        if j is None:
            if unseen == "missing":
                return None
            known = ", ".join(f.categories[:12]) + (" ..." if len(f.categories) > 12 else "")
            raise InvalidClinicalValueError(
                f"{where}: {_short(value)} is not a category seen in training (known: {known or 'none'})"
            )
        return f.categories[j]

    def encode_one(
        self, record: Mapping[str, Any] | None, *, unseen: Unseen = "raise", extra: Extra = "raise"
    ) -> np.ndarray:
        """float32 [F] for one record (see :meth:`encode`)."""
        values = self.validate(record, unseen=unseen, extra=extra)
        out = np.zeros(self.width, dtype=np.float32)
        for i, (f, start) in enumerate(zip(self.fields, self._offsets)):
            value = values[f.name]
            if value is None:
                out[start + f.width - 1] = 1.0
            elif f.kind == "number":
                out[start] = (value - f.mean) / f.std
            elif f.kind == "bool":
                out[start] = 1.0 if value else 0.0
            else:
                out[start + self._lookup[i][value.casefold()]] = 1.0
        return out

    def encode(
        self, records: Iterable[Mapping[str, Any] | None], *, unseen: Unseen = "raise", extra: Extra = "raise"
    ) -> np.ndarray:
        """float32 [N, F]: one row per record (a mapping field -> value, or None: nothing answered).

        Absent fields and missing values encode as missing (values 0, indicator 1). ``unseen="missing"`` encodes a
        category never seen in training as missing instead of raising, ``extra="ignore"`` skips fields the schema
        does not have instead of raising (both for data sets read for training and evaluation).
        """
        rows = [self.encode_one(r, unseen=unseen, extra=extra) for r in records]
        return np.stack(rows) if rows else np.zeros((0, self.width), dtype=np.float32)

    def mask(self, encoded: np.ndarray, drop: np.ndarray) -> np.ndarray:
        """``encoded`` [N, F] with the fields where ``drop`` [N, n_fields] is True set to missing (a copy)."""
        out = np.array(encoded, dtype=np.float32, copy=True)
        for i, (f, start) in enumerate(zip(self.fields, self._offsets)):
            rows = np.asarray(drop[:, i], dtype=bool)
            out[rows, start : start + f.width - 1] = 0.0
            out[rows, start + f.width - 1] = 1.0
        return out

    def missing_indicators(self, encoded: np.ndarray) -> np.ndarray:
        """The missing-indicator columns of ``encoded`` [N, F] -> float32 [N, n_fields]."""
        return np.asarray(encoded, dtype=np.float32)[:, list(self.indicator_columns)]

    def check_array(self, clinical: Any, n: int) -> np.ndarray:
        """An already encoded batch, checked: float32 C-contiguous [n, F]. Raises :class:`InvalidClinicalValueError`."""
        array = np.asarray(clinical)
        if array.ndim != 2 or array.shape != (n, self.width):
            raise InvalidClinicalValueError(
                f"encoded clinical input: expected shape ({n}, {self.width}), got {tuple(array.shape)}"
            )
        if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            raise InvalidClinicalValueError("encoded clinical input: values must be finite numbers")
        return np.ascontiguousarray(array, dtype=np.float32)

    # --- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``fields`` (each with its kind and encoding), ``missing_tokens``, ``schema``."""
        data: dict[str, Any] = to_dict(self)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "clinical") -> ClinicalSchema:
        """Parse and validate :meth:`to_dict`'s output (from a card or an artifact's metadata), field by field."""
        if isinstance(data, dict) and "schema" not in data:
            raise SchemaError(f"{where}: missing field 'schema' (expected {CLINICAL_SCHEMA!r})")
        return from_dict(cls, data, where)

    def describe(self) -> str:
        """One line: ``3 fields (age: number, bleed: bool, gender: category[2]) -> 8 columns``."""
        parts = [
            f"{f.name}: {f.kind}" + (f"[{len(f.categories)}]" if f.kind == "category" else "") for f in self.fields
        ]
        return f"{len(self.fields)} fields ({', '.join(parts)}) -> {self.width} columns"


def infer_kind(values: Iterable[str], missing_tokens: Sequence[str] = DEFAULT_MISSING_TOKENS) -> Kind:
    """The kind of a column from its written values: bool when every answer is a true/false word, number when
    every one parses as a finite number, else category."""
    tokens = frozenset(t.strip().upper() for t in missing_tokens)
    answered = [str(v).strip() for v in values if not _is_missing(v, tokens)]
    # Words only: a 0/1 column may be a count, and as a number it is encoded the same way anyway.
    if answered and all(v.lower() in _BOOL_WORDS for v in answered):
        return "bool"
    try:
        if answered and all(math.isfinite(float(v)) for v in answered):
            return "number"
    except ValueError:
        pass
    return "category"


def fit_schema(
    fields: Sequence[str],
    records: Sequence[Mapping[str, Any] | None],
    *,
    kinds: Mapping[str, Kind] | None = None,
    missing_tokens: Sequence[str] = DEFAULT_MISSING_TOKENS,
) -> ClinicalSchema:
    """Fit the encoding of ``fields`` on ``records`` (the training images' answers, values as written).

    A field's kind comes from ``kinds``, else :data:`PAD_FIELDS`, else :func:`infer_kind` on the answers. Numbers
    get the answers' mean and (population) standard deviation (std 1 when fewer than two distinct answers);
    categories the answers seen, sorted. A value that does not fit the field's kind raises
    :class:`InvalidClinicalValueError` naming it. A field nobody answered is kept (it encodes missing only).
    """
    names = parse_fields(list(fields))
    tokens = tuple(missing_tokens)
    token_set = frozenset(t.strip().upper() for t in tokens)
    kinds = dict(kinds or {})
    fitted: list[ClinicalField] = []
    for name in names:
        raw = [(r or {}).get(name) for r in records]
        kind: Kind = kinds.get(name) or PAD_FIELDS.get(name) or infer_kind([v for v in raw if v is not None], tokens)
        provisional = ClinicalSchema((ClinicalField(name, kind),), tokens)
        if kind == "category":
            seen = sorted({str(v).strip() for v in raw if not _is_missing(v, token_set)}, key=str.casefold)
            categories = tuple(dict((c.casefold(), c) for c in seen).values())  # one spelling per category
            answered = sum(1 for v in raw if not _is_missing(v, token_set))
            fitted.append(ClinicalField(name, kind, categories=categories, observed=answered))
            continue
        parsed = [provisional._parse(0, v, "raise") for v in raw]
        answers = [float(v) for v in parsed if v is not None]
        if kind == "number" and answers:
            mean = float(np.mean(answers))
            std = float(np.std(answers))
            fitted.append(ClinicalField(name, kind, mean=mean, std=std if std > 1e-8 else 1.0, observed=len(answers)))
        else:
            fitted.append(ClinicalField(name, kind, observed=len(answers)))
    return ClinicalSchema(tuple(fitted), tokens)


def merge_schemas(schemas: Sequence[ClinicalSchema]) -> ClinicalSchema:
    """One schema from which every one of ``schemas`` can be computed (see :func:`translation`): a fold ensemble's
    input, when each fold fitted its own. The first schema's fields, kinds, number scaling and missing tokens; a
    category field's categories are those any schema saw. :class:`SchemaError` when fields, kinds or missing tokens
    differ."""
    first = schemas[0]
    for other in schemas[1:]:
        _check_translatable(first, other)
    merged = []
    for i, f in enumerate(first.fields):
        if f.kind != "category":
            merged.append(f)
            continue
        spelled = {c.casefold(): c for s in reversed(schemas) for c in s.fields[i].categories}
        categories = tuple(spelled[c] for c in sorted(spelled))
        observed = max(s.fields[i].observed for s in schemas)
        merged.append(ClinicalField(f.name, f.kind, categories=categories, observed=observed))
    return ClinicalSchema(tuple(merged), first.missing_tokens)


def translation(source: ClinicalSchema, target: ClinicalSchema) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)``, float32 [F_target, F_source] and [F_target], such that ``W @ source.encode_one(r) + b`` equals
    ``target.encode_one(r, unseen="missing")`` for every record ``r`` ``source`` encodes: an affine map, so a graph
    can take one encoding and feed members fitted on other images. A number is rescaled (and stays 0 when
    missing), a bool copied, a category's column moved to the target's; a category the target never saw sets the
    target's missing indicator. :class:`SchemaError` when fields, kinds or missing tokens differ."""
    _check_translatable(source, target)
    weight = np.zeros((target.width, source.width), dtype=np.float64)
    bias = np.zeros(target.width, dtype=np.float64)
    for i, (fs, ft) in enumerate(zip(source.fields, target.fields)):
        s0, t0 = source._offsets[i], target._offsets[i]
        s_missing, t_missing = s0 + fs.width - 1, t0 + ft.width - 1
        weight[t_missing, s_missing] = 1.0
        if fs.kind == "number":
            # answered: (z_s * std_s + mean_s - mean_t) / std_t; missing (z_s = 0, indicator 1): 0
            shift = (fs.mean - ft.mean) / ft.std
            weight[t0, s0] = fs.std / ft.std
            bias[t0] = shift
            weight[t0, s_missing] = -shift
        elif fs.kind == "bool":
            weight[t0, s0] = 1.0
        else:
            for j, category in enumerate(fs.categories):
                k = target._lookup[i].get(category.casefold())
                weight[t0 + k if k is not None else t_missing, s0 + j] = 1.0
    return weight.astype(np.float32), bias.astype(np.float32)


def _check_translatable(a: ClinicalSchema, b: ClinicalSchema) -> None:
    kinds_a = [(f.name, f.kind) for f in a.fields]
    kinds_b = [(f.name, f.kind) for f in b.fields]
    if kinds_a != kinds_b or a._tokens != b._tokens:
        raise SchemaError(
            "clinical schemas differ in their fields, kinds or missing tokens: "
            f"{', '.join(f'{n}:{k}' for n, k in kinds_a)} vs {', '.join(f'{n}:{k}' for n, k in kinds_b)}"
        )
