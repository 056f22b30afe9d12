"""OpenVINO IR: fp32 ``openvino/model.xml``, fp16-compressed weights ``openvino/model.fp16.xml`` and NNCF
post-training int8 ``openvino/model.int8.xml`` (each with its ``.bin``), converted from the fp32 ONNX graph.

The card sits in ``rt_info`` at ``runtime.metadata.OPENVINO_RT_INFO_PATH``. Validation compiles each IR on
the CPU with ``INFERENCE_PRECISION_HINT=f32``: this CPU would otherwise run bf16 (AMX) and the figures
would mix the artifact's error with the device's. int8 uses NNCF's MIXED preset on all calibration images; for a
quant-aware run (``--quant-aware-epochs``) the IR's int8 weights are then set to the run's grid (:func:`snap_weights`).
``--accuracy-control`` uses ``nncf.quantize_with_accuracy_control``: layers return to float until the argmax
agreement with the fp32 IR on the calibration images reaches 99 % (macro recall within ``--max-drop`` when
``--min-agreement`` is 0). It is tuned on calibration images only, never on the images the gate judges.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facederm.runtime.errors import ExportError
from facederm.runtime.metadata import CLINICAL_INPUT_NAME, INPUT_NAME, OPENVINO_RT_INFO_PATH
from facederm.runtime.schema import to_dict

from ..context import BuildContext, BuiltArtifact
from ..onnx_graph import shared_fp32, versions
from ..registry import Target, Variant, register

HINT = {"INFERENCE_PRECISION_HINT": "f32"}
#: ``--accuracy-control`` target: argmax agreement with the fp32 IR on the calibration images (never the gate's).
ACCURACY_CONTROL_AGREEMENT = 0.99
#: The same request through ``facederm.runtime.load`` (its OpenVINO session maps it onto ``HINT``).
RUNTIME_OPTIONS = {"precision_hint": "f32"}
REASON = (
    "facederm.runtime's OpenVINO session ran the IR on the CPU as deployed (one static input shape per "
    "batch size) with INFERENCE_PRECISION_HINT=f32 (this CPU defaults to bf16)"
)


def _fp32_model(ctx: BuildContext):
    import openvino as ov

    model = ov.convert_model(str(shared_fp32(ctx)))
    model.set_rt_info(json.dumps(ctx.card.to_dict(), sort_keys=True), list(OPENVINO_RT_INFO_PATH))
    model.set_rt_info(json.dumps(list(ctx.card.labels)), ["facederm", "labels"])
    model.set_rt_info(json.dumps(to_dict(ctx.card.preprocessing), sort_keys=True), ["facederm", "preprocessing"])
    return model


def _save(model, ctx: BuildContext, compress_to_fp16: bool) -> tuple[str, ...]:
    import openvino as ov

    ov.save_model(model, str(ctx.output), compress_to_fp16=compress_to_fp16)
    return (str(Path(ctx.path).with_suffix(".bin").as_posix()),)


def _predict(xml: Path):
    """Validation opens the IR as the runtime does: ``facederm.runtime.load`` on its OpenVINO backend, whose
    session compiles one static input shape per batch size (a dynamic batch is never compiled: PITFALLS, AMX
    segfault), with the f32 hint (:data:`RUNTIME_OPTIONS`) and the runtime's chunking. The runtime ``Model`` is
    kept as ``predict.model``."""
    from facederm.runtime import load
    from facederm.runtime.errors import FacedermError

    try:
        model = load(xml, backend="openvino", device="CPU", verify=False, **RUNTIME_OPTIONS)
    except FacedermError as exc:
        raise ExportError(f"{xml.name}: the runtime's OpenVINO backend cannot open it: {exc}") from exc

    def predict(batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        return model.run(np.ascontiguousarray(batch, dtype=np.float32), clinical)

    predict.model = model  # type: ignore[attr-defined]
    return predict


def _built(ctx: BuildContext, files: tuple[str, ...], **options) -> BuiltArtifact:
    return BuiltArtifact(
        format="openvino",
        predict=_predict(ctx.output),
        validated="native",
        validated_reason=REASON,
        files=files,
        converter_versions=versions("openvino", "nncf", "onnx"),
        options=options,
    )


def build_fp32(ctx: BuildContext) -> BuiltArtifact:
    return _built(ctx, _save(_fp32_model(ctx), ctx, compress_to_fp16=False), weights="fp32")


def build_fp16(ctx: BuildContext) -> BuiltArtifact:
    return _built(ctx, _save(_fp32_model(ctx), ctx, compress_to_fp16=True), weights="fp16 (compressed)")


def build_int8(ctx: BuildContext) -> BuiltArtifact:
    import nncf

    calib = ctx.calibration
    images = calib.tensors()
    answers = calib.clinical_tensors()  # a clinical model: NNCF calibrates both inputs, each image with its answers
    items = [(_inputs(images, answers, i), int(calib.y_true[i])) for i in range(len(images))]
    dataset = nncf.Dataset(items, lambda item: item[0])
    # MIXED: symmetric weights, asymmetric activations (Lite0's pre-ReLU6 and residual tensors are signed and
    # lopsided); measured on a Lite0 run: 97.3% agreement with fp32 vs 95.6% with PERFORMANCE (symmetric).
    common = dict(preset=nncf.QuantizationPreset.MIXED, model_type=None, subset_size=len(items))
    bits = ctx.int8_weight_bits  # resolved once: auto reads this machine's CPU flags
    grid = ctx.weight_grid
    options: dict[str, object] = {
        "algorithm": "nncf.quantize",
        "preset": "mixed",
        "subset_size": len(items),
        "overflow_fix": "enable (7-bit weights in every layer)"
        if bits == 7
        else "disable (8-bit weights: exact on VNNI / AMX / ARM)",
        "weight_bits": bits,
    }
    advanced = _overflow_fix(bits)
    fp32 = _fp32_model(ctx)
    floats = _leading_convs(fp32, ctx.float_layers)
    if floats:  # a quant-aware run keeps its first convolutions in float
        common["ignored_scope"] = nncf.IgnoredScope(names=floats)
        options["float_layers"] = floats
    if grid is not None:  # its weights are then set exactly; a bias corrected for NNCF's rounding would be wrong
        advanced.disable_bias_correction = True
    if ctx.options.accuracy_control:
        model, control = _accuracy_controlled(
            ctx, fp32, items, {**common, "advanced_quantization_parameters": advanced}
        )
        options.update(algorithm="nncf.quantize_with_accuracy_control", **control)
    else:
        model = nncf.quantize(fp32, dataset, **common, advanced_parameters=advanced)
    if grid is not None:
        snapped = snap_weights(model, fp32, grid)
        options.update(weight_grid=f"levels -{grid}..{grid} per output channel (the run's)", snapped_layers=snapped)
    files = _save(model, ctx, compress_to_fp16=False)
    return _built(ctx, files, **options)


#: How far from an integer level a weight of a grid layer may be (float32 rounding of BatchNorm folding).
GRID_TOLERANCE = 1e-3


def snap_weights(quantized, fp32, levels: int) -> int:
    """Put the int8 weights of ``quantized`` (NNCF's IR) onto the quant-aware run's grid, in place: for each
    Convolution / GroupConvolution / MatMul whose fp32 weights (same layer of ``fp32``) sit on levels ``-levels..
    levels`` of ``max|w| / levels`` per output channel, its int8 constant becomes those levels and its scale that
    step. NNCF's own weight step (its overflow fix: ``max|w| / 63.5``) is not the grid, so without this the IR would
    round the model's weights a second time. Layers off the grid (the stem, whose input normalization the ONNX graph
    folds per input channel) keep NNCF's weights. Returns how many layers were snapped."""
    from openvino import opset13

    reference = {op.get_friendly_name(): op for op in fp32.get_ordered_ops()}
    snapped = 0
    for op in quantized.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        parts = int8_weight(op)
        original = reference.get(op.get_friendly_name())
        if parts is None or original is None:
            continue
        source = original.input_value(1).get_node()
        if source.get_type_name() != "Constant":
            continue
        data, scale = parts
        weight = source.get_data().astype(np.float64)
        shape = scale.get_data().shape
        if weight.shape != data.get_data().shape or len(shape) != weight.ndim:
            continue
        axes = tuple(d for d in range(weight.ndim) if shape[d] == 1)
        step = np.abs(weight).max(axis=axes, keepdims=True) / levels
        step[step == 0] = 1.0
        steps = weight / step
        if np.abs(steps - np.round(steps)).max() > GRID_TOLERANCE:
            continue
        data.output(0).replace(opset13.constant(np.round(steps).astype(np.int8)).output(0))
        scale.output(0).replace(opset13.constant(step.astype(np.float32)).output(0))
        snapped += 1
    return snapped


def int8_weight(op):
    """(int8 Constant, scale Constant) of a layer whose weight input is NNCF's ``Constant(i8) -> Convert ->
    Multiply(scale)``, else None."""
    import openvino as ov

    multiply = op.input_value(1).get_node()
    if multiply.get_type_name() != "Multiply":
        return None
    convert, scale = (multiply.input_value(i).get_node() for i in range(2))
    if convert.get_type_name() != "Convert" or scale.get_type_name() != "Constant":
        return None
    data = convert.input_value(0).get_node()
    if data.get_type_name() != "Constant" or data.get_output_element_type(0) != ov.Type.i8:
        return None
    return data, scale


def _leading_convs(model, count: int) -> list[str]:
    """Friendly names of the first ``count`` convolutions of an OpenVINO model, in topological order."""
    if count <= 0:
        return []
    kinds = ("Convolution", "GroupConvolution")
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in kinds][:count]


def _inputs(images: np.ndarray, answers: np.ndarray | None, i: int):
    """Input ``i`` as the IR takes it: the image batch of one, or {name: array} for a two-input graph."""
    if answers is None:
        return images[i : i + 1]
    return {INPUT_NAME: images[i : i + 1], CLINICAL_INPUT_NAME: answers[i : i + 1]}


def _overflow_fix(weight_bits: int = 7):
    """NNCF's overflow fix in every layer (its default: the first only): 7-bit weights, so OpenVINO's u8s8 kernels
    do not saturate their 16-bit pair sums on CPUs without VNNI (AVX2; AVX-512 before Cascade Lake) and the IR
    decides alike on every CPU. Measured on an AMD EPYC with AVX2 and no VNNI, demo model, 566 inputs: 96.5 %
    agreement with fp32 (first layer only) vs 98.9 % (every layer), at the same latency. ``weight_bits`` 8
    (``--int8-weight-bits 8``) disables it: all 8 bits, for CPUs with exact products."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    fix = OverflowFix.ENABLE if weight_bits == 7 else OverflowFix.DISABLE
    return AdvancedQuantizationParameters(overflow_fix=fix)


def _accuracy_controlled(ctx: BuildContext, fp32, items: list, common: dict):
    """``nncf.quantize_with_accuracy_control``: layers go back to float, most sensitive first, until the metric on
    the calibration images is within the gate's limit. The metric is the gate's stricter test: argmax agreement
    with the fp32 IR (limit: ``--min-agreement``), or macro recall (limit: ``--max-drop``) when agreement is off."""
    import nncf
    import openvino as ov

    from facederm.training.metrics import macro_recall

    compiled = ov.Core().compile_model(fp32, "CPU", HINT)
    reference = [int(np.asarray(compiled(x)[0]).argmax()) for x, _ in items]
    data = [(x, y, ref) for (x, y), ref in zip(items, reference)]
    min_agreement = ctx.options.min_agreement

    def validate(model, subset) -> tuple[float, None]:
        rows = list(subset)
        probs = np.concatenate([np.asarray(model(x)[0]) for x, _, _ in rows])
        if min_agreement > 0:
            return float((probs.argmax(1) == np.asarray([r for _, _, r in rows])).mean()), None
        return float(macro_recall(np.asarray([y for _, y, _ in rows]), probs)), None

    if min_agreement > 0:
        # The gate reads a lower bound; what passes it with high probability is a point agreement of ~99 %.
        max_drop, metric = 1.0 - ACCURACY_CONTROL_AGREEMENT, "argmax agreement with fp32 on the calibration images"
    else:
        max_drop, metric = ctx.options.max_drop / 100.0, "macro recall on the calibration images"
    dataset = nncf.Dataset(data, lambda item: item[0])
    model = nncf.quantize_with_accuracy_control(
        fp32, dataset, dataset, validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **common
    )
    return model, {"max_drop": round(max_drop, 6), "validation": metric}


TARGET = register(
    Target(
        name="openvino",
        title="OpenVINO",
        aliases=("ov", "openvino-ir"),
        variants=(
            Variant("fp32", "openvino/model.xml", build_fp32),
            Variant("fp16", "openvino/model.fp16.xml", build_fp16),
            Variant("int8", "openvino/model.int8.xml", build_int8, calibrated=True),
        ),
        requires=(
            ("openvino", "openvino", "OpenVINO export"),
            ("nncf", "openvino", "OpenVINO int8 quantization"),
            ("onnx", "onnx", "the ONNX graph OpenVINO converts"),
        ),
        validation="native: facederm.runtime's OpenVINO session, CPU, static shapes, f32 hint",
        metadata="rt_info facederm/card, labels, preprocessing",
    )
)
