"""Loading exported artifacts: backend choice, every artifact kind, integrity, metadata, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from runtime_builders import RuntimeExport, rewrite_manifest

import facederm.runtime as rt
from facederm.runtime.backends.tensorrt import check_engine_compatible
from facederm.runtime.errors import (
    ArtifactError,
    BackendMismatchError,
    BackendUnavailableError,
    ConfigError,
    IncompatibleEngineError,
    IntegrityError,
    MetadataMismatchError,
    SchemaError,
    UnsafePathError,
)
from facederm.runtime.layout import Manifest

RUNNABLE_HERE = [  # (target, precision, backend that must run it)
    ("onnx", "fp32", "onnxruntime"),
    ("onnx", "fp16", "onnxruntime"),
    ("onnx", "int8", "onnxruntime"),
    ("ort", "fp32", "onnxruntime"),
    ("openvino", "fp32", "openvino"),
    ("openvino", "fp16", "openvino"),
    ("tensorrt", "fp16", "onnxruntime"),  # TensorRT-ready ONNX runs on onnxruntime too
]


def _labels(model: rt.Model, images: tuple[Path, ...]) -> list[str | None]:
    return [p.label for p in model.predict(list(images))]


def test_backends_lists_each_with_a_reason() -> None:
    infos = {b.name: b for b in rt.backends()}
    assert {"onnxruntime", "openvino", "coreml", "tensorrt"} <= set(infos)
    assert infos["onnxruntime"].available and "cpu" in infos["onnxruntime"].devices
    assert infos["openvino"].available and "CPU" in infos["openvino"].devices
    if sys.platform != "darwin":
        assert not infos["coreml"].available and "macOS" in infos["coreml"].reason
    assert ".xml" in infos["openvino"].suffixes and ".engine" in infos["tensorrt"].suffixes


def test_default_choice_is_fp32_on_a_working_backend(runtime_export: RuntimeExport) -> None:
    model = rt.load(runtime_export.root)
    assert model.artifact is not None and model.precision == "fp32"
    assert model.backend_name in ("onnxruntime", "openvino")
    assert model.labels == runtime_export.card.labels and model.card == runtime_export.card


def artifact_outputs(root: Path, images: tuple[Path, ...], target: str, precision: str) -> dict:
    """One artifact's labels and self-test next to the fp32 ONNX probabilities (plain data: may run in a subprocess)."""
    reference = rt.load(root, target="onnx", precision="fp32").predict(list(images))
    model = rt.load(root, target=target, precision=precision)
    check = model.self_test()
    return {
        "backend": model.backend_name,
        "key": model.artifact.key,
        "labels": _labels(model, images),
        "reference": [p.probabilities for p in reference],
        "self_test": check.passed,
        "tolerance": check.tolerance,
    }


@pytest.mark.parametrize(("target", "precision", "backend"), RUNNABLE_HERE)
def test_every_artifact_kind_gives_the_fp32_onnx_labels(
    runtime_export: RuntimeExport, target: str, precision: str, backend: str, run_isolated
) -> None:
    args = (runtime_export.root, runtime_export.images, target, precision)
    if precision == "int8":  # int8 kernels are native code picked per CPU: a crash fails this case, not the run
        got = run_isolated(artifact_outputs, *args, what=f"{backend} int8 inference of {target}:{precision}")
    else:
        got = artifact_outputs(*args)
    assert got["backend"] == backend and got["key"] == f"{target}:{precision}"
    assert got["self_test"]
    # Labels must match where fp32 is decisive: a top-2 margin beyond twice the tolerance the self-test grants this
    # artifact on this device (bf16 compute included). Closer calls may flip on another CPU's kernels (AMX).
    margins = [np.subtract(*sorted(p.values(), reverse=True)[:2]) for p in got["reference"]]
    decisive = [i for i, m in enumerate(margins) if m > 2 * got["tolerance"]]
    assert len(decisive) >= 3, (margins, got["tolerance"])  # the test images keep it meaningful
    reference = [max(p, key=p.get) for p in got["reference"]]
    assert [got["labels"][i] for i in decisive] == [reference[i] for i in decisive]


@pytest.mark.parametrize("relative", ["model.onnx", "model.ort", "openvino/model.xml"])
def test_a_single_artifact_file_loads_with_its_own_metadata(runtime_export: RuntimeExport, relative: str) -> None:
    model = rt.load(runtime_export.root / relative)
    assert model.labels == runtime_export.card.labels
    assert model.artifact is not None and model.artifact.path == relative  # found in the surrounding manifest


def test_openvino_precision_hint_f32_matches_onnx_closely(runtime_export: RuntimeExport) -> None:
    onnx = rt.load(runtime_export.root, backend="onnxruntime", precision="fp32")
    ov = rt.load(runtime_export.root, backend="openvino", precision="fp32", precision_hint="f32")
    x = rt.make_probe(1, 2, runtime_export.card.input_size)
    np.testing.assert_allclose(ov.run(x), onnx.run(x), atol=1e-5)
    assert "computed in" not in ov.self_test().precision


@pytest.mark.parametrize(
    ("relative", "backend", "suggested"),
    [
        ("openvino/model.xml", "onnxruntime", "openvino"),
        ("model.onnx", "openvino", "onnxruntime"),
        ("model.onnx", "tensorrt", "onnxruntime"),
    ],
)
def test_wrong_backend_for_a_file_names_the_right_one(
    runtime_export: RuntimeExport, relative: str, backend: str, suggested: str
) -> None:
    with pytest.raises(BackendMismatchError, match=suggested):
        rt.load(runtime_export.root / relative, backend=backend)


def test_backend_without_a_matching_artifact_is_refused(runtime_export: RuntimeExport) -> None:
    with pytest.raises(BackendMismatchError, match="openvino"):
        rt.load(runtime_export.root, backend="openvino", target="onnx")


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML runs on macOS")
def test_coreml_is_unavailable_off_macos(runtime_export: RuntimeExport) -> None:
    with pytest.raises(BackendUnavailableError, match="macOS"):
        rt.load(runtime_export.root, backend="coreml")
    with pytest.raises(BackendUnavailableError, match="macOS"):
        rt.load(runtime_export.root / "model.mlpackage")


def test_tensorrt_missing_says_what_to_install(runtime_export: RuntimeExport) -> None:
    if rt.backends.get("tensorrt").availability()[0]:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(BackendUnavailableError, match="pip install"):
        rt.load(runtime_export.root, backend="tensorrt")


def test_engine_from_another_tensorrt_or_gpu_is_refused() -> None:
    sidecar = {"tensorrt_version": "10.3.0", "compute_capability": "8.9"}
    check_engine_compatible(sidecar, "10.3.0.26", "8.9", "model.engine")  # same release, same GPU: fine
    with pytest.raises(IncompatibleEngineError, match="TensorRT 10.3.0.*10.8.0"):
        check_engine_compatible(sidecar, "10.8.0", "8.9", "model.engine")
    with pytest.raises(IncompatibleEngineError, match="compute capability 8.9.*9.0"):
        check_engine_compatible(sidecar, "10.3.0", "9.0", "model.engine")


def test_unknown_backend_or_option_is_a_config_error(runtime_export: RuntimeExport) -> None:
    with pytest.raises(ConfigError, match="onnxruntime"):
        rt.load(runtime_export.root, backend="tflite")
    with pytest.raises(ConfigError, match="precision_hnt"):
        rt.load(runtime_export.root, precision_hnt="f32")
    with pytest.raises(ArtifactError, match="int4"):
        rt.load(runtime_export.root, precision="int4")


def test_tampered_artifact_is_refused_naming_the_file(runtime_export: RuntimeExport, tmp_path: Path) -> None:
    root = runtime_export.copy(tmp_path / "export")
    with open(root / "openvino" / "model.bin", "ab") as f:
        f.write(b"\0")
    with pytest.raises(IntegrityError, match="model.bin"):
        rt.load(root, backend="openvino", precision="fp32")
    with pytest.raises(IntegrityError, match="model.bin"):
        rt.load(root / "openvino" / "model.xml")  # a lone file inside an export dir is checked too
    assert rt.load(root, backend="openvino", precision="fp32", verify=False).predict(runtime_export.images[0]).ok


def test_manifest_path_with_dotdot_is_refused(runtime_export: RuntimeExport, tmp_path: Path) -> None:
    root = runtime_export.copy(tmp_path / "export")
    text = (root / "manifest.json").read_text().replace('"path": "model.onnx"', '"path": "../model.onnx"')
    (root / "manifest.json").write_text(text)
    with pytest.raises(UnsafePathError, match=r"\.\."):
        rt.load(root)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_manifest_symlink_out_of_the_export_dir_is_refused(runtime_export: RuntimeExport, tmp_path: Path) -> None:
    root = runtime_export.copy(tmp_path / "export")
    outside = tmp_path / "outside.onnx"
    (root / "model.onnx").rename(outside)
    (root / "model.onnx").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="outside"):
        rt.load(root, target="onnx", precision="fp32")


def test_artifact_metadata_must_agree_with_the_manifest(runtime_export: RuntimeExport, tmp_path: Path) -> None:
    root = runtime_export.copy(tmp_path / "export")
    manifest = Manifest.load(root / "manifest.json")
    foreign = root / "model.onnx"
    foreign.write_bytes(runtime_export.foreign_onnx.read_bytes())  # other labels inside
    with pytest.raises(MetadataMismatchError, match="labels"):
        rt.load(root, target="onnx", precision="fp32", verify=False)
    assert manifest.card.labels != rt.load(runtime_export.foreign_onnx).labels


def test_broken_manifest_is_a_schema_error(runtime_export: RuntimeExport, tmp_path: Path) -> None:
    root = runtime_export.copy(tmp_path / "export")
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(SchemaError, match="manifest.json"):
        rt.load(root)


def test_self_test_detects_a_wrong_probe(runtime_export: RuntimeExport, tmp_path: Path) -> None:
    root = runtime_export.copy(tmp_path / "export")
    probe = Manifest.load(root / "manifest.json").probe
    shifted = tuple(tuple(reversed(row)) for row in probe.probabilities)  # as if the model had changed
    rewrite_manifest(root, probe=replace(probe, probabilities=shifted))
    result = rt.load(root, target="onnx", precision="fp32").self_test()
    assert not result.passed and result.max_abs_delta > result.tolerance


def test_importing_and_predicting_never_imports_torch(runtime_export: RuntimeExport) -> None:
    code = (
        "import sys, facederm.runtime as rt\n"
        "assert 'torch' not in sys.modules, 'import'\n"
        f"m = rt.load({str(runtime_export.root)!r})\n"
        f"assert m.predict({str(runtime_export.images[0])!r}).ok\n"
        f"rt.load({str(runtime_export.root)!r}, backend='openvino').self_test()\n"
        "rt.backends()\n"
        "assert 'torch' not in sys.modules, 'predict'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_graph_optimization_option_selects_onnxruntime_level_and_refuses_unknown(runtime_export):
    # "basic" runs a Q/DQ graph by its own arithmetic (the TensorRT twin's and the bench twin rows' session).
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 32, 32)).astype(np.float32)
    default = rt.load(runtime_export.root, target="onnx", precision="fp32").run(x)
    basic = rt.load(runtime_export.root, target="onnx", precision="fp32", graph_optimization="basic").run(x)
    np.testing.assert_allclose(basic, default, atol=1e-5)
    with pytest.raises(ConfigError, match="graph_optimization 'fastest'"):
        rt.load(runtime_export.root, target="onnx", precision="fp32", graph_optimization="fastest")
