"""The training loop's parts: the augmented training set, the epoch-seeded sampler, optimizer and
schedule, one epoch of training, and validation predictions."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from facederm.runtime.clinical import ClinicalSchema

from .clinical import drop_fields
from .data import ImageCache, Sample
from .distributed import World, average_buffers, gather_rows, mean_across, shard
from .evaluate import predict_array
from .transforms import Normalize, TrainAugment, to_chw_tensor


class AugmentedSet(Dataset):
    """Training samples as (uint8 CHW image, class index), or (image, clinical vector, class index) when
    ``clinical`` (the samples' encoded answers [N, F]) is given: then each item's fields are dropped out with
    ``clinical_dropout`` (see :func:`facederm.training.clinical.drop_fields`). Items are asked for as (index, seed)
    pairs (see :class:`SeededSampler`), so augmentation and dropout are reproducible with any worker count."""

    def __init__(
        self,
        samples: Sequence[Sample],
        labels: Sequence[str],
        cache: ImageCache,
        augment: TrainAugment,
        clinical: tuple[ClinicalSchema, np.ndarray] | None = None,
        clinical_dropout: float = 0.0,
    ):
        self.samples = list(samples)
        self.targets = [list(labels).index(s.label) for s in self.samples]
        self.cache = cache
        self.augment = augment
        self.clinical = clinical
        self.clinical_dropout = clinical_dropout

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, ...] | tuple[torch.Tensor, int]:
        index, seed = item
        rng = np.random.default_rng(seed)
        image = self.augment(self.cache.get(self.samples[index]), rng)
        if self.clinical is None:
            return to_chw_tensor(image), self.targets[index]
        schema, encoded = self.clinical
        # Drawn after the augmentation's draws: a clinical run augments its images exactly as an image-only one.
        answers = drop_fields(schema, encoded[index], rng, self.clinical_dropout)
        return to_chw_tensor(image), torch.from_numpy(np.ascontiguousarray(answers)), self.targets[index]


class SeededSampler(Sampler):
    """A :class:`DistributedSampler` (one rank when not distributed) whose items carry a per-sample
    augmentation seed derived from (run seed, epoch key, index)."""

    def __init__(self, n: int, world: World, seed: int) -> None:
        self.inner = DistributedSampler(
            range(n), num_replicas=world.world_size, rank=world.rank, shuffle=True, seed=seed
        )
        self.seed = seed
        self.epoch_key = 0

    def set_epoch(self, epoch_key: int) -> None:
        self.epoch_key = epoch_key
        self.inner.set_epoch(epoch_key)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        base = (self.seed * 1_000_003 + self.epoch_key) * 1_000_003
        for index in self.inner:
            yield index, (base + index) % (2**63)


def make_loader(
    train_set: AugmentedSet, world: World, seed: int, batch_size: int, workers: int, pin_memory: bool
) -> tuple[DataLoader, SeededSampler]:
    sampler = SeededSampler(len(train_set), world, seed)
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        drop_last=False,  # a ragged last batch of one is skipped in train_one_epoch (BatchNorm needs two)
    )
    return loader, sampler


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and normalization parameters (1-d tensors), as timm does."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


@dataclass
class EpochResult:
    loss: float
    images: int
    seconds: float


@dataclass(frozen=True)
class Stability:
    """Stability training (Zheng et al., CVPR 2016): the loss adds ``weight`` x KL(p(x) || p(x')) with x' = x plus
    Gaussian noise of sigma ~ U(0, ``noise``) gray levels per image, p(x) held fixed as the target. A model whose
    top label survives small input noise also survives the rounding of int8 arithmetic better: on PAD, the fp32
    model's own label changes under one gray level of noise were the floor of every int8 recipe's agreement."""

    weight: float
    noise: float

    def perturb(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (uint8 or float 0-255, NCHW) plus per-image Gaussian noise, rounded and clipped to 0-255."""
        sigma = torch.rand(len(images), 1, 1, 1, device=images.device) * self.noise
        noisy = images.float() + torch.randn(images.shape, device=images.device) * sigma
        return noisy.round().clamp(0, 255)

    def loss(self, logits: torch.Tensor, noisy_logits: torch.Tensor) -> torch.Tensor:
        """The weighted KL term, batch mean."""
        target = torch.log_softmax(logits.detach().float(), dim=1)
        kl = torch.nn.functional.kl_div(
            torch.log_softmax(noisy_logits.float(), dim=1), target, log_target=True, reduction="batchmean"
        )
        return self.weight * kl


def train_one_epoch(
    model: nn.Module,
    normalize: Normalize,
    loader: DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    world: World,
    *,
    amp: bool = False,
    stability: Stability | None = None,
    on_step: Callable[[float], None] | None = None,
) -> EpochResult:
    """One pass over ``loader``; returns the mean loss over ranks and the images seen on this rank. With
    ``stability``, each batch also goes through the model with noise added (one forward pass of both halves)."""
    model.train()
    start = time.perf_counter()
    total_loss, total_images = 0.0, 0
    for images, *clinical, targets in loader:  # (images, targets) or, with clinical fields, (images, answers, targets)
        if len(targets) < 2:
            continue
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        extra = [c.to(device, non_blocking=True) for c in clinical]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if stability is None:
                loss = criterion(model(normalize(images), *extra), targets)
            else:
                both = torch.cat([images.float(), stability.perturb(images)])
                logits, noisy_logits = model(normalize(both), *[torch.cat([c, c]) for c in extra]).chunk(2)
                loss = criterion(logits, targets) + stability.loss(logits, noisy_logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(targets)
        total_images += len(targets)
        if on_step is not None:
            on_step(loss.item())
    average_buffers(world, model.module if hasattr(model, "module") else model)
    loss = mean_across(world, total_loss / max(total_images, 1))
    return EpochResult(loss, total_images, time.perf_counter() - start)


def predict_sharded(
    model: nn.Module,
    images: np.ndarray,
    preprocessing,
    world: World,
    *,
    batch_size: int,
    device: torch.device,
    clinical: np.ndarray | None = None,
) -> np.ndarray:
    """Probabilities for preprocessed images (and their encoded clinical answers, for a clinical model), each rank
    predicting a shard, gathered on every rank."""
    index = shard(world, len(images))
    answers = None if clinical is None else clinical[index]
    local = predict_array(model, images[index], preprocessing, batch_size=batch_size, device=device, clinical=answers)
    return gather_rows(world, index, local, len(images))
