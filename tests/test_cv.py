"""Patient-grouped K-fold cross-validation: folds patient-disjoint and covering every image once, classes kept in
every fold, ``facederm-train --cv 2`` end to end (fold run dirs, oof.csv, summary), resume, paired comparison,
one-line errors."""

from __future__ import annotations

import csv
import json
import random
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from facederm.runtime.card import ModelCard
from facederm.runtime.errors import ConfigError, DataLeakageError
from facederm.runtime.layout import (
    CARD_FILE,
    CV_PLAN_FILE,
    CV_SUMMARY_FILE,
    OOF_FILE,
    SPLITS_FILE,
    WEIGHTS_FILE,
    fold_dir,
    is_run_dir,
)
from facederm.training.cli_train import main as train_cli
from facederm.training.config import TrainConfig
from facederm.training.cv import OOF, compare_oof, make_folds, read_oof, run_cv, write_oof
from facederm.training.cv import main as cv_cli
from facederm.training.data import open_dataset
from facederm.training.splits import Splits

DATA = "synthetic:96"  # 60 patients; SCC, the rarest class, has 4
SUBSET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pad-ufes-20-subset"
#: The tiny recipe of tests/test_train_e2e.py, face-transfer: two stages, scored on face images, so the all-sites
#: out-of-fold predictions are the part a plain run would not make.
OPTIONS = dict(
    data=DATA,
    arch="mobilenetv3_small_050",
    protocol="face-transfer",
    epochs=1,
    img_size=32,
    batch_size=16,
    n_boot=50,
    device="cpu",
    patience=0,
)


def _cli_args(cv_dir: Path, *extra: str) -> list[str]:
    args = [f"--{k.replace('_', '-')}={v}" for k, v in OPTIONS.items()]
    return [*args, "--out", str(cv_dir), *extra]


def _check_partition(folds: list[Splits], samples) -> None:
    for fold in folds:
        patients = [{s.patient_id for s in part} for _, part in fold.items()]
        assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
        assert {s.image_id for _, part in fold.items() for s in part} == {s.image_id for s in samples}
    tested = [s.image_id for fold in folds for s in fold.test]
    assert sorted(tested) == sorted(s.image_id for s in samples)  # every image tested once


# ----------------------------------------------------------------------------------------------- folds
@pytest.mark.parametrize("k", [2, 3, 4])
def test_folds_are_patient_disjoint_cover_every_image_once_and_ignore_input_order(k):
    samples = open_dataset(DATA).samples
    folds = make_folds(samples, k, seed=3)
    _check_partition(folds, samples)
    shuffled = list(samples)
    random.Random(0).shuffle(shuffled)
    again = make_folds(shuffled, k, seed=3)
    assert [[s.image_id for s in f.test] for f in again] == [[s.image_id for s in f.test] for f in folds]
    assert all(f.val for f in folds)


@pytest.mark.parametrize("seed", range(5))
def test_every_class_with_k_patients_is_tested_and_trained_in_every_fold(seed):
    samples = open_dataset(DATA).samples
    labels = {s.label for s in samples}
    folds = make_folds(samples, 4, seed=seed)  # SCC has exactly 4 patients: one per fold
    for fold in folds:
        assert {s.label for s in fold.test} == labels
        assert {s.label for s in fold.train} == labels
        assert {s.is_face() for s in fold.test} == {True, False}  # both sites in every test fold


@pytest.mark.realdata
@pytest.mark.skipif(not SUBSET.is_dir(), reason="../shared/data/pad-ufes-20-subset is absent")
def test_folds_on_the_pad_subset():
    samples = open_dataset(f"pad-ufes-20:{SUBSET}").samples
    folds = make_folds(samples, 5, seed=0)
    _check_partition(folds, samples)
    labels = {s.label for s in samples}
    for fold in folds:
        assert {s.label for s in fold.test} == labels and {s.label for s in fold.train} == labels
        assert any(s.is_face() for s in fold.test) and not all(s.is_face() for s in fold.test)
    sizes = [len(f.test) for f in folds]
    assert max(sizes) - min(sizes) <= 0.1 * len(samples) / 5


def test_k_outside_two_to_the_rarest_class_patients_is_refused():
    samples = open_dataset(DATA).samples
    with pytest.raises(ConfigError, match="K >= 2"):
        make_folds(samples, 1)
    with pytest.raises(ConfigError, match=r"--cv 5: class SCC has only 4 patient\(s\).*--cv 4 or fewer"):
        make_folds(samples, 5)


@pytest.mark.parametrize("k", ["1", "50"])
def test_cli_bad_k_prints_one_line_and_fails(tmp_path, k):
    result = CliRunner().invoke(train_cli, _cli_args(tmp_path / "cv", "--cv", k))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facederm-train: error: --cv"), result.output
    assert not (tmp_path / "cv").exists()  # refused before anything was written


def test_fixed_splits_must_be_patient_disjoint_and_stay_out_of_the_checkpoint_config(tmp_path):
    samples = open_dataset(DATA).samples
    leaky = Splits(train=samples[:50], val=samples[40:60], test=samples[60:])
    with pytest.raises(DataLeakageError):
        TrainConfig(data=DATA, out=tmp_path, arch="mobilenetv3_small_050", splits=leaky)
    fold = make_folds(samples, 2)[0]
    config = TrainConfig(data=DATA, out=tmp_path, arch="mobilenetv3_small_050", splits=fold)
    assert "splits" not in config.to_dict()
    json.dumps(config.to_dict())


# ---------------------------------------------------------------------------------------- end to end
class _Stop(Exception):
    pass


def _stop(fold: int, run_dir: Path) -> None:
    raise _Stop(fold)


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory) -> SimpleNamespace:
    """``--cv 2``: killed after its first fold, then resumed through the CLI (one CV's training in all)."""
    cv_dir = tmp_path_factory.mktemp("cv") / "cv"
    started = time.perf_counter()
    with pytest.raises(_Stop):
        run_cv(TrainConfig(out=cv_dir, progress=False, **OPTIONS), 2, on_fold_end=_stop)
    first_weights = fold_dir(cv_dir, 0) / WEIGHTS_FILE
    before = {"mtime": first_weights.stat().st_mtime_ns, "second": fold_dir(cv_dir, 1).exists()}
    result = CliRunner().invoke(train_cli, _cli_args(cv_dir, "--cv", "2", "--resume"), terminal_width=120)
    return SimpleNamespace(
        cv_dir=cv_dir, before=before, result=result, seconds=time.perf_counter() - started, weights=first_weights
    )


def test_cv_writes_fold_run_dirs_every_image_once_and_a_summary(cv_run):
    assert cv_run.result.exit_code == 0, cv_run.result.output
    print(f"tiny --cv 2 (interrupted after fold 0, then resumed): {cv_run.seconds:.1f} s")
    cv_dir = cv_run.cv_dir
    dataset = open_dataset(DATA)
    ids = {s.image_id for s in dataset.samples}
    plan = json.loads((cv_dir / CV_PLAN_FILE).read_text())
    for k in range(2):
        run_dir = fold_dir(cv_dir, k)
        assert is_run_dir(run_dir)
        card = ModelCard.load(run_dir / CARD_FILE)
        assert card.data["cross_validation"] == {"fold": k, "k": 2}  # exported artifacts say which fold
        assert card.data["split_patients_over"].startswith(f"cross-validation fold {k} of 2")
        recorded = json.loads((run_dir / SPLITS_FILE).read_text())
        fold_test = set(plan["folds"][k])
        by_id = {s.image_id: s for s in dataset.samples}
        assert set(recorded["test"]) == {i for i in fold_test if by_id[i].is_face()}  # the protocol scores face
        assert fold_test <= set(recorded["heldout"]) and not fold_test & set(recorded["training"])
        assert set(read_oof(run_dir / OOF_FILE).image_ids) == fold_test

    oof = read_oof(cv_dir)
    assert sorted(oof.image_ids) == sorted(ids) and len(oof) == len(ids)  # every image once, every site
    assert set(oof.sites) == {"face", "other"}
    np.testing.assert_allclose(oof.probs.sum(axis=1), 1.0, atol=1e-6)
    with (cv_dir / OOF_FILE).open() as f:
        header = next(csv.reader(f))
    assert header == ["img_id", "patient_id", "site", "label", "fold", *(f"p_{label}" for label in dataset.labels)]

    summary = json.loads((cv_dir / CV_SUMMARY_FILE).read_text())
    assert summary["k"] == 2 and summary["protocol"] == "face-transfer" and summary["site_eval"] == "face"
    assert summary["synthetic"] is True
    for view, n in (("face", sum(s.is_face() for s in dataset.samples)), ("all", len(ids))):
        data = summary["views"][view]
        pooled = data["pooled"]
        assert pooled["n_images"] == n and sum(f["n_images"] for f in data["folds"]) == n
        assert len(pooled["macro_recall_ci"]) == 2 and pooled["macro_recall_ci"][0] is not None
        support = {label: c["support"] for label, c in pooled["per_class"].items()}
        assert pooled["supported_classes"] == [label for label, s in support.items() if s >= summary["min_support"]]
        assert data["spread"]["macro_recall"]["n_folds"] == 2
        assert data["spread"]["macro_recall"]["min"] <= pooled["macro_recall"] + 0.5  # sane, not a formula check
    output = cv_run.result.output
    assert "out-of-fold, face images" in output and "out-of-fold, all sites" in output and "cv dir:" in output


def test_oof_rows_are_the_fold_models_predictions_and_auc_matches_sklearn(cv_run):
    from sklearn.metrics import roc_auc_score

    from facederm.training.evaluate import predict_probabilities
    from facederm.training.rundir import load_run

    oof = read_oof(cv_run.cv_dir)
    dataset = open_dataset(DATA)
    by_id = {s.image_id: s for s in dataset.samples}
    rows = [i for i in range(len(oof)) if oof.folds[i] == 1][:5]
    model, card = load_run(fold_dir(cv_run.cv_dir, 1))
    probs = predict_probabilities(model, dataset, [by_id[oof.image_ids[i]] for i in rows], card.preprocessing)
    np.testing.assert_allclose(probs, oof.probs[rows], atol=1e-6)

    summary = json.loads((cv_run.cv_dir / CV_SUMMARY_FILE).read_text())
    expected = roc_auc_score(oof.y(), oof.probs, multi_class="ovr", average="macro")
    assert summary["views"]["all"]["pooled"]["auc_macro"] == pytest.approx(expected)


def test_resume_keeps_finished_folds_and_a_new_run_needs_resume(cv_run):
    assert not cv_run.before["second"]  # the kill came after fold 0
    assert cv_run.weights.stat().st_mtime_ns == cv_run.before["mtime"]  # fold 0 was not trained again
    assert "fold 1/2: finished earlier, kept" in cv_run.result.output

    again = CliRunner().invoke(train_cli, _cli_args(cv_run.cv_dir, "--cv", "2", "--resume", "--quiet"))
    assert again.exit_code == 0, again.output
    assert cv_run.weights.stat().st_mtime_ns == cv_run.before["mtime"]

    fresh = CliRunner().invoke(train_cli, _cli_args(cv_run.cv_dir, "--cv", "2"))
    assert fresh.exit_code == 2 and "already holds a cross-validation; pass --resume" in fresh.output
    changed = CliRunner().invoke(train_cli, _cli_args(cv_run.cv_dir, "--cv", "2", "--resume", "--seed", "1"))
    assert changed.exit_code == 2 and "cannot resume with different options or folds" in changed.output


def test_compare_oof_of_a_dir_with_itself_is_zero_and_sees_a_better_recipe(cv_run, tmp_path):
    for site in ("face", "all"):
        same = compare_oof(cv_run.cv_dir, cv_run.cv_dir, site=site, n_boot=100)
        assert same.delta == 0.0 and same.ci == (0.0, 0.0)
        assert same.n_images == len(read_oof(cv_run.cv_dir).select(site))

    # B: a recipe that is right on every image; paired on the same images its gain is sure.
    oof = read_oof(cv_run.cv_dir)
    perfect = OOF(oof.labels, oof.image_ids, oof.patient_ids, oof.sites, oof.truth, oof.folds, np.eye(6)[oof.y()])
    write_oof(tmp_path / OOF_FILE, perfect)
    better = compare_oof(cv_run.cv_dir, tmp_path, site="all", n_boot=100)
    assert better.macro_recall_b == 1.0 and better.delta == pytest.approx(1.0 - better.macro_recall_a)
    assert better.ci[0] > 0

    result = CliRunner().invoke(cv_cli, ["compare", str(cv_run.cv_dir), str(tmp_path), "--n-boot", "50"])
    assert result.exit_code == 0 and "B is better" in result.output, result.output
    as_json = CliRunner().invoke(cv_cli, ["compare", str(cv_run.cv_dir), str(cv_run.cv_dir), "--json"])
    assert json.loads(as_json.output)["delta"] == 0.0


def test_compare_refuses_different_images_in_one_line(cv_run, tmp_path):
    oof = read_oof(cv_run.cv_dir)
    write_oof(tmp_path / OOF_FILE, oof.take(range(1, len(oof))))
    with pytest.raises(ConfigError, match="different images"):
        compare_oof(cv_run.cv_dir, tmp_path, site="all")
    result = CliRunner().invoke(cv_cli, ["compare", str(cv_run.cv_dir), str(tmp_path / "nothing")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


def test_summary_command_prints_the_tables(cv_run):
    result = CliRunner().invoke(cv_cli, ["summary", str(cv_run.cv_dir)], terminal_width=120)
    assert result.exit_code == 0 and "pooled, 95% CI" in result.output and "mean, n>=5" in result.output


def test_oof_csv_round_trips(tmp_path):
    labels = ("AK", "BCC")
    probs = np.array([[0.25, 0.75], [0.6, 0.4], [1 / 3, 2 / 3]], dtype=np.float32)
    oof = OOF(labels, ("a", "b", "c"), ("p1", "p1", "p2"), ("face", "other", "face"), ("BCC", "AK", "AK"),
              np.array([0, 0, 1]), probs.astype(np.float64))  # fmt: skip
    write_oof(tmp_path / OOF_FILE, oof)
    back = read_oof(tmp_path / OOF_FILE)
    assert back.image_ids == oof.image_ids and back.truth == oof.truth and back.sites == oof.sites
    assert np.array_equal(back.probs.astype(np.float32), probs) and list(back.folds) == [0, 0, 1]
    assert back.select("face").image_ids == ("a", "c")


def test_results_report_renders_cv_dirs_with_paired_differences(cv_run, tmp_path):
    from facederm.training.results import main as results_cli

    copy = tmp_path / "copy"
    shutil.copytree(cv_run.cv_dir, copy)
    plan = json.loads((copy / CV_PLAN_FILE).read_text())
    plan["options"]["extra_data"] = ["pad-ufes-20:lesions", "pad-ufes-20:more"]
    (copy / CV_PLAN_FILE).write_text(json.dumps(plan))
    out = tmp_path / "RESULTS.md"
    result = CliRunner().invoke(
        results_cli,
        [
            "report",
            "--runs",
            str(tmp_path / "none"),
            "--cv",
            f"{cv_run.cv_dir}=base",
            "--cv",
            f"{copy}=same",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "## Cross-validated results" in text and "| base | 2 | face |" in text and "| same | 2 | all |" in text
    # the same predictions compared paired: no difference, and a CI of exactly zero
    assert "| base → same | all |" in text and "+0.00 [0.00, 0.00]" in text
    # a recipe line names what sets it apart; options a recipe does not use stay out of it
    same_recipe = next(line for line in text.splitlines() if line.startswith("- **same**"))
    assert "extra_data pad-ufes-20:lesions + pad-ufes-20:more" in same_recipe
    assert "clinical" not in same_recipe and "extra_data" not in text.replace(same_recipe, "")
    bad = CliRunner().invoke(
        results_cli, ["report", "--cv", f"{cv_run.cv_dir}=base", "--baseline", "nope", "--out", str(out)]
    )
    assert bad.exit_code != 0 and "--baseline 'nope'" in bad.output and "Traceback" not in bad.output
    # explicit pairs replace the comparisons to the baseline: B minus A, in the order given
    entries = ["--cv", f"{cv_run.cv_dir}=base", "--cv", f"{copy}=same", "--out", str(out)]
    paired = CliRunner().invoke(results_cli, ["report", *entries, "--pair", "same,base"])
    assert paired.exit_code == 0, paired.output
    text = out.read_text()
    assert "B minus A" in text and "| same → base | face |" in text and "base → same" not in text
    for pair, words in (("same,nope", "--pair 'nope'"), ("same", "give two CV labels")):
        bad = CliRunner().invoke(results_cli, ["report", *entries, "--pair", pair])
        assert bad.exit_code != 0 and words in bad.output and "Traceback" not in bad.output


def test_results_report_refuses_a_dir_that_is_not_a_finished_cv(tmp_path):
    from facederm.training.results import main as results_cli

    result = CliRunner().invoke(results_cli, ["report", "--cv", str(tmp_path), "--out", str(tmp_path / "R.md")])
    assert result.exit_code != 0 and "not a finished CV dir" in result.output


# --- the fold ensemble (facederm-export CV_DIR --ensemble) --------------------------------------------------
def test_ensemble_is_the_mean_of_the_members_calibrated_probabilities():
    import torch

    from facederm.training.ensemble import EnsembleClassifier

    torch.manual_seed(0)
    members = [torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)]
    x = torch.randn(5, 4)
    with torch.no_grad():
        got = torch.softmax(EnsembleClassifier(members, [2.0, 0.5])(x), dim=1)
        want = (torch.softmax(members[0](x) / 2.0, 1) + torch.softmax(members[1](x) / 0.5, 1)) / 2
    assert torch.allclose(got, want, atol=1e-6)


def test_a_cv_dir_exports_only_as_an_ensemble_and_a_run_dir_never_as_one(cv_run):
    from facederm.training.ensemble import load_trained

    with pytest.raises(ConfigError, match="--ensemble"):
        load_trained(cv_run.cv_dir)
    with pytest.raises(ConfigError, match="needs a cross-validation dir"):
        load_trained(fold_dir(cv_run.cv_dir, 0), ensemble=True)


def test_ensemble_exports_as_one_graph_equal_to_its_folds(cv_run, tmp_path):
    import torch

    from facederm.export.cli import main as export_cli
    from facederm.runtime import load
    from facederm.training.ensemble import load_ensemble
    from facederm.training.models import ProbabilityModel
    from facederm.training.rundir import load_run

    out = tmp_path / "export"
    args = [str(cv_run.cv_dir), "--ensemble", "--target", "onnx", "--precision", "fp32", "--out", str(out)]
    no_eval = CliRunner().invoke(export_cli, args)
    assert no_eval.exit_code != 0 and "--eval-data" in no_eval.output and "Traceback" not in no_eval.output
    done = CliRunner().invoke(export_cli, [*args, "--eval-data", "synthetic:40,seed=7", "--min-agreement", "0"])
    assert done.exit_code == 0, done.output
    model = load(out, precision="fp32")
    assert model.card.data["ensemble"]["members"] == ["fold-0", "fold-1"]
    size = model.card.input_size
    x = np.random.default_rng(0).uniform(0, 255, (3, 3, size, size)).astype(np.float32)
    members = [load_run(fold_dir(cv_run.cv_dir, i)) for i in range(2)]
    with torch.no_grad():
        folds = [ProbabilityModel.from_card(m, c)(torch.from_numpy(x)).numpy() for m, c in members]
        ensemble, card = load_ensemble(cv_run.cv_dir)
        whole = ProbabilityModel.from_card(ensemble, card)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(whole, np.mean(folds, axis=0), atol=1e-5)
    np.testing.assert_allclose(model.run(x), whole, atol=1e-4)


def test_bare_loop_predicts_every_image_of_the_plan_once_and_pairs_with_the_cv(cv_run, tmp_path):
    """``python -m facederm.training.bare_loop``: the reference recipe on the CV dir's own folds, with
    one prediction per out-of-fold image, comparable with ``compare`` on the same images."""
    from facederm.training.bare_loop import main as bare_cli

    args = [str(cv_run.cv_dir), "--out", str(tmp_path), "--epochs", "1", "--img-size", "32"]
    args += ["--arch", OPTIONS["arch"], "--no-imagenet-weights"]
    result = CliRunner().invoke(bare_cli, args)
    assert result.exit_code == 0, result.output
    bare, cv = read_oof(tmp_path), read_oof(cv_run.cv_dir)
    assert sorted(bare.image_ids) == sorted(cv.image_ids) and bare.labels == cv.labels
    plan = json.loads((cv_run.cv_dir / CV_PLAN_FILE).read_text())
    for fold, test_ids in enumerate(plan["folds"]):
        assert sorted(i for i, f in zip(bare.image_ids, bare.folds) if f == fold) == sorted(test_ids)
    np.testing.assert_allclose(bare.probs.sum(axis=1), 1.0, atol=1e-5)
    paired = compare_oof(cv_run.cv_dir, tmp_path, site="all", n_boot=50)
    assert paired.n_images == len(cv) and paired.delta is not None
    # Its own cv.json (same folds, its recipe): the results report lists it as a recipe beside the CVs.
    from facederm.training.cv_results import render_cv

    report = "\n".join(render_cv([(cv_run.cv_dir, "ours"), (tmp_path, "bare")], n_boot=20))
    assert "**bare**" in report and "bare timm loop" in report and "head linear" in report
    assert json.loads((tmp_path / CV_PLAN_FILE).read_text())["folds"] == plan["folds"]

    missing = CliRunner().invoke(bare_cli, [str(tmp_path), "--out", str(tmp_path / "x")])  # not a CV dir
    assert missing.exit_code != 0 and len(missing.output.strip().splitlines()) == 1, missing.output
