"""Training augmentation: crops, flips and pixel noise are seeded, stay uint8, and noise can be switched off."""

from __future__ import annotations

import numpy as np
import pytest

from facederm.runtime.errors import ConfigError
from facederm.training.config import TrainConfig
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
