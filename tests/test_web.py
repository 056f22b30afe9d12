"""The web target in a real headless Chromium: the page's tensor and probabilities equal facederm.runtime's.

One export of the tiny run (``--target web``, gate opened so both the int8 and the fp32 page models are
installed), served on 127.0.0.1 by facederm-web's server and driven with playwright on Debian's chromium
(``export/browser.py``). Fed the PAD-UFES-20 subset's test split (synthetic images when it is absent) plus
decoding edge cases (JPEG, EXIF rotation, JPEG draft, transparency, grayscale, palette, upscaling), each image's
crop, input tensor and probabilities are compared with the Python runtime on the same file and the same model
file. Then the server is stopped and the page reloaded: the service worker must serve it offline, with the same
predictions. Skipped with the reason when chromium, playwright or npm is missing (.ci/run installs them).
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facederm.export.browser import measure_in_browser, unavailable_reason
from facederm.export.onnx_graph import qdq_arithmetic_predict
from facederm.runtime import load
from facederm.runtime.preprocess import prepare_image, to_tensor

PAD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pad-ufes-20-subset"
#: Set to a path (e.g. docs/web-screenshot.png) to keep the screenshot the test takes.
SCREENSHOT_ENV = "FACEDERM_WEB_SCREENSHOT"
FP32_TOL = 1e-3
INT8_TOL = 1e-2

pytestmark = [pytest.mark.slow]


def _skip_reason() -> str | None:
    reason = unavailable_reason()
    if reason:
        return reason
    from facederm.export.targets.web import ORT_FILES, cache_root

    have_cache = any(
        (p / "node_modules/onnxruntime-web/dist" / ORT_FILES[2]).is_file()
        for p in (cache_root() / "onnxruntime-web").glob("*")
    )
    if shutil.which("npm") is None and not have_cache:
        return "npm is not installed (the web target installs onnxruntime-web with npm ci)"
    return None


@pytest.fixture(scope="module")
def web_export(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # tiny_run: conftest.py
    reason = _skip_reason()
    if reason:
        pytest.skip(f"browser test: {reason}")
    from facederm.export import export_run

    out = tmp_path_factory.mktemp("web") / "export"
    # The gate is opened (a 3-class 64 px net): this test checks the browser against the runtime, not the gate.
    result = export_run(tiny_run, out_dir=out, targets=["web"], min_agreement=0.0, max_drop=100.0)
    status = {r.key: (r.status, r.error) for r in result.records}
    assert status == {"web:int8": ("ok", None), "web:fp32": ("ok", None)}, status
    return out


def _edge_cases(folder: Path) -> list[Path]:
    """Inputs whose decoding differs between libraries unless done with care."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:700, 0:1100]
    smooth = np.stack(
        [(127 + 120 * np.sin(xx / 23 + yy / 41)), (127 + 120 * np.cos(yy / 17)), (90 + 80 * np.sin((xx + yy) / 31))],
        axis=2,
    )
    photo = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    out = []

    def save(name: str, image: Image.Image, **kw) -> None:
        image.save(folder / name, **kw)
        out.append(folder / name)

    save("jpeg-q90.jpg", Image.fromarray(photo[:300, :400]), quality=90)  # below the draft threshold
    save("jpeg-draft.jpg", Image.fromarray(photo), quality=90)  # 1100x700: PIL decodes it at 1/2 (draft)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    save("jpeg-exif6.jpg", Image.fromarray(photo[:240, :400]), quality=92, exif=exif.tobytes())
    exif[0x0112] = 3
    save("jpeg-exif3.jpg", Image.fromarray(photo[:333, :250]), quality=92, exif=exif.tobytes())
    rgba = np.dstack([photo[:200, :260], (np.arange(260)[None, :].repeat(200, 0) % 256).astype(np.uint8)])
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("gray.png", Image.fromarray(photo[:180, :230, 0], "L"))
    save("palette.png", Image.fromarray(photo[:150, :200]).convert("P", palette=Image.Palette.ADAPTIVE))
    save("tiny-upscale.png", Image.fromarray(photo[:41, :37]))  # smaller than the input: upsampled
    save("wide.png", Image.fromarray(photo[:70, :1100]))
    return out


def _test_images(folder: Path) -> tuple[list[Path], str]:
    if (PAD_DIR / "metadata.csv").is_file():
        from facederm.training.data import open_dataset, split_by_patient

        data = open_dataset(f"pad-ufes-20:{PAD_DIR}")
        splits = split_by_patient(data.samples, val_fraction=0.15, test_fraction=0.2, seed=0)
        return [Path(s.path) for s in splits.test], f"PAD-UFES-20 subset test split ({len(splits.test)} images)"
    from facederm.training.data import open_dataset

    data = open_dataset("synthetic:24,size=160,seed=5")
    paths = []
    for i, sample in enumerate(data.samples):
        path = folder / f"synthetic-{i:02d}.png"
        Image.fromarray(data.load_rgb(sample)).save(path)
        paths.append(path)
    return paths, f"synthetic ({len(paths)} images; the PAD subset is absent)"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path], str]:
    folder = tmp_path_factory.mktemp("web-images")
    main, what = _test_images(folder / "main")
    return main, _edge_cases(folder / "edge"), what


def _compare(web_export: Path, model_file: str, result: dict, paths: list[Path]) -> dict:
    """The page's crops, tensors and probabilities against facederm.runtime on the same files and model file."""
    model = load(web_export / "web" / model_file, backend="onnxruntime")
    pre = model.card.preprocessing
    crops = [prepare_image(p, pre) for p in paths]
    expected = model.run(to_tensor(crops))
    got = np.array([p["probabilities"] for p in result["predictions"]], dtype=np.float64)
    crop_diff = [int(np.abs(p["crop"].astype(int) - c.astype(int)).max()) for p, c in zip(result["predictions"], crops)]
    tensor_diff = [float(np.abs(p["tensor"] - to_tensor(c)).max()) for p, c in zip(result["predictions"], crops)]
    return {
        "prob": float(np.abs(got - expected).max()),
        "crop": max(crop_diff),
        "tensor": max(tensor_diff),
        "top1_equal": int((got.argmax(1) == expected.argmax(1)).sum()),
        "n": len(paths),
        "crop_per_image": dict(zip((p.name for p in paths), crop_diff)),
        "expected": expected,
        "got": got,
    }


def _report(name: str, what: str, figures: dict, result: dict) -> None:
    """Print the measured figures (pytest -s shows them; the README quotes them)."""
    lat = result["latency_ms"]
    print(
        f"\n{name}: {figures['n']} images of {what}: top-1 equal {figures['top1_equal']}/{figures['n']}, "
        f"max |crop diff| {figures['crop']} levels, max |tensor diff| {figures['tensor']}, "
        f"max |dp| {figures['prob']:.2e}; in-page model p50 {lat['p50']:.2f} ms (n={lat['n']}), "
        f"load {result['load_ms']:.0f} ms, {result['info']['threads']} threads, {result['browser']}"
    )


def test_fp32_page_equals_the_runtime_and_works_offline(web_export: Path, images, tmp_path: Path):
    main, edge, what = images
    shot = tmp_path / "web-screenshot.png"
    start = time.perf_counter()
    result = measure_in_browser(
        web_export / "web", main + edge, model="model.onnx", tensors=True, offline=True, screenshot=shot
    )
    info = result["info"]
    assert info["name"] == "model.onnx" and info["backend"] == "wasm" and info["crossOriginIsolated"]
    assert info["threads"] >= 1 and info["inputNames"] == ["image"] and info["outputNames"] == ["probabilities"]
    assert info["labels"] == list(load(web_export / "web" / "model.onnx").card.labels)  # from the model's metadata
    assert info["offline"], "the page could not fill its offline cache"

    figures = _compare(web_export, "model.onnx", {"predictions": result["predictions"][: len(main)]}, main)
    _report("fp32", what, figures, result)
    assert figures["crop"] == 0 and figures["tensor"] == 0.0, "the page must build the runtime's exact tensor"
    assert figures["top1_equal"] == figures["n"]
    assert figures["prob"] <= FP32_TOL

    edges = _compare(web_export, "model.onnx", {"predictions": result["predictions"][len(main) :]}, edge)
    print(f"edge cases, max |crop diff| per image: {edges['crop_per_image']}; max |dp| {edges['prob']:.2e}")
    lossless = {k: v for k, v in edges["crop_per_image"].items() if k.endswith(".png")}
    assert set(lossless.values()) <= {0}, f"PNG inputs must decode to the runtime's pixels: {lossless}"
    # JPEG: the browser's libjpeg-turbo equals PIL's on a full decode; PIL's DCT-domain draft (1/2 here) is
    # approximated by a box filter, which moves a few levels.
    jpeg = {k: v for k, v in edges["crop_per_image"].items() if k.endswith(".jpg")}
    assert all(v == 0 for k, v in jpeg.items() if "draft" not in k), jpeg
    assert jpeg["jpeg-draft.jpg"] <= 12, jpeg

    # Offline: the server is gone; the service worker served the page, its scripts, the model and the runtime.
    offline = result["offline"]
    assert offline["info"]["controlled_before_reload"] and offline["info"]["name"] == "model.onnx"
    online = np.array([p["probabilities"] for p in result["predictions"]])
    assert np.abs(np.array(offline["probabilities"]) - online).max() <= 1e-6
    assert shot.is_file() and shot.stat().st_size > 5_000
    keep = os.environ.get(SCREENSHOT_ENV)
    if keep:
        shutil.copyfile(shot, keep)
    print(f"browser test wall time {time.perf_counter() - start:.1f} s (screenshot {shot})")


def test_int8_page_equals_the_runtime_and_is_the_default(web_export: Path, images):
    main, _, what = images
    result = measure_in_browser(web_export / "web", main, tensors=True)  # no ?model=: the page's own choice
    assert result["info"]["name"] == "model.int8.onnx", "the smallest model that passed the gate is the default"
    assert result["model_bytes"] == (web_export / "web" / "model.int8.onnx").stat().st_size
    figures = _compare(web_export, "model.int8.onnx", result, main)
    assert figures["crop"] == 0 and figures["tensor"] == 0.0
    # The page equals facederm.runtime on the same file (7-bit weights: no saturating kernel on either side).
    assert int((figures["got"].argmax(1) == figures["expected"].argmax(1)).sum()) == len(main)
    assert float(np.abs(figures["got"] - figures["expected"]).max()) <= INT8_TOL
    # For the record: both against the graph's unfused Q/DQ arithmetic (requantization rounding differs).
    x = to_tensor([prepare_image(p, load(web_export / "web" / "model.onnx").card.preprocessing) for p in main])
    exact = qdq_arithmetic_predict(web_export / "web" / "model.int8.onnx")(x)
    got = figures["got"]
    delta = float(np.abs(got - exact).max())
    top1 = int((got.argmax(1) == exact.argmax(1)).sum())
    _report("int8 (vs facederm.runtime, fused x86 kernels)", what, figures, result)
    print(
        f"int8 vs the Q/DQ arithmetic (onnxruntime, basic optimizations): top-1 equal {top1}/{len(main)}, "
        f"max |dp| {delta:.2e}; facederm.runtime's fused kernels vs that arithmetic: max |dp| "
        f"{float(np.abs(figures['expected'] - exact).max()):.2e}"
    )
    assert top1 >= len(main) - 1  # one near-tie may round the other way between fused and unfused arithmetic


def test_the_page_reads_the_model_it_is_given(web_export: Path, images, tmp_path: Path):
    # A folder holding only the fp32 model (the int8 graph failed the gate): the page falls back to it.
    main, _, _ = images
    folder = tmp_path / "web"
    shutil.copytree(web_export / "web", folder)
    (folder / "model.int8.onnx").unlink()
    result = measure_in_browser(folder, main[:2])
    assert result["info"]["name"] == "model.onnx"
    assert result["download_bytes"] >= result["model_bytes"]


def test_a_model_without_facederm_metadata_is_refused_with_a_clear_message(web_export: Path, tmp_path: Path):
    import onnx

    from facederm.runtime.errors import FacedermError

    folder = tmp_path / "web"
    shutil.copytree(web_export / "web", folder)
    model = onnx.load(str(folder / "model.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(folder / "model.onnx"))
    (folder / "model.int8.onnx").unlink()
    buf = io.BytesIO()
    Image.new("RGB", (80, 80), (200, 120, 90)).save(buf, "PNG")
    (tmp_path / "x.png").write_bytes(buf.getvalue())
    with pytest.raises(FacedermError, match="no facederm metadata"):
        measure_in_browser(folder, [tmp_path / "x.png"])
