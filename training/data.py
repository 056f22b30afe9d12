"""The data layer's public API, in one import: ``from facederm.training.data import open_dataset, ...``.

Readers (``pad-ufes-20:DIR``, ``folder:DIR``, ``csv:FILE``, ``synthetic[:N]``) live in a registry keyed
by the spec prefix (:data:`READERS`); splits are by patient; every problem is reported, none is silent.
"""

from __future__ import annotations

from .cache import ImageCache
from .data_report import PROBLEM_KINDS, DataReport, Problem
from .data_stats import class_weights, fingerprint, site_of
from .dataset import DataSet, Sample
from .labels import FACE_REGIONS, LABEL_SETS, LabelSet, get_label_set
from .sources import READERS, open_dataset, parse_spec
from .splits import SPLIT_NAMES, Splits, check_disjoint_patients, select_sites, split_by_patient
from .synthetic import render as render_synthetic

__all__ = [
    "FACE_REGIONS",
    "LABEL_SETS",
    "PROBLEM_KINDS",
    "READERS",
    "SPLIT_NAMES",
    "DataReport",
    "DataSet",
    "ImageCache",
    "LabelSet",
    "Problem",
    "Sample",
    "Splits",
    "check_disjoint_patients",
    "class_weights",
    "fingerprint",
    "get_label_set",
    "open_dataset",
    "parse_spec",
    "render_synthetic",
    "select_sites",
    "site_of",
    "split_by_patient",
]
