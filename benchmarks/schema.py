"""The results schema (``facederm.bench/1``): one :class:`Row` per (artifact, backend, device), units in the field
names (``_ms``, ``_mb``, ``_ips`` = images per second); recall, precision and their deltas are fractions."""

from __future__ import annotations

import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from facederm.runtime.cpu import CPUINFO, describe_cpu
from facederm.runtime.errors import SchemaError, UnsupportedSchemaVersionError
from facederm.runtime.layout import Validated
from facederm.runtime.schema import from_dict, read_json, to_dict, write_json_atomic
from facederm.runtime.version import __version__

BENCH_SCHEMA = "facederm.bench/1"
#: Distributions whose versions go into results.json (missing ones: "not installed").
LIBRARIES = ("numpy", "torch", "timm", "onnx", "onnxruntime", "openvino", "nncf", "coremltools", "tensorrt")
Status = Literal["ok", "skipped", "failed"]


@dataclass(frozen=True)
class Stat:
    """A figure measured `n` times (once per repeat): median and min-max."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        values = [float(v) for v in values if v is not None]
        return cls(statistics.median(values), min(values), max(values), len(values)) if values else None


# Accuracy and agreement with the reference row: `native` (run here) or `twin` (the export's parity figures).
@dataclass(frozen=True)
class Accuracy:
    validated: Validated
    source: str
    n_images: int
    n_patients: int
    macro_recall: float | None
    macro_precision: float | None
    auc_macro: float | None
    per_class_recall: dict[str, float | None]
    agreement: float | None
    delta_macro_recall: float | None
    delta_macro_recall_ci: tuple[float | None, ...]
    per_class_recall_delta: dict[str, float | None]
    max_abs_prob_delta: float | None
    reference: str


@dataclass(frozen=True)
class ToolResult:
    """The same artifact timed by another tool (``benchmark_app``, a bare call, the web page); ratios facederm / tool."""

    tool: str
    status: Status
    reason: str = ""
    command: str = ""
    latency_p50_ms: Stat | None = None
    throughput_ips: Stat | None = None
    latency_ratio: float | None = None
    throughput_ratio: float | None = None


@dataclass(frozen=True)
class Row:
    """One (artifact, backend, device): what was measured, how, and what could not be."""

    key: str
    artifact: str  # target:precision (the baseline: torch:fp32)
    target: str
    precision: str
    backend: str
    device: str
    path: str
    status: Status
    reason: str
    validated: Validated
    note: str = ""
    speed_status: Status = "skipped"
    speed_reason: str = ""
    accuracy_status: Status = "skipped"
    accuracy_reason: str = ""
    compute_precision: str | None = None
    size_mb: float | None = None
    import_ms: Stat | None = None
    cold_load_ms: Stat | None = None
    first_inference_ms: Stat | None = None
    latency_ms: dict[str, Stat] = field(default_factory=dict)  # p50, p90, p99 at batch 1
    throughput_ips: Stat | None = None  # at the run's batch size
    peak_rss_mb: Stat | None = None
    latency_samples_ms: tuple[float, ...] = ()  # every batch-1 timing of the median repeat (plots)
    accuracy: Accuracy | None = None
    tools: tuple[ToolResult, ...] = ()

    @property
    def p50(self) -> float | None:
        stat = self.latency_ms.get("p50")
        return stat.median if stat else None


@dataclass(frozen=True)
class BenchConfig:
    """How the run was set up, to reproduce and compare it."""

    source: str
    source_kind: Literal["export", "run", "default"]
    export_dir: str
    run_dir: str
    data: str
    batch: int
    iterations: int | None
    seconds: float | None
    warmup: int
    threads: int
    repeats: int
    backends: tuple[str, ...]
    tool_seconds: float
    command: str = ""


@dataclass(frozen=True)
class Environment:
    """The machine and software the figures were measured on."""

    cpu_model: str
    logical_cpus: int
    physical_cores: int | None
    usable_cpus: int
    isa: dict[str, bool]
    os: str
    python: str
    versions: dict[str, str]
    threads: int


def describe_environment(threads: int, cpuinfo: Path = CPUINFO) -> Environment:
    """This machine, read once at the start of a run."""
    cpu = describe_cpu(cpuinfo)
    versions = {"facederm": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    hardware = (cpu["model"], cpu["logical_cpus"], cpu["physical_cores"], cpu["usable_cpus"], cpu["isa"])
    return Environment(*hardware, platform.platform(), platform.python_version(), versions, threads)


@dataclass(frozen=True)
class EvalInfo:
    """The evaluation images behind every native accuracy figure."""

    spec: str
    selection: str  # "the run's test split", ...
    synthetic: bool
    n_images: int
    n_patients: int
    labels: tuple[str, ...]
    class_counts: dict[str, int]


@dataclass(frozen=True)
class BenchResults:
    """Everything one `facederm-bench` run measured; the first row is the baseline (torch fp32 eager)."""

    created: str
    facederm_version: str
    config: BenchConfig
    environment: Environment
    eval: EvalInfo | None
    reference: str  # key of the row every agreement / delta is measured against
    rows: tuple[Row, ...]
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    schema: str = BENCH_SCHEMA

    def __post_init__(self) -> None:
        if self.schema != BENCH_SCHEMA:
            raise UnsupportedSchemaVersionError(f"bench results schema {self.schema!r} is not {BENCH_SCHEMA!r}")

    def row(self, key: str) -> Row | None:
        return next((r for r in self.rows if r.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "results") -> BenchResults:
        if not isinstance(data, dict) or "schema" not in data:
            raise SchemaError(f"{where}: not a facederm bench results file (no 'schema' field)")
        if data["schema"] != BENCH_SCHEMA:
            raise UnsupportedSchemaVersionError(f"{where}: schema {data['schema']!r} is not {BENCH_SCHEMA!r}")
        return from_dict(cls, data, where)

    @classmethod
    def load(cls, path: str | Path) -> BenchResults:
        return cls.from_dict(read_json(path), where=str(path))

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())
