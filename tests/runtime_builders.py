"""A tiny export dir with every artifact kind this machine can make, built once per test session.

A 3-class conv net (normalization and softmax baked in, 32x32 input) exported the way facederm export
does it: ONNX fp32 / fp16 / int8 QDQ, ORT format, OpenVINO IR fp32 / fp16, a TensorRT-target fp16
ONNX, plus stand-ins for a Core ML package and a TensorRT engine (which cannot run here) so their
errors can be tested. Every artifact carries the facederm metadata; manifest.json lists them all.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facederm.runtime.card import ModelCard, Preprocessing, Referral
from facederm.runtime.layout import ArtifactRecord, FileEntry, Manifest, Probe, file_digest
from facederm.runtime.metadata import INPUT_NAME, OPENVINO_RT_INFO_PATH, OUTPUT_NAME, card_to_metadata, tensorrt_sidecar
from facederm.runtime.probe import make_probe

LABELS = ("BCC", "SCC", "NEV")
CROP = 32
PROBE_SEED, PROBE_BATCH = 3, 2
PROBE_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.2}


def tiny_card(labels: tuple[str, ...] = LABELS) -> ModelCard:
    return ModelCard(
        arch="tiny-test-net",
        labels=labels,
        preprocessing=Preprocessing(crop=CROP, resize_shorter=36),
        referral=Referral(labels=tuple(x for x in ("BCC", "SCC") if x in labels), threshold=0.5),
        seed=0,
    )


@dataclass(frozen=True)
class RuntimeExport:
    """Where the built files are. ``root`` is the export dir; ``images`` are small PNG test images."""

    root: Path
    card: ModelCard
    images: tuple[Path, ...]
    static_onnx: Path  # batch fixed to 1, outside the export dir, no manifest
    foreign_onnx: Path  # same graph, other labels in its metadata

    def copy(self, dest: Path) -> Path:
        """A private copy of the export dir for tests that tamper with it."""
        shutil.copytree(self.root, dest)
        return dest


def _torch_model(seed: int = 0) -> Any:
    import torch

    torch.manual_seed(seed)

    class TinyNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
            self.head = torch.nn.Linear(8, len(LABELS))
            self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1) * 255)

        def forward(self, image: Any) -> Any:
            x = (image - self.mean) / self.std
            x = torch.relu(self.conv(x)).mean(dim=(2, 3))
            return torch.softmax(self.head(x) * 12.0, dim=-1)  # sharpened: clear labels, robust to int8

    return TinyNet().eval()


def _export_onnx(model: Any, path: Path, card: ModelCard, dynamic: bool = True) -> None:
    import torch

    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is the fast one (PITFALLS)
        torch.onnx.export(
            model,
            torch.zeros(1, 3, CROP, CROP),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            dynamo=False,
        )
    _set_onnx_metadata(path, card_to_metadata(card))


def _set_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _fp16_onnx(src: Path, dest: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(dest))


def _int8_onnx(src: Path, dest: Path, card: ModelCard) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            patterns = [_pattern(i % 6, CROP, CROP, seed=200 + i) for i in range(24)]  # like the test images
            self._batches = iter([{INPUT_NAME: p.transpose(2, 0, 1)[None].astype(np.float32)} for p in patterns])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    quantize_static(
        str(src),
        str(dest),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    _set_onnx_metadata(dest, card_to_metadata(card))  # the quantizer may not keep metadata_props


def _ort_format(src: Path, dest: Path) -> None:
    # What `python -m onnxruntime.tools.convert_onnx_models_to_ort` does, in-process (no subprocess start-up).
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dest)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def _openvino_ir(src: Path, dest: Path, card: ModelCard, fp16: bool) -> None:
    import openvino as ov

    model = ov.convert_model(str(src))
    model.set_rt_info(json.dumps(card.to_dict(), sort_keys=True), list(OPENVINO_RT_INFO_PATH))
    dest.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(dest), compress_to_fp16=fp16)


def _record(root: Path, target: str, precision: str, rel: str, fmt: str, extra: tuple[str, ...] = ()) -> ArtifactRecord:
    sha, size = file_digest(root / rel)
    files = tuple(FileEntry(p, *file_digest(root / p)) for p in extra)
    return ArtifactRecord(
        target=target,
        precision=precision,
        path=rel,
        status="ok",
        sha256=sha,
        bytes=size,
        format=fmt,
        files=files,
        validated="native" if fmt != "engine" else "none",
    )


def _probe(onnx_path: Path) -> Probe:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run([OUTPUT_NAME], {INPUT_NAME: make_probe(PROBE_SEED, PROBE_BATCH, CROP)})
    return Probe(
        seed=PROBE_SEED,
        batch=PROBE_BATCH,
        probabilities=tuple(map(tuple, probabilities.tolist())),
        tolerance=dict(PROBE_TOLERANCE),
    )


def _pattern(i: int, width: int, height: int, seed: int) -> np.ndarray:
    """uint8 HxWx3: a smooth texture with a dominant colour per ``i``, so predictions vary."""
    smooth = make_probe(seed, 1, max(width, height))[0].transpose(1, 2, 0)[:height, :width]
    tint = np.roll(np.array([1.0, 0.35, 0.35]), i)
    return np.clip(smooth * tint * (0.6 + 0.15 * i), 0, 255).astype(np.uint8)


def _images(folder: Path) -> tuple[Path, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    sizes = [(40, 40), (64, 48), (36, 50), (32, 32), (80, 60), (45, 45)]
    for i, (w, h) in enumerate(sizes):
        path = folder / f"img{i}.png"
        Image.fromarray(_pattern(i, w, h, seed=100 + i), "RGB").save(path)
        paths.append(path)
    return tuple(paths)


def build_runtime_export(base: Path) -> RuntimeExport:
    """Build the export dir under ``base`` (a few seconds, dominated by importing torch)."""
    card = tiny_card()
    root = base / "export"
    (root / "tensorrt").mkdir(parents=True)
    model = _torch_model()
    _export_onnx(model, root / "model.onnx", card)
    _fp16_onnx(root / "model.onnx", root / "model.fp16.onnx")
    _fp16_onnx(root / "model.onnx", root / "tensorrt" / "model.fp16.onnx")
    _int8_onnx(root / "model.onnx", root / "model.int8.onnx", card)
    _ort_format(root / "model.onnx", root / "model.ort")
    _openvino_ir(root / "model.onnx", root / "openvino" / "model.xml", card, fp16=False)
    _openvino_ir(root / "model.onnx", root / "openvino" / "model.fp16.xml", card, fp16=True)
    # Stand-ins for formats that cannot be produced or run here: their loads must fail clearly.
    (root / "model.mlpackage").mkdir()
    (root / "model.mlpackage" / "Manifest.json").write_text("{}")
    (root / "tensorrt" / "model.int8.engine").write_bytes(b"not a real engine")
    sidecar = tensorrt_sidecar(card, tensorrt_version="10.3.0", compute_capability="8.9", precision="int8", max_batch=8)
    (root / "tensorrt" / "model.int8.engine.json").write_text(json.dumps(sidecar))

    records = (
        _record(root, "onnx", "fp32", "model.onnx", "onnx"),
        _record(root, "onnx", "fp16", "model.fp16.onnx", "onnx"),
        _record(root, "onnx", "int8", "model.int8.onnx", "onnx"),
        _record(root, "ort", "fp32", "model.ort", "ort"),
        _record(root, "openvino", "fp32", "openvino/model.xml", "openvino", ("openvino/model.bin",)),
        _record(root, "openvino", "fp16", "openvino/model.fp16.xml", "openvino", ("openvino/model.fp16.bin",)),
        _record(root, "coreml", "fp16", "model.mlpackage", "mlpackage"),
        _record(root, "tensorrt", "fp16", "tensorrt/model.fp16.onnx", "onnx"),
        _record(root, "tensorrt", "int8", "tensorrt/model.int8.engine", "engine", ("tensorrt/model.int8.engine.json",)),
    )
    Manifest(card=card, artifacts=records, probe=_probe(root / "model.onnx"), facederm_version="test").save(
        root / "manifest.json"
    )

    static = base / "static" / "model.onnx"
    static.parent.mkdir()
    _export_onnx(model, static, card, dynamic=False)
    foreign = base / "foreign" / "model.onnx"
    foreign.parent.mkdir()
    _export_onnx(model, foreign, tiny_card(labels=("AK", "SK", "NEV")))
    return RuntimeExport(root, card, _images(base / "images"), static, foreign)


def rewrite_manifest(root: Path, **changes: Any) -> None:
    """Replace top-level manifest fields (e.g. ``probe=``) in an export dir copy."""
    manifest = Manifest.load(root / "manifest.json")
    replace(manifest, **changes).save(root / "manifest.json")
