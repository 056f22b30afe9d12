"""facederm.export: a trained run dir -> validated artifacts for every runtime, plus manifest.json.

>>> from facederm.export import export_run
>>> result = export_run("runs/lite0", targets=["onnx", "openvino"], out_dir="exports/lite0")  # doctest: +SKIP
>>> [(r.key, r.status) for r in result.records]  # doctest: +SKIP
"""

from __future__ import annotations

from .api import DEFAULT_CALIB_SIZE, DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT, ExportOptions, ExportResult, export_run

__all__ = [
    "DEFAULT_CALIB_SIZE",
    "DEFAULT_MAX_DROP",
    "DEFAULT_MIN_AGREEMENT",
    "ExportOptions",
    "ExportResult",
    "export_run",
]
