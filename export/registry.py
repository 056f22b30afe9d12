"""The target registry: one :class:`Target` per export format, found by name or alias.

Each module in :mod:`facederm.export.targets` registers itself here; nothing else in export branches on
target names. ``resolve_targets(["ov", "ios"])`` -> the OpenVINO and Core ML targets; a misspelt name
gets a "did you mean".
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from facederm.runtime.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from .context import BuildContext, BuiltArtifact

#: Builds one (target, precision) inside ``ctx.workdir``; raises ExportError / MissingDependencyError.
BuildFn = Callable[["BuildContext"], "BuiltArtifact"]


@dataclass(frozen=True)
class Variant:
    """One artifact a target can produce: its precision and file name relative to the export dir."""

    precision: str
    path: str
    build: BuildFn
    default: bool = True  # built when the user names no precision
    calibrated: bool = False  # needs calibration images (their ids go into the record)
    record_target: str = ""  # manifest target when it differs from the target's name (e.g. the .ort file)
    #: Non-empty: the variant's weights cannot sit on a quant-aware run's int8 grid, so such a run leaves it out of
    #: the defaults (a skipped record with this reason); named with ``--precision``, it is built.
    off_grid: str = ""


@dataclass(frozen=True)
class Target:
    """An export format, declared once like an Optimum exporter config: its variants (precision, file, builder),
    how its numbers are checked here, where each artifact carries its labels and preprocessing, and the optional
    libraries it needs. ``facederm-export --list-targets`` prints these declarations."""

    name: str
    title: str
    aliases: tuple[str, ...]
    variants: tuple[Variant, ...]
    #: (import name, pip extra, purpose) of each optional library the target needs.
    requires: tuple[tuple[str, str, str], ...] = ()
    #: How the export checks the artifact's numbers on this machine (native run, or a twin, and why).
    validation: str = "native"
    #: Where the artifact carries its card (labels, preprocessing).
    metadata: str = ""
    #: Why the target cannot take a model with clinical fields (its artifacts are skipped with this reason);
    #: empty: it exports the second input ``clinical`` like the image.
    clinical_unsupported: str = ""

    def missing_requirements(self) -> list[str]:
        """pip commands for the required libraries that are not installed (empty: ready)."""
        try:
            self.check_requirements()
        except MissingDependencyError as exc:
            return [str(exc)]
        return []

    def check_requirements(self) -> None:
        """Raise :class:`MissingDependencyError` (with the pip command) if a required library is missing."""
        for module, extra, purpose in self.requires:
            try:
                with quiet_converter():
                    importlib.import_module(module)
            except ImportError as exc:
                raise MissingDependencyError(module, extra, purpose or f"the {self.name} target") from exc

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.precision for v in self.variants))

    def select(self, precisions: Sequence[str] | None) -> list[Variant]:
        """The variants for ``precisions`` (None: the defaults), in the target's own order."""
        if precisions is None:
            return [v for v in self.variants if v.default]
        return [v for v in self.variants if v.precision in precisions]


@contextlib.contextmanager
def quiet_converter():
    """Silence a converter's own chatter (untested-version warnings at import, progress bars, k-means logs):
    the export shows its own progress and reports every outcome in its summary."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


_TARGETS: dict[str, Target] = {}
_ALIASES: dict[str, str] = {}
ALL = "all"


def register(target: Target) -> Target:
    """Add a target (plugins may add their own); its name and aliases must be new."""
    for key in (target.name, *target.aliases):
        if key in _ALIASES and _ALIASES[key] != target.name:
            raise ValueError(f"export target name {key!r} is already used by {_ALIASES[key]!r}")
        _ALIASES[key] = target.name
    _TARGETS[target.name] = target
    return target


def _load_builtin() -> None:
    # Importing the package registers the four built-in targets (each imports its heavy library lazily).
    importlib.import_module("facederm.export.targets")


def all_targets() -> list[Target]:
    _load_builtin()
    return list(_TARGETS.values())


def get_target(name: str) -> Target:
    """The target called ``name`` or one of its aliases (case-insensitive)."""
    _load_builtin()
    key = name.strip().lower()
    if key in _ALIASES:
        return _TARGETS[_ALIASES[key]]
    choices = sorted(_ALIASES) + [ALL]
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    known = ", ".join(f"{t.name} ({', '.join(t.aliases)})" if t.aliases else t.name for t in _TARGETS.values())
    raise ConfigError(f"unknown export target {name!r}{hint}; known: {known}, all")


def resolve_targets(names: Iterable[str]) -> list[Target]:
    """Targets for ``names`` (aliases and ``all`` expanded; ``"onnx,openvino"`` comma lists too), each once, in
    registry order."""
    _load_builtin()
    wanted: set[str] = set()
    names = [part for name in names for part in name.split(",") if part.strip()]
    if not names:
        raise ConfigError("no export target given; use --target onnx|openvino|coreml|tensorrt|all")
    for name in names:
        if name.strip().lower() == ALL:
            wanted.update(_TARGETS)
        else:
            wanted.add(get_target(name).name)
    return [t for t in _TARGETS.values() if t.name in wanted]
