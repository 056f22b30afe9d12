"""``facederm-bench``: benchmark every artifact on every backend here (thin: parse, call, print)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from facederm.runtime.cli_support import common_option, debug_option, one_line_errors

from .bench import BenchOptions, run_bench
from .report import reasons, results_table

#: The demo's timing budget (under 3 minutes on 2 cores from a cold cache); options given explicitly win.
DEMO_DEFAULTS = {"seconds": 1.0, "repeats": 2, "tool_seconds": 1.0}
BACKEND_HELP = "Repeatable or comma-separated (torch: the baseline); default: every backend that reads an artifact."
TOOL = "(benchmark_app -t)."
DIR = click.Path(path_type=Path)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", required=False, type=click.Path(path_type=Path))
@common_option("--eval-data", "data", old=("--data",))
@common_option("--backend", "backends", multiple=True, help=BACKEND_HELP)
@common_option("--batch-size", "batch", type=int, default=8, show_default=True, help="For throughput.")
@common_option("--device", help="Default: each backend's CPU.")
@click.option("--iterations", type=int, help="Timed calls per latency loop (instead of --seconds).")
@click.option("--seconds", type=float, default=2.0, show_default=True, help="Seconds per latency loop.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed calls before each loop.")
@click.option("--threads", type=int, help="Threads for every backend (default: every usable CPU).")
@click.option("--repeats", default=3, show_default=True, help="Repeats, each in a fresh process; medians and min-max.")
@click.option("--tool-seconds", default=3.0, show_default=True, help="Seconds for a backend's own tool " + TOOL)
@click.option("--run", "run_dir", type=DIR, help="Run dir of an export dir (the torch baseline).")
@click.option("--max-images", type=int, help="Cap the evaluation images (fast checks).")
@common_option("--out", type=DIR, default=Path("bench-results"), show_default=True)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@common_option("--json", "as_json", is_flag=True, help="(results.json to stdout; progress to stderr)")
@debug_option()
def main(path: Path | None, no_plots: bool, as_json: bool, debug: bool, **given: Any) -> None:
    """Benchmark PATH (an export dir, or a run dir exported first); no PATH: the cached demo model."""
    ctx, demo = click.get_current_context(), path is None
    if demo:  # the demo's budget where the option was left at its default
        default = click.core.ParameterSource.DEFAULT
        given.update({k: v for k, v in DEMO_DEFAULTS.items() if ctx.get_parameter_source(k) is default})
    console = Console(stderr=as_json)
    if not console.is_terminal:  # piped / logged: do not fold the table to 80 columns
        console = Console(width=max(console.width, 160), stderr=as_json)
    started = time.perf_counter()
    with one_line_errors("facederm-bench", debug):
        command = shlex.join(["facederm-bench", *sys.argv[1:]])
        names = [n.strip() for v in given.pop("backends") for n in v.split(",") if n.strip()]
        options = BenchOptions(backends=names or None, plots=not no_plots, command=command, **given)
        if path is None:
            from facederm.export.demo import build_default

            model = build_default(progress=True, log=console.print)
            console.print(f"demo model: {model.root} ({'cached' if model.cached else 'built now'})")
            path, options.run_dir, options.source_kind = model.export_dir, model.run_dir, "default"
        columns = (TextColumn("[bold]bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, TextColumn("{task.description}"), console=console) as bar:
            task = bar.add_task("", total=None, visible=False)  # shown once the plan has its steps

            def show(done: int, total: int, what: str) -> None:
                bar.update(task, completed=done, total=total, description=what, visible=True)

            outcome = run_bench(path, options, progress=show)
    if as_json:
        click.echo(json.dumps(outcome.results.to_dict(), indent=2))
        return
    console.print(results_table(outcome.results))
    for line in reasons(outcome.results):
        console.print(f"  * {line}", highlight=False, markup=False)  # reasons hold pip extras like [tensorrt]
    for note in outcome.results.notes:
        console.print(note, style="yellow" if "SYNTHETIC" in note else None, highlight=False, markup=False)
    files, took = outcome.files, time.perf_counter() - started
    shown = f"report: {files['markdown']}   results: {files['json']}   ({took:.0f} s end to end)"
    console.print(shown, highlight=False)
