"""The PNG plots (matplotlib, Agg): accuracy vs latency with the Pareto front, per-class recall by row, latency
distributions. Rows without the figures a plot needs are left out; a plot with no row is not written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .schema import BenchResults, Row


def label(row: Row) -> str:
    return f"{row.artifact} / {row.backend}"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower latency x, higher recall y), by latency."""
    front = [
        i
        for i, (x, y) in enumerate(points)
        if not any(ox <= x and oy >= y and (ox < x or oy > y) for j, (ox, oy) in enumerate(points) if j != i)
    ]
    return sorted(front, key=lambda i: points[i][0])


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
        look = (
            {"s": 70, "marker": "*", "color": "tab:red"}
            if i in front
            else {"s": 40, "marker": "o", "color": "tab:blue"}
        )
        ax.scatter([x], [y], zorder=3, **look)
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
        fig = draw(results)
        if fig is not None:
            fig.tight_layout()
            fig.savefig(out / filename, dpi=110)
            plt.close(fig)
            written[name] = out / filename
    return written
