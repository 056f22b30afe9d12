"""How much does ``Model.predict`` (uint8 image: conversion, batching, result) cost over each backend's bare call on a
ready tensor? Interleaved in one process, same threads, fp32 exports of a random-weight timm model; target <= 1.10x.

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
Call = tuple[Callable[[np.ndarray], Any], np.ndarray]


def _measure(calls: dict[str, Call], iterations: int, warmup: int) -> dict[str, float]:
    """Median and p90 ms of each call, interleaved with the first alternating so drift hits both alike."""
    for _ in range(warmup):
        for fn, arg in calls.values():
            fn(arg)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(iterations):
        for name in list(calls)[:: 1 if i % 2 == 0 else -1]:
            fn, arg = calls[name]
            start = time.perf_counter()
            fn(arg)
            times[name].append((time.perf_counter() - start) * 1e3)
    out = {f"{n}_ms_median": round(statistics.median(t), 4) for n, t in times.items()}
    out["ratio"] = round(out["predict_ms_median"] / out["raw_ms_median"], 4)
    return {**out, **{f"{n}_ms_p90": round(float(np.percentile(t, 90)), 4) for n, t in times.items()}}


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
        tensor = to_tensor(image := np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
        for backend in runtime_backends.all_backends():
            ok = backend.has_bare_call and backend.can_run_here()
            paths = (resolve_inside(export_dir, a.path) for a in artifacts if ok and a.format in backend.formats)
            if (path := next(paths, None)) is None:
                continue
            model = load(path, backend=backend.name, threads=threads, **options)
            raw = backend.bare_call(path, device=None, threads=threads, options=options)
            calls: dict[str, Call] = {"raw": (raw, tensor), "predict": (model.predict, image)}
            results[backend.name] = _measure(calls, iterations, warmup)
    result = {"benchmark": "runtime_overhead", "arch": arch, "input_size": size, "iterations": iterations}
    result.update(threads=threads, precision_hint=precision_hint, target_ratio=TARGET_RATIO, backends=results)
    result.update(passed=all(b["ratio"] <= TARGET_RATIO for b in results.values()))
    result["environment"] = asdict(describe_environment(threads))
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


JSON_FILE, OUT = click.Path(dir_okay=False, path_type=Path), Path("runtime_overhead.json")
HINT = "(OpenVINO INFERENCE_PRECISION_HINT, e.g. f32)."


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--arch", default="mobilenetv3_large_100", show_default=True, help="timm architecture (random weights).")
@click.option("--size", default=300, show_default=True, type=click.IntRange(min=32), help="Input size.")
@click.option("--iterations", default=200, show_default=True, type=click.IntRange(min=5), help="Timed calls per side.")
@click.option("--warmup", default=20, show_default=True, type=click.IntRange(min=0))
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1), help="Same for raw and predict.")
@click.option("--precision-hint", help="Backend precision hint for both sides " + HINT)
@common_option("--out", type=JSON_FILE, default=OUT, show_default=True, help="(the JSON results)")
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
    title = "predict() vs raw backend call: {arch} {input_size}px, {threads} threads, medians of {iterations}"
    table = Table("backend", "raw ms", "predict ms", "ratio", f"<= {TARGET_RATIO}", title=title.format(**result))
    for name, row in result["backends"].items():
        ok = "[green]yes[/green]" if row["ratio"] <= TARGET_RATIO else "[red]no[/red]"
        table.add_row(name, f"{row['raw_ms_median']:.2f}", f"{row['predict_ms_median']:.2f}", f"{row['ratio']:.3f}", ok)
    console = Console()
    console.print(table)
    console.print(f"results written to {out}")


if __name__ == "__main__":
    main()
