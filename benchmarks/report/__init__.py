"""Everything a bench run writes: results.json, results.csv, report.md and the PNG plots.

Each output is one module with one function; :func:`write_reports` calls them all. The terminal
table (:mod:`.table`) is printed by the CLI.
"""

from __future__ import annotations

from pathlib import Path

from ..schema import BenchResults
from .csv_file import write_csv
from .markdown import write_markdown
from .plots import write_plots

RESULTS_JSON = "results.json"


def write_reports(results: BenchResults, out: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write every output into ``out``; returns {name: path}."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    results.save(out / RESULTS_JSON)
    files["json"] = out / RESULTS_JSON
    files["csv"] = write_csv(results, out / "results.csv")
    if plots:
        files.update(write_plots(results, out))
    files["markdown"] = write_markdown(results, out / "report.md", plots={k: v for k, v in files.items()
                                                                          if k.startswith("plot_")})
    return files
