"""Core ML: iOS 16 ML programs (``.mlpackage``) for apps using Vision + Core ML.

Input ``image`` is an RGB ``ImageType`` (scale 1, bias 0: normalization is inside the graph), so an app
hands over a ``CVPixelBuffer``; a ``ClassifierConfig`` with the labels makes Vision return
``VNClassificationObservation``s by name, and the ``probabilities`` output is the label -> p dictionary.
Precisions: fp16 (``model.mlpackage``), int8 per-channel symmetric weights (``model.int8.mlpackage``), 6- and
4-bit k-means palettization (``model.palettize6/4.mlpackage``).

Compression is applied in torch with ``coremltools.optimize.torch`` (data-free) and the compressed model is
converted, so the artifact and its twin share the very same weights. Core ML cannot predict on Linux;
the twin runs the same compressed network as an fp16 ONNX graph in onnxruntime (a real fp16 computation;
torch's own fp16 kernels are ~8x slower than fp32 on this CPU). On macOS, ``MLModel.predict`` is used.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from facederm.runtime.card import NOT_A_DIAGNOSIS
from facederm.runtime.errors import ExportError
from facederm.runtime.metadata import INPUT_NAME, OUTPUT_NAME, card_to_metadata

from ..context import BuildContext, BuiltArtifact, Predict
from ..onnx_graph import export_fp32, ort_predict, versions
from ..registry import Target, Variant, register
from ..surgery import static_same_padding
from .onnx import fp16_graph

TWIN_REASON = (
    "Core ML predicts only on macOS; twin: the same compressed weights (coremltools.optimize.torch) run as an "
    "fp16 ONNX graph by onnxruntime CPU"
)
NATIVE_REASON = "Core ML MLModel.predict ran the mlpackage (macOS)"


@contextlib.contextmanager
def _quiet():
    """coremltools prints version warnings, progress bars and k-means logs; the export shows its own progress."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # k-means logs at INFO through its own handler
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _int8(model: torch.nn.Module) -> torch.nn.Module:
    from coremltools.optimize.torch.quantization import PostTrainingQuantizer, PostTrainingQuantizerConfig

    config = PostTrainingQuantizerConfig.from_dict(
        {"global_config": {"weight_dtype": "int8", "granularity": "per_channel", "quantization_scheme": "symmetric"}})
    return PostTrainingQuantizer(model, config).compress()


def _palettizer(bits: int) -> Callable[[torch.nn.Module], torch.nn.Module]:
    def compress(model: torch.nn.Module) -> torch.nn.Module:
        from coremltools.optimize.torch.palettization import PostTrainingPalettizer, PostTrainingPalettizerConfig

        config = PostTrainingPalettizerConfig.from_dict({"global_config": {"n_bits": bits, "granularity": "per_tensor"}})
        return PostTrainingPalettizer(model, config).compress(num_kmeans_workers=1)

    return compress


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
    mlmodel.output_description[OUTPUT_NAME] = "probability per label (softmax); " + NOT_A_DIAGNOSIS


def _convert(model: torch.nn.Module, ctx: BuildContext):
    import coremltools as ct

    size = ctx.input_size
    example = torch.zeros(1, 3, size, size)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
    mlmodel = ct.convert(
        traced,
        inputs=[ct.ImageType(name=INPUT_NAME, shape=tuple(example.shape), scale=1.0, bias=[0.0, 0.0, 0.0],
                             color_layout=ct.colorlayout.RGB)],
        outputs=[ct.TensorType(name=OUTPUT_NAME)],
        classifier_config=ct.ClassifierConfig(list(ctx.card.labels), predicted_feature_name="label",
                                              predicted_probabilities_output=OUTPUT_NAME),
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS16,
        compute_precision=ct.precision.FLOAT16,
    )
    # The classifier names its probability dictionary "<label>_probs"; the contract says "probabilities".
    spec = mlmodel.get_spec()
    current = spec.description.predictedProbabilitiesName
    if current and current != OUTPUT_NAME:
        ct.utils.rename_feature(spec, current, OUTPUT_NAME)
        mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir)
    return mlmodel


def _twin(model: torch.nn.Module, ctx: BuildContext, name: str) -> Predict:
    fp32 = ctx.scratch / f"coreml-twin-{name}.onnx"
    export_fp32(model, ctx.card, fp32)
    fp16 = fp32.with_suffix(".fp16.onnx")
    fp16_graph(fp32, fp16, ctx)
    return ort_predict(fp16)


def _native(path: Path, labels: tuple[str, ...]) -> Predict:
    import coremltools as ct
    from PIL import Image

    mlmodel = ct.models.MLModel(str(path))

    def predict(batch: np.ndarray) -> np.ndarray:
        rows = []
        for chw in batch:
            image = Image.fromarray(np.clip(chw.transpose(1, 2, 0), 0, 255).round().astype(np.uint8), "RGB")
            probs = mlmodel.predict({INPUT_NAME: image})[OUTPUT_NAME]
            rows.append([float(probs[label]) for label in labels])
        return np.asarray(rows, dtype=np.float32)

    return predict


def native_available() -> bool:
    """Core ML's predict exists only on macOS."""
    return sys.platform == "darwin"


def _builder(precision: str, compress: Callable[[torch.nn.Module], torch.nn.Module] | None, **options):
    def build(ctx: BuildContext) -> BuiltArtifact:
        with _quiet():
            model, replaced = static_same_padding(ctx.model, ctx.input_size)
            if compress is not None:
                model = compress(model)
            try:
                mlmodel = _convert(model, ctx)
            except Exception as exc:  # noqa: BLE001  (coremltools raises many untyped errors)
                raise ExportError(f"coremltools could not convert the model: {type(exc).__name__}: {exc}") from exc
            _metadata(mlmodel, ctx)
            mlmodel.save(str(ctx.output))
            if native_available():
                predict, validated, reason = _native(ctx.output, ctx.card.labels), "native", NATIVE_REASON
            else:
                predict, validated, reason = _twin(model, ctx, precision), "twin", TWIN_REASON
        return BuiltArtifact(
            format="mlpackage", predict=predict, validated=validated, validated_reason=reason,
            converter_versions=versions("coremltools", "onnxruntime"),
            options={"minimum_deployment_target": "iOS16", "compute_precision": "fp16", "input": "ImageType RGB",
                     "conv2d_same_replaced": replaced, **options})

    return build


TARGET = register(Target(
    name="coreml",
    title="Core ML",
    aliases=("ios", "mlpackage", "coremltools"),
    variants=(
        Variant("fp16", "model.mlpackage", _builder("fp16", None)),
        Variant("int8-weights", "model.int8.mlpackage",
                _builder("int8", _int8, weights="int8 linear symmetric per-channel")),
        Variant("palettize6", "model.palettize6.mlpackage",
                _builder("palettize6", _palettizer(6), weights="6-bit k-means LUT per tensor")),
        Variant("palettize4", "model.palettize4.mlpackage",
                _builder("palettize4", _palettizer(4), weights="4-bit k-means LUT per tensor")),
    ),
    requires=(("coremltools", "coreml", "Core ML export"), ("onnxruntime", "onnx", "the Core ML twin check")),
))
