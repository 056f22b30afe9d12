"""Backends that run exported artifacts, found through one registry keyed by name and file suffix.

Importing this package is cheap: each backend imports its heavy library (onnxruntime, openvino,
coremltools, tensorrt) only when it is checked or used.

>>> from facederm.runtime.backends import backends
>>> [b.name for b in backends() if b.available]  # doctest: +SKIP
['onnxruntime', 'openvino']
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

from ..errors import BackendMismatchError, ConfigError
from .base import Backend, BackendInfo, Session, artifact_suffix

_REGISTRY: dict[str, type[Backend]] = {}


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a backend findable by its name and suffixes."""
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Backend]:
    """The backend class called ``name``; ConfigError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown backend {name!r}; known backends: {known}") from None


def all_backends() -> list[type[Backend]]:
    """Every registered backend class, most preferred first."""
    return sorted(_REGISTRY.values(), key=lambda b: (b.priority, b.name))


def backends() -> list[BackendInfo]:
    """Which backends can run on this machine, and why not: one :class:`BackendInfo` per backend."""
    return [b.info() for b in all_backends()]


def readers(path: Path, fmt: str = "") -> list[type[Backend]]:
    """Backends that read this file (by manifest format, else suffix), most preferred first."""
    return [b for b in all_backends() if b.reads(path, fmt)]


def check_reads(backend: type[Backend], path: Path, fmt: str = "") -> None:
    """Refuse a backend/file pair that cannot work, naming the backends that would."""
    if backend.reads(path, fmt):
        return
    others = [b.name for b in readers(path, fmt)]
    hint = f"use backend={others[0]!r}" if others else "no facederm backend reads this file"
    what = f"format {fmt!r}" if fmt else f"suffix {artifact_suffix(path) or '(none)'!r}"
    raise BackendMismatchError(
        f"{path}: backend {backend.name!r} reads {backend.kind} ({', '.join(backend.suffixes)}), not {what}; {hint}"
    )


class _CallableModule(types.ModuleType):
    """Lets ``facederm.runtime.backends()`` list the backends while this stays an importable package."""

    def __call__(self) -> list[BackendInfo]:
        return backends()


sys.modules[__name__].__class__ = _CallableModule

# Registration order does not matter: priorities decide. Each import is light (no heavy library).
from . import coreml, onnxruntime, openvino, tensorrt  # noqa: E402,F401

__all__ = ["Backend", "BackendInfo", "Session", "all_backends", "backends", "check_reads", "get", "readers", "register"]
