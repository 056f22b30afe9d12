"""OpenVINO's own ``benchmark_app`` on the same IR, same threads, one stream, synchronous requests.

Two runs per repeat: batch 1 (its "Median" latency) and batch B (its "Throughput"). The fp32 row gets
``-infer_precision f32`` as facederm's fp32 row gets INFERENCE_PRECISION_HINT=f32. A missing tool is a
skipped figure with the reason, never a failed bench.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
from typing import Any

from facederm.runtime.errors import FacedermError

from ..plan import RowSpec
from .base import Measurement, Settings, register

TOOL = "benchmark_app"
_MEDIAN = re.compile(r"Median:\s*([0-9.]+)\s*(ms|us|s)\b")
_THROUGHPUT = re.compile(r"Throughput:\s*([0-9.]+)\s*FPS")
_UNIT_MS = {"ms": 1.0, "us": 1e-3, "s": 1e3}


class ToolError(FacedermError):
    """A backend's own benchmark tool failed or printed nothing we can read."""


def command(row: RowSpec, settings: Settings, batch: int, executable: str = TOOL) -> list[str]:
    size = settings.input_size
    cmd = [executable, "-m", row.path, "-d", row.device if row.device not in ("-", "default") else "CPU",
           "-hint", "none", "-nstreams", "1", "-nireq", "1", "-api", "sync",
           "-nthreads", str(settings.threads), "-t", str(max(1, math.ceil(settings.tool_seconds))),  # whole seconds only
           "-shape", f"[{batch},3,{size},{size}]", "-report_type", "no_counters"]
    hint = row.options.get("precision_hint")
    if hint:
        cmd += ["-infer_precision", str(hint)]
    return cmd


def parse(output: str) -> dict[str, float]:
    """Median latency (ms) and throughput (images / s) from benchmark_app's report."""
    found: dict[str, float] = {}
    if match := _MEDIAN.search(output):
        found["median_ms"] = float(match.group(1)) * _UNIT_MS[match.group(2)]
    if match := _THROUGHPUT.search(output):
        found["throughput_ips"] = float(match.group(1))
    return found


def _run(cmd: list[str], timeout: float) -> dict[str, float]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{TOOL} did not finish within {timeout:.0f} s") from exc
    found = parse(done.stdout + done.stderr)
    if done.returncode != 0 or not found:
        tail = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line or "rror" in line][-1:]
        raise ToolError(f"{TOOL} exited {done.returncode}: {tail[0].strip() if tail else 'no figures in its output'}")
    return found


@register
class BenchmarkApp(Measurement):
    name = "benchmark_app"
    where = "parent"
    is_tool = True
    describe = "OpenVINO benchmark_app: -hint none -nstreams 1 -nireq 1 -api sync, same threads and file"

    def applies(self, row: RowSpec) -> bool:
        return row.backend == "openvino"

    def skip_reason(self, row: RowSpec, settings: Settings) -> str:
        if not row.runs_here:
            return row.failed or row.speed_skip
        if shutil.which(TOOL) is None:
            return f"{TOOL} not found on PATH (it is a console script of the openvino wheel)"
        return ""

    def run(self, ctx: Any) -> dict[str, Any]:
        settings: Settings = ctx.settings
        row: RowSpec = ctx.row
        timeout = settings.tool_seconds * 4 + 120  # compile + its own warm-up on top of -t
        exe = shutil.which(TOOL) or TOOL
        one = command(row, settings, 1, exe)
        many = command(row, settings, settings.batch, exe)
        latency = _run(one, timeout)
        batched = _run(many, timeout)
        shown = " ".join(shlex.quote(a) for a in [TOOL, *one[1:]])
        return {"tool": TOOL, "p50": latency.get("median_ms"), "throughput_ips": batched.get("throughput_ips"),
                "command": shown.replace(shlex.quote(row.path), shlex.quote(row.display_path))}
