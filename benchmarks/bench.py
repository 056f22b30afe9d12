"""``run_bench``: the Python entry point behind ``facederm-bench`` (the CLI only parses and prints).

1. PATH -> an export dir (a run dir is exported first, to every target installed) (:mod:`.source`).
2. The evaluation images are preprocessed once (:func:`.source.prepare_eval`).
3. The plan (:mod:`.plan`): the baseline row (torch fp32 eager) first, then one row per (artifact,
   backend, device); each row gets the registered measurements (:mod:`.measure`) that apply.
4. Repeats are interleaved (repeat 1 of every row, then repeat 2 ...), so a slow spell on a shared machine
   spreads over all rows instead of landing on one. Each (row, repeat) runs in a fresh process.
5. Rows are collated (medians, min-max, tool ratios) into ``results.json`` and the reports.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facederm.runtime.errors import ConfigError
from facederm.runtime.version import __version__

from .collate import collate
from .environment import describe_environment, usable_cpus
from .measure import Context, Measured, Measurement, Settings, registry
from .plan import RowSpec, plan_rows
from .schema import BenchConfig, BenchResults
from .source import EvalData, data_spec, prepare_eval, resolve_source

WORK_DIR = "work"
#: Environment variables that cap the threads of the math libraries in each row's process.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
WORKER = "from facederm.benchmarks.measure import main; main()"


@dataclass
class BenchOptions:
    """Every ``facederm-bench`` option. ``iterations`` (a count) or ``seconds`` (a budget) per timing loop."""

    out: Path = Path("bench-results")
    data: str | None = None  # --eval-data
    backends: list[str] | None = None
    batch: int = 8
    iterations: int | None = None
    seconds: float | None = 2.0
    warmup: int = 5
    threads: int | None = None  # None: every CPU this process may use
    repeats: int = 3
    tool_seconds: float = 3.0
    run_dir: Path | None = None
    max_images: int | None = None
    device: str | None = None  # None: each backend's default (the CPU where it has one)
    targets: tuple[str, ...] = ("all",)
    plots: bool = True
    worker_timeout_s: float = 900.0
    source_kind: str = ""  # set by the default demo ("default")
    command: str = ""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name, flag, least in (
            ("batch", "batch-size", 1),
            ("repeats", "repeats", 1),
            ("warmup", "warmup", 0),
            ("iterations", "iterations", 1),
            ("threads", "threads", 1),
        ):
            value = getattr(self, name)
            if value is not None and value < least:
                raise ConfigError(f"--{flag} must be >= {least}, got {value}")
        if self.iterations is None and (self.seconds is None or self.seconds <= 0):
            raise ConfigError("--seconds must be > 0 (or give --iterations)")


@dataclass
class BenchOutcome:
    results: BenchResults
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)


Step = tuple[str, RowSpec, int, list[Measurement]]  # (where "worker" | "parent", row, repeat, measurements)


def _applicable(
    row: RowSpec, settings: Settings, measured: Measured, where: str, repeat: int, once: bool | None = None
) -> list[Measurement]:
    """The measurements of ``row`` at ``where`` for this repeat (``once``: only those that run once, or only the
    others); the ones that concern the row but cannot run are recorded as skipped."""
    chosen = []
    for m in registry().values():
        if m.where != where or (not m.every_repeat and repeat > 0) or not m.applies(row):
            continue
        if once is not None and once == m.every_repeat:
            continue
        reason = m.skip(row, settings)
        if reason:
            measured.skipped.setdefault(m.name, reason)
        else:
            chosen.append(m)
    return chosen


def build_steps(rows: list[RowSpec], settings: Settings, measured: dict[str, Measured]) -> list[Step]:
    """Per repeat: each row's process, then its per-repeat parent measurements; last, the once-per-row ones."""
    steps: list[Step] = []
    for repeat in range(settings.repeats):
        for row in rows:
            steps.append(("worker", row, repeat, _applicable(row, settings, measured[row.key], "worker", repeat)))
            steps.append(
                ("parent", row, repeat, _applicable(row, settings, measured[row.key], "parent", repeat, once=False))
            )
    for row in rows:
        steps.append(
            ("parent", row, settings.repeats, _applicable(row, settings, measured[row.key], "parent", 0, once=True))
        )
    return [step for step in steps if step[3]]


def run_worker(row: RowSpec, settings: Settings, repeat: int, names: list[str], timeout_s: float) -> dict[str, Any]:
    """Run ``names`` for ``row`` in a fresh Python process; a crash becomes an error for each of them."""
    safe = "".join(c if c.isalnum() else "_" for c in row.key)
    job_path, result_path = (Path(settings.work_dir) / f"{kind}-{safe}-{repeat}.json" for kind in ("job", "result"))
    result_path.unlink(missing_ok=True)
    job = {
        "row": asdict(row),
        "settings": asdict(settings),
        "repeat": repeat,
        "measurements": names,
        "result": str(result_path),
    }
    job_path.write_text(json.dumps(job), encoding="utf-8")
    env = {**os.environ, **{v: str(settings.threads) for v in THREAD_VARIABLES}}
    try:
        done = subprocess.run(
            [sys.executable, "-c", WORKER, str(job_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {n: {"error": f"the row's process did not finish within {timeout_s:.0f} s"} for n in names}
    if done.returncode != 0 or not result_path.is_file():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {n: {"error": f"the row's process exited {done.returncode}: {tail}"} for n in names}
    return json.loads(result_path.read_text(encoding="utf-8"))


def _reference_key(rows: list[RowSpec], measured: dict[str, Measured]) -> str:
    """The baseline when it produced probabilities, else the first fp32 row that did."""
    with_probs = [r for r in rows if measured[r.key].first("predict").get("probabilities")]
    chosen = next((r for r in with_probs if r.is_baseline), None) or next(
        (r for r in with_probs if r.precision == "fp32"), None
    )
    return chosen.key if chosen else (rows[0].key if rows else "")


def execute(
    steps: list[Step],
    rows: list[RowSpec],
    settings: Settings,
    measured: dict[str, Measured],
    eval_data: EvalData | None,
    timeout_s: float,
    advance: Callable[[str], None],
) -> str:
    """Run every step; return the reference row's key."""
    reference = ""
    for where, row, repeat, chosen in steps:
        when = "(accuracy)" if repeat >= settings.repeats else f"repeat {repeat + 1}/{settings.repeats}"
        advance(f"{row.key} {when}: {', '.join(m.name for m in chosen)}")
        if where == "worker":
            for name, value in run_worker(row, settings, repeat, [m.name for m in chosen], timeout_s).items():
                measured[row.key].add(name, value)
            continue
        if repeat >= settings.repeats and not reference:
            reference = _reference_key(rows, measured)
        ctx = Context(
            row,
            settings,
            repeat,
            measured=measured[row.key],
            eval=eval_data,
            reference_key=reference,
            all_measured=measured,
        )
        for m in chosen:
            try:
                measured[row.key].add(m.name, m.run(ctx))
            except Exception as exc:  # a failed measurement is a row's "failed: reason", not a crashed bench
                measured[row.key].errors.setdefault(m.name, f"{type(exc).__name__}: {exc}")
    return reference or _reference_key(rows, measured)


def run_bench(path: str | Path, options: BenchOptions, *, progress: Any = None) -> BenchOutcome:
    """Benchmark every artifact of an export dir (or of a run dir, exported first) on every backend here.

    ``progress``: an object with ``start(total)`` and ``advance(description)`` (the CLI passes a rich
    bar); None runs silently. Returns the results and the files written under ``options.out``.
    """
    started = time.perf_counter()
    out, path = options.out, Path(path)
    work = out / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    threads = options.threads or usable_cpus()
    if not path.exists():
        raise ConfigError(f"{path}: no such export dir or run dir")
    source = resolve_source(path, run_dir=options.run_dir, export_to=out / "export", targets=options.targets)
    timings = {"export_s" if source.kind == "run" else "open_s": time.perf_counter() - started}

    t = time.perf_counter()
    card = source.manifest.card
    spec = data_spec(options.data, card)
    splits = _splits(source.run_dir)
    eval_data = (
        prepare_eval(spec, card, splits, work, have_run=source.run_dir is not None, max_images=options.max_images)
        if spec
        else None
    )
    timings["eval_data_s"] = time.perf_counter() - t

    seconds = None if options.iterations else options.seconds
    settings = Settings(
        batch=options.batch,
        iterations=options.iterations,
        seconds=seconds,
        warmup=options.warmup,
        threads=threads,
        repeats=options.repeats,
        tool_seconds=options.tool_seconds,
        input_size=card.input_size,
        eval_tensor=str(eval_data.tensor_path) if eval_data else "",
        eval_clinical=str(eval_data.clinical_path) if eval_data and eval_data.clinical_path else "",
        clinical_width=card.clinical.width if card.clinical is not None else 0,
        work_dir=str(work),
    )
    rows = plan_rows(source.export_dir, source.manifest, source.run_dir, options.backends, options.device)
    measured = {row.key: Measured(row) for row in rows}
    steps = build_steps(rows, settings, measured)

    t = time.perf_counter()
    if progress is not None:
        progress.start(len(steps))
    reference = execute(
        steps,
        rows,
        settings,
        measured,
        eval_data,
        options.worker_timeout_s,
        progress.advance if progress is not None else (lambda _d: None),
    )
    timings["measure_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started

    config = BenchConfig(
        source=str(path),
        source_kind=options.source_kind or source.kind,  # type: ignore[arg-type]
        export_dir=str(source.export_dir),
        run_dir=str(source.run_dir or ""),
        data=spec or "",
        batch=options.batch,
        iterations=options.iterations,
        seconds=seconds,
        warmup=options.warmup,
        threads=threads,
        repeats=options.repeats,
        backends=tuple(options.backends or ()),
        tool_seconds=options.tool_seconds,
        command=options.command,
    )
    results = BenchResults(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        facederm_version=__version__,
        config=config,
        environment=describe_environment(threads),
        eval=eval_data.info if eval_data else None,
        reference=reference,
        rows=tuple(collate(measured[row.key]) for row in rows),
        timings_s=timings,
        notes=tuple(_notes(eval_data)),
    )
    from .report import write_reports

    return BenchOutcome(results, out, write_reports(results, out, plots=options.plots))


def _splits(run_dir: Path | None) -> dict[str, list[str]]:
    if run_dir is None:
        return {}
    from facederm.training.ensemble import trained_splits

    return trained_splits(run_dir)


def _notes(eval_data: EvalData | None) -> list[str]:
    notes = ["facederm output is decision support for clinicians, not a diagnosis."]
    if eval_data is None:
        notes.append(
            "No evaluation data: accuracy columns are skipped (pass --eval-data pad-ufes-20:DIR or folder:DIR)."
        )
    elif eval_data.info.synthetic:
        notes.append(
            "The evaluation images are SYNTHETIC (procedural blobs): accuracy figures say nothing about "
            "clinical performance. Run on real data with --eval-data pad-ufes-20:DIR or folder:DIR."
        )
    return notes
