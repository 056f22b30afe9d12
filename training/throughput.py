"""Training throughput: facederm's training step (data pipeline, augmentation, normalization, weighted loss,
AdamW + schedule) against a bare timm-style loop on pre-made tensors, same model, batch and input size: the ratio
is facederm's whole overhead. Runs alternate and medians are reported (timings on a shared machine drift).

    python -m facederm.training.throughput --arch efficientnet_lite0 --img-size 224 --batch-size 16
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import click
import torch

from facederm.runtime.cli_support import common_option, debug_option, one_line_errors


def _bare_loop(
    model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device, channels_last: bool
) -> float:
    """images/s of the textbook loop: forward, cross-entropy, backward, AdamW step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    _sync(device)
    start = time.perf_counter()
    for images, targets in batches:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss = criterion(model(images), targets.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    loss.item()
    _sync(device)
    return sum(len(t) for _, t in batches) / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(
    arch: str = "efficientnet_lite0",
    *,
    img_size: int = 224,
    batch_size: int = 16,
    steps: int = 4,
    repeats: int = 3,
    workers: int = 0,
    device: str = "auto",
    channels_last: bool = True,
) -> dict[str, Any]:
    """Median images/s of facederm's training epoch and of a bare loop over ``steps`` batches each;
    ``ratio`` = facederm / bare (1.0 = no overhead)."""
    from facederm.training.data import ImageCache, class_weights, open_dataset
    from facederm.training.distributed import World
    from facederm.training.engine import AugmentedSet, make_loader, make_optimizer, train_one_epoch, warmup_cosine
    from facederm.training.evaluate import resolve_device
    from facederm.training.models import create_model, default_preprocessing
    from facederm.training.transforms import Normalize, TrainAugment

    torch.manual_seed(0)
    dev = resolve_device(device)
    n = steps * batch_size
    dataset = open_dataset(f"synthetic:{n},size={max(img_size, 64)}")
    labels = dataset.labels
    model = create_model(arch, len(labels)).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    cache = ImageCache(dataset, img_size)
    cache.warm(progress=False)  # steady state: epochs after the first read from the cache
    train_set = AugmentedSet(dataset.samples, labels, cache, TrainAugment(img_size))
    loader, sampler = make_loader(train_set, World(), 0, batch_size, workers, pin_memory=dev.type == "cuda")
    weights = class_weights(dataset.samples, labels)
    criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor([weights[c] for c in labels], device=dev))
    optimizer = make_optimizer(model, 1e-3, 0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(1000, 10, 0.01))
    normalize = Normalize(default_preprocessing(arch, img_size)).to(dev)
    batches = [
        (torch.randn(batch_size, 3, img_size, img_size), torch.randint(0, len(labels), (batch_size,)))
        for _ in range(steps)
    ]

    def facederm_epoch(epoch: int) -> float:
        sampler.set_epoch(epoch)
        _sync(dev)
        result = train_one_epoch(model, normalize, loader, criterion, optimizer, scheduler, dev, World())
        _sync(dev)
        return result.images / result.seconds

    facederm_epoch(0)  # warm-up: allocator, kernels selection, worker start
    _bare_loop(model, batches[:1], dev, channels_last)
    ours, bare = [], []
    for repeat in range(repeats):
        ours.append(facederm_epoch(repeat + 1))
        bare.append(_bare_loop(model, batches, dev, channels_last))
    result = {
        "arch": arch,
        "img_size": img_size,
        "batch_size": batch_size,
        "steps": steps,
        "repeats": repeats,
        "workers": workers,
        "device": str(dev),
        "channels_last": channels_last,
        "torch_threads": torch.get_num_threads(),
        "facederm_images_per_s": statistics.median(ours),
        "bare_images_per_s": statistics.median(bare),
        "facederm_runs": ours,
        "bare_runs": bare,
    }
    result["ratio"] = result["facederm_images_per_s"] / result["bare_images_per_s"]
    return result


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--arch", default="efficientnet_lite0", show_default=True, help="timm architecture.")
@click.option("--img-size", type=click.IntRange(min=32), default=224, show_default=True, help="Input size.")
@common_option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=4, show_default=True, help="Batches per timed run.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Alternating runs each.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Data loader workers.")
@common_option("--device", default="auto", show_default=True)
@click.option("--no-channels-last", is_flag=True, help="Keep the default memory format.")
@common_option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    old=("--json",),  # --json FILE before
    help="(also write the JSON result here)",
)
@debug_option()
def main(no_channels_last: bool, out: Path | None, debug: bool, **settings: Any) -> None:
    """facederm's training step against a bare timm-style loop; prints the result as JSON."""
    with one_line_errors("train_throughput", debug):
        result = run(**settings, channels_last=not no_channels_last)
    text = json.dumps(result, indent=2)
    click.echo(text)
    if out:
        out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
