"""Shared fixtures. Keep this file small: helpers that only one test file needs live in that file."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from facederm.runtime.card import ModelCard, Preprocessing
from facederm.runtime.layout import ArtifactRecord, FileEntry, Manifest

SHA_A = "a" * 64  # a well-formed sha256 for records whose files are not checked
SHA_B = "b" * 64


@pytest.fixture
def make_card() -> Callable[..., ModelCard]:
    """A factory of valid model cards; keyword arguments override fields."""

    def make(**overrides: Any) -> ModelCard:
        fields: dict[str, Any] = dict(
            arch="mobilenetv3_small_050",
            labels=("BCC", "SCC", "AK"),
            preprocessing=Preprocessing(crop=32, resize_shorter=36),
            label_names={"BCC": "Basal cell carcinoma"},
            seed=7,
        )
        fields.update(overrides)
        return ModelCard(**fields)

    return make


@pytest.fixture
def make_manifest(make_card: Callable[..., ModelCard]) -> Callable[..., Manifest]:
    """A factory of valid manifests with an ONNX and an OpenVINO artifact (the latter with a .bin file)."""

    def make(**overrides: Any) -> Manifest:
        fields: dict[str, Any] = dict(
            card=make_card(),
            artifacts=(
                ArtifactRecord(
                    target="onnx",
                    precision="fp32",
                    path="model.onnx",
                    status="ok",
                    sha256=SHA_A,
                    bytes=10,
                    format="onnx",
                ),
                ArtifactRecord(
                    target="openvino",
                    precision="fp32",
                    path="openvino/model.xml",
                    status="ok",
                    sha256=SHA_B,
                    bytes=5,
                    format="openvino",
                    files=(FileEntry(path="openvino/model.bin", sha256=SHA_A, bytes=3),),
                ),
            ),
            facederm_version="0.1.0",
        )
        fields.update(overrides)
        return Manifest(**fields)

    return make


# --- native crashes: a check that can kill the interpreter runs in its own process -----------------------------
#: Path fragments of a Python frame -> the native library that frame calls into (most specific first).
_NATIVE_FRAMES = (
    ("nncf", "NNCF / OpenVINO"),
    ("openvino", "OpenVINO"),
    ("onnxruntime", "ONNX Runtime"),
    ("onnx_graph.py", "ONNX Runtime"),
    ("tensorrt", "TensorRT"),
    ("coreml", "coremltools"),
    ("torch", "torch"),
)
_CHILD = """
import faulthandler, importlib, json, os, pickle, sys, traceback
faulthandler.enable(all_threads=True)  # a native crash prints every thread's Python frames to stderr
sys.path[:0] = json.loads(os.environ["FACEDERM_ISOLATED_PATH"])
job, out = sys.argv[1], sys.argv[2]
with open(job, "rb") as f:
    module, name, args, kwargs = pickle.load(f)
try:
    result = ("ok", getattr(importlib.import_module(module), name)(*args, **kwargs))
except BaseException as exc:
    result = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
with open(out, "wb") as f:
    pickle.dump(result, f)
"""


def cpu_description() -> str:
    """The CPU model and the ISA extensions that pick native kernels (AVX-512, VNNI, AMX), for crash reports."""
    from facederm.runtime.cpu import describe_cpu

    cpu = describe_cpu()
    isa = ", ".join(name for name, present in cpu["isa"].items() if present) or "no AVX2/AVX-512/AMX flags"
    return f"{cpu['model']} ({isa})"


def _native_library(stderr: str) -> str:
    frames = re.findall(r'File "([^"]+)", line \d+ in (\S+)', stderr)
    for path, function in frames:  # faulthandler lists the most recent call first
        for fragment, library in _NATIVE_FRAMES:
            if fragment in path.replace("\\", "/").lower():
                return f"{library} (in {Path(path).name}:{function})"
    return "an unidentified native library"


def run_isolated(fn: Callable[..., Any], *args: Any, what: str, timeout: float = 1200, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a fresh Python process; its (picklable) return value comes back.

    For checks whose native code can kill the interpreter (OpenVINO / ONNX Runtime int8 kernels picked per CPU):
    a signal becomes a test failure naming ``what``, the native library in the crashing Python frames and this
    CPU, and the rest of the suite goes on. ``fn`` must be a module-level function of an importable module
    (a test module or a ``*_fixtures`` module); return data and assert in the test, where pytest explains.
    """
    module = getattr(fn, "__module__", None)
    if module in (None, "__main__") or "<" in getattr(fn, "__qualname__", "<"):  # <locals>, <lambda>
        raise TypeError(f"run_isolated needs a module-level function, got {fn!r}")
    with tempfile.TemporaryDirectory(prefix="facederm-isolated-") as tmp:
        job, out = Path(tmp) / "job.pkl", Path(tmp) / "result.pkl"
        job.write_bytes(pickle.dumps((module, fn.__qualname__, args, kwargs)))
        env = {**os.environ, "FACEDERM_ISOLATED_PATH": json.dumps([p for p in sys.path if p])}
        try:
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, str(job), str(out)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"{what}: no answer within {timeout:.0f} s in its subprocess on CPU {cpu_description()}", pytrace=False
            )
            raise AssertionError from exc  # unreachable (pytest.fail raises); keeps type checkers calm
        sys.stdout.write(done.stdout)  # what the check printed shows up under the test, as in-process
        if done.returncode < 0 or not out.is_file():
            code = done.returncode
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}, no result"
            tail = "\n".join(done.stderr.strip().splitlines()[-25:])
            pytest.fail(
                f"{what}: native crash ({how}) in {_native_library(done.stderr)} on CPU {cpu_description()}."
                f" It ran in its own process, so the rest of the suite went on. Its stderr ends:\n{tail}",
                pytrace=False,
            )
        sys.stderr.write(done.stderr)
        status, *payload = pickle.loads(out.read_bytes())
    if status == "error":
        message, trace = payload
        pytest.fail(f"{what} raised in its subprocess: {message}\n{trace}", pytrace=False)
    return payload[0]


@pytest.fixture(scope="session", name="run_isolated")
def run_isolated_fixture() -> Callable[..., Any]:
    """:func:`run_isolated` as a fixture (session scope, so session fixtures can use it too)."""
    return run_isolated


# --- shared built artifacts (session fixtures; the builders live in export_builders / runtime_builders) ---------
@pytest.fixture(scope="session")
def runtime_export(tmp_path_factory: pytest.TempPathFactory):
    """A tiny export dir with every format the runtime reads (built with torch in a few seconds)."""
    from runtime_builders import build_runtime_export

    return build_runtime_export(tmp_path_factory.mktemp("runtime"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run dir (3 classes, 64 px, a few epochs on synthetic data)."""
    from export_builders import make_tiny_run

    return make_tiny_run(tmp_path_factory.mktemp("export-run") / "run")


@pytest.fixture(scope="session")
def full_export(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """``export_run(tiny_run, targets=["all"])`` once per session. The gate is opened wide (a 3-class 64 px
    net loses more to 4-bit weights than a real model): these tests check the artifacts; the gate has its own.
    It runs in a subprocess (:func:`run_isolated`): a native crash in a backend fails these tests with the backend
    and the CPU named instead of killing the test run."""
    from export_builders import export_everything

    out = tmp_path_factory.mktemp("export-all") / "out"
    return run_isolated(
        export_everything, tiny_run, out, what="export_run(tiny run, every target) with native int8 validation"
    )
