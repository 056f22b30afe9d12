"""The package metadata ships every subpackage, so a wheel (not only an editable install) is complete."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = {"runtime": "facederm.runtime", "training": "facederm.training",
                "export": "facederm.export", "benchmarks": "facederm.benchmarks"}


def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert config["package-dir"] == {name: folder for folder, name in CODE_FOLDERS.items()}
    found = set()
    for folder, package in CODE_FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; stale: {sorted(listed - found)}"


def test_base_install_is_the_torch_free_runtime() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    assert "onnxruntime" in base and "numpy" in base and "pillow" in base
    assert "torch" not in base and "timm" not in base
    assert "tensorrt" not in " ".join(project["optional-dependencies"]["all"])
