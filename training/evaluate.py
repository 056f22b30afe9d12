"""The fp32 torch reference: probabilities for samples through the runtime preprocessing, and the metrics
of a split. Export parity and the benchmark baseline call :func:`predict_probabilities`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from facederm.runtime.card import Preprocessing
from facederm.runtime.clinical import ClinicalSchema
from facederm.runtime.preprocess import prepare_image, resize_and_crop, to_tensor

from .data import DataSet, Sample
from .dataset import load_file
from .metrics import classification_report
from .models import ProbabilityModel


def prepare_sample(dataset: DataSet, sample: Sample, preprocessing: Preprocessing) -> np.ndarray:
    """One sample's uint8 HWC model input, exactly as ``facederm.runtime`` prepares that file.

    An image file goes through the runtime's :func:`~facederm.runtime.preprocess.prepare_image` (decode with
    JPEG draft, EXIF, RGB, resize, center crop): training evaluation, export calibration and parity, and the
    benchmarks then judge the pixels a deployed model sees. Generated images (synthetic) have no file: their
    array gets the same resize and crop.
    """
    if dataset.loader is load_file:
        return prepare_image(sample.path, preprocessing)
    return resize_and_crop(
        dataset.load_rgb(sample), preprocessing.crop, preprocessing.resize_shorter, preprocessing.interpolation
    )


def preprocess_samples(
    dataset: DataSet, samples: Sequence[Sample], preprocessing: Preprocessing
) -> Iterator[np.ndarray]:
    """uint8 HWC model inputs, one per sample (see :func:`prepare_sample`)."""
    for sample in samples:
        yield prepare_sample(dataset, sample, preprocessing)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.inference_mode()
def predict_array(
    model: torch.nn.Module,
    images: np.ndarray | Sequence[np.ndarray],
    preprocessing: Preprocessing,
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = False,
    description: str = "predicting",
    clinical: np.ndarray | None = None,
) -> np.ndarray:
    """Probabilities [N, C] for already preprocessed uint8 HWC images (see :func:`preprocess_samples`);
    ``clinical`` [N, F] are the images' encoded clinical answers for a model with clinical fields (None: the
    model's own "nothing answered" vector, or an image-only model)."""
    device = resolve_device(device)
    prob_model = _as_probability_model(model, preprocessing).to(device).eval()
    images = list(images) if not isinstance(images, np.ndarray) else images
    out = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(description, total=len(images))
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(to_tensor(list(images[start : start + batch_size]))).to(device)
            batch = batch.contiguous(memory_format=torch.channels_last)
            if clinical is None:
                out.append(prob_model(batch).float().cpu().numpy())
            else:
                answers = torch.from_numpy(np.ascontiguousarray(clinical[start : start + batch_size])).to(device)
                out.append(prob_model(batch, answers).float().cpu().numpy())
            bar.advance(task, len(batch))
    num_classes = _num_classes(prob_model)
    return np.concatenate(out) if out else np.zeros((0, num_classes), dtype=np.float32)


def predict_probabilities(
    model: torch.nn.Module,
    dataset: DataSet,
    samples: Sequence[Sample],
    preprocessing: Preprocessing,
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = False,
    clinical: ClinicalSchema | None = None,
) -> np.ndarray:
    """fp32 softmax probabilities [N, C] for ``samples`` of ``dataset``.

    ``model`` is a trained classifier (logits out, e.g. from :func:`facederm.training.rundir.load_run`)
    or a :class:`ProbabilityModel`. Images go through the runtime preprocessing (decode, resize shorter
    side, center crop) and the exported graph's normalization, in batches, so these are the numbers an
    exported artifact must reproduce. A clinical model's answers are the samples' own, encoded with ``clinical``
    (default: the schema :func:`~facederm.training.rundir.load_run` attached to the model).
    """
    clinical = clinical or _schema_of(model)
    out = []
    samples = list(samples)
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("predicting", total=len(samples))
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            images = list(preprocess_samples(dataset, chunk, preprocessing))
            answers = None
            if clinical is not None:
                answers = clinical.encode([s.clinical_record for s in chunk], unseen="missing", extra="ignore")
            out.append(
                predict_array(model, images, preprocessing, batch_size=batch_size, device=device, clinical=answers)
            )
            bar.advance(task, len(chunk))
    if not out:
        return np.zeros((0, _num_classes(model)), dtype=np.float32)
    return np.concatenate(out)


def _schema_of(model: torch.nn.Module) -> ClinicalSchema | None:
    inner = model.classifier if isinstance(model, ProbabilityModel) else model
    return getattr(inner, "clinical_schema", None)


def _as_probability_model(model: torch.nn.Module, preprocessing: Preprocessing) -> ProbabilityModel:
    return model if isinstance(model, ProbabilityModel) else ProbabilityModel(model, preprocessing)


def _num_classes(model: torch.nn.Module) -> int:
    # The class layer, not the last Linear created (a clinical head's MLP comes after it).
    named = [m for n, m in model.named_modules() if n.endswith("classifier") and isinstance(m, torch.nn.Linear)]
    last = named or [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return last[-1].out_features if last else 0


def split_metrics(
    probs: np.ndarray, samples: Sequence[Sample], labels: Sequence[str], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """The metrics file's entry for one split (patient-grouped bootstrap CIs)."""
    index = {label: i for i, label in enumerate(labels)}
    y_true = np.array([index[s.label] for s in samples], dtype=np.int64)
    groups = [s.patient_id for s in samples]
    return classification_report(y_true, probs, labels, groups, n_boot=n_boot, seed=seed)
