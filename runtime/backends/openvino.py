"""OpenVINO: IR files (.xml + .bin) on CPU, GPU or NPU devices.

One compiled model is shared by every caller; each call borrows an infer request from a pool, so
concurrent calls never share a request. ``precision_hint="f32"`` asks the CPU to compute in fp32
(OpenVINO defaults to bf16 on CPUs with AMX / AVX-512 BF16, which moves probabilities by ~1e-2).
"""

from __future__ import annotations

import importlib.util
import math
import queue
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, BackendUnavailableError, ConfigError, MetadataMismatchError
from ..metadata import CLINICAL_INPUT_NAME, INPUT_NAME, OPENVINO_RT_INFO_PATH, OUTPUT_NAME, card_from_json
from . import register
from .base import Backend, NativeTool, Session, check_clinical_input

_PRECISION_HINTS = {"f32": "f32", "fp32": "f32", "f16": "f16", "fp16": "f16", "bf16": "bf16"}
_TYPE_NAMES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}  # OpenVINO element type -> facederm precision
_VIRTUAL_DEVICES = {"AUTO", "MULTI", "HETERO", "BATCH"}
_MAX_COMPILED_SHAPES = 4  # batch sizes kept compiled at once (batch 1 is never evicted)


def _ov() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError(f"openvino is not installed ({exc}): pip install 'facederm[openvino]'") from exc
    return openvino


class BenchmarkApp(NativeTool):
    """OpenVINO's ``benchmark_app``: one stream, one synchronous request, the same threads (``-t`` whole seconds)."""

    name = "benchmark_app"
    install_hint = "it is a console script of the openvino wheel"
    _MEDIAN = re.compile(r"Median:\s*([0-9.]+)\s*(ms|us|s)\b")
    _THROUGHPUT = re.compile(r"Throughput:\s*([0-9.]+)\s*FPS")
    _UNIT_MS = {"ms": 1.0, "us": 1e-3, "s": 1e3}

    def command(
        self,
        path: str,
        *,
        device: str | None,
        threads: int,
        batch: int,
        input_size: int,
        seconds: float,
        options: Mapping[str, Any],
        extra_inputs: Mapping[str, tuple[int, ...]] | None = None,
    ) -> list[str]:
        shape = f"[{batch},3,{input_size},{input_size}]"
        if extra_inputs:  # several inputs: each named, all with the same batch
            named = [f"{INPUT_NAME}{shape}"] + [
                f"{k}[{','.join(map(str, (batch, *v)))}]" for k, v in extra_inputs.items()
            ]
            shape = ",".join(named)
        cmd = [
            self.executable() or self.name,
            "-m",
            path,
            "-d",
            device or "CPU",
            "-hint",
            "none",
            "-nstreams",
            "1",
            "-nireq",
            "1",
            "-api",
            "sync",
            "-nthreads",
            str(threads),
            "-t",
            str(max(1, math.ceil(seconds))),
            "-shape",
            shape,
            "-report_type",
            "no_counters",
        ]
        hint = options.get("precision_hint")
        return cmd + ["-infer_precision", str(hint)] if hint else cmd

    def parse(self, output: str) -> dict[str, float]:
        found: dict[str, float] = {}
        if match := self._MEDIAN.search(output):
            found["median_ms"] = float(match.group(1)) * self._UNIT_MS[match.group(2)]
        if match := self._THROUGHPUT.search(output):
            found["throughput_ips"] = float(match.group(1))
        return found


@register
class OpenVinoBackend(Backend):
    name = "openvino"
    suffixes = (".xml",)
    formats = ("openvino",)
    kind = "OpenVINO IR"
    priority = 30
    short_name = "ov"
    library = "openvino"
    native_tool = BenchmarkApp()
    has_bare_call = True
    x86_int8_kernels = True

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("openvino") is None:
            return False, "openvino is not installed: pip install 'facederm[openvino]'"
        return True, "installed"

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        return tuple(_ov().Core().available_devices)

    @classmethod
    def open(cls, path: Path, *, device: str | None, options: Mapping[str, Any]) -> Session:
        return OpenVinoSession(path, device, options)

    @classmethod
    def exact_options(cls, precision: str) -> dict[str, Any]:
        """fp32 artifacts compute in fp32 (the CPU plugin's default is bf16 on AMX / AVX-512 BF16 CPUs)."""
        return {"precision_hint": "f32"} if precision == "fp32" else {}

    @classmethod
    def bare_call(
        cls, path: Path, *, device: str | None, threads: int, options: Mapping[str, Any]
    ) -> Callable[[np.ndarray], Any]:
        """The compiled model's own infer request, with the compile config :class:`OpenVinoSession` uses."""
        compiled = (
            _ov()
            .Core()
            .compile_model(str(path), (device or "CPU").upper(), _compile_config({**options, "threads": threads}))
        )
        request, output = compiled.create_infer_request(), compiled.outputs[0]
        names = [i.get_any_name() for i in compiled.inputs]
        if CLINICAL_INPUT_NAME in names:  # a clinical graph: nothing answered (speed only)
            slot = names.index(CLINICAL_INPUT_NAME)
            width = compiled.inputs[slot].get_partial_shape()[1].get_length()
            image = names.index(INPUT_NAME) if INPUT_NAME in names else 1 - slot
            return lambda batch: request.infer(
                {image: batch, slot: np.zeros((len(batch), width), np.float32)}, share_inputs=True
            )[output]
        return lambda batch: request.infer({0: batch}, share_inputs=True)[output]


def _compile_config(options: Mapping[str, Any]) -> dict[str, str]:
    config: dict[str, str] = {}
    hint = options.get("precision_hint")
    if hint:
        if str(hint).lower() not in _PRECISION_HINTS:
            raise ConfigError(f"openvino: precision_hint {hint!r} is not one of {', '.join(_PRECISION_HINTS)}")
        config["INFERENCE_PRECISION_HINT"] = _PRECISION_HINTS[str(hint).lower()]
    if options.get("threads"):
        config["INFERENCE_NUM_THREADS"] = str(int(options["threads"]))
    return config


def _check_device(device: str, available: list[str]) -> None:
    base = device.upper().split(":")[0].split(".")[0]
    if base in _VIRTUAL_DEVICES or any(d.upper().split(".")[0] == base for d in available):
        return
    raise BackendUnavailableError(
        f"openvino: device {device!r} is not present here; available: {', '.join(available) or 'none'}"
    )


class OpenVinoSession(Session):
    def __init__(self, path: Path, device: str | None, options: Mapping[str, Any]) -> None:
        ov = _ov()
        core = ov.Core()
        self.device = (device or "CPU").upper()  # OpenVINO device names are upper case
        _check_device(self.device, core.available_devices)
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # missing .bin, malformed XML ...
            raise ArtifactError(f"{path}: OpenVINO cannot read it: {exc}") from exc
        rt_path = list(OPENVINO_RT_INFO_PATH)
        if not model.has_rt_info(rt_path):
            raise MetadataMismatchError(
                f"{path}: no facederm metadata (rt_info {'/'.join(rt_path)} is missing); re-export it with facederm-export"
            )
        self.card = card_from_json(model.get_rt_info(rt_path).astype(str), str(path))
        self._model_path = path
        self._core = core
        self._config = _compile_config(options)
        names = [i.get_any_name() for i in model.inputs]
        # Input slots by name: the image, and a clinical model's answers (both get the same static batch below).
        self._clinical_slot = names.index(CLINICAL_INPUT_NAME) if CLINICAL_INPUT_NAME in names else None
        self._image_slot = names.index(INPUT_NAME) if INPUT_NAME in names else 0
        check_clinical_input(self.card, self._clinical_slot is not None, str(path))
        batch_dim = model.inputs[self._image_slot].get_partial_shape()[0]
        self.static_batch = batch_dim.get_length() if batch_dim.is_static else None
        # A static input shape is ~10% faster than a dynamic one on CPU (measured here on EfficientNet-Lite0,
        # as benchmark_app does with -shape): compile one static model per batch size, lazily, few of them.
        self._by_batch: dict[int, tuple[Any, Any, queue.SimpleQueue[Any]]] = {}
        self._lock = threading.Lock()
        first = self.static_batch or 1
        self._compile_for(first, model)  # eager: load errors surface in load(), and batch 1 is ready
        self.compute_precision = self._read_compute_precision(self._by_batch[first][0])

    def _compile_for(self, batch: int, model: Any = None) -> tuple[Any, Any, queue.SimpleQueue[Any]]:
        with self._lock:
            if batch in self._by_batch:
                return self._by_batch[batch]
            if model is None:
                model = self._core.read_model(str(self._model_path))
            if self.static_batch is None:
                shapes = {}
                for port in model.inputs:  # every input: the image and, for a clinical model, its answers
                    shape = port.get_partial_shape()
                    shape[0] = batch
                    shapes[port] = shape
                model.reshape(shapes)
            try:
                compiled = self._core.compile_model(model, self.device, self._config)
            except Exception as exc:
                raise BackendUnavailableError(
                    f"{self._model_path}: OpenVINO cannot compile it for {self.device}: {exc}"
                ) from exc
            outputs = compiled.outputs
            names = [o.get_any_name() for o in outputs]
            output = outputs[names.index(OUTPUT_NAME)] if OUTPUT_NAME in names else outputs[0]
            if len(self._by_batch) >= _MAX_COMPILED_SHAPES:
                self._by_batch.pop(next(k for k in self._by_batch if k != 1))
            entry: tuple[Any, Any, queue.SimpleQueue[Any]] = (compiled, output, queue.SimpleQueue())
            self._by_batch[batch] = entry
            return entry

    @staticmethod
    def _read_compute_precision(compiled: Any) -> str | None:
        try:
            return _TYPE_NAMES.get(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        except Exception:  # not every device plugin reports it (NPU)
            return None

    def run(self, batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        feed: dict[int, np.ndarray] = {self._image_slot: batch}
        answers = self.clinical_input(len(batch), clinical)
        if answers is not None and self._clinical_slot is not None:
            feed[self._clinical_slot] = answers
        entry = self._by_batch.get(len(batch)) or self._compile_for(len(batch))
        compiled, output, requests = entry
        try:
            request = requests.get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            # share_inputs: no copy of the batch; outputs are copied out of the request before reuse.
            result = request.infer(feed, share_inputs=True)
            return np.asarray(result[output], dtype=np.float32)
        finally:
            requests.put(request)
