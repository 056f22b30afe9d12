"""``facederm-bench``: benchmark every artifact on every backend here (thin: parse, call, print).

    facederm-bench                                   # the demo: EfficientNet-Lite0, synthetic data, cached
    facederm-bench RUN_OR_EXPORT_DIR --data pad-ufes-20:DIR --out bench/
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click
from rich.console import Console

from facederm.runtime.cli_support import one_line_errors

from .bench import BenchOptions, run_bench
from .progress import PlanProgress

#: The demo's timing budget (under 3 minutes on 2 cores from a cold cache); options given explicitly win.
DEMO_DEFAULTS = {"seconds": 1.0, "repeats": 2, "tool_seconds": 1.0}

SYNTHETIC_NOTE = (
    "The demo data is SYNTHETIC (procedural lesion-like blobs): its accuracy figures say nothing clinical.\n"
    "Run on real data: facederm-bench RUN_DIR --data pad-ufes-20:DIR   (or --data folder:DIR, one sub-folder per class)"
)


def _backends(value: tuple[str, ...]) -> list[str] | None:
    names = [n.strip() for v in value for n in v.split(",") if n.strip()]
    return names or None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--data", help="Evaluation data: pad-ufes-20:DIR, folder:DIR, csv:FILE, synthetic[:N] (default: the run's test split).")
@click.option("--backends", multiple=True, help="Only these backends (comma-separated): torch, onnxruntime, openvino, coreml, tensorrt.")
@click.option("--batch", default=8, show_default=True, help="Batch size for throughput.")
@click.option("--iterations", type=int, help="Timed calls per latency loop (instead of --seconds).")
@click.option("--seconds", type=float, default=2.0, show_default=True, help="Seconds per latency loop.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed calls before each loop.")
@click.option("--threads", type=int, help="Threads for every backend (default: every usable CPU).")
@click.option("--repeats", default=3, show_default=True, help="Repeats, each in a fresh process; medians and min-max.")
@click.option("--tool-seconds", type=float, default=3.0, show_default=True, help="-t for benchmark_app.")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), help="Run dir of an export dir (for the torch baseline).")
@click.option("--max-images", type=int, help="Cap the evaluation images (fast checks).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results"), show_default=True)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(path: Path | None, data: str | None, backends: tuple[str, ...], batch: int, iterations: int | None,
         seconds: float, warmup: int, threads: int | None, repeats: int, tool_seconds: float, run_dir: Path | None,
         max_images: int | None, out: Path, no_plots: bool, debug: bool) -> None:
    """Benchmark PATH (an export dir, or a run dir exported first); no PATH: the cached demo model."""
    ctx = click.get_current_context()
    if path is None:
        given = {name for name in DEMO_DEFAULTS
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
        chosen = {**DEMO_DEFAULTS, **{n: v for n, v in (("seconds", seconds), ("repeats", repeats),
                                                          ("tool_seconds", tool_seconds)) if n in given}}
        seconds, repeats, tool_seconds = chosen["seconds"], int(chosen["repeats"]), chosen["tool_seconds"]
    console = Console()
    if not console.is_terminal:  # piped / logged: do not fold the table to 80 columns
        console = Console(width=max(console.width, 160))
    started = time.perf_counter()
    with one_line_errors("facederm-bench", debug):
        options = BenchOptions(out=out, data=data, backends=_backends(backends), batch=batch, iterations=iterations,
                               seconds=seconds, warmup=warmup, threads=threads, repeats=repeats,
                               tool_seconds=tool_seconds, run_dir=run_dir, max_images=max_images, plots=not no_plots,
                               command=shlex.join(["facederm-bench", *sys.argv[1:]]))
        demo = path is None
        if demo:
            from .default_model import build_default

            model = build_default(progress=True, log=lambda m: console.print(m))
            console.print(f"demo model: {model.root} ({'cached' if model.cached else 'built now'})")
            path, options.run_dir, options.source_kind = model.export_dir, model.run_dir, "default"
        with PlanProgress(console) as progress:
            outcome = run_bench(path, options, progress=progress)
    from .report.table import reasons, results_table

    console.print(results_table(outcome.results))
    for line in reasons(outcome.results):
        console.print(f"  * {line}", highlight=False, markup=False)  # reasons hold pip extras like [tensorrt]
    for note in outcome.results.notes:
        console.print(note, style="yellow" if "SYNTHETIC" in note else None, highlight=False, markup=False)
    if demo:
        console.print(SYNTHETIC_NOTE, highlight=False, markup=False)
    console.print(f"report: {outcome.files['markdown']}   results: {outcome.files['json']}   "
                  f"({time.perf_counter() - started:.0f} s end to end)", highlight=False)


if __name__ == "__main__":
    main()
