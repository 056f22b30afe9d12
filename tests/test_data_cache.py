"""ImageCache: decode once, resize the shorter side with the runtime's resize, respect the byte budget."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facederm.runtime.preprocess import resize_shorter_side
from facederm.training.data import ImageCache, open_dataset


class CountingLoader:
    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def __call__(self, sample):
        self.calls += 1
        return self.inner(sample)


@pytest.fixture()
def dataset():
    ds = open_dataset("synthetic:12,size=64")
    ds.loader = CountingLoader(ds.loader)
    return ds


def test_second_get_does_not_decode(dataset):
    cache = ImageCache(dataset, shorter_side=32)
    first = cache.get(dataset.samples[0])
    again = cache.get(dataset.samples[0])
    assert dataset.loader.calls == 1
    assert again is first and (cache.hits, cache.misses) == (1, 1)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    assert not first.flags.writeable  # a shared cached array cannot be changed by accident


def test_cached_image_equals_the_runtime_resize(dataset):
    cache = ImageCache(dataset, shorter_side=40)
    sample = dataset.samples[3]
    expected = resize_shorter_side(dataset.loader.inner(sample), 40)
    assert np.array_equal(cache.get(sample), expected)


def test_byte_budget_evicts_least_recently_used(dataset):
    one = 16 * 16 * 3
    cache = ImageCache(dataset, shorter_side=16, max_bytes=2 * one)
    a, b, c = dataset.samples[:3]
    cache.get(a)
    cache.get(b)
    cache.get(a)  # a is now the most recent
    cache.get(c)  # evicts b
    assert len(cache) == 2 and cache.nbytes <= 2 * one
    calls = dataset.loader.calls
    cache.get(a)
    assert dataset.loader.calls == calls
    cache.get(b)
    assert dataset.loader.calls == calls + 1


def test_non_square_files_keep_their_aspect_ratio(tmp_path):
    for label in ("x", "y"):
        (tmp_path / label).mkdir()
        Image.fromarray(np.zeros((30, 90, 3), np.uint8)).save(tmp_path / label / "wide.png")
    ds = open_dataset(f"folder:{tmp_path}")
    cache = ImageCache(ds, shorter_side=20)
    assert cache.get(ds.samples[0]).shape == (20, 60, 3)
    cache.warm(progress=False)
    assert cache.misses == 2 and len(cache) == 2


def test_extreme_aspect_ratio_is_refused_naming_the_file(tmp_path):
    from facederm.runtime.errors import FacedermInputError

    for label in ("x", "y"):
        (tmp_path / label).mkdir()
        Image.fromarray(np.zeros((2, 400, 3), np.uint8)).save(tmp_path / label / "strip.png")
    ds = open_dataset(f"folder:{tmp_path}")
    with pytest.raises(FacedermInputError, match="strip.png.*aspect ratio"):
        ImageCache(ds, shorter_side=64).get(ds.samples[0])
