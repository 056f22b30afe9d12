"""What a measurement is, and the registry that lists them.

A measurement is one small step of the plan, registered by name. ``where`` says where it runs:

- ``"worker"``: inside the row's own fresh process (:mod:`facederm.benchmarks.worker`), so memory and
  cold-load figures are that row's alone. ``every_repeat`` ones run in each repeat's process; the others
  in the first repeat's only.
- ``"parent"``: in the bench process, with the worker results at hand (accuracy, the backends' own tools).

``skip_reason(row, settings)`` returns why a measurement does not apply to a row ("" = it applies); the
step is then recorded as skipped with that reason rather than silently left out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..plan import RowSpec
from ..timing import Budget


@dataclass(frozen=True)
class Settings:
    """Run-wide measurement settings, shared by every row (JSON-able: the worker receives them)."""

    batch: int = 8
    iterations: int | None = None
    seconds: float | None = 2.0
    warmup: int = 5
    threads: int = 2
    repeats: int = 3
    tool_seconds: float = 3.0
    input_size: int = 224
    eval_tensor: str = ""  # .npy of uint8 NCHW evaluation images ("" = none)
    work_dir: str = ""

    @property
    def budget(self) -> Budget:
        return Budget(iterations=self.iterations, seconds=None if self.iterations else self.seconds, warmup=self.warmup)


@dataclass
class Measured:
    """Raw results of one row: per measurement name, one dict per repeat that ran it."""

    row: RowSpec
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # measurement -> why it does not apply

    def add(self, name: str, value: dict[str, Any]) -> None:
        self.results.setdefault(name, []).append(value)

    def values(self, name: str, key: str) -> list[Any]:
        return [r[key] for r in self.results.get(name, []) if r.get(key) is not None]

    def first(self, name: str) -> dict[str, Any]:
        found = self.results.get(name)
        return found[0] if found else {}


class Measurement(ABC):
    """One registered step. Subclasses set ``name`` and ``where`` and implement :meth:`run`."""

    name: ClassVar[str]
    where: ClassVar[Literal["worker", "parent"]]
    every_repeat: ClassVar[bool] = True
    #: A backend's own tool (benchmark_app, bare onnxruntime): reported beside facederm's figures as ratios.
    is_tool: ClassVar[bool] = False
    #: Shown in the progress bar and the report's method section.
    describe: ClassVar[str] = ""

    def applies(self, row: RowSpec) -> bool:
        """Whether the measurement concerns this kind of row at all (benchmark_app: OpenVINO rows only).
        A measurement that does not apply is left out; one that applies but cannot run is reported skipped."""
        return True

    def skip_reason(self, row: RowSpec, settings: Settings) -> str:
        return "" if row.runs_here else (row.failed or row.speed_skip)

    @abstractmethod
    def run(self, ctx: Any) -> dict[str, Any]:
        """Measure; return JSON-able figures. Raise to record a failure (its message is kept)."""


REGISTRY: dict[str, Measurement] = {}


def register(cls: type[Measurement]) -> type[Measurement]:
    """Class decorator: add a measurement to the plan. Order of registration = order within a row."""
    REGISTRY[cls.name] = cls()
    return cls


def measurements(where: str) -> list[Measurement]:
    return [m for m in REGISTRY.values() if m.where == where]
