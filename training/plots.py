"""PNG plots of a run: confusion matrix, one-vs-rest ROC curves (the study's Fig. 3), training history.
matplotlib with the Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .metrics import binary_auc, roc_curve


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_confusion_matrix(cm: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str) -> Path:
    """Counts, with each row's share (recall) as the color; rows are true classes."""
    cm = np.asarray(cm)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.8 * len(labels)))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), [f"{label} (n={cm[i].sum()})" for i, label in enumerate(labels)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def plot_roc(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], path: str | Path, title: str) -> Path:
    """One-vs-rest ROC curve per class with its AUC and support; classes without positives are skipped."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for c, label in enumerate(labels):
        positive = np.asarray(y_true) == c
        if positive.sum() == 0 or positive.all():
            continue
        fpr, tpr = roc_curve(positive, probs[:, c])
        ax.plot(fpr, tpr, label=f"{label} AUC {binary_auc(positive, probs[:, c]):.2f} (n={positive.sum()})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_history(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Training loss and validation macro recall per epoch, stages one after another."""
    fig, ax_loss = plt.subplots(figsize=(7, 4))
    steps = np.arange(1, len(history) + 1)
    ax_loss.plot(steps, [h["loss"] for h in history], color="tab:blue", marker="o", label="train loss")
    ax_loss.set_xlabel("epoch (all stages)")
    ax_loss.set_ylabel("train loss", color="tab:blue")
    ax_recall = ax_loss.twinx()
    recalls = [np.nan if h["val_macro_recall"] is None else h["val_macro_recall"] for h in history]
    ax_recall.plot(steps, recalls, color="tab:orange", marker="s", label="val macro recall")
    ax_recall.set_ylabel("val macro recall", color="tab:orange")
    ax_recall.set_ylim(0, 1)
    for i in range(1, len(history)):
        if history[i]["stage"] != history[i - 1]["stage"]:
            ax_loss.axvline(i + 0.5, color="grey", linestyle="--", linewidth=1)
    ax_loss.set_title("training history")
    return _save(fig, path)
