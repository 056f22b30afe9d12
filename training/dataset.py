"""The in-memory data set: samples (path, label, patient, lesion, region, clinical answers) plus where they came
from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from rich.progress import track

from facederm.runtime.errors import FacedermInputError
from facederm.runtime.preprocess import load_image

from .data_report import DataReport
from .labels import FACE_REGIONS, LabelSet

#: How a sample becomes pixels; readers of generated data (synthetic) supply their own.
ImageLoader = Callable[["Sample"], np.ndarray]


@dataclass(frozen=True)
class Sample:
    """One image. ``path`` is a file path, or ``synthetic:<seed>/<index>`` for generated images.

    ``clinical`` holds the image's raw clinical answers as the source wrote them ((column, value) pairs, values
    as strings, "" when unanswered; empty when the source has none): a model with clinical fields encodes them with
    its schema (:mod:`facederm.runtime.clinical`). A tuple, so samples stay hashable.
    """

    path: str
    label: str
    patient_id: str
    lesion_id: str
    region: str
    image_id: str
    clinical: tuple[tuple[str, str], ...] = ()

    @property
    def clinical_record(self) -> dict[str, str]:
        """The clinical answers as a mapping column -> value as written (what a schema encodes)."""
        return dict(self.clinical)

    def is_face(self, face_regions: Sequence[str] = FACE_REGIONS) -> bool:
        return self.region.upper() in {r.upper() for r in face_regions}


def load_file(sample: Sample) -> np.ndarray:
    """Decode a sample's image file with the runtime's one decoder (EXIF, any mode -> RGB)."""
    return load_image(sample.path)


@dataclass
class DataSet:
    """Samples that passed the checks, their label set (restricted to the labels present, order kept),
    the report of what was skipped, and whether the images are synthetic."""

    spec: str
    samples: list[Sample]
    label_set: LabelSet
    report: DataReport
    synthetic: bool
    loader: ImageLoader = field(default=load_file, repr=False)
    face_regions: tuple[str, ...] = FACE_REGIONS
    verified: bool = False  # every image decoded once (see verify)

    def load_rgb(self, sample: Sample) -> np.ndarray:
        """uint8 HxWx3 RGB at full size (synthetic: rendered on demand)."""
        return self.loader(sample)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.label_set.labels

    @property
    def patients(self) -> set[str]:
        return {s.patient_id for s in self.samples}

    def class_counts(self) -> dict[str, int]:
        counts = Counter(s.label for s in self.samples)
        return {label: counts.get(label, 0) for label in self.labels}

    def verify(self, progress: bool = True) -> DataSet:
        """Decode every image; undecodable ones become ``unreadable_image`` problems and are dropped.

        Costly (every file is decoded), which is why opening a data set only checks existence.
        Strict mode raises on the first bad image.
        """
        good = []
        for sample in track(self.samples, description="verifying images", disable=not progress, transient=True):
            try:
                self.load_rgb(sample)
            except FacedermInputError as exc:
                self.report.add("unreadable_image", sample.path, _without_source(exc))
                continue
            good.append(sample)
        self.samples = good
        self.verified = True
        return self


def _without_source(exc: FacedermInputError) -> str:
    """The error message without the ``<source>: `` prefix (the report names the item already)."""
    text = str(exc)
    prefix = f"{exc.source}: " if exc.source else ""
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text
