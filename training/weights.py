"""Loading weights safely: bundled ImageNet weights and user checkpoints. No pickle execution."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from facederm.runtime.errors import ConfigError, FacedermError


class UnsafeCheckpointError(FacedermError):
    """A checkpoint needs arbitrary code execution (pickle globals) to load; facederm refuses it."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from .safetensors, or from .pt/.pth with ``weights_only=True`` (no code execution)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ConfigError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch reports a refused global (code that unpickling would run) as "Weights only load failed";
        # anything else is an empty, truncated or foreign file.
        if "weights only load failed" in str(exc).lower():
            raise UnsafeCheckpointError(
                f"{path}: refused to load: the checkpoint needs code execution to unpickle; "
                "facederm loads .pt/.pth only with weights_only=True (convert it to .safetensors)"
            ) from exc
        raise ConfigError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{path}: expected a state dict of tensors")
    return obj


def load_lukemelas_efficientnet(backbone: nn.Module, path: str | Path) -> None:
    """Map a lukemelas-style EfficientNet-Lite state dict onto timm's ``tf_efficientnet_lite*`` backbone.

    The two implementations register the same tensors in the same order with the same shapes,
    so the mapping is positional; shapes are checked one by one. The ImageNet classifier is dropped.
    """
    source = [(k, v) for k, v in read_state_dict(path).items() if not k.startswith("_fc.")]
    target = backbone.state_dict()
    target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    source = [(k, v) for k, v in source if not k.endswith("num_batches_tracked")]
    if len(source) != len(target_keys):
        raise ConfigError(f"{path}: {len(source)} tensors, timm backbone expects {len(target_keys)}")
    mapped = {}
    for (src_key, tensor), dst_key in zip(source, target_keys):
        if tuple(tensor.shape) != tuple(target[dst_key].shape):
            raise ConfigError(
                f"{path}: {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(target[dst_key].shape)}"
            )
        mapped[dst_key] = tensor
    backbone.load_state_dict(mapped, strict=False)


def imagenet_classifier_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The ImageNet classifier (``_fc``) of a lukemelas checkpoint, keyed as timm's ``classifier``."""
    state = read_state_dict(path)
    return {"weight": state["_fc.weight"], "bias": state["_fc.bias"]}


def load_checkpoint_into(model: nn.Module, path: str | Path) -> None:
    """Load a whole-classifier checkpoint, or a backbone-only one (keys without the 'backbone.' prefix)."""
    state = read_state_dict(path)
    own = model.state_dict()
    if not any(k in own for k in state) and hasattr(model, "backbone"):
        state = {f"backbone.{k}": v for k, v in state.items()}
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    if unexpected or mismatched:
        raise ConfigError(
            f"{path}: does not fit this model ({len(unexpected)} unknown keys, {len(mismatched)} shape mismatches, "
            f"e.g. {(unexpected + mismatched)[:3]})"
        )
    model.load_state_dict(state, strict=False)
