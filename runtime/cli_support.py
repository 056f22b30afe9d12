"""What every facederm command line shares: one-line errors and the exit codes.

A command prints one ``<prog>: error: ...`` line (what failed, on which input, what to do) instead of a
traceback; ``--debug`` re-raises so the traceback shows.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from .errors import FacedermError

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
