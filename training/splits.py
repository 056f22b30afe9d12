"""Patient-grouped, class-stratified, seeded splits; site filtering; the no-shared-patient check.

Leakage is the classic way to overstate a skin-lesion model: two photos of one patient (often of the
same lesion) in train and test. Every split here is by patient, and checked when it is made.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from facederm.runtime.errors import ConfigError, DataLeakageError

from .dataset import Sample
from .labels import FACE_REGIONS

SPLIT_NAMES = ("train", "val", "test")
Site = Literal["face", "other", "all"]


@dataclass(frozen=True)
class Splits:
    """Three lists of samples with no patient in common."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]

    def items(self) -> Iterator[tuple[str, list[Sample]]]:
        """("train", [...]), ("val", [...]), ("test", [...])."""
        return iter((name, getattr(self, name)) for name in SPLIT_NAMES)

    def as_dict(self) -> dict[str, list[Sample]]:
        return dict(self.items())


def select_sites(samples: Sequence[Sample], site: Site, face_regions: Sequence[str] = FACE_REGIONS) -> list[Sample]:
    """The samples on the face (``region`` in ``face_regions``), elsewhere ("other"), or all of them.

    Samples with an unknown region ("") count as "other".
    """
    if site == "all":
        return list(samples)
    if site not in ("face", "other"):
        raise ConfigError(f"site {site!r}: use face, other or all")
    want_face = site == "face"
    return [s for s in samples if s.is_face(face_regions) == want_face]


def check_disjoint_patients(splits: Mapping[str, Sequence[Sample]] | Splits, *, force: bool = False) -> int:
    """The number of patients found in more than one split. Raises :class:`DataLeakageError`
    naming that count unless it is 0 or ``force`` is set (then the caller reports it)."""
    named = splits.as_dict() if isinstance(splits, Splits) else splits
    where: dict[str, set[str]] = defaultdict(set)
    for name, samples in named.items():
        for sample in samples:
            where[sample.patient_id].add(name)
    shared = sorted(p for p, names in where.items() if len(names) > 1)
    if shared and not force:
        example = ", ".join(f"{p} ({'+'.join(sorted(where[p]))})" for p in shared[:3])
        raise DataLeakageError(
            f"{len(shared)} patient(s) appear in more than one split, e.g. {example}: "
            "results would be optimistic; split by patient (or pass force to accept it)"
        )
    return len(shared)


def _order_key(seed: int, patient_id: str) -> str:
    """A seeded pseudo-random order that does not depend on input order."""
    return hashlib.sha256(f"{seed}\0{patient_id}".encode()).hexdigest()


def check_split_fractions(val_fraction: float, test_fraction: float) -> None:
    """:class:`ConfigError` unless both fractions are >= 0 and leave images to train on (sum below 1)."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"--val-fraction {val_fraction:g} with a test fraction of {test_fraction:g}: both must be >= 0 and leave "
            "images to train on (sum below 1)"
        )


def split_by_patient(
    samples: Sequence[Sample],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
    face_regions: Sequence[str] = FACE_REGIONS,
) -> Splits:
    """Split into train / val / test by patient, stratified by class and by face vs other site.

    A patient's class is their rarest label (so rare classes are spread first); their site is "face" if
    any of their images is. Within each (class, site) stratum the first patients go to splits that lack
    the class yet, then to splits that lack it at this site (train, then test, then val), so every split
    has every class that has at least three such patients; the rest go to the split furthest below its
    share of that stratum's images. Same samples and seed give the same splits in any input order.
    """
    check_split_fractions(val_fraction, test_fraction)
    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    active = [name for name in ("train", "test", "val") if fractions[name] > 0]  # fill order for rare classes
    receiving = [name for name in SPLIT_NAMES if fractions[name] > 0]

    by_patient: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_patient[sample.patient_id].append(sample)
    label_counts = Counter(s.label for s in samples)

    strata: dict[tuple[int, str, bool], list[str]] = defaultdict(list)
    for patient, items in by_patient.items():
        rarest = min({s.label for s in items}, key=lambda label: (label_counts[label], label))
        on_face = any(s.is_face(face_regions) for s in items)
        strata[(label_counts[rarest], rarest, not on_face)].append(patient)

    assigned: dict[str, str] = {}
    holds: dict[str, set[tuple[str, bool | None]]] = defaultdict(set)  # split -> (label, on face) and (label, None)
    for (_, label, off_face), patients in sorted(strata.items()):
        patients.sort(key=lambda p: _order_key(seed, p))
        total = sum(len(by_patient[p]) for p in patients)
        filled: Counter[str] = Counter()
        for patient in patients:
            # First a split without the class at all, then one without it at this site ...
            lacking = [name for name in active if (label, None) not in holds[name]]
            lacking = lacking or [name for name in active if (label, not off_face) not in holds[name]]
            if lacking:
                split = lacking[0]
            else:  # ... then the split furthest below its share of this stratum (ties: train, val, test)
                split = max(receiving, key=lambda n: fractions[n] * total - filled[n])
            assigned[patient] = split
            filled[split] += len(by_patient[patient])
            for s in by_patient[patient]:
                holds[split].update({(s.label, None), (s.label, s.is_face(face_regions))})

    parts: dict[str, list[Sample]] = {name: [] for name in SPLIT_NAMES}
    for sample in sorted(samples, key=lambda s: (s.patient_id, s.image_id, s.path)):
        parts[assigned[sample.patient_id]].append(sample)
    splits = Splits(**parts)
    check_disjoint_patients(splits)  # by construction 0; checked anyway, always
    return splits
