"""TensorRT: serialized engines (.engine / .plan) on NVIDIA GPUs, written against TensorRT 10's Python API.

An engine only runs on the TensorRT version and the GPU compute capability it was built for, so the
sidecar JSON beside it (``model.fp16.engine.json``, see :mod:`facederm.runtime.metadata`) records both
and :func:`check_engine_compatible` refuses a mismatch before TensorRT is asked to deserialize it.
Device memory goes through ``cuda-python`` (or ``cupy``), never torch.
"""

from __future__ import annotations

import importlib.util
import queue
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, BackendUnavailableError, ConfigError, IncompatibleEngineError
from ..metadata import (
    CLINICAL_INPUT_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    SIDECAR_CARD,
    SIDECAR_COMPUTE_CAPABILITY,
    SIDECAR_MAX_BATCH,
    SIDECAR_SUFFIX,
    SIDECAR_TENSORRT_VERSION,
    card_from_json,
)
from ..schema import read_json
from . import register
from .base import Backend, Session, check_clinical_input

_INSTALL = "pip install 'facederm[tensorrt]' cuda-python (TensorRT 10 and a CUDA GPU)"


def sidecar_path(engine: Path) -> Path:
    """``model.fp16.engine`` -> ``model.fp16.engine.json``."""
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


def check_engine_compatible(sidecar: Mapping[str, Any], tensorrt_version: str, capability: str, where: str) -> None:
    """Refuse an engine built by another TensorRT release (major.minor.patch) or for another GPU generation."""
    built_version = str(sidecar.get(SIDECAR_TENSORRT_VERSION, ""))
    if built_version.split(".")[:3] != tensorrt_version.split(".")[:3]:
        raise IncompatibleEngineError(
            f"{where}: built with TensorRT {built_version or '(unknown)'}, this machine has {tensorrt_version};"
            " rebuild the engine here (facederm-export --target tensorrt) or install the matching TensorRT"
        )
    built_capability = str(sidecar.get(SIDECAR_COMPUTE_CAPABILITY, ""))
    if built_capability != capability:
        raise IncompatibleEngineError(
            f"{where}: built for GPU compute capability {built_capability or '(unknown)'}, this GPU is {capability};"
            " TensorRT engines are GPU-specific: rebuild it on this GPU"
        )


# --- torch-free CUDA memory: cuda-python first, cupy second ---------------------------------------
class _CudaPython:
    """The few CUDA runtime calls we need, through cuda-python's ``cudart`` bindings."""

    def __init__(self, device_index: int) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self._rt = cudart
        self._check(cudart.cudaSetDevice(device_index))
        self._device = device_index

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            raise BackendUnavailableError(f"tensorrt: CUDA call failed: {err}")
        return rest[0] if len(rest) == 1 else rest

    def capability(self) -> str:
        props = self._check(self._rt.cudaGetDeviceProperties(self._device))
        return f"{props.major}.{props.minor}"

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self._rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self._rt.cudaFree(ptr)

    def stream(self) -> int:
        return int(self._check(self._rt.cudaStreamCreate()))

    def to_device(self, ptr: int, host: np.ndarray, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, stream))

    def to_host(self, host: np.ndarray, ptr: int, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, stream))
        self._check(self._rt.cudaStreamSynchronize(stream))


class _CuPy:
    """The same calls through cupy, for machines that have cupy rather than cuda-python."""

    def __init__(self, device_index: int) -> None:
        import cupy

        self._cp = cupy
        self._device = cupy.cuda.Device(device_index)
        self._device.use()
        self._buffers: dict[int, Any] = {}
        self._streams: dict[int, Any] = {}

    def capability(self) -> str:
        cc = str(self._device.compute_capability)  # "89"
        return f"{cc[:-1]}.{cc[-1]}"

    def malloc(self, nbytes: int) -> int:
        memory = self._cp.cuda.alloc(nbytes)
        self._buffers[int(memory.ptr)] = memory
        return int(memory.ptr)

    def free(self, ptr: int) -> None:
        self._buffers.pop(ptr, None)

    def stream(self) -> int:
        stream = self._cp.cuda.Stream(non_blocking=True)
        self._streams[int(stream.ptr)] = stream
        return int(stream.ptr)

    def to_device(self, ptr: int, host: np.ndarray, stream: int) -> None:
        self._buffers[ptr].copy_from_host_async(host.ctypes.data, host.nbytes, self._streams[stream])

    def to_host(self, host: np.ndarray, ptr: int, stream: int) -> None:
        self._buffers[ptr].copy_to_host_async(host.ctypes.data, host.nbytes, self._streams[stream])
        self._streams[stream].synchronize()


_CUDA_LIBRARIES = {"cuda": _CudaPython, "cupy": _CuPy}  # importable module -> adapter, in preference order


def _cuda(device_index: int) -> Any:
    for module, adapter in _CUDA_LIBRARIES.items():
        if importlib.util.find_spec(module) is not None:
            return adapter(device_index)
    raise BackendUnavailableError(f"tensorrt needs cuda-python or cupy for GPU memory: {_INSTALL}")


@register
class TensorRtBackend(Backend):
    name = "tensorrt"
    suffixes = (".engine", ".plan")
    formats = ("engine", "tensorrt-engine")
    kind = "TensorRT engines"
    priority = 0
    short_name = "trt"
    library = "tensorrt"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, f"tensorrt is not installed: {_INSTALL}"
        if not any(importlib.util.find_spec(m) is not None for m in _CUDA_LIBRARIES):
            return False, f"no CUDA memory library (cuda-python or cupy): {_INSTALL}"
        return True, "tensorrt and a CUDA library are installed"

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        return ("cuda",)

    @classmethod
    def open(cls, path: Path, *, device: str | None, options: Mapping[str, Any]) -> Session:
        cls.require_available(path)
        return TensorRtSession(path, device, options)


@dataclass
class _Context:
    """One execution context with its own stream and device buffers: one concurrent call."""

    context: Any
    stream: int
    input_ptr: int
    output_ptr: int
    clinical_ptr: int = 0  # the clinical input's buffer (0: an image-only engine)


class TensorRtSession(Session):
    def __init__(self, path: Path, device: str | None, options: Mapping[str, Any]) -> None:
        import tensorrt as trt

        kind, _, index = (device or "cuda").lower().partition(":")
        if kind != "cuda" or (index and not index.isdigit()):
            raise ConfigError(f"tensorrt: device must be 'cuda' or 'cuda:N', got {device!r}")
        self.device = f"cuda:{int(index or 0)}"
        self._cuda = _cuda(int(index or 0))
        sidecar_file = sidecar_path(path)
        if not sidecar_file.is_file():
            raise ArtifactError(f"{path}: its sidecar {sidecar_file.name} is missing (it records labels and versions)")
        sidecar = read_json(sidecar_file)
        check_engine_compatible(sidecar, trt.__version__, self._cuda.capability(), str(path))
        self.card = card_from_json(sidecar[SIDECAR_CARD], str(sidecar_file))

        self._runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ArtifactError(f"{path}: TensorRT could not deserialize the engine (corrupt, or built elsewhere)")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        self._input = INPUT_NAME if INPUT_NAME in inputs else inputs[0]
        self._clinical = CLINICAL_INPUT_NAME if CLINICAL_INPUT_NAME in inputs else None
        check_clinical_input(self.card, self._clinical is not None, str(path))
        self._clinical_width = self.card.clinical.width if self.card.clinical is not None else 0
        self._output = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
        self._input_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._input)))
        self._output_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._output)))
        shape = tuple(self._engine.get_tensor_shape(self._input))
        if shape[0] > 0:
            self.static_batch = self.max_batch = int(shape[0])
        else:  # dynamic batch: the optimization profile's max bounds it
            _, _, profile_max = self._engine.get_tensor_profile_shape(self._input, 0)
            self.max_batch = int(min(profile_max[0], sidecar.get(SIDECAR_MAX_BATCH) or profile_max[0]))
        self._sample_shape = shape[1:]
        self._classes = len(self.card.labels)
        self._contexts: queue.SimpleQueue[_Context] = queue.SimpleQueue()
        self._all_contexts: list[_Context] = []

    def _new_context(self) -> _Context:
        context = self._engine.create_execution_context()
        sample_bytes = int(np.prod(self._sample_shape)) * self._input_dtype.itemsize
        assert self.max_batch is not None  # set from the engine's profile in __init__
        made = _Context(
            context=context,
            stream=self._cuda.stream(),
            input_ptr=self._cuda.malloc(self.max_batch * sample_bytes),
            output_ptr=self._cuda.malloc(self.max_batch * self._classes * self._output_dtype.itemsize),
        )
        context.set_tensor_address(self._input, made.input_ptr)
        context.set_tensor_address(self._output, made.output_ptr)
        if self._clinical is not None:  # float32 [N, F] beside the image
            made.clinical_ptr = self._cuda.malloc(self.max_batch * self._clinical_width * 4)
            context.set_tensor_address(self._clinical, made.clinical_ptr)
        self._all_contexts.append(made)
        return made

    def run(self, batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        answers = self.clinical_input(len(batch), clinical)
        try:
            ctx = self._contexts.get_nowait()
        except queue.Empty:
            ctx = self._new_context()
        try:
            host_in = np.ascontiguousarray(batch, dtype=self._input_dtype)
            ctx.context.set_input_shape(self._input, host_in.shape)
            self._cuda.to_device(ctx.input_ptr, host_in, ctx.stream)
            if answers is not None and self._clinical is not None:
                ctx.context.set_input_shape(self._clinical, answers.shape)
                self._cuda.to_device(ctx.clinical_ptr, answers, ctx.stream)
            if not ctx.context.execute_async_v3(ctx.stream):
                raise ArtifactError("tensorrt: execute_async_v3 failed")
            host_out = np.empty((len(host_in), self._classes), dtype=self._output_dtype)
            self._cuda.to_host(host_out, ctx.output_ptr, ctx.stream)  # synchronizes the stream
            return host_out.astype(np.float32, copy=False)
        finally:
            self._contexts.put(ctx)

    def close(self) -> None:
        for ctx in self._all_contexts:
            self._cuda.free(ctx.input_ptr)
            self._cuda.free(ctx.output_ptr)
            if ctx.clinical_ptr:
                self._cuda.free(ctx.clinical_ptr)
        self._all_contexts.clear()
