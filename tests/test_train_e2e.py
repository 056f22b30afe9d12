"""End-to-end training on synthetic data with a tiny model: every protocol writes a valid run dir that
reloads to the same outputs; runs are seeded; an interrupted run resumes to the same result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facederm.runtime.card import ModelCard
from facederm.runtime.errors import ConfigError
from facederm.training.cli_train import main as train_cli
from facederm.training.config import TrainConfig
from facederm.training.data import open_dataset, split_by_patient
from facederm.training.distributed import state_hash
from facederm.training.evaluate import predict_probabilities, split_metrics
from facederm.training.rundir import load_run, load_splits
from facederm.training.trainer import train

DATA = "synthetic:96"


def _config(out: Path, **overrides) -> TrainConfig:
    options = dict(
        data=DATA,
        out=out,
        arch="mobilenetv3_small_050",
        epochs=2,
        img_size=32,
        batch_size=16,
        n_boot=50,
        device="cpu",
        progress=False,
        patience=0,
    )
    options.update(overrides)
    return TrainConfig(**options)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished run per protocol (shared by the tests below: training is the slow part)."""
    root = tmp_path_factory.mktemp("runs")
    return {p: train(_config(root / p, protocol=p)).run_dir for p in ("all", "face-only", "face-transfer")}


@pytest.mark.parametrize("protocol", ["all", "face-only", "face-transfer"])
def test_run_dir_is_complete_and_reloads_to_the_same_outputs(runs, protocol):
    run_dir = runs[protocol]
    for name in (
        "model.safetensors",
        "config.json",
        "metrics.json",
        "splits.json",
        "history.json",
        "confusion_test.png",
        "roc_test.png",
        "history.png",
    ):
        assert (run_dir / name).is_file(), name
    card = ModelCard.load(run_dir / "config.json")
    assert card.protocol == protocol and card.data["synthetic"] is True and card.data["spec"] == DATA
    assert card.data["site_eval"] == ("all" if protocol == "all" else "face")
    assert card.preprocessing.crop == 32 and card.preprocessing.mean == (0.485, 0.456, 0.406)
    assert set(card.referral.labels) == {"BCC", "MEL", "SCC"} & set(card.labels)
    assert "random init" in card.data["training"]["init"]

    # Reloading the run and predicting its recorded test split reproduces metrics.json exactly.
    model, card = load_run(run_dir)
    dataset = open_dataset(DATA)
    by_id = {s.image_id: s for s in dataset.samples}
    test = [by_id[i] for i in load_splits(run_dir)["test"]]
    probs = predict_probabilities(model, dataset, test, card.preprocessing, batch_size=7)
    assert probs.shape == (len(test), len(card.labels))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    recomputed = split_metrics(probs, test, card.labels, n_boot=50, seed=card.seed)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert recomputed["confusion_matrix"] == metrics["test"]["confusion_matrix"]
    assert recomputed["macro_recall"] == pytest.approx(metrics["test"]["macro_recall"])
    if protocol == "all":
        assert "test_face" in metrics
    # The temperature fitted on val is the card's, and its ECE is reported on the held-out test images too.
    calibration = metrics["calibration"]
    assert calibration["temperature"] == pytest.approx(card.calibration.temperature, abs=1e-4)
    assert calibration["test"]["n"] == len(test) and 0 <= calibration["test"]["ece_after"] <= 1


@pytest.mark.parametrize("protocol", ["face-only", "face-transfer"])
def test_face_protocols_train_and_test_on_face_images_of_disjoint_patients(runs, protocol):
    dataset = open_dataset(DATA)
    by_id = {s.image_id: s for s in dataset.samples}
    splits = load_splits(runs[protocol])
    patients = {}
    for name in ("train", "val", "test"):
        samples = [by_id[i] for i in splits[name]]
        assert samples and all(s.is_face() for s in samples), name  # the final stage is face only
        patients[name] = {s.patient_id for s in samples}
    assert not (patients["train"] & patients["test"]) and not (patients["val"] & patients["test"])
    # The test split is the face part of the one patient split over all samples.
    full = split_by_patient(dataset.samples, seed=0)
    assert set(splits["test"]) == {s.image_id for s in full.test if s.is_face()}


def test_transfer_runs_two_stages(runs):
    history = json.loads((runs["face-transfer"] / "history.json").read_text())
    assert [h["stage"] for h in history] == ["other-sites", "other-sites", "face", "face"]
    card = ModelCard.load(runs["face-transfer"] / "config.json")
    assert [s["site"] for s in card.data["stages"]] == ["other", "face"]


def test_same_seed_gives_the_same_run(runs, tmp_path):
    again = train(_config(tmp_path / "again", protocol="face-only")).run_dir
    first = json.loads((runs["face-only"] / "metrics.json").read_text())
    second = json.loads((again / "metrics.json").read_text())
    assert first["test"] == second["test"] and first["val"] == second["val"]
    assert state_hash(load_run(again)[0]) == state_hash(load_run(runs["face-only"])[0])


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_final_result(tmp_path):
    # face-transfer, 3 epochs per stage: interrupt after the 2nd epoch of stage 1, then resume.
    straight = train(_config(tmp_path / "straight", protocol="face-transfer", epochs=3)).run_dir
    interrupted_dir = tmp_path / "interrupted"
    seen = []

    def interrupt(row):
        seen.append(row)
        if len(seen) == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(_config(interrupted_dir, protocol="face-transfer", epochs=3), on_epoch_end=interrupt)
    assert not (interrupted_dir / "metrics.json").exists()
    with pytest.raises(ConfigError, match="--resume"):
        train(_config(interrupted_dir, protocol="face-transfer", epochs=3))
    with pytest.raises(ConfigError, match="different options"):
        train(_config(interrupted_dir, protocol="face-transfer", epochs=3, resume=True, lr=0.5))
    resumed = train(_config(interrupted_dir, protocol="face-transfer", epochs=3, resume=True)).run_dir
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((resumed / "metrics.json").read_text())
    assert a["test"] == b["test"]
    assert state_hash(load_run(straight)[0]) == state_hash(load_run(resumed)[0])
    history = json.loads((resumed / "history.json").read_text())
    assert len(history) == 6
    assert [h["loss"] for h in history] == [h["loss"] for h in json.loads((straight / "history.json").read_text())]


def test_cli_unknown_arch_prints_one_line_and_fails(tmp_path):
    result = CliRunner().invoke(train_cli, ["--data", DATA, "--arch", "resnet5O", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facederm-train: error: unknown arch 'resnet5O'")
    assert "Traceback" not in result.output


def test_cli_bad_data_names_it(tmp_path):
    result = CliRunner().invoke(
        train_cli,
        ["--data", f"folder:{tmp_path}/missing", "--arch", "resnet10t", "--out", str(tmp_path / "x"), "--quiet"],
    )
    assert result.exit_code != 0
    assert result.output.startswith("facederm-train: error: ") and "missing" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_trains_a_run(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        train_cli,
        [
            "--data",
            "synthetic:60",
            "--arch",
            "resnet10t",
            "--epochs",
            "1",
            "--img-size",
            "32",
            "--batch-size",
            "16",
            "--out",
            str(out),
            "--n-boot",
            "20",
            "--device",
            "cpu",
            "--protocol",
            "face-only",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "random init" in result.output  # the CLI says how the backbone started
    assert json.loads((out / "metrics.json").read_text())["protocol"] == "face-only"


def test_resume_of_a_finished_run_is_a_no_op(tmp_path: Path) -> None:
    from facederm.training import train

    config = dict(
        data="synthetic:60,size=32",
        out=tmp_path / "run",
        arch="mobilenetv3_small_050",
        img_size=32,
        epochs=1,
        batch_size=16,
        n_boot=10,
        progress=False,
    )
    first = train(TrainConfig(**config))
    again = train(TrainConfig(**config, resume=True))
    assert again.metrics == first.metrics


def test_splits_record_every_stage_training_image_and_the_heldout_patients(runs):
    # Export calibrates on every image the run trained on and judges agreement on every held-out image:
    # a face-transfer run records its other-site training images too.
    dataset = open_dataset(DATA)
    by_id = {s.image_id: s for s in dataset.samples}
    full = split_by_patient(dataset.samples, seed=0)
    splits = load_splits(runs["face-transfer"])
    assert set(splits["training"]) == {s.image_id for s in full.train}
    assert any(not by_id[i].is_face() for i in splits["training"]) and set(splits["train"]) < set(splits["training"])
    assert set(splits["heldout"]) == {s.image_id for s in [*full.val, *full.test]}
    face_only = load_splits(runs["face-only"])
    assert set(face_only["training"]) == set(face_only["train"])  # one stage: only face images were trained on
    train_patients = {by_id[i].patient_id for i in splits["training"]}
    assert not train_patients & {by_id[i].patient_id for i in splits["heldout"]}


def test_export_calibrates_on_every_stage_and_judges_on_heldout_images(runs):
    from facederm.export.calibration import calibration_set, evaluation_data

    run_dir = runs["face-transfer"]
    _, card = load_run(run_dir)
    splits = load_splits(run_dir)
    evaluation = evaluation_data(run_dir, card, None)
    assert set(evaluation.agreement.images.ids) == set(splits["heldout"])
    assert len(evaluation.agreement) == 4 * len(evaluation.agreement.images)  # few images: all four views
    assert evaluation.agreement.views[0] == "identity"
    assert set(evaluation.labelled.ids) == set(splits["test"])
    calibration = calibration_set(run_dir, card, evaluation, calib_data=None, size=120)
    used = set(calibration.images.ids)
    assert used <= set(splits["training"]) and used - set(splits["train"]), "other-site training images are used"
    assert len(calibration) == 120 and not used & set(evaluation.agreement.images.ids)


def _resumes_like_a_straight_run(tmp_path: Path, options: dict, stop_after_epoch: int) -> Path:
    """Train ``options`` straight, and again killed after ``stop_after_epoch`` then resumed: the same final weights
    (what the run dir holds after a kill must be enough). Returns the straight run's dir."""
    straight = train(_config(tmp_path / "straight", **options)).run_dir

    def interrupt(row):
        if row["epoch"] == stop_after_epoch:
            raise _Interrupt

    interrupted = tmp_path / "interrupted"
    with pytest.raises(_Interrupt):
        train(_config(interrupted, **options), on_epoch_end=interrupt)
    resumed = train(_config(interrupted, resume=True, **options)).run_dir
    assert state_hash(load_run(straight)[0]) == state_hash(load_run(resumed)[0])
    return straight


def test_ema_weights_are_kept_and_survive_a_resume(tmp_path):
    """--ema-decay: the run keeps the weights' moving average (not the raw weights), and an interrupted run
    resumes its average too (same final weights as a straight run)."""
    plain = train(_config(tmp_path / "plain", protocol="all", epochs=3)).run_dir
    straight = _resumes_like_a_straight_run(tmp_path, dict(protocol="all", epochs=3, ema_decay=0.9), 2)
    assert state_hash(load_run(plain)[0]) != state_hash(load_run(straight)[0])
    assert load_run(straight)[1].data["training"]["ema_decay"] == 0.9
    with pytest.raises(ConfigError, match="--ema-decay"):
        _config(tmp_path / "bad", ema_decay=1.0)


def test_stability_training_is_recorded_and_survives_a_resume(tmp_path):
    """--stability-weight: a different model than plain training, named in the card's loss, and an interrupted run
    resumes to the same weights (its noise is seeded like dropout)."""
    plain = train(_config(tmp_path / "plain", protocol="all", epochs=2)).run_dir
    options = dict(protocol="all", epochs=2, stability_weight=1.0, stability_noise=8.0)
    straight = _resumes_like_a_straight_run(tmp_path, options, 1)
    assert state_hash(load_run(plain)[0]) != state_hash(load_run(straight)[0])
    training = load_run(straight)[1].data["training"]
    assert training["stability_weight"] == 1.0 and "stability training" in training["loss"]
    with pytest.raises(ConfigError, match="--stability-weight"):
        _config(tmp_path / "bad", stability_weight=1.0, stability_noise=0.0)


def test_rotation_and_color_jitter_train_a_different_model_and_are_in_the_card(tmp_path):
    plain = train(_config(tmp_path / "plain", protocol="all", epochs=1)).run_dir
    augmented = train(_config(tmp_path / "aug", protocol="all", epochs=1, rotation=20, color_jitter=0.2)).run_dir
    assert state_hash(load_run(plain)[0]) != state_hash(load_run(augmented)[0])
    training = load_run(augmented)[1].data["training"]
    assert training["rotation"] == 20 and training["color_jitter"] == 0.2
    assert "rotation" in training["augmentation"] and "colour jitter" in training["augmentation"]


def test_linear_head_trains_reloads_and_is_in_the_card(tmp_path):
    """--head-hidden 0: GAP -> class layer (as a bare timm fine-tune), recorded in the card, rebuilt by load_run
    with the same outputs; a bad width or dropout is refused naming the option."""
    run = train(_config(tmp_path / "linear", protocol="all", epochs=1, head_hidden=0, head_dropout=0.2)).run_dir
    model, card = load_run(run)
    assert card.model_args == {"head_hidden": 0, "head_dropout": 0.2}
    assert not hasattr(model.head, "fc") and not hasattr(model.head, "conv")
    width = model.backbone.num_features
    assert sum(p.numel() for p in model.head.parameters()) == (width + 1) * card.num_classes
    assert card.data["training"]["head"] == "GAP -> dropout 0.2 -> classes (linear)"
    dataset = open_dataset(DATA)
    samples = dataset.samples[:8]
    first = predict_probabilities(model, dataset, samples, card.preprocessing)
    again = predict_probabilities(load_run(run)[0], dataset, samples, card.preprocessing)
    np.testing.assert_allclose(first, again, atol=1e-6)
    for bad in ({"head_hidden": -1}, {"head_dropout": 1.0}):
        with pytest.raises(ConfigError, match="--head-hidden"):
            _config(tmp_path / "bad", **bad)


def test_val_fraction_zero_trains_on_every_training_patient_and_keeps_the_last_epoch(tmp_path):
    """--val-fraction 0 (as a bare fine-tune): no validation images, so no best-epoch choice and no temperature;
    the run says so instead of failing."""
    out = tmp_path / "noval"
    options = ["--data", DATA, "--arch", "mobilenetv3_small_050", "--epochs", "2", "--img-size", "32"]
    options += ["--batch-size", "16", "--n-boot", "20", "--device", "cpu", "--quiet", "--out", str(out)]
    result = CliRunner().invoke(train_cli, [*options, "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    splits = load_splits(out)
    assert splits["val"] == [] and splits["train"] and splits["test"]
    assert load_run(out)[1].calibration.temperature == 1.0
    assert "0 validation image" in json.loads((out / "metrics.json").read_text())["calibration"]["not_fitted"]
    bad = CliRunner().invoke(train_cli, [*options[:-1], str(tmp_path / "bad"), "--val-fraction", "0.9"])
    assert bad.exit_code != 0 and "--val-fraction 0.9" in bad.output
