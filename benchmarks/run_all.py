"""Every benchmark script, one combined JSON: ``python -m facederm.benchmarks.run_all --quick --out DIR``. A script
that is missing or fails is recorded with the reason; the others still run."""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.util
import inspect
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import click

from facederm.runtime.cli_support import common_option, debug_option, one_line_errors
from facederm.runtime.cpu import usable_cpus
from facederm.runtime.errors import ConfigError
from facederm.runtime.version import __version__

from .bench import BenchOptions, run_bench
from .cli import DEMO_DEFAULTS
from .schema import describe_environment
from .targets import check_targets

COMBINED_SCHEMA = "facederm.bench-all/1"
COMBINED_FILE = "all-results.json"


class Script(NamedTuple):
    """`call`: its function's name, or "cli" (`python -m module ARGS --json` in a fresh process)."""

    name: str
    module: str
    call: str
    quick: dict[str, Any] | list[str] = {}
    full: dict[str, Any] | list[str] = {}


def bench(out_dir: Path, **kwargs: Any) -> dict[str, Any]:
    """facederm-bench on the demo model (built once, cached), with its speed targets."""
    from facederm.export.demo import build_default

    model = build_default()
    options = BenchOptions(out=out_dir / "bench", run_dir=model.run_dir, source_kind="default", **kwargs)
    outcome = run_bench(model.export_dir, options)
    files, targets = outcome.files, [asdict(c) for c in check_targets(outcome.results)]
    return {"results": str(files["json"]), "report": str(files["markdown"]), "targets": targets}


#: The scripts, in the order they run. Add one here.
SCRIPTS: list[Script] = [
    Script("bench", "facederm.benchmarks.run_all", "bench", DEMO_DEFAULTS),
    Script("runtime_overhead", "facederm.benchmarks.runtime_overhead", "run", {"iterations": 40, "warmup": 5}),
    Script("train_throughput", "facederm.training.throughput", "run", {"steps": 2, "repeats": 2}),
    Script("fuzz", "facederm.runtime.reliability.fuzz", "run", {"cases": 2000, "seed": 0}, {"cases": 10**5, "seed": 0}),
    Script("leak", "facederm.runtime.reliability.leak", "cli", ["--iterations", "400", "--warmup", "100"]),
    Script("stream", "facederm.runtime.reliability.stream", "cli", ["--small", "100", "--large", "1000"]),
]


def _call(fn: Callable[..., Any], out: Path, threads: int, settings: dict[str, Any]) -> Any:
    """``fn`` with the settings it takes (a setting it lacks is dropped), threads and out_dir too."""
    params, kwargs = inspect.signature(fn).parameters, {**settings, "threads": threads, "out_dir": out}
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return fn(**{k: v for k, v in kwargs.items() if open_ended or k in params})


def run_script(script: Script, out: Path, quick: bool, threads: int) -> dict[str, Any]:
    """Run one script; returns {status, result | reason, seconds}."""
    started = time.perf_counter()
    settings = script.quick if quick else script.full
    outcome: dict[str, Any]
    try:
        if importlib.util.find_spec(script.module) is None:
            return {"status": "skipped", "reason": f"{script.module} is not there yet", "seconds": 0.0}
        if script.call == "cli":
            command = [sys.executable, "-m", script.module, *settings, "--json"]
            done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=3600)
            tail = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
            outcome = {"status": "failed", "reason": f"exit {done.returncode}: {tail}"}
            if done.returncode == 0:
                outcome = {"status": "ok", "result": json.loads(done.stdout.strip().splitlines()[-1])}
        else:
            fn = getattr(importlib.import_module(script.module), script.call)
            outcome = {"status": "ok", "result": _call(fn, out, threads, dict(settings))}
    except Exception as exc:  # one script's failure must not lose the others' results
        outcome = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(5)}
    if "result" in outcome:
        outcome["result"] = json.loads(json.dumps(outcome["result"], default=str))
    return {**outcome, "seconds": time.perf_counter() - started}


def run_all(
    out: Path,
    *,
    quick: bool = False,
    only: list[str] | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Run the scripts (all, or ``only``) and write ``out/all-results.json``; returns the combined dict."""
    out.mkdir(parents=True, exist_ok=True)
    threads = threads or usable_cpus()
    unknown = sorted(set(only or []) - {s.name for s in SCRIPTS})
    if unknown:
        raise ConfigError(f"unknown script(s) {', '.join(unknown)}; known: {', '.join(s.name for s in SCRIPTS)}")
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    combined: dict[str, Any] = {"schema": COMBINED_SCHEMA, "created": created, "facederm_version": __version__}
    combined.update(quick=quick, threads=threads, environment=asdict(describe_environment(threads)), scripts={})
    for script in (s for s in SCRIPTS if not only or s.name in only):
        echo(f"{script.name} ({script.module}) ...")
        combined["scripts"][script.name] = outcome = run_script(script, out, quick, threads)
        echo(f"  {outcome['status']} in {outcome['seconds']:.0f} s {outcome.get('reason', '')}")
        (out / COMBINED_FILE).write_text(json.dumps(combined, indent=2), encoding="utf-8")  # after each script
    return combined


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@common_option("--out", type=click.Path(path_type=Path), default=Path("bench-all"), show_default=True)
@click.option("--quick", is_flag=True, help="Small settings (minutes, not hours).")
@click.option("--only", multiple=True, help="Run only these scripts (repeatable).")
@click.option("--threads", type=int, help="Threads for every script that takes them (default: every usable CPU).")
@debug_option()
def main(out: Path, quick: bool, only: tuple[str, ...], threads: int | None, debug: bool) -> None:
    """Run every facederm benchmark script; write DIR/all-results.json."""
    with one_line_errors("run_all", debug):
        combined = run_all(out, quick=quick, only=list(only) or None, threads=threads, echo=click.echo)
    failed = [name for name, r in combined["scripts"].items() if r["status"] == "failed"]
    click.echo(f"wrote {out / COMBINED_FILE}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
