"""ONNX Runtime: .onnx and .ort files on the CPU, or on CUDA / TensorRT / CoreML execution providers."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, BackendUnavailableError, ConfigError
from ..metadata import CLINICAL_INPUT_NAME, INPUT_NAME, OUTPUT_NAME, card_from_metadata
from . import register
from .base import Backend, Session, check_clinical_input

# Device kind -> execution provider. Order = preference when no device is asked for. The TensorRT EP
# is only used when asked ("tensorrt"): it builds an engine on the first run, which takes minutes.
_PROVIDERS: dict[str, str] = {
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_AUTO_DEVICES = ("cuda", "coreml", "cpu")
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # the base install has it; a broken environment may not
        raise BackendUnavailableError(f"onnxruntime cannot be imported ({exc}): pip install onnxruntime") from exc
    return onnxruntime


@register
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    suffixes = (".onnx", ".ort")
    formats = ("onnx", "ort")
    kind = "ONNX / ORT files"
    priority = 20
    short_name = "ort"
    library = "onnxruntime"
    has_bare_call = True
    x86_int8_kernels = True

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "onnxruntime is not installed: pip install onnxruntime"
        return True, "installed"

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        available = set(_ort().get_available_providers())
        return tuple(kind for kind, provider in _PROVIDERS.items() if provider in available)

    @classmethod
    def open(cls, path: Path, *, device: str | None, options: Mapping[str, Any]) -> Session:
        return OnnxRuntimeSession(path, device, options)

    @classmethod
    def twin_options(cls) -> dict[str, Any]:
        """A twin graph (TensorRT's Q/DQ ONNX) runs unfused: its exact arithmetic, as TensorRT computes it."""
        return {"graph_optimization": "basic"}

    @classmethod
    def bare_call(
        cls, path: Path, *, device: str | None, threads: int, options: Mapping[str, Any]
    ) -> Callable[[np.ndarray], Any]:
        """A bare ``InferenceSession`` with the session options :class:`OnnxRuntimeSession` sets."""
        ort = _ort()
        session = ort.InferenceSession(
            str(path),
            sess_options=_session_options(ort, threads, options.get("graph_optimization")),
            providers=_providers(device, ort.get_available_providers())[1],
        )
        inputs = session.get_inputs()
        name = next((i.name for i in inputs if i.name == INPUT_NAME), inputs[0].name)
        if any(i.name == CLINICAL_INPUT_NAME for i in inputs):  # a clinical graph: nothing answered (speed only)
            width = next(i.shape[1] for i in inputs if i.name == CLINICAL_INPUT_NAME)
            return lambda batch: session.run(
                None, {name: batch, CLINICAL_INPUT_NAME: np.zeros((len(batch), width), np.float32)}
            )[0]
        return lambda batch: session.run(None, {name: batch})[0]


#: ``graph_optimization`` option -> onnxruntime's level. ``basic`` keeps Q/DQ nodes unfused: the graph's exact
#: arithmetic (x86 fused u8s8 kernels saturate on CPUs without VNNI when weights use all 8 bits).
GRAPH_OPTIMIZATION = {
    "all": "ORT_ENABLE_ALL",
    "extended": "ORT_ENABLE_EXTENDED",
    "basic": "ORT_ENABLE_BASIC",
    "disabled": "ORT_DISABLE_ALL",
}


def _session_options(ort: Any, threads: int | None, graph_optimization: str | None = None) -> Any:
    sess_options = ort.SessionOptions()
    if threads:
        sess_options.intra_op_num_threads = int(threads)
    if graph_optimization:
        level = GRAPH_OPTIMIZATION.get(str(graph_optimization).lower())
        if level is None:
            raise ConfigError(
                f"graph_optimization {graph_optimization!r}: expected one of {', '.join(GRAPH_OPTIMIZATION)}"
            )
        sess_options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    sess_options.log_severity_level = 3  # errors only: ORT's warnings are not actionable by users
    return sess_options


def _providers(device: str | None, available: list[str]) -> tuple[str, list[Any]]:
    """(device name, providers list) for ``device`` such as None, "cpu", "cuda", "cuda:1", "tensorrt"."""
    if device is None:
        kind = next(k for k in _AUTO_DEVICES if _PROVIDERS[k] in available)
        return kind, [_PROVIDERS[kind], "CPUExecutionProvider"] if kind != "cpu" else ["CPUExecutionProvider"]
    kind, _, index = device.lower().partition(":")
    if kind not in _PROVIDERS:
        raise ConfigError(f"onnxruntime: unknown device {device!r}; use one of {', '.join(_PROVIDERS)} (e.g. cuda:0)")
    provider = _PROVIDERS[kind]
    if provider not in available:
        raise BackendUnavailableError(
            f"onnxruntime: device {device!r} needs {provider}, which this onnxruntime build lacks"
            f" (it has {', '.join(available)}); install onnxruntime-gpu for CUDA/TensorRT"
        )
    options: dict[str, Any] = {"device_id": int(index)} if index.isdigit() else {}
    chosen: list[Any] = [(provider, options)] if options else [provider]
    if kind != "cpu":
        chosen.append("CPUExecutionProvider")  # nodes the accelerator lacks fall back to the CPU
    return device, chosen


class OnnxRuntimeSession(Session):
    def __init__(self, path: Path, device: str | None, options: Mapping[str, Any]) -> None:
        ort = _ort()
        self.device, providers = _providers(device, ort.get_available_providers())
        sess_options = _session_options(ort, options.get("threads"), options.get("graph_optimization"))
        try:
            self._session = ort.InferenceSession(str(path), sess_options=sess_options, providers=providers)
        except Exception as exc:  # ORT raises its own zoo (InvalidProtobuf, Fail, NoSuchFile ...)
            raise ArtifactError(f"{path}: onnxruntime cannot load it: {exc}") from exc
        self.providers = self._session.get_providers()
        inputs = self._session.get_inputs()
        model_input = next((i for i in inputs if i.name == INPUT_NAME), inputs[0])
        outputs = [o.name for o in self._session.get_outputs()]
        self._input_name = model_input.name
        self._clinical_name = CLINICAL_INPUT_NAME if any(i.name == CLINICAL_INPUT_NAME for i in inputs) else None
        self._output_names = [OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]]
        self._input_dtype = _NUMPY_TYPES.get(model_input.type, np.float32)
        batch_dim = model_input.shape[0] if model_input.shape else None
        self.static_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.card = card_from_metadata(metadata, str(path))
        check_clinical_input(self.card, self._clinical_name is not None, str(path))

    def run(self, batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        if batch.dtype != self._input_dtype:
            batch = batch.astype(self._input_dtype)
        feed = {self._input_name: batch}
        answers = self.clinical_input(len(batch), clinical)
        if answers is not None and self._clinical_name is not None:
            feed[self._clinical_name] = answers  # float32 I/O in every precision (fp16 graphs keep_io_types)
        # InferenceSession.run is thread-safe: one session serves concurrent callers.
        probabilities: np.ndarray
        (probabilities,) = self._session.run(self._output_names, feed)
        return probabilities if probabilities.dtype == np.float32 else probabilities.astype(np.float32)
