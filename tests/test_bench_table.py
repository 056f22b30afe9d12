"""The terminal table of facederm-bench: at most 120 columns from a realistic run (every target, skipped and
failed rows, long reasons), no "has no <precision>" placeholder rows, compressed rows with their speed-up over
fp32 beside the export gate's verdict, one short line per reason under it."""

from __future__ import annotations

import io

from rich.console import Console

from facederm.benchmarks.report import (
    WIDTH,
    gate_verdict,
    reasons,
    results_table,
    row_name,
    shown_rows,
    speedup,
    write_reports,
)
from facederm.benchmarks.schema import Accuracy, BenchConfig, BenchResults, Environment, EvalInfo, Row, Stat, ToolResult

LABELS = ("AK", "BCC", "MEL", "NEV", "SCC", "SK")
COREML_SKIP = (
    "speed skipped: coreml unavailable: Core ML predicts only on macOS (coremltools "
    "MLModel.predict); this is Linux: pip install coremltools on a Mac"
)
TRT_SKIP = (
    "export skipped it: TensorRT is not installed: pip install 'facederm[tensorrt]' --extra-index-url "
    "https://pypi.nvidia.com (and a CUDA GPU)"
)
GATE_AGREE = (
    "export failed: fidelity gate: agreement 93.8% of 157 inputs (10 changed), 95% lower bound 89.7% < "
    "--min-agreement 96% (only 157 inputs, < 300: an artifact that truly agrees 99% passes with probability "
    "0.35)"
)
GATE_HARM = (
    "export failed: fidelity gate: harm shown: macro recall delta -3.57 points, 95% CI [-6.10, -1.02] on 157 "
    "test images lies entirely below 0"
)
GATE_BOTH = (
    "export failed: parity gate: argmax agreement 48.7% (< --min-agreement 98%); macro recall dropped 14.36 "
    "points (> --max-drop 1); MEL recall dropped 33.33 points (> --max-class-drop MEL=1)"
)


def _stat(value: float, spread: float = 0.1) -> Stat:
    return Stat(value, value * (1 - spread), value * (1 + spread), 2)


def _accuracy(recall: float, agreement: float, delta: float, validated: str = "native") -> Accuracy:
    return Accuracy(
        validated=validated,  # type: ignore[arg-type]
        source="test split" if validated == "native" else "export parity (twin)",
        n_images=157,
        n_patients=96,
        macro_recall=recall,
        macro_precision=recall - 0.02,
        auc_macro=0.93,
        per_class_recall={c: recall for c in LABELS},
        agreement=agreement,
        delta_macro_recall=delta,
        delta_macro_recall_ci=(delta - 0.0262, delta + 0.011),
        per_class_recall_delta={c: delta for c in LABELS},
        max_abs_prob_delta=0.04,
        reference="torch:fp32@torch/cpu",
    )


def _row(
    artifact: str,
    backend: str,
    device: str = "cpu",
    *,
    p50: float | None = None,
    status: str = "ok",
    reason: str = "",
    validated: str = "native",
    accuracy: Accuracy | None = None,
    tool: tuple[str, float] | None = None,
    mb: float | None = 13.4,
    note: str = "",
) -> Row:
    target, _, precision = artifact.partition(":")
    speed: dict = {}
    if p50 is not None:
        speed = dict(
            speed_status="ok",
            compute_precision="f32",
            cold_load_ms=_stat(312.0),
            latency_ms={"p50": _stat(p50), "p90": _stat(p50 * 1.2), "p99": _stat(p50 * 1.9)},
            throughput_ips=_stat(8000 / p50),
            peak_rss_mb=_stat(1070.0),
        )
    tools = ()
    if tool is not None and p50 is not None:
        tools = (
            ToolResult(
                tool=tool[0],
                status="ok",
                command=f"{tool[0]} -m model",
                latency_p50_ms=_stat(p50 / tool[1]),
                latency_ratio=tool[1],
            ),
        )
    return Row(
        key=f"{artifact}@{backend}/{device}",
        artifact=artifact,
        target=target,
        precision=precision.split("/")[0],
        backend=backend,
        device=device,
        path=f"{target}.{precision}",
        status=status,
        reason=reason,
        validated=validated,
        note=note,
        size_mb=mb,  # type: ignore[arg-type]
        accuracy=accuracy,
        tools=tools,
        **speed,
    )


def realistic_results(isa: dict[str, bool] | None = None) -> BenchResults:
    """The demo run's rows on a Linux x86 CPU: every target exported, no TensorRT, Core ML off macOS, some
    artifacts failing the gate; plus a TensorRT Q/DQ graph timed in onnxruntime (as on a GPU host)."""
    ok = _accuracy(0.873, 1.0, 0.0)
    fp16 = _accuracy(0.873, 0.994, 0.0)
    rows = (
        _row("torch:fp32", "torch", p50=9.08, accuracy=ok, mb=13.4),
        _row("onnx:fp32", "onnxruntime", p50=1.54, accuracy=ok, tool=("ort_bare", 1.02)),
        _row("onnx:fp16", "onnxruntime", p50=1.91, accuracy=fp16, tool=("ort_bare", 1.04), mb=6.7),
        _row(
            "onnx:int8",
            "onnxruntime",
            p50=1.25,
            accuracy=_accuracy(0.861, 0.987, -0.0099),
            tool=("ort_bare", 0.99),
            mb=3.6,
        ),
        _row("onnx-mobile:fp32", "onnxruntime", p50=5.47, accuracy=ok, tool=("ort_bare", 1.01)),
        _row(
            "openvino:fp32",
            "openvino",
            "CPU",
            p50=2.41,
            accuracy=ok,
            tool=("benchmark_app", 1.13),
            note="INFERENCE_PRECISION_HINT=f32",
        ),
        _row("openvino:fp16", "openvino", "CPU", p50=1.52, accuracy=fp16, tool=("benchmark_app", 1.36), mb=6.8),
        _row(
            "openvino:int8",
            "openvino",
            "CPU",
            p50=1.01,
            accuracy=_accuracy(0.863, 0.981, -0.0099),
            tool=("benchmark_app", 0.99),
            mb=3.9,
        ),
        _row(
            "coreml:fp32",
            "-",
            "-",
            status="skipped",
            validated="none",
            mb=None,
            reason="export skipped it: coreml has no fp32 (it has fp16, int8-weights, palettize6, palettize4)",
        ),
        _row(
            "coreml:fp16",
            "coreml",
            "-",
            reason=COREML_SKIP,
            validated="twin",
            mb=6.6,
            accuracy=_accuracy(0.873, 0.994, 0.0, "twin"),
        ),
        _row(
            "coreml:int8-weights",
            "coreml",
            "-",
            reason=COREML_SKIP,
            validated="twin",
            mb=3.5,
            accuracy=_accuracy(0.880, 0.981, 0.0056, "twin"),
        ),
        _row(
            "coreml:palettize6",
            "coreml",
            "-",
            status="failed",
            validated="none",
            mb=None,  # an older export
            reason="export failed: parity gate: argmax agreement 92.0% (< --min-agreement 98%)",
        ),
        _row("openvino:int8-ac", "openvino", "CPU", status="failed", validated="native", mb=None, reason=GATE_HARM),
        _row("coreml:palettize4", "coreml", "-", status="failed", validated="none", mb=None, reason=GATE_BOTH),
        _row(
            "tensorrt:fp32",
            "-",
            "-",
            status="skipped",
            validated="none",
            mb=None,
            reason="export skipped it: tensorrt has no fp32 (it has fp16, int8)",
        ),
        _row(
            "tensorrt:fp16",
            "onnxruntime",
            p50=2.02,
            validated="twin",
            mb=6.7,
            accuracy=_accuracy(0.873, 0.994, 0.0, "twin"),
            note="TensorRT's ONNX graph run by onnxruntime: the twin's numbers, NOT TensorRT speed",
        ),
        _row("tensorrt:int8", "onnxruntime", status="failed", validated="none", mb=None, reason=GATE_AGREE),
        _row("tensorrt-engine:fp16", "-", "-", status="skipped", validated="none", mb=None, reason=TRT_SKIP),
        _row("tensorrt-engine:int8", "-", "-", status="skipped", validated="none", mb=None, reason=TRT_SKIP),
        _row(
            "tensorrt:int8/qdq-onnx",
            "onnxruntime",
            p50=3.3,
            validated="twin",
            mb=3.7,
            accuracy=_accuracy(0.86, 0.975, -0.0105, "twin"),
        ),
    )
    env = Environment(
        cpu_model="AMD EPYC 9B14",
        logical_cpus=2,
        physical_cores=1,
        usable_cpus=2,
        isa={"avx2": True, "avx512f": True, "amx_int8": True} if isa is None else isa,
        os="Linux",
        python="3.11",
        versions={"onnxruntime": "1.32.0"},
        threads=2,
    )
    config = BenchConfig(
        source="(demo)",
        source_kind="default",
        export_dir="/tmp/x/export",
        run_dir="/tmp/x/run",
        data="",
        batch=8,
        iterations=None,
        seconds=1.0,
        warmup=5,
        threads=2,
        repeats=2,
        backends=(),
        tool_seconds=1.0,
        command="facederm-bench",
    )
    ev = EvalInfo(
        spec="synthetic:800,size=128,seed=0",
        selection="test split of the run",
        synthetic=True,
        n_images=157,
        n_patients=96,
        labels=LABELS,
        class_counts={c: 26 for c in LABELS},
    )
    results = BenchResults(
        created="2025-01-01T00:00:00+00:00",
        facederm_version="0",
        config=config,
        environment=env,
        eval=ev,
        reference=rows[0].key,
        rows=rows,
    )
    return BenchResults.from_dict(results.to_dict())  # what a results.json holds (strictly validated)


def _render(results: BenchResults) -> list[str]:
    # A console far wider than the table: the table's own width is what is checked, not rich's folding.
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None, force_terminal=False)
    console.print(results_table(results))
    for line in reasons(results):
        console.print(f"  * {line}", highlight=False, markup=False)  # as the CLI prints them
    return out.getvalue().splitlines()


def test_table_fits_120_columns_and_has_no_lacking_precision_rows() -> None:
    lines = _render(realistic_results())
    too_wide = [line for line in lines if len(line) > WIDTH]
    assert not too_wide, "\n".join(too_wide)
    text = "\n".join(lines)
    assert "has no" not in text and "coreml:fp32" not in text and "tensorrt:fp32" not in text
    # every other row is there, one line each
    body = [line for line in lines if line.split(" ")[0] in {row_name(r) for r in shown_rows(realistic_results())}]
    assert len(body) == len(realistic_results().rows) - 2


def test_int8_rows_carry_their_speedup_and_gate_verdict() -> None:
    results = realistic_results()
    rows = shown_rows(results)
    by_name = {row_name(r): r for r in rows}
    assert round(speedup(rows, by_name["openvino:int8"]), 2) == 2.39  # type: ignore[arg-type]
    assert round(speedup(rows, by_name["onnx:int8"]), 2) == 1.23  # type: ignore[arg-type]
    assert gate_verdict(by_name["openvino:int8"]) == "pass"
    assert gate_verdict(by_name["tensorrt:int8@ort"]) == "FAIL agree"
    assert gate_verdict(by_name["coreml:palettize4"]) == "FAIL agree+2"
    assert gate_verdict(by_name["torch:fp32"]) == "ref"
    assert gate_verdict(by_name["tensorrt-engine:int8"]) == "-"
    assert gate_verdict(by_name["openvino:int8-ac"]) == "FAIL recall"
    lines = {line.split(" ")[0]: line for line in _render(results)}
    ov = lines["openvino:int8"].split()
    assert "2.39x" in ov and ov[ov.index("2.39x") + 1] == "pass"  # side by side
    trt = lines["tensorrt:int8@ort"]
    assert "FAIL agree" in trt
    # the TensorRT Q/DQ graph timed in onnxruntime gets no ratio (it says nothing about TensorRT's speed)
    assert speedup(rows, next(r for r in rows if "/qdq-onnx" in r.artifact)) is None


def test_reasons_are_short_grouped_and_explain_the_slower_ort_file() -> None:
    lines = reasons(realistic_results())
    assert all(len(line) <= WIDTH - 4 for line in lines)
    assert not any("has no" in line for line in lines)
    # the two Core ML twin rows share their reason; the two engine rows too
    assert sum("coreml unavailable" in line for line in lines) == 1
    assert sum("TensorRT is not installed" in line for line in lines) == 1
    assert "tensorrt:int8@ort: export gate: agree 93.8% (10 of 157 changed), lower bound 89.7% < 96%" in lines
    assert "coreml:palettize6: export gate: agree 92.0% < 98%" in lines  # an older export's wording
    assert "openvino:int8-ac: export gate: recall -3.57 pts, CI [-6.10, -1.02] < 0" in lines
    # a compressed row without a fp32 reference says why (TensorRT's graph timed in onnxruntime)
    assert "tensorrt:fp16@ort: TensorRT's graph run by onnxruntime (the twin): NOT TensorRT speed" in lines
    ort = [line for line in lines if line.startswith("onnx-mobile:fp32:")]
    assert ort and "0.28x vs onnx:fp32" in ort[0] and "NCHWc" in ort[0]
    table = "\n".join(_render(realistic_results()))
    assert "0.28x*" in table
    # on a CPU without NCHWc kernels (arm) the x86 explanation is not given
    arm = realistic_results(isa={})
    assert not any("NCHWc" in line for line in reasons(arm))
    assert "0.28x " in "\n".join(_render(arm)) and "0.28x*" not in "\n".join(_render(arm))


def test_full_reasons_stay_in_the_files(tmp_path) -> None:
    results = realistic_results()
    files = write_reports(results, tmp_path, plots=False)
    report = files["markdown"].read_text(encoding="utf-8")
    csv_text = files["csv"].read_text(encoding="utf-8")
    assert "coreml has no fp32" in report and "coreml has no fp32" in csv_text
    assert "MEL recall dropped 33.33 points" in report and "(min-max)" in report
