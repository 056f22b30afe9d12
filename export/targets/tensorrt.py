"""TensorRT: TensorRT-ready ONNX graphs, and serialized engines where TensorRT and a CUDA GPU exist.

- ``tensorrt/model.fp16.onnx``: fp16 weights and compute, float32 ``image``/``probabilities``.
- ``tensorrt/model.int8.qdq.onnx``: explicit quantization as TensorRT wants it: QuantizeLinear /
  DequantizeLinear pairs with zero point 0 (symmetric) int8 activations and weights, per-channel weights,
  on the inputs of Conv / Gemm / MatMul only (never on their outputs), bias left in float (TensorRT fuses
  it). TensorRT then builds exactly the int8 layers the graph names (strongly typed network, no calibrator
  on the device). Ranges: the export's one MinMax calibration pass (shared with the ONNX Runtime int8 graph).

  Why no Q/DQ on Conv outputs: onnxruntime's quantizer puts one there by default, before the ReLU6. With a
  symmetric range that int8 grid spans the pre-activation (EfficientNet-Lite0's stem: -79..79, a step of
  0.62), so the 0..6 that ReLU6 keeps got about 10 levels, and the error compounded over the 16 blocks:
  51-58% agreement with fp32 on Lite0 runs (93.8% with inputs only, same calibration). TensorRT fuses
  Conv + ReLU6 and requantizes at the next layer's input Q/DQ.
- ``tensorrt/model.<precision>.engine`` + ``.engine.json`` sidecar (card, TensorRT version, GPU compute
  capability, precision, max batch): built with ``trt.Builder`` from the graphs above, batch 1..MAX_BATCH.

Here (no TensorRT, no GPU) the ONNX graphs are checked by their twin: onnxruntime runs the very graph
TensorRT would build from. Engines are validated natively on the GPU they were built on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from facederm.runtime.clinical import ClinicalSchema
from facederm.runtime.errors import BackendUnavailableError, ExportError, MissingDependencyError
from facederm.runtime.metadata import CLINICAL_INPUT_NAME, INPUT_NAME, OUTPUT_NAME, tensorrt_sidecar

from ..context import BuildContext, BuiltArtifact, Predict
from ..onnx_graph import qdq_arithmetic_predict, versions
from ..registry import Target, Variant, register
from .onnx import quantize_qdq, shared_fp16

MAX_BATCH = 32
#: Layers with int8 inputs (activations and weights) in the Q/DQ graph; everything else stays float.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
OPT_BATCH = 8
TWIN_REASON = (
    "TensorRT is not run here; twin: onnxruntime CPU ran the same {what} ONNX graph TensorRT builds from, by its own "
    "arithmetic (basic graph optimizations: no fused int8 kernel)"
)


def _fp16_onnx(ctx: BuildContext) -> Path:
    return shared_fp16(ctx)  # the same fp16 graph as ONNX Runtime's: TensorRT parses it as a strongly typed network


def _qdq_onnx(ctx: BuildContext) -> Path:
    path = ctx.shared.get("trt_int8")
    if path is None:
        path = ctx.scratch / "trt.model.int8.qdq.onnx"
        quantize_qdq(
            ctx,
            path,
            per_channel=True,
            symmetric=True,
            op_types=list(QUANTIZED_OPS),
            quantize_bias=False,
            exclude_output_of=list(QUANTIZED_OPS),
            # A quant-aware run's weights sit on a 7-bit grid (levels -64..64): int8 Q/DQ with those levels is exact.
            reduce_range=ctx.quant_aware is not None,
        )
        ctx.shared["trt_int8"] = path
    return Path(path)


def _twin(ctx: BuildContext, source: Path, what: str, **options) -> BuiltArtifact:
    shutil.copyfile(source, ctx.output)
    return BuiltArtifact(
        format="onnx",
        # TensorRT computes the Q/DQ graph exactly: the twin too (no saturating fused x86 int8 kernel).
        predict=qdq_arithmetic_predict(ctx.output),
        validated="twin",
        validated_reason=TWIN_REASON.format(what=what),
        converter_versions=versions("onnx", "onnxruntime"),
        options=options,
    )


def build_fp16_onnx(ctx: BuildContext) -> BuiltArtifact:
    return _twin(ctx, _fp16_onnx(ctx), "fp16", keep_io_types=True, for_runtime="TensorRT (strongly typed network)")


def build_int8_onnx(ctx: BuildContext) -> BuiltArtifact:
    built = _twin(
        ctx,
        _qdq_onnx(ctx),
        "Q/DQ int8",
        quant_format="QDQ",
        activations="int8 symmetric per-tensor",
        weights="int8 symmetric per-channel"
        + (", the run's quant-aware grid (levels -64..64)" if ctx.quant_aware else ""),
        float_layers=ctx.float_layers,
        quantized_ops=list(QUANTIZED_OPS),
        qdq_on="inputs only",
        bias="float",
        calibration="MinMax (shared with onnx int8)",
    )
    return built


# --- engines (TensorRT 10 Python API; needs the tensorrt wheel and a CUDA GPU) ----------------------------
def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", "tensorrt", "TensorRT engines (NVIDIA GPU machines)") from exc
    try:
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError("TensorRT engines need a CUDA GPU; none is visible here")
    except ImportError as exc:  # pragma: no cover - torch is part of the export extra
        raise MissingDependencyError("torch", "train", "CUDA buffers for the TensorRT check") from exc
    return trt


def build_engine_bytes(
    onnx_path: Path, input_size: int, *, max_batch: int = MAX_BATCH, clinical_width: int = 0
) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network (its own fp16 / Q/DQ types decide the precision)
    and build a serialized engine for batch 1..``max_batch`` (both inputs of a clinical graph: ``clinical``
    [batch, ``clinical_width``] gets the same batch range)."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 2 << 30)
    profile = builder.create_optimization_profile()
    shape = (3, input_size, input_size)
    profile.set_shape(INPUT_NAME, (1, *shape), (min(OPT_BATCH, max_batch), *shape), (max_batch, *shape))
    if clinical_width:
        width = (clinical_width,)
        profile.set_shape(CLINICAL_INPUT_NAME, (1, *width), (min(OPT_BATCH, max_batch), *width), (max_batch, *width))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path.name} (see the TensorRT log above)")
    return bytes(serialized)


def engine_predict(
    path: Path, num_classes: int, max_batch: int = MAX_BATCH, schema: ClinicalSchema | None = None
) -> tuple[Predict, object]:
    """Run a serialized engine with CUDA tensors from torch (the native check); a clinical engine (``schema``) gets
    each batch's answers, or "nothing answered" when none are given."""
    trt = _tensorrt()
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ExportError(f"{path.name}: TensorRT cannot deserialize the engine it just built")
    context = engine.create_execution_context()

    def predict(batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        outputs = []
        if schema is not None and clinical is None:
            clinical = schema.missing_batch(len(batch))
        for i in range(0, len(batch), max_batch):
            x = torch.from_numpy(np.ascontiguousarray(batch[i : i + max_batch], dtype=np.float32)).cuda()
            out = torch.empty((x.shape[0], num_classes), dtype=torch.float32, device="cuda")
            context.set_input_shape(INPUT_NAME, tuple(x.shape))
            context.set_tensor_address(INPUT_NAME, x.data_ptr())
            if clinical is not None:
                c = torch.from_numpy(np.ascontiguousarray(clinical[i : i + max_batch], dtype=np.float32)).cuda()
                context.set_input_shape(CLINICAL_INPUT_NAME, tuple(c.shape))
                context.set_tensor_address(CLINICAL_INPUT_NAME, c.data_ptr())
            context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
            stream = torch.cuda.current_stream()
            if not context.execute_async_v3(stream.cuda_stream):
                raise ExportError(f"{path.name}: TensorRT execution failed")
            stream.synchronize()
            outputs.append(out.cpu().numpy())
        return np.concatenate(outputs)

    return predict, engine


def _engine_builder(precision: str, graph):
    def build(ctx: BuildContext) -> BuiltArtifact:
        trt = _tensorrt()
        import torch

        width = ctx.card.clinical.width if ctx.card.clinical is not None else 0
        ctx.output.write_bytes(build_engine_bytes(graph(ctx), ctx.input_size, clinical_width=width))
        major, minor = torch.cuda.get_device_capability()
        sidecar = tensorrt_sidecar(
            ctx.card,
            tensorrt_version=trt.__version__,
            compute_capability=f"{major}.{minor}",
            precision=precision,
            max_batch=MAX_BATCH,
        )
        sidecar_rel = f"{ctx.path}.json"
        (ctx.workdir / sidecar_rel).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        predict, _engine = engine_predict(ctx.output, ctx.card.num_classes, schema=ctx.card.clinical)
        built = BuiltArtifact(
            format="engine",
            predict=predict,
            validated="native",
            validated_reason=f"TensorRT {trt.__version__} ran the engine on {torch.cuda.get_device_name()}",
            files=(sidecar_rel,),
            converter_versions={"tensorrt": trt.__version__},
            options={"max_batch": MAX_BATCH, "strongly_typed": True, "compute_capability": f"{major}.{minor}"},
        )
        return built

    return build


TARGET = register(
    Target(
        name="tensorrt",
        title="TensorRT",
        aliases=("trt", "engine"),
        variants=(
            Variant("fp16", "tensorrt/model.fp16.onnx", build_fp16_onnx),
            Variant("int8", "tensorrt/model.int8.qdq.onnx", build_int8_onnx, calibrated=True),
            Variant(
                "fp16",
                "tensorrt/model.fp16.engine",
                _engine_builder("fp16", _fp16_onnx),
                record_target="tensorrt-engine",
            ),
            Variant(
                "int8",
                "tensorrt/model.int8.engine",
                _engine_builder("int8", _qdq_onnx),
                calibrated=True,
                record_target="tensorrt-engine",
            ),
        ),
        requires=(("onnx", "onnx", "TensorRT-ready ONNX"), ("onnxruntime", "onnx", "the TensorRT twin check")),
        validation="engines: native (tensorrt + CUDA GPU); Q/DQ and fp16 ONNX: twin run by onnxruntime",
        metadata="ONNX metadata_props; an engine gets a sidecar JSON (<engine>.json)",
    )
)
