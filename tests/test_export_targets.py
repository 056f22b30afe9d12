"""Every target and precision on a tiny model: files, metadata inside each file, manifest, parity figures."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from facederm.runtime.layout import Manifest, file_digest
from facederm.runtime.metadata import CARD_KEY, INPUT_NAME, LABELS_KEY, OUTPUT_NAME, PREPROCESSING_KEY

EXPECTED = {
    "onnx:fp32": "model.onnx",
    "onnx:fp16": "model.fp16.onnx",
    "onnx:int8": "model.int8.onnx",
    "onnx-mobile:fp32": "model.ort",
    "openvino:fp32": "openvino/model.xml",
    "openvino:fp16": "openvino/model.fp16.xml",
    "openvino:int8": "openvino/model.int8.xml",
    "coreml:fp16": "model.mlpackage",
    "coreml:int8-weights": "model.int8.mlpackage",
    "coreml:palettize6": "model.palettize6.mlpackage",
    "coreml:palettize4": "model.palettize4.mlpackage",
    "tensorrt:fp16": "tensorrt/model.fp16.onnx",
    "tensorrt:int8": "tensorrt/model.int8.qdq.onnx",
}


def test_every_artifact_is_ok_with_parity_and_a_matching_file(full_export):
    manifest = Manifest.load(full_export.manifest_path)  # round-trips through the strict schema
    records = {a.key: a for a in manifest.artifacts}
    for key, path in EXPECTED.items():
        record = records[key]
        assert record.status == "ok", (key, record.error)
        assert record.path == path
        assert file_digest(full_export.out_dir / path) == (record.sha256, record.bytes)
        for extra in record.files:
            assert file_digest(full_export.out_dir / extra.path) == (extra.sha256, extra.bytes)
        assert record.parity is not None and record.parity.n_images > 0
        assert 0.0 <= record.parity.agreement <= 1.0 and len(record.parity.macro_recall_delta_ci) == 2
        assert record.validated in ("native", "twin") and record.validated_reason
        assert record.converter_versions.get("torch")
    assert records["openvino:fp32"].files[0].path == "openvino/model.bin"
    assert {records[k].validated for k in EXPECTED if k.startswith("coreml")} == {"twin"}
    assert {records[k].validated for k in EXPECTED if k.startswith("tensorrt")} == {"twin"}
    # Twins compute: an fp16 / palettized network is never bit-identical to fp32.
    assert records["coreml:palettize4"].parity.max_abs_prob_delta > 0
    assert records["tensorrt:int8"].parity.max_abs_prob_delta > 0
    assert not list(full_export.out_dir.glob(".facederm-tmp-*")), "staging folders must be gone"


def test_engines_are_skipped_with_the_reason_here(full_export):
    engines = [r for r in full_export.records if r.target == "tensorrt-engine"]
    assert {r.precision for r in engines} == {"fp16", "int8"}
    for record in engines:
        assert record.status == "skipped"
        assert "tensorrt" in record.error.lower() or "gpu" in record.error.lower()
        print(f"TensorRT engine {record.precision}: skipped: {record.error}")


def test_manifest_records_probe_calibration_and_options(full_export):
    manifest = full_export.manifest
    assert manifest.probe is not None and manifest.probe.batch == 2 and manifest.probe.seed == 0
    assert {"fp32", "fp16", "int8"} <= set(manifest.probe.tolerance)
    int8 = manifest.find("onnx", "int8")
    assert int8.calibration_ids and int8.options["scheme"] == "qdq-u8s8-per-channel"
    assert "candidates" not in int8.options  # one int8 graph unless --int8-search
    assert manifest.find("tensorrt", "int8").calibration_ids == int8.calibration_ids  # one calibration pass
    assert manifest.find("onnx", "fp32").calibration_ids == ()
    assert "test split" in manifest.find("onnx", "fp32").parity.eval_data  # the run's test split by default


def test_onnx_graphs_have_the_contract(full_export):
    import onnx
    import onnxruntime as ort

    out = full_export.out_dir
    for path in (
        "model.onnx",
        "model.fp16.onnx",
        "model.int8.onnx",
        "tensorrt/model.fp16.onnx",
        "tensorrt/model.int8.qdq.onnx",
    ):
        model = onnx.load(str(out / path))
        props = {p.key: p.value for p in model.metadata_props}
        assert {CARD_KEY, LABELS_KEY, PREPROCESSING_KEY} <= set(props)
        assert json.loads(props[LABELS_KEY]) == list(full_export.manifest.card.labels)
        (inp,), (outp,) = model.graph.input, model.graph.output
        assert (inp.name, outp.name) == (INPUT_NAME, OUTPUT_NAME)
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp16 graphs keep float32 I/O
        assert inp.type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    session = ort.InferenceSession(str(out / "model.ort"), providers=["CPUExecutionProvider"])
    size = full_export.manifest.card.input_size
    probs = session.run(None, {INPUT_NAME: np.full((3, 3, size, size), 128, np.float32)})[0]
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_tensorrt_qdq_is_symmetric_int8_with_per_channel_weights(full_export):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(full_export.out_dir / "tensorrt/model.int8.qdq.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qs
    for node in qs:
        if len(node.input) > 2 and node.input[2] in inits:
            zero_point = inits[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    per_channel = [
        n
        for n in qs
        if any(a.name == "axis" for a in n.attribute)
        and inits.get(n.input[1]) is not None
        and inits[n.input[1]].size > 1
    ]
    assert per_channel, "weights must be quantized per output channel"
    # Q/DQ only on the inputs of Conv / Gemm / MatMul: a Q/DQ between a Conv and its ReLU6 quantized the
    # pre-activation range symmetrically (the cause of 51-58% agreement with fp32 on Lite0).
    # (a Q/DQ'd Conv input may also feed a residual Add; it must never feed only an activation).
    consumers: dict[str, set[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, set()).add(n.op_type)
    for node in qs:
        if node.op_type == "DequantizeLinear":
            fed = consumers.get(node.output[0], set())
            assert fed & {"Conv", "Gemm", "MatMul"}, (node.name, fed)


def test_openvino_rt_info_carries_the_card(full_export):
    import openvino as ov

    model = ov.Core().read_model(str(full_export.out_dir / "openvino/model.int8.xml"))
    card = json.loads(model.get_rt_info(["facederm", "card"]).astype(str))
    assert tuple(card["labels"]) == full_export.manifest.card.labels


def test_coreml_package_is_an_image_classifier_with_metadata(full_export):
    ct = pytest.importorskip("coremltools")
    spec = ct.utils.load_spec(str(full_export.out_dir / "model.palettize6.mlpackage"))
    (image,) = spec.description.input
    assert image.name == INPUT_NAME and image.type.WhichOneof("Type") == "imageType"
    assert spec.description.predictedProbabilitiesName == OUTPUT_NAME
    meta = spec.description.metadata
    assert CARD_KEY in meta.userDefined and "not a diagnosis" in meta.shortDescription
    assert spec.WhichOneof("Type") == "mlProgram"
    sizes = {
        p: sum(f.stat().st_size for f in (full_export.out_dir / p).rglob("*") if f.is_file())
        for p in ("model.mlpackage", "model.palettize4.mlpackage")
    }
    assert sizes["model.palettize4.mlpackage"] < sizes["model.mlpackage"]


@pytest.mark.skipif(
    __import__("sys").platform != "darwin",
    reason="Core ML predicts only on macOS (MLModel.predict); Linux validates the twin",
)
def test_coreml_native_predict_matches_the_twin(full_export, tiny_run):  # pragma: no cover - macOS only
    from facederm.export.targets.coreml import _native

    record = full_export.manifest.find("coreml", "fp16")
    assert record.validated == "native"
    size = full_export.manifest.card.input_size
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, size, size)).round().astype(np.float32)
    from facederm.export.onnx_graph import ort_predict

    probs = _native(full_export.out_dir / record.path, full_export.manifest.card.labels)(x)
    twin = ort_predict(full_export.out_dir / "model.fp16.onnx")(x)  # the fp16 graph the Linux twin runs
    assert np.abs(probs - twin).max() < 2e-2


def validation_and_runtime_int8(out_dir):
    """Runs in its own process (int8 kernels are native code picked per CPU): the export's validation predictors
    and ``facederm.runtime.load`` on the int8 OpenVINO IR and the int8 ONNX graph, on the same batches."""
    import facederm.runtime as rt
    from facederm.export.onnx_graph import ort_predict
    from facederm.export.targets.openvino import RUNTIME_OPTIONS, _predict

    manifest = Manifest.load(out_dir / "manifest.json")
    batches = [rt.make_probe(11, n, manifest.card.input_size) for n in (5, 1)]
    out = {}
    for key, make_predict, options in (("openvino", _predict, RUNTIME_OPTIONS), ("onnx", ort_predict, {})):
        record = manifest.find(key, "int8")
        predict = make_predict(out_dir / record.path)
        shipped = rt.load(out_dir, target=key, precision="int8", **options)
        row = {
            "validation": [predict(x) for x in batches],
            "runtime": [shipped.run(x) for x in batches],
            "models": {"validation": predict.model.backend_name, "runtime": shipped.backend_name},
            "compute": {"validation": predict.model.compute_precision, "runtime": shipped.compute_precision},
        }
        if key == "openvino":  # what was compiled: one entry per batch size, input shape as OpenVINO reports it
            row["ir_static_batch"] = shipped._session.static_batch
            row["compiled"] = {
                name: {
                    batch: (
                        str(entry[0].inputs[0].get_partial_shape()),
                        entry[0].inputs[0].get_partial_shape().is_static,
                    )
                    for batch, entry in model._session._by_batch.items()
                }
                for name, model in (("validation", predict.model), ("runtime", shipped))
            }
        out[key] = row
    return out


def test_int8_validation_runs_the_artifact_as_the_runtime_does(full_export, run_isolated):
    # The gate must test what ships: same backend session, same static shapes, same precision hint.
    got = run_isolated(
        validation_and_runtime_int8,
        full_export.out_dir,
        what="OpenVINO / ONNX Runtime int8 inference (export validation vs facederm.runtime)",
    )
    size = full_export.manifest.card.input_size
    for key, backend in (("openvino", "openvino"), ("onnx", "onnxruntime")):
        row = got[key]
        assert row["models"] == {"validation": backend, "runtime": backend}
        for validation, runtime in zip(row["validation"], row["runtime"]):
            np.testing.assert_array_equal(validation, runtime)  # one code path: bit for bit
    ov = got["openvino"]
    assert ov["compute"] == {"validation": "fp32", "runtime": "fp32"}  # the f32 hint reached the device
    assert ov["ir_static_batch"] is None  # the IR keeps a dynamic batch ...
    for compiled in ov["compiled"].values():  # ... and each batch size is compiled static, as the runtime does
        assert set(compiled) == {5, 1}
        for batch, (shape, static) in compiled.items():
            assert static and shape == f"[{batch},3,{size},{size}]", (batch, shape)


def _ov_int8_weights(xml: str) -> list[np.ndarray]:
    import openvino as ov

    model = ov.Core().read_model(xml)
    return [
        op.get_data()
        for op in model.get_ops()
        if op.get_type_name() == "Constant"
        and op.get_element_type() == ov.Type.i8
        and op.get_output_shape(0)
        and len(op.get_output_shape(0)) == 4
    ]


def test_int8_weight_bits_8_keeps_every_bit_and_the_runtime_warns_where_it_saturates(
    tiny_run, full_export, tmp_path, run_isolated, monkeypatch
):
    """``--int8-weight-bits 8``: ONNX Runtime's and OpenVINO's int8 weights use the full s8 range (|w| > 64), the
    manifest says so, and loading such an artifact where the kernels saturate (x86 without VNNI) warns; a 7-bit
    artifact never warns."""
    import onnx
    from export_builders import export_int8_8bit
    from onnx import numpy_helper

    from facederm.export.options import ExportOptions
    from facederm.runtime import cpu, load
    from facederm.runtime.errors import ConfigError, Int8SaturationWarning

    out = tmp_path / "out"
    run_isolated(export_int8_8bit, tiny_run, out, what="export_run(tiny run, onnx + openvino int8, 8-bit weights)")
    manifest = Manifest.load(out / "manifest.json")
    for target in ("onnx", "openvino"):
        assert manifest.find(target, "int8").options["weight_bits"] == 8
    model = onnx.load(str(out / "model.int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    onnx_weights = [w for w in inits.values() if w.dtype == np.int8 and w.ndim == 4]
    assert max(int(np.abs(w.astype(int)).max()) for w in onnx_weights) > 64
    ov_weights = _ov_int8_weights(str(out / "openvino/model.int8.xml"))
    assert max(int(np.abs(w.astype(int)).max()) for w in ov_weights) > 64

    monkeypatch.setattr(cpu, "has_vnni", lambda *a, **k: False)
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    with pytest.warns(Int8SaturationWarning, match="without VNNI"):
        load(out, backend="onnxruntime", precision="int8")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Int8SaturationWarning)
        load(full_export.out_dir, target="web", precision="int8")  # the page's 7 bits: the same on every CPU
    with pytest.raises(ConfigError, match="--int8-weight-bits"):
        ExportOptions(int8_weight_bits=6)


def test_auto_weight_bits_follow_the_export_machine(monkeypatch):
    """``auto`` (the default) takes 8 bits where this machine's u8 x s8 products are exact, so the gate measures the
    arithmetic VNNI / AMX / ARM devices compute, and 7 elsewhere; an explicit choice is kept."""
    from facederm.export.options import ExportOptions
    from facederm.runtime import cpu

    monkeypatch.setattr(cpu, "exact_int8_products", lambda *a, **k: True)
    assert ExportOptions().weight_bits == 8 and ExportOptions(int8_weight_bits="7").weight_bits == 7
    monkeypatch.setattr(cpu, "exact_int8_products", lambda *a, **k: False)
    assert ExportOptions().weight_bits == 7 and ExportOptions(int8_weight_bits=8).weight_bits == 8


def test_int8_saturation_is_known_from_the_cpu_flags():
    from facederm.runtime.cpu import exact_int8_products, has_vnni, int8_saturates

    assert has_vnni(flags={"avx2", "avx512f"}) is False
    assert has_vnni(flags={"avx2", "avx512f", "avx512_vnni"}) is True
    assert has_vnni(flags={"avx2", "amx_int8"}) is True
    assert has_vnni(flags=set(), features={}) is None  # cannot tell: no warning then
    assert int8_saturates("aarch64") is False and exact_int8_products("aarch64") is True  # ARM: exact


def test_int8_weights_use_the_bits_the_manifest_records(full_export):
    """ONNX Runtime's and OpenVINO's u8 x s8 kernels saturate 16-bit pair sums on x86 CPUs without VNNI when
    weights use all 8 bits (255 x 127 x 2 > 32767). Each int8 artifact records its ``weight_bits`` (the default
    ``auto``: 8 where this machine's products are exact, else 7) and its weights use exactly that range: |w| <= 64
    for 7 bits, up to 127 for 8 (per-channel symmetric: each channel's largest weight is +-127). The web page
    always keeps 7 bits; TensorRT's Q/DQ graph always 8 (a GPU does not saturate)."""
    import onnx
    from onnx import numpy_helper

    from facederm.runtime.cpu import exact_int8_products

    def conv_weights(path: str) -> list[np.ndarray]:
        model = onnx.load(str(full_export.out_dir / path))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return [
            inits[n.input[0]]
            for n in model.graph.node
            if n.op_type == "DequantizeLinear"
            and n.input[0] in inits
            and inits[n.input[0]].dtype == np.int8
            and inits[n.input[0]].ndim == 4
        ]

    def largest(weights: list[np.ndarray]) -> int:
        assert weights
        return max(int(np.abs(w.astype(int)).max()) for w in weights)

    expected = 8 if exact_int8_products() else 7
    for target in ("onnx", "openvino"):
        assert full_export.manifest.find(target, "int8").options["weight_bits"] == expected
    in_range = (lambda m: m <= 64) if expected == 7 else (lambda m: m > 64)
    assert in_range(largest(conv_weights("model.int8.onnx")))
    assert in_range(largest(_ov_int8_weights(str(full_export.out_dir / "openvino/model.int8.xml"))))
    assert "overflow_fix" in full_export.manifest.find("openvino", "int8").options
    assert largest(conv_weights("web/model.int8.onnx")) <= 64
    assert full_export.manifest.find("web", "int8").options["weight_bits"] == 7
    assert largest(conv_weights("tensorrt/model.int8.qdq.onnx")) > 64
