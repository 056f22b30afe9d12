"""Core ML: iOS 16 ML programs (``.mlpackage``) for apps using Vision + Core ML.

Input ``image`` is an RGB ``ImageType`` (scale 1, bias 0: normalization is inside the graph), so an app
hands over a ``CVPixelBuffer``; a model with clinical fields has a second input ``clinical``, a float32
``MLMultiArray`` of shape [1, F] (the answers encoded by the card's schema); a ``ClassifierConfig`` with the labels makes Vision return
``VNClassificationObservation``s by name, and the ``probabilities`` output is the label -> p dictionary.
Precisions: fp16 (``model.mlpackage``), int8 per-channel symmetric weights (``model.int8.mlpackage``), 6- and
4-bit k-means palettization (``model.palettize6/4.mlpackage``; depthwise kernels stay fp16). The minimum
deployment target is iOS16 for fp16 and int8 weights and iOS18 for palettized weights (``coreml_target="auto"``,
the default): iOS18 gives each group of 4 output channels its own lookup table, while iOS16's one table per
tensor cannot hold Lite0's weights (92 % agreement at 6 bits). ``--coreml-target iOS16|iOS18`` forces one target.
palettize4 is built only when asked (``--precision palettize4``).

Compression is applied in torch with ``coremltools.optimize.torch`` (data-free) and the compressed model is
converted, so the artifact and its twin share the very same weights. Core ML cannot predict on Linux;
the twin runs the same compressed network as an fp16 ONNX graph in onnxruntime (a real fp16 computation;
torch's own fp16 kernels are ~8x slower than fp32 on this CPU). On macOS, ``MLModel.predict`` is used.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from facederm.runtime.card import NOT_A_DIAGNOSIS
from facederm.runtime.clinical import ClinicalSchema
from facederm.runtime.errors import ExportError
from facederm.runtime.metadata import CLINICAL_INPUT_NAME, INPUT_NAME, OUTPUT_NAME, card_to_metadata

from ..context import BuildContext, BuiltArtifact, Predict
from ..onnx_graph import example_inputs, export_fp32, ort_predict, versions
from ..registry import Target, Variant, quiet_converter, register
from ..surgery import static_same_padding
from .onnx import fp16_graph, shared_fp16

TWIN_REASON = (
    "Core ML predicts only on macOS; twin: the same compressed weights (coremltools.optimize.torch) run as an "
    "fp16 ONNX graph by onnxruntime CPU"
)
NATIVE_REASON = "Core ML MLModel.predict ran the mlpackage (macOS)"


#: Where ``coremltools.optimize.torch`` keeps a quantized weight's per-channel scale (the converter reads it and
#: stores ``round(weight / scale)`` as the int8 data of a ``constexpr`` dequantize op).
SCALE_BUFFER = "_COREML_/weight/quantization_scale"


def _int8(model: torch.nn.Module, ctx: BuildContext, target: str) -> torch.nn.Module:
    """Per-channel symmetric int8 weights (coremltools: levels -127..127 of ``max|w| / 127``); a quant-aware run's
    layers keep their own grid instead (:func:`onto_grid`)."""
    from coremltools.optimize.torch.quantization import PostTrainingQuantizer, PostTrainingQuantizerConfig

    config = PostTrainingQuantizerConfig.from_dict(
        {"global_config": {"weight_dtype": "int8", "granularity": "per_channel", "quantization_scheme": "symmetric"}}
    )
    compressed = PostTrainingQuantizer(model, config).compress()
    if ctx.weight_grid is not None:
        onto_grid(compressed, model, ctx.weight_grid)
    return compressed


def onto_grid(compressed: torch.nn.Module, original: torch.nn.Module, levels: int) -> int:
    """Give every quantized layer of ``compressed`` whose ``original`` weights lie on a quant-aware grid (levels
    ``-levels..levels`` of ``max|w| / levels`` per output channel) that grid: the original weights and the step
    as the scale, so the package stores the model's weights exactly (coremltools' own ``max|w| / 127`` step would
    round them again). Returns how many layers were set."""
    from facederm.training.quant_aware import grid_step, on_grid

    weights = {
        name: m.weight for name, m in original.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    }
    done = 0
    for name, module in compressed.named_modules():
        scale = module._buffers.get(SCALE_BUFFER)
        weight = weights.get(name)
        if scale is None or weight is None or not on_grid(weight, levels):
            continue
        step = grid_step(weight, levels)
        with torch.no_grad():
            module.weight.copy_(weight)
            scale.copy_(step.view(scale.shape))
        done += 1
    return done


#: Palettization granularity per deployment target: iOS16's constexpr_lut_to_dense has one lookup table per
#: tensor; iOS18 allows one per group of output channels (coremltools ``per_grouped_channel``).
PALETTE_GROUP_SIZE = 4


#: Why a quant-aware run's export leaves palettes out of its defaults. Measured on the 300 px PAD ``all`` run
#: (390 inputs): palettize6 95.9 % agreement, 96.7 % with per-channel scales, 96.7 % with coremltools' sensitivity-
#: weighted k-means (SKMPalettizer, calibration images); a table per channel passes (98.5 %) but is larger (6.3 MB)
#: than the int8-weights package (5.9 MB) that holds the grid exactly.
PALETTE_OFF_GRID = (
    "a quant-aware run's weights sit on a 129-level int8 grid that int8-weights stores exactly; a 64-entry palette "
    "per 4 channels rounds them again (name it with --precision to build it anyway)"
)


def _depthwise(model: torch.nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]


def _palettizer(bits: int) -> Callable[[torch.nn.Module, BuildContext, str], torch.nn.Module]:
    """k-means palettization of every conv / linear weight except depthwise kernels, which stay fp16: a 3x3
    kernel per channel shares one per-tensor table badly (Lite0: 87.6% -> 92.0% agreement at 6 bits) and
    they are 3% of Lite0's weights (about 0.2 MB more than palettized)."""

    def compress(model: torch.nn.Module, ctx: BuildContext, target: str) -> torch.nn.Module:
        from coremltools.optimize.torch.palettization import PostTrainingPalettizer, PostTrainingPalettizerConfig

        config: dict[str, object] = {"n_bits": bits, "granularity": "per_tensor"}
        if target != "iOS16":
            config.update(granularity="per_grouped_channel", group_size=PALETTE_GROUP_SIZE)
        full = {"global_config": config, "module_name_configs": {name: None for name in _depthwise(model)}}
        palettizer = PostTrainingPalettizer(model, PostTrainingPalettizerConfig.from_dict(full))
        return palettizer.compress(num_kmeans_workers=1)

    return compress


def _palette_note(bits: int) -> Callable[[str], str]:
    def note(target: str) -> str:
        table = "per tensor" if target == "iOS16" else f"per group of {PALETTE_GROUP_SIZE} output channels"
        return f"{bits}-bit k-means LUT {table}; depthwise kernels fp16"

    return note


def _metadata(mlmodel, ctx: BuildContext) -> None:
    card = ctx.card
    mlmodel.author = "facederm"
    mlmodel.license = str(card.data.get("license", "see facederm.card; the weights follow the training data's terms"))
    mlmodel.short_description = f"{card.arch} skin lesion classifier ({', '.join(card.labels)}). {NOT_A_DIAGNOSIS}"
    mlmodel.version = str(card.versions.get("facederm", ""))
    meta = mlmodel.user_defined_metadata
    for key, value in card_to_metadata(card).items():
        meta[key] = value
    meta["facederm.label_names"] = json.dumps({k: card.label_names.get(k, k) for k in card.labels})
    meta["facederm.note"] = NOT_A_DIAGNOSIS
    mlmodel.input_description[INPUT_NAME] = (
        f"RGB photo {card.input_size}x{card.input_size}: shorter side resized, center-cropped; no normalization"
    )
    if card.clinical is not None:
        mlmodel.input_description[CLINICAL_INPUT_NAME] = (
            f"clinical answers encoded by the card's schema (facederm.card: clinical), float32 [1, {card.clinical.width}]:"
            f" {', '.join(card.clinical.names)}; each field's value columns then its missing flag"
        )
    mlmodel.output_description[OUTPUT_NAME] = "probability per label (softmax); " + NOT_A_DIAGNOSIS


def _convert(model: torch.nn.Module, ctx: BuildContext, target: str):
    import coremltools as ct

    examples, _names = example_inputs(ctx.card)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), examples, check_trace=False)
    inputs = [
        ct.ImageType(
            name=INPUT_NAME,
            shape=tuple(examples[0].shape),
            scale=1.0,
            bias=[0.0, 0.0, 0.0],
            color_layout=ct.colorlayout.RGB,
        )
    ]
    if ctx.card.clinical is not None:  # the answers beside the image: an MLMultiArray float32 [1, F]
        inputs.append(ct.TensorType(name=CLINICAL_INPUT_NAME, shape=tuple(examples[1].shape), dtype=np.float32))
    mlmodel = ct.convert(
        traced,
        inputs=inputs,
        outputs=[ct.TensorType(name=OUTPUT_NAME)],
        classifier_config=ct.ClassifierConfig(
            list(ctx.card.labels), predicted_feature_name="label", predicted_probabilities_output=OUTPUT_NAME
        ),
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, target),
        skip_model_load=not native_available(),  # Linux cannot load it; the twin checks the numbers
        compute_precision=ct.precision.FLOAT16,
    )
    # The classifier names its probability dictionary "<label>_probs"; the contract says "probabilities".
    spec = mlmodel.get_spec()
    current = spec.description.predictedProbabilitiesName
    if current and current != OUTPUT_NAME:
        ct.utils.rename_feature(spec, current, OUTPUT_NAME)
        mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=not native_available())
    return mlmodel


def _twin(model: torch.nn.Module, ctx: BuildContext, name: str) -> Predict:
    """The compressed network as an fp16 ONNX graph (fp16 compute, float32 I/O) run by onnxruntime."""
    if name == "fp16":  # nothing compressed: exactly the export's shared fp16 graph
        return ort_predict(shared_fp16(ctx))
    fp32 = ctx.scratch / f"coreml-twin-{name}.onnx"
    export_fp32(model, ctx.card, fp32, slim=False)
    fp16 = fp32.with_suffix(".fp16.onnx")
    fp16_graph(fp32, fp16, ctx)
    return ort_predict(fp16)


def _native(path: Path, labels: tuple[str, ...], schema: ClinicalSchema | None = None) -> Predict:
    import coremltools as ct
    from PIL import Image

    mlmodel = ct.models.MLModel(str(path))

    def predict(batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        rows = []
        if schema is not None and clinical is None:
            clinical = schema.missing_batch(len(batch))
        for i, chw in enumerate(batch):
            image = Image.fromarray(np.clip(chw.transpose(1, 2, 0), 0, 255).round().astype(np.uint8), "RGB")
            feed = {INPUT_NAME: image}
            if clinical is not None:
                feed[CLINICAL_INPUT_NAME] = np.ascontiguousarray(clinical[i : i + 1], dtype=np.float32)
            probs = mlmodel.predict(feed)[OUTPUT_NAME]
            rows.append([float(probs[label]) for label in labels])
        return np.asarray(rows, dtype=np.float32)

    return predict


def native_available() -> bool:
    """Core ML's predict exists only on macOS."""
    return sys.platform == "darwin"


def deployment_target(requested: str, precision: str) -> str:
    """The minimum iOS of one package: ``auto`` gives palettized weights iOS18 (grouped lookup tables), others iOS16."""
    if requested != "auto":
        return requested
    return "iOS18" if precision.startswith("palettize") else "iOS16"


def _builder(
    precision: str,
    compress: Callable[[torch.nn.Module, BuildContext, str], torch.nn.Module] | None,
    weights: str | Callable[[str], str] | None = None,
):
    def build(ctx: BuildContext) -> BuiltArtifact:
        target = deployment_target(ctx.options.coreml_target, precision)
        with quiet_converter():
            model, replaced = static_same_padding(ctx.model, ctx.input_size)
            if compress is not None:
                model = compress(model, ctx, target)
            try:
                mlmodel = _convert(model, ctx, target)
            except Exception as exc:
                raise ExportError(f"coremltools could not convert the model: {type(exc).__name__}: {exc}") from exc
            _metadata(mlmodel, ctx)
            mlmodel.save(str(ctx.output))
            if native_available():
                predict, validated, reason = (
                    _native(ctx.output, ctx.card.labels, ctx.card.clinical),
                    "native",
                    NATIVE_REASON,
                )
            else:
                predict, validated, reason = _twin(model, ctx, precision), "twin", TWIN_REASON
        options = {
            "minimum_deployment_target": target,
            "compute_precision": "fp16",
            "input": "ImageType RGB" + (" + MultiArray clinical [1, F] float32" if ctx.card.clinical else ""),
            "conv2d_same_replaced": replaced,
        }
        if weights is not None:
            options["weights"] = weights(target) if callable(weights) else weights
        return BuiltArtifact(
            format="mlpackage",
            predict=predict,
            validated=validated,
            validated_reason=reason,
            converter_versions=versions("coremltools", "onnxruntime"),
            options=options,
        )

    return build


TARGET = register(
    Target(
        name="coreml",
        title="Core ML",
        aliases=("ios", "mlpackage", "coremltools"),
        variants=(
            Variant("fp16", "model.mlpackage", _builder("fp16", None)),
            Variant(
                "int8-weights", "model.int8.mlpackage", _builder("int8", _int8, "int8 linear symmetric per-channel")
            ),
            Variant(
                "palettize6",
                "model.palettize6.mlpackage",
                _builder("palettize6", _palettizer(6), _palette_note(6)),
                off_grid=PALETTE_OFF_GRID,
            ),
            # Opt-in (--precision palettize4): 16 values per group of 4 channels cannot hold Lite0's weights (77 %
            # agreement with fp32 on a PAD run, grouped tables, iOS18); it is offered for models that can.
            Variant(
                "palettize4",
                "model.palettize4.mlpackage",
                _builder("palettize4", _palettizer(4), _palette_note(4)),
                default=False,
                off_grid=PALETTE_OFF_GRID,
            ),
        ),
        requires=(("coremltools", "coreml", "Core ML export"), ("onnxruntime", "onnx", "the Core ML twin check")),
        validation="native on macOS; elsewhere a twin: the same compressed weights as an fp16 ONNX graph, onnxruntime",
        metadata="ClassifierConfig (labels) + user_defined_metadata (card, preprocessing)",
    )
)
