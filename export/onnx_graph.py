"""The fp32 ONNX graph every ONNX-based artifact starts from, its metadata, and an onnxruntime predictor.

One file (legacy TorchScript exporter: one .onnx, no external data, 3-10x faster than dynamo here),
input ``image`` float32 NCHW 0-255 with a dynamic batch (a model with clinical fields also ``clinical``, float32
[batch, F]), output ``probabilities``, simplified with onnxslim, the model card in ``metadata_props``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facederm.runtime.card import NOT_A_DIAGNOSIS, ModelCard
from facederm.runtime.errors import ExportError
from facederm.runtime.metadata import CLINICAL_INPUT_NAME, INPUT_NAME, OUTPUT_NAME, card_to_metadata

from .context import BuildContext, Predict
from .surgery import static_same_padding

OPSET = 17


def set_metadata(model, card: ModelCard) -> None:  # model: onnx.ModelProto
    """Embed the card, labels and preprocessing (``runtime.metadata`` keys) and a human description."""
    import onnx

    props = {p.key: p.value for p in model.metadata_props}
    props.update(card_to_metadata(card))
    onnx.helper.set_model_props(model, props)  # replaces the list: no duplicate keys on re-export
    model.producer_name = "facederm"
    model.doc_string = f"{card.arch} skin lesion classifier; labels {json.dumps(list(card.labels))}. {NOT_A_DIAGNOSIS}"


def export_fp32(model: torch.nn.Module, card: ModelCard, path: Path, *, slim: bool = True) -> Path:
    """Trace ``model`` (a ProbabilityModel) to a single-file fp32 ONNX graph at ``path``, simplified with
    onnxslim unless ``slim`` is False (twins that only compute need not be)."""
    import onnx

    size = card.input_size
    static, _ = static_same_padding(model, size)
    raw = path.with_suffix(".raw.onnx")
    inputs, names = example_inputs(card)
    axes = {name: {0: "batch"} for name in (*names, OUTPUT_NAME)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic are expected and harmless
        torch.onnx.export(
            static,
            inputs,
            str(raw),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(names),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    graph = onnx.load(str(raw))
    raw.unlink()
    try:
        if slim:
            import onnxslim

            graph = onnxslim.slim(graph)
    except ImportError:  # onnxslim is optional: the graph is still valid, only larger and slower
        pass
    set_metadata(graph, card)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return path


def example_inputs(card: ModelCard) -> tuple[tuple[torch.Tensor, ...], tuple[str, ...]]:
    """The tracing inputs and their graph names: ``image`` (1, 3, S, S), and for a model with clinical fields
    ``clinical`` (1, F) holding the "nothing answered" encoding."""
    image = torch.zeros(1, 3, card.input_size, card.input_size)
    if card.clinical is None:
        return (image,), (INPUT_NAME,)
    clinical = torch.from_numpy(card.clinical.missing_batch(1))
    return (image, clinical), (INPUT_NAME, CLINICAL_INPUT_NAME)


def shared_fp32(ctx: BuildContext) -> Path:
    """The fp32 graph of this export, built once and reused by every ONNX-based variant."""
    path = ctx.shared.get("onnx_fp32")
    if path is None or not Path(path).is_file():
        path = export_fp32(ctx.model, ctx.card, ctx.scratch / "model.fp32.onnx")
        ctx.shared["onnx_fp32"] = path
    return Path(path)


def ort_predict(path: Path, **options: Any) -> Predict:
    """Run an ONNX or .ort file on the CPU as the runtime does (the native check): ``facederm.runtime.load`` on
    its onnxruntime backend, so validation gets the runtime's session options (default threads and graph
    optimization level), its input/output binding and its chunking. The runtime ``Model`` is kept as
    ``predict.model``."""
    from facederm.runtime import load
    from facederm.runtime.errors import FacedermError

    try:
        model = load(path, backend="onnxruntime", device="cpu", verify=False, **options)
    except FacedermError as exc:
        raise ExportError(f"{path.name}: the runtime's onnxruntime backend cannot load it: {exc}") from exc

    def predict(batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        return model.run(np.ascontiguousarray(batch, dtype=np.float32), clinical)

    predict.model = model  # type: ignore[attr-defined]
    return predict


def qdq_arithmetic_predict(path: Path) -> Predict:
    """Run a Q/DQ graph by its own arithmetic (dequantize, float op, quantize): :func:`ort_predict`'s runtime session
    with onnxruntime's twin options (basic graph optimizations: no fused int8 kernel replaces the Q/DQ nodes). The
    twin of a runtime that computes the graph exactly (TensorRT): onnxruntime's fused x86 u8s8 kernels saturate on
    CPUs without VNNI and would judge the artifact on this CPU's arithmetic. The bench runs twin rows the same way."""
    from facederm.runtime.backends.onnxruntime import OnnxRuntimeBackend

    return ort_predict(path, **OnnxRuntimeBackend.twin_options())


def versions(*modules: str) -> dict[str, str]:
    """Installed versions of ``modules`` (converters) for the manifest."""
    import contextlib
    import importlib

    out = {}
    for name in modules:
        with contextlib.suppress(ImportError, AttributeError):  # not installed, or no version: left out
            out[name] = str(importlib.import_module(name).__version__)
    return out
