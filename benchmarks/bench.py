"""``run_bench``, behind ``facederm-bench``: PATH -> an export dir, the plan's rows, each (row, repeat) in a fresh process
with repeats interleaved across rows (a slow spell spreads over all), then collated into results.json and the reports."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facederm.runtime.card import ModelCard
from facederm.runtime.cpu import usable_cpus
from facederm.runtime.errors import ConfigError, ExportError, SchemaError
from facederm.runtime.layout import CARD_FILE, MANIFEST_FILE, WEIGHTS_FILE, Manifest, is_export_dir, is_run_dir
from facederm.runtime.version import __version__

from .measure import PERCENTILES, Context, Measured, Measurement, Settings, registry
from .plan import RowSpec, plan_rows
from .report import write_reports
from .schema import Accuracy, BenchConfig, BenchResults, EvalInfo, Row, Stat, ToolResult, describe_environment

#: Caps the math libraries' threads in each row's process.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
WORKER = "from facederm.benchmarks.measure import main; main()"
#: ``progress(done, total, what)``: called as each step starts, and once at the end.
Progress = Callable[[int, int, str], None]


# -- what is benchmarked: the export dir (a run dir: exported first), the run dir (--run, or found), the eval images
EVAL_FILE = "eval-images.npy"
EVAL_CLINICAL_FILE = "eval-clinical.npy"  # float32 [N, F]
DEMO = "run facederm-bench without PATH for the demo"
Splits = dict[str, list[str]]  # the run's image ids per split ("train", "val", "test")


@dataclass(frozen=True)
class Source:
    kind: str  # "export" | "run"
    export_dir: Path
    run_dir: Path | None
    manifest: Manifest


def _same_model(run_dir: Path, card: ModelCard) -> bool:
    try:
        found = ModelCard.load(run_dir / CARD_FILE)
    except SchemaError:
        return False
    return found.arch == card.arch and found.labels == card.labels and found.preprocessing == card.preprocessing


def find_run_dir(export_dir: Path, manifest: Manifest, given: Path | None) -> Path | None:
    """The run dir holding the torch weights of ``manifest``'s model, or None."""
    if given is not None:
        if not is_run_dir(given):
            raise ConfigError(f"--run {given}: not a facederm run dir (needs {CARD_FILE} and {WEIGHTS_FILE})")
        if not _same_model(given, manifest.card):
            raise ConfigError(f"--run {given}: its model card does not match {export_dir / MANIFEST_FILE}")
        return given
    name = manifest.source_run
    candidates = [export_dir.parent / name, export_dir / name, Path.cwd() / name] if name else []
    return next((c for c in candidates if is_run_dir(c) and _same_model(c, manifest.card)), None)


def resolve_source(path: Path, *, run_dir: Path | None, export_to: Path, targets: Sequence[str] = ("all",)) -> Source:
    """Open PATH; a run dir is exported first into ``export_to``, gated on its own test split (not ``--eval-data``)."""
    if is_export_dir(path):
        manifest = Manifest.load(path / MANIFEST_FILE)
        return Source("export", path, find_run_dir(path, manifest, run_dir), manifest)
    if not is_run_dir(path):
        dirs = f"neither an export dir ({MANIFEST_FILE}) nor a run dir ({CARD_FILE} + {WEIGHTS_FILE})"
        raise ConfigError(f"{path}: {dirs}; train with facederm-train, export with facederm-export, or {DEMO}")
    from facederm.export import export_run

    export_run(path, out_dir=export_to, targets=list(targets), progress=False)
    if not is_export_dir(export_to):
        raise ExportError(f"{path}: export wrote no {MANIFEST_FILE} in {export_to}")
    return Source("run", export_to, path, Manifest.load(export_to / MANIFEST_FILE))


@dataclass(frozen=True)
class EvalData:
    info: EvalInfo
    y_true: np.ndarray  # class index per image, in the card's label order
    groups: np.ndarray  # patient id per image (the bootstrap's resampling unit)
    tensor_path: Path
    clinical_path: Path | None = None  # the images' encoded clinical answers (a model with clinical fields)


def prepare_eval(
    spec: str, card: ModelCard, splits: Splits, work: Path, *, have_run: bool = True, limit: int | None = None
) -> EvalData:
    """The evaluation images (:func:`facederm.export.calibration.benchmark_images`), prepared as the gate prepares
    them, saved into ``work`` for the rows' processes."""
    from facederm.export.calibration import benchmark_images

    images, selection = benchmark_images(spec, card, splits, have_run=have_run, limit=limit)
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / EVAL_FILE, np.ascontiguousarray(np.stack(images.images()).transpose(0, 3, 1, 2), np.uint8))
    if (clinical := images.clinical()) is not None:  # each image's own recorded answers, encoded by the card's schema
        np.save(work / EVAL_CLINICAL_FILE, clinical)
    counts, synthetic = Counter(s.label for s in images.samples), bool(getattr(images.dataset, "synthetic", False))
    per_class, patients = {label: counts[label] for label in card.labels}, len(set(images.patients.tolist()))
    info = EvalInfo(spec, selection, synthetic, len(images), patients, tuple(card.labels), per_class)
    clinical_path = work / EVAL_CLINICAL_FILE if clinical is not None else None
    return EvalData(info, images.y_true, images.patients, work / EVAL_FILE, clinical_path)


@dataclass
class BenchOptions:
    """Every `facederm-bench` option; `iterations` (a count) or `seconds` (a budget) per timing loop."""

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
    device: str | None = None  # None: each backend's default (its CPU where it has one)
    targets: tuple[str, ...] = ("all",)
    plots: bool = True
    worker_timeout_s: float = 900.0
    source_kind: str = ""  # "default": the demo
    command: str = ""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name, least in (("batch", 1), ("repeats", 1), ("warmup", 0), ("iterations", 1), ("threads", 1)):
            value, flag = getattr(self, name), "batch-size" if name == "batch" else name
            if value is not None and value < least:
                raise ConfigError(f"--{flag} must be >= {least}, got {value}")
        if self.iterations is None and (self.seconds is None or self.seconds <= 0):
            raise ConfigError("--seconds must be > 0 (or give --iterations)")


@dataclass
class BenchOutcome:
    results: BenchResults
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)


SYNTHETIC = "The evaluation images are SYNTHETIC (procedural lesion-like blobs): accuracy figures say nothing \
clinical. Run on real data: facederm-bench RUN_DIR --eval-data pad-ufes-20:DIR (or folder:DIR, a folder per class)."
NO_DATA = "No evaluation data: accuracy columns are skipped (pass --eval-data pad-ufes-20:DIR or folder:DIR)."
Figures = dict[str, Measured]  # row key -> its raw figures
Step = tuple[str, RowSpec, int, list[Measurement]]  # (where: "worker" | "parent", row, repeat, measurements)


def build_steps(rows: list[RowSpec], settings: Settings, measured: Figures) -> list[Step]:
    """Per repeat, each row's process then its parent measurements; last, the once-per-row ones (skips recorded)."""

    def pick(row: RowSpec, where: str, every: tuple[bool, ...]) -> list[Measurement]:
        found = [m for m in registry().values() if m.where == where and m.every_repeat in every and m.applies(row)]
        skips = {m.name: why for m in found if (why := m.skip(row, settings))}
        measured[row.key].skipped = {**skips, **measured[row.key].skipped}  # the first reason stays
        return [m for m in found if m.name not in skips]

    steps: list[Step] = []
    for repeat in range(settings.repeats):
        for row in rows:
            steps.append(("worker", row, repeat, pick(row, "worker", (True, False) if repeat == 0 else (True,))))
            steps.append(("parent", row, repeat, pick(row, "parent", (True,))))
    steps += [("parent", row, settings.repeats, pick(row, "parent", (False,))) for row in rows]
    return [step for step in steps if step[3]]


def run_worker(row: RowSpec, settings: Settings, repeat: int, names: list[str], timeout_s: float) -> dict[str, Any]:
    """``names`` for ``row`` in a fresh Python process; a crash becomes an error of each."""
    safe = "".join(c if c.isalnum() else "_" for c in row.key)
    job_path, result_path = (Path(settings.work_dir) / f"{kind}-{safe}-{repeat}.json" for kind in ("job", "result"))
    result_path.unlink(missing_ok=True)
    job = {"row": asdict(row), "settings": asdict(settings), "repeat": repeat, "measurements": names}
    job_path.write_text(json.dumps({**job, "result": str(result_path)}), encoding="utf-8")
    env = {**os.environ, **{v: str(settings.threads) for v in THREAD_VARIABLES}}
    command = [sys.executable, "-c", WORKER, str(job_path)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {n: {"error": f"the row's process did not finish within {timeout_s:.0f} s"} for n in names}
    if done.returncode != 0 or not result_path.is_file():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {n: {"error": f"the row's process exited {done.returncode}: {tail}"} for n in names}
    return json.loads(result_path.read_text(encoding="utf-8"))


def _reference_key(rows: list[RowSpec], measured: Figures) -> str:
    """The baseline when it produced probabilities, else the first fp32 row that did."""
    scored = [r for r in rows if measured[r.key].first("predict").get("probabilities")]
    chosen = [r for r in scored if r.is_baseline] + [r for r in scored if r.precision == "fp32"] + rows
    return chosen[0].key if chosen else ""


def execute(
    steps: list[Step], settings: Settings, measured: Figures, data: EvalData | None, timeout: float, progress: Progress
) -> str:
    """Run every step; returns the reference row's key."""
    reference, rows = "", [m.row for m in measured.values()]
    for done, (where, row, repeat, chosen) in enumerate(steps):
        when = "(accuracy)" if repeat >= settings.repeats else f"repeat {repeat + 1}/{settings.repeats}"
        progress(done, len(steps), f"{row.key} {when}: {', '.join(m.name for m in chosen)}")
        if where == "worker":
            for name, value in run_worker(row, settings, repeat, [m.name for m in chosen], timeout).items():
                measured[row.key].add(name, value)
            continue
        if repeat >= settings.repeats and not reference:
            reference = _reference_key(rows, measured)
        ctx = Context(row, settings, repeat, None, measured[row.key], data, reference, measured)
        for m in chosen:
            try:
                measured[row.key].add(m.name, m.run(ctx))
            except Exception as exc:  # a row's "failed: reason", not a crashed bench
                measured[row.key].errors.setdefault(m.name, f"{type(exc).__name__}: {exc}")
    progress(len(steps), len(steps), "done")
    return reference or _reference_key(rows, measured)


def _clean(value: Any) -> Any:  # NaN / inf -> None, recursively (JSON has no NaN)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return [_clean(v) for v in value] if isinstance(value, (list, tuple)) else value


def _ratio(ours: Stat | None, theirs: Stat | None) -> float | None:
    return ours.median / theirs.median if ours is not None and theirs is not None and theirs.median else None


def _status(measured: Measured, names: tuple[str, ...], skip: str) -> tuple[str, str]:
    """failed with the first error; ok when a named measurement ran; else skipped."""
    if errors := [f"{n}: {measured.errors[n]}" for n in names if n in measured.errors]:
        return "failed", errors[0]
    return ("ok", "") if any(measured.results.get(n) for n in names) else ("skipped", skip)


def _tool(measured: Measured, name: str, latency: Stat | None, throughput: Stat | None) -> ToolResult | None:
    runs = measured.results.get(name, [])
    if name in measured.errors:
        return ToolResult(tool=name, status="failed", reason=measured.errors[name])
    if not runs:
        skip = measured.skipped.get(name)
        return ToolResult(tool=name, status="skipped", reason=skip) if skip else None
    p50, ips = Stat.of(measured.values(name, "p50")), Stat.of(measured.values(name, "throughput_ips"))
    tool, command = runs[0].get("tool", name), runs[0].get("command", "")
    return ToolResult(tool, "ok", "", command, p50, ips, _ratio(latency, p50), _ratio(throughput, ips))


def collate(measured: Measured) -> Row:
    """A row's per-repeat figures -> its :class:`Row`: failed if anything failed, ok if anything was measured."""
    spec = measured.row
    latency = {p: s for p in PERCENTILES if (s := Stat.of(measured.values("latency", p))) is not None}
    throughput = Stat.of(measured.values("throughput", "throughput_ips"))
    speed = _status(measured, ("load", "latency", "throughput", "memory"), spec.failed or spec.speed_skip)
    acc = _status(measured, ("predict", "accuracy", "twin"), spec.failed or spec.accuracy_skip or "no evaluation data")
    parts = (("speed", *speed), ("accuracy", *acc))
    if spec.failed or "failed" in (speed[0], acc[0]):
        status, reason = "failed", spec.failed or "; ".join(f"{w}: {why}" for w, s, why in parts if s == "failed")
    elif "ok" in (speed[0], acc[0]):
        status, reason = "ok", "; ".join(f"{w} skipped: {why}" for w, s, why in parts if s == "skipped" and why)
    else:
        status, reason = "skipped", next((why for _, _, why in parts if why), "")
    raw = measured.first("accuracy") or measured.first("twin")
    ci = tuple(raw["delta_macro_recall_ci"]) if raw else ()
    accuracy = Accuracy(**_clean({**raw, "delta_macro_recall_ci": ci})) if raw else None
    tools = [_tool(measured, m.name, latency.get("p50"), throughput) for m in registry().values() if m.tool]
    runs = [r for r in measured.results.get("latency", []) if r.get("samples_ms")]
    median_run = statistics.median_low([r["p50"] for r in runs]) if runs else None
    row = {k: getattr(spec, k) for k in ("key", "artifact", "target", "precision", "backend", "device", "note")}
    row.update({k: Stat.of(measured.values("load", k)) for k in ("import_ms", "cold_load_ms", "first_inference_ms")})
    row.update(path=spec.display_path, status=status, reason=reason, speed_status=speed[0], speed_reason=speed[1])
    row.update(validated=accuracy.validated if accuracy else spec.validated, accuracy_status=acc[0])
    row.update(compute_precision=measured.first("load").get("compute_precision"), accuracy_reason=acc[1])
    row.update(size_mb=spec.size_bytes / 2**20 if spec.size_bytes else None, throughput_ips=throughput)
    row.update(peak_rss_mb=Stat.of(measured.values("memory", "peak_rss_mb")), accuracy=accuracy, latency_ms=latency)
    samples = next((tuple(map(float, r["samples_ms"])) for r in runs if r["p50"] == median_run), ())
    return Row(**row, latency_samples_ms=samples, tools=tuple(t for t in tools if t is not None))


def run_bench(path: str | Path, options: BenchOptions, *, progress: Progress | None = None) -> BenchOutcome:
    """Benchmark every artifact of an export dir (a run dir: exported first) on every backend here."""
    started = time.perf_counter()
    out, path = options.out, Path(path)
    (work := out / "work").mkdir(parents=True, exist_ok=True)
    threads = options.threads or usable_cpus()
    if not path.exists():
        raise ConfigError(f"{path}: no such export dir or run dir")
    source = resolve_source(path, run_dir=options.run_dir, export_to=out / "export", targets=options.targets)
    timings = {"export_s" if source.kind == "run" else "open_s": time.perf_counter() - started}
    t, card = time.perf_counter(), source.manifest.card
    trained_on = card.data.get("spec") if isinstance(card.data, dict) else None
    spec = options.data or trained_on or None  # --eval-data, else the data the run was trained on
    eval_data = None
    if spec:
        from facederm.training.ensemble import trained_splits

        splits, have_run = (trained_splits(source.run_dir), True) if source.run_dir else ({}, False)
        eval_data = prepare_eval(spec, card, splits, work, have_run=have_run, limit=options.max_images)
    timings["eval_data_s"] = time.perf_counter() - t
    seconds, ev = None if options.iterations else options.seconds, eval_data
    timing = {k: getattr(options, k) for k in ("batch", "iterations", "warmup", "repeats", "tool_seconds")}
    timing.update(seconds=seconds, threads=threads)
    clinical = str(ev.clinical_path) if ev and ev.clinical_path else ""
    width = card.clinical.width if card.clinical is not None else 0
    inputs = {"eval_tensor": str(ev.tensor_path) if ev else "", "eval_clinical": clinical, "work_dir": str(work)}
    settings = Settings(**timing, **inputs, input_size=card.input_size, clinical_width=width)
    rows = plan_rows(source.export_dir, source.manifest, source.run_dir, options.backends, options.device)
    measured = {row.key: Measured(row) for row in rows}
    steps = build_steps(rows, settings, measured)
    t = time.perf_counter()
    report = progress or (lambda _done, _total, _what: None)
    reference = execute(steps, settings, measured, eval_data, options.worker_timeout_s, report)
    timings["measure_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    where: dict[str, Any] = {"source": str(path), "source_kind": options.source_kind or source.kind, "data": spec or ""}
    where.update(export_dir=str(source.export_dir), run_dir=str(source.run_dir or ""), command=options.command)
    config = BenchConfig(**timing, **where, backends=tuple(options.backends or ()))
    note = NO_DATA if eval_data is None else SYNTHETIC if eval_data.info.synthetic else ""
    notes = ("facederm output is decision support for clinicians, not a diagnosis.", *([note] if note else []))
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rows_out = tuple(collate(measured[row.key]) for row in rows)
    info, environment = eval_data.info if eval_data else None, describe_environment(threads)
    results = BenchResults(created, __version__, config, environment, info, reference, rows_out, timings, notes)
    return BenchOutcome(results, out, write_reports(results, out, plots=options.plots))
