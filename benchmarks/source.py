"""What is benchmarked, on what: PATH as an export dir (a run dir is exported first), and the evaluation images.

An export dir records only its run dir's *name* (``manifest.source_run``); the torch baseline needs the run's
weights, so the run dir is found beside the export dir (or given with ``--run``) and accepted only when its card
matches the manifest's.

The evaluation images go through the runtime's one preprocessing (via ``facederm.training.evaluate``) once and
are stored as a uint8 NCHW ``.npy`` in the work dir (exact: the graphs take whole 0-255 values), which each
row's process memory-maps. Which images: the run's test split when the data holds it; otherwise every image the
run did not train or validate on (an external set); never an image the model was trained on. A model with clinical
fields also gets the images' recorded answers, encoded by its card's schema, as a float32 ``.npy`` beside them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facederm.runtime.card import ModelCard
from facederm.runtime.errors import ConfigError, DataError, ExportError, SchemaError
from facederm.runtime.layout import CARD_FILE, MANIFEST_FILE, WEIGHTS_FILE, Manifest, is_export_dir, is_run_dir

from .schema import EvalInfo

EVAL_FILE = "eval-images.npy"
EVAL_CLINICAL_FILE = "eval-clinical.npy"  # float32 [N, F]: a clinical model's recorded answers per image


@dataclass(frozen=True)
class Source:
    kind: str  # "export" | "run"
    export_dir: Path
    run_dir: Path | None
    manifest: Manifest


def _same_model(run_dir: Path, card: ModelCard) -> bool:
    try:
        found = ModelCard.load(run_dir / CARD_FILE)
    except SchemaError:
        return False
    return found.arch == card.arch and found.labels == card.labels and found.preprocessing == card.preprocessing


def find_run_dir(export_dir: Path, manifest: Manifest, given: Path | None) -> Path | None:
    """The run dir holding the torch weights of ``manifest``'s model, or None."""
    if given is not None:
        if not is_run_dir(given):
            raise ConfigError(f"--run {given}: not a facederm run dir (needs {CARD_FILE} and {WEIGHTS_FILE})")
        if not _same_model(given, manifest.card):
            raise ConfigError(f"--run {given}: its model card does not match {export_dir / MANIFEST_FILE}")
        return given
    name = manifest.source_run
    candidates = [export_dir.parent / name, export_dir / name, Path.cwd() / name] if name else []
    return next((c for c in candidates if is_run_dir(c) and _same_model(c, manifest.card)), None)


def resolve_source(
    path: Path,
    *,
    run_dir: Path | None,
    export_to: Path,
    export: Callable[..., object] | None = None,
    targets: Sequence[str] = ("all",),
) -> Source:
    """Open PATH; a run dir is exported first (to every target installed) into ``export_to``. The export evaluates
    on the run's own test split (its default): the bench's ``--eval-data`` might be the training data."""
    if is_export_dir(path):
        manifest = Manifest.load(path / MANIFEST_FILE)
        return Source("export", path, find_run_dir(path, manifest, run_dir), manifest)
    if not is_run_dir(path):
        raise ConfigError(
            f"{path}: neither an export dir ({MANIFEST_FILE}) nor a run dir ({CARD_FILE} + "
            f"{WEIGHTS_FILE}); train with facederm-train, export with facederm-export, or run "
            "facederm-bench without PATH for the demo"
        )
    if export is None:
        from facederm.export import export_run as export
    export(path, out_dir=export_to, targets=list(targets), progress=False)
    if not is_export_dir(export_to):
        raise ExportError(f"{path}: export wrote no {MANIFEST_FILE} in {export_to}")
    return Source("run", export_to, path, Manifest.load(export_to / MANIFEST_FILE))


@dataclass(frozen=True)
class EvalData:
    info: EvalInfo
    y_true: np.ndarray  # class index per image, in the card's label order
    groups: np.ndarray  # patient id per image (bootstrap resampling unit)
    tensor_path: Path
    clinical_path: Path | None = None  # the images' encoded clinical answers (a model with clinical fields)


def data_spec(requested: str | None, card: ModelCard) -> str | None:
    """``--eval-data`` when given, else the data the run was trained on (its card's ``data.spec``)."""
    return requested or (card.data.get("spec") if isinstance(card.data, dict) else None) or None


def _select(samples: list[Any], splits: dict[str, list[str]], have_run: bool) -> tuple[list[Any], str]:
    test_ids = set(splits.get("test", []))
    test = [s for s in samples if s.image_id in test_ids]
    if test:
        return test, "the run's test split"
    seen_in_training = set(splits.get("train", [])) | set(splits.get("val", []))
    unseen = [s for s in samples if s.image_id not in seen_in_training]
    if not have_run:
        return unseen, "all images (no run dir, so training images cannot be excluded)"
    return unseen, "all images the run did not train or validate on"


def prepare_eval(
    spec: str,
    card: ModelCard,
    splits: dict[str, list[str]],
    work_dir: Path,
    *,
    have_run: bool = True,
    max_images: int | None = None,
) -> EvalData:
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
    np.save(work_dir / EVAL_FILE, np.ascontiguousarray(images, dtype=np.uint8))
    clinical_path = None
    if card.clinical is not None:  # each image with its own recorded answers, as the export's gate fed them
        answers = card.clinical.encode([s.clinical_record for s in chosen], unseen="missing", extra="ignore")
        clinical_path = work_dir / EVAL_CLINICAL_FILE
        np.save(clinical_path, answers)
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
    return EvalData(info, y_true, groups, work_dir / EVAL_FILE, clinical_path)
