"""facederm.runtime: the torch-free core.

The artifact contract (model card, manifest), the one preprocessing implementation, and the backends
that run exported models. Apps and servers install only this (``pip install facederm``).
This package must never import torch.
"""

from __future__ import annotations

from .card import NOT_A_DIAGNOSIS, Calibration, ModelCard, Preprocessing, Referral
from .errors import *  # noqa: F403  (the exception types are part of the public API)
from .layout import ArtifactRecord, FileEntry, Manifest, Parity, Probe
from .preprocess import PreparedImage, load_image, prepare_image, preprocess, resize_and_crop, to_tensor
from .version import __version__

__all__ = [
    "NOT_A_DIAGNOSIS",
    "ArtifactRecord",
    "Calibration",
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

# The prediction API (issue 5). Backends import their heavy libraries lazily, so this stays cheap.
# ``facederm.runtime.backends`` is the backends subpackage, and calling it lists them: ``backends()``.
from . import backends
from .backends import BackendInfo
from .loader import load
from .model import Model
from .prediction import Prediction, SelfTestResult
from .probe import make_probe

__all__ += ["BackendInfo", "Model", "Prediction", "SelfTestResult", "backends", "load", "make_probe"]
