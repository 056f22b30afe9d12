"""Run the RESULTS configurations on PAD-UFES-20 and write docs/RESULTS.md from the run dirs.

    python -m facederm.training.results run --set cpu --runs runs/pad      # train (resumable)
    python -m facederm.training.results report --runs runs/pad --out docs/RESULTS.md

``run`` trains every configuration of a set that has no finished run dir yet (an interrupted one is
resumed); ``report`` reads each run dir's config.json, metrics.json and history.json, so every figure
in the document comes from a run, never from this file.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from facederm.runtime.cli_support import common_option, debug_option, one_line_errors
from facederm.runtime.errors import ConfigError
from facederm.runtime.layout import CARD_FILE, HISTORY_FILE, METRICS_FILE

DEFAULT_DATA = "pad-ufes-20:" + str(
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pad-ufes-20-subset"
)


@dataclass(frozen=True)
class RunSpec:
    """One RESULTS configuration: its run dir name and the facederm-train options."""

    name: str
    arch: str
    protocol: str
    epochs: int = 12
    img_size: int = 300
    batch_size: int = 32
    options: dict[str, Any] = field(default_factory=dict)

    def command(self, data: str, runs: str) -> str:
        extra = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.options.items())
        return (
            f"facederm-train --data {data} --arch {self.arch} --protocol {self.protocol} --epochs {self.epochs} "
            f"--img-size {self.img_size} --batch-size {self.batch_size} --out {runs}/{self.name} {extra}"
        ).strip()


def _protocol_trio(arch: str, prefix: str, **kw: Any) -> list[RunSpec]:
    return [RunSpec(f"{prefix}-{p}", arch, p, **kw) for p in ("face-only", "face-transfer", "all")]


#: Named sets of configurations. "cpu": EfficientNet-Lite0 (ImageNet) under the three protocols, 12 epochs
#: per stage; "gpu": the same at 20 epochs plus two of the study's CNNs (random init: no bundled weights).
SETS: dict[str, list[RunSpec]] = {
    "cpu": _protocol_trio("efficientnet_lite0", "lite0"),
    "gpu": _protocol_trio("efficientnet_lite0", "lite0", epochs=20)
    + _protocol_trio("resnet50", "resnet50", epochs=20)
    + _protocol_trio("inception_v3", "inception_v3", epochs=20),
    "smoke": [RunSpec("smoke-face-transfer", "mobilenetv3_small_050", "face-transfer", epochs=1, img_size=32)],
}


def run(
    set_name: str,
    runs: str | Path,
    data: str = DEFAULT_DATA,
    device: str = "auto",
    workers: int = 0,
    progress: bool = True,
    **overrides: Any,
) -> list[Path]:
    """Train every configuration of ``SETS[set_name]`` into ``runs/<name>`` (finished runs are kept)."""
    from facederm.training.config import TrainConfig
    from facederm.training.trainer import train

    done = []
    for spec in SETS[set_name]:
        options = {
            "epochs": spec.epochs,
            "img_size": spec.img_size,
            "batch_size": spec.batch_size,
            **spec.options,
            **overrides,
        }
        config = TrainConfig(
            data=data,
            out=Path(runs) / spec.name,
            arch=spec.arch,
            protocol=spec.protocol,
            device=device,
            workers=workers,
            resume=True,
            progress=progress,
            **options,
        )
        done.append(train(config).run_dir)
    return done


# ----------------------------------------------------------------------------------------------- report
def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ci(ci: list[float | None] | None) -> str:
    if not ci or ci[0] is None:
        return ""
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def _load(run_dir: Path) -> dict[str, Any] | None:
    files = {
        name: run_dir / file
        for name, file in (("config", CARD_FILE), ("metrics", METRICS_FILE), ("history", HISTORY_FILE))
    }
    if not all(p.is_file() for p in files.values()):
        return None
    return {name: json.loads(p.read_text()) for name, p in files.items()} | {"dir": run_dir}


def _face_split(run: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The face test images' metrics: "test" for face protocols, "test_face" for protocol all."""
    metrics = run["metrics"]
    return ("test_face", metrics["test_face"]) if "test_face" in metrics else ("test", metrics["test"])


def _per_class_table(split: dict[str, Any]) -> list[str]:
    rows = ["| class | support | recall [95% CI] | precision | F1 | AUC |", "|---|---|---|---|---|---|"]
    for label, c in split["per_class"].items():
        rows.append(
            f"| {label} | {c['support']} | {_fmt(c['recall'])}{_ci(c['recall_ci'])} | {_fmt(c['precision'])} "
            f"| {_fmt(c['f1'])} | {_fmt(c['auc'])} |"
        )
    rows.append(
        f"| **mean** | {split['n_images']} ({split['n_patients']} patients) | "
        f"**{_fmt(split['macro_recall'])}**{_ci(split['macro_recall_ci'])} | "
        f"**{_fmt(split['macro_precision'])}** | | {_fmt(split['auc_macro'])} |"
    )
    return rows


def _summary_row(run: dict[str, Any]) -> str:
    card, history = run["config"], run["history"]
    _, face = _face_split(run)
    training = card["data"].get("training", {})
    per_epoch = [h["seconds"] for h in history]
    epoch_s = sorted(per_epoch)[len(per_epoch) // 2] if per_epoch else None
    stages = " + ".join(f"{s['name']} {s['train_images']}" for s in card["data"].get("stages", []))
    return (
        f"| {run['dir'].name} | {card['arch']} | {training.get('init', '?')} | {card['protocol']} | {stages} | "
        f"{len(history)} | {face['n_images']} | {_fmt(face['macro_recall'])}{_ci(face['macro_recall_ci'])} | "
        f"{_fmt(face['macro_precision'])} | {_fmt(face['auc_macro'])} | {_fmt(epoch_s, 1)} | "
        f"{_fmt(card.get('wall_time_s'), 0)} |"
    )


def _labelled(spec: str) -> tuple[Path, str]:
    """``DIR=LABEL`` (or ``DIR``, labelled by its name)."""
    path, _, label = spec.partition("=")
    return Path(path), label or Path(path).name


def _pair(spec: str) -> tuple[str, str]:
    """``A,B`` -> (A, B); :class:`ConfigError` otherwise."""
    a, sep, b = spec.partition(",")
    if not sep or not a.strip() or not b.strip() or "," in b:
        raise ConfigError(f"--pair {spec!r}: give two CV labels, A,B")
    return a.strip(), b.strip()


def _findings(runs: list[dict[str, Any]]) -> list[str]:
    """Protocol comparisons per (where, arch), computed from the runs."""
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_key.setdefault((run["where"], run["config"]["arch"]), {})[run["config"]["protocol"]] = _face_split(run)[1]
    lines = []
    for (where, arch), protocols in sorted(by_key.items()):
        parts = [f"{p} {_fmt(m['macro_recall'])}{_ci(m['macro_recall_ci'])}" for p, m in sorted(protocols.items())]
        line = f"- {where}, {arch}: " + "; ".join(parts)
        if "face-only" in protocols and "face-transfer" in protocols:
            only, transfer = protocols["face-only"], protocols["face-transfer"]
            delta = (transfer["macro_recall"] or 0) - (only["macro_recall"] or 0)
            overlap = (transfer["macro_recall_ci"][0] or 0) <= (only["macro_recall_ci"][1] or 1) and (
                only["macro_recall_ci"][0] or 0
            ) <= (transfer["macro_recall_ci"][1] or 1)
            line += (
                f". Transfer minus face-only: {delta:+.2f} mean recall"
                f"{' (CIs overlap: not a measured difference)' if overlap else ''}."
            )
        lines.append(line)
    best = max(runs, key=lambda r: _face_split(r)[1]["macro_recall"] or 0)
    best_face = _face_split(best)[1]
    reached = (best_face["macro_recall"] or 0) >= 0.70
    lines += [
        "",
        f"Best configuration on the face test images: {best['where']} {best['dir'].name}, mean recall "
        f"{_fmt(best_face['macro_recall'])}{_ci(best_face['macro_recall_ci'])}: the 0.70 target is "
        f"{'reached' if reached else 'NOT reached'}.",
    ]
    return lines


def _throughput_lines(files: list[tuple[Path, str]]) -> list[str]:
    if not files:
        return []
    lines = [
        "## Training throughput: facederm vs a bare timm loop",
        "",
        "`python -m facederm.training.throughput` (medians of alternating runs; the bare loop feeds",
        "pre-made tensors, so the ratio is facederm's whole data + augmentation + loss overhead).",
        "",
        "| where | arch | input | batch | workers | facederm img/s | bare loop img/s | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path, label in files:
        t = json.loads(path.read_text())
        lines.append(
            f"| {label} | {t['arch']} | {t['img_size']} | {t['batch_size']} | {t['workers']} | "
            f"{t['facederm_images_per_s']:.1f} | {t['bare_images_per_s']:.1f} | {t['ratio']:.2f} |"
        )
    return lines + [""]


CITATION = [
    "Written by `python -m facederm.training.results report` from the run dirs' `config.json`, `metrics.json`",
    "and `history.json` and the CV dirs' `cv.json` and `oof.csv`; no figure here is typed by hand. Data:",
    "PAD-UFES-20 (Pacheco et al., Mendeley Data V1, 2020, doi:10.17632/zr7vgbcyr2.1, CC BY 4.0), the 541-image",
    "patient-disjoint subset in `../shared/data/pad-ufes-20-subset` (143 face images).",
]


def render(runs_dirs: list[tuple[Path, str]], throughput: list[tuple[Path, str]] = (), cv_lines: list[str] = ()) -> str:
    """RESULTS.md text from the finished run dirs under ``runs_dirs`` ((folder, label) pairs), after the
    cross-validated section ``cv_lines`` (:func:`facederm.training.cv_results.render_cv`) when given."""
    runs = []
    for folder, label in runs_dirs:
        for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else ():
            if path.is_dir() and (run := _load(path)):
                runs.append(run | {"where": label})
    if not runs and not cv_lines:
        raise SystemExit(f"no finished run dirs under {', '.join(str(f) for f, _ in runs_dirs)}")
    if not runs:
        return "\n".join(["# Results on the PAD-UFES-20 subset", "", *CITATION, "", *cv_lines])
    lines = [
        "# Results on the PAD-UFES-20 subset",
        "",
        *CITATION,
        "Single-split runs: splits are by patient over all images (65/15/20 %), then filtered by site per stage,",
        "so no patient crosses splits in any stage.",
        "",
        *cv_lines,
        "`where`: CPU = the 2-core development machine, shared with four other engineers' jobs while these",
        "ran (its seconds per epoch are inflated by contention; see the throughput table for a quiet-machine",
        "figure); H200 = the same code with `--device cuda` on a lent GPU machine (its torch / timm versions",
        "are in each run's config.json). Random-init rows: these archs have no bundled ImageNet weights here",
        "(`--pretrained` downloads timm's, which this offline machine cannot).",
        "",
        "**All figures below are on the face images of the test patients** (protocol `all` is trained on every",
        "site and evaluated on those same face test images). 95 % CIs: percentile bootstrap resampling",
        "patients (1000 resamples). Not a diagnosis; not a clinical validation.",
        "",
        "## Summary",
        "",
        "| where | run | arch | init | protocol | train images per stage | epochs run | face test images "
        "| mean recall [95% CI] | mean precision | macro AUC | s/epoch (median) | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['where']} " + _summary_row(r) for r in runs]
    lines += ["", "## Findings (computed from the runs above)", ""] + _findings(runs) + [""]
    lines += _throughput_lines(list(throughput))
    lines += ["", "## Per class (study Table 3 = face-only, Table 4 = face-transfer)", ""]
    for run in runs:
        split_name, face = _face_split(run)
        card = run["config"]
        lines += [
            f"### {run['where']} {run['dir'].name}: {card['arch']}, {card['protocol']}, evaluated on `{split_name}`",
            "",
        ]
        lines += _per_class_table(face)
        if "test_face" in run["metrics"]:
            everything = run["metrics"]["test"]
            lines += [
                "",
                f"All test sites ({everything['n_images']} images): mean recall "
                f"{_fmt(everything['macro_recall'])}{_ci(everything['macro_recall_ci'])}, mean precision "
                f"{_fmt(everything['macro_precision'])}.",
            ]
        lines.append("")
    lines += [
        "## Reproduce",
        "",
        "Each configuration is one `facederm-train` command (the `run` subcommand runs a whole set and resumes",
        "interrupted runs; `--device auto` uses CUDA when present):",
        "",
        "```bash",
    ]
    for set_name in ("cpu", "gpu"):
        lines.append(
            f"# set {set_name}: python -m facederm.training.results run --set {set_name} --runs runs/{set_name}"
        )
        lines += [
            spec.command("pad-ufes-20:../shared/data/pad-ufes-20-subset", f"runs/{set_name}") for spec in SETS[set_name]
        ]
    lines += [
        "python -m facederm.training.results report --runs runs/pad=CPU --runs runs/gpu/pad=H200 \\",
        "    --throughput runs/throughput_cpu.json=CPU --throughput runs/gpu/throughput_h200.json=H200 \\",
        "    --out docs/RESULTS.md",
        "```",
        "",
    ]
    first = runs[0]["config"]
    counts = first["data"]["counts"]
    lines += [
        "## Why the face figures are fragile",
        "",
        "Face images per class in the final stage's splits (from the run's model card):",
        "",
        "| class | train | val | test |",
        "|---|---|---|---|",
    ]
    for label in first["labels"]:
        lines.append(
            f"| {label} | " + " | ".join(str(counts[s][label]["face"]) for s in ("train", "val", "test")) + " |"
        )
    test_classes = [label for label in first["labels"] if counts["test"][label]["face"]]
    untrained = [label for label in test_classes if not counts["train"][label]["face"]]
    if untrained:
        ceiling = (len(test_classes) - len(untrained)) / len(test_classes)
        lines += [
            "",
            f"{', '.join(untrained)} {'has' if len(untrained) == 1 else 'have'} face test images but no face "
            "training image in this patient split. A model whose last stage sees only face images gets no "
            "gradient for them (their class weight is 0), so for face-only the mean recall over the "
            f"{len(test_classes)} test classes is at most {len(test_classes) - len(untrained)}/"
            f"{len(test_classes)} = {ceiling:.2f}, whatever the network. face-transfer learns them on other "
            "sites in stage 1, but stage 2 fine-tunes on face images alone and can forget them "
            "(`--finetune-lr-scale` lowers stage 2's learning rate: 1.0 in the H200 runs, 0.1 in the CPU "
            "face-transfer run; each run's value is in its config.json); protocol `all` keeps them in "
            "every batch.",
        ]
    lines += [
        "",
        "A class with 1-4 face test images moves the mean recall by 1/6 per image: the CIs above are the",
        "honest reading. Compare protocols by their CIs, not by their point estimates.",
        "",
        "## Environment",
        "",
        f"- report written on {platform.node() or 'unknown host'}, {os.cpu_count()} CPUs visible; "
        "the runs' versions are in their config.json.",
        "",
    ]
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train the RESULTS configurations on PAD-UFES-20 and write docs/RESULTS.md from the run dirs."""


@main.command("run")
@click.option("--set", "set_name", type=click.Choice(list(SETS)), default="cpu", show_default=True)
@click.option("--runs", default="runs/pad", show_default=True, help="Folder of the run dirs.")
@common_option("--data", default=DEFAULT_DATA)
@common_option("--device", default="auto", show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="Data loader workers.")
@click.option("--epochs", type=int, help="Override every configuration's epochs.")
@debug_option()
def run_command(
    set_name: str, runs: str, data: str, device: str, workers: int, epochs: int | None, debug: bool
) -> None:
    """Train a set of configurations (finished runs are kept, interrupted ones resumed)."""
    with one_line_errors("results run", debug):
        run(set_name, runs, data, device, workers, **({"epochs": epochs} if epochs else {}))


@main.command("report")
@click.option(
    "--runs",
    "runs_dirs",
    multiple=True,
    default=["runs/pad"],
    show_default=True,
    help="Run folders, each DIR or DIR=LABEL (repeatable).",
)
@click.option("--throughput", multiple=True, help="train_throughput JSON files, FILE=LABEL (repeatable).")
@click.option("--cv", "cv_dirs", multiple=True, help="CV dirs (facederm-train --cv K), DIR=LABEL (repeatable).")
@click.option(
    "--baseline", default=None, help="The CV label the others are compared with, paired (default: the first)."
)
@click.option(
    "--pair",
    "pairs",
    multiple=True,
    metavar="A,B",
    help="Compare CV labels A and B paired (B minus A; repeatable); replaces the comparisons to --baseline.",
)
@common_option("--out", default="docs/RESULTS.md", show_default=True)
@debug_option()
def report_command(
    runs_dirs: tuple[str, ...],
    throughput: tuple[str, ...],
    cv_dirs: tuple[str, ...],
    baseline: str | None,
    pairs: tuple[str, ...],
    out: str,
    debug: bool,
) -> None:
    """Write RESULTS.md from CV dirs (paired comparisons) and run dirs."""
    with one_line_errors("results report", debug):
        from .cv_results import render_cv

        cv_lines = render_cv([_labelled(c) for c in cv_dirs], baseline, pairs=[_pair(p) for p in pairs])
        text = render([_labelled(r) for r in runs_dirs], [_labelled(t) for t in throughput], cv_lines)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    click.echo(f"wrote {out}")


@main.command("commands")
@click.option("--set", "set_name", type=click.Choice(list(SETS)), default="cpu", show_default=True)
@click.option("--runs", default="runs/pad", show_default=True, help="Folder of the run dirs.")
@common_option("--data", default=DEFAULT_DATA)
@debug_option()
def commands_command(set_name: str, runs: str, data: str, debug: bool) -> None:
    """Print the facederm-train commands of a set."""
    for spec in SETS[set_name]:
        click.echo(spec.command(data, runs))


if __name__ == "__main__":
    main()
