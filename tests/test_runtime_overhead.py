"""benchmarks/runtime_overhead.py runs end to end on a small model and reports both backends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from facederm.benchmarks.runtime_overhead import run


def test_overhead_benchmark_reports_both_backends(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    result = run(arch="mobilenetv3_small_050", size=64, iterations=6, warmup=1, threads=1, out=out)
    assert json.loads(out.read_text()) == result
    assert set(result["backends"]) == {"onnxruntime", "openvino"}
    for row in result["backends"].values():
        assert row["raw_ms_median"] > 0 and row["predict_ms_median"] > 0
        assert abs(row["ratio"] - row["predict_ms_median"] / row["raw_ms_median"]) < 1e-3


def test_help_works_without_running_anything() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "facederm.benchmarks.runtime_overhead", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--iterations" in done.stdout
