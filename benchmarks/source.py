"""What PATH is: an export dir (manifest.json) or a run dir (config.json + weights, exported first).

An export dir records only its run dir's *name* (``manifest.source_run``); the torch baseline needs the
run's weights, so the run dir is found beside the export dir (or given with ``--run``) and accepted only
when its card matches the manifest's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from facederm.runtime.card import ModelCard
from facederm.runtime.layout import Manifest
from facederm.runtime.errors import ConfigError, ExportError, SchemaError

MANIFEST = "manifest.json"
CARD = "config.json"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class Source:
    kind: str  # "export" | "run"
    export_dir: Path
    run_dir: Path | None
    manifest: Manifest


def is_export_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def is_run_dir(path: Path) -> bool:
    return (path / CARD).is_file() and (path / WEIGHTS).is_file()


def _same_model(run_dir: Path, card: ModelCard) -> bool:
    try:
        found = ModelCard.load(run_dir / CARD)
    except SchemaError:
        return False
    return found.arch == card.arch and found.labels == card.labels and found.preprocessing == card.preprocessing


def find_run_dir(export_dir: Path, manifest: Manifest, given: Path | None) -> Path | None:
    """The run dir holding the torch weights of ``manifest``'s model, or None."""
    if given is not None:
        if not is_run_dir(given):
            raise ConfigError(f"--run {given}: not a facederm run dir (needs {CARD} and {WEIGHTS})")
        if not _same_model(given, manifest.card):
            raise ConfigError(f"--run {given}: its model card does not match {export_dir / MANIFEST}")
        return given
    name = manifest.source_run
    candidates = [export_dir.parent / name, export_dir / name, Path.cwd() / name] if name else []
    return next((c for c in candidates if is_run_dir(c) and _same_model(c, manifest.card)), None)


def resolve_source(
    path: Path,
    *,
    run_dir: Path | None,
    export_to: Path,
    export: Callable[..., object] | None = None,
    targets: Sequence[str] = ("all",),
    eval_data: str | None = None,
) -> Source:
    """Open PATH; a run dir is exported first (to every target installed) into ``export_to``."""
    if is_export_dir(path):
        manifest = Manifest.load(path / MANIFEST)
        return Source("export", path, find_run_dir(path, manifest, run_dir), manifest)
    if is_run_dir(path):
        if export is None:
            from facederm.export import export_run as export
        export(path, out_dir=export_to, targets=list(targets), eval_data=eval_data, progress=False)
        manifest_path = export_to / MANIFEST
        if not manifest_path.is_file():
            raise ExportError(f"{path}: export wrote no {MANIFEST} in {export_to}")
        return Source("run", export_to, path, Manifest.load(manifest_path))
    raise ConfigError(
        f"{path}: neither an export dir ({MANIFEST}) nor a run dir ({CARD} + {WEIGHTS}); "
        "train with facederm-train, export with facederm-export, or run facederm-bench without PATH for the demo"
    )
