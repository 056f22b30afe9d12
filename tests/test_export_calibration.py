"""Calibration rules: class-stratified, patient-grouped, never an evaluation image or patient."""

from __future__ import annotations

from collections import Counter

import pytest

from facederm.export.calibration import select_calibration
from facederm.runtime.errors import ConfigError, ExportError
from facederm.training.data import Sample


def _samples():
    out = []
    for label, patients, per_patient in (("A", 30, 3), ("B", 10, 2), ("C", 3, 1)):
        for p in range(patients):
            for i in range(per_patient):
                out.append(
                    Sample(
                        path=f"{label}{p}-{i}.png",
                        label=label,
                        patient_id=f"{label}P{p}",
                        lesion_id=f"{label}L{p}",
                        region="FACE",
                        image_id=f"{label}{p}-{i}",
                    )
                )
    return out


def test_stratified_grouped_capped_and_deterministic():
    samples = _samples()
    chosen = select_calibration(samples, ["A", "B", "C"], size=30, seed=1)
    assert len(chosen) <= 30
    counts = Counter(s.label for s in chosen)
    assert counts["A"] > counts["B"] >= counts["C"] >= 1  # proportional, every class present
    a_patients = Counter(s.patient_id for s in chosen if s.label == "A")
    assert max(a_patients.values()) == 1  # one image per patient before any patient gives a second
    assert chosen == select_calibration(samples, ["A", "B", "C"], size=30, seed=1)


def test_never_an_evaluation_image_or_patient():
    samples = _samples()
    eval_ids = [s.image_id for s in samples[:5]]
    eval_patients = ["BP0", "BP1"]
    chosen = select_calibration(
        samples, ["A", "B", "C"], size=1000, exclude_ids=eval_ids, exclude_patients=eval_patients
    )
    assert not {s.image_id for s in chosen} & set(eval_ids)
    assert not {s.patient_id for s in chosen} & set(eval_patients)
    assert len(chosen) == len(samples) - 5 - 4  # everything else (size is only a cap)


def test_a_class_without_calibration_images_is_left_out_not_fatal():
    # A face-transfer run's face training images may hold no MEL: calibration goes on with the classes it has
    # (the manifest lists the missing ones); only a pool with none of the model's classes is an error.
    samples = _samples()
    chosen = select_calibration(samples, ["A", "B", "C"], size=50, exclude_patients=["CP0", "CP1", "CP2"])
    assert chosen and {s.label for s in chosen} == {"A", "B"}
    with pytest.raises(ExportError, match="no calibration image"):
        select_calibration(samples, ["X", "Y"], size=50)


def test_size_below_one_is_refused():
    with pytest.raises(ConfigError, match="calib-size"):
        select_calibration(_samples(), ["A", "B", "C"], size=0)


def test_the_size_is_filled_when_the_pool_allows():
    chosen = select_calibration(_samples(), ["A", "B", "C"], size=20, seed=3)
    assert len(chosen) == 20
