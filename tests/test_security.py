"""Untrusted files (issue 7 items 2-4): no code execution from checkpoints, no file read outside an
export dir, and every artifact file checked against its sha256 on load."""

from __future__ import annotations

import ast
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from runtime_builders import RuntimeExport

from facederm.runtime import load
from facederm.runtime.errors import BackendUnavailableError, FacedermError, IntegrityError, SchemaError, UnsafePathError
from facederm.runtime.layout import Manifest
from facederm.runtime.loader import verify_artifact
from facederm.training.models import create_model
from facederm.training.weights import UnsafeCheckpointError, read_state_dict

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("runtime", "training", "export", "benchmarks")


# --- no untrusted code execution --------------------------------------------------------------------------
class _Payload:
    """Unpickling this calls open(marker, "w"): a stand-in for arbitrary code (os.system, ...)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_checkpoint(path: Path, marker: Path, legacy: bool = False) -> Path:
    state = {"head.classifier.weight": torch.zeros(3, 4), "evil": _Payload(marker)}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, legacy: bool, suffix: str):
    marker = tmp_path / "PWNED"
    path = _malicious_checkpoint(tmp_path / f"model{suffix}", marker, legacy)
    with pytest.raises(UnsafeCheckpointError, match=path.name):
        read_state_dict(path)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        create_model("resnet10t", 3, head_hidden=16, weights=path)
    assert not marker.exists(), "the pickle payload ran"


def test_the_payload_is_real(tmp_path: Path):
    # Guards the test above: unpickling the file without weights_only does run the payload.
    marker = tmp_path / "PWNED"
    path = _malicious_checkpoint(tmp_path / "model.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_plain_tensor_checkpoint_still_loads(tmp_path: Path):
    model = create_model("resnet10t", 3, head_hidden=16)
    path = tmp_path / "ok.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    again = create_model("resnet10t", 3, head_hidden=16, weights=path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"\x80\x04K\x01.", b"PK\x03\x04garbage"])
def test_garbage_checkpoint_is_a_clear_error(tmp_path: Path, content: bytes):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(FacedermError, match="weights.pt"):
        read_state_dict(path)


def test_corrupt_safetensors_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"\xff" * 8 + b"{not json")
    with pytest.raises(FacedermError, match="weights.safetensors"):
        read_state_dict(path)


_UNPICKLERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("cPickle", "load"),
    ("dill", "load"),
    ("dill", "loads"),
    ("cloudpickle", "load"),
    ("cloudpickle", "loads"),
    ("joblib", "load"),
    ("marshal", "load"),
    ("marshal", "loads"),
    ("shelve", "open"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
}


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """Calls that can execute code from a file: pickle-family loads, torch.load without
    weights_only=True, numpy.load with allow_pickle=True, yaml.load without a safe loader, eval/exec."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            bad = [n for n in names if n and n.split(".")[0] in {"pickle", "cPickle", "dill", "cloudpickle", "shelve"}]
            if bad:
                found.append(f"{filename}:{node.lineno}: imports {bad[0]}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        keywords = {k.arg: k.value for k in node.keywords}
        is_true = lambda v: isinstance(v, ast.Constant) and v.value is True  # noqa: E731
        where = f"{filename}:{node.lineno}"
        if (owner, name) in _UNPICKLERS:
            found.append(f"{where}: {owner}.{name}")
        elif owner == "torch" and name == "load" and not is_true(keywords.get("weights_only")):
            found.append(f"{where}: torch.load without weights_only=True")
        elif (
            owner in ("np", "numpy")
            and name == "load"
            and "allow_pickle" in keywords
            and not (isinstance(keywords["allow_pickle"], ast.Constant) and keywords["allow_pickle"].value is False)
        ):
            found.append(f"{where}: numpy.load with allow_pickle")
        elif owner == "yaml" and name in ("load", "unsafe_load", "full_load") and "Safe" not in ast.dump(node):
            found.append(f"{where}: yaml.{name} without SafeLoader")
        elif isinstance(func, ast.Name) and name in ("eval", "exec"):  # not model.eval()
            found.append(f"{where}: {name}()")
    return found


def test_no_facederm_module_can_unpickle():
    offenders = []
    files = [p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 20, "source tree not found"
    for path in files:
        offenders += unsafe_loads(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\npickle.load(f)",
        "torch.load(p)",
        "torch.load(p, weights_only=False)",
        "torch.load(p, map_location='cpu', weights_only=flag)",
        "np.load(p, allow_pickle=True)",
        "yaml.load(text)",
        "from dill import loads",
        "eval(text)",
    ],
)
def test_the_scanner_catches_unsafe_loads(snippet: str):
    assert unsafe_loads(snippet), snippet


def test_the_scanner_accepts_safe_loads():
    assert not unsafe_loads("torch.load(p, map_location='cpu', weights_only=True)\nnp.load(p)\njson.load(f)")


# --- export dirs: paths and symlinks ----------------------------------------------------------------------
class _OpenLog:
    """Paths opened by Python code in this process while active (an audit hook; hooks cannot be removed)."""

    opened: list[str] | None = None

    @classmethod
    def hook(cls, event: str, args: tuple) -> None:
        if cls.opened is not None and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            cls.opened.append(os.fsdecode(args[0]))


sys.addaudithook(_OpenLog.hook)


@pytest.fixture
def open_log():
    _OpenLog.opened = []
    yield _OpenLog.opened
    _OpenLog.opened = None


def _outside_copy(export: RuntimeExport, tmp_path: Path) -> tuple[Path, Path]:
    root = export.copy(tmp_path / "export")
    outside = tmp_path / "outside"
    outside.mkdir()
    return root, outside


def test_symlinked_artifact_out_of_the_dir_is_refused_unread(runtime_export, tmp_path: Path, open_log):
    root, outside = _outside_copy(runtime_export, tmp_path)
    decoy = outside / "model.onnx"
    shutil.move(root / "model.onnx", decoy)  # same bytes, same sha256: only the location is wrong
    (root / "model.onnx").symlink_to(decoy)
    open_log.clear()  # only what load() opens counts
    with pytest.raises(UnsafePathError, match="model.onnx"):
        load(root, target="onnx", precision="fp32")
    assert any(p.endswith("manifest.json") for p in open_log), "the open log is not recording"
    assert not [p for p in open_log if Path(p).resolve() == decoy.resolve()], "a file outside the dir was read"


def test_symlinked_weights_folder_out_of_the_dir_is_refused_unread(runtime_export, tmp_path: Path, open_log):
    pytest.importorskip("openvino")
    root, outside = _outside_copy(runtime_export, tmp_path)
    shutil.move(root / "openvino", outside / "openvino")
    (root / "openvino").symlink_to(outside / "openvino", target_is_directory=True)
    open_log.clear()
    with pytest.raises(UnsafePathError, match="openvino"):
        load(root, backend="openvino", target="openvino", precision="fp32")
    assert not [p for p in open_log if str(outside) in str(Path(p).resolve())]


@pytest.mark.parametrize("bad", ["../outside/model.onnx", "/etc/hostname", "C:/model.onnx", "sub\\model.onnx"])
def test_manifest_pointing_outside_is_refused_unread(runtime_export, tmp_path: Path, open_log, bad: str):
    root, outside = _outside_copy(runtime_export, tmp_path)
    shutil.copy(root / "model.onnx", outside / "model.onnx")
    data = json.loads((root / "manifest.json").read_text())
    for record in data["artifacts"]:
        if record["target"] == "onnx" and record["precision"] == "fp32":
            record["path"] = bad
    (root / "manifest.json").write_text(json.dumps(data))
    open_log.clear()
    with pytest.raises(UnsafePathError):
        load(root)
    assert not [p for p in open_log if str(outside) in str(Path(p).resolve()) or p.startswith("/etc")]


def test_malformed_manifest_is_a_schema_error_naming_it(runtime_export, tmp_path: Path):
    root = runtime_export.copy(tmp_path / "export")
    (root / "manifest.json").write_text('{"schema": "facederm.manifest/1", "card": ')
    with pytest.raises(SchemaError, match="manifest.json"):
        load(root)
    data = Manifest.load(runtime_export.root / "manifest.json").to_dict()
    data["schema"] = "facederm.manifest/2"
    (root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="manifest/2"):
        load(root)


# --- integrity: a flipped byte in any listed file -----------------------------------------------------------
def _listed_files(root: Path) -> list[tuple[str, str, str]]:
    """(target, precision, relative file) for every file that an ok artifact of the manifest lists."""
    out = []
    for record in Manifest.load(root / "manifest.json").ok_artifacts():
        paths = [record.path, *(f.path for f in record.files)]
        for rel in paths:
            if (root / rel).is_dir():  # a bundle (.mlpackage): every file inside is covered by its digest
                out += [
                    (record.target, record.precision, p.relative_to(root).as_posix())
                    for p in sorted((root / rel).rglob("*"))
                    if p.is_file()
                ]
            else:
                out.append((record.target, record.precision, rel))
    return out


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_listed_file_is_checked(runtime_export, tmp_path: Path):
    listed = _listed_files(runtime_export.root)
    assert any(rel.endswith(".bin") for _, _, rel in listed), "the OpenVINO weights must be listed"
    root = runtime_export.copy(tmp_path / "export")
    checked = []
    for target, precision, rel in listed:
        original = (root / rel).read_bytes()
        _flip_one_byte(root / rel)
        try:
            record = Manifest.load(root / "manifest.json").find(target, precision)
            try:
                load(root, target=target, precision=precision)
            except IntegrityError as exc:
                assert Path(rel).name in str(exc) and "sha256" in str(exc), str(exc)
                checked.append(rel)
                continue
            except BackendUnavailableError:
                # Core ML / TensorRT cannot run here, so load() never reads them; the check itself must still fail.
                with pytest.raises(IntegrityError) as info:
                    verify_artifact(root, record)
                assert Path(rel).name in str(info.value) or record.path in str(info.value), str(info.value)
                checked.append(rel)
                continue
            pytest.fail(f"{rel}: a flipped byte was not detected by load()")
        finally:
            (root / rel).write_bytes(original)
    assert len(checked) == len(listed)
    load(root, target="onnx", precision="fp32")  # restored: loads again


def test_missing_listed_file_is_an_integrity_error(runtime_export, tmp_path: Path):
    pytest.importorskip("openvino")
    root = runtime_export.copy(tmp_path / "export")
    (root / "openvino" / "model.bin").unlink()
    with pytest.raises(IntegrityError, match="model.bin"):
        load(root, backend="openvino", target="openvino", precision="fp32")


def test_every_file_in_the_export_dir_is_listed(runtime_export):
    # A file the manifest does not list could be swapped without any check: there must be none.
    root = runtime_export.root
    listed = {rel for _, _, rel in _listed_files(root)}
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"manifest.json"}
    assert present <= listed, sorted(present - listed)
