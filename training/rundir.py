"""The run dir: what training writes and export reads.

``model.safetensors`` (weights, no pickle), ``config.json`` (the model card), ``metrics.json``,
``splits.json`` (image ids per split, see :func:`recorded_splits`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from facederm.runtime.card import ModelCard
from facederm.runtime.errors import ConfigError
from facederm.runtime.layout import CARD_FILE, METRICS_FILE, SPLITS_FILE, WEIGHTS_FILE
from facederm.runtime.schema import read_json, write_json_atomic

from .models import FacedermClassifier, create_model


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write ``model``'s state dict as safetensors, atomically."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_run(
    run_dir: str | Path,
    model: torch.nn.Module,
    card: ModelCard,
    metrics: dict[str, Any] | None = None,
    splits: dict[str, list[str]] | None = None,
) -> Path:
    """Write a run dir. ``splits`` maps split name -> image ids (so export evaluates on the same test split)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, run_dir / WEIGHTS_FILE)
    card.save(run_dir / CARD_FILE)
    if metrics is not None:
        write_json_atomic(run_dir / METRICS_FILE, metrics)
    if splits is not None:
        write_json_atomic(run_dir / SPLITS_FILE, splits)
    return run_dir


def load_card(run_dir: str | Path) -> ModelCard:
    """The model card of a run dir."""
    path = Path(run_dir) / CARD_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a facederm run dir (no {CARD_FILE}); train one with facederm-train")
    return ModelCard.load(path)


def load_run(run_dir: str | Path, map_location: str = "cpu") -> tuple[FacedermClassifier, ModelCard]:
    """Rebuild the trained classifier (eval mode, logits out) and its card from a run dir. A clinical model keeps
    its card's schema as ``model.clinical_schema`` (predict_probabilities encodes the samples' answers with it)."""
    run_dir = Path(run_dir)
    card = load_card(run_dir)
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(f"{run_dir}: missing {WEIGHTS_FILE}")
    model = create_model(card.arch, card.num_classes, **card.model_args)
    model.load_state_dict(load_file(str(weights), device=map_location))
    model.clinical_schema = card.clinical
    return model.eval(), card


#: splits.json keys. ``train`` / ``val`` / ``test`` are the final stage's images and the evaluated test
#: images; ``training`` is every image any stage trained on (a face-transfer run's other-site and face
#: training images: export calibrates on them) and ``heldout`` every image of the validation and test
#: patients, all sites (neither trained on nor calibrated with: the export gate's agreement images).
TRAINING_KEY = "training"
HELDOUT_KEY = "heldout"


def recorded_splits(
    train: Sequence[Any], val: Sequence[Any], test: Sequence[Any], *, training: Sequence[Any], heldout: Sequence[Any]
) -> dict[str, list[str]]:
    """The splits.json content for samples (anything with ``image_id``); ids in first-seen order, once each."""

    def ids(samples: Sequence[Any]) -> list[str]:
        return list(dict.fromkeys(s.image_id for s in samples))

    return {
        "train": ids(train),
        "val": ids(val),
        "test": ids(test),
        TRAINING_KEY: ids(training),
        HELDOUT_KEY: ids(heldout),
    }


def load_splits(run_dir: str | Path) -> dict[str, list[str]]:
    """Image ids per split as recorded at training time ({} when the run has none)."""
    path = Path(run_dir) / SPLITS_FILE
    return read_json(path) if path.is_file() else {}


def training_ids(splits: dict[str, list[str]]) -> list[str]:
    """Every image the run trained on, all stages (older runs recorded only the final stage's ``train``)."""
    return list(splits.get(TRAINING_KEY) or splits.get("train") or [])


def heldout_ids(splits: dict[str, list[str]]) -> list[str]:
    """Every image of the run's validation and test patients (older runs: the recorded val + test)."""
    if splits.get(HELDOUT_KEY):
        return list(splits[HELDOUT_KEY])
    return list(dict.fromkeys([*splits.get("val", []), *splits.get("test", [])]))


def load_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
