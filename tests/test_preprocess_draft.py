"""One decode path: a large phone-like JPEG becomes the same uint8 crop in the runtime, in training evaluation, in
export calibration / parity and in the benchmark's evaluation data (JPEG draft decoding included everywhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facederm.benchmarks.bench import prepare_eval
from facederm.export.calibration import ImageSet
from facederm.runtime.card import ModelCard, Preprocessing
from facederm.runtime.preprocess import DRAFT_FACTOR, load_image, prepare_image, resize_and_crop
from facederm.training.data import open_dataset
from facederm.training.evaluate import preprocess_samples

PRE = Preprocessing(crop=64, resize_shorter=72)


def _phone_jpeg(path: Path, seed: int, size: tuple[int, int] = (2400, 1800)) -> Path:
    """A 4:3 JPEG (quality 90) with coarse structure and fine noise, EXIF-rotated like a portrait phone photo."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (size[1] // 60, size[0] // 60, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = np.clip(smooth + rng.integers(-10, 11, smooth.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noisy).save(path, quality=90, exif=exif)
    return path


def test_a_large_jpeg_gives_one_crop_in_runtime_training_export_and_bench(tmp_path: Path) -> None:
    paths = [_phone_jpeg(tmp_path / "data" / label / f"photo{i}.jpg", seed=i) for i, label in enumerate(("BCC", "SCC"))]
    dataset = open_dataset(f"folder:{tmp_path / 'data'}")
    samples = sorted(dataset.samples, key=lambda s: s.path)
    assert [Path(s.path).name for s in samples] == ["photo0.jpg", "photo1.jpg"]

    runtime = [prepare_image(p, PRE) for p in paths]  # what facederm.runtime's Model.predict feeds the model
    training = list(preprocess_samples(dataset, samples, PRE))  # training evaluation and the torch reference
    export = ImageSet(dataset, samples, np.array([0, 1]), PRE).images()  # export calibration and parity
    card = ModelCard(arch="test", labels=("BCC", "SCC"), preprocessing=PRE)
    bench = np.load(
        prepare_eval(f"folder:{tmp_path / 'data'}", card, {}, tmp_path / "bench", have_run=False).tensor_path
    )
    bench_by_name = dict(zip(sorted(Path(s.path).name for s in dataset.samples), bench.transpose(0, 2, 3, 1)))
    for i, path in enumerate(paths):
        assert runtime[i].shape == (64, 64, 3) and runtime[i].dtype == np.uint8
        np.testing.assert_array_equal(training[i], runtime[i])
        np.testing.assert_array_equal(export[i], runtime[i])
        np.testing.assert_array_equal(bench_by_name[path.name], runtime[i])

    # The shared path really decodes in draft mode (DCT-scaled), not in full: these crops differ a little.
    with Image.open(paths[0]) as img:
        img.draft("RGB", (DRAFT_FACTOR * PRE.resize_shorter,) * 2)
        assert img.size == (600, 450)  # 1/4 scale: still >= DRAFT_FACTOR x the resize target on the short side
    full = resize_and_crop(load_image(paths[0]), PRE.crop, PRE.resize_shorter)
    assert full.shape == runtime[0].shape and not np.array_equal(full, runtime[0])
    assert np.abs(full.astype(int) - runtime[0].astype(int)).mean() < 2.0  # a small change, not another image
