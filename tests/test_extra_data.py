"""``facederm-train --extra-data``: another data set's images join training only, in the stages the protocol
names; never validation, test or the recorded held-out images; a patient of the main data is dropped from it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from facederm.runtime.errors import ConfigError, DataError
from facederm.training.cli_train import main as train_cli
from facederm.training.config import TrainConfig
from facederm.training.data import open_dataset
from facederm.training.rundir import load_card, load_metrics, load_splits
from facederm.training.trainer import train

MAIN = "synthetic:96"
SHARED_PATIENT = open_dataset(MAIN).samples[0].patient_id  # a main-data patient: their extra images must go


@pytest.fixture(scope="module")
def extra_csv(tmp_path_factory) -> tuple[str, int]:
    """A csv: data set of other patients (synthetic renders saved as PNG), plus two rows of a main-data patient
    and one with a label the main data lacks; returns (spec, images that may be trained on)."""
    root = tmp_path_factory.mktemp("extra")
    source = open_dataset("synthetic:24,size=32,seed=5")
    rows = []
    for i, sample in enumerate(source.samples):
        name = f"img_{i:03d}.png"
        Image.fromarray(source.load_rgb(sample)).save(root / name)
        patient = SHARED_PATIENT if i < 2 else f"EXTRA_{sample.patient_id}"
        label = "XYZ" if i == 2 else sample.label
        rows.append({"path": name, "label": label, "patient_id": patient, "region": sample.region})
    with open(root / "list.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return f"csv:{root / 'list.csv'}", len(rows) - 3


def _config(out: Path, **overrides) -> TrainConfig:
    options = dict(
        data=MAIN,
        out=out,
        arch="mobilenetv3_small_050",
        epochs=1,
        img_size=32,
        batch_size=16,
        n_boot=20,
        device="cpu",
        progress=False,
        patience=0,
        calibrate=False,
    )
    options.update(overrides)
    return TrainConfig(**options)


@pytest.fixture(scope="module")
def transfer_run(extra_csv, tmp_path_factory) -> Path:
    spec, _ = extra_csv
    out = tmp_path_factory.mktemp("runs") / "transfer"
    return train(_config(out, protocol="face-transfer", extra_data=(spec,))).run_dir


def test_face_transfer_pretrains_on_every_extra_image_and_fine_tunes_on_face_only(transfer_run, extra_csv):
    spec, usable = extra_csv
    card = load_card(transfer_run)
    (record,) = card.data["extra_data"]
    assert record["spec"] == spec
    assert record["images"] == usable
    assert record["dropped_shared_patient"] == 2
    assert record["skipped_rows"] == 1  # the label the main data lacks
    other, face = card.data["stages"]
    assert other["extra_train_images"] == usable  # face and other sites of the extra patients alike
    assert face["extra_train_images"] == 0


def test_extra_images_are_trained_on_but_never_validated_tested_or_held_out(transfer_run, extra_csv):
    spec, usable = extra_csv
    extra_ids = {s.image_id for s in open_dataset(spec).samples}
    splits = load_splits(transfer_run)
    assert not extra_ids & {*splits["val"], *splits["test"], *splits["heldout"]}
    assert len(extra_ids & set(splits["training"])) == usable
    main_ids = {s.image_id for s in open_dataset(MAIN).samples}
    assert set(splits["test"]) <= main_ids
    metrics = load_metrics(transfer_run)
    assert metrics["test"]["n_images"] == len(splits["test"])


def test_all_protocol_trains_on_the_extra_images_and_a_resume_must_keep_them(extra_csv, tmp_path):
    spec, usable = extra_csv
    out = tmp_path / "all"
    train(_config(out, extra_data=(spec,)))
    card = load_card(out)
    assert card.data["stages"][0]["extra_train_images"] == usable
    assert [record["spec"] for record in card.data["extra_data"]] == [spec]
    with pytest.raises(ConfigError, match="extra_data"):
        train(_config(out, resume=True))


def test_extra_data_of_the_main_patients_only_is_refused(tmp_path):
    with pytest.raises(DataError, match="--extra-data synthetic:40,seed=1: no usable training image"):
        train(_config(tmp_path / "run", extra_data=("synthetic:40,seed=1",)))  # the same SYN_ patient ids


def test_the_cli_names_a_bad_extra_data_spec_in_one_line(tmp_path):
    args = ["--data", MAIN, "--out", str(tmp_path / "run"), "--arch", "mobilenetv3_small_050", "--quiet"]
    for extra, message in [("nosuch:thing", "unknown kind"), (MAIN, "that is --data itself")]:
        result = CliRunner().invoke(train_cli, [*args, "--extra-data", extra])
        assert result.exit_code != 0
        assert message in result.output
        assert "Traceback" not in result.output
