"""CI must run exactly the README's set-up commands, and the README must say what they do."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up in two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S)
    assert block, "README's set-up section has no code block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_the_readme_commands_verbatim() -> None:
    commands = _readme_setup_commands()
    assert len(commands) == 2, commands
    assert commands[0].startswith('pip install -e ".[all,dev]"') and "facederm-bench" in commands[0]
    assert commands[1] == "pytest"
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert command in ci_lines, f".ci/run does not run the README command {command!r}"


def test_top_level_layout_is_the_designed_one() -> None:
    for name in ("pyproject.toml", "README.md", "training", "export", "runtime", "benchmarks", "tests", ".ci/run"):
        assert (ROOT / name).exists(), name
