"""onnxruntime's own loop: a bare ``InferenceSession`` with the same session options, the same input,
the same timing code. The ratio to facederm's figures is facederm's overhead (checks, chunking, copies)."""

from __future__ import annotations

from typing import Any

from ..plan import RowSpec
from ..timing import percentiles, throughput, time_calls
from .base import Measurement, register

TOOL = "onnxruntime InferenceSession (bare)"


def bare_session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # as facederm's onnxruntime backend sets it
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


@register
class OrtBare(Measurement):
    name = "ort_bare"
    where = "worker"
    is_tool = True
    describe = "bare onnxruntime InferenceSession loop, same options and timing code"

    def applies(self, row: RowSpec) -> bool:
        return row.backend == "onnxruntime"

    def run(self, ctx: Any) -> dict[str, Any]:
        session = bare_session(ctx.row.path, ctx.settings.threads)
        name = session.get_inputs()[0].name
        one = ctx.input_batch(1)
        latency = time_calls(lambda: session.run(None, {name: one}), ctx.settings.budget)
        batch = ctx.input_batch(ctx.settings.batch)
        budget = ctx.settings.budget
        calls = time_calls(lambda: session.run(None, {name: batch}), budget.__class__(
            iterations=max(2, budget.iterations // ctx.settings.batch) if budget.iterations else None,
            seconds=budget.seconds, warmup=max(1, budget.warmup // 2), min_calls=3))
        return {"tool": TOOL, **percentiles(latency), "throughput_ips": throughput(calls, ctx.settings.batch),
                "command": f"InferenceSession({ctx.row.display_path}, intra_op_num_threads={ctx.settings.threads})"}
