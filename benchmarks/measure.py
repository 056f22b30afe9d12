"""The measurement interface (:func:`measurement`; :data:`PLUGINS` imported first), the built-ins, and a row's fresh
process (:func:`main`: "worker" measurements, so memory and cold load are its own; "parent" ones in the bench)."""

from __future__ import annotations

import importlib
import json
import resource
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facederm.runtime import backends as runtime_backends
from facederm.runtime.backends import Backend
from facederm.runtime.backends.base import NativeTool
from facederm.runtime.metadata import CLINICAL_INPUT_NAME
from facederm.runtime.probe import make_probe
from facederm.runtime.schema import to_dict

from .plan import RowSpec

#: Modules whose import registers more measurements (or bench-side backends). Add yours here.
PLUGINS: list[str] = []
PERCENTILES = ("p50", "p90", "p99")
CHUNK = 16  # evaluation images per call of the accuracy pass
PAGE_IMAGES, PAGE_REPEATS = 8, 4  # the web page: images fed, times each


@dataclass(frozen=True)
class Settings:
    """Run-wide settings shared by every row (JSON-able: the row's process receives them)."""

    batch: int = 8
    iterations: int | None = None
    seconds: float | None = 2.0
    warmup: int = 5
    threads: int = 2
    repeats: int = 3
    tool_seconds: float = 3.0
    input_size: int = 224
    eval_tensor: str = ""  # .npy of uint8 NCHW evaluation images ("": none)
    eval_clinical: str = ""  # .npy of float32 [N, F] recorded clinical answers of those images ("": none)
    clinical_width: int = 0  # F of a model with clinical fields (0: image-only)
    work_dir: str = ""

    def time(self, fn: Callable[[], object], batch: int = 1) -> list[float]:
        """Milliseconds per call of ``fn`` after warm-up: ``iterations`` calls, else as many as fit in ``seconds``."""
        single = batch == 1
        iterations = self.iterations if single or not self.iterations else max(2, self.iterations // batch)
        for _ in range(self.warmup if single else max(1, self.warmup // 2)):
            fn()
        samples: list[float] = []
        least, deadline = (5 if single else 3), time.perf_counter() + (self.seconds or 0.0)
        while len(samples) < iterations if iterations else len(samples) < least or time.perf_counter() < deadline:
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1e3)
        return samples


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    return dict(zip(PERCENTILES, (float(v) for v in np.percentile(samples_ms, [50, 90, 99]))))


def throughput(samples_ms: list[float], batch: int) -> float:  # images per second over the timed calls
    total_s = sum(samples_ms) / 1e3
    return batch * len(samples_ms) / total_s if total_s > 0 else float("nan")


@dataclass
class Measured:
    """Raw figures of one row: per measurement, one dict per repeat that ran it."""

    row: RowSpec
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # measurement -> why it could not run

    def add(self, name: str, value: dict[str, Any]) -> None:
        if "error" in value:
            self.errors.setdefault(name, value["error"])
        else:
            self.results.setdefault(name, []).append(value)

    def values(self, name: str, key: str) -> list[Any]:
        return [r[key] for r in self.results.get(name, []) if r.get(key) is not None]

    def first(self, name: str) -> dict[str, Any]:
        return next(iter(self.results.get(name, [])), {})


def not_run_here(row: RowSpec, settings: Settings) -> str:
    """The default skip: a row that does not run here skips every measurement, for the row's reason."""
    return "" if row.runs_here else (row.failed or row.speed_skip)


@dataclass(frozen=True)
class Measurement:
    name: str
    where: Literal["worker", "parent"]
    run: Callable[[Any], dict[str, Any]]
    describe: str = ""  # report.md's method section
    every_repeat: bool = True
    tool: bool = False  # another tool's figures, reported beside facederm's as ratios (ToolResult)
    applies: Callable[[RowSpec], bool] = lambda row: True
    skip: Callable[[RowSpec, Settings], str] = not_run_here


REGISTRY: dict[str, Measurement] = {}


def measurement(name: str, where: Literal["worker", "parent"], **options: Any) -> Callable[..., Any]:
    """Register ``fn(ctx) -> figures`` (raising: failed), its docstring its description; in registration order."""

    def register(fn: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
        REGISTRY[name] = Measurement(name, where, fn, " ".join((fn.__doc__ or "").split()), **options)
        return fn

    return register


def registry() -> dict[str, Measurement]:  # every registered measurement, the PLUGINS imported first
    for module in PLUGINS:
        importlib.import_module(module)
    return REGISTRY


def backend_of(row: RowSpec) -> type[Backend] | None:  # the runtime backend class of a row that runs one
    return runtime_backends.get(row.backend) if row.runner == "runtime" else None


# -- opening a row's model: a registry keyed by RowSpec.runner -------------------------------------------------
@dataclass
class Opened:
    run: Callable[..., np.ndarray]  # (images) or, for a clinical model, (images, encoded answers)
    compute_precision: str | None = None  # what the backend reports it computes in


def open_torch(row: RowSpec, threads: int) -> Opened:
    """The baseline: the run dir's weights in torch, fp32, eager, channels_last (a CV dir: its fold ensemble)."""
    import torch

    from facederm.training.ensemble import is_cv_dir, load_trained
    from facederm.training.models import ProbabilityModel

    torch.set_num_threads(threads)
    classifier, card = load_trained(Path(row.path), ensemble=is_cv_dir(row.path))
    model = ProbabilityModel.from_card(classifier, card).eval().to(memory_format=torch.channels_last)

    def run(batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            return (model(x) if clinical is None else model(x, torch.from_numpy(clinical))).numpy()

    return Opened(run, "fp32")


def open_runtime(row: RowSpec, threads: int) -> Opened:
    """The artifact through :func:`facederm.runtime.load` with the row's backend: the path an app takes."""
    from facederm.runtime import load

    device = row.device if row.device not in ("-", "default") else None
    model = load(row.path, backend=row.backend, device=device, threads=threads, **row.options)
    return Opened(model.run, model.compute_precision or row.precision)


#: runner -> (the modules it imports, timed apart from the cold load; how it opens a row's model)
RUNNERS: dict[str, tuple[Callable[[RowSpec], list[str]], Callable[[RowSpec, int], Opened]]] = {
    "torch": (lambda row: ["torch", "facederm.training.rundir", "facederm.training.models"], open_torch),
    "runtime": (lambda r: ["facederm.runtime", *filter(None, [getattr(backend_of(r), "library", "")])], open_runtime),
}


# What a measurement sees: the opened model (worker), or the figures so far and the evaluation data (parent).
@dataclass
class Context:
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

    def call(self, run: Callable[..., np.ndarray], n: int, answers: bool = True) -> Callable[[], np.ndarray]:
        """``run`` on ``n`` input images, ready to time (with their recorded clinical answers, if ``answers``)."""
        x = self.input_batch(n)
        if not answers or not self.settings.eval_clinical:
            return lambda: run(x)
        recorded = np.load(self.settings.eval_clinical, mmap_mode="r")
        a = np.ascontiguousarray(recorded[np.arange(n) % len(recorded)], dtype=np.float32)
        return (lambda: run(x, a)) if len(recorded) else (lambda: run(x))

    def reference(self, name: str) -> dict[str, Any]:  # the reference row's first figures of measurement `name`
        ref = self.all_measured.get(self.reference_key)
        return ref.first(name) if ref else {}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """The job's measurements in order; a failure is recorded and the rest still run when they can."""
    ctx = Context(RowSpec(**job["row"]), Settings(**job["settings"]), int(job["repeat"]))
    known, out = registry(), {}
    for name in job["measurements"]:
        if ctx.opened is None and name != "load" and "error" in out.get("load", {}):
            out[name] = {"error": f"not run: the model did not load ({out['load']['error']})"}
            continue
        try:
            out[name] = known[name].run(ctx)
        except Exception as exc:  # a row's "failed: reason", never a crash of the bench
            out[name] = {"error": f"{type(exc).__name__}: {exc}".strip(), "traceback": traceback.format_exc(limit=6)}
    return out


def main(argv: list[str] | None = None) -> None:
    """A row's process: reads the job the bench wrote, writes ``{name: figures | {"error": ...}}``."""
    job = json.loads(Path((sys.argv[1:] if argv is None else argv)[0]).read_text(encoding="utf-8"))
    Path(job["result"]).write_text(json.dumps(run_job(job)), encoding="utf-8")


# -- the built-in measurements, in plan order; each docstring is its line in report.md's method section ---------
@measurement("load", "worker")
def load(ctx: Any) -> dict[str, Any]:
    """import ms, cold load ms (open: sha256 check + read + compile), first inference ms"""
    libraries, open_model = RUNNERS[ctx.row.runner]
    start, _ = time.perf_counter(), [importlib.import_module(module) for module in libraries(ctx.row)]
    loaded = time.perf_counter()
    ctx.opened = open_model(ctx.row, ctx.settings.threads)
    first, opened = ctx.call(ctx.opened.run, 1), time.perf_counter()
    first()
    done, precision = time.perf_counter(), ctx.opened.compute_precision
    times = {"import_ms": loaded - start, "cold_load_ms": opened - loaded, "first_inference_ms": done - opened}
    return {**{k: v * 1e3 for k, v in times.items()}, "compute_precision": precision}


@measurement("latency", "worker")
def latency(ctx: Any) -> dict[str, Any]:
    """batch 1, after warm-up; p50/p90/p99 of per-call ms"""
    samples = ctx.settings.time(ctx.call(ctx.opened.run, 1))
    return {**percentiles(samples), "samples_ms": samples}


@measurement("throughput", "worker")
def batch_throughput(ctx: Any) -> dict[str, Any]:
    """batch B, back-to-back calls, one stream; images / s"""
    batch = ctx.settings.batch
    samples = ctx.settings.time(ctx.call(ctx.opened.run, batch), batch)
    return {"throughput_ips": throughput(samples, batch), "batch": batch, "calls": len(samples)}


@measurement("memory", "worker")
def memory(ctx: Any) -> dict[str, Any]:
    """peak RSS of the row's own process after load + latency + throughput"""
    # Linux: VmHWM (ru_maxrss survives exec, so a worker would report its parent's peak).
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii").splitlines()
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"peak_rss_mb": peak / 2**20}


def scored_natively(row: RowSpec) -> bool:
    """Rows whose accuracy is computed here; the others take the export's twin figures."""
    return bool(row.runner) or not row.parity


def scoring_skip(row: RowSpec, settings: Settings) -> str:
    if row.accuracy_skip or not row.runner or row.failed:
        return row.failed or row.accuracy_skip or row.speed_skip
    return "" if settings.eval_tensor else "no evaluation data (pass --eval-data)"


@measurement("predict", "worker", every_repeat=False, applies=scored_natively, skip=scoring_skip)
def predict(ctx: Any) -> dict[str, Any]:
    """probabilities on every evaluation image, saved for scoring"""
    images = np.load(ctx.settings.eval_tensor, mmap_mode="r")
    answers = np.load(ctx.settings.eval_clinical) if ctx.settings.eval_clinical else None
    probs = []
    for i in range(0, len(images), CHUNK):  # a clinical model gets each image's recorded answers
        x = np.ascontiguousarray(images[i : i + CHUNK], dtype=np.float32)
        probs.append(ctx.opened.run(x) if answers is None else ctx.opened.run(x, answers[i : i + CHUNK]))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ctx.row.key)
    path = Path(ctx.settings.work_dir) / f"probs-{safe}.npy"
    np.save(path, np.concatenate(probs).astype(np.float32))
    return {"probabilities": str(path), "n_images": int(len(images))}


def _bare(row: RowSpec) -> bool:  # a backend without its own benchmark program is compared with its bare call
    return (b := backend_of(row)) is not None and b.has_bare_call and b.native_tool is None


@measurement("bare_call", "worker", tool=True, applies=_bare)
def bare_call(ctx: Any) -> dict[str, Any]:
    """the backend library's bare call (e.g. an InferenceSession), same options, same input, same timing code"""
    backend, s, row = runtime_backends.get(ctx.row.backend), ctx.settings, ctx.row
    call = backend.bare_call(Path(row.path), device=row.device, threads=s.threads, options=row.options)
    batched = s.time(ctx.call(call, s.batch, answers=False), s.batch)
    command = f"{backend.name} bare call on {row.display_path}, {s.threads} threads"
    figures = {**percentiles(s.time(ctx.call(call, 1, answers=False))), "throughput_ips": throughput(batched, s.batch)}
    return {"tool": f"{backend.short_name or backend.name}_bare", **figures, "command": command}


def _tool(row: RowSpec) -> NativeTool | None:
    return getattr(backend_of(row), "native_tool", None)


def _tool_skip(row: RowSpec, settings: Settings) -> str:
    if not row.runs_here or (tool := _tool(row)) is None:
        return not_run_here(row, settings)
    return "" if tool.executable() else f"{tool.name} not found on PATH ({tool.install_hint})"


@measurement("native_tool", "parent", tool=True, applies=lambda r: _tool(r) is not None, skip=_tool_skip)
def native_tool(ctx: Any) -> dict[str, Any]:
    """the backend's own benchmark program (OpenVINO benchmark_app -hint none -nstreams 1 -nireq 1 -api sync),
    same threads, same file"""
    tool, s, row = _tool(ctx.row), ctx.settings, ctx.row
    timeout = s.tool_seconds * 4 + 120  # compile and its own warm-up on top of its timed seconds
    extra = {CLINICAL_INPUT_NAME: (s.clinical_width,)} if s.clinical_width else None
    same = {"threads": s.threads, "input_size": s.input_size, "seconds": s.tool_seconds, "options": row.options}
    device = None if row.device in ("-", "default") else row.device
    commands = [tool.command(row.path, device=device, batch=b, extra_inputs=extra, **same) for b in (1, s.batch)]
    figures = [tool.run(command, timeout) for command in commands]  # batch 1: median latency; batch B: throughput
    shown = shlex.join([tool.name, *commands[0][1:]]).replace(shlex.quote(row.path), shlex.quote(row.display_path))
    p50, ips = figures[0].get("median_ms"), figures[1].get("throughput_ips")
    return {"tool": tool.name, "p50": p50, "throughput_ips": ips, "command": shown}


def _parity_figures(parity: dict[str, Any]) -> dict[str, Any]:
    out = {k: parity.get(k) for k in ("agreement", "max_abs_prob_delta")}
    out.update(delta_macro_recall=parity.get("macro_recall_delta"))
    out["delta_macro_recall_ci"] = [*(parity.get("macro_recall_delta_ci") or []), None, None][:2]
    return {**out, "per_class_recall_delta": dict(parity.get("per_class_recall_delta") or {})}


@measurement("accuracy", "parent", every_repeat=False, applies=scored_natively, skip=scoring_skip)
def accuracy(ctx: Any) -> dict[str, Any]:
    """macro recall / precision, per-class recall, macro AUC; agreement and delta vs the reference"""
    from facederm.export.parity import compute_parity
    from facederm.training.metrics import classification_report

    predicted, ev = ctx.measured.first("predict"), ctx.eval
    if not predicted.get("probabilities"):
        raise RuntimeError(predicted.get("error") or "no probabilities were produced")
    probs, ref_path = np.load(predicted["probabilities"]), ctx.reference("predict").get("probabilities")
    reference = probs if ctx.row.key == ctx.reference_key else (np.load(ref_path) if ref_path else None)
    labels = ev.info.labels
    parity = {} if reference is None else to_dict(compute_parity(reference, probs, ev.y_true, list(ev.groups), labels))
    report = classification_report(ev.y_true, probs, labels, ev.groups, n_boot=0)  # the gate's own computations
    twin = ctx.row.validated == "twin"  # a twin's graph run here (TensorRT's Q/DQ ONNX in onnxruntime)
    source = f"{ctx.row.backend} on this machine" + (" (twin of the target's runtime)" if twin else "")
    out = {k: report[k] for k in ("macro_recall", "macro_precision", "auc_macro", "n_images", "n_patients")}
    out.update(validated="twin" if twin else "native", source=source, reference=ctx.reference_key)
    out["per_class_recall"] = {c: report["per_class"][c]["recall"] for c in labels}
    return {**out, **_parity_figures(parity)}


def _twin_skip(row: RowSpec, settings: Settings) -> str:
    twin = row.parity is not None and row.parity_validated == "twin"
    return "" if twin else row.accuracy_skip or "the export recorded no twin parity figures"


@measurement("twin", "parent", every_repeat=False, applies=lambda row: not row.runner, skip=_twin_skip)
def twin(ctx: Any) -> dict[str, Any]:
    """accuracy columns from the export's twin parity figures (validated=twin)"""
    parity, reference = ctx.row.parity, ctx.reference("accuracy")
    base = reference.get("per_class_recall", {}) if reference.get("n_images") == parity.get("n_images") else {}
    figures = _parity_figures(parity)
    deltas = figures["per_class_recall_delta"].items()
    recall = {c: base[c] + d if base.get(c) is not None and d is not None else None for c, d in deltas}
    source = f"export parity (twin) on {parity.get('eval_data') or 'the export evaluation set'}"
    out = {"validated": "twin", "source": source, "n_images": int(parity.get("n_images", 0))}
    out.update(n_patients=int(parity.get("n_patients", 0)), macro_recall=parity.get("macro_recall"))
    out.update(macro_precision=None, auc_macro=None, per_class_recall=recall, reference="torch fp32 (export parity)")
    return {**out, **figures}


def _browser_skip(row: RowSpec, settings: Settings) -> str:
    from facederm.export.browser import unavailable_reason

    return not_run_here(row, settings) or unavailable_reason() or ""


def _web(row: RowSpec) -> bool:
    return row.target == "web" and row.runner == "runtime"


@measurement("in_browser", "parent", tool=True, every_repeat=False, applies=_web, skip=_browser_skip)
def in_browser(ctx: Any) -> dict[str, Any]:
    """the same model file inside headless Chromium (onnxruntime-web, WebAssembly), timed by the page"""
    from PIL import Image

    from facederm.export.browser import measure_in_browser

    # Lossless PNGs at the input size (the page's resize is a no-op); the page's clock times the model run alone.
    web, threads = Path(ctx.row.path), ctx.settings.threads
    with tempfile.TemporaryDirectory(prefix="facederm-page-") as tmp:
        crops = [Path(tmp) / f"eval{i}.png" for i in range(PAGE_IMAGES)]
        for path, chw in zip(crops, ctx.input_batch(PAGE_IMAGES)):
            Image.fromarray(np.clip(chw, 0, 255).astype(np.uint8).transpose(1, 2, 0), "RGB").save(path)
        found = measure_in_browser(web.parent, crops, model=web.name, threads=threads, warmup=2, repeats=PAGE_REPEATS)
    lat, info, load_ms, mb = found["latency_ms"], found["info"], found["load_ms"], found["download_bytes"] / 1e6
    command = f"""{found["browser"]}, onnxruntime-web {info.get("ortVersion", "?")}, {info.get("backend", "wasm")}, \
{info.get("threads", "?")} threads, load {load_ms:.0f} ms, {mb:.1f} MB downloaded, n={lat["n"]} runs"""
    ips = 1000.0 / lat["p50"] if lat["p50"] else float("nan")
    return {"tool": "chromium-wasm", "p50": lat["p50"], "throughput_ips": ips, "command": command}
