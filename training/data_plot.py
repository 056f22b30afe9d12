"""A picture of a data set summary: images per class, split and site (matplotlib PNG)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from facederm.runtime.errors import MissingDependencyError

from .splits import SPLIT_NAMES

_SITE_STYLE = {"face": {"alpha": 1.0, "hatch": ""}, "other": {"alpha": 0.45, "hatch": "//"}}


def plot_summary(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Grouped bars (one group per class, one bar per split, face stacked on other) saved as PNG.

    ``summary`` is :func:`facederm.training.data_inspect.summarize`'s result. Written atomically.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "train", "data plots") from exc

    labels = summary["label_set"]["labels"]
    width = 0.8 / len(SPLIT_NAMES)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(labels), 4.0), dpi=120)
    colors = plt.get_cmap("tab10").colors
    for j, split in enumerate(SPLIT_NAMES):
        by_site = summary["splits"][split]["classes_by_site"]
        xs = [i + (j - 1) * width for i in range(len(labels))]
        face = [by_site[label]["face"] for label in labels]
        other = [by_site[label]["other"] for label in labels]
        ax.bar(xs, face, width, color=colors[j], label=f"{split} face", **_SITE_STYLE["face"])
        ax.bar(
            xs,
            other,
            width,
            bottom=face,
            color=colors[j],
            label=f"{split} other",
            edgecolor="white",
            **_SITE_STYLE["other"],
        )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("images")
    kind = "SYNTHETIC data" if summary["synthetic"] else "data"
    ax.set_title(
        f"{kind}: {summary['source']}\n{summary['images']} images, {summary['patients']} patients, "
        f"site {summary['site']}, seed {summary['seed']}",
        fontsize=9,
    )
    ax.legend(fontsize=7, ncol=len(SPLIT_NAMES))
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
