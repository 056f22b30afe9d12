"""Raw per-repeat figures of a row -> its :class:`~facederm.benchmarks.schema.Row` (medians, min-max, ratios)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from .measurements import REGISTRY, Measured, Settings
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
    if ours is None or theirs is None or not theirs.median:
        return None
    return ours.median / theirs.median


def _status(measured: Measured, names: list[str], skip: str) -> tuple[str, str]:
    """ok when every named measurement ran in every repeat; failed with the first error; else skipped."""
    errors = [f"{n}: {measured.errors[n]}" for n in names if n in measured.errors]
    if errors:
        return "failed", errors[0]
    if any(measured.results.get(n) for n in names):
        return "ok", ""
    return "skipped", skip


def _tool(measured: Measured, name: str, latency: Stat | None, throughput: Stat | None) -> ToolResult | None:
    runs = measured.results.get(name, [])
    if name in measured.errors:
        return ToolResult(tool=name, status="failed", reason=measured.errors[name])
    if not runs:
        skip = measured.skipped.get(name)
        return ToolResult(tool=name, status="skipped", reason=skip) if skip else None
    p50 = Stat.of([r["p50"] for r in runs if r.get("p50") is not None])
    ips = Stat.of([r["throughput_ips"] for r in runs if r.get("throughput_ips") is not None])
    return ToolResult(tool=runs[0].get("tool", name), status="ok", command=runs[0].get("command", ""),
                      latency_p50_ms=p50, throughput_ips=ips,
                      latency_ratio=_ratio(latency, p50), throughput_ratio=_ratio(throughput, ips))


def _median_repeat_samples(measured: Measured) -> tuple[float, ...]:
    runs = [r for r in measured.results.get("latency", []) if r.get("samples_ms")]
    if not runs:
        return ()
    median = statistics.median_low([r["p50"] for r in runs])
    chosen = next(r for r in runs if r["p50"] == median)
    return tuple(float(v) for v in chosen["samples_ms"])


def _overall(failed: str, speed: str, speed_reason: str, accuracy: str, accuracy_reason: str) -> tuple[str, str]:
    """A row is failed if anything failed, ok if anything was measured (saying what was skipped), else skipped."""
    parts = (("speed", speed, speed_reason), ("accuracy", accuracy, accuracy_reason))
    if failed or "failed" in (speed, accuracy):
        return "failed", failed or "; ".join(f"{what}: {why}" for what, s, why in parts if s == "failed")
    if "ok" in (speed, accuracy):
        return "ok", "; ".join(f"{what} skipped: {why}" for what, s, why in parts if s == "skipped" and why)
    return "skipped", speed_reason or accuracy_reason


def collate(measured: Measured, settings: Settings) -> Row:
    spec = measured.row
    latency = {p: Stat.of(measured.values("latency", p)) for p in PERCENTILES}
    latency = {p: s for p, s in latency.items() if s is not None}
    throughput = Stat.of(measured.values("throughput", "throughput_ips"))
    speed_status, speed_reason = _status(measured, ["load", "latency", "throughput", "memory"],
                                         spec.failed or spec.speed_skip)
    accuracy_names = ["predict", "accuracy", "twin"]
    accuracy_status, accuracy_reason = _status(measured, accuracy_names,
                                               spec.failed or spec.accuracy_skip or "no evaluation data")
    raw_accuracy = measured.first("accuracy") or measured.first("twin")
    accuracy = Accuracy(**_clean({**raw_accuracy, "delta_macro_recall_ci": tuple(raw_accuracy["delta_macro_recall_ci"])})) \
        if raw_accuracy else None
    tools = [t for t in (_tool(measured, name, latency.get("p50"), throughput)
                         for name, m in REGISTRY.items() if m.is_tool) if t is not None]
    status, reason = _overall(spec.failed, speed_status, speed_reason, accuracy_status, accuracy_reason)
    load = measured.first("load")
    validated = accuracy.validated if accuracy else spec.validated
    return Row(
        key=spec.key, artifact=spec.artifact, target=spec.target, precision=spec.precision, backend=spec.backend,
        device=spec.device, path=spec.display_path, status=status, reason=reason, validated=validated,
        note=spec.note, speed_status=speed_status, speed_reason=speed_reason, accuracy_status=accuracy_status,
        accuracy_reason=accuracy_reason, compute_precision=load.get("compute_precision"),
        size_mb=spec.size_bytes / 2**20 if spec.size_bytes else None,
        import_ms=Stat.of(measured.values("load", "import_ms")),
        cold_load_ms=Stat.of(measured.values("load", "cold_load_ms")),
        first_inference_ms=Stat.of(measured.values("load", "first_inference_ms")),
        latency_ms=latency, throughput_ips=throughput,
        peak_rss_mb=Stat.of(measured.values("memory", "peak_rss_mb")),
        latency_samples_ms=_median_repeat_samples(measured), accuracy=accuracy, tools=tuple(tools),
    )
