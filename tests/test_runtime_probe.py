"""make_probe: the seeded self-test input export and runtime must regenerate identically."""

from __future__ import annotations

import numpy as np

from facederm.runtime.probe import make_probe, tolerance_for


def test_probe_is_deterministic_nchw_float32_in_pixel_range() -> None:
    a = make_probe(seed=5, batch=3, size=48)
    assert a.shape == (3, 3, 48, 48) and a.dtype == np.float32 and a.flags.c_contiguous
    assert np.array_equal(a, make_probe(seed=5, batch=3, size=48))
    assert not np.array_equal(a, make_probe(seed=6, batch=3, size=48))
    assert a.min() >= 0 and a.max() <= 255 and np.array_equal(a, np.rint(a))


def test_probe_is_image_like_not_white_noise() -> None:
    a = make_probe(seed=0, batch=2, size=64).astype(np.float64)
    neighbour = np.abs(np.diff(a, axis=-1)).mean()
    shuffled = np.random.default_rng(0).permutation(a.reshape(-1)).reshape(a.shape)
    assert neighbour < 0.25 * np.abs(np.diff(shuffled, axis=-1)).mean()
    assert a.std() > 20  # but not flat either


def test_tolerance_uses_the_manifest_then_defaults_and_the_looser_compute_precision() -> None:
    assert tolerance_for("fp32", {"fp32": 1e-3}) == 1e-3
    assert tolerance_for("fp32", {}) < tolerance_for("int8", {})
    assert tolerance_for("fp32", {"fp32": 1e-4, "bf16": 0.05}, compute_precision="bf16") == 0.05
