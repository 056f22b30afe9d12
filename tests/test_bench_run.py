"""facederm-bench end to end on a tiny model: the schema, every output file, the baseline first, a
missing backend as a skipped row, twin rows saying so, and the CLI's one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from facederm.benchmarks.bench import BenchOptions, run_bench
from facederm.benchmarks.cli import main as bench_cli
from facederm.benchmarks.plan import BASELINE_KEY
from facederm.benchmarks.schema import BENCH_SCHEMA, BenchResults
from facederm.runtime.layout import ArtifactRecord, Manifest, Parity

ARCH = "mobilenetv3_small_050"
DATA = "synthetic:36,size=48"
SIZE = 48
FAST = dict(iterations=4, seconds=None, warmup=1, repeats=1, batch=2, tool_seconds=0.3, max_images=12)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir (random tiny net, synthetic data, patient splits) and its export to ONNX + OpenVINO fp32."""
    from facederm.export.demo import untrained_export

    return untrained_export(tmp_path_factory.mktemp("bench"), ARCH, SIZE, DATA)


def _with_twin_record(export_dir: Path, tmp_path: Path) -> Path:
    """A copy of the export whose manifest also lists a Core ML artifact validated by a twin."""
    import shutil

    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    shutil.copytree(export_dir.parent / "run", tmp_path / "run")
    manifest = Manifest.load(copy / "manifest.json")
    labels = manifest.card.labels
    parity = Parity(
        agreement=0.95,
        max_abs_prob_delta=0.02,
        macro_recall=0.5,
        macro_recall_delta=-0.004,
        per_class_recall_delta={label: 0.0 for label in labels},
        macro_recall_delta_ci=(-0.02, 0.01),
        n_images=12,
        n_patients=6,
        eval_data=DATA,
    )
    (copy / "model.mlpackage").mkdir()
    (copy / "model.mlpackage" / "x").write_text("stand-in")
    record = ArtifactRecord(
        target="coreml",
        precision="fp16",
        path="model.mlpackage",
        status="ok",
        sha256="c" * 64,
        bytes=8,
        format="mlpackage",
        validated="twin",
        validated_reason="fp16 twin in torch",
        parity=parity,
    )
    manifest.with_artifact(record).save(copy / "manifest.json")
    return copy


@pytest.fixture(scope="module")
def bench_run(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bench-out")
    return run_bench(tiny_export, BenchOptions(out=out, **FAST))


def test_results_json_has_every_field_with_its_type(bench_run) -> None:
    data = json.loads((bench_run.out_dir / "results.json").read_text())
    assert data["schema"] == BENCH_SCHEMA
    loaded = BenchResults.load(bench_run.out_dir / "results.json")  # strict: missing or mistyped fields raise
    env = loaded.environment
    assert env.cpu_model and env.logical_cpus >= 1 and env.threads == loaded.config.threads
    assert {"avx512f", "amx_tile", "avx2"} <= set(env.isa) and all(isinstance(v, bool) for v in env.isa.values())
    assert env.versions["onnxruntime"] and env.python and env.os
    assert loaded.eval is not None and loaded.eval.synthetic and loaded.eval.n_images == 12
    for row in loaded.rows:
        assert row.status in ("ok", "skipped", "failed")
        assert row.validated in ("native", "twin", "none")
    timed = [r for r in loaded.rows if r.speed_status == "ok"]
    assert timed, "nothing was timed"
    for row in timed:
        assert set(row.latency_ms) == {"p50", "p90", "p99"}
        assert row.latency_ms["p50"].median <= row.latency_ms["p99"].median
        assert row.throughput_ips.median > 0 and row.cold_load_ms.median > 0 and row.peak_rss_mb.median > 10
        assert row.size_mb and row.size_mb > 0
        assert row.accuracy is not None and 0 <= row.accuracy.macro_recall <= 1
        assert set(row.accuracy.per_class_recall) == set(loaded.eval.labels)
        assert row.accuracy.agreement is not None and len(row.accuracy.delta_macro_recall_ci) == 2


def test_baseline_is_first_and_is_the_reference(bench_run) -> None:
    rows = bench_run.results.rows
    assert rows[0].key == BASELINE_KEY and rows[0].backend == "torch" and rows[0].precision == "fp32"
    assert bench_run.results.reference == BASELINE_KEY
    assert rows[0].accuracy.agreement == 1.0 and rows[0].accuracy.delta_macro_recall == 0.0
    onnx = next(r for r in rows if r.artifact == "onnx:fp32")
    assert onnx.accuracy.agreement >= 0.9  # fp32 ONNX reproduces torch fp32


def test_backends_own_tools_sit_beside_facederm(bench_run) -> None:
    rows = {r.artifact + "@" + r.backend: r for r in bench_run.results.rows}
    ort = rows["onnx:fp32@onnxruntime"].tools
    assert [t.status for t in ort] == ["ok"] and ort[0].latency_ratio > 0
    ov = rows.get("openvino:fp32@openvino")
    if ov is not None:  # the OpenVINO export target is installed
        (tool,) = ov.tools
        assert tool.tool == "benchmark_app" and tool.status in ("ok", "skipped")
        if tool.status == "ok":
            assert tool.latency_p50_ms.median > 0 and "-infer_precision f32" in tool.command


def test_csv_markdown_and_plots_are_written(bench_run) -> None:
    out = bench_run.out_dir
    with open(out / "results.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == len(bench_run.results.rows) and lines[0]["key"] == BASELINE_KEY
    for column in ("latency_p50_ms", "throughput_ips", "peak_rss_mb", "macro_recall", "delta_macro_recall_ci_low"):
        assert column in lines[0]
    report = (out / "report.md").read_text()
    for section in ("## Setup", "## Speed", "## Accuracy", "## Targets", "## Method", "SYNTHETIC"):
        assert section in report
    for png in ("accuracy_vs_latency.png", "per_class_recall.png", "latency_distribution.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_backend_is_a_skipped_row_and_twin_rows_say_twin(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facederm.runtime.backends import get

    export_dir = _with_twin_record(tiny_export, tmp_path)
    monkeypatch.setattr(get("openvino"), "availability", classmethod(lambda cls: (False, "openvino is not installed")))
    outcome = run_bench(
        export_dir,
        BenchOptions(
            out=tmp_path / "out",
            plots=False,
            backends=["onnxruntime", "openvino", "coreml"],
            **{**FAST, "max_images": 6},
        ),
    )
    rows = {r.artifact + "@" + r.backend: r for r in outcome.results.rows}
    ov = rows["openvino:fp32@openvino"]
    assert ov.status == "skipped" and "openvino is not installed" in ov.reason and ov.latency_ms == {}
    coreml = rows["coreml:fp16@coreml"]
    assert coreml.validated == "twin" and coreml.accuracy.validated == "twin"
    assert coreml.speed_status == "skipped" and coreml.speed_reason and coreml.latency_ms == {}
    assert coreml.accuracy.delta_macro_recall == pytest.approx(-0.004) and "twin" in coreml.accuracy.source
    assert rows["onnx:fp32@onnxruntime"].status == "ok"


def test_cli_runs_and_failures_are_one_line(tiny_export: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(bench_cli, [str(tmp_path / "nothing-here"), "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1 and "nothing-here" in bad.output
    ok = runner.invoke(
        bench_cli,
        [
            str(tiny_export),
            "--out",
            str(tmp_path / "cli"),
            "--iterations",
            "3",
            "--warmup",
            "1",
            "--repeats",
            "1",
            "--batch",
            "2",
            "--backends",
            "onnxruntime",
            "--max-images",
            "6",
            "--no-plots",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "report:" in ok.output and (tmp_path / "cli" / "results.json").is_file()
    rows = BenchResults.load(tmp_path / "cli" / "results.json").rows
    assert {r.backend for r in rows} == {"onnxruntime"}  # --backends filters; the baseline left out on request
