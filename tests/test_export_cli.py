"""Target names, a missing backend, and an export killed midway."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from facederm.export import ExportOptions, export_run, registry
from facederm.export.cli import main
from facederm.runtime.errors import ConfigError
from facederm.runtime.layout import Manifest, file_digest


@pytest.mark.parametrize(
    "alias, name",
    [
        ("ort", "onnx"),
        ("ov", "openvino"),
        ("ios", "coreml"),
        ("mlpackage", "coreml"),
        ("trt", "tensorrt"),
        ("engine", "tensorrt"),
        ("ONNX", "onnx"),
    ],
)
def test_aliases(alias, name):
    assert registry.get_target(alias).name == name


def test_all_expands_to_every_target_once():
    names = [t.name for t in registry.resolve_targets(["all", "onnx", "ov"])]
    assert names == ["onnx", "openvino", "coreml", "tensorrt"] or sorted(names) == sorted(set(names))
    assert {"onnx", "openvino", "coreml", "tensorrt"} <= set(names)


def test_misspelt_target_gets_did_you_mean(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'openvino'"):
        registry.get_target("openvnio")
    result = CliRunner().invoke(main, [str(tmp_path), "--target", "tensorrrt", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean 'tensorrt'" in lines[0] and "Traceback" not in result.output


def test_unknown_precision_is_a_config_error(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match="unknown precision"):
        export_run(tiny_run, out_dir=tmp_path, targets=["onnx"], precisions=["int3"])


def test_missing_dependency_skips_that_target_and_the_others_go_on(tiny_run, tmp_path, monkeypatch):
    target = registry.get_target("openvino")
    missing = dataclasses.replace(target, requires=(("facederm_no_such_module", "openvino", "OpenVINO export"),))
    monkeypatch.setitem(registry._TARGETS, "openvino", missing)
    result = export_run(tiny_run, out_dir=tmp_path / "out", targets=["onnx", "openvino"], precisions=["fp32"])
    by_key = {r.key: r for r in result.records}
    assert by_key["openvino:fp32"].status == "skipped"
    assert "pip install 'facederm[openvino]'" in by_key["openvino:fp32"].error
    assert by_key["onnx:fp32"].status == "ok" and result.ok


def _ok_records_are_complete(out_dir):
    manifest = Manifest.load(out_dir / "manifest.json")
    for record in manifest.ok_artifacts():
        assert file_digest(out_dir / record.path) == (record.sha256, record.bytes), record.key
        for extra in record.files:
            assert file_digest(out_dir / extra.path) == (extra.sha256, extra.bytes)
    return manifest


def test_killed_export_lists_only_complete_artifacts_and_a_rerun_completes(tiny_run, tmp_path):
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "facederm.export.cli",
        str(tiny_run),
        "--target",
        "onnx",
        "--target",
        "openvino",
        "--precision",
        "fp32",
        "--precision",
        "fp16",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:  # kill right after the first ok artifact
            manifest = out / "manifest.json"
            if manifest.is_file():
                try:
                    if any(a["status"] == "ok" for a in json.loads(manifest.read_text())["artifacts"]):
                        break
                except (ValueError, KeyError):
                    pass
            time.sleep(0.05)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    manifest = _ok_records_are_complete(out)
    if killed:
        assert len(manifest.ok_artifacts()) < 5, "the export was killed before it finished"
    result = export_run(tiny_run, out_dir=out, targets=["onnx", "openvino"], precisions=["fp32", "fp16"])
    assert result.ok and len(result.manifest.ok_artifacts()) == 5
    _ok_records_are_complete(out)
    assert not list(out.glob(".facederm-tmp-*"))


def test_unknown_coreml_target_is_a_config_error(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match="coreml-target"):
        export_run(tiny_run, out_dir=tmp_path, targets=["coreml"], coreml_target="iOS12")


def int8_search_record(tiny_run, out):
    """Runs in its own process (ONNX Runtime int8 kernels are native code picked per CPU)."""
    result = export_run(
        tiny_run,
        out_dir=out,
        targets=["onnx"],
        precisions=["int8"],
        int8_search=True,
        calib_size=24,
        max_drop=100.0,
        min_agreement=0.0,
    )
    return result.manifest.find("onnx", "int8")


def test_int8_search_records_both_candidates(tiny_run, tmp_path, run_isolated):
    record = run_isolated(int8_search_record, tiny_run, tmp_path / "out", what="ONNX Runtime int8 search export")
    assert record.status == "ok", record.error
    assert set(record.options["candidates"]) == {"qdq-u8s8-per-channel", "qdq-u8s8-per-tensor"}
    assert record.options["scheme"] in record.options["candidates"]


# -- ExportOptions: validated once, carried into the manifest -------------------------------------------------
@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"calib_size": 0}, "--calib-size"),
        ({"eval_views": 7}, "--eval-views"),
        ({"min_agreement": 101}, "--min-agreement"),
        ({"max_drop": -1}, "--max-drop"),
        ({"coreml_target": "iOS12"}, "--coreml-target"),
        ({"batch_size": 0}, "--batch-size"),
        ({"targets": ()}, "target"),
    ],
)
def test_export_options_refuse_bad_values_naming_the_flag(change, flag):
    with pytest.raises(ConfigError, match=flag):
        ExportOptions(**change)


def test_export_options_normalise_and_refuse_unknown_names():
    options = ExportOptions(targets="onnx", precisions=["int8"], coreml_target="ios18", eval_views="2")
    assert (options.targets, options.precisions, options.coreml_target, options.eval_views) == (
        ("onnx",),
        ("int8",),
        "iOS18",
        2,
    )
    with pytest.raises(ConfigError, match="unknown export option.*calib_sise"):
        options.replace(calib_sise=10)


def test_manifest_records_the_export_options(tiny_run, tmp_path):
    options = ExportOptions(targets=("onnx",), precisions=("fp32",), batch_size=4, seed=3)
    result = export_run(tiny_run, out_dir=tmp_path / "out", options=options, eval_views=1)
    saved = Manifest.load(result.manifest_path).options
    assert saved == {**options.replace(eval_views=1).to_dict()}
    assert saved["targets"] == ["onnx"] and saved["batch_size"] == 4 and saved["eval_views"] == 1


def test_list_targets_shows_every_registered_target_and_its_declaration():
    result = CliRunner().invoke(main, ["--list-targets"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for target in registry.all_targets():
        assert target.name in result.output
    assert "metadata_props" in result.output and "int8*" in result.output


def test_cli_without_run_dir_or_target_says_what_is_missing(tmp_path):
    result = CliRunner().invoke(main, ["--out", str(tmp_path)])
    assert result.exit_code == 2 and "missing RUN_DIR, --target" in result.output
