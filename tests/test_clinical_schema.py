"""The clinical schema (runtime/clinical.py): fitting on training answers, encoding with missing as its own state,
one-line errors naming the field and value, refused fields (biopsed), JSON and card round trips. Torch-free."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from facederm.runtime.card import ModelCard
from facederm.runtime.clinical import (
    CLINICAL_SCHEMA,
    PAD_FIELDS,
    ClinicalField,
    ClinicalSchema,
    fit_schema,
    infer_kind,
    merge_schemas,
    parse_fields,
    translation,
)
from facederm.runtime.errors import (
    ClinicalError,
    FacedermInputError,
    ForbiddenClinicalFieldError,
    InvalidClinicalValueError,
    MetadataMismatchError,
    SchemaError,
    UnknownClinicalFieldError,
    UnsupportedSchemaVersionError,
)
from facederm.runtime.metadata import card_from_json, card_from_metadata, card_to_metadata, check_agreement

TRAIN = [
    {"age": "60", "bleed": "True", "gender": "MALE", "region": "FACE"},
    {"age": "80", "bleed": "False", "gender": "FEMALE", "region": "BACK"},
    {"age": "70", "bleed": "UNK", "gender": "", "region": "FACE"},
    {"age": "", "bleed": "True"},  # gender and region absent: missing
    None,  # nothing answered
]


@pytest.fixture
def schema() -> ClinicalSchema:
    return fit_schema(["age", "bleed", "gender", "region"], TRAIN)


def test_fit_uses_the_training_answers(schema: ClinicalSchema):
    age, bleed, gender, region = schema.fields
    assert (age.kind, age.mean, age.observed) == ("number", 70.0, 3)
    assert age.std == pytest.approx(np.std([60, 70, 80]))
    assert (bleed.kind, bleed.observed) == ("bool", 3)
    assert gender.categories == ("FEMALE", "MALE") and gender.observed == 2
    assert region.categories == ("BACK", "FACE")
    assert schema.width == 2 + 2 + 3 + 3
    assert schema.column_names[:4] == ("age", "age:missing", "bleed", "bleed:missing")
    assert schema.indicator_columns == (1, 3, 6, 9)


def test_encoding_per_kind(schema: ClinicalSchema):
    row = schema.encode_one({"age": 77, "bleed": False, "gender": "male", "region": "BACK"})
    std = schema.fields[0].std
    np.testing.assert_allclose(row, [7 / std, 0, 0, 0, 0, 1, 0, 1, 0, 0], rtol=1e-6)
    assert row.dtype == np.float32
    # Strings as a CSV writes them parse like typed values; categories match case-insensitively.
    np.testing.assert_array_equal(
        row, schema.encode_one({"age": "77", "bleed": "no", "gender": " MALE ", "region": "back"})
    )


@pytest.mark.parametrize("missing", [None, "", "  ", "UNK", "unk", "NaN", float("nan")])
def test_missing_is_its_own_state(schema: ClinicalSchema, missing):
    row = schema.encode_one({"age": missing, "bleed": missing})
    np.testing.assert_array_equal(row[:4], [0, 1, 0, 1])
    # Not the same as any answer: the mean age encodes 0 too, but without the flag; False is 0 without the flag.
    answered = schema.encode_one({"age": 70, "bleed": False})
    np.testing.assert_array_equal(answered[:4], [0, 0, 0, 0])
    np.testing.assert_array_equal(schema.encode_one({}), schema.missing_vector())
    np.testing.assert_array_equal(schema.encode([None, {}]), schema.missing_batch(2))


def test_encode_batch_shape(schema: ClinicalSchema):
    out = schema.encode([{"age": 1}, None, {"gender": "FEMALE"}])
    assert out.shape == (3, schema.width) and out.dtype == np.float32
    assert schema.encode([]).shape == (0, schema.width)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "record, error, words",
    [
        ({"age": "abc"}, InvalidClinicalValueError, ("'age'", "'abc'", "not a number")),
        ({"age": True}, InvalidClinicalValueError, ("'age'", "True")),
        ({"age": "inf"}, InvalidClinicalValueError, ("'age'", "finite")),
        ({"bleed": "maybe"}, InvalidClinicalValueError, ("'bleed'", "'maybe'", "true/false")),
        ({"gender": "OTHER"}, InvalidClinicalValueError, ("'gender'", "'OTHER'", "seen in training", "FEMALE")),
        ({"bleeding": True}, UnknownClinicalFieldError, ("'bleeding'", "did you mean 'bleed'", "age")),
        ({"biopsed": True}, ForbiddenClinicalFieldError, ("'biopsed'", "diagnosis")),
    ],
)
def test_bad_records_give_one_line_errors(schema: ClinicalSchema, record, error, words):
    with pytest.raises(error) as exc:
        schema.encode([record])
    message = _one_line(exc)
    for word in words:
        assert word in message, message
    assert isinstance(exc.value, ClinicalError) and isinstance(exc.value, FacedermInputError)


def test_a_record_must_be_a_mapping(schema: ClinicalSchema):
    with pytest.raises(InvalidClinicalValueError, match="must map field names"):
        schema.encode_one(["age", 3])  # type: ignore[arg-type]


def test_unseen_category_can_be_encoded_missing(schema: ClinicalSchema):
    row = schema.encode_one({"gender": "OTHER"}, unseen="missing")
    np.testing.assert_array_equal(row[4:7], [0, 0, 1])


@pytest.mark.parametrize("name", ["biopsed", "diagnostic", "img_id", "patient_id", "lesion_id", "BIOPSED"])
def test_label_and_id_fields_are_refused(name):
    with pytest.raises(ForbiddenClinicalFieldError) as exc:
        parse_fields(f"age,{name}")
    assert name in _one_line(exc)
    with pytest.raises(ForbiddenClinicalFieldError):
        fit_schema([name], [{name: "True"}])
    with pytest.raises(ForbiddenClinicalFieldError):
        ClinicalField(name, "bool")


def test_biopsed_message_says_why():
    with pytest.raises(ForbiddenClinicalFieldError, match="biopsy-proven"):
        parse_fields("pad,biopsed")


def test_pad_preset():
    fields = parse_fields("pad")
    assert fields == tuple(PAD_FIELDS) and len(fields) == 21
    assert "biopsed" not in fields and "diagnostic" not in fields
    assert parse_fields("age, bleed ,age") == ("age", "bleed")
    assert parse_fields("bleed,pad")[0] == "bleed" and len(parse_fields("bleed,pad")) == 21
    with pytest.raises(UnknownClinicalFieldError, match="no field named"):
        parse_fields(" , ")


def test_kinds_are_inferred_for_fields_outside_the_preset():
    assert infer_kind(["True", "false", "UNK", ""]) == "bool"
    assert infer_kind(["1", "2.5", ""]) == "number"
    assert infer_kind(["0", "1"]) == "number"
    assert infer_kind(["A", "3"]) == "category"
    schema = fit_schema(["score", "flag", "colour"], [{"score": "1", "flag": "yes", "colour": "red"}])
    assert [f.kind for f in schema.fields] == ["number", "bool", "category"]
    assert schema.fields[0].std == 1.0  # one answer: no spread to standardize by


def test_a_value_that_does_not_fit_its_preset_kind_fails_fitting():
    with pytest.raises(InvalidClinicalValueError, match="'age'.*'old'"):
        fit_schema(["age"], [{"age": "old"}])


def test_a_field_nobody_answered_encodes_missing_only():
    schema = fit_schema(["age", "smoke"], [{"age": "50"}, {"age": "60"}])
    assert schema.fields[1].observed == 0
    np.testing.assert_array_equal(schema.encode_one({"smoke": None})[2:], [0, 1])


def test_mask_sets_fields_missing(schema: ClinicalSchema):
    encoded = schema.encode([{"age": 60, "bleed": True, "gender": "MALE", "region": "FACE"}] * 2)
    drop = np.array([[True, False, True, False], [False, False, False, False]])
    masked = schema.mask(encoded, drop)
    np.testing.assert_array_equal(masked[1], encoded[1])
    expected = schema.encode_one({"bleed": True, "region": "FACE"})
    np.testing.assert_array_equal(masked[0], expected)
    np.testing.assert_array_equal(schema.missing_indicators(masked), [[1, 0, 1, 0], [0, 0, 0, 0]])


def test_check_array(schema: ClinicalSchema):
    ok = schema.check_array(np.zeros((2, schema.width), dtype=np.float64), 2)
    assert ok.dtype == np.float32 and ok.flags.c_contiguous
    with pytest.raises(InvalidClinicalValueError, match=r"expected shape \(3, 10\)"):
        schema.check_array(np.zeros((2, schema.width)), 3)
    with pytest.raises(InvalidClinicalValueError, match="finite"):
        schema.check_array(np.full((1, schema.width), np.nan), 1)


# --- JSON, card and artifact metadata -------------------------------------------------------------------
def _json(data):
    return json.loads(json.dumps(data))


def test_schema_round_trips_through_json(schema: ClinicalSchema):
    data = _json(schema.to_dict())
    assert data["schema"] == CLINICAL_SCHEMA and [f["name"] for f in data["fields"]] == list(schema.names)
    again = ClinicalSchema.from_dict(data)
    assert again == schema
    np.testing.assert_array_equal(again.encode(TRAIN), schema.encode(TRAIN))


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda d: d.update(schema="facederm.clinical/9"), UnsupportedSchemaVersionError, "clinical/9"),
        (lambda d: d.pop("schema"), SchemaError, "missing field 'schema'"),
        (lambda d: d.update(extra=1), SchemaError, "unknown field"),
        (lambda d: d["fields"][0].update(kind="text"), SchemaError, "kind"),
        (lambda d: d["fields"][0].update(std=0), SchemaError, "std > 0"),
        (lambda d: d["fields"][2].update(categories=["A", "a"]), SchemaError, "distinct"),
        (lambda d: d["fields"].append(dict(d["fields"][0])), SchemaError, "duplicate"),
        (lambda d: d["fields"][1].update(name="biopsed"), SchemaError, "biopsed.*refused"),
        (lambda d: d.update(fields=[]), SchemaError, "at least one field"),
    ],
)
def test_malformed_schema_json_is_refused(schema: ClinicalSchema, change, error, match):
    data = _json(schema.to_dict())
    change(data)
    with pytest.raises(error, match=match):
        ClinicalSchema.from_dict(data)


def test_card_carries_the_schema(make_card, schema: ClinicalSchema):
    card = make_card(clinical=schema)
    again = ModelCard.from_dict(_json(card.to_dict()))
    assert again == card and again.clinical == schema


def test_image_only_card_json_has_no_clinical_entry(make_card):
    card = make_card()
    assert card.clinical is None and "clinical" not in card.to_dict()
    assert ModelCard.from_dict(_json(card.to_dict())) == card


def test_schema_round_trips_through_artifact_metadata(make_card, schema: ClinicalSchema):
    card = make_card(clinical=schema)
    assert card_from_metadata(card_to_metadata(card), "model.onnx").clinical == schema  # ONNX, Core ML
    assert card_from_json(json.dumps(card.to_dict()), "model.xml").clinical == schema  # OpenVINO rt_info
    assert card_from_json(_json(card.to_dict()), "model.engine.json").clinical == schema  # TensorRT sidecar


def test_artifact_and_manifest_must_agree_on_the_schema(make_card, schema: ClinicalSchema):
    check_agreement(make_card(clinical=schema), make_card(clinical=schema), "model.onnx")
    with pytest.raises(MetadataMismatchError, match="clinical schema"):
        check_agreement(make_card(), make_card(clinical=schema), "model.onnx")
    other = fit_schema(["age"], TRAIN)
    with pytest.raises(MetadataMismatchError, match="age vs age, bleed"):
        check_agreement(make_card(clinical=other), make_card(clinical=schema), "model.onnx")


def test_schema_module_is_torch_free():
    code = "import sys, facederm.runtime.clinical, facederm.runtime.card; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- one encoding for members fitted on different images (a clinical fold ensemble) ------------------------------
OTHER = [
    {"age": "30", "bleed": "False", "gender": "MALE", "region": "NOSE"},
    {"age": "45", "bleed": "True", "gender": "MALE", "region": "ARM"},
    {"age": "", "bleed": "", "gender": "", "region": "face"},
]
RECORDS = [
    {"age": 67, "bleed": True, "gender": "FEMALE", "region": "NOSE"},  # NOSE: unseen by the first schema
    {"age": "33", "region": "ARM"},
    {"region": "back", "bleed": False},
    {"gender": "MALE"},
    None,
    {},
]


def test_translation_maps_one_encoding_onto_each_members(schema: ClinicalSchema):
    other = fit_schema(["age", "bleed", "gender", "region"], OTHER)
    merged = merge_schemas([schema, other])
    assert merged.fields[0] == schema.fields[0]  # the first schema's number scaling
    assert [f.categories for f in merged.fields if f.kind == "category"] == [
        ("FEMALE", "MALE"),
        ("ARM", "BACK", "FACE", "NOSE"),
    ]
    encoded = merged.encode(RECORDS)
    for member in (schema, other, merged):
        weight, bias = translation(merged, member)
        expected = member.encode(RECORDS, unseen="missing")
        np.testing.assert_allclose(encoded @ weight.T + bias, expected, atol=1e-5)
        np.testing.assert_allclose(weight @ merged.missing_vector() + bias, member.missing_vector(), atol=1e-6)


def test_schemas_with_other_fields_cannot_be_merged(schema: ClinicalSchema):
    with pytest.raises(SchemaError, match="differ"):
        merge_schemas([schema, fit_schema(["age", "bleed"], TRAIN)])
    with pytest.raises(SchemaError, match="differ"):
        translation(schema, fit_schema(["age", "bleed", "gender", "region"], TRAIN, kinds={"age": "category"}))
