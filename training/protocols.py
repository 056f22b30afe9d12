"""Training protocols: which body sites each training stage uses and where the model is evaluated.

The data is split ONCE by patient over all samples; each stage then keeps the sites it needs from
each split, so no patient crosses splits in any stage. A registry, so a new protocol is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from facederm.runtime.errors import ConfigError

Site = Literal["face", "other", "all"]


@dataclass(frozen=True)
class Stage:
    """One training stage: train/validate on ``site`` images, starting from the previous stage's best
    weights when there is one. ``extra``: which sites of ``--extra-data`` join its training images (None: none;
    the extra patients are never evaluated, so a pretraining stage may take their face images too)."""

    name: str
    site: Site
    extra: Site | None = None


@dataclass(frozen=True)
class Protocol:
    """Stages run in order; the final model is evaluated on ``eval_site`` images of the test patients."""

    name: str
    stages: tuple[Stage, ...]
    eval_site: Site
    description: str


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    PROTOCOLS[protocol.name] = protocol
    return protocol


register_protocol(Protocol("all", (Stage("all", "all", extra="all"),), "all", "train and evaluate on every body site"))
register_protocol(
    Protocol(
        "face-only", (Stage("face", "face", extra="face"),), "face", "train on face images only (the study's Table 3)"
    )
)
register_protocol(
    Protocol(
        "face-transfer",
        (Stage("other-sites", "other", extra="all"), Stage("face", "face")),
        "face",
        "train on the other body sites, then fine-tune on face images (the study's Table 4)",
    )
)


def get_protocol(name: str) -> Protocol:
    """The registered protocol called ``name``; a :class:`ConfigError` listing the known ones otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None
