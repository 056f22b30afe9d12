"""ONNX Runtime: fp32 ``model.onnx``, fp16 ``model.fp16.onnx``, static int8 Q/DQ ``model.int8.onnx`` and the
ORT mobile format ``model.ort`` (for the onnxruntime-mobile packages of Android/iOS apps).

int8: u8 activations / s8 weights, per-channel, Q/DQ after ``quant_pre_process`` (shape inference + graph
optimization: without it QDQ was 3x slower than fp32 here). One MinMax pass over the calibration images
records every tensor's min and max (:func:`calibration_ranges`); this graph and the TensorRT Q/DQ graph are
both quantized from it (TensorRT's symmetric scales are max(|min|, |max|), which onnxruntime derives itself).
``int8_search`` (``--int8-search``) also builds per-tensor weights and keeps the faster candidate that agrees
with fp32 on the calibration images (>= 98%); measured here both run at the same speed, so it is off by default.
Selection never looks at evaluation images.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from facederm.runtime.errors import ExportError
from facederm.runtime.metadata import CLINICAL_INPUT_NAME, INPUT_NAME

from ..context import BuildContext, BuiltArtifact, run_batched, torch_predict
from ..onnx_graph import ort_predict, set_metadata, shared_fp32, versions
from ..registry import Target, Variant, register

NATIVE = "onnxruntime CPUExecutionProvider ran the file"
MIN_CALIB_AGREEMENT = 0.98


def _built(path: Path, fmt: str = "onnx", **options) -> BuiltArtifact:
    return BuiltArtifact(
        format=fmt,
        predict=ort_predict(path),
        validated="native",
        validated_reason=NATIVE,
        converter_versions=versions("onnx", "onnxruntime", "onnxslim"),
        options=options,
    )


def build_fp32(ctx: BuildContext) -> BuiltArtifact:
    shutil.copyfile(shared_fp32(ctx), ctx.output)
    return _built(ctx.output, opset=_opset(ctx.output))


def fp16_graph(src: Path, dst: Path, ctx: BuildContext) -> None:
    """fp16 weights and compute, float32 ``image``/``probabilities`` (keep_io_types) so callers do not change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    set_metadata(model, ctx.card)
    onnx.save(model, str(dst))


def shared_fp16(ctx: BuildContext) -> Path:
    """The fp16 graph of this export's fp32 graph, built once (ONNX fp16, TensorRT fp16, the Core ML fp16 twin)."""
    path = ctx.shared.get("onnx_fp16")
    if path is None or not Path(path).is_file():
        path = ctx.scratch / "model.fp16.onnx"
        fp16_graph(shared_fp32(ctx), path, ctx)
        ctx.shared["onnx_fp16"] = path
    return Path(path)


def build_fp16(ctx: BuildContext) -> BuiltArtifact:
    shutil.copyfile(shared_fp16(ctx), ctx.output)
    return _built(ctx.output, keep_io_types=True)


def preprocessed_fp32(ctx: BuildContext) -> Path:
    """``quant_pre_process`` output of the fp32 graph (shared by every int8 variant)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = ctx.scratch / "model.fp32.pre.onnx"
    if not path.is_file():
        quant_pre_process(str(shared_fp32(ctx)), str(path), skip_symbolic_shape=True)
    return path


class CalibrationReader:
    """Feeds the calibration tensors to onnxruntime's calibrator in batches: ``image``, and for a model with clinical
    fields ``clinical`` (each image's own answers), so the ranges are those of deployed inputs."""

    def __init__(self, images: np.ndarray, batch_size: int, clinical: np.ndarray | None = None) -> None:
        self.batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        self.clinical = (
            None if clinical is None else [clinical[i : i + batch_size] for i in range(0, len(images), batch_size)]
        )
        self.index = 0

    def get_next(self):
        if self.index >= len(self.batches):
            return None
        self.index += 1
        feed = {INPUT_NAME: np.ascontiguousarray(self.batches[self.index - 1], dtype=np.float32)}
        if self.clinical is not None:
            feed[CLINICAL_INPUT_NAME] = np.ascontiguousarray(self.clinical[self.index - 1], dtype=np.float32)
        return feed

    def rewind(self) -> None:
        self.index = 0


#: Ranges every int8 graph of one export is quantized from (one calibration pass, see calibration_ranges).
CALIBRATION_CACHE = "ort-calibration-minmax.json"


def calibration_ranges(ctx: BuildContext) -> Path:
    """Min and max of every tensor of the preprocessed fp32 graph over the calibration images, computed once
    per export (onnxruntime's MinMax calibrator) and saved as onnxruntime's calibration cache."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    cache = ctx.scratch / CALIBRATION_CACHE
    if cache.is_file():
        return cache
    work = ctx.scratch / "ort-calibration"
    work.mkdir(exist_ok=True)
    calibrator = create_calibrator(
        preprocessed_fp32(ctx),
        None,
        augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
    )
    try:
        calibrator.collect_data(
            CalibrationReader(ctx.calibration.tensors(), ctx.batch_size, ctx.calibration.clinical_tensors())
        )
        save_tensors_data(calibrator.compute_data(), cache)
    finally:
        del calibrator
        shutil.rmtree(work, ignore_errors=True)
    return cache


def quantize_qdq(
    ctx: BuildContext,
    dst: Path,
    *,
    per_channel: bool,
    symmetric: bool,
    op_types: list[str] | None = None,
    quantize_bias: bool = True,
    exclude_output_of: list[str] | None = None,
    reduce_range: bool = False,
) -> None:
    """Static Q/DQ int8 of the preprocessed fp32 graph, from this export's calibration ranges.

    ``exclude_output_of``: op types whose outputs get no Q/DQ (TensorRT placement: Q/DQ on the inputs of
    Conv / Gemm only; a Q/DQ on a Conv output sits before its ReLU6 and spends the int8 range on
    pre-activation values that ReLU6 then clips).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": quantize_bias}
    if exclude_output_of:
        extra["OpTypesToExcludeOutputQuantization"] = list(exclude_output_of)
    source = preprocessed_fp32(ctx)
    quantize_static(
        str(source),
        str(dst),
        calibration_data_reader=None,
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=op_types,
        nodes_to_exclude=leading_convs(source, ctx.float_layers),
        reduce_range=reduce_range,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options=extra,
        calibration_cache_path=str(calibration_ranges(ctx)),
    )
    import onnx

    model = onnx.load(str(dst))
    set_metadata(model, ctx.card)
    onnx.save(model, str(dst))


def leading_convs(path: Path, count: int) -> list[str]:
    """Names of the first ``count`` Conv nodes of the graph at ``path`` (nodes are in topological order): the layers
    a quant-aware run keeps in float (:attr:`BuildContext.float_layers`)."""
    if count <= 0:
        return []
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == "Conv"][:count]


def _latency_ms(predict, size: int, runs: int = 15) -> float:
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, size, size)).astype(np.float32)
    predict(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        predict(x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


INT8_SCHEME = "qdq-u8s8-per-channel"
#: Weight width (``ExportOptions.weight_bits``; ``--int8-weight-bits auto`` resolves it on the export machine).
#: 7 bits (``reduce_range``): onnxruntime's x86 u8s8 kernels multiply with VPMADDUBSW, whose 16-bit pair sums
#: saturate on CPUs without VNNI (AVX2, AVX-512 before Cascade Lake): 255 x 127 x 2 overflows, 255 x 63 x 2 does not;
#: measured on an AMD EPYC with AVX2 and no VNNI, demo model, 566 inputs: 88.9 % agreement (8-bit) vs 98.4 % (7-bit).
#: 8 bits where the products are exact (VNNI, AMX, ARM): measured on an AMD EPYC with AVX-512 VNNI, 566 demo inputs
#: 98.8 % (8-bit) vs 94.0 % (7-bit), 390 inputs of a 160 px PAD run 92.8 % vs 85.1 %. The default for callers
#: that name no width (the web page: its CPU is unknown) is 7, the same decisions on every CPU.
DEFAULT_WEIGHT_BITS = 7


def int8_options(weight_bits: int = DEFAULT_WEIGHT_BITS) -> dict[str, object]:
    """What the manifest records of an int8 graph made by :func:`quantize_int8` (``weight_bits`` is read back by
    the runtime, which warns when 8-bit weights meet an x86 CPU without VNNI)."""
    weights = (
        "int8 symmetric, 7-bit range (reduce_range: no u8s8 saturation on x86 without VNNI)"
        if weight_bits == 7
        else "int8 symmetric, 8 bits (exact on VNNI / AMX / ARM; saturates on x86 without VNNI)"
    )
    return dict(
        activations="uint8 asymmetric",
        weights=weights,
        weight_bits=weight_bits,
        calibration="MinMax",
        preprocessed=True,
    )


def quantize_int8(
    ctx: BuildContext, dst: Path, *, per_channel: bool = True, weight_bits: int = DEFAULT_WEIGHT_BITS
) -> None:
    """ONNX Runtime's int8 recipe (also the web page's): static Q/DQ, u8 activations, s8 weights in ``weight_bits``.
    A quant-aware run gets int8 where its epochs rounded (:data:`QUANT_AWARE_OPS`)."""
    placement = (
        {"op_types": list(QUANT_AWARE_OPS), "exclude_output_of": ["Gemm"]} if ctx.quant_aware is not None else {}
    )
    quantize_qdq(ctx, dst, per_channel=per_channel, symmetric=False, reduce_range=weight_bits == 7, **placement)


#: The op types a quant-aware run's onnxruntime graph asks to quantize: not ``Add`` (onnxruntime adds no Q/DQ pairs
#: of its own on a residual's inputs; the session still runs each Add as QLinearAdd between its int8 neighbours) and
#: no output of the classifier ``Gemm`` (its logits, the temperature ``Div`` and the softmax stay float, as in the
#: OpenVINO and TensorRT graphs; uint8 logits moved near-ties on their own). Measured on the 300 px ``all`` run
#: (390 inputs): 96.9 % agreement with onnxruntime's defaults, 97.2 % with the head float, 98.2 % with both.
QUANT_AWARE_OPS = ("Conv", "Gemm", "GlobalAveragePool", "Clip", "Relu", "MaxPool", "Flatten", "Reshape")


def build_int8(ctx: BuildContext) -> BuiltArtifact:
    bits = ctx.int8_weight_bits
    options = int8_options(bits) | quant_aware_options(ctx)
    if not ctx.options.int8_search:
        quantize_int8(ctx, ctx.output, weight_bits=bits)
        built = _built(ctx.output, scheme=INT8_SCHEME, **options)
        return built
    calib, answers = ctx.calibration.tensors(), ctx.calibration.clinical_tensors()
    reference = run_batched(torch_predict(ctx.model), calib, ctx.batch_size, answers).argmax(1)
    candidates = {}
    for name, per_channel in ((INT8_SCHEME, True), ("qdq-u8s8-per-tensor", False)):
        path = ctx.scratch / f"model.int8.{name}.onnx"
        quantize_int8(ctx, path, per_channel=per_channel, weight_bits=bits)
        predict = ort_predict(path)
        agreement = float((run_batched(predict, calib, ctx.batch_size, answers).argmax(1) == reference).mean())
        candidates[name] = (path, _latency_ms(predict, ctx.input_size), agreement)
    passing = {k: v for k, v in candidates.items() if v[2] >= MIN_CALIB_AGREEMENT} or candidates
    choice = min(passing, key=lambda k: (passing[k][1], -passing[k][2]))
    shutil.copyfile(candidates[choice][0], ctx.output)
    built = _built(
        ctx.output,
        scheme=choice,
        **options,
        candidates={
            k: {"latency_ms_b1": round(v[1], 3), "calibration_agreement": round(v[2], 4)} for k, v in candidates.items()
        },
    )
    return built


def quant_aware_options(ctx: BuildContext) -> dict[str, object]:
    """What the manifest adds for a quant-aware run: its grid and the layers kept in float."""
    if ctx.quant_aware is None:
        return {}
    grid = ctx.weight_grid
    return {
        "weight_grid": f"the run's quant-aware grid (levels -{grid}..{grid}): exact",
        "float_layers": ctx.float_layers,
        "int8_ops": list(QUANT_AWARE_OPS),
    }


def build_ort(ctx: BuildContext) -> BuiltArtifact:
    """The ORT format (onnxruntime-android / -objc, minimal builds) of the fp32 graph, for arm phones.

    Style Fixed, level all, ``target_platform="arm"``: the graph optimizations are baked in (Conv + activation:
    ``FusedConv``) except the NCHWc layout, which the converter adds only for ``amd64`` (``com.microsoft.nchwc``
    ops, blocked for the converting CPU: 8 channels with AVX2, 16 with AVX-512). On an x86 CPU onnxruntime lays
    ``model.onnx`` out in NCHWc when it loads it, but does not re-run its optimizers on an ORT-format file, so
    here the ``.ort`` runs like ``model.onnx`` with the ``NchwcTransformer`` disabled (Lite0, 2 threads: 2-4x
    slower, all of it in the convolutions). Measured no faster: style Runtime (a basic-level graph plus saved
    optimizations for NNAPI / Core ML, replayed with ``session.enable_saved_runtime_optimizations``) and the
    extended or basic levels. Only an ``amd64`` file is as fast here, and that is an x86 file, not a phone one.
    The gap is this CPU's layout: it says nothing about the ``.ort`` on a phone.
    """
    import os

    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    work = ctx.scratch / "ort-mobile"
    work.mkdir(exist_ok=True)
    shutil.copyfile(shared_fp32(ctx), work / "model.onnx")
    # The converter reads its level from this variable only ("all" when unset); record what it used.
    level = os.environ.get("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", "all")
    convert_onnx_models_to_ort(
        work / "model.onnx", output_dir=work, optimization_styles=[OptimizationStyle.Fixed], target_platform="arm"
    )
    produced = sorted(work.glob("*.ort"))
    if not produced:
        raise ExportError("onnxruntime's ORT-format converter wrote no .ort file")
    shutil.move(str(produced[0]), ctx.output)
    return _built(
        ctx.output,
        fmt="ort",
        optimization="fixed",
        optimization_level=level,
        target_platform="arm",
        layout="NCHW: no NCHWc (amd64 files only); on x86 slower than model.onnx, laid out NCHWc at load",
    )


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


TARGET = register(
    Target(
        name="onnx",
        title="ONNX Runtime",
        aliases=("ort", "onnxruntime"),
        variants=(
            Variant("fp32", "model.onnx", build_fp32),
            Variant("fp16", "model.fp16.onnx", build_fp16),
            Variant("int8", "model.int8.onnx", build_int8, calibrated=True),
            Variant("fp32", "model.ort", build_ort, record_target="onnx-mobile"),
        ),
        requires=(("onnx", "onnx", "ONNX export"), ("onnxruntime", "onnx", "ONNX validation")),
        validation="native: facederm.runtime's onnxruntime session, CPU",
        metadata="ONNX metadata_props (facederm.card, labels, preprocessing); .ort keeps them",
    )
)
