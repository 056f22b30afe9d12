"""One CLI vocabulary: every facederm command (console scripts and ``python -m`` tools) spells the same thing the
same way, with the same help text, answers ``-h`` and ``--debug``, and still parses the old spellings."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import click
import click.testing
import pytest
import tomllib

from facederm.runtime.cli_support import OLD_NAMES, VOCABULARY, VocabularyOption

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "runtime": "facederm.runtime",
    "training": "facederm.training",
    "export": "facederm.export",
    "benchmarks": "facederm.benchmarks",
}
#: Spellings of vocabulary things that no command may show (use the canonical flag instead).
SYNONYMS = {
    "--batch",
    "--bs",
    "--backends",
    "--output",
    "--output-dir",
    "--out-dir",
    "--outdir",
    "--data-dir",
    "--dataset",
    "--gpu",
    "--cuda",
    "--verbose-json",
    "--as-json",
    "--traceback",
    "--face-sites",
}


def _scripts() -> dict[str, click.Command]:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    found = {}
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        found[name] = getattr(importlib.import_module(module), attr)
    return found


def _module_tools() -> dict[str, click.Command]:
    """Every ``python -m facederm...`` tool: a module with a ``__main__`` block; its ``main`` must be click."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if 'if __name__ == "__main__"' not in path.read_text(encoding="utf-8"):
                continue
            module = ".".join((package, *path.relative_to(ROOT / folder).with_suffix("").parts))
            found[f"python -m {module}"] = getattr(importlib.import_module(module), "main", None)
    return found


COMMANDS = {**_scripts(), **_module_tools()}


def _leaves(name: str, command: click.Command):
    if isinstance(command, click.Group):
        for sub_name, sub in command.commands.items():
            yield from _leaves(f"{name} {sub_name}", sub)
    else:
        yield name, command


LEAVES = dict(leaf for name, command in COMMANDS.items() for leaf in _leaves(name, command))


def _shown(option: click.Option) -> list[str]:
    hidden = getattr(option, "old_names", ())
    return [o for o in (*option.opts, *option.secondary_opts) if o not in hidden]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_tool_is_a_click_command_answering_h(name):
    command = COMMANDS[name]
    assert isinstance(command, click.Command), f"{name}: main is not a click command (argparse?)"
    result = click.testing.CliRunner().invoke(command, ["-h"])
    assert result.exit_code == 0 and "Usage:" in result.output, f"{name} -h: {result.output[-300:]}"


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_shared_flags_have_one_name_and_one_meaning(name):
    command = LEAVES[name]
    options = [p for p in command.params if isinstance(p, click.Option)]
    shown = {flag: option for option in options for flag in _shown(option)}
    assert "--debug" in shown, f"{name}: no --debug"
    synonyms = sorted(set(shown) & SYNONYMS)
    assert not synonyms, f"{name} spells {synonyms}; the vocabulary says {sorted(VOCABULARY)}"
    for flag, meaning in VOCABULARY.items():
        if flag in shown:
            assert isinstance(shown[flag], VocabularyOption), f"{name} {flag}: declare it with common_option"
            assert (shown[flag].help or "").startswith(meaning), f"{name} {flag}: help differs from the vocabulary"


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_old_spellings_still_parse_but_are_hidden(name):
    command = LEAVES[name]
    for option in (p for p in command.params if isinstance(p, click.Option)):
        for old, new in OLD_NAMES.items():
            if new in option.opts:
                assert old in option.opts and old not in _shown(option), f"{name}: {old} should alias {new}"
    help_text = click.testing.CliRunner().invoke(command, ["--help"], terminal_width=200).output
    visible = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))
    assert not visible & set(OLD_NAMES), f"{name} --help shows old names {sorted(visible & set(OLD_NAMES))}"
