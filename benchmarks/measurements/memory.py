"""Peak resident memory of the row's process after load, latency and throughput (before accuracy).

Linux: ``VmHWM`` from /proc/self/status, the high-water mark of this process's own address space.
(``ru_maxrss`` is not used there: it survives exec, so a worker would report its parent's peak.)
Elsewhere ``ru_maxrss``. Taken before the evaluation pass, it is the footprint of serving this model
(libraries + model + batch-B activations), not of holding the evaluation set.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
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
        return {"peak_rss_mb": peak_rss_bytes() / 2**20}


def peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT
