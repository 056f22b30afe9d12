"""Latency at batch 1 after warm-up: p50 / p90 / p99 of per-call milliseconds."""

from __future__ import annotations

from typing import Any

from ..timing import percentiles, time_calls
from .base import Measurement, register


@register
class Latency(Measurement):
    name = "latency"
    where = "worker"
    describe = "batch 1, after warm-up; p50/p90/p99 of per-call ms"

    def run(self, ctx: Any) -> dict[str, Any]:
        x = ctx.input_batch(1)
        samples = time_calls(lambda: ctx.opened.run(x), ctx.settings.budget)
        return {**percentiles(samples), "samples_ms": samples}
