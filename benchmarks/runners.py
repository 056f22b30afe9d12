"""How a row's process opens its model: a registry keyed by ``RowSpec.runner``.

- ``torch``: the run dir's weights in torch, fp32, eager (the baseline every other row is compared with).
- ``runtime``: the artifact through :func:`facederm.runtime.load` with the row's backend: the path an app
  takes, sha256 check and metadata check included (they are part of what a user's cold load costs).

A runner is a callable ``run(batch) -> probabilities`` on float32 NCHW 0-255 batches.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from facederm.runtime.errors import ConfigError

from .plan import RowSpec

#: The library each backend imports; timed separately from the cold load.
BACKEND_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "coreml": "coremltools", "tensorrt": "tensorrt"}


@dataclass
class Opened:
    """An opened model: its predict function and what the backend reports about how it computes."""

    run: Callable[[np.ndarray], np.ndarray]
    compute_precision: str | None = None
    details: str = ""


def _import_ms(modules: list[str]) -> float:
    start = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    return (time.perf_counter() - start) * 1e3


def import_torch(row: RowSpec) -> float:
    return _import_ms(["torch", "facederm.training.rundir", "facederm.training.models"])


def open_torch(row: RowSpec, threads: int) -> Opened:
    import torch

    from facederm.training.models import ProbabilityModel
    from facederm.training.rundir import load_run

    torch.set_num_threads(threads)
    classifier, card = load_run(Path(row.path))
    model = ProbabilityModel(classifier, card.preprocessing).eval().to(memory_format=torch.channels_last)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            return model(x).numpy()

    return Opened(run, "fp32", f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def import_runtime(row: RowSpec) -> float:
    return _import_ms(["facederm.runtime", *([BACKEND_MODULES[row.backend]] if row.backend in BACKEND_MODULES else [])])


def open_runtime(row: RowSpec, threads: int) -> Opened:
    from facederm.runtime import load

    model = load(row.path, backend=row.backend, device=row.device if row.device not in ("-", "default") else None,
                 threads=threads, **row.options)
    # The backend's own report of the precision it computes in (OpenVINO: bf16 on AMX CPUs by default).
    computed = model.compute_precision
    return Opened(model.run, computed or row.precision, repr(model))


#: runner name -> (import the libraries, open the model)
RUNNERS: dict[str, tuple[Callable[[RowSpec], float], Callable[[RowSpec, int], Opened]]] = {
    "torch": (import_torch, open_torch),
    "runtime": (import_runtime, open_runtime),
}


def get_runner(name: str) -> tuple[Callable[[RowSpec], float], Callable[[RowSpec, int], Opened]]:
    try:
        return RUNNERS[name]
    except KeyError:
        raise ConfigError(f"unknown bench runner {name!r}; known: {', '.join(RUNNERS)}") from None
