"""The cross-validated part of docs/RESULTS.md: each recipe's pooled out-of-fold figures and the paired
differences between recipes, read from CV dirs (``facederm-train --cv K``), never typed by hand.

Every recipe is scored on the same images (each image once, by the fold that did not train on it), so two
recipes are compared paired (:func:`facederm.training.cv.compare_oof`): the CI is that of the difference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facederm.runtime.errors import ConfigError
from facederm.runtime.layout import CV_PLAN_FILE, OOF_FILE

from .config import recorded_defaults
from .cv import VIEWS, compare_oof, read_oof, summarize

#: Training options shown as a recipe's description (the rest are in its cv.json).
RECIPE_KEYS = ("arch", "protocol", "epochs", "img_size", "pixel_noise", "label_smoothing", "lr")
#: Shown only when set (image-only, no extra data otherwise).
OPTIONAL_RECIPE_KEYS = (
    "rotation",
    "color_jitter",
    "stability_weight",
    "stability_noise",
    "ema_decay",
    "quant_aware_epochs",
    "clinical",
    "clinical_dropout",
    "clinical_fusion",
    "extra_data",
)
#: Shown only with the option they qualify.
QUALIFIERS = {"stability_noise": "stability_weight", "clinical_dropout": "clinical", "clinical_fusion": "clinical"}


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _ci(ci: Sequence[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f}"


def load_cv(cv_dir: Path) -> dict[str, Any]:
    """A CV dir's plan and pooled out-of-fold summary; :class:`ConfigError` when it is not a finished one."""
    plan_path, oof_path = cv_dir / CV_PLAN_FILE, cv_dir / OOF_FILE
    if not plan_path.is_file() or not oof_path.is_file():
        raise ConfigError(f"{cv_dir}: not a finished CV dir (needs {CV_PLAN_FILE} and {OOF_FILE})")
    plan = json.loads(plan_path.read_text())
    return {"dir": cv_dir, "plan": plan, "summary": summarize(read_oof(oof_path))}


def _recipe(plan: dict[str, Any]) -> str:
    options = plan.get("options", {})
    shown = [f"{key} {options[key]}" for key in RECIPE_KEYS if key in options]
    shown += [
        f"{key} {_value(options[key])}"
        for key in OPTIONAL_RECIPE_KEYS
        if options.get(key) and options.get(QUALIFIERS.get(key, key))
    ]
    defaults = recorded_defaults()  # a plan written before an option existed had its default
    if options.get("head_hidden", defaults["head_hidden"]) != defaults["head_hidden"]:
        shown.append(f"head {options['head_hidden'] or 'linear'}")
    if options.get("val_fraction", defaults["val_fraction"]) != defaults["val_fraction"]:
        shown.append(f"val_fraction {options['val_fraction']}")
    if plan.get("bare_loop"):
        shown.insert(0, "bare timm loop (training/bare_loop.py)")
    return ", ".join(shown)


def _value(value: Any) -> str:
    return " + ".join(map(str, value)) if isinstance(value, list) else str(value)


def render_cv(
    entries: Sequence[tuple[Path, str]],
    baseline: str | None = None,
    *,
    pairs: Sequence[tuple[str, str]] = (),
    n_boot: int = 1000,
) -> list[str]:
    """Markdown lines: a summary row per recipe and view, per-class recall with support, and paired differences:
    of each ``pairs`` (A, B) entry, B minus A (labels of ``entries``), else of every recipe to ``baseline``
    (default the first)."""
    runs = [load_cv(Path(folder)) | {"label": label} for folder, label in entries]
    if not runs:
        return []
    by_label = {run["label"]: run for run in runs}
    baseline = baseline or runs[0]["label"]
    for option, label in [("--baseline", baseline), *(("--pair", label) for pair in pairs for label in pair)]:
        if label not in by_label:
            raise ConfigError(f"{option} {label!r} is not one of the CV labels: {', '.join(sorted(by_label))}")
    compared = list(pairs) or [(baseline, run["label"]) for run in runs if run["label"] != baseline]
    lines = [
        "## Cross-validated results (out-of-fold, every image once)",
        "",
        "Patient-grouped K-fold cross-validation (`facederm-train --cv K`): each image is predicted by the fold",
        "that did not train on it, so the pool covers every image of the subset. 95 % CIs: patient bootstrap",
        f"({n_boot} resamples) over the pool. `supported mean`: mean recall over the classes with at least 5",
        "images in the pool (face: face images). Fold spread: mean ± sd of the fold figures.",
        "",
        "| recipe | K | view | images | mean recall [95% CI] | supported mean [95% CI] | mean precision "
        "| macro AUC | fold spread (mean ± sd) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for view in VIEWS:
            pooled = run["summary"]["views"][view]["pooled"]
            spread = run["summary"]["views"][view]["spread"]["macro_recall"]
            sd = f" ± {spread['sd']:.2f}" if spread.get("sd") is not None else ""
            lines.append(
                f"| {run['label']} | {run['plan']['k']} | {view} | {pooled['n_images']} | "
                f"{_fmt(pooled['macro_recall'])} {_ci(pooled['macro_recall_ci'])} | "
                f"{_fmt(pooled['macro_recall_supported'])} {_ci(pooled['macro_recall_supported_ci'])} | "
                f"{_fmt(pooled['macro_precision'])} | {_fmt(pooled['auc_macro'])} | {_fmt(spread.get('mean'))}{sd} |"
            )
    lines += ["", "Recipes:", ""]
    lines += [f"- **{run['label']}** (`{run['dir']}`): {_recipe(run['plan'])}" for run in runs]
    for view in VIEWS:
        labels_order = runs[0]["summary"]["labels"]
        lines += [
            "",
            f"### Per class, {view} images (recall [95% CI]; support)",
            "",
            "| recipe | " + " | ".join(labels_order) + " |",
            "|---|" + "---|" * len(labels_order),
        ]
        for run in runs:
            per_class = run["summary"]["views"][view]["pooled"]["per_class"]
            cells = [
                f"{_fmt(per_class[c]['recall'])} {_ci(per_class[c]['recall_ci'])}; {per_class[c]['support']}"
                for c in labels_order
            ]
            lines.append(f"| {run['label']} | " + " | ".join(cells) + " |")
    if compared:
        title = "Paired differences, B minus A" if pairs else f"Paired differences to `{baseline}`"
        lines += [
            "",
            f"### {title} (same images, patient bootstrap of the difference)",
            "",
            "| A → B | view | images | mean recall (A → B) | difference [95% CI] | per class difference |",
            "|---|---|---|---|---|---|",
        ]
        for a, b in compared:
            for view in VIEWS:
                diff = compare_oof(by_label[a]["dir"], by_label[b]["dir"], site=view, n_boot=n_boot)
                per_class = ", ".join(
                    f"{label} {_signed(row['delta'])}" for label, row in diff.per_class.items() if row["support"]
                )
                lines.append(
                    f"| {a} → {b} | {view} | {diff.n_images} | {_fmt(diff.macro_recall_a)} → "
                    f"{_fmt(diff.macro_recall_b)} | {_signed(diff.delta)} {_ci(diff.ci)} | {per_class} |"
                )
    return lines + [""]
