"""Quantization-aware epochs (``--quant-aware-epochs``): the run's weights sit on the int8 grid, and the int8 graphs
of its export hold exactly those weights (what makes int8 reproduce the model instead of approximating it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facederm.training import TrainConfig, load_run, train
from facederm.training.quant_aware import FLOAT_LAYERS, WEIGHT_LEVELS, grid_weights, on_grid, quantizable_layers

ARCH, SIZE = "mobilenetv3_small_050", 64


def test_grid_weights_round_each_channel_to_its_own_levels():
    weight = torch.tensor([[0.5, -0.25, 0.1], [0.02, 0.013, -0.001]])
    grid = grid_weights(weight)
    steps = grid / (weight.abs().amax(1, keepdim=True) / WEIGHT_LEVELS)
    assert torch.allclose(steps, steps.round(), atol=1e-4)  # integer levels, per channel
    assert steps.abs().amax(1).tolist() == [WEIGHT_LEVELS, WEIGHT_LEVELS]  # each channel's largest weight: +-64
    assert torch.equal(grid_weights(grid), grid)  # idempotent: a snapped weight stays
    assert on_grid(grid) and not on_grid(weight)


@pytest.fixture(scope="module")
def quant_aware_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("qa") / "run"
    config = TrainConfig(
        data="synthetic:150,size=64,seed=5", out=out, arch=ARCH, img_size=SIZE, epochs=1, quant_aware_epochs=1
    )
    return train(config).run_dir


def test_quant_aware_run_saves_grid_weights_and_says_so(quant_aware_run: Path):
    model, card = load_run(quant_aware_run)
    layers = quantizable_layers(model, (torch.zeros(1, 3, SIZE, SIZE),))
    assert layers and all(on_grid(layer.weight) for _, layer in layers)
    record = card.data["training"]["quant_aware"]
    assert record["epochs"] == 1 and record["weight_levels"] == WEIGHT_LEVELS
    assert record["float_layers"] == [name for name, _ in layers[:FLOAT_LAYERS]]
    assert record["float_layers"][0] == "backbone.conv_stem"
    metrics = json.loads((quant_aware_run / "metrics.json").read_text())
    assert metrics["test"]["n_images"] > 0  # evaluated after the snap (the saved weights are the scored ones)


def test_quant_aware_option_is_validated():
    from facederm.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="--quant-aware-epochs"):
        TrainConfig(data="synthetic:50", out="x", quant_aware_epochs=-1)


def _conv_weights(path: Path) -> list[tuple[np.ndarray, bool]]:
    """Each Conv / Gemm weight of an ONNX graph in node order, dequantized, and whether it was int8."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    weights = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        name = node.input[1]
        dq = producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear":
            q, scale = inits[dq.input[0]].astype(np.float64), inits[dq.input[1]].astype(np.float64)
            zero = inits[dq.input[2]].astype(np.float64) if len(dq.input) > 2 else 0.0
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            shape[axis] = -1
            scale = scale.reshape(shape) if np.ndim(scale) else scale
            zero = zero.reshape(shape) if np.ndim(zero) else zero
            weights.append(((q - zero) * scale, True))
        else:
            weights.append((inits[name].astype(np.float64), False))
    return weights


def export_int8(run_dir: Path, out: Path) -> None:
    """Every int8 of ``run_dir``: ONNX Runtime, TensorRT Q/DQ, OpenVINO, Core ML int8-weights and the web page's
    (in its own process: native int8 validation)."""
    from facederm.export import export_run

    export_run(
        run_dir,
        out_dir=out,
        targets=["onnx", "tensorrt", "openvino", "coreml", "web"],
        precisions=["fp32", "int8", "int8-weights"],
        max_drop=100.0,
        min_agreement=0,
    )


def openvino_weights(int8_xml: Path, fp32_xml: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(int8 weights dequantized, fp32 weights) of every layer of an NNCF IR stored in int8, by layer name."""
    import openvino as ov

    from facederm.export.targets.openvino import int8_weight

    core = ov.Core()
    reference = {op.get_friendly_name(): op for op in core.read_model(str(fp32_xml)).get_ordered_ops()}
    pairs = []
    for op in core.read_model(str(int8_xml)).get_ordered_ops():
        parts = int8_weight(op) if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul") else None
        if parts is not None:
            data, scale = parts
            fp32 = reference[op.get_friendly_name()].input_value(1).get_node().get_data()
            pairs.append((data.get_data().astype(np.float64) * scale.get_data(), fp32.astype(np.float64)))
    return pairs


def coreml_int8_weights(package: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(int8 levels, per-channel scale) of every int8 constant of a Core ML package (its MIL program, read on any OS)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil

    mlmodel = ct.models.MLModel(str(package), skip_model_load=True)
    spec = mlmodel.get_spec()
    program = load_mil(spec, specification_version=spec.specificationVersion, file_weights_dir=mlmodel.weights_dir)
    return [
        (op.quantized_data.val, op.scale.val)
        for op in program.functions["main"].operations
        if op.op_type == "constexpr_affine_dequantize" and op.quantized_data.val.dtype == np.int8
    ]


#: The classifier and what follows it (logits, temperature, softmax): float in a quant-aware run's onnx int8 graph.
HEAD_OPS = ("Gemm", "Div", "Softmax")


def _quantized_outputs(path: Path, op_types: tuple[str, ...]) -> list[str]:
    """The nodes of ``op_types`` whose output an ONNX graph feeds to a QuantizeLinear."""
    import onnx

    graph = onnx.load(str(path)).graph
    quantized = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    return [node.name for node in graph.node if node.op_type in op_types and node.output[0] in quantized]


def _max_weight_error(fp32: Path, int8: Path) -> tuple[float, list[bool]]:
    reference, quantized = _conv_weights(fp32), _conv_weights(int8)
    assert len(reference) == len(quantized)
    errors = [
        float(np.abs(q - r).max() / max(np.abs(r).max(), 1e-12))
        for (r, _), (q, was_int8) in zip(reference, quantized)
        if was_int8
    ]
    return max(errors), [was_int8 for _, was_int8 in quantized]


def test_int8_graphs_of_a_quant_aware_run_hold_its_weights_exactly(quant_aware_run, tmp_path, run_isolated):
    run_isolated(export_int8, quant_aware_run, tmp_path, what="ONNX Runtime / TensorRT Q/DQ int8 export")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    int8 = [r for r in manifest["artifacts"] if r["precision"] == "int8" and r["target"] in ("onnx", "web")]
    assert {r["target"] for r in int8 if r["status"] == "ok"} >= {"onnx"}  # web too where npm is installed
    for record in (r for r in int8 if r["status"] == "ok"):  # the page's graph is ONNX Runtime's recipe, recorded
        assert record["options"]["weight_bits"] == 7 and record["options"]["float_layers"] == FLOAT_LAYERS
        assert "Add" not in record["options"]["int8_ops"] and "Softmax" not in record["options"]["int8_ops"]
    for graph in ("model.int8.onnx", "web/model.int8.onnx"):
        if (tmp_path / graph).is_file():
            assert not _quantized_outputs(tmp_path / graph, HEAD_OPS), f"{graph}: the head after the classifier is int8"
    for graph in ("model.int8.onnx", "tensorrt/model.int8.qdq.onnx"):
        error, quantized = _max_weight_error(tmp_path / "model.onnx", tmp_path / graph)
        assert quantized[:FLOAT_LAYERS] == [False] * FLOAT_LAYERS, graph  # stem + first depthwise stay float
        assert sum(quantized) >= len(quantized) - FLOAT_LAYERS - 1, graph
        assert error < 1e-5, f"{graph}: int8 weights differ from the model's by {error:.2e} of a layer's largest"

    # OpenVINO: NNCF's IR, its int8 constants set to the grid (NNCF's own step is max|w| / 63.5)
    openvino = next(r for r in manifest["artifacts"] if r["target"] == "openvino" and r["precision"] == "int8")
    pairs = openvino_weights(tmp_path / "openvino/model.int8.xml", tmp_path / "openvino/model.xml")
    assert openvino["options"]["snapped_layers"] == len(pairs) >= len(quantized) - FLOAT_LAYERS - 1
    for int8, fp32 in pairs:
        assert np.abs(int8 - fp32).max() <= 1e-6 * np.abs(fp32).max(), "an OpenVINO int8 weight is off the run's grid"

    # Core ML int8-weights: every channel's largest weight is level +-64 (coremltools' own grid would give 127)
    constants = coreml_int8_weights(tmp_path / "model.int8.mlpackage")
    assert len(constants) >= len(quantized)
    for levels, _scale in constants:
        assert np.abs(levels.astype(int)).reshape(len(levels), -1).max(1).tolist() == [WEIGHT_LEVELS] * len(levels)


def test_an_ordinary_run_loses_weight_precision_to_int8(full_export):
    """The control: without quant-aware epochs, int8 rounds the weights (so the exactness above is not vacuous)."""
    out = full_export.out_dir
    error, quantized = _max_weight_error(out / "model.onnx", out / "model.int8.onnx")
    assert all(quantized[:FLOAT_LAYERS])  # an ordinary run's int8 quantizes its stem too
    assert error > 1e-3
    assert _quantized_outputs(out / "model.int8.onnx", HEAD_OPS), "an ordinary run's int8 graph quantizes its head"


def test_a_quant_aware_run_leaves_palettes_out_of_its_default_export(quant_aware_run, tmp_path):
    """Palettes cannot hold the run's int8 grid: the default Core ML set skips them and says why; named, one builds."""
    pytest.importorskip("coremltools")
    from facederm.export import export_run

    default = export_run(quant_aware_run, out_dir=tmp_path / "default", targets=["coreml"], precisions=None)
    records = {r.precision: r for r in default.records}
    assert records["palettize6"].status == "skipped" and "int8 grid" in records["palettize6"].error
    assert not (tmp_path / "default" / "model.palettize6.mlpackage").exists()
    assert records["int8-weights"].status == "ok"

    named = export_run(
        quant_aware_run, out_dir=tmp_path / "named", targets=["coreml"], precisions=["palettize6"], min_agreement=0
    )
    assert [(r.precision, r.status) for r in named.records] == [("palettize6", "ok")]
