"""Grad-CAM: overlays and JSON for a trained run; localization scoring against lesion masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from facederm.runtime.preprocess import prepare_image
from facederm.training.cli_explain import main as explain_cli
from facederm.training.config import TrainConfig
from facederm.training.gradcam import GradCAM, explain, localization
from facederm.training.rundir import load_run
from facederm.training.trainer import train


def test_localization_compares_energy_inside_the_mask_with_its_area():
    heatmap = np.zeros((10, 10), dtype=np.float32)
    heatmap[:5, :] = 1.0  # all energy in the top half
    mask = np.zeros((10, 10), dtype=bool)
    mask[:5, :5] = True  # top-left quarter
    scores = localization(heatmap, mask)
    assert scores["energy_in_mask"] == pytest.approx(0.5)
    assert scores["mask_share"] == pytest.approx(0.25)
    assert scores["ratio"] == pytest.approx(2.0)
    assert scores["peak_in_mask"] == 1.0
    uniform = localization(np.ones((10, 10)), mask)
    assert uniform["ratio"] == pytest.approx(1.0)  # a flat map scores exactly chance


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cam") / "run"
    config = TrainConfig(
        data="synthetic:60",
        out=out,
        arch="resnet10t",
        epochs=1,
        img_size=64,
        batch_size=16,
        n_boot=10,
        device="cpu",
        progress=False,
    )
    return train(config).run_dir


def _image_and_mask(folder: Path, name: str) -> Path:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)
    path = folder / f"{name}.png"
    Image.fromarray(image).save(path)
    mask = np.zeros((80, 100), dtype=np.uint8)
    mask[20:60, 30:70] = 255
    Image.fromarray(mask).save(folder / f"{name}_mask.png")
    return path


def test_gradcam_matches_a_manual_computation(run_dir):
    model, card = load_run(run_dir)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    result = GradCAM(model, card)(image)
    assert result.heatmap.shape == (64, 64) and result.heatmap.max() == pytest.approx(1.0)
    assert result.heatmap.min() >= 0
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    # Manual Grad-CAM: gradient of the winning logit w.r.t. the final feature map, channel-averaged.
    mean = torch.tensor(card.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(card.preprocessing.std).view(1, 3, 1, 1)
    x = (torch.from_numpy(image.transpose(2, 0, 1)).float()[None] / 255 - mean) / std
    features = model.forward_features(x).detach().requires_grad_(True)
    logits = model.head(features)
    target = int(logits.argmax())
    assert card.labels[target] == result.label
    logits[0, target].backward()
    cam = torch.relu((features.grad.mean(dim=(2, 3), keepdim=True) * features).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
    expected = (cam / cam.max()).detach().numpy()
    np.testing.assert_allclose(result.heatmap, expected, atol=1e-4)


def test_explain_writes_overlays_and_mask_scores(run_dir, tmp_path):
    images = [_image_and_mask(tmp_path, f"img{i}") for i in range(2)]
    lonely = tmp_path / "nomask.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(lonely)
    out = tmp_path / "out"
    summary = explain(run_dir, [*images, lonely], out, masks_dir=tmp_path)
    assert (out / "img0_gradcam.png").is_file() and (out / "nomask_gradcam.png").is_file()
    assert json.loads((out / "explain.json").read_text()) == summary
    assert summary["n_scored"] == 2 and summary["n_missing_masks"] == 1
    assert "not a diagnosis" in summary["note"]
    # Each score is the localization of that image's heatmap against its resized, cropped mask.
    model, card = load_run(run_dir)
    heatmap = GradCAM(model, card)(prepare_image(images[0], card.preprocessing)).heatmap
    size = card.preprocessing.crop
    mask = np.zeros((80, 100), bool)
    mask[20:60, 30:70] = True
    # 80x100 -> shorter side 64 (64x80), center crop 64x64: columns 8..72 of the resized image.
    resized = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((80, 64), Image.Resampling.NEAREST)) > 127
    expected = localization(heatmap, resized[:, 8 : 8 + size])
    assert summary["images"][0]["localization"] == pytest.approx(expected)
    means = summary["localization_mean"]
    scored = [r["localization"]["energy_in_mask"] for r in summary["images"] if "localization" in r]
    assert means["energy_in_mask"] == pytest.approx(np.mean(scored))


def test_explain_cli_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(explain_cli, [str(tmp_path / "nope"), str(tmp_path / "x.png"), "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert (
        result.output.strip().startswith("facederm-explain: error: ") and len(result.output.strip().splitlines()) == 1
    )
