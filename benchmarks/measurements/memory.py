"""Peak resident memory of the row's process after load, latency and throughput (before accuracy).

``ru_maxrss`` is the process's high-water mark; taken before the evaluation pass, it is the footprint
of serving this model (libraries + model + batch-B activations), not of holding the evaluation set.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

from .base import Measurement, register

# ru_maxrss is in KiB on Linux, bytes on macOS.
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024


@register
class Memory(Measurement):
    name = "memory"
    where = "worker"
    describe = "peak RSS (ru_maxrss) of the row's own process after load + latency + throughput"

    def run(self, ctx: Any) -> dict[str, Any]:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT
        return {"peak_rss_mb": peak / 2**20}
