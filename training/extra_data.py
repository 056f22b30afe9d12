"""``--extra-data SPEC``: other data sets' images as extra *training* images.

Extra images only ever join training (the stages whose :attr:`~facederm.training.protocols.Stage.extra` says so:
``all`` and ``face-only`` train on them, ``face-transfer`` pretrains on all of them in its other-sites stage); they
are never validated, tested, calibrated on or judged by the export gate. An extra image of a patient the main data
set holds is dropped (it would put one patient on both sides of a split), as is an image id seen before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from facederm.runtime.errors import DataError

from .dataset import DataSet, ImageLoader, Sample
from .sources import open_dataset


@dataclass(frozen=True)
class ExtraData:
    """One ``--extra-data`` source: the samples kept and what was left out, and why."""

    spec: str
    samples: list[Sample]
    shared_patients: int = 0  # images dropped: their patient is in the main data
    duplicates: int = 0  # images dropped: their image id was seen before
    problems: int = 0  # rows the reader skipped (unknown label, missing file, ...)
    synthetic: bool = False
    loader: ImageLoader | None = field(default=None, repr=False, compare=False)  # reads this source's images

    def summary(self) -> dict[str, Any]:
        """What the card records about this source."""
        return {
            "spec": self.spec,
            "images": len(self.samples),
            "patients": len({s.patient_id for s in self.samples}),
            "per_class": dict(sorted(Counter(s.label for s in self.samples).items())),
            "dropped_shared_patient": self.shared_patients,
            "dropped_duplicate_id": self.duplicates,
            "skipped_rows": self.problems,
            "synthetic": self.synthetic,
        }

    def describe(self) -> str:
        dropped = self.shared_patients + self.duplicates + self.problems
        note = f" ({dropped} left out: patient in the main data, duplicate id or bad row)" if dropped else ""
        return f"extra data {self.spec}: {len(self.samples)} training images{note}"


@dataclass(frozen=True)
class RoutedLoader:
    """An image loader that reads each extra sample with its own data set's loader, the rest with the main one's
    (keyed by ``Sample.path``, as the image cache is). A plain object, so DataLoader workers can pickle it."""

    default: ImageLoader
    loaders: tuple[ImageLoader, ...] = ()
    routes: dict[str, int] = field(default_factory=dict)

    def __call__(self, sample: Sample) -> np.ndarray:
        index = self.routes.get(sample.path)
        return self.default(sample) if index is None else self.loaders[index](sample)


def open_extra_data(specs: Sequence[str], main: DataSet) -> list[ExtraData]:
    """Read every ``--extra-data`` spec with the main data's label set (a label it lacks is a skipped row) and
    keep the images that can be trained on without touching the main data's patients or images."""
    patients = main.patients
    seen = {s.image_id for s in main.samples}
    extras = []
    for spec in specs:
        dataset = open_dataset(spec, label_set=main.label_set, face_regions=main.face_regions)
        kept, shared, duplicates = [], 0, 0
        for sample in dataset.samples:
            if sample.patient_id in patients:
                shared += 1
            elif sample.image_id in seen:
                duplicates += 1
            else:
                seen.add(sample.image_id)
                kept.append(sample)
        if not kept:
            raise DataError(
                f"--extra-data {spec}: no usable training image ({shared} of a main-data patient, {duplicates} "
                f"duplicate ids, {dataset.report.count} skipped rows)"
            )
        extras.append(
            ExtraData(spec, kept, shared, duplicates, dataset.report.count, dataset.synthetic, dataset.loader)
        )
    return extras


def with_extra_images(main: DataSet, extras: Sequence[ExtraData]) -> DataSet:
    """The main data set whose loader also reads the extra images (for the image cache); its samples, labels and
    spec stay the main data's own, so every report and metric is about the main data."""
    if not extras:
        return main
    loaders = tuple(extra.loader or main.loader for extra in extras)
    routes = {s.path: i for i, extra in enumerate(extras) for s in extra.samples}
    return replace(main, loader=RoutedLoader(main.loader, loaders, routes))
