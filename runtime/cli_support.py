"""What every facederm command line shares: one-line errors, the exit codes and the flag vocabulary.

A command prints one ``<prog>: error: ...`` line (what failed, on which input, what to do) instead of a
traceback; ``--debug`` re-raises so the traceback shows.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from .errors import FacedermError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_PARTIAL = 1  # the command ran, but some inputs or artifacts failed (predict, the export gate, targets)
EXIT_FATAL = 2  # nothing useful could run: a bad option, a missing file, an unavailable backend
EXIT_INTERRUPTED = 130


@contextmanager
def one_line_errors(prog: str, debug: bool = False) -> Iterator[None]:
    """Turn a :class:`FacedermError` into one line on stderr and exit :data:`EXIT_FATAL`."""
    try:
        yield
    except FacedermError as exc:
        if debug:
            raise
        click.echo(f"{prog}: error: {exc}", err=True)
        sys.exit(EXIT_FATAL)
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


# -- the shared vocabulary -----------------------------------------------------------------------------------
#: The flags every command spells the same way for the same thing, with one help text each. A command that has
#: the thing uses the decorator below; ``tests/test_cli_vocabulary.py`` walks every command's ``--help``.
VOCABULARY: dict[str, str] = {
    "--data": "Data spec: pad-ufes-20:DIR, folder:DIR, csv:FILE or synthetic[:N].",
    "--eval-data": "Held-out evaluation images (a data spec); default: the run's own held-out split.",
    "--batch-size": "Images per batch.",
    "--backend": "Runtime backend: onnxruntime, openvino, coreml or tensorrt.",
    "--device": "Where to compute: auto, cpu, cuda[:N]; OpenVINO device names (CPU, GPU, NPU) pass through.",
    "--out": "Output directory.",
    "--face-regions": "Body sites counted as face (comma-separated).",
    "--json": "Print JSON instead of a table.",
    "--debug": "Show tracebacks and library logs.",
}
#: Old spellings, still parsed (hidden from --help) for one release: old -> canonical.
OLD_NAMES: dict[str, str] = {"--batch": "--batch-size", "--backends": "--backend"}


class VocabularyOption(click.Option):
    """A click option whose old spellings still parse but do not show in ``--help``."""

    def __init__(self, *args: Any, old_names: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.old_names = old_names

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown, self.opts = self.opts, [o for o in self.opts if o not in self.old_names]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def common_option(
    flag: str, *decls: str, help: str | None = None, old: tuple[str, ...] = (), **kwargs: Any
) -> Callable[[F], F]:
    """``@common_option("--batch-size", default=16)``: the flag with its shared help text (``help`` is added after
    it, for what is particular to one command) and its old spellings (:data:`OLD_NAMES`, plus ``old`` for a
    command's own) as hidden aliases."""
    text = VOCABULARY[flag] + (f" {help}" if help else "")
    old = (*(o for o, new in OLD_NAMES.items() if new == flag), *old)
    return click.option(flag, *old, *decls, cls=VocabularyOption, old_names=old, help=text, **kwargs)


def debug_option() -> Callable[[F], F]:
    """``--debug``: tracebacks and library logs instead of one-line errors."""
    return common_option("--debug", is_flag=True)
