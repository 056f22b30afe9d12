"""facederm.runtime: the torch-free core.

The artifact contract (model card, manifest), the one preprocessing implementation, and the backends
that run exported models. Apps and servers install only this (``pip install facederm``).
This package must never import torch.
"""

from __future__ import annotations

from .card import (
    NOT_A_DIAGNOSIS,
    ArtifactRecord,
    FileEntry,
    Manifest,
    ModelCard,
    Parity,
    Preprocessing,
    Probe,
    Referral,
)
from .errors import *  # noqa: F401,F403  (the exception types are part of the public API)
from .preprocess import PreparedImage, load_image, prepare_image, preprocess, resize_and_crop, to_tensor
from .version import __version__

__all__ = [
    "NOT_A_DIAGNOSIS",
    "ArtifactRecord",
    "FileEntry",
    "Manifest",
    "ModelCard",
    "Parity",
    "PreparedImage",
    "Preprocessing",
    "Probe",
    "Referral",
    "__version__",
    "load_image",
    "prepare_image",
    "preprocess",
    "resize_and_crop",
    "to_tensor",
]
