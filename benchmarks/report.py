"""Everything a bench run writes: results.json, results.csv, report.md and the PNG plots (:mod:`.plots`).

The columns of results.csv and of report.md's tables are declared once (:data:`STAT_COLUMNS`,
:data:`ACCURACY_COLUMNS`); the CSV keeps median, min and max of repeated figures, report.md median (min-max).
The terminal table (:mod:`.table`) is printed by the CLI.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facederm.runtime.layout import REPORT_MD, RESULTS_CSV, RESULTS_JSON

from .collate import PERCENTILES
from .measure import registry
from .plan import BASELINE_KEY
from .schema import Accuracy, BenchResults, Row, Stat
from .targets import check_targets, format_check


# -- number formatting (shared with the terminal table) ------------------------------------------------------
def num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def stat(value: Stat | None, digits: int = 1, spread: bool = True) -> str:
    """``12.3 (11.9-13.0)``: median and min-max over repeats."""
    if value is None:
        return "-"
    if not spread or value.n < 2:
        return f"{value.median:.{digits}f}"
    return f"{value.median:.{digits}f} ({value.min:.{digits}f}-{value.max:.{digits}f})"


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage."""
    return "-" if value is None else f"{100 * value:.{digits}f}"


def points(value: float | None, digits: int = 2) -> str:
    """A fraction difference as signed percentage points."""
    return "-" if value is None else f"{100 * value:+.{digits}f}"


def delta_with_ci(acc: Accuracy | None) -> str:
    if acc is None or acc.delta_macro_recall is None:
        return "-"
    ci = [c for c in acc.delta_macro_recall_ci if c is not None]
    return points(acc.delta_macro_recall) + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if len(ci) == 2 else "")


def status(row: Row) -> str:
    """``ok``, ``ok: speed skipped: <reason>``, ``skipped: <reason>`` or ``failed: <reason>``."""
    return f"{row.status}: {row.reason}" if row.reason else row.status


# -- comparisons within a run --------------------------------------------------------------------------------
#: A target whose fp32 reference is another target's fp32 row (the ORT-format copy of model.onnx).
FP32_OF = {"onnx-mobile": "onnx"}


def is_subgraph(row: Row) -> bool:
    """A graph inside another artifact (TensorRT's Q/DQ ONNX, timed elsewhere): its speed says nothing of its own."""
    return "/" in row.artifact


def fp32_reference(rows: list[Row], row: Row) -> Row | None:
    """The timed fp32 row ``row``'s speed is compared with: same backend and device, same target (or the target
    it is a copy of), precision fp32. None for the baseline, fp32 rows themselves and sub-graphs."""
    base = FP32_OF.get(row.target, row.target)
    if row.p50 is None or row.key == BASELINE_KEY or is_subgraph(row):
        return None
    if row.precision == "fp32" and base == row.target:
        return None
    return next(
        (
            r
            for r in rows
            if r is not row
            and r.target == base
            and r.precision == "fp32"
            and r.backend == row.backend
            and r.device == row.device
            and r.p50
        ),
        None,
    )


def speedup(rows: list[Row], row: Row) -> float | None:
    """p50 of the fp32 reference / p50 of ``row`` (2.0 = twice as fast)."""
    ref = fp32_reference(rows, row)
    return ref.p50 / row.p50 if ref is not None and ref.p50 and row.p50 else None


def speed_ratios(results: BenchResults) -> list[tuple[str, Row, Row]]:
    """(comparison, slow, fast) at batch 1: every compressed row vs its fp32 reference, every row vs the baseline."""
    rows = [r for r in results.rows if r.p50 is not None and not is_subgraph(r)]
    out = [(f"{r.backend} {r.artifact} vs fp32", ref, r) for r in rows if (ref := fp32_reference(rows, r))]
    baseline = results.row(results.reference)
    if baseline is not None and baseline.p50 is not None:
        out += [
            (f"{r.backend} {r.artifact} vs {baseline.artifact} {baseline.backend}", baseline, r)
            for r in rows
            if r is not baseline
        ]
    return out


# -- the columns -----------------------------------------------------------------------------------------------
#: Figures measured once per repeat: (CSV column, report.md header, the row's Stat, digits in report.md).
STAT_COLUMNS: tuple[tuple[str, str, Callable[[Row], Stat | None], int], ...] = (
    ("cold_load_ms", "cold load ms", lambda r: r.cold_load_ms, 0),
    *((f"latency_{p}_ms", f"{p} ms", lambda r, p=p: r.latency_ms.get(p), 2) for p in PERCENTILES),
    ("throughput_ips", "img/s @ batch B", lambda r: r.throughput_ips, 1),
    ("peak_rss_mb", "peak RSS MB", lambda r: r.peak_rss_mb, 0),
)
#: Accuracy figures: (CSV column, report.md header, the value, its report.md text).
ACCURACY_COLUMNS: tuple[tuple[str, str, Callable[[Accuracy], Any], Callable[[Accuracy], str]], ...] = (
    ("macro_recall", "macro recall %", lambda a: a.macro_recall, lambda a: pct(a.macro_recall)),
    ("macro_precision", "macro precision %", lambda a: a.macro_precision, lambda a: pct(a.macro_precision)),
    ("auc_macro", "macro AUC", lambda a: a.auc_macro, lambda a: num(a.auc_macro, 3)),
    ("agreement", "agreement %", lambda a: a.agreement, lambda a: pct(a.agreement)),
    ("delta_macro_recall", "delta macro recall pts [95% CI]", lambda a: a.delta_macro_recall, delta_with_ci),
)


def _f(value: float | None, digits: int = 6) -> Any:
    return "" if value is None else round(value, digits)


def csv_line(row: Row, labels: tuple[str, ...]) -> dict[str, Any]:
    """One results.csv line: flat columns, median plus min and max for repeated figures."""
    acc = row.accuracy
    out: dict[str, Any] = {
        "key": row.key,
        "artifact": row.artifact,
        "target": row.target,
        "precision": row.precision,
        "backend": row.backend,
        "device": row.device,
        "status": row.status,
        "reason": row.reason,
        "validated": row.validated,
        "compute_precision": row.compute_precision or "",
        "note": row.note,
        "size_mb": _f(row.size_mb, 3),
    }
    for name, _, value, _ in STAT_COLUMNS:
        s = value(row)
        out.update({name: _f(s and s.median, 4), f"{name}_min": _f(s and s.min, 4), f"{name}_max": _f(s and s.max, 4)})
    ci = [*(acc.delta_macro_recall_ci if acc else ()), None, None]
    out["accuracy_source"] = acc.source if acc else ""
    out.update({name: _f(value(acc) if acc else None) for name, _, value, _ in ACCURACY_COLUMNS})
    out.update(delta_macro_recall_ci_low=_f(ci[0]), delta_macro_recall_ci_high=_f(ci[1]))
    out.update({f"recall_{c}": _f(acc.per_class_recall.get(c) if acc else None) for c in labels})
    for tool in row.tools:
        out[f"{tool.tool}_p50_ms"] = _f(tool.latency_p50_ms.median if tool.latency_p50_ms else None)
        out[f"{tool.tool}_throughput_ips"] = _f(tool.throughput_ips.median if tool.throughput_ips else None)
        out[f"facederm_over_{tool.tool}_latency"] = _f(tool.latency_ratio)
        out[f"facederm_over_{tool.tool}_throughput"] = _f(tool.throughput_ratio)
    return out


def write_csv(results: BenchResults, path: Path) -> Path:
    lines = [csv_line(row, results.eval.labels if results.eval else ()) for row in results.rows]
    columns = list(dict.fromkeys(c for line in lines for c in line))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(lines)
    return path


# -- report.md -------------------------------------------------------------------------------------------------
def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    clean = [[cell.replace("|", "\\|").replace("\n", " ") for cell in line] for line in lines]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(c) + " |" for c in clean),
        "",
    ]


def _name(row: Row) -> str:
    return f"{row.artifact} on {row.backend}/{row.device}"


def _speed(results: BenchResults) -> list[str]:
    header = [
        "row",
        "status",
        "validated",
        "computes in",
        "size MB",
        *(h.replace("batch B", f"batch {results.config.batch}") for _, h, _, _ in STAT_COLUMNS),
    ]
    lines = [
        [
            _name(r),
            status(r),
            r.validated,
            r.compute_precision or "-",
            num(r.size_mb, 2),
            *(stat(value(r), digits) for _, _, value, digits in STAT_COLUMNS),
        ]
        for r in results.rows
    ]
    return [
        "## Speed",
        "",
        "Median over repeats, (min-max) in brackets. Latency at batch 1 after warm-up.",
        "",
        *_table(header, lines),
    ]


def _accuracy(results: BenchResults) -> list[str]:
    labels = list(results.eval.labels) if results.eval else []
    header = ["row", "validated", "source", *(h for _, h, _, _ in ACCURACY_COLUMNS), *[f"{c} recall %" for c in labels]]
    lines = []
    for r in results.rows:
        a = r.accuracy
        if a is None:
            blank = ["-"] * (len(ACCURACY_COLUMNS) + len(labels))
            lines.append([_name(r), r.validated, f"{r.accuracy_status}: {r.accuracy_reason}", *blank])
        else:
            lines.append(
                [
                    _name(r),
                    a.validated,
                    a.source,
                    *(text(a) for _, _, _, text in ACCURACY_COLUMNS),
                    *[pct(a.per_class_recall.get(c)) for c in labels],
                ]
            )
    ref = results.row(results.reference)
    return [
        "## Accuracy",
        "",
        f"Reference for agreement and deltas: {_name(ref) if ref else results.reference}. "
        "Delta CIs: patient-grouped bootstrap (1000 resamples). Twin rows take the export's parity figures.",
        "",
        *_table(header, lines),
    ]


def _tools(results: BenchResults) -> list[str]:
    header = [
        "row",
        "tool",
        "facederm p50 ms",
        "tool p50 ms",
        "latency ratio (facederm/tool)",
        "facederm img/s",
        "tool img/s",
        "throughput ratio",
        "status / command",
    ]
    lines = [
        [
            _name(r),
            t.tool,
            stat(r.latency_ms.get("p50"), 2),
            stat(t.latency_p50_ms, 2),
            num(t.latency_ratio, 3),
            stat(r.throughput_ips, 1),
            stat(t.throughput_ips, 1),
            num(t.throughput_ratio, 3),
            f"`{t.command}`" if t.status == "ok" else f"{t.status}: {t.reason}",
        ]
        for r in results.rows
        for t in r.tools
    ]
    if not lines:
        return ["## Backends' own tools", "", "None ran (no row of a backend with its own tool or a bare call).", ""]
    return ["## Backends' own tools, same file, same threads", "", *_table(header, lines)]


def _ratios(results: BenchResults) -> list[str]:
    lines = [
        [name, f"{slow.p50 / fast.p50:.2f}x", f"{slow.p50:.2f} -> {fast.p50:.2f}"]  # type: ignore[operator]
        for name, slow, fast in speed_ratios(results)
    ]
    return (
        [
            "## Speed-ups at batch 1 (p50 ratios within this run)",
            "",
            *_table(["comparison", "speed-up", "p50 ms"], lines),
        ]
        if lines
        else []
    )


def _eval(results: BenchResults) -> str:
    ev = results.eval
    if ev is None:
        return "none (accuracy columns skipped)"
    kind = "SYNTHETIC images" if ev.synthetic else "real images"
    return f"{ev.spec}: {ev.selection}; {ev.n_images} images, {ev.n_patients} patients ({kind})"


def _setup(results: BenchResults) -> list[str]:
    env, cfg = results.environment, results.config
    isa = ", ".join(k for k, v in env.isa.items() if v) or "none of the listed"
    versions = ", ".join(f"{k} {v}" for k, v in env.versions.items() if v != "not installed")
    budget = f"{cfg.iterations} iterations" if cfg.iterations else f"{cfg.seconds:g} s"
    return [
        "## Setup",
        "",
        f"- Command: `{cfg.command or 'run_bench(...)'}`",
        f"- Source: {cfg.source} ({cfg.source_kind}); export dir {cfg.export_dir}; run dir {cfg.run_dir or '-'}",
        f"- Evaluation data: {_eval(results)}",
        f"- Threads: {cfg.threads} for every backend; batch {cfg.batch} for throughput; timing budget {budget} per "
        f"loop after {cfg.warmup} warm-up calls; {cfg.repeats} repeats (a fresh process each); tools -t "
        f"{cfg.tool_seconds:g} s",
        f"- CPU: {env.cpu_model}; {env.logical_cpus} logical CPUs, {env.physical_cores or '?'} physical cores, "
        f"{env.usable_cpus} usable; ISA: {isa}",
        f"- OS: {env.os}; Python {env.python}",
        f"- Versions: {versions}",
        "- Wall time: " + ", ".join(f"{k} {v:.1f}" for k, v in results.timings_s.items()),
        "",
    ]


def write_markdown(results: BenchResults, path: Path, plots: dict[str, Path] | None = None) -> Path:
    """report.md: what was measured, on what, how, and what could not be measured (with reasons)."""
    lines = [
        "# facederm-bench report",
        "",
        f"Created {results.created} by facederm {results.facederm_version} (schema {results.schema}).",
        "",
        *(f"> {note}" for note in results.notes),
        "",
    ]
    lines += _setup(results) + _speed(results) + _accuracy(results) + _tools(results) + _ratios(results)
    lines += ["## Targets", "", *[f"- {format_check(c)}" for c in check_targets(results)], ""]
    if plots:
        lines += ["## Plots", "", *(f"![{name}]({os.path.relpath(p, path.parent)})" for name, p in plots.items()), ""]
    lines += [
        "## Method",
        "",
        "Each (row, repeat) runs in a fresh Python process, so cold load and peak RSS are that "
        "row's alone; repeats are interleaved across rows. Registered measurements:",
        "",
        *(f"- `{m.name}` ({m.where}{'' if m.every_repeat else ', once'}): {m.describe}" for m in registry().values()),
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_reports(results: BenchResults, out: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write every output into ``out``; returns {name: path}."""
    out.mkdir(parents=True, exist_ok=True)
    results.save(out / RESULTS_JSON)
    files = {"json": out / RESULTS_JSON, "csv": write_csv(results, out / RESULTS_CSV)}
    if plots:
        from .plots import write_plots

        files.update(write_plots(results, out))
    plotted = {k: v for k, v in files.items() if k.startswith("plot_")}
    files["markdown"] = write_markdown(results, out / REPORT_MD, plotted)
    return files
