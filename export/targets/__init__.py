"""The built-in export targets, one module each; importing this package registers them.

Each module registers a :class:`facederm.export.registry.Target` whose variants build one artifact from
a :class:`facederm.export.context.BuildContext`. Heavy libraries are imported inside the builders.
"""

from __future__ import annotations

# Registry order is this order; web comes after onnx on purpose (it reuses the ONNX graph and int8 quantizer).
from . import coreml, onnx, openvino, tensorrt, web

__all__ = ["coreml", "onnx", "openvino", "tensorrt", "web"]
