"""Calibration and evaluation images for export.

Defaults come from the run dir: calibration from its training split, evaluation from its test split
(``splits.json`` + the card's ``data["spec"]``). Calibration images are class-stratified and
patient-grouped (each patient gives one image before any gives a second), at most ``size`` of them, and
never an evaluation image or patient. A class without a calibration image is an :class:`ExportError`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facederm.runtime.card import ModelCard, Preprocessing
from facederm.runtime.errors import ConfigError, ExportError
from facederm.runtime.preprocess import resize_and_crop, to_tensor


@dataclass
class ImageSet:
    """Samples of one data set, their label indices (in the card's label order) and lazily loaded tensors."""

    dataset: object  # facederm.training.data.DataSet (kept loose: the data layer owns the type)
    samples: list
    y_true: np.ndarray
    preprocessing: Preprocessing
    spec: str = ""
    _images: list[np.ndarray] | None = field(default=None, repr=False)
    _tensors: np.ndarray | None = field(default=None, repr=False)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(s.image_id for s in self.samples)

    @property
    def patients(self) -> np.ndarray:
        return np.asarray([s.patient_id for s in self.samples], dtype=str)

    def __len__(self) -> int:
        return len(self.samples)

    def images(self) -> list[np.ndarray]:
        """uint8 HWC RGB at the input size, through the runtime's one preprocessing (decoded once)."""
        if self._images is None:
            pre = self.preprocessing
            self._images = [
                resize_and_crop(self.dataset.load_rgb(s), pre.crop, pre.resize_shorter, pre.interpolation)  # type: ignore[attr-defined]
                for s in self.samples
            ]
        return self._images

    def tensors(self) -> np.ndarray:
        """float32 NCHW 0-255: the exported graphs' input."""
        if self._tensors is None:
            images = self.images()
            crop = self.preprocessing.crop
            self._tensors = to_tensor(images) if images else np.zeros((0, 3, crop, crop), np.float32)
        return self._tensors

Calibration = ImageSet


def _open(spec: str):
    from facederm.training.data import open_dataset

    return open_dataset(spec)


def _labelled(dataset, samples: Sequence, card: ModelCard, spec: str, what: str) -> ImageSet:
    index = {label: i for i, label in enumerate(card.labels)}
    unknown = sorted({s.label for s in samples if s.label not in index})
    if unknown:
        raise ExportError(f"{what} data {spec}: label(s) {', '.join(unknown)} are not the model's {list(card.labels)}")
    y = np.asarray([index[s.label] for s in samples], dtype=np.int64)
    return ImageSet(dataset, list(samples), y, card.preprocessing, spec)


def _run_split(run_dir: Path, card: ModelCard, split: str, option: str):
    from facederm.training.rundir import load_splits

    spec = card.data.get("spec") if isinstance(card.data, dict) else None
    splits = load_splits(run_dir)
    if not spec or split not in splits:
        raise ConfigError(
            f"{run_dir}: the run records no {split} split (splits.json + card data.spec); pass {option} DATA"
        )
    dataset = _open(spec)
    wanted = set(splits[split])
    samples = [s for s in dataset.samples if s.image_id in wanted]
    if not samples:
        raise ExportError(f"{run_dir}: none of the {split} split's {len(wanted)} image ids are in {spec}")
    return dataset, samples, f"{spec} ({split} split)"


def evaluation_set(run_dir: str | Path, card: ModelCard, eval_data: str | None) -> ImageSet:
    """The parity gate's images: ``eval_data`` entirely, or the run's test split."""
    if eval_data:
        dataset = _open(eval_data)
        return _labelled(dataset, dataset.samples, card, eval_data, "evaluation")
    dataset, samples, spec = _run_split(Path(run_dir), card, "test", "--eval-data")
    return _labelled(dataset, samples, card, spec, "evaluation")


def calibration_pool(run_dir: str | Path, card: ModelCard, calib_data: str | None):
    """(dataset, candidate samples, spec): ``calib_data`` entirely, or the run's training split."""
    if calib_data:
        dataset = _open(calib_data)
        return dataset, list(dataset.samples), calib_data
    return _run_split(Path(run_dir), card, "train", "--calib-data")


def _order(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()


def select_calibration(
    samples: Sequence,
    labels: Sequence[str],
    *,
    size: int,
    exclude_ids: Sequence[str] = (),
    exclude_patients: Sequence[str] = (),
    seed: int = 0,
) -> list:
    """Pick at most ``size`` calibration samples: class-stratified, patient-grouped, none excluded.

    Each class gets a share proportional to its candidates (at least one image); inside a class, patients
    are taken in a seeded order, one image each per round, so many patients are covered. Samples whose
    image id or patient id is excluded (the evaluation images) are never chosen.
    """
    if size < len(labels):
        raise ConfigError(f"--calib-size {size} is below the number of classes ({len(labels)}): need one image per class")
    banned_ids, banned_patients = set(exclude_ids), set(exclude_patients)
    by_class: dict[str, dict[str, list]] = {label: defaultdict(list) for label in labels}
    for s in samples:
        if s.label in by_class and s.image_id not in banned_ids and s.patient_id not in banned_patients:
            by_class[s.label][s.patient_id].append(s)
    empty = [label for label in labels if not by_class[label]]
    if empty:
        raise ExportError(
            f"no calibration image for class(es) {', '.join(empty)} once evaluation images and patients are"
            " excluded; pass --calib-data with images of every class"
        )
    counts = {label: sum(len(v) for v in by_class[label].values()) for label in labels}
    total = sum(counts.values())
    quota = {label: max(1, int(size * counts[label] / total)) for label in labels}
    while sum(quota.values()) > size:  # the "at least one" floor can overshoot: trim the largest
        biggest = max(quota, key=lambda k: quota[k])
        quota[biggest] -= 1
    chosen: list = []
    for label in labels:
        patients = sorted(by_class[label], key=lambda p: _order(seed, p))
        queues = [sorted(by_class[label][p], key=lambda s: _order(seed, s.image_id)) for p in patients]
        picked: list = []
        depth = 0
        while len(picked) < min(quota[label], counts[label]):
            for queue in queues:
                if depth < len(queue) and len(picked) < quota[label]:
                    picked.append(queue[depth])
            depth += 1
        chosen.extend(picked)
    return chosen


def calibration_set(
    run_dir: str | Path,
    card: ModelCard,
    evaluation: ImageSet,
    *,
    calib_data: str | None,
    size: int,
    seed: int = 0,
) -> ImageSet:
    """The calibration images for this export (see :func:`select_calibration`)."""
    dataset, pool, spec = calibration_pool(run_dir, card, calib_data)
    chosen = select_calibration(
        pool, card.labels, size=size, exclude_ids=evaluation.ids, exclude_patients=list(evaluation.patients), seed=seed
    )
    return _labelled(dataset, chosen, card, spec, "calibration")
