"""Raw per-repeat figures of a row -> its :class:`~facederm.benchmarks.schema.Row` (medians, min-max, ratios)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from .measure import Measured, registry
from .schema import Accuracy, Row, Stat, ToolResult

#: Latency percentiles reported per row.
PERCENTILES = ("p50", "p90", "p99")


def _clean(value: Any) -> Any:
    """NaN / inf -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _ratio(ours: Stat | None, theirs: Stat | None) -> float | None:
    return ours.median / theirs.median if ours is not None and theirs is not None and theirs.median else None


def _status(measured: Measured, names: list[str], skip: str) -> tuple[str, str]:
    """ok when a named measurement ran; failed with the first error; else skipped."""
    errors = [f"{n}: {measured.errors[n]}" for n in names if n in measured.errors]
    if errors:
        return "failed", errors[0]
    return ("ok", "") if any(measured.results.get(n) for n in names) else ("skipped", skip)


def _tool(measured: Measured, name: str, latency: Stat | None, throughput: Stat | None) -> ToolResult | None:
    runs = measured.results.get(name, [])
    if name in measured.errors:
        return ToolResult(tool=name, status="failed", reason=measured.errors[name])
    if not runs:
        skip = measured.skipped.get(name)
        return ToolResult(tool=name, status="skipped", reason=skip) if skip else None
    p50, ips = Stat.of(measured.values(name, "p50")), Stat.of(measured.values(name, "throughput_ips"))
    return ToolResult(
        tool=runs[0].get("tool", name),
        status="ok",
        command=runs[0].get("command", ""),
        latency_p50_ms=p50,
        throughput_ips=ips,
        latency_ratio=_ratio(latency, p50),
        throughput_ratio=_ratio(throughput, ips),
    )


def _median_repeat_samples(measured: Measured) -> tuple[float, ...]:
    runs = [r for r in measured.results.get("latency", []) if r.get("samples_ms")]
    if not runs:
        return ()
    median = statistics.median_low([r["p50"] for r in runs])
    return tuple(float(v) for v in next(r for r in runs if r["p50"] == median)["samples_ms"])


def _overall(failed: str, parts: tuple[tuple[str, str, str], ...]) -> tuple[str, str]:
    """A row is failed if anything failed, ok if anything was measured (saying what was skipped), else skipped."""
    states = [state for _, state, _ in parts]
    if failed or "failed" in states:
        return "failed", failed or "; ".join(f"{what}: {why}" for what, s, why in parts if s == "failed")
    if "ok" in states:
        return "ok", "; ".join(f"{what} skipped: {why}" for what, s, why in parts if s == "skipped" and why)
    return "skipped", next((why for _, _, why in parts if why), "")


def collate(measured: Measured) -> Row:
    spec = measured.row
    latency = {p: s for p in PERCENTILES if (s := Stat.of(measured.values("latency", p))) is not None}
    throughput = Stat.of(measured.values("throughput", "throughput_ips"))
    speed, speed_reason = _status(measured, ["load", "latency", "throughput", "memory"], spec.failed or spec.speed_skip)
    acc, acc_reason = _status(
        measured, ["predict", "accuracy", "twin"], spec.failed or spec.accuracy_skip or "no evaluation data"
    )
    raw = measured.first("accuracy") or measured.first("twin")
    accuracy = (
        Accuracy(**_clean({**raw, "delta_macro_recall_ci": tuple(raw["delta_macro_recall_ci"])})) if raw else None
    )
    tools = [_tool(measured, m.name, latency.get("p50"), throughput) for m in registry().values() if m.tool]
    status, reason = _overall(spec.failed, (("speed", speed, speed_reason), ("accuracy", acc, acc_reason)))
    return Row(
        key=spec.key,
        artifact=spec.artifact,
        target=spec.target,
        precision=spec.precision,
        backend=spec.backend,
        device=spec.device,
        path=spec.display_path,
        status=status,
        reason=reason,  # type: ignore[arg-type]
        validated=accuracy.validated if accuracy else spec.validated,
        note=spec.note,  # type: ignore[arg-type]
        speed_status=speed,
        speed_reason=speed_reason,
        accuracy_status=acc,  # type: ignore[arg-type]
        accuracy_reason=acc_reason,
        compute_precision=measured.first("load").get("compute_precision"),
        size_mb=spec.size_bytes / 2**20 if spec.size_bytes else None,
        import_ms=Stat.of(measured.values("load", "import_ms")),
        cold_load_ms=Stat.of(measured.values("load", "cold_load_ms")),
        first_inference_ms=Stat.of(measured.values("load", "first_inference_ms")),
        latency_ms=latency,
        throughput_ips=throughput,
        peak_rss_mb=Stat.of(measured.values("memory", "peak_rss_mb")),
        latency_samples_ms=_median_repeat_samples(measured),
        accuracy=accuracy,
        tools=tuple(t for t in tools if t is not None),
    )
