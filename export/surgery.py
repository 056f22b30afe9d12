"""Graph surgery before tracing: make a model's shapes static for its fixed input size.

timm's ``Conv2dSame`` (TF "same" padding, used by the EfficientNet-Lite ports) computes its padding at
run time from the input shape; coremltools cannot convert that and every other exporter emits extra
shape arithmetic. For a fixed input size the padding is a constant, so each ``Conv2dSame`` becomes
``ZeroPad2d`` + ``Conv2d`` with identical outputs (PITFALLS: max difference 0.0).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _is_conv2d_same(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv2dSame" and isinstance(module, nn.Conv2d)


def static_same_padding(model: nn.Module, input_size: int) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every ``Conv2dSame`` replaced for ``input_size``; returns (copy, count)."""
    model = copy.deepcopy(model).eval()
    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if _is_conv2d_same(module):
            hooks.append(
                module.register_forward_pre_hook(
                    lambda _m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:]))
                )
            )
    if not hooks:
        return model, 0
    with torch.inference_mode():
        model(torch.zeros(1, 3, input_size, input_size))
    for hook in hooks:
        hook.remove()
    for name, (height, width) in sizes.items():
        old = model.get_submodule(name)
        assert isinstance(old, nn.Conv2d)
        top, bottom = _same_pad(height, old.kernel_size[0], old.stride[0], old.dilation[0])
        left, right = _same_pad(width, old.kernel_size[1], old.stride[1], old.dilation[1])
        conv = nn.Conv2d(
            old.in_channels,
            old.out_channels,
            old.kernel_size,
            old.stride,
            0,
            old.dilation,
            old.groups,
            old.bias is not None,
        )
        conv.load_state_dict(old.state_dict())
        replacement: nn.Module = conv
        if top or bottom or left or right:
            replacement = nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
    return model.eval(), len(sizes)
