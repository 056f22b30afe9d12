"""The folds of a cross-validation as one model: the mean of their calibrated probabilities, in one graph.

``facederm-export CV_DIR --ensemble`` exports it through every target like a single run. Each member divides its
logits by its own fold's temperature before the mean, so the ensemble's card carries temperature 1. No image is
held out from every fold (each trained on the others' test patients), so the fidelity gate of an ensemble needs
``--eval-data`` (other patients); its calibration images are the ones the folds trained on.

A clinical fold fitted its schema on its own training images (numbers scaled, categories seen), so the folds'
encodings differ: the ensemble takes one merged encoding (:func:`~facederm.runtime.clinical.merge_schemas`, the
card's schema) and each member maps it to its own with a fixed linear layer
(:func:`~facederm.runtime.clinical.translation`), part of the graph.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
from torch import nn

from facederm.runtime.card import Calibration, ModelCard
from facederm.runtime.clinical import ClinicalSchema, merge_schemas, translation
from facederm.runtime.errors import ConfigError, SchemaError
from facederm.runtime.layout import CV_PLAN_FILE, fold_dir, is_run_dir

from .rundir import TRAINING_KEY, load_run, load_splits, training_ids


def is_cv_dir(path: str | Path) -> bool:
    """Whether ``path`` is a cross-validation dir (``facederm-train --cv K``)."""
    return (Path(path) / CV_PLAN_FILE).is_file()


class EnsembleClassifier(nn.Module):
    """K classifiers answering ``log(mean_k softmax(logits_k / T_k))``: a softmax of it is the mean of the
    members' calibrated probabilities (computed as a log-sum-exp, stable in fp16)."""

    def __init__(self, members: list[nn.Module], temperatures: list[float]) -> None:
        super().__init__()
        if not members or len(members) != len(temperatures):
            raise ConfigError("an ensemble needs one temperature per member and at least one member")
        self.members = nn.ModuleList(members)
        self.temperatures = [float(t) for t in temperatures]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        logp = [torch.log_softmax(m(*inputs) / t, dim=1) for m, t in zip(self.members, self.temperatures)]
        return torch.logsumexp(torch.stack(logp), dim=0) - math.log(len(logp))


class TranslatedMember(nn.Module):
    """A clinical member fed another schema's encoding through the fixed affine map to its own (no answers given:
    the member's own "nothing answered" vector, which the map also yields from the other's)."""

    def __init__(self, member: nn.Module, source: ClinicalSchema, target: ClinicalSchema) -> None:
        super().__init__()
        self.member = member
        weight, bias = translation(source, target)
        self.translate = nn.Linear(source.width, target.width)
        with torch.no_grad():
            self.translate.weight.copy_(torch.from_numpy(weight))
            self.translate.bias.copy_(torch.from_numpy(bias))
        self.translate.requires_grad_(False)

    def forward(self, image: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        if clinical is None:
            return self.member(image)
        return self.member(image, self.translate(clinical.to(self.translate.weight.dtype)))


def fold_dirs(cv_dir: str | Path) -> list[Path]:
    """The run dirs of a CV dir's folds; :class:`ConfigError` when one has not finished."""
    cv_dir = Path(cv_dir)
    k = int(json.loads((cv_dir / CV_PLAN_FILE).read_text())["k"])
    dirs = [fold_dir(cv_dir, i) for i in range(k)]
    missing = [d.name for d in dirs if not is_run_dir(d)]
    if missing:
        raise ConfigError(f"{cv_dir}: fold(s) {', '.join(missing)} not finished; finish them with --resume")
    return dirs


def load_ensemble(cv_dir: str | Path) -> tuple[EnsembleClassifier, ModelCard]:
    """The CV dir's folds as one :class:`EnsembleClassifier` (eval mode) and its card (fold 0's, temperature 1,
    ``data["ensemble"]`` naming the members and their temperatures; a clinical ensemble's schema merged from the
    folds', each member translating it to its own)."""
    loaded = [load_run(d) for d in fold_dirs(cv_dir)]
    first = loaded[0][1]
    schemas = [card.clinical for _, card in loaded]
    for _, card in loaded[1:]:
        if (card.labels, card.preprocessing) != (first.labels, first.preprocessing):
            raise ConfigError(f"{cv_dir}: the folds differ in labels or preprocessing")
    members: list[nn.Module] = [model for model, _ in loaded]
    schema = first.clinical
    if any(s is not None for s in schemas):
        if any(s is None for s in schemas):
            raise ConfigError(f"{cv_dir}: some folds take clinical fields and some do not")
        try:
            schema = merge_schemas(schemas)
        except SchemaError as error:
            raise ConfigError(f"{cv_dir}: the folds' clinical fields cannot be combined: {error}") from None
        members = [m if s == schema else TranslatedMember(m, schema, s) for m, s in zip(members, schemas)]
    temperatures = [card.calibration.temperature for _, card in loaded]
    ensemble = EnsembleClassifier(members, temperatures).eval()
    ensemble.clinical_schema = schema  # predict_probabilities encodes answers with it
    names = [fold_dir(cv_dir, i).name for i in range(len(loaded))]
    data = {**first.data, "ensemble": {"members": names, "temperatures": temperatures, "combine": "mean"}}
    data.pop("cross_validation", None)
    calibration = Calibration(1.0, fitted_on="each member's val")
    card = dataclasses.replace(first, data=data, calibration=calibration, clinical=schema)
    return ensemble, card


def ensemble_splits(cv_dir: str | Path) -> dict[str, list[str]]:
    """An ensemble's splits.json view: every image some fold trained on (calibration may use them), none held
    out (every image was some fold's training image)."""
    ids: dict[str, None] = {}
    for d in fold_dirs(cv_dir):
        ids.update(dict.fromkeys(training_ids(load_splits(d))))
    return {TRAINING_KEY: list(ids)}


def load_trained(path: str | Path, *, ensemble: bool = False) -> tuple[nn.Module, ModelCard]:
    """A run dir's classifier and card, or with ``ensemble`` a CV dir's folds as one (:func:`load_ensemble`)."""
    if is_cv_dir(path):
        if not ensemble:
            raise ConfigError(
                f"{path} is a cross-validation dir: pass --ensemble to export its folds as one graph, "
                f"or export one fold ({fold_dir(path, 0)})"
            )
        return load_ensemble(path)
    if ensemble:
        raise ConfigError(f"--ensemble needs a cross-validation dir (facederm-train --cv K); {path} is not one")
    return load_run(path)


def trained_splits(path: str | Path) -> dict[str, list[str]]:
    """A run dir's recorded splits, or a CV dir's as its fold ensemble sees them (:func:`ensemble_splits`)."""
    return ensemble_splits(path) if is_cv_dir(path) else load_splits(path)
