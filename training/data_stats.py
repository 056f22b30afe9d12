"""Counts that describe a data set: class weights for the loss, and the fingerprint a model card keeps."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .dataset import DataSet, Sample
from .labels import FACE_REGIONS
from .splits import Splits


def class_weights(samples: Sequence[Sample], labels: Sequence[str]) -> dict[str, float]:
    """``n / (k * n_c)`` per label, as scikit-learn's "balanced" (k = classes present);
    0.0 for a label with no sample. The sample-weighted mean of the weights is 1."""
    counts = Counter(s.label for s in samples)
    present = [label for label in labels if counts.get(label)]
    n = sum(counts[label] for label in present)
    k = len(present)
    return {label: (n / (k * counts[label]) if counts.get(label) else 0.0) for label in labels}


def site_of(sample: Sample, face_regions: Sequence[str] = FACE_REGIONS) -> str:
    """ "face" or "other"."""
    return "face" if sample.is_face(face_regions) else "other"


def _sha256_lines(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(lines)).encode("utf-8")).hexdigest()


def fingerprint(
    dataset_or_samples: DataSet | Sequence[Sample],
    splits: Splits | Mapping[str, Sequence[Sample]] | None = None,
    *,
    face_regions: Sequence[str] | None = None,
) -> dict[str, Any]:
    """What a model was trained on, for the model card: source spec, synthetic flag, images, patients,
    counts per split x class x site (face/other), sha256 of the sorted image ids (machine-independent:
    no absolute paths) and, with splits, sha256 of the sorted ``split/image id`` lines."""
    if isinstance(dataset_or_samples, DataSet):
        samples, source = dataset_or_samples.samples, dataset_or_samples.spec
        synthetic, labels = dataset_or_samples.synthetic, list(dataset_or_samples.labels)
        face_regions = face_regions or dataset_or_samples.face_regions
    else:
        samples, source = list(dataset_or_samples), None
        synthetic = any(s.path.startswith("synthetic:") for s in samples)
        labels = sorted({s.label for s in samples})
    face_regions = face_regions or FACE_REGIONS
    named = {"all": samples} if splits is None else (splits.as_dict() if isinstance(splits, Splits) else dict(splits))
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for name, part in named.items():
        tally = Counter((s.label, site_of(s, face_regions)) for s in part)
        counts[name] = {label: {site: tally[(label, site)] for site in ("face", "other")} for label in labels}
    result: dict[str, Any] = {
        "source": source,
        "synthetic": synthetic,
        "images": len(samples),
        "patients": len({s.patient_id for s in samples}),
        "labels": labels,
        "face_regions": list(face_regions),
        "counts": counts,
        "file_list_sha256": _sha256_lines([s.image_id for s in samples]),
    }
    if splits is not None:
        result["split_sha256"] = _sha256_lines([f"{name}/{s.image_id}" for name, part in named.items() for s in part])
    return result
