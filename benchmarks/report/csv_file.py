"""results.csv: one line per row, flat columns (median plus min and max for repeated figures)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..schema import BenchResults, Row, Stat


def _stat_columns(name: str, value: Stat | None) -> dict[str, Any]:
    if value is None:
        return {name: "", f"{name}_min": "", f"{name}_max": ""}
    return {name: round(value.median, 4), f"{name}_min": round(value.min, 4), f"{name}_max": round(value.max, 4)}


def _row(row: Row, labels: tuple[str, ...]) -> dict[str, Any]:
    acc = row.accuracy
    out: dict[str, Any] = {
        "key": row.key, "artifact": row.artifact, "target": row.target, "precision": row.precision,
        "backend": row.backend, "device": row.device, "status": row.status, "reason": row.reason,
        "validated": row.validated, "compute_precision": row.compute_precision or "", "note": row.note,
        "size_mb": round(row.size_mb, 3) if row.size_mb is not None else "",
    }
    out.update(_stat_columns("cold_load_ms", row.cold_load_ms))
    for p in ("p50", "p90", "p99"):
        out.update(_stat_columns(f"latency_{p}_ms", row.latency_ms.get(p)))
    out.update(_stat_columns("throughput_ips", row.throughput_ips))
    out.update(_stat_columns("peak_rss_mb", row.peak_rss_mb))
    ci = list(acc.delta_macro_recall_ci) if acc else []
    out.update({
        "accuracy_source": acc.source if acc else "",
        "macro_recall": _f(acc.macro_recall if acc else None),
        "macro_precision": _f(acc.macro_precision if acc else None),
        "auc_macro": _f(acc.auc_macro if acc else None),
        "agreement": _f(acc.agreement if acc else None),
        "delta_macro_recall": _f(acc.delta_macro_recall if acc else None),
        "delta_macro_recall_ci_low": _f(ci[0] if len(ci) > 0 else None),
        "delta_macro_recall_ci_high": _f(ci[1] if len(ci) > 1 else None),
    })
    for label in labels:
        out[f"recall_{label}"] = _f(acc.per_class_recall.get(label) if acc else None)
    for tool in row.tools:
        prefix = "benchmark_app" if tool.tool == "benchmark_app" else "ort_bare"
        out[f"{prefix}_p50_ms"] = _f(tool.latency_p50_ms.median if tool.latency_p50_ms else None)
        out[f"{prefix}_throughput_ips"] = _f(tool.throughput_ips.median if tool.throughput_ips else None)
        out[f"facederm_over_{prefix}_latency"] = _f(tool.latency_ratio)
        out[f"facederm_over_{prefix}_throughput"] = _f(tool.throughput_ratio)
    return out


def _f(value: float | None) -> Any:
    return "" if value is None else round(value, 6)


def write_csv(results: BenchResults, path: Path) -> Path:
    labels = results.eval.labels if results.eval else ()
    lines = [_row(row, labels) for row in results.rows]
    columns: list[str] = []
    for line in lines:
        columns.extend(c for c in line if c not in columns)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(lines)
    return path
