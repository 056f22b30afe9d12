"""The fidelity gate's statistics: the agreement bound, its design power, the harm rules, the flip list."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from facederm.export.calibration import VIEWS, apply_view, auto_views
from facederm.export.parity import (
    DEFAULT_MIN_AGREEMENT,
    AgreementInputs,
    GateRules,
    clopper_pearson_lower,
    compute_parity,
    gate_verdict,
    margin_profile,
    pass_probability,
)
from facederm.runtime.errors import ConfigError

LABELS = ["A", "B", "C"]


def _confident(n: int, seed: int = 0) -> np.ndarray:
    """fp32-like probabilities with clear winners (margins 0.4-0.9)."""
    rng = np.random.default_rng(seed)
    top = rng.integers(0, 3, n)
    probs = np.full((n, 3), 0.0)
    high = rng.uniform(0.7, 0.95, n)
    probs[np.arange(n), top] = high
    for i in range(n):
        others = [k for k in range(3) if k != top[i]]
        probs[i, others] = (1 - high[i]) / 2
    return probs


def _swap_top(probs: np.ndarray, rows) -> np.ndarray:
    """Move each row's top probability to the next class: a changed decision."""
    out = probs.copy()
    for i in rows:
        out[i] = np.roll(out[i], 1)
    return out


def test_lower_bound_is_the_exact_clopper_pearson_bound():
    for k, n in ((300, 300), (297, 300), (380, 390), (50, 60)):
        expected = binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").low
        assert clopper_pearson_lower(k, n) == pytest.approx(expected, abs=1e-9)
    assert clopper_pearson_lower(0, 0) == 0.0


def test_default_bound_passes_a_99_percent_artifact_and_fails_a_95_percent_one():
    # The design: at >= 300 inputs, 99 % true agreement passes with high probability, 95 % almost never.
    for n in (300, 390, 600):
        assert pass_probability(0.99, n, DEFAULT_MIN_AGREEMENT) >= 0.95
        assert pass_probability(0.95, n, DEFAULT_MIN_AGREEMENT) <= 0.01


def test_faithful_artifact_passes_and_a_corrupted_one_fails_with_margin():
    reference = _confident(400)
    y = reference.argmax(1)
    patients = [f"p{i // 2}" for i in range(400)]
    faithful = compute_parity(reference, reference * 0.999 + 0.001 / 3, y, patients, LABELS, n_boot=200)
    reason, decision = gate_verdict(faithful, GateRules())
    assert reason is None and decision.startswith("passed")
    assert faithful.agreement_lower_bound > DEFAULT_MIN_AGREEMENT / 100 + 0.02  # far from the threshold

    broken = _swap_top(reference, range(0, 400, 3))  # a third of the decisions changed
    parity = compute_parity(reference, broken, y, patients, LABELS, n_boot=200)
    reason, _ = gate_verdict(parity, GateRules())
    assert reason and "lower bound" in reason and "harm shown" in reason
    assert parity.agreement_lower_bound < DEFAULT_MIN_AGREEMENT / 100 - 0.2


def test_one_flipped_image_is_not_harm_but_consistent_damage_is():
    reference = _confident(200, seed=1)
    y = reference.argmax(1)  # fp32 is right everywhere: every flip costs recall
    patients = [f"p{i}" for i in range(200)]
    rules = GateRules(min_agreement=0)
    one = compute_parity(reference, _swap_top(reference, [0]), y, patients, LABELS, n_boot=500)
    assert one.macro_recall_delta < 0
    assert gate_verdict(one, rules)[0] is None, "one flip must not fail the gate"
    many = compute_parity(reference, _swap_top(reference, range(0, 200, 10)), y, patients, LABELS, n_boot=500)
    reason, decision = gate_verdict(many, rules)
    assert reason and "harm shown" in reason and decision.startswith("failed")
    assert many.macro_recall_delta_ci[1] < 0


def test_flips_are_listed_with_their_fp32_margin_largest_first():
    reference = _confident(50, seed=2)
    reference[3] = [0.45, 0.40, 0.15]  # a near-tie
    probs = _swap_top(reference, [3, 7])
    ids = [f"img{i}" for i in range(50)]
    agreement = AgreementInputs(reference, probs, ids, ["identity"] * 50)
    parity = compute_parity(reference, probs, reference.argmax(1), ids, LABELS, agreement=agreement, n_boot=50)
    assert [f.image_id for f in parity.flips] == ["img7", "img3"]
    assert parity.flips[1].fp32_margin == pytest.approx(0.05)
    assert parity.n_pairs == 50 and parity.mean_kl > 0 and parity.mean_top1_prob_delta > 0


def test_margin_profile_counts_the_near_ties_an_artifact_can_flip():
    reference = _confident(40, seed=3)  # margins 0.4-0.9
    reference[:4] = [0.40, 0.38, 0.22]  # 4 near-ties, margin 0.02
    reference[4:6] = [0.50, 0.43, 0.07]  # 2 more at margin 0.07
    profile = margin_profile(reference)
    assert profile["inputs"] == 40
    assert profile["below"] == {"0.05": pytest.approx(4 / 40), "0.1": pytest.approx(6 / 40)}
    assert 0.4 <= profile["median"] <= 0.9
    assert margin_profile(np.zeros((0, 3)))["median"] is None


def test_per_class_deltas_carry_patient_bootstrap_cis():
    reference = _confident(120, seed=3)
    y = reference.argmax(1)
    parity = compute_parity(
        reference, _swap_top(reference, range(0, 120, 7)), y, [f"p{i // 3}" for i in range(120)], LABELS, n_boot=200
    )
    for label in LABELS:
        low, high = parity.per_class_recall_delta_ci[label]
        assert low <= parity.per_class_recall_delta[label] <= high


def test_small_agreement_sets_say_the_bound_is_weak():
    reference = _confident(150)
    parity = compute_parity(reference, reference, reference.argmax(1), [str(i) for i in range(150)], LABELS, n_boot=50)
    reason, decision = gate_verdict(parity, GateRules())
    assert reason is None and "only 150 inputs" in decision and "passes with probability" in decision


def test_too_few_inputs_for_any_bound_judge_the_point_estimate_and_say_so():
    # 60 inputs: even 60/60 bounds at 95.1 % < 96 %; a faithful artifact must not fail for the lack of data.
    reference = _confident(60)
    ids = [str(i) for i in range(60)]
    parity = compute_parity(reference, reference, reference.argmax(1), ids, LABELS, n_boot=50)
    reason, decision = gate_verdict(parity, GateRules())
    assert reason is None and "point estimate was judged" in decision
    worse = compute_parity(
        reference, _swap_top(reference, range(0, 60, 6)), reference.argmax(1), ids, LABELS, n_boot=50
    )
    assert "< --min-agreement" in (gate_verdict(worse, GateRules(max_drop=100))[0] or "")


def test_bad_thresholds_are_config_errors():
    with pytest.raises(ConfigError, match="max-drop"):
        GateRules(max_drop=-1)
    with pytest.raises(ConfigError, match="min-agreement"):
        GateRules(min_agreement=101)


def test_views_are_flips_and_auto_views_reach_the_design_size():
    batch = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert np.array_equal(apply_view(batch, "hflip"), batch[..., ::-1])
    assert np.array_equal(apply_view(batch, "vflip"), batch[:, :, ::-1])
    assert np.array_equal(apply_view(apply_view(batch, "hvflip"), "hvflip"), batch)
    assert auto_views(195) == 2 and auto_views(400) == 1 and auto_views(10) == len(VIEWS)
