"""Throughput at the run's batch size: images per second over back-to-back calls (one stream)."""

from __future__ import annotations

from typing import Any

from ..timing import throughput, time_calls
from .base import Measurement, register


@register
class Throughput(Measurement):
    name = "throughput"
    where = "worker"
    describe = "batch B, back-to-back calls, one stream; images / s"

    def run(self, ctx: Any) -> dict[str, Any]:
        batch = ctx.settings.batch
        x = ctx.input_batch(batch)
        budget = ctx.settings.budget
        samples = time_calls(lambda: ctx.opened.run(x), budget.__class__(
            iterations=max(2, budget.iterations // batch) if budget.iterations else None,
            seconds=budget.seconds, warmup=max(1, budget.warmup // 2), min_calls=3))
        return {"throughput_ips": throughput(samples, batch), "batch": batch, "calls": len(samples)}
