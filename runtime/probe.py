"""The seeded probe input behind ``model.self_test()``.

Export runs :func:`make_probe` through the fp32 model and stores the probabilities in the manifest
(:class:`facederm.runtime.card.Probe`); the runtime regenerates the same input and compares. Both sides
call this one function, so the input is bit-identical. The pattern is smooth and image-like (a coarse
random colour grid, bilinearly upsampled, rounded to whole 0-255 values) rather than white noise, so
quantized models see activations in the range they were calibrated for.
"""

from __future__ import annotations

import numpy as np

#: Default probe parameters; export records the ones it used in the manifest.
DEFAULT_SEED = 0
DEFAULT_BATCH = 2
_GRID = 5  # coarse control points per side: a few blobs of colour per image

#: Max |delta probability| against the fp32 probe outputs, per precision, when the manifest records none; also
#: the floor of the tolerances an export records (the one table: export reads it from here).
DEFAULT_TOLERANCE: dict[str, float] = {
    "fp32": 1e-3,
    "bf16": 3e-2,
    "fp16": 2e-2,
    "int8-weights": 5e-2,
    "int8": 0.15,
    "palettize6": 0.1,
    "palettize4": 0.25,
}


def _interpolation_matrix(size: int, grid: int) -> np.ndarray:
    """(size x grid) weights that linearly interpolate ``grid`` control points onto ``size`` pixels."""
    position = np.linspace(0.0, grid - 1.0, size)
    lower = np.minimum(np.floor(position).astype(np.int64), grid - 2)
    frac = position - lower
    weights = np.zeros((size, grid), dtype=np.float64)
    rows = np.arange(size)
    weights[rows, lower] = 1.0 - frac
    weights[rows, lower + 1] = frac
    return weights


def make_probe(seed: int = DEFAULT_SEED, batch: int = DEFAULT_BATCH, size: int = 224) -> np.ndarray:
    """A deterministic float32 NCHW batch of smooth RGB images with whole values in 0-255.

    Same ``(seed, batch, size)`` -> the same array on every machine (float64 maths, then rounding).
    """
    if batch < 1 or size < 2:
        raise ValueError(f"make_probe: batch must be >= 1 and size >= 2 (got batch={batch}, size={size})")
    rng = np.random.default_rng(seed)
    grid = rng.uniform(20.0, 235.0, size=(batch, 3, _GRID, _GRID))
    weights = _interpolation_matrix(size, _GRID)
    smooth = weights @ grid @ weights.T  # (batch, 3, size, size), separable bilinear upsampling
    texture = rng.normal(0.0, 6.0, size=(batch, 1, size, size))  # mild skin-like grain, shared by channels
    probe: np.ndarray = np.clip(np.rint(smooth + texture), 0.0, 255.0).astype(np.float32)
    return probe


def tolerance_for(precision: str | None, recorded: dict[str, float], compute_precision: str | None = None) -> float:
    """The probe tolerance for an artifact: the manifest's figure for its precision, else the default.

    When the device computes in a lower precision than the artifact (OpenVINO's bf16 on this CPU),
    the looser of the two applies, so an honest bf16 run of an fp32 IR is not reported as broken.
    """

    def one(p: str) -> float:
        return float(recorded.get(p, DEFAULT_TOLERANCE.get(p, DEFAULT_TOLERANCE["int8"])))

    tolerance = one(precision or "fp32")
    if compute_precision and compute_precision != precision:
        tolerance = max(tolerance, one(compute_precision))
    return tolerance
