"""Timing loops: warm up, then time each call (a fixed count or a time budget), with one clock.

Every latency figure in facederm-bench (facederm's own and the bare onnxruntime loop) goes through
:func:`time_calls`, so the two sides of a ratio are measured the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Budget:
    """How long to time: ``iterations`` calls, or as many as fit in ``seconds`` (at least ``min_calls``)."""

    iterations: int | None = None
    seconds: float | None = 2.0
    warmup: int = 5
    min_calls: int = 5

    def __post_init__(self) -> None:
        if (self.iterations is None) == (self.seconds is None):
            raise ValueError("Budget: give exactly one of iterations or seconds")


def time_calls(fn: Callable[[], object], budget: Budget) -> list[float]:
    """Milliseconds per call of ``fn`` after ``budget.warmup`` untimed calls."""
    for _ in range(budget.warmup):
        fn()
    samples: list[float] = []
    clock = time.perf_counter
    deadline = clock() + budget.seconds if budget.seconds is not None else None
    while True:
        start = clock()
        fn()
        end = clock()
        samples.append((end - start) * 1e3)
        if budget.iterations is not None:
            if len(samples) >= budget.iterations:
                break
        elif end >= deadline and len(samples) >= budget.min_calls:  # type: ignore[operator]
            break
    return samples


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 of per-call milliseconds."""
    p50, p90, p99 = np.percentile(np.asarray(samples_ms, dtype=float), [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def throughput(samples_ms: list[float], batch: int) -> float:
    """Images per second over the timed calls (total images / total time)."""
    total_s = sum(samples_ms) / 1e3
    return batch * len(samples_ms) / total_s if total_s > 0 else float("nan")
