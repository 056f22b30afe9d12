"""A decoded-image cache, so training epochs do not decode the same PNGs again and again."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from facederm.runtime.errors import FacedermInputError
from facederm.runtime.preprocess import resize_shorter_side

from .dataset import DataSet, Sample

MAX_ASPECT_RATIO = 16  # no skin photo is thinner; a 1 x 1,000,000 PNG is an attack or an accident


class ImageCache:
    """Images of ``dataset`` decoded once, shorter side resized to ``shorter_side``, kept in memory.

    Least recently used images are dropped beyond ``max_bytes``. Random crops and flips happen after
    ``get``, so caching does not freeze augmentation. With DataLoader workers each worker holds its own
    cache (fill it before forking, e.g. with :meth:`warm`, to share pages copy-on-write).
    Returned arrays are read-only: copy before changing them in place.
    """

    def __init__(
        self, dataset: DataSet, shorter_side: int, max_bytes: int = 4 << 30, interpolation: str = "bilinear"
    ) -> None:
        if shorter_side < 1:
            raise ValueError(f"shorter_side must be >= 1, got {shorter_side}")
        self.dataset = dataset
        self.shorter_side = shorter_side
        self.max_bytes = max_bytes
        self.interpolation = interpolation
        self.hits = 0
        self.misses = 0  # = images decoded
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._images)

    def get(self, sample: Sample) -> np.ndarray:
        """uint8 HxWx3 RGB with the shorter side at ``shorter_side`` (decoded on first use only)."""
        key = sample.path
        with self._lock:
            image = self._images.get(key)
            if image is not None:
                self._images.move_to_end(key)
                self.hits += 1
                return image
        image = self.dataset.load_rgb(sample)
        height, width = image.shape[:2]
        if max(height, width) > MAX_ASPECT_RATIO * min(height, width):  # resizing it would need gigabytes
            raise FacedermInputError(f"{width}x{height}: aspect ratio beyond {MAX_ASPECT_RATIO}:1", sample.path)
        image = resize_shorter_side(image, self.shorter_side, self.interpolation)
        image = np.ascontiguousarray(image)
        image.setflags(write=False)
        with self._lock:
            self.misses += 1
            if key not in self._images and image.nbytes <= self.max_bytes:
                self._images[key] = image
                self._bytes += image.nbytes
                while self._bytes > self.max_bytes:
                    _, dropped = self._images.popitem(last=False)
                    self._bytes -= dropped.nbytes
        return image

    def warm(self, samples: list[Sample] | None = None, progress: bool = True) -> None:
        """Decode ``samples`` (default: the whole data set) now, with a progress bar."""
        from rich.progress import track

        for sample in track(
            samples or self.dataset.samples, description="decoding images", disable=not progress, transient=True
        ):
            self.get(sample)
