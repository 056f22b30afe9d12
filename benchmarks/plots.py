"""The PNG plots (matplotlib, Agg): accuracy vs latency with the Pareto front, per-class recall by row,
latency distributions. Each plot is one function; rows without the figures a plot needs are left out
and the caption says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .schema import BenchResults, Row


def label(row: Row) -> str:
    """Short row name for plots: artifact on backend."""
    return f"{row.artifact} / {row.backend}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower latency x, higher recall y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((ox <= x and oy >= y) and (ox < x or oy > y) for j, (ox, oy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _subtitle(results: BenchResults) -> str:
    ev = results.eval
    data = f"{ev.spec} ({ev.n_images} images{', SYNTHETIC' if ev.synthetic else ''})" if ev else "no evaluation data"
    return f"{results.environment.cpu_model}, {results.config.threads} threads; {data}"


def accuracy_vs_latency(results: BenchResults, path: Path) -> Path | None:
    rows = [r for r in results.rows if r.p50 is not None and r.accuracy and r.accuracy.macro_recall is not None]
    if not rows:
        return None
    plt = _pyplot()
    points = [(r.p50, 100 * r.accuracy.macro_recall) for r in rows]  # type: ignore[union-attr,operator]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, (row, (x, y)) in enumerate(zip(rows, points)):
        on_front = i in front
        ax.scatter(
            [x],
            [y],
            s=70 if on_front else 40,
            marker="*" if on_front else "o",
            color="tab:red" if on_front else "tab:blue",
            zorder=3,
        )
        ax.annotate(label(row), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.plot(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        "--",
        color="tab:red",
        label="Pareto front (faster and at least as accurate)",
        zorder=2,
    )
    ax.set_xscale("log")
    ax.set_xlabel("latency p50 at batch 1 (ms, log scale)")
    ax.set_ylabel("macro recall (%)")
    ax.set_title(f"Accuracy vs latency\n{_subtitle(results)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, plt)


def per_class_recall(results: BenchResults, path: Path) -> Path | None:
    rows = [r for r in results.rows if r.accuracy and any(v is not None for v in r.accuracy.per_class_recall.values())]
    if not rows or not results.eval:
        return None
    plt = _pyplot()
    labels = list(results.eval.labels)
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(labels) + 0.25 * len(rows)), 5))
    for i, row in enumerate(rows):
        values = [100 * (row.accuracy.per_class_recall.get(c) or 0.0) for c in labels]  # type: ignore[union-attr]
        name = label(row) + (" (twin)" if row.accuracy.validated == "twin" else "")  # type: ignore[union-attr]
        ax.bar([k + i * width - 0.4 + width / 2 for k in range(len(labels))], values, width, label=name)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Per-class recall by artifact and backend\n{_subtitle(results)}", fontsize=9)
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, plt)


def latency_distribution(results: BenchResults, path: Path) -> Path | None:
    rows = [r for r in results.rows if r.latency_samples_ms]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 2))
    ax.boxplot(
        [list(r.latency_samples_ms) for r in rows],
        orientation="horizontal",
        showfliers=True,
        flierprops={"markersize": 2},
        whis=(1, 99),
    )
    ax.set_yticks(range(1, len(rows) + 1), [label(r) for r in rows], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("latency per call at batch 1 (ms, log scale); whiskers p1-p99, the median repeat")
    ax.set_title(f"Latency distributions\n{_subtitle(results)}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path, plt)


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: plot name -> (function, file name). Add a plot here.
PLOTS = {
    "plot_accuracy_latency": (accuracy_vs_latency, "accuracy_vs_latency.png"),
    "plot_per_class_recall": (per_class_recall, "per_class_recall.png"),
    "plot_latency": (latency_distribution, "latency_distribution.png"),
}


def write_plots(results: BenchResults, out: Path) -> dict[str, Path]:
    written = {name: draw(results, out / filename) for name, (draw, filename) in PLOTS.items()}
    return {name: path for name, path in written.items() if path is not None}
