"""Clinical fields end to end on a tiny synthetic run: training fits the schema on the training images and fuses the
answers in the head (image-only models unchanged), metrics report recall as answered vs all masked and whether
missingness alone predicts the label; the run exports to every target with the two named inputs (calibration and the
gate feed both; the web page asks them in a form) and predicts through ``facederm-predict --clinical``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_train_e2e import DATA
from test_train_e2e import _config as train_config

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

FIELDS = "age,bleed,gender,itch,diameter_1"


def _config(out: Path, **overrides) -> TrainConfig:
    """test_train_e2e's tiny run with clinical fields (a smaller head and a higher rate: something to export)."""
    return train_config(out, **{"n_boot": 30, "head_hidden": 64, "lr": 3e-3, "clinical": FIELDS, **overrides})


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


# --- export: both inputs through every target ------------------------------------------------------------------
TARGETS = ["onnx", "openvino", "tensorrt", "coreml", "web"]


def export_clinical(run_dir: Path, out: Path) -> dict:
    """The export the tests below read (in its own process: native int8 kernels can crash an interpreter)."""
    from facederm.export import export_run

    result = export_run(
        run_dir,
        out_dir=out,
        targets=TARGETS,
        precisions=["fp32", "fp16", "int8"],
        max_drop=100.0,
        min_agreement=0.0,
        eval_views=1,
    )
    return {r.key: (r.status, r.error, r.path) for r in result.records}


@pytest.fixture(scope="module")
def clinical_export(clinical_run: Path, tmp_path_factory, run_isolated) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("clinical-export") / "out"
    records = run_isolated(export_clinical, clinical_run, out, what="export_run(clinical run, onnx/openvino/...)")
    return out, records


def test_every_target_exports_or_says_why(clinical_export):
    out, records = clinical_export
    for key in ("onnx:fp32", "onnx:fp16", "onnx:int8", "onnx-mobile:fp32", "openvino:fp32", "openvino:fp16"):
        assert records[key][0] == "ok", (key, records[key])
    assert records["openvino:int8"][0] == "ok" and records["tensorrt:int8"][0] == "ok", records
    assert records["coreml:fp16"][0] == "ok", records["coreml:fp16"]
    for key in ("web:fp32", "web:int8"):  # the page has a clinical form; skipped only without npm
        status, error, _ = records[key]
        assert status == "ok" or (status == "skipped" and "npm" in error), records[key]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["card"]["clinical"]["fields"][0]["name"] == "age"


def test_graphs_have_both_named_inputs_and_carry_the_schema(clinical_export, clinical_run: Path):
    import onnx
    import openvino as ov

    from facederm.runtime.metadata import OPENVINO_RT_INFO_PATH, card_from_json, card_from_metadata

    out, _ = clinical_export
    schema = ModelCard.load(clinical_run / "config.json").clinical
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "tensorrt/model.int8.qdq.onnx"):
        graph = onnx.load(str(out / name))
        inputs = {i.name: i for i in graph.graph.input}
        assert list(inputs) == ["image", "clinical"], name
        dims = [d.dim_value or d.dim_param for d in inputs["clinical"].type.tensor_type.shape.dim]
        assert dims[1] == schema.width and inputs["clinical"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        meta = {p.key: p.value for p in graph.metadata_props}
        assert card_from_metadata(meta, name).clinical == schema
    ir = ov.Core().read_model(str(out / "openvino" / "model.int8.xml"))
    assert [i.get_any_name() for i in ir.inputs] == ["image", "clinical"]
    assert card_from_json(ir.get_rt_info(list(OPENVINO_RT_INFO_PATH)).astype(str), "ir").clinical == schema


def test_coreml_package_has_a_multiarray_clinical_input(clinical_export, clinical_run: Path):
    import coremltools as ct

    from facederm.runtime.metadata import card_from_metadata

    out, _ = clinical_export
    mlmodel = ct.models.MLModel(str(out / "model.mlpackage"), skip_model_load=True)
    inputs = {i.name: i.type for i in mlmodel.get_spec().description.input}
    assert inputs["image"].WhichOneof("Type") == "imageType"
    assert inputs["clinical"].WhichOneof("Type") == "multiArrayType"
    schema = ModelCard.load(clinical_run / "config.json").clinical
    assert list(inputs["clinical"].multiArrayType.shape) == [1, schema.width]
    assert card_from_metadata(dict(mlmodel.user_defined_metadata), "mlpackage").clinical == schema


@pytest.mark.parametrize("key", ["onnx:fp32", "openvino:fp32", "tensorrt:fp16"])
def test_fp32_artifacts_match_torch_on_both_inputs(clinical_export, clinical_run: Path, key):
    from facederm.runtime import load

    out, records = clinical_export
    model, card = load_run(clinical_run)
    target, precision = key.split(":")
    artifact = load(out, target=target, precision=precision, **({"precision_hint": "f32"} if "openvino" in key else {}))
    x = np.random.default_rng(1).uniform(0, 255, (5, 3, 32, 32)).astype(np.float32)
    answers = card.clinical.encode([{"age": 80, "bleed": True}, {"gender": "MALE"}, None, {"itch": False}, {}])
    reference = ProbabilityModel.from_card(model, card).eval()
    with torch.inference_mode():
        expected = reference(torch.from_numpy(x), torch.from_numpy(answers)).numpy()
        missing = reference(torch.from_numpy(x)).numpy()
    tolerance = 1e-4 if precision == "fp32" else 1e-2
    np.testing.assert_allclose(artifact.run(x, answers), expected, atol=tolerance)
    np.testing.assert_allclose(artifact.run(x), missing, atol=tolerance)
    assert artifact.self_test().passed  # the probe: nothing answered, as recorded at export


def test_calibration_and_gate_sets_carry_each_images_answers(clinical_run: Path):
    from facederm.export.calibration import calibration_set, evaluation_data

    card = ModelCard.load(clinical_run / "config.json")
    evaluation = evaluation_data(clinical_run, card, None, views=2)
    answers = evaluation.agreement.clinical_tensors()
    n = len(evaluation.agreement.images)
    assert answers.shape == (2 * n, card.clinical.width)
    np.testing.assert_array_equal(answers[:n], answers[n:])  # the flipped view keeps its image's answers
    expected = card.clinical.encode(
        [s.clinical_record for s in evaluation.agreement.images.samples], unseen="missing", extra="ignore"
    )
    np.testing.assert_array_equal(answers[:n], expected)
    calib = calibration_set(clinical_run, card, evaluation, calib_data=None, size=40)
    assert calib.clinical_tensors().shape == (len(calib), card.clinical.width)


def test_predict_cli_with_clinical_answers_on_the_export_dir(clinical_export, tmp_path: Path):
    from PIL import Image

    from facederm.runtime.cli import main as predict_cli

    out, _ = clinical_export
    dataset = open_dataset(DATA)
    chosen = dataset.samples[:3]
    rows = ["img_id,age,bleed,gender,itch,diameter_1,biopsed"]
    for s in chosen:
        Image.fromarray(dataset.load_rgb(s)).save(tmp_path / s.image_id)
        r = s.clinical_record
        rows.append(f"{s.image_id},{r['age']},{r['bleed']},{r['gender']},{r['itch']},{r['diameter_1']},True")
    (tmp_path / "answers.csv").write_text("\n".join(rows) + "\n")
    images = [str(tmp_path / s.image_id) for s in chosen]
    for backend in ("onnxruntime", "openvino"):
        result = CliRunner().invoke(
            predict_cli,
            [str(out), *images, "--clinical", str(tmp_path / "answers.csv"), "--json", "--backend", backend],
        )
        assert result.exit_code == 0, result.output
        predictions = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert len(predictions) == 3 and all("probabilities" in p for p in predictions)
        assert "3 image record(s)" in result.stderr


def test_image_only_export_is_unchanged(tiny_run: Path, tmp_path: Path):
    """An image-only run's graph keeps its one input and its card has no clinical entry."""
    import onnx

    from facederm.export import export_run

    result = export_run(tiny_run, out_dir=tmp_path / "out", targets=["onnx"], precisions=["fp32"], eval_views=1)
    assert [r.status for r in result.records] == ["ok", "ok"]  # model.onnx and model.ort
    graph = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["image"]
    assert "clinical" not in json.loads((tmp_path / "out" / "manifest.json").read_text())["card"]


def test_bench_measures_clinical_artifacts_with_the_recorded_answers(clinical_export, clinical_run: Path, tmp_path):
    from facederm.benchmarks.bench import BenchOptions, run_bench

    out, _ = clinical_export
    fast = dict(iterations=3, seconds=None, warmup=1, repeats=1, batch=2, tool_seconds=0.3, max_images=12)
    outcome = run_bench(
        out, BenchOptions(out=tmp_path / "bench", run_dir=clinical_run, backends=["torch", "onnxruntime"], **fast)
    )
    rows = {r["artifact"]: r for r in json.loads((outcome.out_dir / "results.json").read_text())["rows"]}
    assert rows["torch:fp32"]["status"] == "ok" and rows["onnx:fp32"]["status"] == "ok", rows.keys()
    # fp32 ONNX fed the same recorded answers as the torch baseline: the same decisions.
    assert rows["onnx:fp32"]["accuracy"]["agreement"] == pytest.approx(1.0)
    assert rows["onnx:fp32"]["accuracy"]["max_abs_prob_delta"] < 1e-4
    answers = np.load(outcome.out_dir / "work" / "eval-clinical.npy")
    schema = ModelCard.load(clinical_run / "config.json").clinical
    assert answers.shape == (rows["onnx:fp32"]["accuracy"]["n_images"], schema.width)
    assert not np.array_equal(answers, schema.missing_batch(len(answers)))  # the recorded answers, not all missing


# --- MetaBlock fusion: the answers gate the image features; the run reloads and exports the same --------------
def test_metablock_run_records_its_fusion_reloads_and_exports_with_both_inputs(tmp_path: Path):
    from facederm.export import export_run
    from facederm.runtime import load

    run_dir = train(_config(tmp_path / "run", clinical_fusion="metablock")).run_dir
    card = ModelCard.load(run_dir / "config.json")
    assert card.model_args["clinical_fusion"] == "metablock" and "MetaBlock" in card.data["clinical"]["fusion"]
    model, card = load_run(run_dir)
    assert {"head.clinical_scale.weight", "head.clinical_shift.weight"} <= set(model.state_dict())
    assert model.head.fc.in_features == 64  # gated, not concatenated: the FC layer sees the image width only
    reference = ProbabilityModel.from_card(model, card).eval()
    x = np.random.default_rng(2).uniform(0, 255, (4, 3, 32, 32)).astype(np.float32)
    answers = card.clinical.encode([{"age": 80, "bleed": True}, {"gender": "MALE"}, None, {}])
    with torch.inference_mode():
        expected = reference(torch.from_numpy(x), torch.from_numpy(answers)).numpy()
        missing = reference(torch.from_numpy(x)).numpy()
    assert not np.allclose(expected[:2], missing[:2])  # answers change the decision inputs
    np.testing.assert_allclose(expected[2:], missing[2:], atol=1e-6)  # nothing answered: the missing vector
    result = export_run(run_dir, out_dir=tmp_path / "out", targets=["onnx", "openvino"], precisions=["fp32"])
    statuses = {r.key: r.status for r in result.records}
    assert statuses["onnx:fp32"] == "ok" and statuses["openvino:fp32"] == "ok", result.records
    for target, options in (("onnx", {}), ("openvino", {"precision_hint": "f32"})):
        artifact = load(tmp_path / "out", target=target, precision="fp32", **options)
        np.testing.assert_allclose(artifact.run(x, answers), expected, atol=1e-4)


def test_unknown_fusion_is_refused_in_one_line(tmp_path: Path):
    with pytest.raises(ConfigError, match="concat, metablock"):
        _config(tmp_path / "x", clinical_fusion="film")
    result = CliRunner().invoke(train_cli, ["--data", DATA, "--out", str(tmp_path / "y"), "--clinical-fusion", "film"])
    assert result.exit_code != 0 and "film" in result.output and "Traceback" not in result.output


# --- a clinical fold ensemble: each fold fitted its own schema; the graph takes one and translates -----------------
def test_clinical_fold_ensemble_takes_one_encoding_and_equals_its_folds(tmp_path: Path):
    from facederm.export import export_run
    from facederm.runtime import load
    from facederm.runtime.layout import fold_dir
    from facederm.training.cv import run_cv
    from facederm.training.ensemble import load_ensemble

    cv_dir = tmp_path / "cv"
    run_cv(_config(cv_dir, epochs=1, protocol="all"), 2)
    folds = [load_run(fold_dir(cv_dir, i)) for i in range(2)]
    assert folds[0][1].clinical != folds[1][1].clinical  # fitted on different training images
    ensemble, card = load_ensemble(cv_dir)
    records = [{"age": 80, "bleed": True}, {"gender": "MALE", "itch": False}, None, {"age": 20, "diameter_1": 9}]
    x = np.random.default_rng(3).uniform(0, 255, (4, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        expected = np.mean(
            [
                ProbabilityModel.from_card(m, c)(
                    torch.from_numpy(x), torch.from_numpy(c.clinical.encode(records, unseen="missing"))
                ).numpy()
                for m, c in folds
            ],
            axis=0,
        )
        whole = ProbabilityModel.from_card(ensemble, card)(
            torch.from_numpy(x), torch.from_numpy(card.clinical.encode(records))
        )
    np.testing.assert_allclose(whole.numpy(), expected, atol=1e-5)
    result = export_run(
        cv_dir,
        out_dir=tmp_path / "out",
        targets=["onnx"],
        precisions=["fp32"],
        ensemble=True,
        eval_data="synthetic:40,seed=7",
        min_agreement=0.0,
    )
    assert {r.key: r.status for r in result.records}["onnx:fp32"] == "ok", result.records
    artifact = load(tmp_path / "out", precision="fp32")
    assert artifact.clinical == card.clinical
    np.testing.assert_allclose(artifact.run(x, card.clinical.encode(records)), expected, atol=1e-4)


def test_web_page_asks_the_clinical_questions_and_equals_the_runtime(clinical_export, tmp_path: Path):
    """The page in headless Chromium: a form control per field, and with the same answers the same probabilities as
    facederm.runtime on the same model file; an unknown field is refused naming it."""
    from PIL import Image

    from facederm.export.browser import measure_in_browser, open_page, unavailable_reason
    from facederm.runtime import load
    from facederm.runtime.preprocess import prepare_image, to_tensor

    out, records = clinical_export
    if records["web:fp32"][0] != "ok" or unavailable_reason():
        pytest.skip(f"browser test: {unavailable_reason() or records['web:fp32'][1]}")
    dataset = open_dataset(DATA)
    samples = dataset.samples[:4]
    paths = []
    for i, sample in enumerate(samples):
        paths.append(tmp_path / f"image{i}.png")
        Image.fromarray(dataset.load_rgb(sample)).save(paths[-1])
    model = load(out / "web" / "model.onnx", backend="onnxruntime")
    schema = model.card.clinical
    answers = [{k: v for k, v in s.clinical_record.items() if k in schema.names} for s in samples[:3]] + [{}]
    page = measure_in_browser(out / "web", paths, model="model.onnx", clinical=answers)
    got = np.array([p["probabilities"] for p in page["predictions"]])
    crops = to_tensor([prepare_image(p, model.card.preprocessing) for p in paths])
    expected = model.run(crops, schema.encode(answers))
    assert np.abs(got - expected).max() <= 1e-3 and (got.argmax(1) == expected.argmax(1)).all()
    assert not np.allclose(expected[:3], model.run(crops[:3], schema.missing_batch(3)), atol=1e-4)  # answers count
    with open_page(out / "web", model="model.onnx") as session:
        fields = session.page.eval_on_selector_all(
            "#clinical-fields [data-field]", "els => els.map(e => e.dataset.field)"
        )
        assert fields == list(schema.names) and session.page.is_visible("#clinical summary")
        with pytest.raises(Exception, match="agee"):
            session.predict(paths[0].read_bytes(), clinical={"agee": 3})
