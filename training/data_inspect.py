"""``facederm-data inspect`` as a function: what a data set holds and how it would be split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from .data_stats import class_weights, fingerprint, site_of
from .dataset import DataSet, Sample
from .labels import FACE_REGIONS
from .sources import open_dataset
from .splits import Site, check_disjoint_patients, select_sites, split_by_patient

SITES = ("face", "other")


def _part_summary(samples: Sequence[Sample], labels: Sequence[str], face_regions: Sequence[str]) -> dict[str, Any]:
    tally = Counter(s.label for s in samples)
    by_site = Counter((s.label, site_of(s, face_regions)) for s in samples)
    return {
        "images": len(samples),
        "patients": len({s.patient_id for s in samples}),
        "classes": {label: tally.get(label, 0) for label in labels},
        "sites": {site: sum(by_site[(label, site)] for label in labels) for site in SITES},
        "classes_by_site": {label: {site: by_site[(label, site)] for site in SITES} for label in labels},
    }


def summarize(
    dataset: DataSet, *, site: Site = "all", seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.2
) -> dict[str, Any]:
    """Counts per class x site x split, patients, class weights (of the train split) and problems.

    ``site`` keeps only face or other-site images before splitting (as a face-only protocol would).
    """
    face_regions = dataset.face_regions or FACE_REGIONS
    labels = list(dataset.labels)
    samples = select_sites(dataset.samples, site, face_regions)
    splits = split_by_patient(
        samples, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, face_regions=face_regions
    )
    summary = {
        "source": dataset.spec,
        "synthetic": dataset.synthetic,
        "verified": dataset.verified,
        "label_set": {
            "name": dataset.label_set.name,
            "labels": labels,
            "long_names": {c: dataset.label_set.long_name(c) for c in labels},
        },
        "site": site,
        "face_regions": list(face_regions),
        "seed": seed,
        **_part_summary(samples, labels, face_regions),
        "splits": {name: _part_summary(part, labels, face_regions) for name, part in splits.items()},
        "shared_patients": check_disjoint_patients(splits.as_dict(), force=True),
        "class_weights": class_weights(splits.train, labels),
        "class_weights_basis": "train split",
        "problems": dataset.report.to_dict(max_items=50),
        "file_list_sha256": fingerprint(samples)["file_list_sha256"],
        "split_sha256": fingerprint(samples, splits)["split_sha256"],
    }
    return summary


def inspect_data(
    spec: str,
    *,
    site: Site = "all",
    seed: int = 0,
    strict: bool = False,
    verify: bool = False,
    label_set: str | None = None,
    face_regions: Sequence[str] = FACE_REGIONS,
    progress: bool = False,
) -> dict[str, Any]:
    """Open ``spec`` and :func:`summarize` it (what ``facederm-data inspect --json`` prints)."""
    dataset = open_dataset(
        spec, label_set=label_set, strict=strict, verify=verify, face_regions=face_regions, progress=progress
    )
    return summarize(dataset, site=site, seed=seed)
