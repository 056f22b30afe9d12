"""The ``in_browser`` measurement: a web row's model timed inside headless Chromium (onnxruntime-web, WASM),
beside the same file run natively by onnxruntime, as a tool result (latency and throughput ratios native / page).

A plug-in of :mod:`facederm.benchmarks.measure` (listed in its ``PLUGINS``): it applies to rows of the ``web``
target and is skipped, with the reason, where chromium or playwright is missing. The page is fed the first
evaluation crops as PNGs (lossless, already at the input size, so the page's resize is a no-op), each several
times; the page's own clock times the model run alone (``ms``), as the native rows do.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .measure import Settings, measurement, not_run_here
from .plan import RowSpec

WEB_TARGET = "web"
#: Images fed to the page and times each; the median is over images x repeats timed runs.
PAGE_IMAGES, PAGE_REPEATS = 8, 4


def _is_web_row(row: RowSpec) -> bool:
    return row.target == WEB_TARGET and row.runner == "runtime"


def _skip(row: RowSpec, settings: Settings) -> str:
    from .browser import unavailable_reason

    return not_run_here(row, settings) or (unavailable_reason() or "")


def _crops(ctx: Any, folder: Path) -> list[Path]:
    """The row's input batch (the first evaluation crops, else the seeded probe: :meth:`Context.input_batch`) as
    PNGs."""
    paths = []
    for i, chw in enumerate(ctx.input_batch(PAGE_IMAGES)):
        path = folder / f"eval{i}.png"
        Image.fromarray(np.clip(chw, 0, 255).astype(np.uint8).transpose(1, 2, 0), "RGB").save(path)
        paths.append(path)
    return paths


@measurement(
    "in_browser",
    "parent",
    "the same model file inside headless Chromium (onnxruntime-web, WebAssembly), timed by the page",
    tool=True,
    every_repeat=False,
    applies=_is_web_row,
    skip=_skip,
)
def in_browser(ctx: Any) -> dict[str, Any]:
    from .browser import measure_in_browser

    model_file = Path(ctx.row.path)
    with tempfile.TemporaryDirectory(prefix="facederm-page-") as tmp:
        found = measure_in_browser(
            model_file.parent,
            _crops(ctx, Path(tmp)),
            model=model_file.name,
            threads=ctx.settings.threads,
            warmup=2,
            repeats=PAGE_REPEATS,
        )
    latency = found["latency_ms"]
    return {
        "tool": "chromium-wasm",
        "p50": latency["p50"],
        "p90": latency["p90"],
        "p99": latency["p99"],
        "throughput_ips": 1000.0 / latency["p50"] if latency["p50"] else float("nan"),
        "load_ms": found["load_ms"],
        "download_bytes": found["download_bytes"],
        "command": f"{found['browser']}, onnxruntime-web {found['info'].get('ortVersion', '?')}, "
        f"{found['info'].get('backend', 'wasm')}, {found['info'].get('threads', '?')} threads, "
        f"load {found['load_ms']:.0f} ms, {found['download_bytes'] / 1e6:.1f} MB downloaded, "
        f"n={latency['n']} runs",
    }
