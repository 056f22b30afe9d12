"""The package metadata ships every subpackage, so a wheel (not only an editable install) is complete."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = {
    "runtime": "facederm.runtime",
    "training": "facederm.training",
    "export": "facederm.export",
    "benchmarks": "facederm.benchmarks",
}


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


def _pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {name.lower(): version for name, _, version in (line.partition("==") for line in lines if line)}


def _requirements() -> dict[str, str]:
    """{name: specifier} of every dependency and extra in pyproject.toml (self-references left out)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [s for extra in project["optional-dependencies"].values() for s in extra]
    out = {}
    for spec in specs:
        name = re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower()
        if name != "facederm":
            out[name] = spec[len(name) :].strip()
    return out


def test_dependencies_are_ranges_and_constraints_pin_every_one_inside_them() -> None:
    from packaging.specifiers import SpecifierSet

    requirements = _requirements()
    pinned = _pins(ROOT / "constraints.txt")
    exact = sorted(name for name, spec in requirements.items() if spec.startswith("=="))
    assert not exact, f"exact pins in pyproject (a library's users could not combine it): {exact}"
    assert set(requirements) - {"tensorrt"} <= set(pinned), "constraints.txt lacks " + ", ".join(
        sorted(set(requirements) - set(pinned) - {"tensorrt"})
    )
    outside = [
        f"{n}=={pinned[n]} not in {s}"
        for n, s in requirements.items()
        if n in pinned and pinned[n] not in SpecifierSet(s)
    ]
    assert not outside, outside


def test_lowest_constraints_are_the_base_dependencies_lower_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lowest = _pins(ROOT / ".ci" / "constraints-lowest.txt")
    for spec in project["dependencies"]:
        name, bound = re.match(r"([\w-]+)>=([\w.]+)", spec).groups()  # type: ignore[union-attr]
        assert lowest.get(name.lower()) == bound, (
            f"{name}: pyproject says >={bound}, .ci/constraints-lowest.txt {lowest.get(name.lower())}"
        )
