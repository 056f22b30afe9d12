"""The ORT-format artifact (``model.ort``, ``build_ort``): a file for arm phones, so no x86-only NCHWc ops even
when it is built on an x86 CPU where ``model.onnx`` gets them at load; it runs here like the .onnx, and the
manifest options say how it was built and why it is slower on x86."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from runtime_builders import CROP, _export_onnx, tiny_card

from facederm.runtime.metadata import INPUT_NAME

pytest.importorskip("onnxruntime")


def _depthwise_onnx(path: Path) -> Path:
    """A small net with the layers NCHWc rewrites (16-channel convs, a depthwise conv, ReLU6)."""
    import torch

    torch.manual_seed(0)
    card = tiny_card()
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1),
        torch.nn.ReLU6(),
        torch.nn.Conv2d(16, 16, 3, padding=1, groups=16),
        torch.nn.ReLU6(),
        torch.nn.Conv2d(16, 32, 1),
        torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, len(card.labels)),
        torch.nn.Softmax(-1),
    ).eval()
    _export_onnx(net, path, card)
    return path


def test_ort_file_is_portable_runs_like_the_onnx_and_records_how_it_was_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    monkeypatch.delenv("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", raising=False)

    from facederm.export.targets.onnx import build_ort

    onnx_path = _depthwise_onnx(tmp_path / "model.fp32.onnx")
    ctx = SimpleNamespace(scratch=tmp_path, shared={"onnx_fp32": onnx_path}, output=tmp_path / "model.ort")
    built = build_ort(ctx)  # type: ignore[arg-type]
    data = ctx.output.read_bytes()
    assert built.format == "ort" and data[4:8] == b"ORTM"  # the ORT flatbuffer identifier
    # the operators it needs (onnxruntime's own tool, as the converter lists them for a minimal build)
    from onnxruntime.tools.ort_format_model import create_config_from_models

    create_config_from_models([ctx.output], tmp_path / "ops.config", False)
    ops = [line for line in (tmp_path / "ops.config").read_text().splitlines() if line and not line.startswith("#")]
    assert ops and not [line for line in ops if line.startswith("com.microsoft.nchwc")]  # no x86-only layout
    assert any("FusedConv" in line for line in ops)  # the Fixed optimizations are baked in
    options = built.options
    assert options["optimization"] == "fixed" and options["target_platform"] == "arm"
    assert options["optimization_level"] == "all" and "NCHWc" in options["layout"]

    x = np.random.default_rng(0).uniform(0, 255, (2, 3, CROP, CROP)).astype(np.float32)
    reference = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})[0]
    np.testing.assert_allclose(built.predict(x), reference, atol=1e-5)  # as the runtime opens it
