"""Memory leak check: many predictions in a loop must not grow the process's resident memory.

    python -m facederm.runtime.reliability.leak                      # 2,000 predictions on a tiny built export
    python -m facederm.runtime.reliability.leak EXPORT_DIR --iterations 5000 --backend openvino
    python -m facederm.runtime.reliability.leak --json               # one JSON object (for tests and CI logs)

Each prediction goes through the whole user path: ``Model.predict`` on encoded image bytes (decode, EXIF,
resize, crop) and on a file path, then the backend. After ``--warmup`` predictions (allocator pools, lazy
backend buffers), RSS is sampled every ``--every`` predictions; the report gives the growth from the end of
the warm-up to the end, and the least-squares slope projected to 2,000 predictions. Leaks grow linearly;
allocator noise does not. Without EXPORT_DIR a tiny ONNX (+ OpenVINO IR when installed) export is built
in a temporary folder with onnx.helper (no torch needed).
"""

from __future__ import annotations

import gc
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image

from ..card import ModelCard, Preprocessing
from ..cli_support import common_option, debug_option, one_line_errors
from ..layout import MANIFEST_FILE, ArtifactRecord, FileEntry, Manifest, file_digest
from ..metadata import INPUT_NAME, OPENVINO_RT_INFO_PATH, OUTPUT_NAME, card_to_metadata
from ..prediction import Prediction

TINY_LABELS = ("BCC", "SCC", "NEV")
TINY_CROP = 32


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def tiny_card() -> ModelCard:
    return ModelCard(
        arch="tiny-onnx-helper-net",
        labels=TINY_LABELS,
        preprocessing=Preprocessing(crop=TINY_CROP, resize_shorter=TINY_CROP),
    )


def build_tiny_export(out_dir: str | Path, openvino: bool = True) -> Path:
    """A valid facederm export dir (manifest + ONNX fp32, and OpenVINO IR if installed), built without torch.

    Graph: image (N,3,32,32, 0-255) -> normalize -> conv 3x3/2 -> relu -> global average pool -> gemm ->
    softmax ``probabilities``, seeded random weights; the card is embedded as facederm metadata.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    card = tiny_card()
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.full((1, 3, 1, 1), 127.5, np.float32), "mean"),
        numpy_helper.from_array(np.full((1, 3, 1, 1), 1 / 64.0, np.float32), "inv_std"),
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(np.zeros(8, np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(0, 2.0, (len(TINY_LABELS), 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(len(TINY_LABELS), np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "mean"], ["centered"]),
        helper.make_node("Mul", ["centered", "inv_std"], ["normalized"]),
        helper.make_node("Conv", ["normalized", "conv_w", "conv_b"], ["conv"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, TINY_CROP, TINY_CROP])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(TINY_LABELS)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, card_to_metadata(card))
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "model.onnx"))
    records = [
        ArtifactRecord(
            target="onnx",
            precision="fp32",
            path="model.onnx",
            status="ok",
            format="onnx",
            validated="native",
            **_digest(out, "model.onnx"),
        )
    ]
    if openvino:
        try:
            import openvino as ov
        except ImportError:
            ov = None
        if ov is not None:
            ir = ov.convert_model(str(out / "model.onnx"))
            ir.set_rt_info(json.dumps(card.to_dict(), sort_keys=True), list(OPENVINO_RT_INFO_PATH))
            (out / "openvino").mkdir(exist_ok=True)
            ov.save_model(ir, str(out / "openvino" / "model.xml"), compress_to_fp16=False)
            records.append(
                ArtifactRecord(
                    target="openvino",
                    precision="fp32",
                    path="openvino/model.xml",
                    status="ok",
                    format="openvino",
                    validated="native",
                    files=(FileEntry("openvino/model.bin", **_digest(out, "openvino/model.bin")),),
                    **_digest(out, "openvino/model.xml"),
                )
            )
    Manifest(card=card, artifacts=tuple(records), facederm_version="leak-check").save(out / MANIFEST_FILE)
    return out


def _digest(root: Path, rel: str) -> dict[str, Any]:
    sha, size = file_digest(root / rel)
    return {"sha256": sha, "bytes": size}


def _test_image(path: Path) -> bytes:
    """A 640x480 JPEG photo-like image (the decode + resize work of a real phone upload, scaled down)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:480, 0:640]
    base = np.stack([120 + 60 * np.sin(xx / 50), 90 + 40 * np.cos(yy / 40), 80 + 30 * np.sin((xx + yy) / 70)], -1)
    pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def measure(export_dir: Path, iterations: int, warmup: int, every: int, backend: str | None) -> dict[str, Any]:
    from .. import load

    model = load(export_dir, backend=backend)
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "photo.jpg"
        data = _test_image(image_path)
        sources = [data, str(image_path)]
        for i in range(warmup):
            model.predict(sources[i % 2])
        gc.collect()
        start_rss = rss_bytes()
        samples = [(0, start_rss)]
        started = time.perf_counter()
        for i in range(1, iterations + 1):
            prediction = model.predict(sources[i % 2])
            assert isinstance(prediction, Prediction) and prediction.ok
            if i % every == 0 or i == iterations:
                gc.collect()
                samples.append((i, rss_bytes()))
        elapsed = time.perf_counter() - started
    xs = np.array([s[0] for s in samples], float)
    ys = np.array([s[1] for s in samples], float)
    slope = float(np.polyfit(xs, ys, 1)[0]) if len(samples) > 2 else (ys[-1] - ys[0]) / max(xs[-1], 1)
    return {
        "export_dir": str(export_dir),
        "backend": model.backend_name,
        "artifact": model.artifact.key if model.artifact else model.path.name,
        "iterations": iterations,
        "warmup": warmup,
        "rss_start_mb": round(start_rss / 1e6, 2),
        "rss_end_mb": round(samples[-1][1] / 1e6, 2),
        "growth_mb": round((samples[-1][1] - start_rss) / 1e6, 3),
        "max_growth_mb": round((max(ys) - start_rss) / 1e6, 3),
        "slope_kb_per_prediction": round(slope / 1e3, 4),
        "projected_growth_mb_per_2000": round(slope * 2000 / 1e6, 3),
        "predictions_per_s": round(iterations / elapsed, 1),
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("export_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--iterations", type=click.IntRange(min=1), default=2000, show_default=True, help="Timed predictions.")
@click.option("--warmup", type=click.IntRange(min=0), default=200, show_default=True, help="Untimed predictions first.")
@click.option(
    "--every", type=click.IntRange(min=1), default=100, show_default=True, help="RSS sample interval (predictions)."
)
@common_option("--backend", help="Default: the best available.")
@click.option("--limit-mb", type=float, default=20.0, show_default=True, help="Allowed growth per 2,000 predictions.")
@common_option("--json", "as_json", is_flag=True)
@debug_option()
def main(
    export_dir: Path | None,
    iterations: int,
    warmup: int,
    every: int,
    backend: str | None,
    limit_mb: float,
    as_json: bool,
    debug: bool,
) -> None:
    """Many predictions in a loop must not grow resident memory; EXPORT_DIR default: a tiny built export."""
    with one_line_errors("leak", debug), tempfile.TemporaryDirectory() as tmp:
        export_dir = export_dir or build_tiny_export(Path(tmp) / "export")
        result = measure(export_dir, iterations, warmup, every, backend)
    limit = limit_mb * iterations / 2000
    result["limit_mb"] = round(limit, 3)
    result["passed"] = result["growth_mb"] < limit
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"leak: {result['iterations']:,} predictions ({result['artifact']} on {result['backend']}, "
            f"{result['predictions_per_s']}/s) after {result['warmup']} warm-up"
        )
        click.echo(
            f"  RSS {result['rss_start_mb']} MB -> {result['rss_end_mb']} MB: growth {result['growth_mb']} MB "
            f"(max {result['max_growth_mb']} MB; limit {limit:.1f} MB)"
        )
        click.echo(
            f"  slope {result['slope_kb_per_prediction']} kB/prediction = "
            f"{result['projected_growth_mb_per_2000']} MB per 2,000 predictions"
        )
        click.echo("  PASSED" if result["passed"] else "  FAILED: RSS grew more than the limit")
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
