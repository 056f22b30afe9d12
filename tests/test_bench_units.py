"""Small pieces of facederm-bench: tool output parsing, the Pareto front, the cache, the targets checker,
the demo model's cache, the environment probe."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from facederm.benchmarks.report import pareto_front
from facederm.benchmarks.schema import (
    Accuracy,
    BenchConfig,
    BenchResults,
    Environment,
    Row,
    Stat,
    ToolResult,
    describe_environment,
)
from facederm.benchmarks.targets import check_targets
from facederm.benchmarks.targets import main as targets_cli
from facederm.export.demo import cache_dir, recipe_key
from facederm.runtime.backends.openvino import BenchmarkApp

BENCHMARK_APP_OUTPUT = """
[ INFO ] Count:            6625 iterations
[ INFO ] Latency:
[ INFO ]    Median:        257.38 us
[ INFO ]    Average:       288.51 us
[ INFO ] Throughput:   3312.27 FPS
"""


def test_benchmark_app_figures_are_parsed_in_ms() -> None:
    parse = BenchmarkApp().parse  # OpenVINO's native_tool capability
    assert parse(BENCHMARK_APP_OUTPUT) == {"median_ms": pytest.approx(0.25738), "throughput_ips": 3312.27}
    assert parse("Median:        12.5 ms\nThroughput:   80.00 FPS")["median_ms"] == 12.5
    assert parse("nothing here") == {}


def test_pareto_front_keeps_only_undominated_points() -> None:
    # (latency, recall): the slow-and-worse point is dominated; the rest trade off.
    points = [(10.0, 0.80), (5.0, 0.79), (12.0, 0.70), (20.0, 0.81)]
    assert pareto_front(points) == [1, 0, 3]


def test_cache_dir_honours_the_override_then_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACEDERM_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FACEDERM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "facederm"
    assert recipe_key({"a": 1}, "1.0") != recipe_key({"a": 2}, "1.0") != recipe_key({"a": 1}, "1.1")


def test_environment_reads_isa_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 avx512f amx_tile amx_int8\n"
        "core id\t\t: 0\n\nprocessor\t: 1\nmodel name\t: Test CPU\ncore id\t\t: 0\n"
    )
    env = describe_environment(threads=2, cpuinfo=cpuinfo)
    assert env.cpu_model == "Test CPU" and env.physical_cores == 1 and env.threads == 2
    assert env.isa["avx512f"] and env.isa["amx_int8"] and not env.isa["avx512_vnni"]


def _row(
    target: str, precision: str, backend: str, p50: float, delta: float | None = None, tool_ratio: float | None = None
) -> Row:
    accuracy = None
    if delta is not None:
        accuracy = Accuracy(
            validated="native",
            source="test",
            n_images=100,
            n_patients=50,
            macro_recall=0.7,
            macro_precision=0.7,
            auc_macro=0.9,
            per_class_recall={},
            agreement=0.99,
            delta_macro_recall=delta,
            delta_macro_recall_ci=(delta - 0.01, delta + 0.01),
            per_class_recall_delta={},
            max_abs_prob_delta=0.05,
            reference="torch",
        )
    tools = (ToolResult(tool="benchmark_app", status="ok", latency_ratio=tool_ratio),) if tool_ratio else ()
    return Row(
        key=f"{target}:{precision}@{backend}/cpu",
        artifact=f"{target}:{precision}",
        target=target,
        precision=precision,
        backend=backend,
        device="cpu",
        path="x",
        status="ok",
        reason="",
        validated="native",
        latency_ms={"p50": Stat(p50, p50, p50, 1)},
        accuracy=accuracy,
        tools=tools,
    )


def _results(int8_p50: float, delta: float, tool_ratio: float) -> BenchResults:
    env = Environment(
        cpu_model="t",
        logical_cpus=2,
        physical_cores=2,
        usable_cpus=2,
        isa={},
        os="t",
        python="3",
        versions={},
        threads=2,
    )
    config = BenchConfig(
        source="x",
        source_kind="export",
        export_dir="x",
        run_dir="",
        data="",
        batch=8,
        iterations=None,
        seconds=1.0,
        warmup=1,
        threads=2,
        repeats=1,
        backends=(),
        tool_seconds=1.0,
    )
    rows = (
        _row("torch", "fp32", "torch", 30.0),
        _row("openvino", "fp32", "openvino", 10.0, tool_ratio=1.02),
        _row("openvino", "int8", "openvino", int8_p50, delta=delta, tool_ratio=tool_ratio),
    )
    return BenchResults(
        created="now", facederm_version="0", config=config, environment=env, eval=None, reference=rows[0].key, rows=rows
    )


def test_targets_pass_and_fail_from_results(tmp_path: Path) -> None:
    good = [c.passed for c in check_targets(_results(int8_p50=5.0, delta=-0.005, tool_ratio=1.05))]
    assert good == [True, True, True, True]
    bad = [c.passed for c in check_targets(_results(int8_p50=12.0, delta=-0.02, tool_ratio=1.3))]
    assert bad == [False, False, False, False]
    path = tmp_path / "results.json"
    _results(int8_p50=8.0, delta=-0.005, tool_ratio=1.0).save(path)
    result = CliRunner().invoke(targets_cli, [str(path)])
    assert result.exit_code == 1 and "[FAIL] OpenVINO int8 >= 1.5x" in result.output and "[pass]" in result.output


def test_demo_model_is_built_once_then_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from facederm.export import demo

    calls: list[str] = []

    def fake_train(recipe, out: Path, progress: bool) -> None:  # training itself is tested with the trainer
        calls.append("train")
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"w")

    def fake_export(recipe, run_dir: Path, out: Path) -> None:
        calls.append("export")
        out.mkdir(parents=True)
        (out / "manifest.json").write_text("{}")

    monkeypatch.setattr(demo, "_train", fake_train)
    monkeypatch.setattr(demo, "_export", fake_export)
    monkeypatch.setenv("FACEDERM_CACHE_DIR", str(tmp_path))
    first = demo.build_default()
    assert not first.cached and (first.export_dir / "manifest.json").is_file()
    assert first.root.is_relative_to(tmp_path) and (first.run_dir / "model.safetensors").is_file()
    second = demo.build_default()
    assert second.cached and second.root == first.root and calls == ["train", "export"]
    other = demo.build_default(recipe={**demo.RECIPE, "epochs": 3})
    assert other.root != first.root and calls == ["train", "export"] * 2
