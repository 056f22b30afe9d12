"""facederm.runtime: the torch-free core.

The artifact contract (model card, manifest), the one preprocessing implementation, and the backends
that run exported models. Apps and servers install only this (``pip install facederm``).
This package must never import torch.
"""

from __future__ import annotations

from .card import NOT_A_DIAGNOSIS, ModelCard, Preprocessing, Referral
from .layout import ArtifactRecord, FileEntry, Manifest, Parity, Probe
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

# The prediction API (issue 5). Backends import their heavy libraries lazily, so this stays cheap.
# ``facederm.runtime.backends`` is the backends subpackage, and calling it lists them: ``backends()``.
from . import backends  # noqa: E402
from .backends import BackendInfo  # noqa: E402
from .loader import load  # noqa: E402
from .model import Model  # noqa: E402
from .prediction import Prediction, SelfTestResult  # noqa: E402
from .probe import make_probe  # noqa: E402

__all__ += ["BackendInfo", "Model", "Prediction", "SelfTestResult", "backends", "load", "make_probe"]
