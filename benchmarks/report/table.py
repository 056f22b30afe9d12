"""The terminal table (rich): one line per row, the columns people compare first."""

from __future__ import annotations

from rich.table import Table

from ..schema import BenchResults
from .fmt import delta_with_ci, num, pct, stat


def _tool_ratio(row) -> str:
    parts = [f"{'bapp' if t.tool == 'benchmark_app' else 'ort'} {t.latency_ratio:.2f}"
             for t in row.tools if t.latency_ratio is not None]
    return ", ".join(parts) or "-"


def results_table(results: BenchResults) -> Table:
    ev = results.eval
    title = f"facederm-bench: {results.config.threads} threads, batch {results.config.batch}, {results.config.repeats} repeats"
    if ev is not None:
        title += f"; {ev.n_images} eval images{' (SYNTHETIC)' if ev.synthetic else ''}"
    table = Table(title=title, show_lines=False)
    for name, justify in (("row", "left"), ("status", "left"), ("valid.", "left"), ("MB", "right"),
                          ("load ms", "right"), ("p50 ms", "right"), ("p99", "right"),
                          (f"img/s@{results.config.batch}", "right"), ("RSS MB", "right"), ("macro rec %", "right"),
                          ("delta pts [CI]", "right"), ("agree %", "right"), ("facederm/tool", "right")):
        table.add_column(name, justify=justify, overflow="fold", no_wrap=name == "row")
    for r in results.rows:
        state = r.status + ("*" if r.reason else "")  # the reasons are listed under the table
        style = {"failed": "red", "skipped": "yellow"}.get(r.status, "")
        a = r.accuracy
        table.add_row(
            f"{r.artifact} / {r.backend}", state, r.validated, num(r.size_mb, 1), stat(r.cold_load_ms, 0, spread=False),
            stat(r.latency_ms.get("p50"), 2), stat(r.latency_ms.get("p99"), 2, spread=False), stat(r.throughput_ips, 0, spread=False),
            stat(r.peak_rss_mb, 0, spread=False), pct(a.macro_recall if a else None), delta_with_ci(r),
            pct(a.agreement if a else None), _tool_ratio(r), style=style,
        )
    return table


def reasons(results: BenchResults) -> list[str]:
    """``key: reason`` for every row with something skipped or failed (the table's asterisks)."""
    return [f"{r.key}: {r.reason}" for r in results.rows if r.reason]
