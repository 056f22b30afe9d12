"""How much does ``Model.predict`` cost over the raw backend call? (target: at most 1.10x)

Exports a real-size classifier (timm ``mobilenetv3_large_100`` at 300x300, random weights) in fp32, then times,
interleaved in one process with the same threads, on every backend with a bare call (:meth:`Backend.bare_call`):
that call on a ready float32 tensor against ``model.predict(uint8 HxWx3 array)``, which adds facederm's conversion,
batching and result building. Reports medians and the ratio.

    python -m facederm.benchmarks.runtime_overhead --iterations 200 --out runtime_overhead.json
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import numpy as np

from facederm.export.demo import untrained_export
from facederm.runtime import backends as runtime_backends
from facederm.runtime.cli_support import common_option, debug_option, one_line_errors
from facederm.runtime.layout import MANIFEST_FILE, Manifest, resolve_inside

from .schema import describe_environment

TARGET_RATIO = 1.10
#: Export targets built for the comparison (fp32 each); every backend with a bare call that reads one is timed.
TARGETS = ("onnx", "openvino")


def _measure(
    raw: Callable[[np.ndarray], Any],
    predict: Callable[[np.ndarray], Any],
    image: np.ndarray,
    tensor: np.ndarray,
    iterations: int,
    warmup: int,
) -> dict[str, float]:
    for _ in range(warmup):
        raw(tensor)
        predict(image)
    raw_s: list[float] = []
    predict_s: list[float] = []
    for i in range(iterations):
        # Interleaved, alternating which goes first, so drift and cache effects hit both alike.
        order = ((raw, tensor, raw_s), (predict, image, predict_s))
        for fn, arg, sink in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn(arg)
            sink.append(time.perf_counter() - start)
    raw_ms, predict_ms = statistics.median(raw_s) * 1e3, statistics.median(predict_s) * 1e3
    return {
        "raw_ms_median": round(raw_ms, 4),
        "predict_ms_median": round(predict_ms, 4),
        "ratio": round(predict_ms / raw_ms, 4),
        "raw_ms_p90": round(float(np.percentile(raw_s, 90)) * 1e3, 4),
        "predict_ms_p90": round(float(np.percentile(predict_s, 90)) * 1e3, 4),
    }


def run(
    arch: str = "mobilenetv3_large_100",
    size: int = 300,
    iterations: int = 200,
    warmup: int = 20,
    threads: int = 2,
    precision_hint: str | None = None,
    out: str | Path | None = None,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Export the model, time raw vs ``predict`` per backend, return (and optionally write) the results."""
    from facederm.runtime import load
    from facederm.runtime.preprocess import to_tensor

    options = {"precision_hint": precision_hint} if precision_hint else {}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="facederm-overhead-") as tmp:
        folder = Path(workdir) if workdir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        export_dir = untrained_export(folder, arch, size, targets=TARGETS)
        artifacts = [a for a in Manifest.load(export_dir / MANIFEST_FILE).artifacts if a.status == "ok"]
        image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        tensor = to_tensor(image)
        for backend in runtime_backends.all_backends():
            if not backend.has_bare_call or not backend.can_run_here():
                continue
            path = next((resolve_inside(export_dir, a.path) for a in artifacts if a.format in backend.formats), None)
            if path is None:
                continue
            model = load(path, backend=backend.name, threads=threads, **options)
            raw = backend.bare_call(path, device=None, threads=threads, options=options)
            results[backend.name] = _measure(raw, model.predict, image, tensor, iterations, warmup)
    result = {
        "benchmark": "runtime_overhead",
        "arch": arch,
        "input_size": size,
        "iterations": iterations,
        "threads": threads,
        "precision_hint": precision_hint,
        "target_ratio": TARGET_RATIO,
        "backends": results,
        "passed": all(b["ratio"] <= TARGET_RATIO for b in results.values()),
        "environment": asdict(describe_environment(threads)),
    }
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--arch", default="mobilenetv3_large_100", show_default=True, help="timm architecture (random weights).")
@click.option("--size", default=300, show_default=True, type=click.IntRange(min=32), help="Input size.")
@click.option("--iterations", default=200, show_default=True, type=click.IntRange(min=5), help="Timed calls per side.")
@click.option("--warmup", default=20, show_default=True, type=click.IntRange(min=0))
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1), help="Same for raw and predict.")
@click.option(
    "--precision-hint", help="Backend precision hint for both sides (OpenVINO INFERENCE_PRECISION_HINT, e.g. f32)."
)
@common_option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("runtime_overhead.json"),
    show_default=True,
    help="(the JSON results)",
)
@common_option("--json", "as_json", is_flag=True)
@debug_option()
def main(out: Path, as_json: bool, debug: bool, **settings: Any) -> None:
    """Measure predict() overhead over each backend's bare library call."""
    from rich.console import Console
    from rich.table import Table

    with one_line_errors("runtime_overhead", debug):
        result = run(**settings, out=out)
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table(
        title=f"predict() vs raw backend call: {result['arch']} {result['input_size']}px, {result['threads']} threads, "
        f"medians of {result['iterations']}"
    )
    for column in ("backend", "raw ms", "predict ms", "ratio", f"<= {TARGET_RATIO}"):
        table.add_column(column)
    for name, row in result["backends"].items():
        ok = "[green]yes[/green]" if row["ratio"] <= TARGET_RATIO else "[red]no[/red]"
        table.add_row(name, f"{row['raw_ms_median']:.2f}", f"{row['predict_ms_median']:.2f}", f"{row['ratio']:.3f}", ok)
    console = Console()
    console.print(table)
    console.print(f"results written to {out}")


if __name__ == "__main__":
    main()
