"""report.md: what was measured, on what, how, and what could not be measured (with reasons)."""

from __future__ import annotations

import os
from pathlib import Path

from ..measurements import REGISTRY
from ..schema import BenchResults, Row
from ..targets import check_targets, format_check
from .fmt import delta_with_ci, num, pct, stat, status
from .ratios import speed_ratios


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    clean = [[cell.replace("|", "\\|").replace("\n", " ") for cell in line] for line in lines]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(c) + " |" for c in clean), ""]


def _name(row: Row) -> str:
    return f"{row.artifact} on {row.backend}/{row.device}"


def _speed(results: BenchResults) -> list[str]:
    b = results.config.batch
    header = ["row", "status", "validated", "computes in", "size MB", "cold load ms", "p50 ms", "p90 ms", "p99 ms",
              f"img/s @ batch {b}", "peak RSS MB"]
    lines = [[_name(r), status(r), r.validated, r.compute_precision or "-", num(r.size_mb, 2), stat(r.cold_load_ms, 0),
              stat(r.latency_ms.get("p50"), 2), stat(r.latency_ms.get("p90"), 2), stat(r.latency_ms.get("p99"), 2),
              stat(r.throughput_ips, 1), stat(r.peak_rss_mb, 0)] for r in results.rows]
    return ["## Speed", "", "Median over repeats, (min-max) in brackets. Latency at batch 1 after warm-up.", "",
            *_table(header, lines)]


def _accuracy(results: BenchResults) -> list[str]:
    labels = list(results.eval.labels) if results.eval else []
    header = ["row", "validated", "source", "macro recall %", "macro precision %", "macro AUC", "agreement %",
              "delta macro recall pts [95% CI]", *[f"{c} recall %" for c in labels]]
    lines = []
    for r in results.rows:
        a = r.accuracy
        if a is None:
            lines.append([_name(r), r.validated, f"{r.accuracy_status}: {r.accuracy_reason}", *["-"] * (5 + len(labels))])
            continue
        lines.append([_name(r), a.validated, a.source, pct(a.macro_recall), pct(a.macro_precision), num(a.auc_macro, 3),
                      pct(a.agreement), delta_with_ci(r), *[pct(a.per_class_recall.get(c)) for c in labels]])
    ref = results.row(results.reference)
    return ["## Accuracy", "", f"Reference for agreement and deltas: {_name(ref) if ref else results.reference}. "
            "Delta CIs: patient-grouped bootstrap (1000 resamples). Twin rows take the export's parity figures.", "",
            *_table(header, lines)]


def _tools(results: BenchResults) -> list[str]:
    header = ["row", "tool", "facederm p50 ms", "tool p50 ms", "latency ratio (facederm/tool)", "facederm img/s",
              "tool img/s", "throughput ratio", "status / command"]
    lines = []
    for r in results.rows:
        for t in r.tools:
            lines.append([_name(r), t.tool, stat(r.latency_ms.get("p50"), 2), stat(t.latency_p50_ms, 2),
                          num(t.latency_ratio, 3), stat(r.throughput_ips, 1), stat(t.throughput_ips, 1),
                          num(t.throughput_ratio, 3), f"`{t.command}`" if t.status == "ok" else f"{t.status}: {t.reason}"])
    if not lines:
        return ["## Backends' own tools", "", "None ran (no OpenVINO or ONNX Runtime row).", ""]
    return ["## Backends' own tools, same file, same threads", "", *_table(header, lines)]


def _ratios(results: BenchResults) -> list[str]:
    lines = [[r.name, f"{r.value:.2f}x", f"{r.slow.p50:.2f} -> {r.fast.p50:.2f}"] for r in speed_ratios(results)]
    return ["## Speed-ups at batch 1 (p50 ratios within this run)", "",
            *_table(["comparison", "speed-up", "p50 ms"], lines)] if lines else []


def _environment(results: BenchResults) -> list[str]:
    env, cfg = results.environment, results.config
    isa = ", ".join(k for k, v in env.isa.items() if v) or "none of the listed"
    versions = ", ".join(f"{k} {v}" for k, v in env.versions.items() if v != "not installed")
    budget = f"{cfg.iterations} iterations" if cfg.iterations else f"{cfg.seconds:g} s"
    return [
        "## Setup", "",
        f"- Command: `{cfg.command or 'run_bench(...)'}`",
        f"- Source: {cfg.source} ({cfg.source_kind}); export dir {cfg.export_dir}; run dir {cfg.run_dir or '-'}",
        f"- Evaluation data: {_eval(results)}",
        f"- Threads: {cfg.threads} for every backend; batch {cfg.batch} for throughput; timing budget {budget} per loop "
        f"after {cfg.warmup} warm-up calls; {cfg.repeats} repeats (a fresh process each); tools -t {cfg.tool_seconds:g} s",
        f"- CPU: {env.cpu_model}; {env.logical_cpus} logical CPUs, {env.physical_cores or '?'} physical cores, "
        f"{env.usable_cpus} usable; ISA: {isa}",
        f"- OS: {env.os}; Python {env.python}",
        f"- Versions: {versions}",
        f"- Wall time: " + ", ".join(f"{k} {v:.1f}" for k, v in results.timings_s.items()), "",
    ]


def _eval(results: BenchResults) -> str:
    ev = results.eval
    if ev is None:
        return "none (accuracy columns skipped)"
    kind = "SYNTHETIC images" if ev.synthetic else "real images"
    return f"{ev.spec}: {ev.selection}; {ev.n_images} images, {ev.n_patients} patients ({kind})"


def _method() -> list[str]:
    lines = [f"- `{m.name}` ({m.where}{'' if m.every_repeat else ', once'}): {m.describe}" for m in REGISTRY.values()]
    return ["## Method", "",
            "Each (row, repeat) runs in a fresh Python process, so cold load and peak RSS are that row's alone; "
            "repeats are interleaved across rows. Registered measurements:", "", *lines, ""]


def write_markdown(results: BenchResults, path: Path, plots: dict[str, Path] | None = None) -> Path:
    lines = ["# facederm-bench report", "", f"Created {results.created} by facederm {results.facederm_version} "
             f"(schema {results.schema}).", ""]
    lines += [f"> {note}" for note in results.notes] + [""]
    lines += _environment(results) + _speed(results) + _accuracy(results) + _tools(results) + _ratios(results)
    lines += ["## Targets", "", *[f"- {format_check(c)}" for c in check_targets(results)], ""]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({os.path.relpath(p, path.parent)})" for name, p in plots.items()] + [""]
    lines += _method()
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
