"""Model card and manifest: JSON round-trips, and refusal of every malformed file with a message
naming the offending field (issue 2 item 3, issue 7 item 2)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from facederm.runtime.card import CARD_SCHEMA, ModelCard
from facederm.runtime.errors import SchemaError, UnsafePathError, UnsupportedSchemaVersionError
from facederm.runtime.layout import MANIFEST_SCHEMA, ArtifactRecord, FileEntry, Manifest


def _json_round_trip(data: Any) -> Any:
    """What a file on disk gives back: tuples become lists, everything goes through text."""
    return json.loads(json.dumps(data))


# --- round trips ----------------------------------------------------------------------------------
def test_card_round_trips_through_json(make_card):
    card = make_card(git_commit="abc123", wall_time_s=12.5, data={"counts": {"BCC": 3}})
    again = ModelCard.from_dict(_json_round_trip(card.to_dict()))
    assert again == card
    assert again.labels == ("BCC", "SCC", "AK")  # order kept: class indices depend on it
    assert isinstance(again.preprocessing.mean, tuple)


def test_card_save_load(tmp_path: Path, make_card):
    card = make_card()
    card.save(tmp_path / "config.json")
    assert ModelCard.load(tmp_path / "config.json") == card
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left its temporary file behind"


def test_manifest_round_trips_through_json(tmp_path: Path, make_manifest):
    manifest = make_manifest()
    assert Manifest.from_dict(_json_round_trip(manifest.to_dict())) == manifest
    manifest.save(tmp_path / "manifest.json")
    loaded = Manifest.load(tmp_path / "manifest.json")
    assert loaded == manifest
    assert loaded.find("openvino").files[0].path == "openvino/model.bin"
    assert [a.key for a in loaded.ok_artifacts()] == ["onnx:fp32", "openvino:fp32"]


# --- schema versions ------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["facederm.card/2", "facederm.card/0", "other/1", ""])
def test_card_unknown_schema_version_refused(make_card, version):
    data = make_card().to_dict()
    data["schema"] = version
    with pytest.raises(UnsupportedSchemaVersionError, match="schema"):
        ModelCard.from_dict(data)


def test_manifest_unknown_schema_versions_refused(make_manifest):
    data = make_manifest().to_dict()
    data["schema"] = "facederm.manifest/99"
    with pytest.raises(UnsupportedSchemaVersionError, match="manifest/99"):
        Manifest.from_dict(data)
    data = make_manifest().to_dict()
    data["card"]["schema"] = "facederm.card/99"
    with pytest.raises(UnsupportedSchemaVersionError, match=r"card.*card/99"):
        Manifest.from_dict(data)


def test_missing_schema_field_refused(make_card, make_manifest):
    data = make_card().to_dict()
    del data["schema"]
    with pytest.raises(SchemaError, match="schema"):
        ModelCard.from_dict(data)
    data = make_manifest().to_dict()
    del data["schema"]
    with pytest.raises(SchemaError, match="schema"):
        Manifest.from_dict(data)


# --- missing fields, wrong types, unknown fields ----------------------------------------------------
@pytest.mark.parametrize("field", ["arch", "labels", "preprocessing"])
def test_card_missing_required_field_named(make_card, field):
    data = make_card().to_dict()
    del data[field]
    with pytest.raises(SchemaError, match=f"'{field}'"):
        ModelCard.from_dict(data)


def test_nested_missing_field_named(make_card):
    data = make_card().to_dict()
    del data["preprocessing"]["crop"]
    with pytest.raises(SchemaError, match=r"preprocessing.*'crop'"):
        ModelCard.from_dict(data)


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("arch",), 3, "arch"),
        (("labels",), "BCC,SCC", "labels"),
        (("labels",), ["BCC", 2], r"labels\[1\]"),
        (("seed",), "7", "seed"),
        (("seed",), True, "seed"),  # bool is an int subclass in Python, not in the schema
        (("seed",), 1.5, "seed"),
        (("preprocessing", "crop"), 32.0, r"preprocessing\.crop"),
        (("preprocessing", "mean"), "0.5", r"preprocessing\.mean"),
        (("preprocessing", "interpolation"), "lanczos", r"preprocessing\.interpolation"),
        (("label_names",), ["BCC"], "label_names"),
        (("label_names", "BCC"), 1, r"label_names\.BCC"),
        (("referral",), None, "referral"),
        (("wall_time_s",), "fast", "wall_time_s"),
    ],
)
def test_card_wrong_type_refused_naming_field(make_card, path, value, named):
    data = make_card().to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SchemaError, match=named):
        ModelCard.from_dict(data)


def test_card_unknown_field_refused(make_card):
    data = make_card().to_dict()
    data["lables"] = ["typo"]
    with pytest.raises(SchemaError, match="lables"):
        ModelCard.from_dict(data)


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("artifacts", 0, "status"), "maybe", "status"),
        (("artifacts", 0, "bytes"), "10", "bytes"),
        (("artifacts", 1, "files"), {"path": "x"}, "files"),
        (("artifacts", 0, "validated"), "yes", "validated"),
        (("card",), [], "card"),
        (("artifacts",), {}, "artifacts"),
    ],
)
def test_manifest_wrong_type_refused_naming_field(make_manifest, path, value, named):
    data = make_manifest().to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SchemaError, match=named):
        Manifest.from_dict(data)


@pytest.mark.parametrize("data", [None, [], "manifest", 3, 2.5, True])
def test_non_object_documents_refused(data):
    with pytest.raises(SchemaError, match="expected"):
        Manifest.from_dict(data)
    with pytest.raises(SchemaError, match="expected"):
        ModelCard.from_dict(data)


# --- labels -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["BCC", "SCC", "BCC"], "duplicate.*BCC"),
        (["BCC", ""], "non-empty"),
        (["BCC", "   "], "non-empty"),
        (["BCC"], "at least 2"),
        ([], "at least 2"),
    ],
)
def test_bad_labels_refused(make_card, labels, message):
    data = make_card().to_dict()
    data["labels"] = labels
    data["label_names"] = {}
    with pytest.raises(SchemaError, match=f"labels.*{message}"):
        ModelCard.from_dict(data)


def test_label_names_and_referral_must_name_known_labels(make_card):
    data = make_card().to_dict()
    data["label_names"] = {"MEL": "Melanoma"}
    with pytest.raises(SchemaError, match="label_names.*MEL"):
        ModelCard.from_dict(data)
    data = make_card().to_dict()
    data["referral"] = {"labels": ["MEL"], "threshold": 0.5}
    with pytest.raises(SchemaError, match="referral.*MEL"):
        ModelCard.from_dict(data)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_referral_threshold_out_of_range_refused(make_card, threshold):
    data = make_card().to_dict()
    data["referral"] = {"labels": ["BCC"], "threshold": threshold}
    with pytest.raises(SchemaError, match="threshold"):
        ModelCard.from_dict(data)


@pytest.mark.parametrize(
    ("pre", "message"),
    [
        ({"crop": 4, "resize_shorter": 4}, "crop"),
        ({"crop": 64, "resize_shorter": 32}, "resize_shorter"),
        ({"crop": 32, "resize_shorter": 32, "mean": [0.5, 0.5]}, "mean"),
        ({"crop": 32, "resize_shorter": 32, "std": [0.5, 0.0, 0.5]}, "std"),
    ],
)
def test_bad_preprocessing_refused(make_card, pre, message):
    data = make_card().to_dict()
    data["preprocessing"] = pre
    with pytest.raises(SchemaError, match=message):
        ModelCard.from_dict(data)


def test_duplicate_artifacts_refused(make_manifest):
    data = make_manifest().to_dict()
    data["artifacts"].append(copy.deepcopy(data["artifacts"][0]))
    with pytest.raises(SchemaError, match="duplicate.*onnx:fp32"):
        Manifest.from_dict(data)


# --- file entries: paths and digests ------------------------------------------------------------------
UNSAFE_PATHS = [
    "/etc/passwd",
    "../model.onnx",
    "openvino/../../secret",
    "a/..",
    "C:/model.onnx",
    "c:model.onnx",
    "openvino\\model.bin",
    "..\\..\\secret",
    "\\\\server\\share\\model.onnx",
    "",
    "a//b",
    "./model.onnx",
    "openvino/",
    "model.onnx\x00.txt",
]


@pytest.mark.parametrize("bad", UNSAFE_PATHS)
def test_unsafe_artifact_path_refused(make_manifest, bad):
    data = make_manifest().to_dict()
    data["artifacts"][0]["path"] = bad
    with pytest.raises(UnsafePathError):
        Manifest.from_dict(data)


@pytest.mark.parametrize("bad", UNSAFE_PATHS)
def test_unsafe_file_entry_path_refused(make_manifest, bad):
    data = make_manifest().to_dict()
    data["artifacts"][1]["files"][0]["path"] = bad
    with pytest.raises(UnsafePathError) as info:
        Manifest.from_dict(data)
    assert repr(bad) in str(info.value) or "path" in str(info.value)


@pytest.mark.parametrize("good", ["model.onnx", "openvino/model.xml", "model.mlpackage", "a.b/c..d"])
def test_safe_relative_paths_accepted(good):
    assert ArtifactRecord(target="t", precision="fp32", path=good, status="ok", sha256="0" * 64).path == good


@pytest.mark.parametrize(
    "sha", ["", "abc", "A" * 64, "g" * 64, "a" * 63, "a" * 65, " " + "a" * 63, "sha256:" + "a" * 57]
)
def test_bad_sha256_refused_naming_file(make_manifest, sha):
    data = make_manifest().to_dict()
    data["artifacts"][0]["sha256"] = sha
    with pytest.raises(SchemaError, match=r"model\.onnx.*sha256"):
        Manifest.from_dict(data)
    data = make_manifest().to_dict()
    data["artifacts"][1]["files"][0]["sha256"] = sha
    with pytest.raises(SchemaError, match=r"model\.bin.*sha256"):
        Manifest.from_dict(data)


def test_failed_artifact_needs_no_digest_but_keeps_its_error():
    record = ArtifactRecord(
        target="coreml", precision="fp16", path="model.mlpackage", status="failed", error="converter crashed"
    )
    assert record.sha256 == ""
    with pytest.raises(SchemaError, match="sha256"):
        ArtifactRecord(target="coreml", precision="fp16", path="model.mlpackage", status="ok")


def test_file_entry_checks_itself():
    with pytest.raises(UnsafePathError):
        FileEntry(path="../x.bin", sha256="0" * 64, bytes=1)
    with pytest.raises(SchemaError, match="sha256"):
        FileEntry(path="x.bin", sha256="0" * 10, bytes=1)


# --- files on disk --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text", ['{"schema": "facederm.manifest/1", ', "", "not json", "{'single': 'quotes'}", '{"a": NaN']
)
def test_malformed_json_file_refused_naming_it(tmp_path: Path, text):
    path = tmp_path / "manifest.json"
    path.write_text(text)
    with pytest.raises(SchemaError, match="manifest.json"):
        Manifest.load(path)
    with pytest.raises(SchemaError, match="manifest.json"):
        ModelCard.load(path)


def test_unreadable_and_missing_json_files_refused(tmp_path: Path):
    with pytest.raises(SchemaError, match="nothere.json"):
        Manifest.load(tmp_path / "nothere.json")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(SchemaError, match="binary.json"):
        ModelCard.load(binary)
    with pytest.raises(SchemaError, match="dir.json"):
        (tmp_path / "dir.json").mkdir()
        Manifest.load(tmp_path / "dir.json")


def test_card_error_from_file_names_the_file(tmp_path: Path, make_card):
    data = make_card().to_dict()
    data["seed"] = "seven"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError, match=r"config\.json.*seed"):
        ModelCard.load(path)


def test_schema_constants_are_versioned():
    # The reader refuses anything else, so the constants must carry a version a later facederm can bump.
    assert CARD_SCHEMA.endswith("/1") and MANIFEST_SCHEMA.endswith("/1")
