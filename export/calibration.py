"""The images an export calibrates with and is judged on.

From the run dir (``splits.json`` + the card's ``data["spec"]``):

- **Calibration**: the run's training images of every stage (a face-transfer run's other-site and face
  training images), class-stratified, patient-grouped (each patient gives one image before any gives a
  second), never an evaluation image or patient; when the pool is smaller than asked, flipped views of the
  chosen images fill it. A class the pool lacks is reported, not fatal (the run trained on none of it).
- **Agreement** (label-free): every held-out image (the run's validation and test patients, all sites) plus
  ``eval_data``, each in one or more views (identity, flips: the orientations training augmented with) so the
  gate compares enough pairs.
- **Labelled effect**: the run's test images (the ones its metrics are on), or ``eval_data`` when the run
  records no split.

A model with clinical fields is calibrated and judged on both of its inputs: each image carries its own encoded
answers (the card's schema; categories its training never saw and fields it lacks are missing), and every view of
an image keeps that image's answers.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facederm.runtime.card import ModelCard, Preprocessing
from facederm.runtime.clinical import ClinicalSchema
from facederm.runtime.errors import ConfigError, DataError, ExportError
from facederm.runtime.preprocess import to_tensor

#: Views of an image, in the order they are added: flips are label-preserving for skin lesions (no canonical
#: orientation) and the augmentations training used, so the model saw such inputs.
VIEWS = ("identity", "hflip", "vflip", "hvflip")
#: ``--eval-views auto`` adds views until the agreement set has this many inputs (the gate's design size).
AUTO_VIEW_TARGET = 300


def apply_view(batch: np.ndarray, view: str) -> np.ndarray:
    """``view`` of a float32 NCHW batch."""
    if view == "identity":
        return batch
    axes = {"hflip": (3,), "vflip": (2,), "hvflip": (2, 3)}[view]
    return np.ascontiguousarray(np.flip(batch, axis=axes))


@dataclass
class ImageSet:
    """Samples of one data set, their label indices (in the card's label order; -1: not a model label), lazily
    loaded tensors and, for a model with clinical fields (``schema``), the images' encoded answers."""

    dataset: object  # facederm.training.data.DataSet (kept loose: the data layer owns the type)
    samples: list
    y_true: np.ndarray
    preprocessing: Preprocessing
    spec: str = ""
    schema: ClinicalSchema | None = None
    _images: list[np.ndarray] | None = field(default=None, repr=False)
    _tensors: np.ndarray | None = field(default=None, repr=False)
    _clinical: np.ndarray | None = field(default=None, repr=False)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(s.image_id for s in self.samples)

    @property
    def patients(self) -> np.ndarray:
        return np.asarray([s.patient_id for s in self.samples], dtype=str)

    def __len__(self) -> int:
        return len(self.samples)

    def images(self) -> list[np.ndarray]:
        """uint8 HWC RGB at the input size, prepared as the runtime prepares each file (decoded once)."""
        if self._images is None:
            from facederm.training.evaluate import preprocess_samples

            self._images = list(preprocess_samples(self.dataset, self.samples, self.preprocessing))  # type: ignore[arg-type]
        return self._images

    def tensors(self) -> np.ndarray:
        """float32 NCHW 0-255: the exported graphs' input."""
        if self._tensors is None:
            images = self.images()
            crop = self.preprocessing.crop
            self._tensors = to_tensor(images) if images else np.zeros((0, 3, crop, crop), np.float32)
        return self._tensors

    def clinical(self) -> np.ndarray | None:
        """float32 [N, F]: the graphs' second input, each image's answers as recorded (None: image-only model)."""
        if self.schema is None:
            return None
        if self._clinical is None:
            records = [getattr(s, "clinical_record", {}) for s in self.samples]
            self._clinical = self.schema.encode(records, unseen="missing", extra="ignore")
        return self._clinical


@dataclass
class ViewedSet:
    """An :class:`ImageSet` in several views: inputs are view-major (every image in view 1, then view 2 ...)."""

    images: ImageSet
    views: tuple[str, ...] = ("identity",)
    #: (image index, view) per input when not every image has every view (a calibration pool filled with flips).
    pairs: tuple[tuple[int, str], ...] | None = None

    def _pairs(self) -> tuple[tuple[int, str], ...]:
        if self.pairs is not None:
            return self.pairs
        return tuple((i, v) for v in self.views for i in range(len(self.images)))

    def __len__(self) -> int:
        return len(self._pairs())

    @property
    def image_ids(self) -> list[str]:
        return [self.images.samples[i].image_id for i, _ in self._pairs()]

    @property
    def view_names(self) -> list[str]:
        return [v for _, v in self._pairs()]

    @property
    def ids(self) -> tuple[str, ...]:
        """Input ids: the image id, with ``#view`` for a view other than identity."""
        return tuple(i if v == "identity" else f"{i}#{v}" for i, v in zip(self.image_ids, self.view_names))

    @property
    def y_true(self) -> np.ndarray:
        return np.asarray([self.images.y_true[i] for i, _ in self._pairs()], dtype=np.int64)

    @property
    def spec(self) -> str:
        return self.images.spec

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """float32 NCHW batches of the inputs, in order (views made per batch: memory stays flat)."""
        base = self.images.tensors()
        pairs = self._pairs()
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            yield np.concatenate([apply_view(base[i : i + 1], v) for i, v in chunk]) if chunk else base[:0]

    def input_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(images, clinical answers or None) per batch, in order: what a two-input graph is fed."""
        answers = self.clinical_tensors()
        for start, images in zip(range(0, len(self), batch_size), self.batches(batch_size)):
            yield images, None if answers is None else answers[start : start + batch_size]

    def tensors(self) -> np.ndarray:
        """Every input at once (calibration sets are small)."""
        parts = list(self.batches(64))
        return np.concatenate(parts) if parts else self.images.tensors()[:0]

    def clinical_tensors(self) -> np.ndarray | None:
        """float32 [n_inputs, F]: each input's answers (a view keeps its image's); None for an image-only model."""
        answers = self.images.clinical()
        if answers is None:
            return None
        return np.ascontiguousarray(answers[[i for i, _ in self._pairs()]]).reshape(len(self), answers.shape[1])

    def describe(self, labels: Sequence[str]) -> dict[str, object]:
        """What the manifest records of this set."""
        counts = Counter(labels[y] for y in self.images.y_true if 0 <= y < len(labels))
        return {
            "data": self.spec,
            "images": len(self.images),
            "inputs": len(self),
            "views": list(self.views),
            "patients": len(set(self.images.patients.tolist())),
            "per_class": {label: counts.get(label, 0) for label in labels},
            "missing_classes": [label for label in labels if not counts.get(label)],
        }


def _open(spec: str, card: ModelCard):
    """The data set ``spec``, read with the label set the run trained with (the card's ``data.label_set``)."""
    from facederm.training.data import open_dataset

    label_set = card.data.get("label_set") if isinstance(card.data, dict) else None
    return open_dataset(spec, label_set=label_set)


def _image_set(dataset, samples: Sequence, card: ModelCard, spec: str, *, what: str, strict: bool) -> ImageSet:
    index = {label: i for i, label in enumerate(card.labels)}
    unknown = sorted({s.label for s in samples if s.label not in index})
    if unknown and strict:
        raise ExportError(f"{what} data {spec}: label(s) {', '.join(unknown)} are not the model's {list(card.labels)}")
    y = np.asarray([index.get(s.label, -1) for s in samples], dtype=np.int64)
    return ImageSet(dataset, list(samples), y, card.preprocessing, spec, schema=card.clinical)


def _run_data(run_dir: Path, card: ModelCard):
    """(dataset, splits, data spec) of the run, or (None, {}, "") when it records none."""
    from facederm.training.ensemble import trained_splits

    spec = card.data.get("spec") if isinstance(card.data, dict) else None
    splits = trained_splits(run_dir)
    if not spec or not splits:
        return None, {}, ""
    return _open(spec, card), splits, spec


def _pick(dataset, ids: Sequence[str], run_dir: Path, spec: str, what: str) -> list:
    wanted = set(ids)
    samples = [s for s in dataset.samples if s.image_id in wanted]
    if wanted and not samples:
        raise ExportError(f"{run_dir}: none of the {len(wanted)} {what} image ids are in {spec}")
    return samples


def auto_views(n_images: int, target: int = AUTO_VIEW_TARGET) -> int:
    """Views per image so that ``n_images`` x views reaches ``target`` (at most all of :data:`VIEWS`)."""
    return max(1, min(len(VIEWS), math.ceil(target / max(n_images, 1))))


@dataclass
class EvaluationData:
    """The gate's images: label-free agreement inputs and the labelled test images (indices into ``agreement``)."""

    agreement: ViewedSet
    labelled: ImageSet
    labelled_index: np.ndarray  # position of each labelled image in agreement.images (identity view)

    @property
    def exclude(self) -> tuple[set[str], set[str]]:
        """(image ids, patient ids) calibration must never use (the labelled images are among the agreement
        images: ``labelled_index`` locates them there)."""
        images = self.agreement.images
        return set(images.ids), set(images.patients.tolist())


def evaluation_data(
    run_dir: str | Path, card: ModelCard, eval_data: str | None, views: int | str = "auto"
) -> EvaluationData:
    """Held-out images of the run (all sites, val + test patients) plus ``eval_data``, in ``views`` views
    (``auto``: enough to reach :data:`AUTO_VIEW_TARGET` inputs); labelled effect on the run's test images
    (``eval_data`` when the run records no split)."""
    from facederm.training.rundir import heldout_ids

    run_dir = Path(run_dir)
    dataset, splits, spec = _run_data(run_dir, card)
    parts: list[ImageSet] = []
    labelled: ImageSet | None = None
    if dataset is not None:
        held = _image_set(
            dataset,
            _pick(dataset, heldout_ids(splits), run_dir, spec, "held-out"),
            card,
            f"{spec} (held-out: val + test patients)",
            what="held-out",
            strict=False,
        )
        parts.append(held)
        if splits.get("test"):
            labelled = _image_set(
                dataset,
                _pick(dataset, splits["test"], run_dir, spec, "test"),
                card,
                f"{spec} (test split)",
                what="test",
                strict=True,
            )
    if eval_data:
        extra_ds = _open(eval_data, card)
        extra = _image_set(extra_ds, extra_ds.samples, card, eval_data, what="evaluation", strict=labelled is None)
        parts.append(extra)
        if labelled is None:
            labelled = extra
    if not parts or labelled is None:
        raise ConfigError(
            f"{run_dir}: no held-out test images to judge on (no test split in splits.json + card data.spec; an "
            "ensemble of CV folds holds none out); pass --eval-data DATA"
        )
    agreement_images = _concat(parts, card)
    n_views = auto_views(len(agreement_images)) if views == "auto" else int(views)
    if not 1 <= n_views <= len(VIEWS):
        raise ConfigError(f"--eval-views {views!r}: expected auto or 1..{len(VIEWS)}")
    position = {(s.image_id, s.patient_id): i for i, s in enumerate(agreement_images.samples)}
    index = np.asarray([position[(s.image_id, s.patient_id)] for s in labelled.samples], dtype=np.int64)
    return EvaluationData(ViewedSet(agreement_images, VIEWS[:n_views]), labelled, index)


def benchmark_images(
    spec: str, card: ModelCard, splits: dict[str, list[str]], *, have_run: bool = True, limit: int | None = None
) -> tuple[ImageSet, str]:
    """The labelled images ``facederm-bench`` scores, and how they were chosen: the run's test split, else every
    image of ``spec`` the run neither trained nor validated on; labels the model lacks are left out (and said)."""
    dataset = _open(spec, card)
    test_ids, seen = set(splits.get("test", [])), set(splits.get("train", [])) | set(splits.get("val", []))
    chosen = [s for s in dataset.samples if s.image_id in test_ids]
    selection = "the run's test split"
    if not chosen:
        chosen = [s for s in dataset.samples if s.image_id not in seen]
        no_run = "all images (no run dir, so training images cannot be excluded)"
        selection = "all images the run did not train or validate on" if have_run else no_run
    unknown = sorted({s.label for s in chosen} - set(card.labels))
    chosen = [s for s in chosen if s.label in card.labels]
    if limit and len(chosen) > limit:
        chosen = sorted(chosen, key=lambda s: (s.patient_id, s.image_id))[:limit]
        selection += f", first {limit} by patient id"
    if not chosen:
        raise DataError(f"{spec}: no evaluation image left ({selection}; labels not in the model: {unknown or 'none'})")
    if unknown:
        selection += f"; labels the model lacks were left out: {', '.join(unknown)}"
    return _image_set(dataset, chosen, card, spec, what="evaluation", strict=True), selection


def _concat(parts: list[ImageSet], card: ModelCard) -> ImageSet:
    """One set of several data sets' images (an image id seen twice is kept once); loads through each part."""
    if len(parts) == 1:
        return parts[0]
    seen: set[tuple[str, str]] = set()
    chosen: list[tuple[ImageSet, int]] = []
    for part in parts:
        for i, s in enumerate(part.samples):
            if (s.image_id, s.patient_id) not in seen:
                seen.add((s.image_id, s.patient_id))
                chosen.append((part, i))
    merged = ImageSet(
        None,
        [p.samples[i] for p, i in chosen],
        np.asarray([p.y_true[i] for p, i in chosen]),
        card.preprocessing,
        " + ".join(p.spec for p in parts),
        schema=card.clinical,
    )
    merged._images = [p.images()[i] for p, i in chosen]
    return merged


def calibration_pool(run_dir: str | Path, card: ModelCard, calib_data: str | None):
    """(dataset, candidate samples, spec): ``calib_data`` entirely, or every image the run trained on."""
    from facederm.training.rundir import training_ids

    if calib_data:
        dataset = _open(calib_data, card)
        return dataset, list(dataset.samples), calib_data
    run_dir = Path(run_dir)
    dataset, splits, spec = _run_data(run_dir, card)
    if dataset is None or not training_ids(splits):
        raise ConfigError(
            f"{run_dir}: the run records no training split (splits.json + card data.spec); pass --calib-data DATA"
        )
    return dataset, _pick(dataset, training_ids(splits), run_dir, spec, "training"), f"{spec} (training images)"


def _order(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()


def select_calibration(
    samples: Sequence,
    labels: Sequence[str],
    *,
    size: int,
    exclude_ids: Sequence[str] | set[str] = (),
    exclude_patients: Sequence[str] | set[str] = (),
    seed: int = 0,
) -> list:
    """Pick at most ``size`` calibration samples: class-stratified, patient-grouped, none excluded.

    Each class present gets a share proportional to its candidates (at least one image); inside a class,
    patients are taken in a seeded order, one image each per round, so many patients are covered. Samples
    whose image id or patient id is excluded (the evaluation images) are never chosen. Classes with no
    candidate are left out (:class:`ViewedSet.describe` reports them); no candidate at all is an error.
    """
    if size < 1:
        raise ConfigError(f"--calib-size must be >= 1, got {size}")
    banned_ids, banned_patients = set(exclude_ids), set(exclude_patients)
    by_class: dict[str, dict[str, list]] = {label: defaultdict(list) for label in labels}
    for s in samples:
        if s.label in by_class and s.image_id not in banned_ids and s.patient_id not in banned_patients:
            by_class[s.label][s.patient_id].append(s)
    present = [label for label in labels if by_class[label]]
    if not present:
        raise ExportError(
            "no calibration image of the model's classes once evaluation images and patients are "
            "excluded; pass --calib-data with images of the model's classes"
        )
    counts = {label: sum(len(v) for v in by_class[label].values()) for label in present}
    total = sum(counts.values())
    quota = {label: max(1, int(size * counts[label] / total)) for label in present}
    while sum(quota.values()) > size:  # the "at least one" floor can overshoot: trim the largest
        biggest = max(quota, key=lambda k: quota[k])
        quota[biggest] -= 1
    leftover = size - sum(min(quota[k], counts[k]) for k in present)
    for label in sorted(present, key=lambda k: -(counts[k] - quota[k])):  # rounding leftovers to classes with more
        extra = min(leftover, counts[label] - quota[label])
        if extra > 0:
            quota[label] += extra
            leftover -= extra
    chosen: list = []
    for label in present:
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
    evaluation: EvaluationData,
    *,
    calib_data: str | None,
    size: int,
    seed: int = 0,
    fill_views: bool = True,
) -> ViewedSet:
    """The calibration inputs of this export (see :func:`select_calibration`); with ``fill_views`` a pool smaller
    than ``size`` is filled with flipped views of its images, class by class in turn."""
    dataset, pool, spec = calibration_pool(run_dir, card, calib_data)
    banned_ids, banned_patients = evaluation.exclude
    chosen = select_calibration(
        pool, card.labels, size=size, exclude_ids=banned_ids, exclude_patients=banned_patients, seed=seed
    )
    images = _image_set(dataset, chosen, card, spec, what="calibration", strict=True)
    pairs = [(i, "identity") for i in range(len(images))]
    if fill_views:
        for view in VIEWS[1:]:
            for i in range(len(images)):
                if len(pairs) >= size:
                    break
                pairs.append((i, view))
    views = tuple(dict.fromkeys(v for _, v in pairs))
    return ViewedSet(images, views, tuple(pairs))


Calibration = ViewedSet
