"""What is benchmarked: PATH as an export dir (a run dir is exported first), the run dir with the baseline's weights
(beside it or ``--run``, only if its card matches), and the evaluation images, preprocessed once into a ``.npy``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facederm.runtime.card import ModelCard
from facederm.runtime.errors import ConfigError, DataError, ExportError, SchemaError
from facederm.runtime.layout import CARD_FILE, MANIFEST_FILE, WEIGHTS_FILE, Manifest, is_export_dir, is_run_dir

from .schema import EvalInfo

EVAL_FILE = "eval-images.npy"
EVAL_CLINICAL_FILE = "eval-clinical.npy"  # float32 [N, F]


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


def resolve_source(path: Path, *, run_dir: Path | None, export_to: Path, targets: Sequence[str] = ("all",)) -> Source:
    """Open PATH; a run dir is exported first into ``export_to``, judged on its own test split (the export's
    default: the bench's ``--eval-data`` might be the training data)."""
    if is_export_dir(path):
        manifest = Manifest.load(path / MANIFEST_FILE)
        return Source("export", path, find_run_dir(path, manifest, run_dir), manifest)
    if not is_run_dir(path):
        raise ConfigError(
            f"{path}: neither an export dir ({MANIFEST_FILE}) nor a run dir ({CARD_FILE} + {WEIGHTS_FILE}); train "
            "with facederm-train, export with facederm-export, or run facederm-bench without PATH for the demo"
        )
    from facederm.export import export_run

    export_run(path, out_dir=export_to, targets=list(targets), progress=False)
    if not is_export_dir(export_to):
        raise ExportError(f"{path}: export wrote no {MANIFEST_FILE} in {export_to}")
    return Source("run", export_to, path, Manifest.load(export_to / MANIFEST_FILE))


@dataclass(frozen=True)
class EvalData:
    info: EvalInfo
    y_true: np.ndarray  # class index per image, in the card's label order
    groups: np.ndarray  # patient id per image (the bootstrap's resampling unit)
    tensor_path: Path
    clinical_path: Path | None = None  # the images' encoded clinical answers (a model with clinical fields)


def data_spec(requested: str | None, card: ModelCard) -> str | None:
    """``--eval-data`` when given, else the data the run was trained on (its card's ``data.spec``)."""
    return requested or (card.data.get("spec") if isinstance(card.data, dict) else None) or None


def prepare_eval(
    spec: str,
    card: ModelCard,
    splits: dict[str, list[str]],
    work_dir: Path,
    *,
    have_run: bool = True,
    max_images: int | None = None,
) -> EvalData:
    """Open ``spec``, pick the evaluation images (the test split, else never a training image), preprocess them."""
    from facederm.export.calibration import ImageSet
    from facederm.training.data import open_dataset

    label_set = card.data.get("label_set") if isinstance(card.data, dict) else None
    dataset = open_dataset(spec, label_set=label_set) if label_set else open_dataset(spec)
    test_ids, seen = set(splits.get("test", [])), set(splits.get("train", [])) | set(splits.get("val", []))
    chosen = [s for s in dataset.samples if s.image_id in test_ids]
    selection = "the run's test split"
    if not chosen:
        chosen = [s for s in dataset.samples if s.image_id not in seen]
        no_run = "all images (no run dir, so training images cannot be excluded)"
        selection = "all images the run did not train or validate on" if have_run else no_run
    unknown = sorted({s.label for s in chosen} - set(card.labels))
    chosen = [s for s in chosen if s.label in card.labels]
    if max_images and len(chosen) > max_images:
        chosen = sorted(chosen, key=lambda s: (s.patient_id, s.image_id))[:max_images]
        selection += f", first {max_images} by patient id"
    if not chosen:
        raise DataError(f"{spec}: no evaluation image left ({selection}; labels not in the model: {unknown or 'none'})")
    if unknown:
        selection += f"; labels the model lacks were left out: {', '.join(unknown)}"
    y_true = np.array([card.labels.index(s.label) for s in chosen], dtype=np.int64)
    images = ImageSet(dataset, chosen, y_true, card.preprocessing, spec, schema=card.clinical)  # as the gate's
    work_dir.mkdir(parents=True, exist_ok=True)
    np.save(work_dir / EVAL_FILE, np.ascontiguousarray(np.stack(images.images()).transpose(0, 3, 1, 2), np.uint8))
    clinical = images.clinical()  # each image's own recorded answers, encoded by the card's schema
    if clinical is not None:
        np.save(work_dir / EVAL_CLINICAL_FILE, clinical)
    counts, patients = Counter(s.label for s in chosen), len({s.patient_id for s in chosen})
    per_class = {label: counts[label] for label in card.labels}
    info = EvalInfo(spec, selection, bool(dataset.synthetic), len(chosen), patients, tuple(card.labels), per_class)
    clinical_path = work_dir / EVAL_CLINICAL_FILE if clinical is not None else None
    return EvalData(info, y_true, images.patients, work_dir / EVAL_FILE, clinical_path)
