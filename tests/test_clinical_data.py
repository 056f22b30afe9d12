"""Clinical answers on samples: the PAD and CSV readers carry each image's raw values (never biopsed, the label
or ids), the synthetic set has fields with signal and missing values, and its images and splits are unchanged."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from test_data_readers import GOOD_ROWS, PAD_DIR, write_pad, write_png

from facederm.runtime.clinical import fit_schema
from facederm.training.data import open_dataset
from facederm.training.synthetic import CLINICAL_FIELDS, MALIGNANT


def test_pad_reader_carries_the_clinical_columns(tmp_path: Path):
    rows = [dict(r, age="71") for r in GOOD_ROWS]
    data = open_dataset(f"pad-ufes-20:{write_pad(tmp_path / 'pad', rows)}")
    record = data.samples[0].clinical_record
    assert record == {"age": "71", "region": "FACE"}
    for never in ("biopsed", "diagnostic", "img_id", "patient_id", "lesion_id"):
        assert never not in record


@pytest.mark.skipif(not PAD_DIR.is_dir(), reason="../shared/data/pad-ufes-20-subset is absent")
def test_pad_subset_clinical_values_as_written():
    data = open_dataset(f"pad-ufes-20:{PAD_DIR}")
    by_id = {s.image_id: s.clinical_record for s in data.samples}
    assert by_id["PAT_684_1302_588.png"]["age"] == "79" and by_id["PAT_684_1302_588.png"]["fitspatrick"] == "1.0"
    assert by_id["PAT_1516_1765_530.png"]["smoke"] == ""  # unanswered in metadata.csv: missing, not False
    assert all("biopsed" not in r for r in by_id.values())
    schema = fit_schema(["pad"], list(by_id.values()))  # every PAD value fits its preset kind
    assert schema.encode(by_id.values()).shape == (len(by_id), schema.width)


def test_csv_reader_carries_extra_columns(tmp_path: Path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    with open(tmp_path / "list.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "patient_id", "age", "bleed", "biopsed"])
        writer.writerow(["a.png", "BCC", "P1", "70", "True", "True"])
        writer.writerow(["b.png", "NEV", "P2", "", "False", "False"])
    data = open_dataset(f"csv:{tmp_path / 'list.csv'}")
    records = [s.clinical_record for s in data.samples]
    assert records == [{"age": "70", "bleed": "True"}, {"age": "", "bleed": "False"}]


def test_folder_samples_have_no_clinical_answers(tmp_path: Path):
    write_png(tmp_path / "BCC" / "a.png")
    write_png(tmp_path / "NEV" / "b.png")
    assert all(s.clinical == () for s in open_dataset(f"folder:{tmp_path}").samples)


def test_synthetic_clinical_fields_carry_signal_and_gaps():
    data = open_dataset("synthetic:600")
    records = [s.clinical_record for s in data.samples]
    assert all(tuple(r) == CLINICAL_FIELDS for r in records)
    for name in CLINICAL_FIELDS:
        blank = np.mean([r[name] == "" for r in records])
        assert 0.05 < blank < 0.3, (name, blank)
    bad = np.array([s.label in MALIGNANT for s in data.samples])
    age = np.array([float(r["age"]) if r["age"] else np.nan for r in records])
    bleed = np.array([{"True": 1.0, "False": 0.0}.get(r["bleed"], np.nan) for r in records])
    assert np.nanmean(age[bad]) > np.nanmean(age[~bad]) + 10
    assert np.nanmean(bleed[bad]) > np.nanmean(bleed[~bad]) + 0.3
    schema = fit_schema(CLINICAL_FIELDS, records)
    assert [f.kind for f in schema.fields] == ["number", "category", "bool", "bool", "number", "category"]


def test_synthetic_clinical_answers_are_seeded_and_per_patient():
    first, again = open_dataset("synthetic:120").samples, open_dataset("synthetic:120").samples
    assert [s.clinical for s in first] == [s.clinical for s in again]
    ages: dict[str, set[str]] = {}
    for s in first:
        if s.clinical_record["age"]:
            ages.setdefault(s.patient_id, set()).add(s.clinical_record["age"])
    assert all(len(v) == 1 for v in ages.values())  # age belongs to the patient, not the image
    other = open_dataset("synthetic:120,seed=1").samples
    assert [s.clinical for s in other] != [s.clinical for s in first]
