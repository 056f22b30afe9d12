"""Label sets: PAD codes map onto the study's names; unknown names are refused with the known ones."""

from __future__ import annotations

import pytest

from facederm.runtime.errors import ConfigError
from facederm.training.labels import FACE_REGIONS, LABEL_SETS, get_label_set, infer_label_set


def test_pad_aliases_map_to_study_names():
    pad = get_label_set("pad")
    assert pad.labels == ("AK", "BCC", "MEL", "NEV", "SCC", "SK")
    assert pad.canonical("ACK") == "AK"
    assert pad.canonical("SEK") == "SK"
    assert pad.canonical(" bcc ") == "BCC"
    assert pad.canonical("melanoma") == "MEL"  # long names are accepted too
    assert pad.canonical("LE") is None
    assert pad.canonical("") is None


def test_study_set_has_the_reference_six():
    study = get_label_set("study")
    assert set(study.labels) == {"BCC", "LE", "ROS", "SK", "AK", "SCC"}
    assert study.canonical("ACK") == "AK"
    assert study.canonical("rosacea") == "ROS"
    assert study.canonical("NEV") is None
    assert all(code in study.long_names for code in study.labels)


def test_unknown_label_set_names_the_known_ones():
    with pytest.raises(ConfigError) as info:
        get_label_set("isic")
    for name in LABEL_SETS:
        assert name in str(info.value)


def test_restrict_keeps_order_and_drops_absent_codes():
    pad = get_label_set("pad")
    small = pad.restrict({"SK", "AK", "MEL"})
    assert small.labels == ("AK", "MEL", "SK")
    assert small.canonical("SEK") == "SK"
    assert small.canonical("BCC") is None


def test_infer_label_set_prefers_a_registered_set_and_falls_back_to_the_data():
    assert infer_label_set(["ACK", "BCC"]).name == "pad"
    assert infer_label_set(["LE", "ROS"]).name == "study"
    custom = infer_label_set(["rash", "acne", "acne"], name="folder")
    assert custom.labels == ("acne", "rash")
    assert custom.canonical("ACNE") == "acne"


def test_face_regions():
    assert set(FACE_REGIONS) == {"FACE", "NOSE", "EAR", "LIP"}
