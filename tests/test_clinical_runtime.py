"""The runtime with a two-input artifact (``image`` + ``clinical``): every local backend feeds the clinical input,
encodes "nothing answered" when none is given, refuses clinical values for an image-only artifact, and
``Model.predict`` / ``facederm-predict --clinical`` validate the answers against the card's schema."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facederm.runtime import load
from facederm.runtime.card import ModelCard, Preprocessing
from facederm.runtime.cli import main as predict_cli
from facederm.runtime.clinical import ClinicalSchema, fit_schema
from facederm.runtime.clinical_files import read_answers
from facederm.runtime.errors import ClinicalError, InvalidClinicalValueError, MetadataMismatchError
from facederm.runtime.metadata import (
    CLINICAL_INPUT_NAME,
    INPUT_NAME,
    OPENVINO_RT_INFO_PATH,
    OUTPUT_NAME,
    card_to_metadata,
)

CROP = 32
LABELS = ("BCC", "NEV", "SK")


def _schema() -> ClinicalSchema:
    answers = [{"age": "40", "bleed": "False", "gender": "MALE"}, {"age": "80", "bleed": "True", "gender": "FEMALE"}]
    return fit_schema(["age", "bleed", "gender"], answers)


def _card(schema: ClinicalSchema | None) -> ModelCard:
    return ModelCard(
        arch="tiny-two-input-net",
        labels=LABELS,
        preprocessing=Preprocessing(crop=CROP, resize_shorter=CROP),
        clinical=schema,
    )


def _net(width: int) -> Any:
    import torch

    torch.manual_seed(0)

    class TwoInputs(torch.nn.Module):
        """Image features plus a strong clinical term, so answers visibly move the probabilities."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)
            self.image_head = torch.nn.Linear(4, len(LABELS))
            self.clinical_head = torch.nn.Linear(width, len(LABELS))
            with torch.no_grad():
                self.clinical_head.weight.mul_(8.0)

        def forward(self, image: Any, clinical: Any) -> Any:
            x = torch.relu(self.conv(image / 255.0)).mean(dim=(2, 3))
            return torch.softmax(self.image_head(x) + self.clinical_head(clinical), dim=-1)

    return TwoInputs().eval()


def _export(path: Path, card: ModelCard) -> Path:
    import onnx
    import torch

    schema = card.clinical
    assert schema is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _net(schema.width),
            (torch.zeros(1, 3, CROP, CROP), torch.zeros(1, schema.width)),
            str(path),
            input_names=[INPUT_NAME, CLINICAL_INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, CLINICAL_INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            dynamo=False,
        )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, card_to_metadata(card))
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clinical-runtime")
    card = _card(_schema())
    onnx_path = _export(root / "model.onnx", card)
    out = {"onnx": onnx_path}
    try:
        import openvino as ov
    except ImportError:
        return out
    model = ov.convert_model(str(onnx_path))
    model.set_rt_info(json.dumps(card.to_dict(), sort_keys=True), list(OPENVINO_RT_INFO_PATH))
    ov.save_model(model, str(root / "model.xml"), compress_to_fp16=False)
    out["openvino"] = root / "model.xml"
    return out


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, 3, CROP, CROP)).astype(np.float32)


@pytest.fixture(params=["onnx", "openvino"])
def model(request, artifacts):
    if request.param not in artifacts:
        pytest.skip(f"{request.param} is not installed")
    options = {"precision_hint": "f32"} if request.param == "openvino" else {}
    return load(artifacts[request.param], verify=False, **options)


def test_sessions_feed_the_clinical_input(model):
    schema = model.clinical
    assert schema == _schema()
    x = _images(3)
    answers = schema.encode([{"age": 80, "bleed": True}, {"gender": "MALE"}, None])
    got = model.run(x, answers)
    reference = _net(schema.width)
    import torch

    with torch.inference_mode():
        expected = reference(torch.from_numpy(x), torch.from_numpy(answers)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # No answers: every field missing (the schema's own encoding), for every row.
    np.testing.assert_allclose(model.run(x), model.run(x, schema.missing_batch(3)), atol=1e-6)
    assert not np.allclose(got[0], model.run(x[:1])[0], atol=1e-3)


def test_chunking_keeps_each_row_with_its_answers(model, artifacts):
    schema = model.clinical
    x = _images(7)
    answers = schema.encode([{"age": 30 + 8 * i, "bleed": i % 2 == 0} for i in range(7)])
    whole = model.run(x, answers)
    small = load(next(iter(artifacts.values())), verify=False, max_batch=3)
    np.testing.assert_allclose(small.run(x, answers), whole, atol=1e-5)


def test_predict_validates_records(model, tmp_path: Path):
    image = tmp_path / "a.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(image)
    answered = model.predict(image, clinical={"age": 80, "bleed": True, "gender": "FEMALE"})
    missing = model.predict(image)
    assert answered.probabilities != missing.probabilities
    assert model.predict(image, clinical={}).probabilities == pytest.approx(missing.probabilities)
    with pytest.raises(InvalidClinicalValueError, match="'age': 'abc'"):
        model.predict(image, clinical={"age": "abc"})
    with pytest.raises(ClinicalError, match="'bleeding'"):
        model.predict(image, clinical={"bleeding": True})
    rows = model.predict([image, image], clinical=[{"age": "abc"}, {"age": 50}])
    assert rows[0].error and "'age'" in rows[0].error and rows[1].ok  # one bad record, the other still predicted
    with pytest.raises(ClinicalError, match="one record per input"):
        model.predict([image], clinical={"age": 50})


def test_image_only_artifacts_refuse_clinical_values(runtime_export, tmp_path: Path):
    model = load(runtime_export.root / "model.onnx")
    assert model.clinical is None
    with pytest.raises(ClinicalError, match="image-only"):
        model.predict(runtime_export.images[0], clinical={"age": 50})
    with pytest.raises(ClinicalError, match="image-only"):
        model._session.run(_images(1), np.zeros((1, 3), np.float32))
    plain = model.run(_images(2))  # the one-input path is unchanged
    assert plain.shape == (2, 3)


def test_card_and_graph_must_agree_on_the_clinical_input(artifacts, tmp_path: Path):
    import onnx

    proto = onnx.load(str(artifacts["onnx"]))
    onnx.helper.set_model_props(proto, card_to_metadata(_card(None)))  # a card without the schema
    onnx.save(proto, str(tmp_path / "liar.onnx"))
    with pytest.raises(MetadataMismatchError, match="'clinical' input"):
        load(tmp_path / "liar.onnx", verify=False)


def _write_images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(folder / name)
    return [folder / n for n in names]


def test_answers_file_formats(tmp_path: Path):
    schema = _schema()
    csv_file = tmp_path / "metadata.csv"
    csv_file.write_text(
        "patient_id,img_id,age,bleed,biopsed,smoke\nP1,a.png,70,True,True,False\nP2,b.png,UNK,,False,\n"
    )
    answers = read_answers(csv_file, schema)
    assert answers("x/a.png") == {"age": "70", "bleed": "True"} and answers("b.jpg") == {"age": "UNK", "bleed": ""}
    assert answers.ignored_columns == ("smoke",)  # ids and biopsed are never read, nor reported
    assert answers("c.png") is None and answers.unmatched == ["c.png"]
    by_name = tmp_path / "by_name.json"
    by_name.write_text(json.dumps({"a.png": {"age": 70}, "b.png": None}))
    assert read_answers(by_name, schema)("a.png") == {"age": 70}
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"img_id": "a.png", "bleed": True}]))
    assert read_answers(listed, schema)("a.png") == {"bleed": True}
    single = tmp_path / "one.json"
    single.write_text(json.dumps({"age": 67, "bleed": True}))
    assert read_answers(single, schema)("anything.png") == {"age": 67, "bleed": True}
    single.write_text(json.dumps({"age": "abc"}))
    with pytest.raises(InvalidClinicalValueError, match="'age'"):
        read_answers(single, schema)
    (tmp_path / "bad.csv").write_text("name,age\na.png,3\n")
    with pytest.raises(ClinicalError, match="no img_id column"):
        read_answers(tmp_path / "bad.csv", schema)


def test_predict_cli_with_a_clinical_csv(artifacts, tmp_path: Path):
    images = _write_images(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    table = tmp_path / "answers.csv"
    table.write_text("img_id,age,bleed,gender\na.png,80,True,FEMALE\nb.png,40,False,MALE\n")
    runner = CliRunner()
    args = [str(artifacts["onnx"]), *map(str, images), "--json", "--no-verify"]
    result = runner.invoke(predict_cli, [*args, "--clinical", str(table)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [Path(r["input"]).name for r in rows] == ["a.png", "b.png", "c.png"]
    without = runner.invoke(predict_cli, args)
    plain = [json.loads(line) for line in without.stdout.splitlines() if line.startswith("{")]
    assert rows[0]["probabilities"] != plain[0]["probabilities"]  # the answers were used
    assert rows[2]["probabilities"] == pytest.approx(plain[2]["probabilities"])  # c.png: no record, all missing
    assert "1 image(s) had no record" in result.stderr and "every field is predicted as missing" in without.stderr
    table.write_text("img_id,age\na.png,abc\n")
    bad = runner.invoke(predict_cli, [*args, "--clinical", str(table)])
    assert bad.exit_code != 0 and "'age': 'abc'" in bad.output


def test_predict_cli_refuses_answers_for_an_image_only_model(runtime_export, tmp_path: Path):
    answers = tmp_path / "one.json"
    answers.write_text(json.dumps({"age": 60}))
    result = CliRunner().invoke(
        predict_cli, [str(runtime_export.root), str(runtime_export.images[0]), "--clinical", str(answers)]
    )
    assert result.exit_code != 0
    assert "image-only" in result.output and len([x for x in result.output.splitlines() if x.strip()]) == 1
