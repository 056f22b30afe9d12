"""Temperature scaling and the confidence referral rule: the fit recovers a known temperature, the card and
every exported graph carry it, and predict() refers an unsure top label."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import softmax

from facederm.runtime.card import Calibration, ModelCard, Referral
from facederm.runtime.errors import ConfigError, SchemaError
from facederm.training.calibrate import (
    apply_temperature,
    calibration_report,
    expected_calibration_error,
    fit_on_validation,
    fit_temperature,
)
from facederm.training.config import parse_refer_below
from facederm.training.models import ProbabilityModel


def _overconfident(n: int, true_temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities softmax(z) of a model whose labels really follow softmax(z / T): over-confident for T > 1."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (n, 6))
    truth = softmax(logits / true_temperature, axis=1)
    y = np.array([rng.choice(6, p=row) for row in truth])
    return softmax(logits, axis=1), y


def test_fit_recovers_the_temperature_and_lowers_the_ece():
    probs, y = _overconfident(4000, 2.0)
    temperature = fit_temperature(probs, y)
    assert 1.7 < temperature < 2.3
    before, after = (
        expected_calibration_error(probs, y),
        expected_calibration_error(apply_temperature(probs, temperature), y),
    )
    assert before > 0.1 and after < 0.05


def test_temperature_changes_no_decision():
    probs, _ = _overconfident(200, 2.0)
    assert (apply_temperature(probs, 3.0).argmax(1) == probs.argmax(1)).all()


def test_too_few_validation_images_fit_nothing_and_say_why():
    probs, y = _overconfident(6, 2.0)
    temperature, report = fit_on_validation((probs, y), {"test": _overconfident(50, 2.0, seed=1)})
    assert temperature == 1.0 and "fewer than" in report["not_fitted"]
    assert report["test"]["n"] == 50 and report["test"]["ece_before"] == report["test"]["ece_after"]


def test_report_scores_each_split_it_is_given():
    val, test = _overconfident(300, 2.0), _overconfident(300, 2.0, seed=1)
    temperature, report = fit_on_validation(val, {"test": test})
    assert report["fitted_on"] == "val" and report["temperature"] == round(temperature, 4)
    assert report["test"]["ece_after"] < report["test"]["ece_before"]  # held-out images gain too
    assert set(calibration_report(1.0, {"val": val}, fitted_on="")) >= {"temperature", "val"}


def test_probability_model_divides_logits_by_the_cards_temperature(make_card):
    torch.manual_seed(0)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3)).eval()
    card = make_card(calibration=Calibration(temperature=2.5, fitted_on="val"))
    image = torch.rand(4, 3, 32, 32) * 255
    plain = ProbabilityModel(classifier, card.preprocessing)
    calibrated = ProbabilityModel.from_card(classifier, card)
    with torch.no_grad():
        logits = classifier(plain.normalize(image))
        assert torch.allclose(calibrated(image), torch.softmax(logits / 2.5, 1), atol=1e-6)
        assert torch.allclose(plain(image), torch.softmax(logits, 1), atol=1e-6)


def test_card_round_trips_calibration_and_confidence_referral(make_card):
    card = make_card(
        calibration=Calibration(temperature=1.7, fitted_on="val"),
        referral=Referral(labels=("BCC",), below_confidence={"AK": 0.6, "SCC": 0.8}),
    )
    assert ModelCard.from_dict(card.to_dict()) == card
    assert (
        ModelCard.from_dict({k: v for k, v in card.to_dict().items() if k != "calibration"}).calibration
        == Calibration()
    )
    with pytest.raises(SchemaError, match="not in labels: MEL"):
        make_card(referral=Referral(below_confidence={"MEL": 0.5}))
    with pytest.raises(SchemaError, match="below_confidence"):
        Referral(below_confidence={"AK": 1.5})
    with pytest.raises(SchemaError, match="temperature"):
        Calibration(temperature=0.0)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", {}),
        ("0.5", {"AK": 0.5, "BCC": 0.5}),
        ("AK=0.6", {"AK": 0.6}),
        (" BCC=0.7 , AK=0.2", {"BCC": 0.7, "AK": 0.2}),
    ],
)
def test_refer_below_spec(spec, expected):
    assert parse_refer_below(spec, ["AK", "BCC"]) == expected


@pytest.mark.parametrize(("spec", "message"), [("x", "use a probability"), ("1.5", "within 0..1"), ("MEL=0.5", "MEL")])
def test_bad_refer_below_spec_is_one_clear_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_refer_below(spec, ["AK", "BCC"])


class _FixedSession:
    """A session answering fixed probabilities (the referral rule is the model's, not the backend's)."""

    device = "cpu"
    static_batch = None
    max_batch = None
    compute_precision = None

    def __init__(self, probabilities: np.ndarray) -> None:
        self.probabilities = probabilities

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.probabilities[: len(batch)]


def test_predict_refers_an_unsure_top_label(make_card, tmp_path):
    from facederm.runtime.model import Model

    card = make_card(referral=Referral(labels=("BCC",), threshold=0.5, below_confidence={"AK": 0.6}))
    probabilities = np.array(
        [[0.1, 0.1, 0.8], [0.3, 0.2, 0.5], [0.55, 0.05, 0.4], [0.2, 0.5, 0.3]], np.float32
    )  # BCC, SCC, AK
    model = Model(_FixedSession(probabilities), card=card, backend_name="fixed", path=tmp_path)  # type: ignore[arg-type]
    images = [np.zeros((32, 32, 3), np.uint8)] * 4
    refer = [p.refer for p in model.predict(images)]
    # sure AK: no; AK at 0.5 < 0.6: unsure; BCC >= 0.5: the malignant rule; SCC top with no threshold: no
    assert refer == [False, True, True, False]


def test_training_fits_the_temperature_and_the_export_carries_it(tiny_run: Path, tmp_path: Path):
    from facederm.export.api import export_run
    from facederm.runtime import load
    from facederm.runtime.layout import CARD_FILE
    from facederm.training.rundir import load_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    classifier, card = load_run(run)
    calibrated = dataclasses.replace(card, calibration=Calibration(temperature=2.0, fitted_on="val"))
    calibrated.save(run / CARD_FILE)
    export_run(run, out_dir=tmp_path / "export", targets=("onnx",), precisions=("fp32",), progress=False)
    model = load(tmp_path / "export", precision="fp32")
    assert model.card.calibration.temperature == 2.0
    image = (np.random.default_rng(0).uniform(0, 255, (2, 3, card.input_size, card.input_size))).astype(np.float32)
    with torch.no_grad():
        raw = ProbabilityModel(classifier, card.preprocessing)(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(model.run(image), apply_temperature(raw, 2.0), atol=1e-4)
