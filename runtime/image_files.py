"""Expand command-line inputs into image paths, lazily: directories are walked, never listed in full."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

#: File suffixes treated as images when walking a directory (files named explicitly are always tried).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})


def iter_image_inputs(
    inputs: Iterable[str | os.PathLike[str]], on_empty_dir: Callable[[Path], None] | None = None
) -> Iterator[str]:
    """Yield each input; a directory yields the images under it, recursively, in sorted order.

    Files given explicitly are yielded as they are (a missing or unreadable one then becomes an error
    result downstream). Hidden files and folders are skipped. ``on_empty_dir`` is called for a
    directory that holds no image.
    """
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            yield os.fspath(item)
            continue
        found = False
        for image in _walk(path):
            found = True
            yield image
        if not found and on_empty_dir is not None:
            on_empty_dir(path)


def _walk(root: Path) -> Iterator[str]:
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # sorted: stable output order
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield os.path.join(folder, name)
