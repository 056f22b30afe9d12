"""Headline ratios from one run: int8 vs fp32 per backend, and each backend vs the torch baseline."""

from __future__ import annotations

from dataclasses import dataclass

from ..schema import BenchResults, Row


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float
    slow: Row
    fast: Row


def _timed(results: BenchResults) -> list[Row]:
    return [r for r in results.rows if r.p50 is not None and "/qdq-onnx" not in r.artifact]


def speed_ratios(results: BenchResults) -> list[Ratio]:
    """p50(slow) / p50(fast) at batch 1: every int8 row vs the fp32 row of the same target and backend,
    and every row vs the baseline (torch fp32 eager)."""
    rows = _timed(results)
    out = []
    for fast in rows:
        if fast.precision == "fp32":
            continue
        slow = next((r for r in rows if r.target == fast.target and r.backend == fast.backend and r.precision == "fp32"), None)
        if slow is not None:
            out.append(Ratio(f"{fast.backend} {fast.target} {fast.precision} vs fp32", slow.p50 / fast.p50, slow, fast))  # type: ignore[operator]
    baseline = next((r for r in rows if r.backend == "torch"), None)
    if baseline is not None:
        for fast in rows:
            if fast is not baseline:
                out.append(Ratio(f"{fast.backend} {fast.artifact} vs torch fp32 eager", baseline.p50 / fast.p50, baseline, fast))  # type: ignore[operator]
    return out
