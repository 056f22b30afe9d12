"""Patient-grouped splits: no patient in two splits, classes everywhere they can be, seeded and
independent of input order; site filtering; class weights; the fingerprint."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facederm.runtime.errors import ConfigError, DataLeakageError
from facederm.training.data import (
    Sample,
    check_disjoint_patients,
    class_weights,
    fingerprint,
    open_dataset,
    select_sites,
    split_by_patient,
)

LABELS = ("AK", "BCC", "MEL", "NEV", "SCC", "SK")


def make(patient: str, label: str, index: int, region: str = "ARM") -> Sample:
    return Sample(
        path=f"/x/{patient}_{index}.png",
        label=label,
        patient_id=patient,
        lesion_id=f"{patient}-{label}",
        region=region,
        image_id=f"{patient}_{index}.png",
    )


def patients_of(samples) -> set[str]:
    return {s.patient_id for s in samples}


@pytest.fixture(scope="module")
def synthetic():
    return open_dataset("synthetic:600")


def test_splits_are_patient_disjoint_cover_everything_and_have_every_class(synthetic):
    splits = split_by_patient(synthetic.samples, seed=3)
    parts = dict(splits.items())
    assert list(parts) == ["train", "val", "test"]
    assert sorted(s.image_id for p in parts.values() for s in p) == sorted(s.image_id for s in synthetic.samples)
    assert check_disjoint_patients(parts) == 0
    for name, part in parts.items():
        assert set(s.label for s in part) == set(synthetic.labels), name
    share = {name: len(part) / len(synthetic) for name, part in parts.items()}
    assert share["train"] > share["test"] > share["val"] > 0.05  # defaults 0.65 / 0.2 / 0.15


def test_same_seed_same_splits_in_any_input_order_and_another_seed_differs(synthetic):
    shuffled = list(synthetic.samples)
    random.Random(1).shuffle(shuffled)
    a = split_by_patient(synthetic.samples, seed=5)
    b = split_by_patient(shuffled, seed=5)
    assert a == b
    c = split_by_patient(synthetic.samples, seed=6)
    assert patients_of(c.test) != patients_of(a.test)


def test_rare_classes_reach_every_split_even_with_three_patients():
    samples = [make(f"P{i}", "NEV", 0) for i in range(40)] + [make(f"R{i}", "SCC", 0) for i in range(3)]
    splits = split_by_patient(samples)
    for name, part in splits.items():
        assert "SCC" in {s.label for s in part}, name


def test_fractions_are_validated():
    with pytest.raises(ConfigError):
        split_by_patient([make("P", "AK", 0)], val_fraction=0.5, test_fraction=0.5)
    samples = [make(f"P{i}", LABELS[i % 3], 0) for i in range(30)]
    assert split_by_patient(samples, val_fraction=0.0).val == []


@settings(max_examples=60, deadline=None)
@given(
    structure=st.lists(  # one entry per patient: their images' labels (1-4 images)
        st.lists(st.sampled_from(LABELS), min_size=1, max_size=4), min_size=1, max_size=60
    ),
    seed=st.integers(0, 5),
    shuffle_seed=st.integers(0, 1000),
)
def test_split_properties_over_random_patient_structures(structure, seed, shuffle_seed):
    samples = [
        make(f"P{p}", label, i, region=("FACE" if (p + i) % 3 == 0 else "ARM"))
        for p, labels in enumerate(structure)
        for i, label in enumerate(labels)
    ]
    splits = split_by_patient(samples, seed=seed)
    parts = dict(splits.items())
    # nothing lost, nothing duplicated, no patient in two splits
    assert Counter(s.image_id for p in parts.values() for s in p) == Counter(s.image_id for s in samples)
    assert check_disjoint_patients(parts) == 0
    # deterministic under input shuffling
    shuffled = list(samples)
    random.Random(shuffle_seed).shuffle(shuffled)
    assert split_by_patient(shuffled, seed=seed) == splits
    # a class that is the rarest label of >= 3 patients is in every split
    counts = Counter(s.label for s in samples)
    rarest = Counter(min(set(labels), key=lambda x: (counts[x], x)) for labels in structure)
    for label, n_patients in rarest.items():
        if n_patients >= 3:
            for name, part in parts.items():
                assert label in {s.label for s in part}, (label, name)


def test_check_disjoint_patients_names_the_count_unless_forced():
    a, b = make("P1", "AK", 0), make("P1", "AK", 1)
    user_splits = {"train": [a, make("P2", "SK", 0)], "test": [b, make("P3", "SK", 0)]}
    with pytest.raises(DataLeakageError, match="1 patient"):
        check_disjoint_patients(user_splits)
    assert check_disjoint_patients(user_splits, force=True) == 1


def test_select_sites():
    samples = [
        make("P1", "AK", 0, "FACE"),
        make("P2", "AK", 0, "nose"),
        make("P3", "AK", 0, "ARM"),
        make("P4", "AK", 0, ""),
    ]
    assert patients_of(select_sites(samples, "face")) == {"P1", "P2"}
    assert patients_of(select_sites(samples, "other")) == {"P3", "P4"}  # unknown region counts as other
    assert len(select_sites(samples, "all")) == 4
    assert patients_of(select_sites(samples, "face", face_regions=("ARM",))) == {"P3"}
    with pytest.raises(ConfigError):
        select_sites(samples, "scalp")  # type: ignore[arg-type]


def test_class_weights_are_balanced_and_zero_when_absent():
    samples = [make(f"P{i}", "AK", 0) for i in range(6)] + [make(f"Q{i}", "SK", 0) for i in range(2)]
    weights = class_weights(samples, ["AK", "MEL", "SK"])
    assert weights["MEL"] == 0.0
    assert weights["SK"] == pytest.approx(3 * weights["AK"])
    assert sum(weights[s.label] for s in samples) == pytest.approx(len(samples))  # mean weight 1


def test_fingerprint_counts_and_hash(synthetic):
    splits = split_by_patient(synthetic.samples)
    fp = fingerprint(synthetic, splits)
    assert fp["source"] == "synthetic:600" and fp["synthetic"] is True
    assert fp["images"] == 600
    total = sum(n for split in fp["counts"].values() for sites in split.values() for n in sites.values())
    assert total == 600
    face = sum(sites["face"] for split in fp["counts"].values() for sites in split.values())
    assert face == sum(s.is_face() for s in synthetic.samples)
    shuffled = list(synthetic.samples)
    random.Random(0).shuffle(shuffled)
    assert fingerprint(shuffled)["file_list_sha256"] == fp["file_list_sha256"]
    assert fingerprint(shuffled[1:])["file_list_sha256"] != fp["file_list_sha256"]
    other = split_by_patient(synthetic.samples, seed=1)
    assert fingerprint(synthetic, other)["split_sha256"] != fp["split_sha256"]
