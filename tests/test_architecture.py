"""The package structure a newcomer relies on: imports go one way (benchmarks -> export -> training -> runtime),
no module imports another that imports it back (directly or in a circle), and file names are spelled once."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "runtime": "facederm.runtime",
    "training": "facederm.training",
    "export": "facederm.export",
    "benchmarks": "facederm.benchmarks",
}
#: An import may only go down this order (DESIGN.md, "Dependency direction").
LAYER = {"facederm.runtime": 0, "facederm.training": 1, "facederm.export": 2, "facederm.benchmarks": 3}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every facederm module ``name`` imports, at any level (a lazy import inside a function still couples)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in MODULES and t != name)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}
#: A package's ``__init__`` importing its own modules (re-exports, built-in registrations) is how Python packages
#: work, not a circle of ideas: those edges are left out of the circle check.
OWN = {
    name: {d for d in deps if d.startswith(name + ".")} if MODULES[name].name == "__init__.py" else set()
    for name, deps in GRAPH.items()
}


def _layer(module: str) -> int:
    return next(v for k, v in LAYER.items() if module == k or module.startswith(k + "."))


def test_imports_go_one_way_between_packages():
    upward = sorted(f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps if _layer(b) > _layer(a))
    assert not upward, "imports against the dependency direction:\n" + "\n".join(upward)


def test_no_import_circle():
    # Tarjan's strongly connected components: any component with two or more modules is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in GRAPH[node] - OWN[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


@pytest.mark.parametrize(
    "name",
    [
        "manifest.json",
        "config.json",
        "model.safetensors",
        "metrics.json",
        "splits.json",
        "history.json",
        "results.json",
    ],
)
def test_layout_names_are_spelled_only_in_runtime_layout(name):
    pattern = re.compile(rf"[\"']{re.escape(name)}[\"']")
    spelled = [str(p.relative_to(ROOT)) for p in MODULES.values() if pattern.search(p.read_text(encoding="utf-8"))]
    assert spelled == ["runtime/layout.py"], f"{name!r} is spelled in {spelled}; import it from facederm.runtime.layout"


#: benchmarks/ is a thin layer over the runtime and export APIs (issue 13): what it grows beyond this belongs there.
BENCHMARKS_MAX_LINES = 2000


def test_benchmarks_stay_a_thin_layer():
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in (ROOT / "benchmarks").rglob("*.py"))
    assert lines < BENCHMARKS_MAX_LINES, f"benchmarks/ has {lines} lines; move shared logic to runtime/ or export/"


@pytest.mark.parametrize("module", ["facederm.export", "facederm.export.cli", "facederm.benchmarks.cli"])
def test_cli_modules_start_without_the_heavy_libraries(module):
    """A CLI's ``--help`` and one-line errors come quickly: torch, scipy.stats and scikit-learn (seconds of import on
    a small CPU) load only where a command computes with them."""
    heavy = ("torch", "scipy.stats", "sklearn")
    code = f"import sys, {module}; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"importing {module} loads {done.stdout.strip()}"
