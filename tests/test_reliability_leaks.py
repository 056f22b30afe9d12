"""Leaks and limits (issue 7 item 7), CI-sized: predictions in a loop do not grow memory, and
facederm-predict streams a folder instead of holding its images. Full-size runs:
``python -m facederm.runtime.reliability.leak`` (2,000 predictions) and
``python -m facederm.runtime.reliability.stream`` (1,000 vs 10,000 images)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

LIMIT_MB_PER_2000 = 20.0


def _run_json(module: str, *args: str, timeout: int = 300) -> dict:
    # A fresh process: RSS then measures facederm alone, not whatever the test session allocated before.
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, "--json"], capture_output=True, text=True, timeout=timeout
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{module} printed no result (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(lines[-1])


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_repeated_predictions_do_not_grow_rss(backend: str):
    if backend == "openvino":
        pytest.importorskip("openvino")
    iterations = 400
    result = _run_json(
        "facederm.runtime.reliability.leak",
        "--iterations",
        str(iterations),
        "--warmup",
        "100",
        "--every",
        "50",
        "--backend",
        backend,
    )
    bound = LIMIT_MB_PER_2000 * iterations / 2000  # the 2,000-prediction budget, scaled down
    assert result["backend"] == backend
    assert result["growth_mb"] < bound, result
    assert result["projected_growth_mb_per_2000"] < LIMIT_MB_PER_2000, result


def test_predict_cli_streams_a_folder():
    result = _run_json("facederm.runtime.reliability.stream", "--small", "100", "--large", "1000")
    assert result["complete"], result  # one JSON line per image, exit 0
    # Holding the 900 extra decoded images would add ~177 MB; streaming keeps the peak flat.
    assert result["peak_rss_growth_mb"] < min(30.0, result["would_hold_mb"] / 4), result
