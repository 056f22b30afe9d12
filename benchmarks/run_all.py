"""Run every benchmark script and write one combined JSON: ``python -m facederm.benchmarks.run_all [--quick] --out DIR``.

Each script is one registry entry: its module, how to call it (its ``run()`` function with keyword
arguments, or its command line with ``--json`` for scripts that only have ``main``), and its quick and
full settings. A script that is missing (not written yet) or fails is recorded with the reason; the
others still run. ``--only NAME`` runs a subset.
"""

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click

from facederm.runtime.version import __version__

from .environment import describe_environment, usable_cpus

COMBINED_SCHEMA = "facederm.bench-all/1"


@dataclass(frozen=True)
class Script:
    """One benchmark script. ``call``: "run" (its run() function) or "cli" (``python -m module ARGS``, JSON on stdout)."""

    name: str
    module: str
    call: str
    quick: dict[str, Any] | list[str] = field(default_factory=dict)
    full: dict[str, Any] | list[str] = field(default_factory=dict)
    what: str = ""


def _bench(out: Path, quick: bool, **kwargs: Any) -> dict[str, Any]:
    """facederm-bench on the demo model (built once, cached)."""
    from .bench import BenchOptions, run_bench
    from .default_model import build_default

    model = build_default()
    options = BenchOptions(out=out / "bench", run_dir=model.run_dir, source_kind="default", **kwargs)
    outcome = run_bench(model.export_dir, options)
    from .targets import check_targets

    return {"results": str(outcome.files["json"]), "report": str(outcome.files["markdown"]),
            "targets": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in check_targets(outcome.results)]}


#: The scripts, in the order they run. Add one here.
SCRIPTS: list[Script] = [
    Script("bench", "facederm.benchmarks.run_all", "bench",
           quick={"seconds": 1.0, "repeats": 2, "tool_seconds": 1.0}, full={},
           what="facederm-bench on the demo model: every artifact x backend"),
    Script("runtime_overhead", "facederm.benchmarks.runtime_overhead", "run",
           quick={"iterations": 40, "warmup": 5}, full={}, what="Model.predict vs the raw backend call"),
    Script("train_throughput", "facederm.benchmarks.train_throughput", "run",
           quick={"quick": True}, full={}, what="training images / s"),
    Script("fuzz_images", "facederm.benchmarks.fuzz_images", "run",
           quick={"cases": 2000, "seed": 0}, full={"cases": 100_000, "seed": 0}, what="preprocessing fuzzer escapes"),
    Script("leak_check", "facederm.benchmarks.leak_check", "cli",
           quick=["--iterations", "400", "--warmup", "100", "--json"], full=["--json"], what="RSS growth over predictions"),
    Script("stream_check", "facederm.benchmarks.stream_check", "cli",
           quick=["--small", "100", "--large", "1000", "--json"], full=["--json"], what="predict streams a folder"),
]


def _accepted(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Only the keyword arguments ``fn`` takes (scripts evolve; a quick setting they lack is dropped)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def run_script(script: Script, out: Path, quick: bool, threads: int) -> dict[str, Any]:
    """Run one script; returns {status, seconds, result | reason}."""
    started = time.perf_counter()
    settings = script.quick if quick else script.full
    try:
        if importlib.util.find_spec(script.module) is None:
            return {"status": "skipped", "reason": f"{script.module} is not there yet", "seconds": 0.0}
        if script.call == "bench":
            result: Any = _bench(out, quick, threads=threads, **settings)  # type: ignore[arg-type]
        elif script.call == "run":
            fn = importlib.import_module(script.module).run
            kwargs = dict(settings)  # type: ignore[arg-type]
            if "threads" in inspect.signature(fn).parameters:
                kwargs["threads"] = threads
            result = fn(**_accepted(fn, kwargs))
        else:
            done = subprocess.run([sys.executable, "-m", script.module, *settings], capture_output=True, text=True,
                                  check=False, timeout=3600)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
                return {"status": "failed", "reason": f"exit {done.returncode}: {tail}",
                        "seconds": time.perf_counter() - started}
            result = json.loads(done.stdout.strip().splitlines()[-1])
    except Exception as exc:  # one script's failure must not lose the others' results
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5),
                "seconds": time.perf_counter() - started}
    return {"status": "ok", "result": _jsonable(result), "seconds": time.perf_counter() - started}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_all(out: Path, *, quick: bool = False, only: list[str] | None = None, threads: int | None = None,
            echo: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Run the scripts (all, or ``only``) and write ``out/all-results.json``; returns the combined dict."""
    out.mkdir(parents=True, exist_ok=True)
    threads = threads or usable_cpus()
    unknown = sorted(set(only or []) - {s.name for s in SCRIPTS})
    if unknown:
        raise click.BadParameter(f"unknown script(s) {', '.join(unknown)}; known: {', '.join(s.name for s in SCRIPTS)}")
    combined: dict[str, Any] = {
        "schema": COMBINED_SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "facederm_version": __version__, "quick": quick, "threads": threads,
        "environment": _jsonable(describe_environment(threads).__dict__), "scripts": {},
    }
    for script in SCRIPTS:
        if only and script.name not in only:
            continue
        echo(f"{script.name}: {script.what} ...")
        combined["scripts"][script.name] = outcome = run_script(script, out, quick, threads)
        echo(f"  {outcome['status']} in {outcome['seconds']:.0f} s {outcome.get('reason', '')}")
        (out / "all-results.json").write_text(json.dumps(combined, indent=2), encoding="utf-8")  # after each script
    return combined


@click.command(help="Run every facederm benchmark script; write DIR/all-results.json.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-all"), show_default=True)
@click.option("--quick", is_flag=True, help="Small settings (minutes, not hours).")
@click.option("--only", multiple=True, help="Run only these scripts (repeatable).")
@click.option("--threads", type=int, help="Threads for every script that takes them (default: every usable CPU).")
def main(out: Path, quick: bool, only: tuple[str, ...], threads: int | None) -> None:
    combined = run_all(out, quick=quick, only=list(only) or None, threads=threads, echo=click.echo)
    failed = [name for name, r in combined["scripts"].items() if r["status"] == "failed"]
    click.echo(f"wrote {out / 'all-results.json'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
