"""The one measurement interface of ``facederm-bench``: settings, timing, the registry, and a row's own process.

A measurement is a function registered with :func:`measurement`. ``where`` says where it runs:

- ``"worker"``: inside the row's own fresh process (:func:`main`), so memory and cold-load figures are that
  row's alone. ``every_repeat`` ones run in each repeat's process; the others in the first repeat's only.
- ``"parent"``: in the bench process, with the worker results at hand (accuracy, a backend's own tool).

Both get a :class:`Context`.

``applies(row)`` says whether it concerns a row at all (left out otherwise); ``skip(row, settings)`` says why it
cannot run on a row that it concerns ("" = it can), recorded as skipped with that reason. A measurement returns
JSON-able figures; raising records a failure with its message.

Plug-ins: a module listed in :data:`PLUGINS` is imported (in the bench and in every row's process) before the
registry is read; its ``@measurement`` functions join the plan, and a backend class it registers with
:func:`facederm.runtime.backends.register` gets rows of its own wherever it reads an artifact.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facederm.runtime import backends as runtime_backends
from facederm.runtime.backends import Backend
from facederm.runtime.probe import make_probe

from .plan import RowSpec

#: Modules whose import registers measurements (and any bench-side backends), in plan order. Add yours here.
PLUGINS: list[str] = ["facederm.benchmarks.measurements", "facederm.benchmarks.in_browser"]


# -- settings and timing -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """How long to time: ``iterations`` calls, or as many as fit in ``seconds`` (at least ``min_calls``)."""

    iterations: int | None = None
    seconds: float | None = 2.0
    warmup: int = 5
    min_calls: int = 5

    def __post_init__(self) -> None:
        if (self.iterations is None) == (self.seconds is None):
            raise ValueError("Budget: give exactly one of iterations or seconds")


@dataclass(frozen=True)
class Settings:
    """Run-wide measurement settings, shared by every row (JSON-able: the worker receives them)."""

    batch: int = 8
    iterations: int | None = None
    seconds: float | None = 2.0
    warmup: int = 5
    threads: int = 2
    repeats: int = 3
    tool_seconds: float = 3.0
    input_size: int = 224
    eval_tensor: str = ""  # .npy of uint8 NCHW evaluation images ("" = none)
    eval_clinical: str = ""  # .npy of float32 [N, F] recorded clinical answers of those images ("" = none)
    clinical_width: int = 0  # F of a model with clinical fields (0: image-only)
    work_dir: str = ""

    def budget(self, batch: int = 1) -> Budget:
        """The timing budget of a loop at ``batch``: batched loops make fewer, longer calls."""
        seconds = None if self.iterations else self.seconds
        if batch == 1:
            return Budget(iterations=self.iterations, seconds=seconds, warmup=self.warmup)
        return Budget(
            iterations=max(2, self.iterations // batch) if self.iterations else None,
            seconds=seconds,
            warmup=max(1, self.warmup // 2),
            min_calls=3,
        )


def time_calls(fn: Callable[[], object], budget: Budget) -> list[float]:
    """Milliseconds per call of ``fn`` after ``budget.warmup`` untimed calls: every latency figure's one clock."""
    for _ in range(budget.warmup):
        fn()
    samples: list[float] = []
    deadline = time.perf_counter() + budget.seconds if budget.seconds is not None else 0.0
    while True:
        start = time.perf_counter()
        fn()
        end = time.perf_counter()
        samples.append((end - start) * 1e3)
        if budget.iterations is not None and len(samples) >= budget.iterations:
            break
        if budget.iterations is None and end >= deadline and len(samples) >= budget.min_calls:
            break
    return samples


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 of per-call milliseconds."""
    p50, p90, p99 = np.percentile(np.asarray(samples_ms, dtype=float), [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def throughput(samples_ms: list[float], batch: int) -> float:
    """Images per second over the timed calls (total images / total time)."""
    total_s = sum(samples_ms) / 1e3
    return batch * len(samples_ms) / total_s if total_s > 0 else float("nan")


# -- raw results and the registry ----------------------------------------------------------------------------
@dataclass
class Measured:
    """Raw results of one row: per measurement name, one dict per repeat that ran it."""

    row: RowSpec
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # measurement -> why it does not apply

    def add(self, name: str, value: dict[str, Any]) -> None:
        if "error" in value:
            self.errors.setdefault(name, value["error"])
        else:
            self.results.setdefault(name, []).append(value)

    def values(self, name: str, key: str) -> list[Any]:
        return [r[key] for r in self.results.get(name, []) if r.get(key) is not None]

    def first(self, name: str) -> dict[str, Any]:
        found = self.results.get(name)
        return found[0] if found else {}


def not_run_here(row: RowSpec, settings: Settings) -> str:
    """The default skip: a row whose model does not run here skips every measurement, for the row's reason."""
    return "" if row.runs_here else (row.failed or row.speed_skip)


@dataclass(frozen=True)
class Measurement:
    """One registered step of the plan (see the module docstring)."""

    name: str
    where: Literal["worker", "parent"]
    run: Callable[[Any], dict[str, Any]]
    describe: str = ""  # shown in the progress bar and in report.md's method section
    every_repeat: bool = True
    tool: bool = False  # a backend's own figures, reported beside facederm's as ratios (ToolResult)
    applies: Callable[[RowSpec], bool] = lambda row: True
    skip: Callable[[RowSpec, Settings], str] = not_run_here


REGISTRY: dict[str, Measurement] = {}


def measurement(
    name: str, where: Literal["worker", "parent"], describe: str, **options: Any
) -> Callable[[Callable[[Any], dict[str, Any]]], Callable[[Any], dict[str, Any]]]:
    """Decorator: register ``fn(ctx) -> figures`` as a measurement (``options``: the other :class:`Measurement`
    fields). Registration order = order within a row."""

    def register(fn: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
        REGISTRY[name] = Measurement(name, where, fn, describe, **options)
        return fn

    return register


def registry() -> dict[str, Measurement]:
    """Every registered measurement, the :data:`PLUGINS` imported first."""
    for module in PLUGINS:
        importlib.import_module(module)
    return REGISTRY


def backend_of(row: RowSpec) -> type[Backend] | None:
    """The runtime backend class of a row that runs one (None for the baseline and unreadable rows)."""
    return runtime_backends.get(row.backend) if row.runner == "runtime" else None


# -- opening a row's model: a registry keyed by RowSpec.runner -----------------------------------------------
@dataclass
class Opened:
    """An opened model: its predict function and what the backend reports about how it computes."""

    run: Callable[..., np.ndarray]  # (images) or, for a clinical model, (images, encoded answers)
    compute_precision: str | None = None
    details: str = ""


def open_torch(row: RowSpec, threads: int) -> Opened:
    """The run dir's weights in torch, fp32, eager, channels_last: the baseline every other row is compared with."""
    import torch

    from facederm.training.ensemble import is_cv_dir, load_trained
    from facederm.training.models import ProbabilityModel

    torch.set_num_threads(threads)
    classifier, card = load_trained(Path(row.path), ensemble=is_cv_dir(row.path))  # a CV dir: its fold ensemble
    model = ProbabilityModel.from_card(classifier, card).eval().to(memory_format=torch.channels_last)

    def run(batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            return (model(x) if clinical is None else model(x, torch.from_numpy(clinical))).numpy()

    return Opened(run, "fp32", f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def open_runtime(row: RowSpec, threads: int) -> Opened:
    """The artifact through :func:`facederm.runtime.load` with the row's backend: the path an app takes."""
    from facederm.runtime import load

    model = load(
        row.path,
        backend=row.backend,
        device=row.device if row.device not in ("-", "default") else None,
        threads=threads,
        **row.options,
    )
    # The backend's own report of the precision it computes in (OpenVINO: bf16 on AMX CPUs by default).
    return Opened(model.run, model.compute_precision or row.precision, repr(model))


#: runner -> (the libraries it imports, timed apart from the cold load; how it opens a row's model)
RUNNERS: dict[str, tuple[Callable[[RowSpec], list[str]], Callable[[RowSpec, int], Opened]]] = {
    "torch": (lambda row: ["torch", "facederm.training.rundir", "facederm.training.models"], open_torch),
    "runtime": (
        lambda row: ["facederm.runtime", *filter(None, [getattr(backend_of(row), "library", "")])],
        open_runtime,
    ),
}


# -- what a measurement sees, and a row's own process -----------------------------------------------------------
@dataclass
class Context:
    """What a measurement sees. In a row's process: the opened model and input batches. In the bench process:
    the row's raw figures so far, the evaluation data, and the reference row's figures."""

    row: RowSpec
    settings: Settings
    repeat: int = 0
    opened: Opened | None = None
    measured: Measured | None = None
    eval: Any = None  # source.EvalData
    reference_key: str = ""
    all_measured: dict[str, Measured] = field(default_factory=dict)

    def input_batch(self, n: int) -> np.ndarray:
        """float32 NCHW 0-255: the first evaluation images when there are any, else the seeded probe."""
        if self.settings.eval_tensor:
            images = np.load(self.settings.eval_tensor, mmap_mode="r")
            if len(images):
                return np.ascontiguousarray(images[np.arange(n) % len(images)], dtype=np.float32)
        return make_probe(seed=0, batch=n, size=self.settings.input_size)

    def input_clinical(self, n: int) -> np.ndarray | None:
        """float32 [n, F]: the recorded answers of :meth:`input_batch`'s images (a clinical model with evaluation
        data), else None: the artifact then encodes "nothing answered" itself."""
        if not self.settings.eval_clinical:
            return None
        answers = np.load(self.settings.eval_clinical, mmap_mode="r")
        return np.ascontiguousarray(answers[np.arange(n) % len(answers)], dtype=np.float32) if len(answers) else None

    def call(self, run: Callable[..., np.ndarray], n: int) -> Callable[[], np.ndarray]:
        """``run`` on ``n`` input images (and their answers for a clinical model), ready to time."""
        x, answers = self.input_batch(n), self.input_clinical(n)
        return (lambda: run(x)) if answers is None else (lambda: run(x, answers))

    def reference(self, name: str) -> dict[str, Any]:
        """The reference row's first figures of measurement ``name`` ({} when it has none)."""
        ref = self.all_measured.get(self.reference_key)
        return ref.first(name) if ref else {}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run the job's measurements in order; a failure is recorded and the rest still run when they can."""
    ctx = Context(RowSpec(**job["row"]), Settings(**job["settings"]), int(job["repeat"]))
    known = registry()
    out: dict[str, Any] = {}
    for name in job["measurements"]:
        if ctx.opened is None and name != "load" and "error" in out.get("load", {}):
            out[name] = {"error": f"not run: the model did not load ({out['load']['error']})"}
            continue
        try:
            out[name] = known[name].run(ctx)
        except Exception as exc:  # every failure becomes a row's "failed: reason", never a crash of the bench
            out[name] = {"error": f"{type(exc).__name__}: {exc}".strip(), "traceback": traceback.format_exc(limit=6)}
    return out


def main(argv: list[str] | None = None) -> None:
    """A row's process (a fresh one per (row, repeat) makes cold load and peak RSS honest: nothing another backend
    loaded is in memory): reads the job the parent wrote, writes ``{name: figures | {"error": ...}}`` for it."""
    job = json.loads(Path((sys.argv[1:] if argv is None else argv)[0]).read_text(encoding="utf-8"))
    Path(job["result"]).write_text(json.dumps(run_job(job)), encoding="utf-8")
