"""Everything a bench run shows: results.json, results.csv, report.md (everything: spreads, full reasons), the PNG
plots (a plot with no row is not written), the terminal table (within :data:`WIDTH` columns, a line per reason)."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from facederm.export.parity import failed_checks, short_reason
from facederm.runtime import backends as runtime_backends
from facederm.runtime.errors import ConfigError
from facederm.runtime.layout import REPORT_MD, RESULTS_CSV, RESULTS_JSON

from .measure import PERCENTILES, registry
from .plan import BASELINE_KEY
from .schema import Accuracy, BenchResults, Row, Stat
from .targets import check_targets, format_check

WIDTH = 120  # every line of the table, and of the reasons under it ("  * " + reason)


# -- formatting ---------------------------------------------------------------------------------------------------
def num(value: float | None, digits: int = 1, scale: float = 1, sign: str = "") -> str:
    """``value * scale`` with ``digits`` decimals (``sign="+"``: always signed), "-" for None."""
    return "-" if value is None else f"{value * scale:{sign}.{digits}f}"


pct = partial(num, scale=100)
points = partial(num, digits=2, scale=100, sign="+")  # a difference of fractions as signed percentage points


def stat(value: Stat | None, digits: int = 1, spread: bool = True) -> str:
    """``12.3 (11.9-13.0)``: median and min-max over repeats."""
    if value is None or not spread or value.n < 2:
        return num(value and value.median, digits)
    return f"{value.median:.{digits}f} ({value.min:.{digits}f}-{value.max:.{digits}f})"


def delta_with_ci(acc: Accuracy) -> str:
    ci = [c for c in acc.delta_macro_recall_ci if c is not None]
    return points(acc.delta_macro_recall) + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if len(ci) == 2 else "")


# -- comparisons within a run -------------------------------------------------------------------------------------
#: A target whose fp32 reference is another target's fp32 row (the ORT-format copy of model.onnx).
FP32_OF = {"onnx-mobile": "onnx"}


def is_subgraph(row: Row) -> bool:
    """A graph inside another artifact (TensorRT's Q/DQ ONNX): its speed says nothing of its own."""
    return "/" in row.artifact


def fp32_reference(rows: list[Row], row: Row) -> Row | None:
    """The timed fp32 row of the same backend, device and target (or the one it copies) ``row`` is compared with."""
    base = FP32_OF.get(row.target, row.target)
    if row.p50 is None or row.key == BASELINE_KEY or is_subgraph(row) or (row.precision, base) == ("fp32", row.target):
        return None
    same = (r for r in rows if r is not row and r.target == base and r.precision == "fp32" and r.p50)
    return next((r for r in same if r.backend == row.backend and r.device == row.device), None)


def speedup(rows: list[Row], row: Row) -> float | None:
    """p50 of the fp32 reference / p50 of ``row`` (2.0 = twice as fast)."""
    ref = fp32_reference(rows, row)
    return ref.p50 / row.p50 if ref is not None and ref.p50 and row.p50 else None


def speed_ratios(results: BenchResults) -> list[tuple[str, Row, Row]]:
    """(comparison, slow, fast) at batch 1: every compressed row vs its fp32 reference, every row vs the baseline."""
    rows = [r for r in results.rows if r.p50 is not None and not is_subgraph(r)]
    out = [(f"{r.backend} {r.artifact} vs fp32", ref, r) for r in rows if (ref := fp32_reference(rows, r))]
    base = results.row(results.reference)
    if base is not None and base.p50 is not None:
        out += [(f"{r.backend} {r.artifact} vs {base.artifact} {base.backend}", base, r) for r in rows if r is not base]
    return out


# -- results.csv and report.md ------------------------------------------------------------------------------------
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
ROW_FIELDS = ("key", "artifact", "target", "precision", "backend", "device", "status", "reason", "validated")


def _f(value: float | None, digits: int = 6) -> Any:
    return "" if value is None else round(value, digits)


def csv_line(row: Row, labels: tuple[str, ...]) -> dict[str, Any]:
    """One results.csv line: flat columns, median plus min and max of repeated figures."""
    acc = row.accuracy
    out: dict[str, Any] = {name: getattr(row, name) for name in ROW_FIELDS}
    out.update(compute_precision=row.compute_precision or "", note=row.note, size_mb=_f(row.size_mb, 3))
    for name, _, value, _ in STAT_COLUMNS:
        s = value(row)
        out.update({name: _f(s and s.median, 4), f"{name}_min": _f(s and s.min, 4), f"{name}_max": _f(s and s.max, 4)})
    ci = [*(acc.delta_macro_recall_ci if acc else ()), None, None]
    out["accuracy_source"] = acc.source if acc else ""
    out.update({name: _f(value(acc) if acc else None) for name, _, value, _ in ACCURACY_COLUMNS})
    out.update(delta_macro_recall_ci_low=_f(ci[0]), delta_macro_recall_ci_high=_f(ci[1]))
    out.update({f"recall_{c}": _f(acc.per_class_recall.get(c) if acc else None) for c in labels})
    for t in row.tools:
        lat, ips = (s.median if s else None for s in (t.latency_p50_ms, t.throughput_ips))
        out.update({f"{t.tool}_p50_ms": _f(lat), f"{t.tool}_throughput_ips": _f(ips)})
        out[f"facederm_over_{t.tool}_latency"] = _f(t.latency_ratio)
        out[f"facederm_over_{t.tool}_throughput"] = _f(t.throughput_ratio)
    return out


def write_csv(results: BenchResults, path: Path) -> Path:
    lines = [csv_line(row, results.eval.labels if results.eval else ()) for row in results.rows]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(c for line in lines for c in line)), restval="")
        writer.writeheader()
        writer.writerows(lines)
    return path


def _md_table(header: list[str], lines: list[list[str]]) -> list[str]:
    clean = (" | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in line) for line in lines)
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *(f"| {c} |" for c in clean), ""]


def _name(row: Row) -> str:
    return f"{row.artifact} on {row.backend}/{row.device}"


def _status(row: Row) -> str:
    return f"{row.status}: {row.reason}" if row.reason else row.status


def _sections(results: BenchResults) -> list[str]:
    env, cfg, ev, rows = results.environment, results.config, results.eval, results.rows
    labels = list(ev.labels) if ev else []
    kind = "SYNTHETIC images" if ev and ev.synthetic else "real images"
    data = f"{ev.spec}: {ev.selection}; {ev.n_images} images, {ev.n_patients} patients ({kind})" if ev else ""
    versions = ", ".join(f"{k} {v}" for k, v in env.versions.items() if v != "not installed")
    budget = f"{cfg.iterations} iterations" if cfg.iterations else f"{cfg.seconds:g} s"
    isa = ", ".join(k for k, v in env.isa.items() if v) or "none of the listed"
    wall = ", ".join(f"{k} {v:.1f}" for k, v in results.timings_s.items())
    out = f"""## Setup

- Command: `{cfg.command or "run_bench(...)"}`
- Source: {cfg.source} ({cfg.source_kind}); export dir {cfg.export_dir}; run dir {cfg.run_dir or "-"}
- Evaluation data: {data or "none (accuracy columns skipped)"}
- Threads: {cfg.threads} for every backend; batch {cfg.batch} for throughput; timing budget {budget} per loop after \
{cfg.warmup} warm-up calls; {cfg.repeats} repeats (a fresh process each); tools -t {cfg.tool_seconds:g} s
- CPU: {env.cpu_model}; {env.logical_cpus} logical CPUs, {env.physical_cores or "?"} physical cores, \
{env.usable_cpus} usable; ISA: {isa}
- OS: {env.os}; Python {env.python}
- Versions: {versions}
- Wall time: {wall}

## Speed

Median over repeats, (min-max) in brackets. Latency at batch 1 after warm-up.
""".split("\n")
    header = ["row", "status", "validated", "computes in", "size MB"]
    header += [h.replace("batch B", f"batch {cfg.batch}") for _, h, _, _ in STAT_COLUMNS]
    speed = [[_name(r), _status(r), r.validated, r.compute_precision or "-", num(r.size_mb, 2)] for r in rows]
    out += _md_table(header, [line + [stat(v(r), d) for _, _, v, d in STAT_COLUMNS] for line, r in zip(speed, rows)])
    accuracy = []
    for r in rows:
        if (a := r.accuracy) is None:
            blank = ["-"] * (len(ACCURACY_COLUMNS) + len(labels))
            accuracy.append([_name(r), r.validated, f"{r.accuracy_status}: {r.accuracy_reason}", *blank])
        else:
            recall = [pct(a.per_class_recall.get(c)) for c in labels]
            accuracy.append([_name(r), a.validated, a.source, *(text(a) for *_, text in ACCURACY_COLUMNS), *recall])
    ref = results.row(results.reference)
    out += f"""## Accuracy

Reference for agreement and deltas: {_name(ref) if ref else results.reference}. Delta CIs: patient-grouped bootstrap \
(1000 resamples). Twin rows take the export's parity figures.
""".split("\n")
    header = ["row", "validated", "source", *(h for _, h, _, _ in ACCURACY_COLUMNS), *[f"{c} recall %" for c in labels]]
    out += _md_table(header, accuracy)
    tools = [
        [_name(r), t.tool, stat(r.latency_ms.get("p50"), 2), stat(t.latency_p50_ms, 2), num(t.latency_ratio, 3)]
        + [stat(r.throughput_ips, 1), stat(t.throughput_ips, 1), num(t.throughput_ratio, 3)]
        + [f"`{t.command}`" if t.status == "ok" else f"{t.status}: {t.reason}"]
        for r in rows
        for t in r.tools
    ]
    if tools:
        header = ["row", "tool", "facederm p50 ms", "tool p50 ms", "latency ratio (facederm/tool)", "facederm img/s"]
        header += ["tool img/s", "throughput ratio", "status / command"]
        out += ["## Backends' own tools, same file, same threads", "", *_md_table(header, tools)]
    else:
        out += ["## Backends' own tools", "", "None ran (no row of a backend with its own tool or a bare call).", ""]
    ratios = [[n, f"{s.p50 / f.p50:.2f}x", f"{s.p50:.2f} -> {f.p50:.2f}"] for n, s, f in speed_ratios(results)]
    if ratios:
        out += ["## Speed-ups at batch 1 (p50 ratios within this run)", ""]
        out += _md_table(["comparison", "speed-up", "p50 ms"], ratios)
    return out


METHOD = "Each (row, repeat) runs in a fresh Python process, so cold load and peak RSS are that row's alone; repeats \
are interleaved across rows. Registered measurements:"


def write_markdown(results: BenchResults, path: Path, plots: dict[str, Path] | None = None) -> Path:
    """report.md: what was measured, on what, how, and what could not be measured (with reasons)."""
    created = f"Created {results.created} by facederm {results.facederm_version} (schema {results.schema})."
    lines = ["# facederm-bench report", "", created, "", *(f"> {note}" for note in results.notes), ""]
    lines += [*_sections(results), "## Targets", "", *[f"- {format_check(c)}" for c in check_targets(results)], ""]
    if plots:
        lines += ["## Plots", "", *(f"![{name}]({os.path.relpath(p, path.parent)})" for name, p in plots.items()), ""]
    method = (f"- `{m.name}` ({m.where}{', once' * (not m.every_repeat)}): {m.describe}" for m in registry().values())
    lines += ["## Method", "", METHOD, "", *method, ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_reports(results: BenchResults, out: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write every output file into ``out``; returns {name: path}."""
    out.mkdir(parents=True, exist_ok=True)
    results.save(out / RESULTS_JSON)
    files = {"json": out / RESULTS_JSON, "csv": write_csv(results, out / RESULTS_CSV)}
    files.update(write_plots(results, out) if plots else {})
    plotted = {k: v for k, v in files.items() if k.startswith("plot_")}
    files["markdown"] = write_markdown(results, out / REPORT_MD, plotted)
    return files


# -- the PNG plots (matplotlib, Agg): rows without the figures a plot needs are left out ---------------------------
def label(row: Row) -> str:
    return f"{row.artifact} / {row.backend}"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower latency x, higher recall y), by latency."""
    beaten = [any(ox <= x and oy >= y and (ox < x or oy > y) for ox, oy in points) for x, y in points]
    return sorted((i for i, b in enumerate(beaten) if not b), key=lambda i: points[i][0])


def _figure(results: BenchResults, title: str, size: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    ev = results.eval
    data = f"{ev.spec} ({ev.n_images} images{', SYNTHETIC' if ev.synthetic else ''})" if ev else "no evaluation data"
    fig, ax = plt.subplots(figsize=size)
    ax.set_title(f"{title}\n{results.environment.cpu_model}, {results.config.threads} threads; {data}", fontsize=9)
    return fig, ax


def accuracy_vs_latency(results: BenchResults) -> Any | None:
    rows = [r for r in results.rows if r.p50 is not None and r.accuracy and r.accuracy.macro_recall is not None]
    if not rows:
        return None
    fig, ax = _figure(results, "Accuracy vs latency", (8, 5.5))
    points = [(r.p50, 100 * r.accuracy.macro_recall) for r in rows]
    front = pareto_front(points)
    for i, (row, (x, y)) in enumerate(zip(rows, points)):
        look = {"s": 70, "marker": "*", "color": "tab:red"} if i in front else {"s": 40, "color": "tab:blue"}
        ax.scatter([x], [y], zorder=3, marker=look.pop("marker", "o"), **look)
        ax.annotate(label(row), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    xs, ys = [points[i][0] for i in front], [points[i][1] for i in front]
    ax.plot(xs, ys, "--", color="tab:red", label="Pareto front (faster and at least as accurate)", zorder=2)
    ax.set(xscale="log", xlabel="latency p50 at batch 1 (ms, log scale)", ylabel="macro recall (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def per_class_recall(results: BenchResults) -> Any | None:
    rows = [r for r in results.rows if r.accuracy and any(v is not None for v in r.accuracy.per_class_recall.values())]
    if not rows or not results.eval:
        return None
    labels, width = list(results.eval.labels), 0.8 / len(rows)
    size = (max(7, 1.2 * len(labels) + 0.25 * len(rows)), 5)
    fig, ax = _figure(results, "Per-class recall by artifact and backend", size)
    for i, row in enumerate(rows):
        acc = row.accuracy
        values = [100 * (acc.per_class_recall.get(c) or 0.0) for c in labels]
        name = label(row) + (" (twin)" if acc.validated == "twin" else "")
        ax.bar([k + i * width - 0.4 + width / 2 for k in range(len(labels))], values, width, label=name)
    ax.set_xticks(range(len(labels)), labels)
    ax.set(ylabel="recall (%)", ylim=(0, 105))
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return fig


def latency_distribution(results: BenchResults) -> Any | None:
    rows = [r for r in results.rows if r.latency_samples_ms]
    if not rows:
        return None
    fig, ax = _figure(results, "Latency distributions", (8, 0.5 * len(rows) + 2))
    samples = [list(r.latency_samples_ms) for r in rows]
    ax.boxplot(samples, orientation="horizontal", showfliers=True, flierprops={"markersize": 2}, whis=(1, 99))
    ax.set_yticks(range(1, len(rows) + 1), [label(r) for r in rows], fontsize=7)
    ax.set(xscale="log", xlabel="latency per call at batch 1 (ms, log scale); whiskers p1-p99, the median repeat")
    ax.grid(axis="x", alpha=0.3)
    return fig


#: plot name -> (function returning its figure, file name). Add a plot here.
PLOTS = {
    "plot_accuracy_latency": (accuracy_vs_latency, "accuracy_vs_latency.png"),
    "plot_per_class_recall": (per_class_recall, "per_class_recall.png"),
    "plot_latency": (latency_distribution, "latency_distribution.png"),
}


def write_plots(results: BenchResults, out: Path) -> dict[str, Path]:
    import matplotlib.pyplot as plt

    written = {}
    for name, (draw, filename) in PLOTS.items():
        if (fig := draw(results)) is not None:
            fig.tight_layout()
            fig.savefig(out / filename, dpi=110)
            plt.close(fig)
            written[name] = out / filename
    return written


# -- the terminal table -------------------------------------------------------------------------------------------
#: The backend that runs a target's artifacts where it is not named as the target; another one is shown as ``@ort``.
HOME_BACKEND = {"onnx": "onnxruntime", "onnx-mobile": "onnxruntime", "tensorrt-engine": "tensorrt"}
#: Why a row is slower than its fp32 reference where that is known: target -> (ISA flags the host needs one of, why).
ARM = "built for arm: no NCHWc layout, which model.onnx gets at load on this x86 CPU"
SLOWER_BECAUSE = {"onnx-mobile": (("avx2", "avx512f"), ARM)}
SLOWER = 0.9  # a ratio under this is "slower" (timings vary 10 % between runs)
_LACKS_PRECISION = re.compile(r"\bhas no \S+ \(it has ")
_TWIN = (
    r"(\S+)'s (?:ONNX graph|twin) run by (\S+): the twin's numbers, NOT (\S+) speed",
    r"\1's graph run by \2 (the twin): NOT \3 speed",
)
COLUMNS = "row|status|acc.|MB|p50\nms|vs\nfp32|export\ngate|img/s\n@{batch}|RSS\nMB|recall\n%|delta\npts|agree\n%|\
/tool\np50"
LEFT = ("row", "status", "acc.", "export\ngate")


def shown_rows(results: BenchResults) -> list[Row]:
    """Every row but the export's placeholders for a precision a target lacks ("coreml has no fp32 ...")."""
    return [r for r in results.rows if not (r.status == "skipped" and _LACKS_PRECISION.search(r.reason))]


def row_name(row: Row) -> str:
    """``onnx:int8``, ``tensorrt:int8@ort``, ``onnx:fp32@ort/cuda``: backend and device only where not the home's."""
    name = row.artifact.replace("/qdq-onnx", "/qdq")  # results.json files of older versions
    device = row.device if row.device.lower() not in ("cpu", "-", "default", "") else ""
    if row.backend not in ("-", row.target, HOME_BACKEND.get(row.target)) or device:
        try:
            name += "@" + (runtime_backends.get(row.backend).short_name or row.backend)
        except ConfigError:  # torch, or a backend not registered here
            name += f"@{row.backend}"
    return f"{name}/{device}" if device else name


def _slower_note(results: BenchResults, rows: list[Row], row: Row) -> str:
    ratio = speedup(rows, row)
    if ratio is None or ratio >= SLOWER or row.target not in SLOWER_BECAUSE:
        return ""
    flags, why = SLOWER_BECAUSE[row.target]
    return why if any(results.environment.isa.get(f) for f in flags) else ""


def _no_ratio_note(rows: list[Row], row: Row) -> str:
    """A timed compressed row without a speed-up (TensorRT's graph timed in onnxruntime) says why: its note."""
    return "" if row.p50 is None or row.precision == "fp32" or speedup(rows, row) is not None else row.note


def gate_verdict(row: Row) -> str:
    """``pass``, ``FAIL`` and what failed, ``-`` where the artifact never reached the gate, ``ref`` for the baseline."""
    if row.key == BASELINE_KEY:
        return "ref"
    if failed := failed_checks(row.reason):
        return f"FAIL {failed[0]}" + (f"+{len(failed) - 1}" if len(failed) > 1 else "")
    return "-" if row.reason.startswith(("export failed", "export skipped")) else "pass"


def results_table(results: BenchResults) -> Table:  # the terminal table (rich)
    ev, cfg = results.eval, results.config
    title = f"facederm-bench: {cfg.threads} threads, batch 1 latency, img/s at batch {cfg.batch}, {cfg.repeats} repeat"
    title += ("s" if cfg.repeats != 1 else "") + (f"; {ev.n_images} eval images" if ev is not None else "")
    title += " (SYNTHETIC)" if ev is not None and ev.synthetic else ""
    caption = "vs fp32: speed-up over the same backend's fp32 row. export gate: the export's gate verdict. \
acc.: native or twin figures. delta: macro recall points vs torch fp32. /tool: facederm p50 / the backend's own tool. \
*: below. Load times, spreads, CIs, per-class recall, full reasons: report.md, results.csv."
    look = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "padding": (0, 1), "collapse_padding": True}
    table = Table(title=title, caption=caption, caption_justify="left", **look)
    for name in COLUMNS.split("|"):
        fit = {"max_width": 24, "overflow": "ellipsis"} if name == "row" else {}
        justify = "left" if name in LEFT else "right"
        table.add_column(name.format(batch=cfg.batch), justify=justify, no_wrap=True, **fit)
    rows = shown_rows(results)
    for r in rows:
        a, ratio = r.accuracy, speedup(rows, r)
        vs_fp32 = f"{ratio:.2f}x" + ("*" if _slower_note(results, rows, r) else "") if ratio is not None else "-"
        vs_fp32 += "*" if ratio is None and _no_ratio_note(rows, r) else ""
        cells = [row_name(r), r.status + ("*" if r.reason else ""), r.validated, num(r.size_mb, 1)]  # *: reasons below
        cells += [stat(r.latency_ms.get("p50"), 2, spread=False), vs_fp32, gate_verdict(r)]
        cells += [stat(r.throughput_ips, 0, spread=False), stat(r.peak_rss_mb, 0, spread=False)]
        cells += [pct(a and a.macro_recall), points(a and a.delta_macro_recall), pct(a and a.agreement)]
        cells += ["/".join(f"{t.latency_ratio:.2f}" for t in r.tools if t.latency_ratio is not None) or "-"]
        table.add_row(*cells, style={"failed": "red", "skipped": "yellow"}.get(r.status, ""))
    return table


def _short(reason: str) -> str:
    return re.sub(*_TWIN, short_reason(reason))


def reasons(results: BenchResults) -> list[str]:
    """One short line per reason behind the table's asterisks (``rows: reason``), within ``WIDTH - 4`` columns."""
    rows = shown_rows(results)
    grouped: dict[str, list[str]] = {}
    for r in rows:
        note, ref = _slower_note(results, rows, r), fp32_reference(rows, r)
        if note and ref is not None:
            note = f"{speedup(rows, r):.2f}x vs {row_name(ref)}: {note}"
        for reason in filter(None, (_short(r.reason), note, _short(_no_ratio_note(rows, r)))):
            grouped.setdefault(reason, []).append(row_name(r))
    lines = (" ".join(f"{', '.join(names)}: {reason}".split()) for reason, names in grouped.items())
    return [line if len(line) <= WIDTH - 4 else line[: WIDTH - 7].rstrip() + "..." for line in lines]
