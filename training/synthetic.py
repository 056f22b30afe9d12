"""``synthetic[:N]``: a procedural, seeded, learnable stand-in for clinical photos (demo and tests).

Each image is a lesion-like blob on a skin-toned background. The class sets the blob's color, border
irregularity, edge softness, size and texture; per-image jitter and the patient's skin tone make it a
(small) learning problem rather than a lookup. Patients have 1-3 images (sometimes two lesions of
different classes), spread over face and other body sites with the same class appearance everywhere,
so a model trained on other sites transfers to the face. Everything derived from it says "synthetic".

Each image also has synthetic clinical answers under PAD-UFES-20's column names (see :func:`synthetic_clinical`):
age and bleed carry signal about the label (older patients and bleeding lesions among the malignant classes),
diameter_1 follows the class's lesion size, gender and itch carry none, and every field is sometimes unanswered,
so ``--clinical`` runs, their missing values and their field dropout are covered by tests and the demo.

Spec: ``synthetic``, ``synthetic:600`` or ``synthetic:600,size=128,seed=0``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from facederm.runtime.errors import ConfigError

from .dataset import Sample
from .labels import FACE_REGIONS, LabelSet, get_label_set
from .readers import RawRecord, ReadRequest, ReadResult

DEFAULT_COUNT = 600
DEFAULT_SIZE = 128
OTHER_REGIONS = ("ARM", "FOREARM", "BACK", "CHEST", "HAND", "THIGH", "ABDOMEN", "NECK")
FACE_SHARE = 0.35  # about a third of lesions on the face, as in PAD-UFES-20 (143 / 541)
#: The synthetic clinical fields (PAD-UFES-20's names and kinds, a subset).
CLINICAL_FIELDS = ("age", "gender", "bleed", "itch", "diameter_1", "region")
#: Classes whose synthetic patients are older and whose lesions bleed more often (PAD's biopsy-proven cancers).
MALIGNANT = ("BCC", "MEL", "SCC")
MISSING_SHARE = 0.15  # each answer is left blank with this probability ("" as in PAD's metadata.csv)


@dataclass(frozen=True)
class ClassLook:
    """How one class looks: lesion RGB, border irregularity, edge width (fraction of radius),
    radius (fraction of the image), texture amplitude and frequency, relative frequency."""

    color: tuple[float, float, float]
    irregularity: float
    edge: float
    radius: float
    texture: float
    frequency: float
    share: float


# Six hand-set looks (index = position in the label set); more classes get generated ones.
_LOOKS = (
    ClassLook((190, 95, 85), 0.14, 0.45, 0.20, 0.30, 9.0, 1.0),  # scaly red, blurry edge
    ClassLook((222, 175, 170), 0.06, 0.12, 0.24, 0.08, 3.0, 1.4),  # pearly pink, sharp rolled edge
    ClassLook((55, 35, 35), 0.32, 0.20, 0.27, 0.18, 5.0, 0.6),  # dark, very irregular
    ClassLook((135, 85, 55), 0.03, 0.15, 0.16, 0.04, 2.0, 1.3),  # brown, round, small
    ClassLook((175, 55, 60), 0.22, 0.30, 0.29, 0.35, 13.0, 0.5),  # red, irregular, crusted
    ClassLook((105, 85, 60), 0.10, 0.10, 0.25, 0.50, 17.0, 1.0),  # grey-brown, warty texture
)


def class_look(index: int) -> ClassLook:
    """The look of class ``index`` (hand-set for the first six, seeded for more)."""
    if index < len(_LOOKS):
        return _LOOKS[index]
    rng = np.random.default_rng([4242, index])
    return ClassLook(
        tuple(rng.uniform(40, 230, 3).round()),
        *rng.uniform([0.02, 0.1, 0.15, 0.05, 2, 0.5], [0.35, 0.5, 0.3, 0.5, 18, 1.5]),
    )


def parse_synthetic_spec(location: str) -> tuple[int, int, int]:
    """``"600,size=128,seed=0"`` -> (count, size, seed); every part optional."""
    values = {"count": DEFAULT_COUNT, "size": DEFAULT_SIZE, "seed": 0}
    for i, part in enumerate(p.strip() for p in location.split(",") if p.strip()):
        key, _, value = part.rpartition("=")
        key = key.strip() or ("count" if i == 0 else "")
        if key not in values or not value.strip().isdigit():
            raise ConfigError(
                f"synthetic:{location}: expected synthetic[:N][,size=S][,seed=K], e.g. synthetic:600,size=128"
            )
        values[key] = int(value)
    count, size, seed = values["count"], values["size"], values["seed"]
    if count < 1 or not 16 <= size <= 2048:
        raise ConfigError(f"synthetic:{location}: need N >= 1 and 16 <= size <= 2048")
    return count, size, seed


def make_samples(count: int, label_set: LabelSet, seed: int = 0) -> list[Sample]:
    """``count`` synthetic samples grouped into patients with 1-3 images each (seeded)."""
    rng = np.random.default_rng([seed, 1])
    labels = label_set.labels
    shares = np.array([class_look(i).share for i in range(len(labels))])
    shares = shares / shares.sum()
    samples: list[Sample] = []
    patient = 0
    while len(samples) < count:
        patient += 1
        n_images = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
        n_lesions = 2 if n_images > 1 and rng.random() < 0.2 else 1
        lesions = []
        for lesion in range(n_lesions):
            face = rng.random() < FACE_SHARE
            region = str(rng.choice(FACE_REGIONS if face else OTHER_REGIONS))
            lesions.append((f"L{patient:05d}-{lesion}", labels[int(rng.choice(len(labels), p=shares))], region))
        answers = synthetic_clinical(
            seed, patient, [(label, labels.index(label), region) for _, label, region in lesions]
        )
        for image in range(min(n_images, count - len(samples))):
            lesion_id, label, region = lesions[image % n_lesions]
            index = len(samples)
            samples.append(
                Sample(
                    path=f"synthetic:{seed}/{index}",
                    label=label,
                    patient_id=f"SYN_{patient:05d}",
                    lesion_id=lesion_id,
                    region=region,
                    image_id=f"synthetic_{seed}_{index:06d}.png",
                    clinical=answers[image % n_lesions],
                )
            )
    return samples


def synthetic_clinical(
    seed: int, patient: int, lesions: list[tuple[str, int, str]]
) -> list[tuple[tuple[str, str], ...]]:
    """Clinical answers (values as PAD's metadata.csv writes them) for each of a patient's ``(label, class index,
    region)`` lesions: age and gender per patient, the rest per lesion. Own random stream per patient, so the images,
    labels and splits of a synthetic set are those it had before it had clinical fields."""
    rng = np.random.default_rng([seed, 3, patient])
    malignant = any(label in MALIGNANT for label, _, _ in lesions)
    age = float(np.clip(rng.normal(68, 10) if malignant else rng.normal(46, 14), 5, 95))
    gender = str(rng.choice(["FEMALE", "MALE"]))
    out = []
    for label, index, region in lesions:
        bad = label in MALIGNANT
        values = {
            "age": f"{age:.0f}",
            "gender": gender,
            "bleed": str(bool(rng.random() < (0.65 if bad else 0.12))),
            "itch": str(bool(rng.random() < 0.5)),
            "diameter_1": f"{max(1.0, rng.normal(40 * class_look(index).radius, 1.5)):.1f}",
            "region": region,
        }
        blank = rng.random(len(CLINICAL_FIELDS)) < MISSING_SHARE
        out.append(tuple((name, "" if skip else values[name]) for name, skip in zip(CLINICAL_FIELDS, blank)))
    return out


def _skin_tone(patient_id: str) -> np.ndarray:
    """A patient's skin color (light to dark), fixed by the id so all their images share it."""
    t = int.from_bytes(hashlib.sha256(patient_id.encode()).digest()[:4], "little") / 2**32
    light, dark = np.array([238.0, 204.0, 184.0]), np.array([150.0, 102.0, 76.0])
    return light + (dark - light) * t**1.5


def _smooth_noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """Blocky noise upsampled to ``size`` (cheap, vectorised), zero mean, unit-ish scale."""
    coarse = rng.standard_normal((size // cell + 2, size // cell + 2))
    return np.kron(coarse, np.ones((cell, cell)))[:size, :size]


def render(sample: Sample, label_set: LabelSet, size: int = DEFAULT_SIZE, seed: int = 0) -> np.ndarray:
    """The uint8 size x size x 3 RGB image of a synthetic sample (same sample -> same pixels)."""
    index = int(sample.path.rsplit("/", 1)[-1])
    rng = np.random.default_rng([seed, 2, index])
    look = class_look(label_set.labels.index(sample.label))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # Background: skin tone, a soft light gradient, fine pore noise.
    skin = _skin_tone(sample.patient_id) + rng.normal(0, 6, 3)
    shade = 1.0 + 0.08 * ((xx - 0.5) * rng.normal() + (yy - 0.5) * rng.normal())
    image = skin[None, None, :] * shade[..., None] + 3.0 * rng.standard_normal((size, size, 1))
    # Lesion: a blob whose radius varies with angle (irregular border) and a class-specific soft edge.
    cy, cx = 0.5 + rng.uniform(-0.1, 0.1, 2)
    dy, dx = yy - cy, xx - cx
    dist, theta = np.hypot(dx, dy), np.arctan2(dy, dx)
    radius = look.radius * rng.uniform(0.85, 1.15)
    wobble = sum(
        look.irregularity * rng.uniform(0.3, 1.0) / k * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
        for k in (2, 3, 5, 7)
    )
    border = radius * (1.0 + wobble)
    alpha = np.clip((border - dist) / (look.edge * radius + 1e-3) + 0.5, 0.0, 1.0)[..., None]
    # Texture: oriented ripples at the class frequency plus blotches.
    angle = rng.uniform(0, np.pi)
    ripples = np.sin(2 * np.pi * look.frequency * (xx * np.cos(angle) + yy * np.sin(angle)))
    blotches = _smooth_noise(rng, size, max(2, size // 16))
    texture = 1.0 + look.texture * (0.6 * ripples + 0.4 * blotches)
    color = (np.array(look.color) + rng.normal(0, 10, 3)) * rng.uniform(0.9, 1.1)
    lesion = color[None, None, :] * texture[..., None]
    image = image * (1.0 - alpha) + lesion * alpha
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class SyntheticRenderer:
    """The image loader of a synthetic data set (a picklable object, so DataLoader workers can spawn)."""

    label_set: LabelSet
    size: int = DEFAULT_SIZE
    seed: int = 0

    def __call__(self, sample: Sample) -> np.ndarray:
        return render(sample, self.label_set, self.size, self.seed)


def read_synthetic(request: ReadRequest) -> ReadResult:
    """``synthetic[:N[,size=S][,seed=K]]`` (labels: the requested label set, default "pad")."""
    count, size, seed = parse_synthetic_spec(request.location)
    label_set = request.label_set or get_label_set("pad")
    records = [
        RawRecord(
            item=s.image_id,
            path=s.path,
            label=s.label,
            patient_id=s.patient_id,
            lesion_id=s.lesion_id,
            region=s.region,
            image_id=s.image_id,
            clinical=s.clinical,
        )
        for s in make_samples(count, label_set, seed)
    ]

    loader = SyntheticRenderer(label_set, size, seed)
    notes = [f"synthetic data ({count} images at {size}x{size} px, seed {seed}): not clinical photos"]
    return ReadResult(records=records, label_set=label_set, synthetic=True, loader=loader, notes=notes)
