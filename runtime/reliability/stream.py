"""Streaming check: ``facederm-predict --json`` on a folder must not hold every image in memory.

    python -m facederm.runtime.reliability.stream                       # 1,000 vs 10,000 images
    python -m facederm.runtime.reliability.stream --small 200 --large 2000 --json
    python -m facederm.runtime.reliability.stream --export EXPORT_DIR

Writes N small PNGs (256x256: about 200 kB each once decoded, a few kB on disk) into a temporary folder,
runs ``facederm-predict EXPORT DIR --json`` as a child process and reads that child's own peak RSS
(``os.wait4``). Streaming means the peak for 10,000 images is about the peak for 1,000; holding the
decoded images would add ~200 kB per image (about 1.8 GB more for 10,000). Also checks that every image
got exactly one JSON line. Without ``--export`` a tiny ONNX export is built (no torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image

from ..cli_support import common_option, debug_option, one_line_errors
from .leak import build_tiny_export

IMAGE_SIDE = 256


def write_images(folder: Path, count: int, start: int = 0) -> None:
    """``count`` smooth 256x256 PNGs (compress to a few kB; decode to 196 kB), in sub-folders of 1,000."""
    yy, xx = np.mgrid[0:IMAGE_SIDE, 0:IMAGE_SIDE]
    for i in range(start, start + count):
        sub = folder / f"batch{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        phase = i * 0.37
        rgb = np.stack(
            [
                128 + 100 * np.sin(xx / 31 + phase),
                128 + 100 * np.cos(yy / 23 + phase),
                np.full_like(xx, (i * 7) % 256, dtype=float),
            ],
            -1,
        ).astype(np.uint8)
        Image.fromarray(rgb).save(sub / f"img{i:05d}.png", compress_level=1)


def run_predict(export_dir: Path, folder: Path, batch_size: int) -> dict[str, Any]:
    """Run facederm-predict --json on ``folder``; its peak RSS (child only), wall time and line counts."""
    cmd = [
        sys.executable,
        "-c",
        "from facederm.runtime.cli import main; main()",
        str(export_dir),
        str(folder),
        "--json",
        "--batch-size",
        str(batch_size),
    ]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        lines = [json.loads(line) for line in out if line.strip()]
        err.seek(0)
        stderr = err.read()
    scale = 1 if sys.platform == "darwin" else 1024
    return {
        "returncode": proc.returncode,
        "peak_rss_mb": round(usage.ru_maxrss * scale / 1e6, 1),
        "seconds": round(wall, 1),
        "lines": len(lines),
        "errors": sum(1 for line in lines if "error" in line),
        "stderr_tail": stderr[-500:],
    }


def check(small: int, large: int, export_dir: Path | None, batch_size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        export = export_dir or build_tiny_export(base / "export", openvino=False)
        images = base / "images"
        write_images(images / "small", small)
        write_images(images / "large", large)
        result_small = run_predict(export, images / "small", batch_size)
        result_large = run_predict(export, images / "large", batch_size)
    held_mb = (large - small) * IMAGE_SIDE * IMAGE_SIDE * 3 / 1e6
    growth = result_large["peak_rss_mb"] - result_small["peak_rss_mb"]
    return {
        "small": {"images": small, **result_small},
        "large": {"images": large, **result_large},
        "peak_rss_growth_mb": round(growth, 1),
        "would_hold_mb": round(held_mb, 1),  # the extra memory if the decoded images were all kept
        "batch_size": batch_size,
        "complete": result_small["lines"] == small
        and result_large["lines"] == large
        and result_small["returncode"] == 0
        and result_large["returncode"] == 0,
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--small", type=click.IntRange(min=1), default=1000, show_default=True, help="Images of the small run.")
@click.option("--large", type=click.IntRange(min=1), default=10_000, show_default=True, help="Images of the large run.")
@click.option(
    "--export",
    "export_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Export dir (default: build a tiny one).",
)
@common_option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--limit-mb", type=float, default=50.0, show_default=True, help="Allowed peak RSS growth, large vs small."
)
@common_option("--json", "as_json", is_flag=True)
@debug_option()
def main(
    small: int, large: int, export_dir: Path | None, batch_size: int, limit_mb: float, as_json: bool, debug: bool
) -> None:
    """facederm-predict --json on a folder must not hold every image in memory."""
    with one_line_errors("stream", debug):
        result = check(small, large, export_dir, batch_size)
    result["passed"] = result["complete"] and result["peak_rss_growth_mb"] < limit_mb
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key in ("small", "large"):
            r = result[key]
            click.echo(
                f"facederm-predict --json on {r['images']:,} images: peak RSS {r['peak_rss_mb']} MB, "
                f"{r['seconds']} s, {r['lines']:,} lines ({r['errors']} errors), exit {r['returncode']}"
            )
        click.echo(
            f"peak RSS growth {result['peak_rss_growth_mb']} MB for {large - small:,} more images "
            f"(holding them decoded would take ~{result['would_hold_mb']:,.0f} MB; limit {limit_mb} MB)"
        )
        click.echo("PASSED" if result["passed"] else "FAILED")
        if not result["complete"]:
            click.echo(result["small"]["stderr_tail"] + result["large"]["stderr_tail"])
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
