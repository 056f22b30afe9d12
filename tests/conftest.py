"""Shared fixtures. Keep this file small: helpers that only one test file needs live in that file."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from facederm.runtime.card import ArtifactRecord, FileEntry, Manifest, ModelCard, Preprocessing

SHA_A = "a" * 64  # a well-formed sha256 for records whose files are not checked
SHA_B = "b" * 64


@pytest.fixture
def make_card() -> Callable[..., ModelCard]:
    """A factory of valid model cards; keyword arguments override fields."""

    def make(**overrides: Any) -> ModelCard:
        fields: dict[str, Any] = dict(
            arch="mobilenetv3_small_050",
            labels=("BCC", "SCC", "AK"),
            preprocessing=Preprocessing(crop=32, resize_shorter=36),
            label_names={"BCC": "Basal cell carcinoma"},
            seed=7,
        )
        fields.update(overrides)
        return ModelCard(**fields)

    return make


@pytest.fixture
def make_manifest(make_card: Callable[..., ModelCard]) -> Callable[..., Manifest]:
    """A factory of valid manifests with an ONNX and an OpenVINO artifact (the latter with a .bin file)."""

    def make(**overrides: Any) -> Manifest:
        fields: dict[str, Any] = dict(
            card=make_card(),
            artifacts=(
                ArtifactRecord(target="onnx", precision="fp32", path="model.onnx", status="ok", sha256=SHA_A,
                               bytes=10, format="onnx"),
                ArtifactRecord(target="openvino", precision="fp32", path="openvino/model.xml", status="ok",
                               sha256=SHA_B, bytes=5, format="openvino",
                               files=(FileEntry(path="openvino/model.bin", sha256=SHA_A, bytes=3),)),
            ),
            facederm_version="0.1.0",
        )
        fields.update(overrides)
        return Manifest(**fields)

    return make
