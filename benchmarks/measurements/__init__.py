"""The registered measurements. Importing this package registers the built-in ones, in plan order."""

from __future__ import annotations

from .base import REGISTRY, Measured, Measurement, Settings, measurements, register

# Worker measurements first (in the order they run inside a row's process), then parent ones.
from . import load, latency, throughput, memory, predict, ort_bare  # noqa: E402,F401  (worker)
from . import benchmark_app, accuracy, twin  # noqa: E402,F401  (parent)

__all__ = ["REGISTRY", "Measured", "Measurement", "Settings", "measurements", "register"]
