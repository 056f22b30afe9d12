"""How much does ``Model.predict`` cost over the raw backend call? (issue 5: at most 1.10x)

Exports a real-size classifier (timm ``mobilenetv3_large_100`` at 300x300, random weights,
normalization and softmax baked in) to ONNX and OpenVINO IR, then times, interleaved in one process
with the same thread count: the library's own call (``InferenceSession.run`` / an OpenVINO infer
request) on a ready float32 tensor, against ``model.predict(uint8 HxWx3 array at the input size)``,
which includes facederm's conversion, batching and result building. Reports medians and the ratio.

    python -m facederm.benchmarks.runtime_overhead --iterations 200 --out runtime_overhead.json
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

LABELS = ("AK", "BCC", "MEL", "NEV", "SCC", "SEK")
TARGET_RATIO = 1.10


def _export(arch: str, size: int, workdir: Path) -> tuple[Path, Path]:
    """ONNX + OpenVINO IR of ``arch`` with facederm metadata; returns (onnx path, xml path)."""
    import warnings

    import onnx
    import openvino as ov
    import timm
    import torch

    from facederm.runtime.card import ModelCard, Preprocessing
    from facederm.runtime.metadata import INPUT_NAME, OPENVINO_RT_INFO_PATH, OUTPUT_NAME, card_to_metadata

    card = ModelCard(arch=arch, labels=LABELS, preprocessing=Preprocessing(crop=size, resize_shorter=size))

    from facederm.training.models import ProbabilityModel

    # The network with the 0-255 -> normalized step and the softmax baked in, exactly as export does.
    exported = ProbabilityModel(timm.create_model(arch, pretrained=False, num_classes=len(LABELS)), card.preprocessing)

    onnx_path = workdir / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            exported.eval(), torch.zeros(1, 3, size, size), str(onnx_path), input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            dynamo=False,
        )
    proto = onnx.load(str(onnx_path))
    for key, value in card_to_metadata(card).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(onnx_path))
    ir = ov.convert_model(str(onnx_path))
    ir.set_rt_info(json.dumps(card.to_dict()), list(OPENVINO_RT_INFO_PATH))
    xml_path = workdir / "openvino" / "model.xml"
    ov.save_model(ir, str(xml_path), compress_to_fp16=False)
    return onnx_path, xml_path


def _raw_onnxruntime(path: Path, threads: int, precision_hint: str | None) -> Callable[[np.ndarray], Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _raw_openvino(path: Path, threads: int, precision_hint: str | None) -> Callable[[np.ndarray], Any]:
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": str(threads)}
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.outputs[0]
    return lambda x: request.infer({0: x}, share_inputs=True)[output]


_RAW: dict[str, Callable[[Path, int, str | None], Callable[[np.ndarray], Any]]] = {
    "onnxruntime": _raw_onnxruntime,
    "openvino": _raw_openvino,
}


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _measure(raw: Callable[[np.ndarray], Any], predict: Callable[[np.ndarray], Any], image: np.ndarray,
             tensor: np.ndarray, iterations: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        raw(tensor)
        predict(image)
    raw_s: list[float] = []
    predict_s: list[float] = []
    clock = time.perf_counter
    for i in range(iterations):
        # Interleaved, alternating which goes first, so drift and cache effects hit both alike.
        order = ((raw, tensor, raw_s), (predict, image, predict_s))
        for fn, arg, sink in order if i % 2 == 0 else order[::-1]:
            start = clock()
            fn(arg)
            sink.append(clock() - start)
    raw_ms, predict_ms = _median_ms(raw_s), _median_ms(predict_s)
    return {
        "raw_ms_median": round(raw_ms, 4),
        "predict_ms_median": round(predict_ms, 4),
        "ratio": round(predict_ms / raw_ms, 4),
        "raw_ms_p90": round(float(np.percentile(raw_s, 90)) * 1e3, 4),
        "predict_ms_p90": round(float(np.percentile(predict_s, 90)) * 1e3, 4),
    }


def run(
    arch: str = "mobilenetv3_large_100",
    size: int = 300,
    iterations: int = 200,
    warmup: int = 20,
    threads: int = 2,
    precision_hint: str | None = None,
    out: str | Path | None = None,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Export the model, time raw vs ``predict`` per backend, return (and optionally write) the results."""
    import onnxruntime
    import openvino

    from facederm.runtime import load
    from facederm.runtime.preprocess import to_tensor
    from facederm.runtime.version import __version__

    with tempfile.TemporaryDirectory(prefix="facederm-overhead-") as tmp:
        folder = Path(workdir) if workdir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        files = dict(zip(("onnxruntime", "openvino"), _export(arch, size, folder)))
        image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        tensor = to_tensor(image)
        backends: dict[str, Any] = {}
        for name, path in files.items():
            options = {"threads": threads}
            if precision_hint and name == "openvino":
                options["precision_hint"] = precision_hint
            model = load(path, backend=name, **options)
            raw = _RAW[name](path, threads, precision_hint if name == "openvino" else None)
            backends[name] = _measure(raw, model.predict, image, tensor, iterations, warmup)
    result = {
        "benchmark": "runtime_overhead",
        "arch": arch,
        "input_size": size,
        "iterations": iterations,
        "threads": threads,
        "precision_hint": precision_hint,
        "target_ratio": TARGET_RATIO,
        "backends": backends,
        "passed": all(b["ratio"] <= TARGET_RATIO for b in backends.values()),
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "facederm": __version__,
            "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__,
        },
    }
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--arch", default="mobilenetv3_large_100", show_default=True, help="timm architecture (random weights).")
@click.option("--size", default=300, show_default=True, type=click.IntRange(min=32), help="Input size.")
@click.option("--iterations", default=200, show_default=True, type=click.IntRange(min=5), help="Timed calls per side.")
@click.option("--warmup", default=20, show_default=True, type=click.IntRange(min=0))
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1), help="Same for raw and predict.")
@click.option("--precision-hint", help="OpenVINO INFERENCE_PRECISION_HINT for both sides, e.g. f32.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("runtime_overhead.json"),
              show_default=True, help="Where to write the JSON results.")
def main(arch: str, size: int, iterations: int, warmup: int, threads: int, precision_hint: str | None,
         out: Path) -> None:
    """Measure predict() overhead over the raw ONNX Runtime and OpenVINO calls."""
    from rich.console import Console
    from rich.table import Table

    result = run(arch, size, iterations, warmup, threads, precision_hint, out)
    table = Table(title=f"predict() vs raw backend call: {arch} {size}x{size}, {threads} threads, medians of {iterations}")
    for column in ("backend", "raw ms", "predict ms", "ratio", f"<= {TARGET_RATIO}"):
        table.add_column(column)
    for name, row in result["backends"].items():
        ok = "[green]yes[/green]" if row["ratio"] <= TARGET_RATIO else "[red]no[/red]"
        table.add_row(name, f"{row['raw_ms_median']:.2f}", f"{row['predict_ms_median']:.2f}", f"{row['ratio']:.3f}", ok)
    console = Console()
    console.print(table)
    console.print(f"results written to {out}")


if __name__ == "__main__":
    main()
