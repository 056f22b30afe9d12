"""Quantization-aware fine-tuning (``facederm-train --quant-aware-epochs N``): the run's model becomes one that int8
reproduces.

Post-training int8 of a model fine-tuned on a few hundred phone photos changes many of its decisions (README: *int8
recipes per target*): its early layers amplify small perturbations, so the rounding of its weights and activations
moves near-tie inputs across the decision boundary. After the last stage has chosen its best weights, these epochs go
on training on every image the run trained on, with the forward pass computing what the int8 graphs compute:

- **weights on an int8 grid**: each output channel of every Conv / Linear rounded to ``[-64, 64]`` steps of
  ``max|w| / 64`` (symmetric, per channel: the 7-bit grid onnxruntime's ``reduce_range`` uses, which no x86 CPU
  saturates on). Rounding uses the straight-through estimator; at the end the weights are **snapped** onto the grid,
  so the run's model, its metrics and every fp32 artifact hold grid weights. BatchNorm statistics are frozen, so
  folding a BatchNorm into its convolution scales a channel and its grid together: the int8 weights of each exported
  graph are then the model's weights, exactly;
- **activations rounded** to 8 bits per tensor (asymmetric, ranges from the training images) at the input of every
  Conv / Linear but the first :data:`FLOAT_LAYERS`, which the int8 graphs keep in float (their input is the image:
  requantizing the normalized pixels off the pixel grid flips decisions on its own).

What is left between the int8 artifact and this model is activation rounding, which the model has now trained under.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .engine import AugmentedSet, EpochResult, make_loader, make_optimizer

#: Weight grid: symmetric per output channel, levels -64..64 (onnxruntime's reduce_range int8 range).
WEIGHT_LEVELS = 64
#: Activation levels: uint8, per tensor, asymmetric (onnxruntime's and OpenVINO's int8 activations).
ACTIVATION_LEVELS = 255
#: The first Conv layers in execution order that int8 graphs keep in float (the stem and the first depthwise
#: convolution of EfficientNet-Lite: full resolution, ~4 % of its multiply-adds at 300 px).
FLOAT_LAYERS = 2


def quantizable_layers(model: nn.Module, example: Sequence[torch.Tensor]) -> list[tuple[str, nn.Module]]:
    """Every Conv2d / Linear of ``model`` in the order a forward pass of ``example`` runs them (the order the
    exported graph lists them: the first :data:`FLOAT_LAYERS` are the ones int8 keeps in float)."""
    names = {module: name for name, module in model.named_modules()}
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_pre_hook(lambda m, _: order.append(m) if m not in order else None)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(*example)
            model.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    return [(names[m], m) for m in order]


def grid_step(weight: torch.Tensor, levels: int = WEIGHT_LEVELS) -> torch.Tensor:
    """The step of ``weight``'s grid, per output channel: ``max|w| / levels``, shaped to broadcast against it."""
    flat = weight.detach().abs().flatten(1).amax(1).clamp_min(torch.finfo(weight.dtype).tiny)
    return (flat / levels).view(-1, *[1] * (weight.dim() - 1))


def grid_weights(weight: torch.Tensor, levels: int = WEIGHT_LEVELS) -> torch.Tensor:
    """``weight`` rounded to its per-output-channel symmetric grid: ``round(w / s) * s``, ``s = max|w| / levels``."""
    scale = grid_step(weight, levels)
    return torch.round(weight / scale).clamp(-levels, levels) * scale


class _WeightGrid(nn.Module):
    """Parametrization: the grid weights forward, the straight-through gradient backward."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (grid_weights(weight) - weight).detach()


def _round_activation(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-8) / ACTIVATION_LEVELS
    zero = round(-low / scale)
    rounded = (torch.clamp(torch.round(x / scale) + zero, 0, ACTIVATION_LEVELS) - zero) * scale
    return x + (rounded - x).detach()


def activation_ranges(
    model: nn.Module, layers: Sequence[nn.Module], batches: Callable[[], Iterator[tuple[torch.Tensor, ...]]]
) -> dict[nn.Module, tuple[float, float]]:
    """Min and max of each layer's input over ``batches()`` (the model's own inputs, already normalized)."""
    ranges: dict[nn.Module, tuple[float, float]] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach()
        low, high = float(x.min()), float(x.max())
        old = ranges.get(module, (low, high))
        ranges[module] = (min(old[0], low), max(old[1], high))

    hooks = [layer.register_forward_pre_hook(record) for layer in layers]
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches():
                model(*batch)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


@dataclass
class QuantAware:
    """The fake-quantized state of a model during quantization-aware epochs; :meth:`finish` snaps and removes it."""

    layers: list[tuple[str, nn.Module]]
    hooks: list[torch.utils.hooks.RemovableHandle]

    @classmethod
    def attach(cls, layers: list[tuple[str, nn.Module]], ranges: dict[nn.Module, tuple[float, float]]) -> QuantAware:
        """Put every layer's weights on the grid (straight-through) and round the inputs of all but the first
        :data:`FLOAT_LAYERS` to 8 bits with ``ranges``."""
        hooks = []
        for index, (_, layer) in enumerate(layers):
            parametrize.register_parametrization(layer, "weight", _WeightGrid())
            if index >= FLOAT_LAYERS:
                low, high = ranges[layer]
                hooks.append(
                    layer.register_forward_pre_hook(
                        lambda _m, inputs, low=low, high=high: (_round_activation(inputs[0], low, high), *inputs[1:])
                    )
                )
        return cls(layers, hooks)

    def finish(self) -> None:
        """Snap every weight onto its grid (the model keeps them) and stop rounding activations."""
        for hook in self.hooks:
            hook.remove()
        for _, layer in self.layers:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            with torch.no_grad():  # the parametrized value is weight + 0 * (...): round once more, exactly
                layer.weight.copy_(grid_weights(layer.weight))


class FrozenNorm(nn.Module):
    """``model`` whose BatchNorm layers stay in eval mode when it trains: their statistics are the ones the exported
    graph folds into the convolutions, so the grid of a folded channel is the grid of the trained one."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> FrozenNorm:
        super().train(mode)
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model(*args)


def on_grid(weight: torch.Tensor, levels: int = WEIGHT_LEVELS) -> bool:
    """Whether ``weight`` already lies on its grid (what :meth:`QuantAware.finish` leaves)."""
    return bool(torch.equal(grid_weights(weight, levels), weight))


def card_record(epochs: int, lr: float, layers: Sequence[tuple[str, nn.Module]]) -> dict[str, object]:
    """What the card's ``data.training.quant_aware`` says (the export reads it to quantize on the same grid)."""
    return {
        "epochs": epochs,
        "lr": lr,
        "weights": f"int8 symmetric per output channel, levels -{WEIGHT_LEVELS}..{WEIGHT_LEVELS} (scale max|w| / "
        f"{WEIGHT_LEVELS}), snapped: the model's weights are on this grid",
        "weight_levels": WEIGHT_LEVELS,
        "activations": "uint8 per tensor, asymmetric, ranges from the training images, straight-through rounding",
        "target": "the model's own fp32 predictions before these epochs (KL divergence; no labels)",
        "float_layers": [name for name, _ in layers[:FLOAT_LAYERS]],
        "batchnorm": "statistics frozen",
    }


#: Calibration-sized sample of the training images whose layer inputs give the activation ranges.
RANGE_IMAGES = 300


def quant_aware_finetune(
    model: nn.Module,
    normalize: nn.Module,
    train_set: AugmentedSet,
    *,
    range_images: np.ndarray,
    range_answers: np.ndarray | None,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[int, EpochResult], None] | None = None,
) -> dict[str, object]:
    """Train ``model`` (logits out, normalized input) for ``epochs`` on ``train_set``'s augmented images as int8
    computes it, then snap its weights onto the grid (module docstring). The target is the model itself before these
    epochs (KL divergence to its own fp32 predictions, no labels): the run keeps what it decided, with weights and
    activations int8 reproduces; a protocol's stages keep their meaning. ``range_images`` (uint8 NHWC, training
    images as preprocessed for evaluation) give the activation ranges. Returns the card's record."""
    from .distributed import World

    world = World()
    norm = normalize.to(device)

    def as_input(images: np.ndarray) -> torch.Tensor:
        return norm(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(device).float())

    def batches() -> Iterator[tuple[torch.Tensor, ...]]:  # normalized one batch at a time, never all at once
        for start in range(0, len(range_images), batch_size):
            batch: tuple[torch.Tensor, ...] = (as_input(range_images[start : start + batch_size]),)
            if range_answers is not None:
                batch = (*batch, torch.from_numpy(range_answers[start : start + batch_size]).to(device))
            yield batch

    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    layers = quantizable_layers(model, next(batches()))
    ranges = activation_ranges(model, [layer for _, layer in layers], batches)
    state = QuantAware.attach(layers, ranges)
    student = FrozenNorm(model)
    try:
        loader, sampler = make_loader(train_set, world, seed, batch_size, workers=0, pin_memory=False)
        optimizer = make_optimizer(model, lr, weight_decay=0.0)  # a constant, low rate
        for epoch in range(epochs):
            sampler.set_epoch(10_000 + epoch)  # its own epoch keys: not a replay of the stages' augmentation
            student.train()
            start, total, seen = time.perf_counter(), 0.0, 0
            for images, *answers, _labels in loader:
                if len(images) < 2:
                    continue
                x = norm(images.to(device).float())
                extra = [a.to(device) for a in answers]
                with torch.no_grad():
                    target = torch.log_softmax(teacher(x, *extra).float(), dim=1)
                predicted = torch.log_softmax(student(x, *extra).float(), dim=1)
                loss = nn.functional.kl_div(predicted, target, log_target=True, reduction="batchmean")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, seen = total + loss.item() * len(images), seen + len(images)
            if on_epoch is not None:
                on_epoch(epoch, EpochResult(total / max(seen, 1), seen, time.perf_counter() - start))
    finally:
        state.finish()
        model.eval()
    return card_record(epochs, lr, layers)
