"""One row's fresh process: ``python -m facederm.benchmarks.worker JOB.json``.

A fresh process per (row, repeat) makes cold load and peak RSS honest: nothing another backend loaded
is in memory, and nothing is cached from an earlier load. The parent writes the job (row, settings,
which measurements); the worker runs them in order and writes ``{name: figures | {"error": ...}}``
beside the job. Thread counts come from the environment the parent sets (OMP_NUM_THREADS ...) and
from ``settings.threads`` given to each backend.
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facederm.runtime.probe import make_probe

from .measurements import REGISTRY, Settings
from .plan import RowSpec
from .runners import Opened


@dataclass
class WorkerContext:
    """What the measurements of one row's process share: the opened model and a batch-1 input."""

    row: RowSpec
    settings: Settings
    repeat: int
    opened: Opened | None = None
    results: dict[str, Any] = field(default_factory=dict)

    def input_batch(self, n: int) -> np.ndarray:
        """float32 NCHW 0-255: the first evaluation images when there are any, else the seeded probe."""
        if self.settings.eval_tensor:
            images = np.load(self.settings.eval_tensor, mmap_mode="r")
            if len(images):
                index = np.arange(n) % len(images)
                return np.ascontiguousarray(images[index], dtype=np.float32)
        return make_probe(seed=0, batch=n, size=self.settings.input_size)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run the job's measurements in order; a failure is recorded and the rest still run when they can."""
    ctx = WorkerContext(RowSpec(**job["row"]), Settings(**job["settings"]), int(job["repeat"]))
    out: dict[str, Any] = {}
    for name in job["measurements"]:
        if ctx.opened is None and name != "load" and "load" in out and "error" in out["load"]:
            out[name] = {"error": f"not run: the model did not load ({out['load']['error']})"}
            continue
        try:
            out[name] = REGISTRY[name].run(ctx)
        except Exception as exc:  # every failure becomes a row's "failed: reason", never a crash of the bench
            out[name] = {"error": f"{type(exc).__name__}: {exc}".strip(), "traceback": traceback.format_exc(limit=6)}
        ctx.results[name] = out[name]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text(encoding="utf-8"))
    result = run_job(job)
    Path(job["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
