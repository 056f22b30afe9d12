"""Atomic installation of artifacts and atomic manifest updates.

Each artifact is built in a staging folder inside the export dir (same file system, so ``os.replace`` is
a rename), moved into place only after it passed validation, and only then listed as ok in
``manifest.json`` (itself written through a temporary file and a rename). Before an existing artifact is
replaced, its record is first marked failed, so a kill at any moment never leaves an ok record whose
file is missing or half-written. A rerun removes stale staging folders and rebuilds.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from facederm.runtime.card import ModelCard
from facederm.runtime.errors import FacedermError
from facederm.runtime.layout import (
    MANIFEST_FILE,
    STAGING_PREFIX,
    ArtifactRecord,
    FileEntry,
    Manifest,
    Probe,
    file_digest,
    resolve_inside,
)

log = logging.getLogger("facederm.export")


def clean_stale_staging(out_dir: Path) -> None:
    """Remove staging folders left by a killed export."""
    for stale in out_dir.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def new_staging_dir(out_dir: Path, label: str) -> Path:
    safe = "".join(c if c.isalnum() else "-" for c in label)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{safe}-", dir=out_dir))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def install(staging: Path, out_dir: Path, paths: list[str]) -> None:
    """Move ``paths`` (relative) from ``staging`` into ``out_dir``, replacing what is there."""
    for rel in paths:
        src = staging / rel
        dst = resolve_inside(out_dir, rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            _remove(dst)  # os.replace cannot replace a non-empty folder (an .mlpackage bundle)
        os.replace(src, dst)


def remove_artifact_files(out_dir: Path, paths: list[str]) -> None:
    """Delete an artifact's files (when a rebuilt artifact failed, its old files must not linger)."""
    for rel in paths:
        try:
            _remove(resolve_inside(out_dir, rel))
        except (OSError, FacedermError) as exc:
            log.warning("could not remove %s: %s", rel, exc)


def file_entries(out_dir: Path, paths: list[str]) -> tuple[FileEntry, ...]:
    entries = []
    for rel in paths:
        sha, size = file_digest(out_dir / rel)
        entries.append(FileEntry(path=rel, sha256=sha, bytes=size))
    return tuple(entries)


class ManifestStore:
    """``manifest.json`` of one export dir, rewritten atomically after every change."""

    def __init__(self, out_dir: Path, card: ModelCard, **fields: object) -> None:
        self.path = out_dir / MANIFEST_FILE
        existing: Manifest | None = None
        if self.path.is_file():
            try:
                existing = Manifest.load(self.path)
            except FacedermError as exc:
                log.warning("ignoring unreadable %s: %s", self.path, exc)
        if existing is not None and existing.card.to_dict() == card.to_dict():
            self.manifest = replace(existing, **fields)  # type: ignore[arg-type]
        else:  # another model (or none) was exported here: its records do not describe this one
            self.manifest = Manifest(card=card, **fields)  # type: ignore[arg-type]
        self.save()

    def save(self) -> None:
        self.manifest.save(self.path)

    def put(self, record: ArtifactRecord) -> None:
        self.manifest = self.manifest.with_artifact(record)
        self.save()

    def set_probe(self, probe: Probe) -> None:
        self.manifest = replace(self.manifest, probe=probe)
        self.save()

    def mark_pending(self, key: str, target: str, precision: str, path: str) -> ArtifactRecord | None:
        """Before rebuilding ``key``: if it is listed ok, list it as failed (in progress) first."""
        old = next((a for a in self.manifest.artifacts if a.key == key), None)
        if old is not None and old.status == "ok":
            self.put(
                ArtifactRecord(
                    target=target,
                    precision=precision,
                    path=path,
                    status="failed",
                    error="re-export in progress (interrupted if this remains)",
                )
            )
        return old
