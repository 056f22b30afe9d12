"""Names and helpers for the facederm metadata stored inside each artifact.

Export writes these keys and the runtime reads them, both through this module, so the two can never
drift apart. Where each format keeps its metadata:

- ONNX (.onnx, .ort): ``metadata_props`` with :data:`CARD_KEY` (the card JSON), :data:`LABELS_KEY`
  (JSON list) and :data:`PREPROCESSING_KEY` (JSON object) -> :func:`card_to_metadata`.
- OpenVINO IR: ``rt_info`` at :data:`OPENVINO_RT_INFO_PATH` = ("facederm", "card"), the card JSON.
- Core ML: ``user_defined_metadata[CARD_KEY]``, the card JSON (plus labels/preprocessing as for ONNX).
- TensorRT engine: a sidecar ``<engine>.json`` -> :func:`tensorrt_sidecar`.

Every graph has one input named :data:`INPUT_NAME` (float32 NCHW RGB 0-255) and one output named
:data:`OUTPUT_NAME` (softmax probabilities). A model trained with clinical fields (the card's ``clinical`` schema)
has a second input :data:`CLINICAL_INPUT_NAME`: float32 [N, F], the answers encoded by that schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .card import ModelCard, Preprocessing
from .errors import MetadataMismatchError, SchemaError
from .schema import to_dict

INPUT_NAME = "image"
CLINICAL_INPUT_NAME = "clinical"
OUTPUT_NAME = "probabilities"

CARD_KEY = "facederm.card"
LABELS_KEY = "labels"
PREPROCESSING_KEY = "preprocessing"
OPENVINO_RT_INFO_PATH: tuple[str, str] = ("facederm", "card")
COREML_CARD_KEY = CARD_KEY

#: Keys of the TensorRT sidecar JSON (``model.fp16.engine.json`` beside ``model.fp16.engine``).
SIDECAR_SUFFIX = ".json"
SIDECAR_CARD = "card"
SIDECAR_TENSORRT_VERSION = "tensorrt_version"
SIDECAR_COMPUTE_CAPABILITY = "compute_capability"  # "8.9" (major.minor of the GPU it was built on)
SIDECAR_PRECISION = "precision"
SIDECAR_MAX_BATCH = "max_batch"


def card_to_metadata(card: ModelCard) -> dict[str, str]:
    """The string key/value pairs to embed in an artifact (ONNX metadata_props, Core ML metadata)."""
    return {
        CARD_KEY: json.dumps(card.to_dict(), sort_keys=True),
        LABELS_KEY: json.dumps(list(card.labels)),
        PREPROCESSING_KEY: json.dumps(to_dict(card.preprocessing), sort_keys=True),
    }


def card_from_metadata(metadata: Mapping[str, str], where: str) -> ModelCard:
    """Read the card back from an artifact's metadata; ``where`` names the artifact in errors.

    Refuses metadata without a card, a malformed card, or ``labels``/``preprocessing`` entries that
    disagree with the card they sit beside.
    """
    if CARD_KEY not in metadata:
        raise MetadataMismatchError(
            f"{where}: no facederm metadata ({CARD_KEY!r} is missing); re-export it with facederm-export"
        )
    card = _parse_card(metadata[CARD_KEY], where)
    if LABELS_KEY in metadata:
        labels = _parse_json(metadata[LABELS_KEY], f"{where}: {LABELS_KEY}")
        if list(labels) != list(card.labels):
            raise MetadataMismatchError(f"{where}: metadata labels {labels} disagree with its card {list(card.labels)}")
    if PREPROCESSING_KEY in metadata:
        pre = _parse_json(metadata[PREPROCESSING_KEY], f"{where}: {PREPROCESSING_KEY}")
        if pre != to_dict(card.preprocessing):
            raise MetadataMismatchError(f"{where}: metadata preprocessing disagrees with its card")
    return card


def card_from_json(text: str | Mapping[str, Any], where: str) -> ModelCard:
    """A card from its JSON text (OpenVINO rt_info) or parsed object (TensorRT sidecar)."""
    return _parse_card(text, where)


def check_agreement(artifact_card: ModelCard, manifest_card: ModelCard, where: str) -> None:
    """Labels, preprocessing and the clinical schema inside an artifact must equal the manifest's, or predictions
    mean nothing."""
    if tuple(artifact_card.labels) != tuple(manifest_card.labels):
        raise MetadataMismatchError(
            f"{where}: labels {list(artifact_card.labels)} disagree with manifest.json {list(manifest_card.labels)};"
            " the artifact belongs to another model or export"
        )
    if _preprocessing_key(artifact_card.preprocessing) != _preprocessing_key(manifest_card.preprocessing):
        raise MetadataMismatchError(
            f"{where}: preprocessing {to_dict(artifact_card.preprocessing)} disagrees with manifest.json"
            f" {to_dict(manifest_card.preprocessing)}"
        )
    if artifact_card.clinical != manifest_card.clinical:
        # Same fields, encodings and order, or the answers would be fed to the wrong columns.
        raise MetadataMismatchError(
            f"{where}: its clinical schema disagrees with manifest.json's"
            f" ({_clinical_names(artifact_card)} vs {_clinical_names(manifest_card)})"
        )


def tensorrt_sidecar(
    card: ModelCard, *, tensorrt_version: str, compute_capability: str, precision: str, max_batch: int
) -> dict[str, Any]:
    """The JSON object written beside a TensorRT engine (engines carry no metadata of their own)."""
    return {
        SIDECAR_CARD: card.to_dict(),
        SIDECAR_TENSORRT_VERSION: tensorrt_version,
        SIDECAR_COMPUTE_CAPABILITY: compute_capability,
        SIDECAR_PRECISION: precision,
        SIDECAR_MAX_BATCH: int(max_batch),
    }


def _clinical_names(card: ModelCard) -> str:
    return "image-only" if card.clinical is None else ", ".join(card.clinical.names)


def _preprocessing_key(pre: Preprocessing) -> dict[str, Any]:
    data: dict[str, Any] = to_dict(pre)
    data["mean"] = [round(float(v), 6) for v in data["mean"]]
    data["std"] = [round(float(v), 6) for v in data["std"]]
    return data


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise MetadataMismatchError(f"{where}: malformed JSON in artifact metadata: {exc}") from exc


def _parse_card(text: str | Mapping[str, Any], where: str) -> ModelCard:
    data = _parse_json(text, where) if isinstance(text, str) else dict(text)
    try:
        return ModelCard.from_dict(data, where=f"{where}: card")
    except SchemaError as exc:
        raise MetadataMismatchError(f"{where}: the embedded model card is invalid: {exc}") from exc
