"""The reference a recipe must beat: a bare timm fine-tune on the folds of a CV dir, paired on the same images.

``python -m facederm.training.bare_loop CV_DIR --out DIR`` reads the fold plan of ``CV_DIR`` (``cv.json``, written
by ``facederm-train --cv K``) and, for each fold, fine-tunes a plain model the way a short notebook would: timm's
backbone with its bundled ImageNet weights and one linear layer, random resized crops, flips and colour jitter
(torchvision), class-weighted cross-entropy, AdamW with cosine decay, a fixed number of epochs on every image outside
the fold's test patients, the last epoch's weights (no validation split, early stopping, calibration or clinical
input). Each fold predicts its test images through facederm's preprocessing, and ``DIR/oof.csv`` has the CV dir's
format, so ``python -m facederm.training.cv compare DIR CV_DIR`` is the paired difference of the two recipes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import timm
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from facederm.runtime.card import ModelCard
from facederm.runtime.cli_support import common_option, debug_option, one_line_errors
from facederm.runtime.errors import ConfigError
from facederm.runtime.layout import CARD_FILE, CV_PLAN_FILE, OOF_FILE, fold_dir
from facederm.runtime.schema import read_json, write_json_atomic

from .cv import OOF, write_oof
from .data import open_dataset
from .dataset import DataSet, Sample
from .evaluate import predict_probabilities
from .models import default_preprocessing, get_arch
from .weights import load_lukemelas_efficientnet

BARE_LR = 1e-3  # AdamW's peak learning rate
BARE_JITTER = 0.2  # brightness, contrast and saturation (torchvision ColorJitter)


def bare_model(arch: str, num_classes: int, imagenet_weights: bool = True) -> nn.Module:
    """timm's backbone (global average pool) with the bundled ImageNet weights, and one linear layer."""
    spec = get_arch(arch)
    backbone = timm.create_model(spec.timm_name, num_classes=0)
    if imagenet_weights:
        if spec.local_weights is None:
            raise ConfigError(f"{arch} has no bundled ImageNet weights; pass --no-imagenet-weights")
        load_lukemelas_efficientnet(backbone, spec.local_weights())
    width = getattr(backbone, "head_hidden_size", None) or backbone.num_features  # what its pooled output holds
    return nn.Sequential(backbone, nn.Linear(width, num_classes))


def train_fold(
    dataset: DataSet, train: list[Sample], labels: list[str], arch: str, *, img_size: int, epochs: int, seed: int,
    imagenet_weights: bool = True, batch_size: int = 32, lr: float = BARE_LR,
) -> nn.Module:  # fmt: skip
    """One fold of the bare loop; returns the model after its last epoch (eval mode)."""
    torch.manual_seed(seed)
    spec = get_arch(arch)
    augment = transforms.Compose([
        transforms.RandomResizedCrop(img_size, scale=(0.5, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomVerticalFlip(),
        transforms.ColorJitter(BARE_JITTER, BARE_JITTER, BARE_JITTER),
        transforms.ToTensor(),
        transforms.Normalize(spec.mean, spec.std),
    ])  # fmt: skip
    # Decoded once, kept at 1.25x the input size: the crops come from these.
    keep = round(img_size * 1.25)
    images = [Image.fromarray(dataset.load_rgb(s)) for s in train]
    images = [im.resize((keep, keep)) if min(im.size) > keep else im for im in images]
    y = torch.tensor([labels.index(s.label) for s in train])
    counts = torch.bincount(y, minlength=len(labels)).float()
    weights = torch.where(counts > 0, counts.sum() / (len(labels) * counts.clamp(min=1)), torch.zeros_like(counts))
    model = bare_model(arch, len(labels), imagenet_weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(train) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(train), generator=generator).split(batch_size):
            x = torch.stack([augment(images[i]) for i in batch.tolist()])
            optimizer.zero_grad()
            loss_fn(model(x), y[batch]).backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def predict(model: nn.Module, dataset: DataSet, samples: list[Sample], arch: str, img_size: int) -> np.ndarray:
    """Softmax probabilities through facederm's evaluation path (decode, resize, crop, normalize), as every run's."""
    return predict_probabilities(model, dataset, samples, default_preprocessing(arch, img_size))


def bare_plan(
    plan: dict[str, Any], arch: str, epochs: int, img_size: int, seed: int, imagenet_weights: bool
) -> dict[str, Any]:
    """The bare loop's ``cv.json``: the CV's folds with this loop's recipe as options, so ``results report --cv``
    and ``cv summary`` read its dir as a CV dir."""
    options = {"data": plan["options"]["data"], "arch": arch, "protocol": "all", "epochs": epochs}
    options |= {"img_size": img_size, "lr": BARE_LR, "seed": seed, "pixel_noise": 0.0, "color_jitter": BARE_JITTER}
    options |= {"head_hidden": 0, "val_fraction": 0.0, "imagenet_weights": imagenet_weights}
    return {"k": plan["k"], "folds": plan["folds"], "options": options, "bare_loop": True}


def run(cv_dir: Path, out: Path, *, epochs: int, img_size: int, arch: str, seed: int, imagenet_weights: bool) -> Path:
    """Every fold of ``cv_dir``'s plan through the bare loop; writes and returns ``out/oof.csv``."""
    plan, card = read_json(cv_dir / CV_PLAN_FILE), ModelCard.load(fold_dir(cv_dir, 0) / CARD_FILE)
    label_set = card.data.get("label_set") if isinstance(card.data, dict) else None
    dataset, labels = open_dataset(plan["options"]["data"], label_set=label_set), list(card.labels)  # the CV's order
    parts = []
    for fold, test_ids in enumerate(plan["folds"]):
        test_set = set(test_ids)
        test_patients = {s.patient_id for s in dataset.samples if s.image_id in test_set}
        train = [s for s in dataset.samples if s.patient_id not in test_patients and s.label in labels]
        test = [s for s in dataset.samples if s.image_id in test_set]
        started = time.perf_counter()
        model = train_fold(
            dataset, train, labels, arch, img_size=img_size, epochs=epochs, seed=seed + fold,
            imagenet_weights=imagenet_weights,
        )  # fmt: skip
        parts.append(OOF.from_samples(test, predict(model, dataset, test, arch, img_size), labels, fold))
        click.echo(
            f"fold {fold}: {len(train)} training, {len(test)} test images, {time.perf_counter() - started:.0f} s"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_oof(out / OOF_FILE, OOF.concat(parts))
    write_json_atomic(out / CV_PLAN_FILE, bare_plan(plan, arch, epochs, img_size, seed, imagenet_weights))
    return out / OOF_FILE


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("cv_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@common_option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--epochs", default=10, show_default=True, help="Epochs per fold.")
@click.option("--img-size", default=160, show_default=True, help="Input size (square).")
@click.option("--arch", default="efficientnet_lite0", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--imagenet-weights/--no-imagenet-weights", default=True, show_default=True)
@debug_option()
def main(cv_dir: Path, out: Path, debug: bool, **options) -> None:
    """A bare timm fine-tune on CV_DIR's folds; writes OUT/oof.csv for `python -m facederm.training.cv compare`."""
    with one_line_errors("bare_loop", debug):
        click.echo(f"wrote {run(cv_dir, out, **options)}")


if __name__ == "__main__":
    main()
