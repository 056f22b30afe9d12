"""Grad-CAM (Selvaraju et al. 2017) on the backbone's last feature map, overlays, and localization scores.

The study's Fig. 2 shows where the network looks. Here that is also measured: with a lesion mask, the
share of Grad-CAM energy inside the lesion is compared with the lesion's share of the image, which is
what a map spread uniformly (chance) would score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facederm.runtime.card import NOT_A_DIAGNOSIS, ModelCard, Preprocessing
from facederm.runtime.errors import ConfigError, FacedermInputError
from facederm.runtime.preprocess import load_image, prepare_image, resize_and_crop
from facederm.runtime.schema import write_json_atomic

from .models import FacedermClassifier
from .transforms import Normalize


@dataclass(frozen=True)
class CamResult:
    """One explained image: the input as the model saw it, the heatmap (0-1, input size), the prediction."""

    image: np.ndarray
    heatmap: np.ndarray
    label: str
    probability: float
    probabilities: dict[str, float]


class GradCAM:
    """Grad-CAM of a :class:`FacedermClassifier` on ``forward_features`` (its final feature map)."""

    def __init__(self, model: FacedermClassifier, card: ModelCard, device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.card = card
        self.device = torch.device(device)
        self.normalize = Normalize(card.preprocessing).to(self.device)

    def __call__(self, image: np.ndarray, target: int | None = None) -> CamResult:
        """``image``: uint8 HWC at the model's input size (see :func:`prepare_image`). ``target``: the class
        to explain (default: the predicted one)."""
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(self.device)
        with torch.enable_grad():
            features = self.model.forward_features(self.normalize(x)).detach().requires_grad_(True)
            logits = self.model.head(features)
            probs = torch.softmax(logits, dim=1)[0]
            target = int(probs.argmax()) if target is None else target
            (grad,) = torch.autograd.grad(logits[0, target], features)
        weights = grad.mean(dim=(2, 3), keepdim=True)  # global-average-pooled gradients per channel
        cam = torch.relu((weights * features).sum(dim=1, keepdim=True))
        cam = torch.nn.functional.interpolate(cam, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
        cam = cam.detach().cpu().numpy()
        cam = cam / cam.max() if cam.max() > 0 else cam
        labels = self.card.labels
        values = probs.detach().cpu().numpy()
        return CamResult(
            image,
            cam.astype(np.float32),
            labels[target],
            float(values[target]),
            {label: float(v) for label, v in zip(labels, values)},
        )


def localization(heatmap: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """How much of the map falls on the lesion: ``energy_in_mask`` (share of Grad-CAM mass inside),
    ``mask_share`` (the lesion's share of the image = chance level), their ``ratio`` (> 1: better than
    chance), and ``peak_in_mask`` (1 when the hottest pixel is on the lesion)."""
    inside = np.asarray(mask, dtype=bool)
    if inside.shape != heatmap.shape:
        raise ValueError(f"mask shape {inside.shape} differs from heatmap shape {heatmap.shape}")
    total = float(heatmap.sum())
    mask_share = float(inside.mean())
    energy = float(heatmap[inside].sum() / total) if total > 0 else float("nan")
    return {
        "energy_in_mask": energy,
        "mask_share": mask_share,
        "ratio": energy / mask_share if mask_share > 0 and not np.isnan(energy) else float("nan"),
        "peak_in_mask": float(inside.flat[int(np.argmax(heatmap))]),
    }


def load_mask(path: Path, preprocessing: Preprocessing) -> np.ndarray:
    """A lesion mask, resized and cropped exactly like the image (nearest neighbour), as booleans."""
    gray = load_image(path)[..., 0]
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    return resize_and_crop(rgb, preprocessing.crop, preprocessing.resize_shorter, "nearest")[..., 0] > 127


def mask_path(masks_dir: Path, image_path: Path) -> Path:
    """PAD-UFES-20's convention: ``<image name without .png>_mask.png``."""
    return masks_dir / f"{image_path.stem}_mask.png"


def render_overlay(result: CamResult, card: ModelCard, path: str | Path, title: str = "") -> Path:
    """PNG: the input | the Grad-CAM overlay, with the prediction and the not-a-diagnosis note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.6))
    axes[0].imshow(result.image)
    axes[0].set_title(title or "input", fontsize=9)
    axes[1].imshow(result.image)
    axes[1].imshow(result.heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    name = card.label_names.get(result.label, result.label)
    axes[1].set_title(f"Grad-CAM: {result.label} ({name}) p={result.probability:.2f}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.text(0.5, 0.02, NOT_A_DIAGNOSIS, ha="center", fontsize=8, style="italic")
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def explain(
    run_dir: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    masks_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Grad-CAM overlays for ``images`` with the model in ``run_dir``, written to ``out_dir``.

    With ``masks_dir``, each image is scored against its lesion mask and ``localization.json`` holds
    per-image scores and means. Returns what ``explain.json`` holds.
    """
    from rich.progress import track

    from .evaluate import resolve_device
    from .rundir import load_run

    model, card = load_run(run_dir)
    cam = GradCAM(model, card, resolve_device(device))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    masks_dir = Path(masks_dir) if masks_dir is not None else None
    if masks_dir is not None and not masks_dir.is_dir():
        raise ConfigError(f"--masks {masks_dir}: not a folder")
    if not images:
        raise ConfigError("no images given")
    rows: list[dict[str, Any]] = []
    for image_path in track([Path(p) for p in images], description="Grad-CAM", disable=not progress):
        prepared = prepare_image(image_path, card.preprocessing)
        result = cam(prepared)
        overlay = render_overlay(result, card, out_dir / f"{image_path.stem}_gradcam.png", image_path.name)
        row: dict[str, Any] = {
            "image": str(image_path),
            "overlay": overlay.name,
            "label": result.label,
            "probability": result.probability,
            "probabilities": result.probabilities,
        }
        if masks_dir is not None:
            path = mask_path(masks_dir, image_path)
            try:
                row["localization"] = localization(result.heatmap, load_mask(path, card.preprocessing))
            except FacedermInputError as exc:
                row["localization_error"] = str(exc)
        rows.append(row)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "note": NOT_A_DIAGNOSIS, "images": rows}
    scored = [r["localization"] for r in rows if "localization" in r]
    if masks_dir is not None:
        summary["localization_mean"] = {
            key: float(np.nanmean([s[key] for s in scored])) if scored else None
            for key in ("energy_in_mask", "mask_share", "ratio", "peak_in_mask")
        }
        summary["n_scored"] = len(scored)
        summary["n_missing_masks"] = len(rows) - len(scored)
    write_json_atomic(out_dir / "explain.json", summary)
    return summary
