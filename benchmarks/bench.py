"""``run_bench``: the Python entry point behind ``facederm-bench`` (the CLI only parses and prints).

1. PATH -> an export dir (a run dir is exported first, to every target installed).
2. The evaluation images are preprocessed once (:mod:`.evaldata`).
3. The plan (:mod:`.plan`): the baseline row (torch fp32 eager) first, then one row per (artifact,
   backend, device); each row gets the registered measurements (:mod:`.measurements`) that apply.
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from facederm.runtime.errors import ConfigError
from facederm.runtime.version import __version__

from .collate import collate
from .environment import describe_environment, usable_cpus
from .evaldata import EvalData, data_spec, prepare_eval
from .measurements import REGISTRY, Measured, Measurement, Settings
from .plan import RowSpec, plan_rows
from .schema import BenchConfig, BenchResults
from .source import resolve_source

WORK_DIR = "work"
#: Environment variables that cap the threads of the math libraries in each row's process.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class BenchOptions:
    """Every ``facederm-bench`` option. ``iterations`` (a count) or ``seconds`` (a budget) per timing loop."""

    out: Path = Path("bench-results")
    data: str | None = None
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
    targets: tuple[str, ...] = ("all",)
    plots: bool = True
    progress: bool = True
    worker_timeout_s: float = 900.0
    source_kind: str = ""  # set by the default demo ("default")
    command: str = ""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("batch", "repeats", "warmup"):
            if getattr(self, name) < (0 if name == "warmup" else 1):
                raise ConfigError(f"--{name} must be >= {0 if name == 'warmup' else 1}, got {getattr(self, name)}")
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"--iterations must be >= 1, got {self.iterations}")
        if self.iterations is None and (self.seconds is None or self.seconds <= 0):
            raise ConfigError("--seconds must be > 0 (or give --iterations)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")


@dataclass
class BenchOutcome:
    results: BenchResults
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class ParentContext:
    """What a parent-side measurement sees: its row, the settings, the row's raw figures, the reference."""

    row: RowSpec
    settings: Settings
    measured: Measured
    eval: EvalData | None
    reference_key: str
    all_measured: dict[str, Measured]

    def reference_probabilities(self) -> np.ndarray | None:
        ref = self.all_measured.get(self.reference_key)
        path = ref.first("predict").get("probabilities") if ref else None
        return np.load(path) if path else None

    def reference_accuracy(self) -> dict[str, Any] | None:
        ref = self.all_measured.get(self.reference_key)
        return ref.first("accuracy") if ref else None


Step = tuple[str, RowSpec, int, list[Measurement]]  # (kind "worker" | "parent", row, repeat, measurements)


def _applicable(row: RowSpec, settings: Settings, measured: Measured, where: str, repeat: int) -> list[Measurement]:
    chosen = []
    for m in REGISTRY.values():
        if m.where != where or (not m.every_repeat and repeat > 0) or not m.applies(row):
            continue
        reason = m.skip_reason(row, settings)
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
            worker = _applicable(row, settings, measured[row.key], "worker", repeat)
            if worker:
                steps.append(("worker", row, repeat, worker))
            parent = [m for m in _applicable(row, settings, measured[row.key], "parent", repeat) if m.every_repeat]
            if parent:
                steps.append(("parent", row, repeat, parent))
    for row in rows:
        final = [m for m in _applicable(row, settings, measured[row.key], "parent", 0) if not m.every_repeat]
        if final:
            steps.append(("parent", row, settings.repeats, final))
    return steps


def run_worker(row: RowSpec, settings: Settings, repeat: int, names: list[str], timeout_s: float) -> dict[str, Any]:
    """Run ``names`` for ``row`` in a fresh Python process; a crash becomes an error for each of them."""
    work = Path(settings.work_dir)
    safe = "".join(c if c.isalnum() else "_" for c in row.key)
    job_path = work / f"job-{safe}-{repeat}.json"
    result_path = work / f"result-{safe}-{repeat}.json"
    result_path.unlink(missing_ok=True)
    job = {"row": asdict(row), "settings": asdict(settings), "repeat": repeat, "measurements": names,
           "result": str(result_path)}
    job_path.write_text(json.dumps(job), encoding="utf-8")
    env = {**os.environ, **{v: str(settings.threads) for v in THREAD_VARIABLES}}
    try:
        done = subprocess.run([sys.executable, "-m", "facederm.benchmarks.worker", str(job_path)], env=env,
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {n: {"error": f"the row's process did not finish within {timeout_s:.0f} s"} for n in names}
    if done.returncode != 0 or not result_path.is_file():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {n: {"error": f"the row's process exited {done.returncode}: {tail}"} for n in names}
    return json.loads(result_path.read_text(encoding="utf-8"))


def _record(measured: Measured, name: str, value: dict[str, Any]) -> None:
    if "error" in value:
        measured.errors.setdefault(name, value["error"])
    else:
        measured.add(name, value)


def _reference_key(rows: list[RowSpec], measured: dict[str, Measured]) -> str:
    """The baseline when it produced probabilities, else the first native fp32 row that did."""
    def has_probs(row: RowSpec) -> bool:
        return bool(measured[row.key].first("predict").get("probabilities"))

    for row in rows:
        if row.is_baseline and has_probs(row):
            return row.key
    for row in rows:
        if row.precision == "fp32" and has_probs(row):
            return row.key
    return rows[0].key if rows else ""


def execute(steps: list[Step], rows: list[RowSpec], settings: Settings, measured: dict[str, Measured],
            eval_data: EvalData | None, timeout_s: float, advance: Callable[[str], None]) -> str:
    """Run every step; return the reference row's key."""
    reference = ""
    for kind, row, repeat, chosen in steps:
        label = f"{row.key} " + ("(accuracy)" if repeat >= settings.repeats else f"repeat {repeat + 1}/{settings.repeats}")
        advance(f"{label}: {', '.join(m.name for m in chosen)}")
        if kind == "worker":
            for name, value in run_worker(row, settings, repeat, [m.name for m in chosen], timeout_s).items():
                _record(measured[row.key], name, value)
            continue
        if repeat >= settings.repeats and not reference:
            reference = _reference_key(rows, measured)
        ctx = ParentContext(row, replace(settings), measured[row.key], eval_data, reference, measured)
        for m in chosen:
            try:
                _record(measured[row.key], m.name, m.run(ctx))
            except Exception as exc:  # a failed measurement is a row's "failed: reason", not a crashed bench
                measured[row.key].errors.setdefault(m.name, f"{type(exc).__name__}: {exc}")
    return reference or _reference_key(rows, measured)


def run_bench(path: str | Path | None, options: BenchOptions, *, progress: Any = None) -> BenchOutcome:
    """Benchmark every artifact of an export dir (or of a run dir, exported first) on every backend here.

    ``progress``: an object with ``start(total)`` and ``advance(description)`` (the CLI passes a rich
    bar); None runs silently. Returns the results and the files written under ``options.out``.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = options.out
    work = out / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    threads = options.threads or usable_cpus()
    if path is None:
        raise ConfigError("run_bench: no PATH (use facederm.benchmarks.default_model.build_default for the demo)")
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such export dir or run dir")

    t = time.perf_counter()
    # The export evaluates on the run's own test split (its default): passing --data would make every image an
    # evaluation image and leave calibration nothing when --data is the training data.
    source = resolve_source(path, run_dir=options.run_dir, export_to=out / "export", targets=options.targets)
    timings["export_s" if source.kind == "run" else "open_s"] = time.perf_counter() - t

    t = time.perf_counter()
    card = source.manifest.card
    spec = data_spec(options.data, card)
    splits = _splits(source.run_dir)
    eval_data = prepare_eval(spec, card, splits, work, have_run=source.run_dir is not None,
                             max_images=options.max_images) if spec else None
    timings["eval_data_s"] = time.perf_counter() - t

    settings = Settings(batch=options.batch, iterations=options.iterations,
                        seconds=None if options.iterations else options.seconds, warmup=options.warmup,
                        threads=threads, repeats=options.repeats, tool_seconds=options.tool_seconds,
                        input_size=card.input_size, eval_tensor=str(eval_data.tensor_path) if eval_data else "",
                        work_dir=str(work))
    rows = plan_rows(source.export_dir, source.manifest, source.run_dir, options.backends)
    measured = {row.key: Measured(row) for row in rows}
    steps = build_steps(rows, settings, measured)

    t = time.perf_counter()
    if progress is not None:
        progress.start(len(steps))
    reference = execute(steps, rows, settings, measured, eval_data, options.worker_timeout_s,
                        progress.advance if progress is not None else (lambda _d: None))
    timings["measure_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started

    config = BenchConfig(
        source=str(path), source_kind=options.source_kind or source.kind, export_dir=str(source.export_dir),
        run_dir=str(source.run_dir or ""), data=spec or "", batch=options.batch, iterations=options.iterations,
        seconds=None if options.iterations else options.seconds, warmup=options.warmup, threads=threads,
        repeats=options.repeats, backends=tuple(options.backends or ()), tool_seconds=options.tool_seconds,
        command=options.command,
    )
    results = BenchResults(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        facederm_version=__version__, config=config, environment=describe_environment(threads),
        eval=eval_data.info if eval_data else None, reference=reference,
        rows=tuple(collate(measured[row.key], settings) for row in rows), timings_s=timings,
        notes=tuple(_notes(eval_data, spec)),
    )
    from .report import write_reports

    files = write_reports(results, out, plots=options.plots)
    return BenchOutcome(results, out, files)


def _splits(run_dir: Path | None) -> dict[str, list[str]]:
    if run_dir is None:
        return {}
    from facederm.training.rundir import load_splits

    return load_splits(run_dir)


def _notes(eval_data: EvalData | None, spec: str | None) -> list[str]:
    notes = ["facederm output is decision support for clinicians, not a diagnosis."]
    if eval_data is None:
        notes.append("No evaluation data: accuracy columns are skipped (pass --data pad-ufes-20:DIR or folder:DIR).")
    elif eval_data.info.synthetic:
        notes.append("The evaluation images are SYNTHETIC (procedural blobs): accuracy figures say nothing about "
                     "clinical performance. Run on real data with --data pad-ufes-20:DIR or --data folder:DIR.")
    return notes
