"""Training augmentation: crops, flips and pixel noise are seeded, stay uint8, and noise can be switched off;
stability training's noisy twin and its KL term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facederm.runtime.errors import ConfigError
from facederm.training.config import TrainConfig
from facederm.training.engine import Stability
from facederm.training.transforms import TrainAugment


def _image() -> np.ndarray:
    yy, xx = np.mgrid[0:80, 0:100]
    return np.stack([yy * 3 % 256, xx * 2 % 256, (yy + xx) % 256], axis=-1).astype(np.uint8)


def test_pixel_noise_is_seeded_bounded_and_changes_pixels():
    image = _image()
    noisy = TrainAugment(32, pixel_noise=12.0)
    a = noisy(image, np.random.default_rng(7))
    b = noisy(image, np.random.default_rng(7))
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert np.array_equal(a, b), "same seed, same augmented image (resume and worker count do not matter)"
    clean = TrainAugment(32, pixel_noise=0.0)(image, np.random.default_rng(7))
    diff = np.abs(a.astype(int) - clean.astype(int))
    assert 0 < diff.mean() < 12, "noise of at most sigma 12 gray levels on the same crop and flips"


def test_no_noise_leaves_the_crop_untouched():
    image = np.full((40, 40, 3), 128, np.uint8)
    out = TrainAugment(16, pixel_noise=0.0)(image, np.random.default_rng(0))
    assert np.array_equal(out, np.full((16, 16, 3), 128, np.uint8))


def test_pixel_noise_and_label_smoothing_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="pixel-noise"):
        TrainConfig(data="synthetic:8", out=tmp_path, pixel_noise=-1)
    with pytest.raises(ConfigError, match="label-smoothing"):
        TrainConfig(data="synthetic:8", out=tmp_path, label_smoothing=1.0)
    assert TrainConfig(data="synthetic:8", out=tmp_path).pixel_noise == 12.0


def test_stability_noise_stays_on_the_pixel_grid_and_its_term_pulls_only_the_noisy_view():
    torch.manual_seed(0)
    images = torch.from_numpy(_image().transpose(2, 0, 1).copy()).unsqueeze(0).repeat(8, 1, 1, 1)
    stability = Stability(weight=2.0, noise=8.0)
    noisy = stability.perturb(images)
    assert noisy.min() >= 0 and noisy.max() <= 255 and torch.equal(noisy, noisy.round())
    assert 0 < (noisy - images.float()).abs().mean() < 8

    logits = torch.randn(8, 6, requires_grad=True)
    same = stability.loss(logits, logits.detach().clone())
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    noisy_logits = torch.randn(8, 6, requires_grad=True)
    term = stability.loss(logits, noisy_logits)
    assert term.item() > 0
    term.backward()
    assert logits.grad is None and noisy_logits.grad.abs().sum() > 0  # p(x) is the fixed target


def test_rotation_is_seeded_and_fills_corners_with_the_image_colour_not_black():
    skin = np.full((60, 60, 3), (200, 150, 120), np.uint8)
    augment = TrainAugment(60, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0, vflip=0, rotation=45)
    turned = augment(skin, np.random.default_rng(3))
    assert np.array_equal(turned, augment(skin, np.random.default_rng(3)))
    assert np.abs(turned.astype(int) - (200, 150, 120)).max() <= 1, "no black corners to learn from"
    image = _image()
    assert not np.array_equal(
        TrainAugment(32, rotation=30)(image, np.random.default_rng(0)),
        TrainAugment(32)(image, np.random.default_rng(0)),
    )


def test_color_jitter_is_seeded_bounded_and_leaves_hue_alone():
    image = _image()
    augment = TrainAugment(32, color_jitter=0.3)
    out = augment(image, np.random.default_rng(5))
    assert out.dtype == np.uint8 and np.array_equal(out, augment(image, np.random.default_rng(5)))
    plain = TrainAugment(32)(image, np.random.default_rng(5))
    assert not np.array_equal(out, plain)
    gray = np.full((40, 40, 3), 90, np.uint8)
    jittered = TrainAugment(40, color_jitter=0.5).jitter(gray, np.random.default_rng(1))
    assert np.array_equal(jittered[..., 0], jittered[..., 1]) and np.array_equal(jittered[..., 1], jittered[..., 2])


def test_rotation_and_color_jitter_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="--rotation"):
        TrainConfig(data="synthetic:8", out=tmp_path, rotation=200)
    with pytest.raises(ConfigError, match="--color-jitter"):
        TrainConfig(data="synthetic:8", out=tmp_path, color_jitter=1.0)
