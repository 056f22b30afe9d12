"""Cold load: import the backend's library, open the artifact, run the first image (each timed apart)."""

from __future__ import annotations

import time
from typing import Any

from ..runners import get_runner
from .base import Measurement, register


@register
class Load(Measurement):
    name = "load"
    where = "worker"
    describe = "import ms, cold load ms (open: sha256 check + read + compile), first inference ms"

    def run(self, ctx: Any) -> dict[str, Any]:
        import_libraries, open_model = get_runner(ctx.row.runner)
        import_ms = import_libraries(ctx.row)
        start = time.perf_counter()
        ctx.opened = open_model(ctx.row, ctx.settings.threads)
        load_ms = (time.perf_counter() - start) * 1e3
        first = ctx.input_batch(1)
        start = time.perf_counter()
        ctx.opened.run(first)
        first_ms = (time.perf_counter() - start) * 1e3
        return {"import_ms": import_ms, "cold_load_ms": load_ms, "first_inference_ms": first_ms,
                "compute_precision": ctx.opened.compute_precision, "details": ctx.opened.details}
