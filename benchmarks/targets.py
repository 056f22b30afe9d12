"""The speed targets, checked from a results.json: ``python -m facederm.benchmarks.targets RESULTS.json``.

- OpenVINO int8 is >= 1.5x faster than OpenVINO fp32 at batch 1 (p50),
- OpenVINO int8 is >= 3x faster than torch fp32 eager at batch 1,
- OpenVINO int8 loses at most 1 point of macro recall against torch fp32,
- facederm's latency is within 10% of benchmark_app's on every OpenVINO row.

Each target is a small registered function; prints pass / FAIL / n/a per target and exits 1 when one fails
(``--strict``: also when one cannot be evaluated).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import click

from facederm.runtime.cli_support import debug_option, one_line_errors

from .plan import BASELINE_KEY
from .schema import BenchResults, Row

MIN_INT8_VS_FP32 = 1.5
MIN_INT8_VS_TORCH = 3.0
MAX_RECALL_DROP_POINTS = 1.0
MAX_TOOL_OVERHEAD = 1.10


@dataclass(frozen=True)
class TargetCheck:
    name: str
    passed: bool | None  # None: cannot be evaluated from these results
    detail: str


def _find(results: BenchResults, target: str, precision: str, backend: str) -> Row | None:
    return next(
        (
            r
            for r in results.rows
            if r.target == target and r.precision == precision and r.backend == backend and r.p50 is not None
        ),
        None,
    )


def _baseline(results: BenchResults) -> Row | None:
    return next((r for r in results.rows if r.key == BASELINE_KEY and r.p50 is not None), None)


def speedup(slow: Row | None, fast: Row | None) -> float | None:
    """p50(slow) / p50(fast) at batch 1."""
    return slow.p50 / fast.p50 if slow is not None and fast is not None and slow.p50 and fast.p50 else None


def _speed_target(
    name: str, slow_of: Callable[[BenchResults], Row | None], minimum: float
) -> Callable[[BenchResults], TargetCheck]:
    def check(results: BenchResults) -> TargetCheck:
        slow, fast = slow_of(results), _find(results, "openvino", "int8", "openvino")
        ratio = speedup(slow, fast)
        if ratio is None or slow is None or fast is None:
            return TargetCheck(name, None, "rows missing or not timed")
        return TargetCheck(
            name, ratio >= minimum, f"{ratio:.2f}x (p50 {slow.p50:.2f} ms -> {fast.p50:.2f} ms; need >= {minimum}x)"
        )

    return check


def int8_recall(results: BenchResults) -> TargetCheck:
    name = f"OpenVINO int8 macro recall within {MAX_RECALL_DROP_POINTS:g} point of torch fp32"
    row = next((r for r in results.rows if r.target == "openvino" and r.precision == "int8" and r.accuracy), None)
    if row is None or row.accuracy is None or row.accuracy.delta_macro_recall is None:
        return TargetCheck(name, None, "no accuracy figures for the OpenVINO int8 row")
    delta = 100 * row.accuracy.delta_macro_recall
    ci = [100 * c for c in row.accuracy.delta_macro_recall_ci if c is not None]
    span = f", 95% CI [{ci[0]:+.2f}, {ci[1]:+.2f}]" if len(ci) == 2 else ""
    return TargetCheck(
        name, delta >= -MAX_RECALL_DROP_POINTS, f"{delta:+.2f} points{span} on {row.accuracy.n_images} images"
    )


def tool_overhead(results: BenchResults) -> TargetCheck:
    name = f"facederm latency within {100 * (MAX_TOOL_OVERHEAD - 1):.0f}% of benchmark_app"
    ratios = [
        (r.artifact, t.latency_ratio)
        for r in results.rows
        for t in r.tools
        if t.tool == "benchmark_app" and t.latency_ratio is not None
    ]
    if not ratios:
        return TargetCheck(name, None, "no benchmark_app figures")
    worst = max(ratio for _, ratio in ratios)
    detail = ", ".join(f"{artifact} {ratio:.2f}" for artifact, ratio in ratios)
    return TargetCheck(name, worst <= MAX_TOOL_OVERHEAD, f"facederm/benchmark_app p50: {detail}")


#: The targets, in the order they are printed. Add one here.
TARGETS: list[Callable[[BenchResults], TargetCheck]] = [
    _speed_target(
        f"OpenVINO int8 >= {MIN_INT8_VS_FP32}x faster than OpenVINO fp32 (batch 1)",
        lambda r: _find(r, "openvino", "fp32", "openvino"),
        MIN_INT8_VS_FP32,
    ),
    _speed_target(
        f"OpenVINO int8 >= {MIN_INT8_VS_TORCH:g}x faster than torch fp32 eager (batch 1)", _baseline, MIN_INT8_VS_TORCH
    ),
    int8_recall,
    tool_overhead,
]


def check_targets(results: BenchResults) -> list[TargetCheck]:
    return [target(results) for target in TARGETS]


def format_check(check: TargetCheck) -> str:
    verdict = {True: "pass", False: "FAIL", None: "n/a "}[check.passed]
    return f"[{verdict}] {check.name}: {check.detail}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results_json", type=click.Path(exists=True, dir_okay=False))
@click.option("--strict", is_flag=True, help="Also fail when a target cannot be evaluated.")
@debug_option()
def main(results_json: str, strict: bool, debug: bool) -> None:
    """Check the speed targets against a facederm-bench results.json."""
    with one_line_errors("facederm-bench targets", debug):
        checks = check_targets(BenchResults.load(results_json))
    for check in checks:
        click.echo(format_check(check))
    sys.exit(1 if any(c.passed is False or (strict and c.passed is None) for c in checks) else 0)


if __name__ == "__main__":
    main()
