"""Number formatting shared by the terminal table, the CSV-free reports and the plots."""

from __future__ import annotations

from ..schema import Row, Stat


def num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def stat(value: Stat | None, digits: int = 1, spread: bool = True) -> str:
    """``12.3 (11.9-13.0)``: median and min-max over repeats."""
    if value is None:
        return "-"
    if not spread or value.n < 2:
        return f"{value.median:.{digits}f}"
    return f"{value.median:.{digits}f} ({value.min:.{digits}f}-{value.max:.{digits}f})"


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage."""
    return "-" if value is None else f"{100 * value:.{digits}f}"


def points(value: float | None, digits: int = 2) -> str:
    """A fraction difference as signed percentage points."""
    return "-" if value is None else f"{100 * value:+.{digits}f}"


def delta_with_ci(row: Row) -> str:
    acc = row.accuracy
    if acc is None or acc.delta_macro_recall is None:
        return "-"
    ci = [c for c in acc.delta_macro_recall_ci if c is not None]
    span = f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if len(ci) == 2 else ""
    return f"{points(acc.delta_macro_recall)}{span}"


def status(row: Row) -> str:
    """``ok``, ``ok: speed skipped: <reason>``, ``skipped: <reason>`` or ``failed: <reason>``."""
    return f"{row.status}: {row.reason}" if row.reason else row.status


def label(row: Row) -> str:
    """Short row name for plots: artifact on backend."""
    return f"{row.artifact} / {row.backend}"
