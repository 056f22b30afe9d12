"""The app samples (examples/ios, examples/android) use the constants of the card facederm exports.

They cannot be compiled here (no Xcode, no Android SDK); what can be checked is that the values they hard-code
(input/output names, input size, resize, mean/std, label order, metadata keys) equal the card that training and
export produce for their reference model (EfficientNet-Lite0 at 300x300 on the PAD label set), read back from the
metadata an export embeds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from facederm.runtime.card import NOT_A_DIAGNOSIS, ModelCard
from facederm.runtime.metadata import (
    INPUT_NAME,
    LABELS_KEY,
    OUTPUT_NAME,
    PREPROCESSING_KEY,
    card_from_metadata,
    card_to_metadata,
)

ROOT = Path(__file__).resolve().parents[1]
SWIFT = ROOT / "examples" / "ios" / "FacedermClassifier.swift"
KOTLIN = ROOT / "examples" / "android" / "FacedermClassifier.kt"
PAD_DIR = ROOT.parent / "shared" / "data" / "pad-ufes-20-subset"


@pytest.fixture(scope="module")
def exported_card() -> ModelCard:
    """The card an export of the reference model carries (built as training builds it, then through metadata)."""
    from facederm.training.labels import get_label_set
    from facederm.training.models import default_preprocessing

    card = ModelCard(
        arch="efficientnet_lite0",
        labels=get_label_set("pad").labels,
        preprocessing=default_preprocessing("efficientnet_lite0", 300),
    )
    return card_from_metadata(card_to_metadata(card), "reference export")


def _swift(name: str) -> str:
    match = re.search(rf"static let {name}(?:: \[\w+\])? = (.+)", SWIFT.read_text())
    assert match, f"{SWIFT.name}: no constant {name}"
    return match.group(1).split("//")[0].strip()


def _kotlin(name: str) -> str:
    match = re.search(rf"(?:const )?val {name} = (.+)", KOTLIN.read_text())
    assert match, f"{KOTLIN.name}: no constant {name}"
    return match.group(1).split("//")[0].strip()


def _floats(text: str) -> list[float]:
    return [float(v.rstrip("f")) for v in re.findall(r"-?\d+(?:\.\d+)?f?", text)]


def _strings(text: str) -> list[str]:
    return re.findall(r'"([^"]*)"', text)


def test_ios_sample_constants_equal_the_exported_card(exported_card: ModelCard):
    pre = exported_card.preprocessing
    assert json.loads(_swift("inputName")) == INPUT_NAME
    assert json.loads(_swift("outputName")) == OUTPUT_NAME
    assert int(_swift("inputSize")) == pre.crop and int(_swift("resizeShorter")) == pre.resize_shorter
    assert _floats(_swift("mean")) == list(pre.mean) and _floats(_swift("std")) == list(pre.std)
    assert _strings(_swift("labels")) == list(exported_card.labels)
    assert json.loads(_swift("notADiagnosis")) == NOT_A_DIAGNOSIS
    # The Core ML target's classifier names (export/targets/coreml.py): predicted label + the probabilities dict.
    coreml = (ROOT / "export" / "targets" / "coreml.py").read_text()
    assert f"predicted_feature_name={_swift('predictedFeatureName')}" in coreml
    assert ".centerCrop" in SWIFT.read_text() and pre.interpolation == "bilinear"


def test_android_sample_constants_equal_the_exported_card(exported_card: ModelCard):
    pre = exported_card.preprocessing
    assert json.loads(_kotlin("INPUT_NAME")) == INPUT_NAME
    assert json.loads(_kotlin("OUTPUT_NAME")) == OUTPUT_NAME
    assert int(_kotlin("INPUT_SIZE")) == pre.crop and int(_kotlin("RESIZE_SHORTER")) == pre.resize_shorter
    assert _floats(_kotlin("MEAN")) == list(pre.mean) and _floats(_kotlin("STD")) == list(pre.std)
    assert _strings(_kotlin("LABELS")) == list(exported_card.labels)
    assert json.loads(_kotlin("METADATA_LABELS")) == LABELS_KEY
    assert json.loads(_kotlin("METADATA_PREPROCESSING")) == PREPROCESSING_KEY
    assert json.loads(_kotlin("NOT_A_DIAGNOSIS")) == NOT_A_DIAGNOSIS
    assert '"interpolation") == "bilinear"' in KOTLIN.read_text() and pre.interpolation == "bilinear"


@pytest.mark.realdata
def test_reference_labels_are_the_pad_subsets(exported_card: ModelCard):
    """A run trained on the PAD subset records its data set's label order: the one the samples hard-code."""
    if not (PAD_DIR / "metadata.csv").is_file():
        pytest.skip(f"{PAD_DIR} is absent")
    from facederm.training.data import open_dataset

    assert tuple(open_dataset(f"pad-ufes-20:{PAD_DIR}").labels) == exported_card.labels
