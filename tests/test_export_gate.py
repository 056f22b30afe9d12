"""The fidelity gate fails on purpose: an impossible threshold, and a corrupted artifact."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

from facederm.export import export_run, registry
from facederm.export.cli import main
from facederm.export.parity import GateRules, compute_parity, gate_verdict, parse_class_drops
from facederm.runtime.errors import ConfigError


def test_impossible_threshold_fails_the_artifact_and_the_cli(tiny_run, tmp_path):
    # --min-agreement 100 asks the one-sided 95% lower bound of agreement to reach 100%: on finitely many inputs even
    # a perfect copy's bound is below it (0.05 ** (1 / n)), so the faithful fp32 graph fails on any CPU.
    result = CliRunner().invoke(
        main,
        [
            str(tiny_run),
            "--target",
            "onnx",
            "--precision",
            "fp32",
            "--min-agreement",
            "100",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "fidelity gate" in result.output
    from facederm.runtime.layout import Manifest

    record = Manifest.load(tmp_path / "out" / "manifest.json").find("onnx", "fp32")
    assert record.status == "failed" and "fidelity gate" in record.error and record.parity is not None
    assert not (tmp_path / "out" / "model.onnx").exists(), "a failed artifact is not installed"
    # the summary says how decided fp32 is: the near-ties any artifact may flip
    margins = Manifest.load(tmp_path / "out" / "manifest.json").evaluation["fp32_margins"]
    assert margins["inputs"] == record.parity.n_pairs and set(margins["below"]) == {"0.05", "0.1"}
    assert "near-ties: fp32 top-1 margins" in result.output


def test_corrupted_artifact_is_caught_by_the_gate(tiny_run, tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    from facederm.export.onnx_graph import ort_predict
    from facederm.export.targets import onnx as onnx_target

    def corrupt(ctx):
        # A broken conversion that mixes up the labels: the class layer (the Gemm before the softmax) has its
        # rows and bias rolled by one class, so every top label moves to the next class. Agreement with fp32 is
        # then ~0 on any CPU (only an exact fp32 tie could survive), not near a threshold (it was once exactly 0.9).
        built = onnx_target.build_fp32(ctx)
        model = onnx.load(str(ctx.output))
        nodes = {out: n for n in model.graph.node for out in n.output}
        (softmax,) = [n for n in model.graph.node if n.op_type == "Softmax"]
        gemm = nodes[softmax.input[0]]
        assert gemm.op_type == "Gemm", gemm.op_type
        trans_b = next((a.i for a in gemm.attribute if a.name == "transB"), 0)
        inits = {i.name: i for i in model.graph.initializer}
        for name, axis in ((gemm.input[1], 0 if trans_b else 1), (gemm.input[2], 0)):
            array = numpy_helper.to_array(inits[name])
            inits[name].CopyFrom(numpy_helper.from_array(np.roll(array, 1, axis=axis).copy(), name))
        onnx.save(model, str(ctx.output))
        built.predict = ort_predict(ctx.output)  # validation reads the file on disk
        return built

    target = registry.get_target("onnx")
    broken = dataclasses.replace(target, variants=(registry.Variant("fp32", "model.onnx", corrupt),))
    monkeypatch.setitem(registry._TARGETS, "onnx", broken)
    result = export_run(tiny_run, out_dir=tmp_path / "out", targets=["onnx"])
    (record,) = result.records
    assert record.status == "failed" and "fidelity gate" in record.error, record
    assert record.parity.agreement <= 0.1, record.parity  # every label moved: far below any threshold
    assert record.parity.max_abs_prob_delta > 0.5  # (the tiny model's own test recall is low: no recall figure here)
    assert not result.ok


def test_class_threshold_names_the_class():
    from facederm.runtime.layout import Parity

    parity = Parity(
        agreement=0.9,
        max_abs_prob_delta=0.3,
        macro_recall=0.7,
        macro_recall_delta=-0.004,
        per_class_recall_delta={"BCC": -0.05, "NEV": 0.0},
    )
    assert gate_verdict(parity, GateRules(min_agreement=0.0, max_drop=1.0))[0] is None
    reason = gate_verdict(parity, GateRules(min_agreement=0.0, max_drop=1.0, max_class_drop={"BCC": 2.0}))[0]
    assert reason and "BCC recall dropped 5.00 points" in reason


def test_parity_figures_and_patient_bootstrap():
    rng = np.random.default_rng(0)
    reference = rng.dirichlet(np.ones(3), size=60)
    y = reference.argmax(1)
    flipped = reference.copy()
    flipped[:6] = flipped[:6, ::-1]
    parity = compute_parity(reference, flipped, y, [f"p{i // 2}" for i in range(60)], ["A", "B", "C"], n_boot=200)
    assert parity.agreement == pytest.approx(np.mean(flipped.argmax(1) == reference.argmax(1)))
    assert parity.macro_recall_delta < 0 and parity.n_patients == 30
    low, high = parity.macro_recall_delta_ci
    assert low <= parity.macro_recall_delta <= high


def test_class_drop_parsing():
    assert parse_class_drops(["BCC=2", "MEL=0.5"], ["BCC", "MEL"]) == {"BCC": 2.0, "MEL": 0.5}
    for bad in (["BCC"], ["BCC=x"], ["=2"], ["BCC=-1"]):
        with pytest.raises(ConfigError):
            parse_class_drops(bad, ["BCC"])
    with pytest.raises(ConfigError, match="unknown label"):
        parse_class_drops(["XYZ=1"], ["BCC"])
