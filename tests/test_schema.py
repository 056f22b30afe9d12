"""The JSON layer under the card and manifest: read_json, atomic writes, path containment
(resolve_inside, symlinks) and file digests (issue 2 item 3, issue 7 items 2 and 4)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from facederm.runtime.errors import SchemaError, UnsafePathError
from facederm.runtime.layout import check_relative_path, file_digest, resolve_inside
from facederm.runtime.schema import from_dict, read_json, to_dict, write_json_atomic


@dataclass(frozen=True)
class _Inner:
    n: int
    kind: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class _Outer:
    name: str
    inner: _Inner
    items: tuple[_Inner, ...] = ()
    extra: dict[str, float] = field(default_factory=dict)
    maybe: int | None = None


def test_generic_round_trip():
    obj = _Outer("x", _Inner(1, "b"), (_Inner(2), _Inner(3)), {"p": 0.5}, None)
    assert from_dict(_Outer, to_dict(obj)) == obj
    assert to_dict(obj)["items"] == [{"n": 2, "kind": "a"}, {"n": 3, "kind": "a"}]  # tuples -> JSON lists


def test_generic_errors_name_the_nested_field():
    data = {"name": "x", "inner": {"n": 1}, "items": [{"n": 1}, {"n": "two"}]}
    with pytest.raises(SchemaError, match=r"_Outer\.items\[1\]\.n.*integer"):
        from_dict(_Outer, data)
    with pytest.raises(SchemaError, match=r"_Outer\.extra\.p.*number"):
        from_dict(_Outer, {"name": "x", "inner": {"n": 1}, "extra": {"p": "high"}})
    with pytest.raises(SchemaError, match=r"_Outer\.inner\.kind.*'c'"):
        from_dict(_Outer, {"name": "x", "inner": {"n": 1, "kind": "c"}})
    with pytest.raises(SchemaError, match=r"_Outer\.maybe"):
        from_dict(_Outer, {"name": "x", "inner": {"n": 1}, "maybe": "1"})


def test_ints_are_accepted_as_floats_but_not_the_reverse():
    assert from_dict(_Outer, {"name": "x", "inner": {"n": 1}, "extra": {"p": 1}}).extra == {"p": 1.0}
    with pytest.raises(SchemaError):
        from_dict(_Outer, {"name": "x", "inner": {"n": 1.0}})


# --- read_json / write_json_atomic -------------------------------------------------------------------
def test_read_json_malformed_names_file_and_position(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text('{"a": 1,\n "b": }')
    with pytest.raises(SchemaError, match=r"bad\.json.*malformed JSON.*line 2"):
        read_json(path)


def test_read_json_missing_file(tmp_path: Path):
    with pytest.raises(SchemaError, match="absent.json"):
        read_json(tmp_path / "absent.json")


def test_write_json_atomic_replaces_whole_file(tmp_path: Path):
    path = tmp_path / "m.json"
    write_json_atomic(path, {"v": list(range(1000))})
    write_json_atomic(path, {"v": 2})
    assert read_json(path) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


# --- path containment ----------------------------------------------------------------------------------
def test_resolve_inside_accepts_files_in_the_dir(tmp_path: Path):
    (tmp_path / "openvino").mkdir()
    (tmp_path / "openvino" / "model.xml").write_text("x")
    assert resolve_inside(tmp_path, "openvino/model.xml") == (tmp_path / "openvino" / "model.xml").resolve()


def test_resolve_inside_refuses_symlinked_file_pointing_out(tmp_path: Path):
    outside = tmp_path / "secret.txt"
    outside.write_text("private")
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.onnx").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="model.onnx"):
        resolve_inside(export, "model.onnx")


def test_resolve_inside_refuses_symlinked_dir_pointing_out(tmp_path: Path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "model.bin").write_bytes(b"\0")
    export = tmp_path / "export"
    export.mkdir()
    (export / "openvino").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="openvino/model.bin"):
        resolve_inside(export, "openvino/model.bin")


def test_resolve_inside_allows_symlink_within_dir_and_export_dir_itself_a_symlink(tmp_path: Path):
    real = tmp_path / "real_export"
    real.mkdir()
    (real / "model.onnx").write_bytes(b"onnx")
    (real / "alias.onnx").symlink_to(real / "model.onnx")
    linked = tmp_path / "linked_export"
    linked.symlink_to(real, target_is_directory=True)
    assert resolve_inside(linked, "alias.onnx") == (real / "model.onnx").resolve()


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "C:\\x", "D:/x", "a\\b"])
def test_resolve_inside_refuses_unsafe_spellings(tmp_path: Path, bad):
    with pytest.raises(UnsafePathError):
        resolve_inside(tmp_path, bad)
    with pytest.raises(UnsafePathError):
        check_relative_path(bad)


# --- digests ----------------------------------------------------------------------------------------------
def test_file_digest_of_a_file(tmp_path: Path):
    data = os.urandom(3 << 20) + b"tail"  # more than one read chunk
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    assert file_digest(path) == (hashlib.sha256(data).hexdigest(), len(data))
    assert file_digest(path, chunk=7) == file_digest(path)


def _make_bundle(root: Path, files: dict[str, bytes]) -> Path:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    return root


def test_file_digest_of_a_directory(tmp_path: Path):
    files = {"Manifest.json": b"{}", "Data/weights/weight.bin": b"w" * 100, "Data/model.mil": b"mil"}
    a = _make_bundle(tmp_path / "a.mlpackage", files)
    b = _make_bundle(tmp_path / "b.mlpackage", dict(reversed(list(files.items()))))  # other creation order
    digest, size = file_digest(a)
    assert size == sum(len(v) for v in files.values())
    assert file_digest(b) == (digest, size), "directory digest must not depend on creation order"
    # Any content change, rename or added file changes the digest.
    (b / "Data/model.mil").write_bytes(b"miL")
    assert file_digest(b)[0] != digest
    c = _make_bundle(tmp_path / "c.mlpackage", {**files})
    (c / "Data/model.mil").rename(c / "Data/model2.mil")
    assert file_digest(c)[0] != digest
    d = _make_bundle(tmp_path / "d.mlpackage", {**files, "extra": b""})
    assert file_digest(d)[0] != digest


def test_file_digest_directory_is_not_fooled_by_moving_bytes_between_files(tmp_path: Path):
    a = _make_bundle(tmp_path / "a", {"x": b"ab", "y": b"c"})
    b = _make_bundle(tmp_path / "b", {"x": b"a", "y": b"bc"})
    assert file_digest(a)[0] != file_digest(b)[0]


def test_file_digest_directory_encodes_file_boundaries(tmp_path: Path):
    # Without a length per file, {x: "a" + "y\0" + "c"} and {x: "a", y: "c"} hash the same byte stream.
    one = _make_bundle(tmp_path / "one", {"x": b"ay\0c"})
    two = _make_bundle(tmp_path / "two", {"x": b"a", "y": b"c"})
    assert file_digest(one)[0] != file_digest(two)[0]


def test_file_digest_directory_refuses_symlink_out(tmp_path: Path):
    (tmp_path / "secret").write_bytes(b"private")
    bundle = _make_bundle(tmp_path / "model.mlpackage", {"Manifest.json": b"{}"})
    (bundle / "weight.bin").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafePathError, match="weight.bin"):
        file_digest(bundle)
