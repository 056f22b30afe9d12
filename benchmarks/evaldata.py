"""The evaluation images every native accuracy figure is computed on, preprocessed once.

The images go through the runtime's one preprocessing (via ``facederm.training.evaluate``) and are stored
as a uint8 NCHW ``.npy`` in the work dir (exact: the graphs take whole 0-255 values), which each row's
process memory-maps. Which images: the run's test split when the data holds it; otherwise every image
the run did not train or validate on (an external set); never an image the model was trained on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facederm.runtime.card import ModelCard
from facederm.runtime.errors import DataError

from .schema import EvalInfo

EVAL_FILE = "eval-images.npy"


@dataclass(frozen=True)
class EvalData:
    info: EvalInfo
    y_true: np.ndarray  # class index per image, in the card's label order
    groups: np.ndarray  # patient id per image (bootstrap resampling unit)
    tensor_path: Path


def data_spec(requested: str | None, card: ModelCard) -> str | None:
    """``--data`` when given, else the data the run was trained on (its card's ``data.spec``)."""
    return requested or (card.data.get("spec") if isinstance(card.data, dict) else None) or None


def _select(samples: list, splits: dict[str, list[str]], have_run: bool) -> tuple[list, str]:
    test_ids = set(splits.get("test", []))
    seen_in_training = set(splits.get("train", [])) | set(splits.get("val", []))
    test = [s for s in samples if s.image_id in test_ids]
    if test:
        return test, "the run's test split"
    unseen = [s for s in samples if s.image_id not in seen_in_training]
    if not have_run:
        return unseen, "all images (no run dir, so training images cannot be excluded)"
    return unseen, "all images the run did not train or validate on"


def prepare_eval(spec: str, card: ModelCard, splits: dict[str, list[str]], work_dir: Path, *,
                 have_run: bool = True, max_images: int | None = None, progress: bool = False) -> EvalData:
    """Open ``spec``, pick the evaluation images, preprocess them into ``work_dir``."""
    from facederm.training.data import open_dataset
    from facederm.training.evaluate import preprocess_samples

    label_set = card.data.get("label_set") if isinstance(card.data, dict) else None
    dataset = open_dataset(spec, label_set=label_set) if label_set else open_dataset(spec)
    chosen, selection = _select(dataset.samples, splits, have_run)
    unknown = sorted({s.label for s in chosen} - set(card.labels))
    chosen = [s for s in chosen if s.label in card.labels]
    if max_images and len(chosen) > max_images:
        chosen = sorted(chosen, key=lambda s: (s.patient_id, s.image_id))[:max_images]
        selection += f", first {max_images} by patient id"
    if not chosen:
        raise DataError(f"{spec}: no evaluation image left ({selection}; labels not in the model: {unknown or 'none'})")
    if unknown:
        selection += f"; labels the model lacks were left out: {', '.join(unknown)}"
    images = np.stack(list(preprocess_samples(dataset, chosen, card.preprocessing))).transpose(0, 3, 1, 2)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / EVAL_FILE
    np.save(path, np.ascontiguousarray(images, dtype=np.uint8))
    counts = Counter(s.label for s in chosen)
    info = EvalInfo(
        spec=spec,
        selection=selection,
        synthetic=bool(dataset.synthetic),
        n_images=len(chosen),
        n_patients=len({s.patient_id for s in chosen}),
        labels=tuple(card.labels),
        class_counts={label: counts.get(label, 0) for label in card.labels},
    )
    y_true = np.array([card.labels.index(s.label) for s in chosen], dtype=np.int64)
    groups = np.array([s.patient_id for s in chosen]).astype(str)
    return EvalData(info, y_true, groups, path)
