"""``facederm-bench``: benchmark every artifact on every backend here (thin: parse, call, print).

facederm-bench                                   # the demo: EfficientNet-Lite0, synthetic data, cached
facederm-bench RUN_OR_EXPORT_DIR --eval-data pad-ufes-20:DIR --out bench/
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from facederm.runtime.cli_support import common_option, debug_option, one_line_errors

from .bench import BenchOptions, run_bench

#: The demo's timing budget (under 3 minutes on 2 cores from a cold cache); options given explicitly win.
DEMO_DEFAULTS = {"seconds": 1.0, "repeats": 2, "tool_seconds": 1.0}

SYNTHETIC_NOTE = (
    "The demo data is SYNTHETIC (procedural lesion-like blobs): its accuracy figures say nothing clinical.\n"
    "Run on real data: facederm-bench RUN_DIR --eval-data pad-ufes-20:DIR   (or folder:DIR, one sub-folder per class)"
)


class PlanProgress:
    """The progress bar over the whole plan: ``start(total)`` once, ``advance(description)`` as each step starts."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]bench"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
        )
        self._task: int | None = None
        self._started = False

    def __enter__(self) -> PlanProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None and self._started:
            self._progress.update(self._task, completed=self._progress.tasks[0].total, description="done")
        self._progress.__exit__(*exc)

    def start(self, total: int) -> None:
        self._task = self._progress.add_task("", total=total)

    def advance(self, description: str) -> None:
        if self._task is None:
            return
        if self._started:
            self._progress.advance(self._task)
        self._started = True
        self._progress.update(self._task, description=description)


def _names(value: tuple[str, ...]) -> list[str] | None:
    names = [n.strip() for v in value for n in v.split(",") if n.strip()]
    return names or None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", required=False, type=click.Path(path_type=Path))
@common_option("--eval-data", "data", old=("--data",))
@common_option(
    "--backend",
    "backends",
    multiple=True,
    help="Repeatable or comma-separated (torch: the baseline); default: every backend that reads an artifact.",
)
@common_option("--batch-size", "batch", type=int, default=8, show_default=True, help="For throughput.")
@common_option("--device", help="Default: each backend's CPU.")
@click.option("--iterations", type=int, help="Timed calls per latency loop (instead of --seconds).")
@click.option("--seconds", type=float, default=2.0, show_default=True, help="Seconds per latency loop.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed calls before each loop.")
@click.option("--threads", type=int, help="Threads for every backend (default: every usable CPU).")
@click.option("--repeats", default=3, show_default=True, help="Repeats, each in a fresh process; medians and min-max.")
@click.option(
    "--tool-seconds",
    type=float,
    default=3.0,
    show_default=True,
    help="Seconds for a backend's own tool (benchmark_app -t).",
)
@click.option(
    "--run", "run_dir", type=click.Path(path_type=Path), help="Run dir of an export dir (the torch baseline)."
)
@click.option("--max-images", type=int, help="Cap the evaluation images (fast checks).")
@common_option("--out", type=click.Path(path_type=Path), default=Path("bench-results"), show_default=True)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@common_option("--json", "as_json", is_flag=True, help="(results.json to stdout; progress to stderr)")
@debug_option()
def main(
    path: Path | None,
    data: str | None,
    backends: tuple[str, ...],
    batch: int,
    device: str | None,
    iterations: int | None,
    seconds: float,
    warmup: int,
    threads: int | None,
    repeats: int,
    tool_seconds: float,
    run_dir: Path | None,
    max_images: int | None,
    out: Path,
    no_plots: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """Benchmark PATH (an export dir, or a run dir exported first); no PATH: the cached demo model."""
    ctx = click.get_current_context()
    demo = path is None
    if demo:
        for name, value in DEMO_DEFAULTS.items():
            if ctx.get_parameter_source(name) is click.core.ParameterSource.DEFAULT:
                ctx.params[name] = value
        seconds, repeats, tool_seconds = ctx.params["seconds"], int(ctx.params["repeats"]), ctx.params["tool_seconds"]
    console = Console(stderr=as_json)
    if not console.is_terminal:  # piped / logged: do not fold the table to 80 columns
        console = Console(width=max(console.width, 160), stderr=as_json)
    started = time.perf_counter()
    with one_line_errors("facederm-bench", debug):
        options = BenchOptions(
            out=out,
            data=data,
            backends=_names(backends),
            batch=batch,
            iterations=iterations,
            seconds=seconds,
            warmup=warmup,
            threads=threads,
            repeats=repeats,
            tool_seconds=tool_seconds,
            run_dir=run_dir,
            max_images=max_images,
            device=device,
            plots=not no_plots,
            command=shlex.join(["facederm-bench", *sys.argv[1:]]),
        )
        if path is None:
            from .default_model import build_default

            model = build_default(progress=True, log=console.print)
            console.print(f"demo model: {model.root} ({'cached' if model.cached else 'built now'})")
            path, options.run_dir, options.source_kind = model.export_dir, model.run_dir, "default"
        with PlanProgress(console) as progress:
            outcome = run_bench(path, options, progress=progress)
    if as_json:
        click.echo(json.dumps(outcome.results.to_dict(), indent=2))
        return
    from .table import reasons, results_table

    console.print(results_table(outcome.results))
    for line in reasons(outcome.results):
        console.print(f"  * {line}", highlight=False, markup=False)  # reasons hold pip extras like [tensorrt]
    for note in outcome.results.notes:
        console.print(note, style="yellow" if "SYNTHETIC" in note else None, highlight=False, markup=False)
    if demo:
        console.print(SYNTHETIC_NOTE, highlight=False, markup=False)
    console.print(
        f"report: {outcome.files['markdown']}   results: {outcome.files['json']}   "
        f"({time.perf_counter() - started:.0f} s end to end)",
        highlight=False,
    )


if __name__ == "__main__":
    main()
