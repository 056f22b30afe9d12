"""Clinical fields end to end on a tiny synthetic run: training fits the schema on the training images and fuses the
answers in the head (image-only models unchanged), metrics report recall as answered vs all masked and whether
missingness alone predicts the label."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from facederm.runtime.card import ModelCard
from facederm.runtime.clinical import ClinicalSchema, fit_schema
from facederm.runtime.errors import ConfigError, ForbiddenClinicalFieldError
from facederm.training.cli_train import main as train_cli
from facederm.training.clinical import drop_fields, missingness_predicts_label
from facederm.training.config import TrainConfig
from facederm.training.data import Sample, open_dataset
from facederm.training.evaluate import predict_probabilities, split_metrics
from facederm.training.models import ProbabilityModel, create_model
from facederm.training.rundir import load_run, load_splits
from facederm.training.trainer import train

DATA = "synthetic:96"
FIELDS = "age,bleed,gender,itch,diameter_1"


def _config(out: Path, **overrides) -> TrainConfig:
    options = dict(
        data=DATA,
        out=out,
        arch="mobilenetv3_small_050",
        epochs=2,
        img_size=32,
        batch_size=16,
        n_boot=30,
        device="cpu",
        progress=False,
        patience=0,
        clinical=FIELDS,
    )
    options.update(overrides)
    return TrainConfig(**options)


@pytest.fixture(scope="module")
def clinical_run(tmp_path_factory) -> Path:
    return train(_config(tmp_path_factory.mktemp("clinical") / "run")).run_dir


def test_card_has_the_schema_fitted_on_training_images(clinical_run: Path):
    card = ModelCard.load(clinical_run / "config.json")
    schema = card.clinical
    assert isinstance(schema, ClinicalSchema) and schema.names == tuple(FIELDS.split(","))
    assert card.model_args["clinical_features"] == schema.width
    assert card.data["clinical"]["dropout_per_field"] == 0.3
    dataset = open_dataset(DATA)
    training = set(load_splits(clinical_run)["training"])
    refit = fit_schema(schema.names, [s.clinical_record for s in dataset.samples if s.image_id in training])
    assert refit == schema  # the training images' answers only (val and test answers never shape the encoding)


def test_metrics_report_present_masked_and_missingness(clinical_run: Path):
    metrics = json.loads((clinical_run / "metrics.json").read_text())
    report = metrics["clinical"]
    assert report["names"] == FIELDS.split(",")
    test = report["splits"]["test"]
    assert test["present"]["macro_recall"] == metrics["test"]["macro_recall"]
    assert set(test["masked"]) == {"macro_recall", "macro_recall_ci", "per_class_recall"}
    miss = report["missingness"]
    assert miss["chance"] == pytest.approx(1 / 6) and miss["n_images"] == 96
    assert miss["predicts_label"] is False  # synthetic gaps are random: they say nothing about the label


def test_reloaded_run_reproduces_its_metrics_with_the_answers(clinical_run: Path):
    model, card = load_run(clinical_run)
    assert model.clinical_schema == card.clinical
    dataset = open_dataset(DATA)
    by_id = {s.image_id: s for s in dataset.samples}
    test = [by_id[i] for i in load_splits(clinical_run)["test"]]
    probs = predict_probabilities(model, dataset, test, card.preprocessing, batch_size=5)
    metrics = json.loads((clinical_run / "metrics.json").read_text())
    assert split_metrics(probs, test, card.labels, n_boot=30, seed=card.seed)["macro_recall"] == pytest.approx(
        metrics["test"]["macro_recall"]
    )
    # The same images with nothing answered go through the model's own "missing" vector.
    prob_model = ProbabilityModel(model, card.preprocessing).eval()
    x = torch.zeros(2, 3, 32, 32)
    missing = torch.from_numpy(card.clinical.missing_batch(2))
    with torch.inference_mode():
        torch.testing.assert_close(prob_model(x), prob_model(x, missing))
        answered = torch.from_numpy(card.clinical.encode([{"age": 80, "bleed": True}] * 2))
        assert not torch.allclose(prob_model(x), prob_model(x, answered))


def test_image_only_model_is_unchanged():
    torch.manual_seed(0)
    plain = create_model("mobilenetv3_small_050", 3)
    assert not any("clinical" in k for k in plain.state_dict())
    assert plain.clinical_features == 0
    with pytest.raises(ConfigError, match="no clinical input"):
        plain.eval()(torch.zeros(1, 3, 32, 32), torch.zeros(1, 4))


def test_field_dropout_is_seeded_and_masks_fields():
    schema = fit_schema(["age", "bleed"], [{"age": "50", "bleed": "True"}, {"age": "70", "bleed": "False"}])
    row = schema.encode_one({"age": 60, "bleed": True})
    draws = [drop_fields(schema, row, np.random.default_rng(seed), 0.5) for seed in range(200)]
    again = [drop_fields(schema, row, np.random.default_rng(seed), 0.5) for seed in range(200)]
    np.testing.assert_array_equal(draws, again)
    flags = schema.missing_indicators(np.stack(draws))
    assert 0.45 < flags.mean() < 0.75  # 0.5 per field plus whole records (1/6)
    assert (flags.all(axis=1)).mean() > 0.2
    np.testing.assert_array_equal(drop_fields(schema, row, np.random.default_rng(0), 0.0), row)


def _samples(missing_for: str | None) -> list[Sample]:
    out = []
    for i in range(120):
        label = ("AK", "BCC", "NEV")[i % 3]
        gone = label == missing_for
        clinical = (("age", "" if gone else str(40 + i % 30)), ("smoke", "" if gone else "False"))
        out.append(Sample(f"{i}.png", label, f"P{i}", f"L{i}", "ARM", f"{i}.png", clinical))
    return out


def test_missingness_check_finds_planted_gaps():
    schema = fit_schema(["age", "smoke"], [s.clinical_record for s in _samples(None)])
    planted = missingness_predicts_label(schema, _samples("BCC"), ("AK", "BCC", "NEV"), n_boot=100)
    assert planted["predicts_label"] is True and planted["balanced_accuracy"] > 0.6
    clean = missingness_predicts_label(schema, _samples(None), ("AK", "BCC", "NEV"), n_boot=100)
    assert clean["predicts_label"] is False


def test_biopsed_is_refused_before_training(tmp_path: Path):
    with pytest.raises(ForbiddenClinicalFieldError, match="biopsed"):
        _config(tmp_path / "x", clinical="age,biopsed")
    result = CliRunner().invoke(
        train_cli, ["--data", DATA, "--out", str(tmp_path / "y"), "--clinical", "pad,biopsed", "--quiet"]
    )
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "biopsed" in lines[0] and "biopsy-proven" in lines[0], result.output
