"""Run the RESULTS configurations on PAD-UFES-20 and write docs/RESULTS.md from the run dirs.

    python -m facederm.benchmarks.pad_results run --set cpu --runs runs/pad      # train (resumable)
    python -m facederm.benchmarks.pad_results report --runs runs/pad --out docs/RESULTS.md

``run`` trains every configuration of a set that has no finished run dir yet (an interrupted one is
resumed); ``report`` reads each run dir's config.json, metrics.json and history.json, so every figure
in the document comes from a run, never from this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DATA = "pad-ufes-20:" + str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pad-ufes-20-subset")


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
        return (f"facederm-train --data {data} --arch {self.arch} --protocol {self.protocol} --epochs {self.epochs} "
                f"--img-size {self.img_size} --batch-size {self.batch_size} --out {runs}/{self.name} {extra}").strip()


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


def run(set_name: str, runs: str | Path, data: str = DEFAULT_DATA, device: str = "auto", workers: int = 0,
        progress: bool = True, **overrides: Any) -> list[Path]:
    """Train every configuration of ``SETS[set_name]`` into ``runs/<name>`` (finished runs are kept)."""
    from facederm.training.config import TrainConfig
    from facederm.training.trainer import train

    done = []
    for spec in SETS[set_name]:
        options = {"epochs": spec.epochs, "img_size": spec.img_size, "batch_size": spec.batch_size,
                   **spec.options, **overrides}
        config = TrainConfig(data=data, out=Path(runs) / spec.name, arch=spec.arch, protocol=spec.protocol,
                             device=device, workers=workers, resume=True, progress=progress, **options)
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
    files = {name: run_dir / f"{name}.json" for name in ("config", "metrics", "history")}
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
        rows.append(f"| {label} | {c['support']} | {_fmt(c['recall'])}{_ci(c['recall_ci'])} | {_fmt(c['precision'])} "
                    f"| {_fmt(c['f1'])} | {_fmt(c['auc'])} |")
    rows.append(f"| **mean** | {split['n_images']} ({split['n_patients']} patients) | "
                f"**{_fmt(split['macro_recall'])}**{_ci(split['macro_recall_ci'])} | "
                f"**{_fmt(split['macro_precision'])}** | | {_fmt(split['auc_macro'])} |")
    return rows


def _summary_row(run: dict[str, Any]) -> str:
    card, history = run["config"], run["history"]
    _, face = _face_split(run)
    training = card["data"].get("training", {})
    per_epoch = [h["seconds"] for h in history]
    epoch_s = sorted(per_epoch)[len(per_epoch) // 2] if per_epoch else None
    stages = " + ".join(f"{s['name']} {s['train_images']}" for s in card["data"].get("stages", []))
    return (f"| {run['dir'].name} | {card['arch']} | {training.get('init', '?')} | {card['protocol']} | {stages} | "
            f"{len(history)} | {face['n_images']} | {_fmt(face['macro_recall'])}{_ci(face['macro_recall_ci'])} | "
            f"{_fmt(face['macro_precision'])} | {_fmt(face['auc_macro'])} | {_fmt(epoch_s, 0)} | "
            f"{_fmt(card.get('wall_time_s'), 0)} |")


def render(runs_dirs: list[Path], data: str = DEFAULT_DATA) -> str:
    """RESULTS.md text from the finished run dirs under ``runs_dirs``."""
    runs = [r for d in runs_dirs for p in sorted(Path(d).iterdir()) if p.is_dir() and (r := _load(p))]
    if not runs:
        raise SystemExit(f"no finished run dirs under {', '.join(map(str, runs_dirs))}")
    lines = [
        "# Results on the PAD-UFES-20 subset",
        "",
        "Written by `python -m facederm.benchmarks.pad_results report` from the run dirs' `config.json`,",
        "`metrics.json` and `history.json`; no figure here is typed by hand. Data: PAD-UFES-20 (Pacheco et al.,",
        "Mendeley Data V1, 2020, doi:10.17632/zr7vgbcyr2.1, CC BY 4.0), the 541-image patient-disjoint subset in",
        "`../shared/data/pad-ufes-20-subset` (143 face images). Splits are by patient over all images",
        "(65/15/20 %), then filtered by site per stage, so no patient crosses splits in any stage.",
        "",
        "**All figures below are on the face images of the test patients** (protocol `all` is trained on every",
        "site and evaluated on those same face test images). 95 % CIs: percentile bootstrap resampling",
        "patients (1000 resamples). Not a diagnosis; not a clinical validation.",
        "",
        "## Summary",
        "",
        "| run | arch | init | protocol | train images per stage | epochs run | face test images | mean recall [95% CI] "
        "| mean precision | macro AUC | s/epoch (median) | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_summary_row(r) for r in runs]
    lines += ["", "## Per class (study Table 3 = face-only, Table 4 = face-transfer)", ""]
    for run in runs:
        split_name, face = _face_split(run)
        card = run["config"]
        lines += [f"### {run['dir'].name}: {card['arch']}, {card['protocol']}, evaluated on `{split_name}`", ""]
        lines += _per_class_table(face)
        if "test_face" in run["metrics"]:
            everything = run["metrics"]["test"]
            lines += ["", f"All test sites ({everything['n_images']} images): mean recall "
                      f"{_fmt(everything['macro_recall'])}{_ci(everything['macro_recall_ci'])}, mean precision "
                      f"{_fmt(everything['macro_precision'])}."]
        lines.append("")
    first = runs[0]["config"]
    counts = first["data"]["counts"]
    lines += ["## Why the face figures are fragile", "",
              "Face images per class in the final stage's splits (from the run's model card):", "",
              "| class | train | val | test |", "|---|---|---|---|"]
    for label in first["labels"]:
        lines.append(f"| {label} | " + " | ".join(str(counts[s][label]["face"]) for s in ("train", "val", "test")) + " |")
    lines += ["", "A class with 1-4 face test images moves the mean recall by 1/6 per image: the CIs above are the",
              "honest reading. Compare protocols by their CIs, not by their point estimates.", "",
              "## Environment", "",
              f"- report written on {platform.node() or 'unknown host'}, {os.cpu_count()} CPUs visible; "
              "the runs' versions are in their config.json.",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train a set of configurations")
    run_p.add_argument("--set", default="cpu", choices=list(SETS))
    run_p.add_argument("--runs", default="runs/pad")
    run_p.add_argument("--data", default=DEFAULT_DATA)
    run_p.add_argument("--device", default="auto")
    run_p.add_argument("--workers", type=int, default=0)
    run_p.add_argument("--epochs", type=int, default=None, help="override every configuration's epochs")
    rep_p = sub.add_parser("report", help="write RESULTS.md from run dirs")
    rep_p.add_argument("--runs", nargs="+", default=["runs/pad"])
    rep_p.add_argument("--out", default="docs/RESULTS.md")
    cmd_p = sub.add_parser("commands", help="print the facederm-train commands of a set")
    cmd_p.add_argument("--set", default="cpu", choices=list(SETS))
    cmd_p.add_argument("--runs", default="runs/pad")
    cmd_p.add_argument("--data", default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    if args.command == "run":
        overrides = {"epochs": args.epochs} if args.epochs else {}
        run(args.set, args.runs, args.data, args.device, args.workers, **overrides)
    elif args.command == "commands":
        for spec in SETS[args.set]:
            print(spec.command(args.data, args.runs))
    else:
        text = render([Path(r) for r in args.runs])
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
