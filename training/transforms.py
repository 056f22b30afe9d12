"""Training augmentation and the model-side normalization.

Augmentations run on the cached, decoded uint8 image: an optional random rotation, a random resized crop, then
random horizontal and vertical flips (skin lesions have no canonical orientation), optional colour jitter and
pixel noise. Evaluation never comes through here: it uses
:func:`facederm.runtime.preprocess.resize_and_crop`, the runtime's one preprocessing.
Randomness comes from a seed per (epoch, sample), so results do not depend on worker count or resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from facederm.runtime.card import Preprocessing


@dataclass(frozen=True)
class TrainAugment:
    """Random rotation + random resized crop to ``size`` (area ``scale`` of the image, aspect ``ratio``) + h/v flips
    + colour jitter + pixel noise.

    ``rotation``: degrees, the image turns by U(-rotation, rotation) before the crop (bilinear; the corners it
    uncovers are filled with the image's mean colour, not black, so no border cue is learned; 0: off).
    ``color_jitter``: brightness, contrast and saturation each scaled by U(1 - j, 1 + j) (torchvision's
    ColorJitter factors; hue is left alone: a lesion's colour is diagnostic; 0: off).

    ``pixel_noise``: Gaussian noise of a standard deviation drawn from U(0, pixel_noise) gray levels per image
    (0: none). Phone photos of skin are smooth: trained without it, a Lite0 on PAD-UFES-20 changed its top label
    on 8.5 % of 390 held-out inputs under noise of one gray level (sigma 1), and its int8 graph disagreed with it
    on 8.7 %, flips at fp32 margins up to 0.97; trained with 12 it changed 3.8 % under that noise and its int8
    graph 2.1 %, all near-ties (README: "Why training adds pixel noise"). The noise teaches it to ignore what a
    sensor, JPEG or 8-bit arithmetic add.
    """

    size: int
    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    vflip: float = 0.5
    pixel_noise: float = 0.0
    rotation: float = 0.0
    color_jitter: float = 0.0

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, h, w) of a random crop; the largest centered square-ish crop when sampling fails."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side

    def rotate(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``rgb`` turned by U(-rotation, rotation) degrees about its centre, same size, mean-colour corners."""
        angle = rng.uniform(-self.rotation, self.rotation)
        fill = tuple(int(c) for c in rgb.reshape(-1, 3).mean(0).round())
        turned = Image.fromarray(rgb).rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill)
        return np.asarray(turned)

    def jitter(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast, then saturation, each by a factor U(1 - color_jitter, 1 + color_jitter)."""
        low, high = max(0.0, 1 - self.color_jitter), 1 + self.color_jitter
        out = rgb.astype(np.float32) * rng.uniform(low, high)  # brightness
        gray = out @ np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma, as PIL and torchvision
        out = gray.mean() + (out - gray.mean()) * rng.uniform(low, high)  # contrast
        gray = out @ np.array([0.299, 0.587, 0.114], np.float32)
        out = gray[..., None] + (out - gray[..., None]) * rng.uniform(low, high)  # saturation
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def __call__(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.rotation > 0:
            rgb = self.rotate(rgb, rng)
        top, left, h, w = self.crop_box(rgb.shape[0], rgb.shape[1], rng)
        crop = Image.fromarray(rgb[top : top + h, left : left + w])
        out = np.asarray(crop.resize((self.size, self.size), Image.Resampling.BILINEAR))
        if rng.random() < self.hflip:
            out = out[:, ::-1]
        if rng.random() < self.vflip:
            out = out[::-1]
        if self.color_jitter > 0:
            out = self.jitter(out, rng)
        if self.pixel_noise > 0:
            sigma = rng.uniform(0.0, self.pixel_noise)
            noisy = out.astype(np.float32) + rng.normal(0.0, sigma, out.shape).astype(np.float32)
            out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out)


def to_chw_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> uint8 CHW tensor (kept uint8 until the device: 4x less to copy)."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


class Normalize(nn.Module):
    """uint8/float 0-255 NCHW -> normalized float: the one normalization (training, evaluation, and baked into
    every exported graph by :class:`facederm.training.models.ProbabilityModel`)."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(preprocessing.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("inv_std", 1.0 / std, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(self.mean.dtype) - self.mean) * self.inv_std
