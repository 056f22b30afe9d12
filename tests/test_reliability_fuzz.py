"""Fuzzing (issue 7 items 1-2): hostile images may only raise FacedermInputError subclasses, hostile
manifests and cards only SchemaError. CI-sized (about 2,500 image cases and 700 JSON documents);
``python -m facederm.runtime.reliability.fuzz`` runs 100,000 image cases."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from facederm.runtime.card import ModelCard
from facederm.runtime.errors import SchemaError
from facederm.runtime.layout import Manifest
from facederm.runtime.reliability.fuzz import PIL_MODES, check_one, png_header, seed_corpus

CORPUS = seed_corpus()
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], database=None)

pytestmark = pytest.mark.filterwarnings("ignore")  # PIL warns about every corrupt tag; outcomes are what count


def test_corpus_is_valid_to_start_with():
    # Mutations only mean something if the unmutated files decode.
    outcomes = {name: check_one(data) for name, data in CORPUS.items()}
    bad = {k: v for k, v in outcomes.items() if v != "ok" and not k.startswith("png_header")}
    assert not bad, bad
    assert outcomes["png_header_big"] == "ImageTooLargeError"


# --- images ------------------------------------------------------------------------------------------------
@settings(max_examples=400, **FAST)
@given(st.binary(max_size=1024))
def test_random_bytes(data: bytes):
    check_one(data)


_edit = st.tuples(
    st.sampled_from(["flip", "set", "field", "insert", "delete", "truncate", "repeat"]),
    st.floats(0, 1, exclude_max=True),
    st.integers(0, 2**32 - 1),
    st.binary(min_size=1, max_size=24),
)


def _apply(data: bytes, edits: list[tuple[str, float, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for op, where, value, blob in edits:
        if not buf:
            buf = bytearray(blob)
        pos = int(where * len(buf))
        if op == "flip":
            buf[pos] ^= 1 << (value % 8)
        elif op == "set":
            buf[pos] = value % 256
        elif op == "field":  # a size/offset/length field set to an extreme, big- or little-endian
            width = 2 if value % 2 else 4
            extreme = [0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF][value % 5] & ((1 << (8 * width)) - 1)
            buf[pos : pos + width] = extreme.to_bytes(width, "big" if value % 3 else "little")
        elif op == "insert":
            buf[pos:pos] = blob
        elif op == "delete":
            del buf[pos : pos + len(blob)]
        elif op == "truncate":
            del buf[max(1, pos) :]
        else:
            buf[pos:pos] = buf[pos : pos + len(blob)]
    return bytes(buf)


@settings(max_examples=900, **FAST)
@given(st.sampled_from(sorted(CORPUS)), st.lists(_edit, min_size=1, max_size=6))
def test_mutated_real_files(name: str, edits):
    check_one(_apply(CORPUS[name], edits))


@settings(max_examples=200, **FAST)
@given(st.sampled_from(sorted(CORPUS)), st.floats(0, 1, exclude_max=True))
def test_truncated_real_files(name: str, fraction: float):
    data = CORPUS[name]
    check_one(data[: int(len(data) * fraction)])


_dims = st.one_of(st.sampled_from([0, 1, 2**15, 2**16, 2**31 - 1, 2**32 - 1]), st.integers(0, 5000))


@settings(max_examples=200, **FAST)
@given(_dims, _dims, st.sampled_from([1, 2, 4, 8, 16, 3, 0]), st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
def test_declared_dimensions(width: int, height: int, depth: int, color: int):
    check_one(png_header(width, height, depth, color))


_dtypes = st.sampled_from(
    [np.uint8, np.int8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_, np.complex64]
)


@settings(max_examples=400, **FAST)
@given(hnp.arrays(_dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)))
def test_arrays_of_any_dtype_and_shape(arr: np.ndarray):
    check_one(arr)


@settings(max_examples=150, **FAST)
@given(hnp.arrays(np.float32, (4, 4, 3), elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_float_arrays_with_nan_and_inf(arr: np.ndarray):
    check_one(arr)


@settings(max_examples=250, **FAST)
@given(st.sampled_from(PIL_MODES), st.integers(0, 40), st.integers(0, 40), st.binary(min_size=0, max_size=64))
def test_pil_images_of_every_mode(mode: str, width: int, height: int, noise: bytes):
    img = Image.new(mode, (width, height))
    raw = img.tobytes()
    if raw and noise and mode not in ("La", "RGBa", "LAB", "HSV"):
        img = Image.frombytes(mode, (width, height), (noise * (len(raw) // len(noise) + 1))[: len(raw)])
    check_one(img)


# --- manifests and cards ----------------------------------------------------------------------------------
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _valid_manifest() -> dict[str, Any]:
    from facederm.runtime.card import Preprocessing
    from facederm.runtime.layout import ArtifactRecord, FileEntry

    card = ModelCard(
        arch="resnet10t", labels=("BCC", "SCC", "AK"), preprocessing=Preprocessing(crop=32, resize_shorter=36)
    )
    ov = ArtifactRecord(
        target="openvino",
        precision="fp32",
        path="openvino/model.xml",
        status="ok",
        sha256="1" * 64,
        files=(FileEntry("openvino/model.bin", "2" * 64, 9),),
    )
    return Manifest(card=card, artifacts=(ov,)).to_dict()


VALID = _valid_manifest()


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in a JSON tree (dict keys and list indices), for targeted replacement."""
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, prefix + (i,))
    return out


PATHS = _paths(VALID)


def _must_be_schema_error(doc: Any) -> None:
    for parse in (Manifest.from_dict, ModelCard.from_dict):
        with contextlib.suppress(SchemaError):
            parse(doc)


@settings(max_examples=200, **FAST)
@given(_json)
def test_random_json_documents(doc: Any):
    _must_be_schema_error(doc)


@settings(max_examples=400, **FAST)
@given(st.sampled_from(PATHS), _json, st.booleans())
def test_valid_manifest_with_one_subtree_replaced_or_removed(path: tuple, replacement: Any, remove: bool):
    doc = copy.deepcopy(VALID)
    if not path:
        doc = replacement
    else:
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if remove and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
    _must_be_schema_error(doc)
    _must_be_schema_error(doc.get("card") if isinstance(doc, dict) else doc)


@settings(max_examples=100, **FAST)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_random_file_contents_through_the_reader(tmp_path_factory, data: bytes):
    path = tmp_path_factory.mktemp("fuzz") / "manifest.json"
    path.write_bytes(data)
    with contextlib.suppress(SchemaError):
        Manifest.load(path)


def test_valid_manifest_still_parses():
    # The mutation tests start from a document that is valid: otherwise they would test nothing.
    assert Manifest.from_dict(json.loads(json.dumps(VALID))).artifacts[0].files[0].bytes == 9
