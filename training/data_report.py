"""What went wrong while reading a data set. Never silent: every skipped sample is a problem here,
and ``strict`` mode turns the first problem into a :class:`DataError`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from facederm.runtime.errors import DataError

ProblemKind = Literal[
    "missing_file", "unreadable_image", "unknown_label", "duplicate_image_id", "missing_patient_id", "bad_row"
]
PROBLEM_KINDS: tuple[str, ...] = ProblemKind.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Problem:
    """One bad item: ``kind`` (see PROBLEM_KINDS), ``item`` (file or row it concerns), ``message``."""

    kind: str
    item: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.item}: {self.message}"


@dataclass
class DataReport:
    """Problems found while reading (each one a skipped sample) and notes (facts a user should know,
    e.g. "no patient ids: the split is by image")."""

    source: str = ""
    strict: bool = False
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, item: str, message: str) -> None:
        """Record a problem; in strict mode raise :class:`DataError` naming it instead."""
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")  # a bug in facederm, not in the data
        problem = Problem(kind, item, message)
        if self.strict:
            where = f" in {self.source}" if self.source else ""
            raise DataError(f"{problem}{where} (drop --strict to skip bad samples and count them)")
        self.problems.append(problem)

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    @property
    def count(self) -> int:
        return len(self.problems)

    def by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    def to_dict(self, max_items: int = 50) -> dict[str, Any]:
        return {
            "count": self.count,
            "by_kind": self.by_kind(),
            "items": [{"kind": p.kind, "item": p.item, "message": p.message} for p in self.problems[:max_items]],
            "notes": list(self.notes),
        }
