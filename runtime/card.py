"""The model card: what a trained model is (architecture, labels, preprocessing, training data).

A plain typed dataclass that round-trips through JSON with strict validation (see
:mod:`facederm.runtime.schema`). Training writes it into the run dir's card file; export embeds it in the
manifest (:mod:`facederm.runtime.layout`) and, where the format allows, inside each artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .clinical import ClinicalSchema
from .errors import SchemaError, UnsupportedSchemaVersionError
from .schema import from_dict, read_json, to_dict, write_json_atomic

CARD_SCHEMA = "facederm.card/1"
NOT_A_DIAGNOSIS = "facederm output is decision support for clinicians, not a diagnosis."


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model input. The graph input is RGB 0-255; normalization is baked in.

    ``resize_shorter``: the shorter side is resized to this, then the center ``crop`` x ``crop`` is taken.
    ``mean``/``std`` are on the 0-1 scale (timm convention); exported graphs apply them internally.
    """

    crop: int
    resize_shorter: int
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    color: Literal["RGB"] = "RGB"
    input_range: Literal["0-255"] = "0-255"
    layout: Literal["NCHW"] = "NCHW"

    def __post_init__(self) -> None:
        if self.crop < 8 or self.crop > 4096:
            raise SchemaError(f"preprocessing.crop: {self.crop} is out of range 8..4096")
        if self.resize_shorter < self.crop:
            raise SchemaError("preprocessing.resize_shorter must be >= crop")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise SchemaError("preprocessing.mean and .std need 3 values (R, G, B)")
        if any(s <= 0 for s in self.std):
            raise SchemaError("preprocessing.std values must be > 0")


@dataclass(frozen=True)
class Referral:
    """When a prediction should be flagged for a clinician: any of ``labels`` with p >= ``threshold``, or a
    top label whose probability is below its ``below_confidence`` entry (the model is unsure)."""

    labels: tuple[str, ...] = ()
    threshold: float = 0.5
    below_confidence: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise SchemaError("referral.threshold must be within 0..1")
        bad = sorted(label for label, p in self.below_confidence.items() if not 0.0 <= p <= 1.0)
        if bad:
            raise SchemaError(f"referral.below_confidence: {', '.join(bad)} must be within 0..1")


@dataclass(frozen=True)
class Calibration:
    """The temperature every exported graph divides its logits by (1: none), and where it was fitted."""

    temperature: float = 1.0
    fitted_on: str = ""
    method: str = "temperature scaling (NLL)"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise SchemaError(f"calibration.temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to use and to trust a trained model, independent of its file format."""

    arch: str
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    label_names: dict[str, str] = field(default_factory=dict)
    referral: Referral = field(default_factory=Referral)
    calibration: Calibration = field(default_factory=Calibration)
    model_args: dict[str, Any] = field(default_factory=dict)  # extra create_model kwargs (head size, ...)
    protocol: str = "all"
    data: dict[str, Any] = field(default_factory=dict)  # fingerprint: source, counts, file-list hash
    seed: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    wall_time_s: float | None = None
    created: str | None = None
    note: str = NOT_A_DIAGNOSIS
    schema: str = CARD_SCHEMA
    # The clinical fields the model takes as its second input ``clinical`` (None: image-only; then the card's JSON
    # has no ``clinical`` entry at all, as before clinical fields existed).
    clinical: ClinicalSchema | None = None

    def __post_init__(self) -> None:
        if self.schema != CARD_SCHEMA:
            raise UnsupportedSchemaVersionError(
                f"model card schema {self.schema!r} is not supported (this facederm reads {CARD_SCHEMA})"
            )
        if len(self.labels) < 2:
            raise SchemaError("labels: a classifier needs at least 2 labels")
        if any(not isinstance(x, str) or not x.strip() for x in self.labels):
            raise SchemaError("labels: every label must be a non-empty string")
        duplicates = sorted({x for x in self.labels if self.labels.count(x) > 1})
        if duplicates:
            raise SchemaError(f"labels: duplicate label(s) {', '.join(duplicates)}")
        unknown = sorted(set(self.label_names) - set(self.labels))
        if unknown:
            raise SchemaError(f"label_names: not in labels: {', '.join(unknown)}")
        unknown = sorted(set(self.referral.labels) - set(self.labels))
        if unknown:
            raise SchemaError(f"referral.labels: not in labels: {', '.join(unknown)}")
        unknown = sorted(set(self.referral.below_confidence) - set(self.labels))
        if unknown:
            raise SchemaError(f"referral.below_confidence: not in labels: {', '.join(unknown)}")

    @property
    def input_size(self) -> int:
        return self.preprocessing.crop

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = to_dict(self)
        if data.get("clinical") is None:
            data.pop("clinical", None)  # image-only: the card's JSON is what it was before clinical fields
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "card") -> ModelCard:
        check_schema(data, CARD_SCHEMA, where)
        return from_dict(cls, data, where)

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        return cls.from_dict(read_json(path), where=str(path))

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())


def check_schema(data: Any, expected: str, where: str) -> None:
    if not isinstance(data, dict):
        raise SchemaError(f"{where}: expected a JSON object, got {type(data).__name__}")
    found = data.get("schema")
    if found is None:
        raise SchemaError(f"{where}: missing field 'schema' (expected {expected!r})")
    if found != expected:
        raise UnsupportedSchemaVersionError(
            f"{where}: schema {found!r} is not supported (this facederm reads {expected!r})"
        )
