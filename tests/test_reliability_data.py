"""Data leakage (issue 7 item 8): every split facederm makes has no patient in two splits, checked when it
is made, and a split that shares patients is refused unless forced, with the count shown."""

from __future__ import annotations

import random

import pytest

from facederm.runtime.errors import DataLeakageError
from facederm.training import splits as splits_module
from facederm.training.data import Sample, Splits, check_disjoint_patients, split_by_patient

LABELS = ("BCC", "SCC", "AK")


def _leaky_samples(patients: int = 45, per_patient: int = 6) -> list[Sample]:
    """Many photos per patient, interleaved across patients: an image-level split would leak."""
    out = []
    for k in range(per_patient):
        for p in range(patients):
            label = LABELS[p % 3] if k % 3 else LABELS[(p + 1) % 3]  # patients with two diagnoses, too
            out.append(
                Sample(
                    path=f"img/p{p}_{k}.jpg",
                    label=label,
                    patient_id=f"P{p:03d}",
                    lesion_id=f"L{p}-{k % 2}",
                    region="FACE" if (p + k) % 2 else "BACK",
                    image_id=f"p{p}_{k}",
                )
            )
    return out


def _naive_split(samples: list[Sample], seed: int) -> dict[str, list[Sample]]:
    shuffled = list(samples)
    random.Random(seed).shuffle(shuffled)
    n = len(shuffled)
    return {
        "train": shuffled[: int(0.65 * n)],
        "val": shuffled[int(0.65 * n) : int(0.8 * n)],
        "test": shuffled[int(0.8 * n) :],
    }


def test_the_data_would_leak_under_a_naive_split():
    # Guards the test below: on this data, splitting images rather than patients shares most patients.
    shared = check_disjoint_patients(_naive_split(_leaky_samples(), 0), force=True)
    assert shared > 30


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_by_patient_never_shares_a_patient(seed: int):
    samples = _leaky_samples()
    splits = split_by_patient(samples, seed=seed)
    parts = splits.as_dict()
    assert check_disjoint_patients(parts) == 0
    patients = {name: {s.patient_id for s in part} for name, part in parts.items()}
    assert not (
        patients["train"] & patients["val"]
        or patients["train"] & patients["test"]
        or patients["val"] & patients["test"]
    )
    kept = sorted(s.image_id for part in parts.values() for s in part)
    assert kept == sorted(s.image_id for s in samples), "a split must lose and duplicate nothing"
    assert all(parts.values()), "every split gets patients"


def test_every_split_is_checked_when_it_is_made(monkeypatch):
    calls = []
    real = splits_module.check_disjoint_patients

    def spy(splits, **kwargs):
        calls.append(splits)
        return real(splits, **kwargs)

    monkeypatch.setattr(splits_module, "check_disjoint_patients", spy)
    made = split_by_patient(_leaky_samples())
    assert calls and calls[-1] == made


def test_a_broken_splitter_would_be_caught_at_creation(monkeypatch):
    # If the assignment ever put one patient in two splits, split_by_patient must raise, not return.
    class LeakySplits(Splits):
        def __init__(self, train, val, test):
            super().__init__(train=train + test[:1], val=val, test=test)

    monkeypatch.setattr(splits_module, "Splits", LeakySplits)
    with pytest.raises(DataLeakageError, match="1 patient"):
        split_by_patient(_leaky_samples())


def test_user_split_sharing_patients_is_refused_with_the_count():
    user = _naive_split(_leaky_samples(), 3)
    expected = len(
        {s.patient_id for s in user["train"]}
        & ({s.patient_id for s in user["val"]} | {s.patient_id for s in user["test"]})
        | ({s.patient_id for s in user["val"]} & {s.patient_id for s in user["test"]})
    )
    with pytest.raises(DataLeakageError, match=f"{expected} patient"):
        check_disjoint_patients(user)
    assert check_disjoint_patients(user, force=True) == expected
    as_splits = Splits(train=user["train"], val=user["val"], test=user["test"])
    with pytest.raises(DataLeakageError, match=f"{expected} patient"):
        check_disjoint_patients(as_splits)


def test_same_patient_in_two_splits_is_found_even_with_other_ids():
    a = Sample("a.jpg", "BCC", "P1", "L1", "FACE", "a")
    b = Sample("b.jpg", "SCC", "P1", "L2", "NOSE", "b")  # another lesion, another image: the same patient
    with pytest.raises(DataLeakageError, match="P1"):
        check_disjoint_patients({"train": [a], "test": [b]})
    assert check_disjoint_patients({"train": [a, b], "test": []}) == 0
