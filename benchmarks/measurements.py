"""The built-in measurements, in plan order: worker ones (in the order they run inside a row's process), then
parent ones. Each is one function registered with :func:`~facederm.benchmarks.measure.measurement`."""

from __future__ import annotations

import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from facederm.runtime.errors import FacedermError
from facederm.runtime.metadata import CLINICAL_INPUT_NAME

from .measure import RUNNERS, Settings, backend_of, measurement, not_run_here, percentiles, throughput, time_calls
from .plan import RowSpec

#: Evaluation images per call of the accuracy pass.
CHUNK = 16


class ToolError(FacedermError):
    """A backend's own benchmark tool failed or printed nothing we can read."""


def _timed(ctx: Any, run: Any, batch: int, *, answers: bool = True) -> list[float]:
    """Per-call ms of ``run`` at ``batch``; with ``answers`` a clinical model also gets the images' recorded answers
    (a bare library call feeds its own "nothing answered" input, see ``Backend.bare_call``)."""
    if answers:
        return time_calls(ctx.call(run, batch), ctx.settings.budget(batch))
    x = ctx.input_batch(batch)
    return time_calls(lambda: run(x), ctx.settings.budget(batch))


@measurement("load", "worker", "import ms, cold load ms (open: sha256 check + read + compile), first inference ms")
def load(ctx: Any) -> dict[str, Any]:
    """Import the row's libraries, open the artifact, run the first image: each timed apart."""
    libraries, open_model = RUNNERS[ctx.row.runner]
    start = time.perf_counter()
    for module in libraries(ctx.row):
        __import__(module)
    import_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    ctx.opened = open_model(ctx.row, ctx.settings.threads)
    load_ms = (time.perf_counter() - start) * 1e3
    first = ctx.call(ctx.opened.run, 1)
    start = time.perf_counter()
    first()
    return {
        "import_ms": import_ms,
        "cold_load_ms": load_ms,
        "first_inference_ms": (time.perf_counter() - start) * 1e3,
        "compute_precision": ctx.opened.compute_precision,
        "details": ctx.opened.details,
    }


@measurement("latency", "worker", "batch 1, after warm-up; p50/p90/p99 of per-call ms")
def latency(ctx: Any) -> dict[str, Any]:
    samples = _timed(ctx, ctx.opened.run, 1)
    return {**percentiles(samples), "samples_ms": samples}


@measurement("throughput", "worker", "batch B, back-to-back calls, one stream; images / s")
def batch_throughput(ctx: Any) -> dict[str, Any]:
    samples = _timed(ctx, ctx.opened.run, ctx.settings.batch)
    return {
        "throughput_ips": throughput(samples, ctx.settings.batch),
        "batch": ctx.settings.batch,
        "calls": len(samples),
    }


def peak_rss_bytes() -> int:
    """Linux: ``VmHWM``, the high-water mark of this process's own address space (``ru_maxrss`` survives exec, so a
    worker would report its parent's peak). Elsewhere ``ru_maxrss`` (bytes on macOS, KiB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


@measurement("memory", "worker", "peak RSS of the row's own process after load + latency + throughput")
def memory(ctx: Any) -> dict[str, Any]:
    """Taken before the evaluation pass: the footprint of serving this model, not of holding the evaluation set."""
    return {"peak_rss_mb": peak_rss_bytes() / 2**20}


def scored_natively(row: RowSpec) -> bool:
    """Rows whose accuracy is computed here; rows that do not run here are scored from the export's twin figures."""
    return bool(row.runner) or not row.parity


def native_scoring_skip(row: RowSpec, settings: Settings) -> str:
    """Why a row's probabilities cannot be computed and scored here ("" when they can)."""
    if row.accuracy_skip or not row.runner or row.failed:
        return row.failed or row.accuracy_skip or row.speed_skip
    return "" if settings.eval_tensor else "no evaluation data (pass --eval-data)"


@measurement(
    "predict",
    "worker",
    "probabilities on every evaluation image, saved for scoring",
    every_repeat=False,
    applies=scored_natively,
    skip=native_scoring_skip,
)
def predict(ctx: Any) -> dict[str, Any]:
    images = np.load(ctx.settings.eval_tensor, mmap_mode="r")
    answers = np.load(ctx.settings.eval_clinical) if ctx.settings.eval_clinical else None

    def chunk(i: int) -> np.ndarray:  # a clinical model gets each image's recorded answers
        x = np.ascontiguousarray(images[i : i + CHUNK], dtype=np.float32)
        return ctx.opened.run(x) if answers is None else ctx.opened.run(x, answers[i : i + CHUNK])

    probs = np.concatenate([chunk(i) for i in range(0, len(images), CHUNK)]).astype(np.float32)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ctx.row.key)
    path = Path(ctx.settings.work_dir) / f"probs-{safe}.npy"
    np.save(path, probs)
    return {"probabilities": str(path), "n_images": int(len(probs))}


def _has_bare_call(row: RowSpec) -> bool:
    """A backend without its own benchmark program is compared with its bare library call instead."""
    backend = backend_of(row)
    return backend is not None and backend.has_bare_call and backend.native_tool is None


@measurement(
    "bare_call",
    "worker",
    "the backend library's bare call (e.g. an InferenceSession), same options, same input, same timing code",
    tool=True,
    applies=_has_bare_call,
)
def bare_call(ctx: Any) -> dict[str, Any]:
    backend, threads = backend_of(ctx.row), ctx.settings.threads
    call = backend.bare_call(
        Path(ctx.row.path),
        device=ctx.row.device,
        threads=threads,  # type: ignore[union-attr]
        options=ctx.row.options,
    )
    calls = _timed(ctx, call, ctx.settings.batch, answers=False)
    return {
        "tool": f"{backend.short_name or backend.name}_bare",
        **percentiles(_timed(ctx, call, 1, answers=False)),  # type: ignore
        "throughput_ips": throughput(calls, ctx.settings.batch),
        "command": f"{backend.name} bare call on {ctx.row.display_path}, {threads} threads",
    }  # type: ignore


def _has_native_tool(row: RowSpec) -> bool:
    backend = backend_of(row)
    return backend is not None and backend.native_tool is not None


def _native_tool_skip(row: RowSpec, settings: Settings) -> str:
    tool = backend_of(row).native_tool  # type: ignore[union-attr]
    if not row.runs_here:
        return not_run_here(row, settings)
    return "" if tool.executable() else f"{tool.name} not found on PATH ({tool.install_hint})"  # type: ignore


def _run_tool(cmd: list[str], name: str, parse: Any, timeout: float) -> dict[str, float]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{name} did not finish within {timeout:.0f} s") from exc
    output = done.stdout + done.stderr
    found = parse(output)
    if done.returncode != 0 or not found:
        tail = [line for line in output.splitlines() if "rror" in line][-1:]
        raise ToolError(f"{name} exited {done.returncode}: {tail[0].strip() if tail else 'no figures in its output'}")
    return found


@measurement(
    "native_tool",
    "parent",
    "the backend's own benchmark program (OpenVINO benchmark_app -hint none "
    "-nstreams 1 -nireq 1 -api sync), same threads, same file",
    tool=True,
    applies=_has_native_tool,
    skip=_native_tool_skip,
)
def native_tool(ctx: Any) -> dict[str, Any]:
    """Two runs per repeat: batch 1 (its median latency) and batch B (its throughput). A missing tool is a skipped
    figure with the reason, never a failed bench."""
    tool, s, row = backend_of(ctx.row).native_tool, ctx.settings, ctx.row  # type: ignore[union-attr]
    timeout = s.tool_seconds * 4 + 120  # compile + its own warm-up on top of its timed seconds

    def command(batch: int) -> list[str]:
        return tool.command(
            row.path,
            device=None if row.device in ("-", "default") else row.device,
            threads=s.threads,
            batch=batch,
            input_size=s.input_size,
            seconds=s.tool_seconds,
            options=row.options,
            extra_inputs={CLINICAL_INPUT_NAME: (s.clinical_width,)} if s.clinical_width else None,
        )

    one = command(1)
    latency_figures = _run_tool(one, tool.name, tool.parse, timeout)
    batched = _run_tool(command(s.batch), tool.name, tool.parse, timeout)
    shown = shlex.join([tool.name, *one[1:]]).replace(shlex.quote(row.path), shlex.quote(row.display_path))
    return {
        "tool": tool.name,
        "p50": latency_figures.get("median_ms"),
        "throughput_ips": batched.get("throughput_ips"),
        "command": shown,
    }


def score(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: tuple[str, ...],
    groups: np.ndarray,
    reference: np.ndarray | None,
    reference_key: str,
) -> dict[str, Any]:
    """Every accuracy column of a row (fractions), with the export's parity figures against the reference: the
    same implementation as the export gate's numbers."""
    from facederm.training.metrics import classification_report

    report = classification_report(y_true, probs, labels, groups, n_boot=0)
    out: dict[str, Any] = {
        "macro_recall": report["macro_recall"],
        "macro_precision": report["macro_precision"],
        "auc_macro": report["auc_macro"],
        "per_class_recall": {c: report["per_class"][c]["recall"] for c in labels},
        "n_images": report["n_images"],
        "n_patients": report["n_patients"],
        "reference": reference_key,
        "agreement": None,
        "delta_macro_recall": None,
        "delta_macro_recall_ci": [None, None],
        "per_class_recall_delta": {},
        "max_abs_prob_delta": None,
    }
    if reference is not None:
        from facederm.export.parity import compute_parity

        parity = compute_parity(reference, probs, y_true, list(groups), labels)
        out.update(
            agreement=parity.agreement,
            max_abs_prob_delta=parity.max_abs_prob_delta,
            delta_macro_recall=parity.macro_recall_delta,
            delta_macro_recall_ci=[*parity.macro_recall_delta_ci, None, None][:2],
            per_class_recall_delta={c: parity.per_class_recall_delta.get(c) for c in labels},
        )
    return out


@measurement(
    "accuracy",
    "parent",
    "macro recall / precision, per-class recall, macro AUC; agreement and delta vs the reference",
    every_repeat=False,
    applies=scored_natively,
    skip=native_scoring_skip,
)
def accuracy(ctx: Any) -> dict[str, Any]:
    predicted = ctx.measured.first("predict")
    if not predicted.get("probabilities"):
        raise RuntimeError(predicted.get("error") or "no probabilities were produced")
    probs = np.load(predicted["probabilities"])
    ref_path = ctx.reference("predict").get("probabilities")
    reference = probs if ctx.row.key == ctx.reference_key else (np.load(ref_path) if ref_path else None)
    twin = ctx.row.validated == "twin"  # a twin's graph run here (TensorRT's Q/DQ ONNX in onnxruntime)
    ev = ctx.eval
    return {
        **score(ev.y_true, probs, ev.info.labels, ev.groups, reference, ctx.reference_key),
        "validated": "twin" if twin else "native",
        "source": f"{ctx.row.backend} on this machine" + (" (twin of the target's runtime)" if twin else ""),
    }


def _twin_skip(row: RowSpec, settings: Settings) -> str:
    if row.parity is None or row.parity_validated != "twin":
        return row.accuracy_skip or "the export recorded no twin parity figures"
    return ""


@measurement(
    "twin",
    "parent",
    "accuracy columns from the export's twin parity figures (validated=twin)",
    every_repeat=False,
    applies=lambda row: not row.runner,
    skip=_twin_skip,
)
def twin(ctx: Any) -> dict[str, Any]:
    """Rows whose backend cannot run here (Core ML off macOS) take their accuracy from the export's parity record,
    computed on a twin. Figures the record lacks stay null."""
    parity: dict[str, Any] = ctx.row.parity
    reference = ctx.reference("accuracy")
    deltas = dict(parity.get("per_class_recall_delta", {}))
    same_images = reference.get("n_images") == parity.get("n_images")
    base = reference.get("per_class_recall", {}) if same_images else {}
    per_class = {c: base[c] + d if base.get(c) is not None and d is not None else None for c, d in deltas.items()}
    return {
        "validated": "twin",
        "source": f"export parity (twin) on {parity.get('eval_data') or 'the export evaluation set'}",
        "n_images": int(parity.get("n_images", 0)),
        "n_patients": int(parity.get("n_patients", 0)),
        "macro_recall": parity.get("macro_recall"),
        "macro_precision": None,
        "auc_macro": None,
        "per_class_recall": per_class,
        "agreement": parity.get("agreement"),
        "delta_macro_recall": parity.get("macro_recall_delta"),
        "delta_macro_recall_ci": [*(parity.get("macro_recall_delta_ci") or []), None, None][:2],
        "per_class_recall_delta": deltas,
        "max_abs_prob_delta": parity.get("max_abs_prob_delta"),
        "reference": "torch fp32 (export parity)",
    }
