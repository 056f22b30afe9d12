"""synthetic[:N]: seeded, patient-structured over face and other sites, and learnable."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from facederm.runtime.errors import ConfigError
from facederm.training.data import open_dataset, select_sites, split_by_patient


@pytest.fixture(scope="module")
def dataset():
    return open_dataset("synthetic:300,size=48")


def test_same_spec_same_samples_and_pixels(dataset):
    again = open_dataset("synthetic:300,size=48")
    assert again.samples == dataset.samples
    for sample in dataset.samples[:5]:
        assert np.array_equal(again.load_rgb(sample), dataset.load_rgb(sample))
    other = open_dataset("synthetic:300,size=48,seed=1")
    assert [s.label for s in other.samples] != [s.label for s in dataset.samples]


def test_structure_patients_sites_and_labels(dataset):
    assert dataset.synthetic and len(dataset) == 300
    assert all(s.path.startswith("synthetic:") for s in dataset.samples)
    assert any("synthetic" in note for note in dataset.report.notes)
    images_per_patient = Counter(s.patient_id for s in dataset.samples)
    assert set(images_per_patient.values()) <= {1, 2, 3} and max(images_per_patient.values()) > 1
    face_share = len(select_sites(dataset.samples, "face")) / len(dataset)
    assert 0.2 < face_share < 0.5
    assert dataset.labels == ("AK", "BCC", "MEL", "NEV", "SCC", "SK")
    image = dataset.load_rgb(dataset.samples[0])
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8


def test_label_set_and_size_come_from_the_spec():
    ds = open_dataset("synthetic:40,size=32", label_set="study")
    assert set(ds.labels) <= {"BCC", "LE", "ROS", "SK", "AK", "SCC"} and "LE" in ds.labels
    assert ds.load_rgb(ds.samples[0]).shape == (32, 32, 3)
    assert len(open_dataset("synthetic")) == 600


@pytest.mark.parametrize("spec", ["synthetic:abc", "synthetic:0", "synthetic:10,size=4", "synthetic:10,colour=2"])
def test_bad_synthetic_specs_are_config_errors(spec):
    with pytest.raises(ConfigError, match="synthetic"):
        open_dataset(spec)


def _features(dataset, samples) -> np.ndarray:
    """Mean color of the lesion centre and of the whole image, and centre texture (std)."""
    feats = []
    for sample in samples:
        image = dataset.load_rgb(sample).astype(np.float32)
        h, w = image.shape[:2]
        centre = image[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].reshape(-1, 3)
        feats.append(np.concatenate([centre.mean(0), image.reshape(-1, 3).mean(0), centre.std(0)]))
    return np.array(feats)


def test_learnable_nearest_class_mean_beats_chance_on_unseen_patients(dataset):
    splits = split_by_patient(dataset.samples, seed=0)
    x_train, x_test = _features(dataset, splits.train), _features(dataset, splits.test)
    y_train = np.array([s.label for s in splits.train])
    y_test = np.array([s.label for s in splits.test])
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    labels = dataset.labels
    centroids = np.stack([x_train[y_train == label].mean(0) for label in labels])
    # the class means differ in color: the signal a network learns
    assert np.min(np.linalg.norm(centroids[:, None] - centroids[None], axis=-1) + np.eye(len(labels)) * 99) > 0.5
    predicted = np.array(labels)[np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    accuracy = float((predicted == y_test).mean())
    assert accuracy > 3 / len(labels)  # chance is 1/6; a nearest-mean toy gets well above it
