"""The speed targets, checked from a results.json: ``python -m facederm.benchmarks.targets RESULTS.json`` prints pass /
FAIL / n/a per target; exits 1 when one fails (``--strict``: also when one cannot be evaluated)."""

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


def _ov(precision: str) -> Callable[[Row], bool]:
    return lambda r: r.target == "openvino" and r.precision == precision and r.backend == "openvino"


def _speed_target(than: str, slow: Callable[[Row], bool], minimum: float) -> Callable[[BenchResults], TargetCheck]:
    name, fast = f"OpenVINO int8 >= {minimum:g}x faster than {than} (batch 1)", _ov("int8")

    def check(results: BenchResults) -> TargetCheck:
        before, after = (next((r for r in results.rows if m(r) and r.p50 is not None), None) for m in (slow, fast))
        if before is None or after is None or not before.p50 or not after.p50:
            return TargetCheck(name, None, "rows missing or not timed")
        ratio = before.p50 / after.p50
        detail = f"{ratio:.2f}x (p50 {before.p50:.2f} ms -> {after.p50:.2f} ms; need >= {minimum}x)"
        return TargetCheck(name, ratio >= minimum, detail)

    return check


def int8_recall(results: BenchResults) -> TargetCheck:
    name = f"OpenVINO int8 macro recall within {MAX_RECALL_DROP_POINTS:g} point of torch fp32"
    row = next((r for r in results.rows if r.target == "openvino" and r.precision == "int8" and r.accuracy), None)
    acc = row.accuracy if row else None
    if acc is None or acc.delta_macro_recall is None:
        return TargetCheck(name, None, "no accuracy figures for the OpenVINO int8 row")
    delta, ci = 100 * acc.delta_macro_recall, [100 * c for c in acc.delta_macro_recall_ci if c is not None]
    span = f", 95% CI [{ci[0]:+.2f}, {ci[1]:+.2f}]" if len(ci) == 2 else ""
    return TargetCheck(name, delta >= -MAX_RECALL_DROP_POINTS, f"{delta:+.2f} points{span} on {acc.n_images} images")


def tool_overhead(results: BenchResults) -> TargetCheck:
    name = f"facederm latency within {100 * (MAX_TOOL_OVERHEAD - 1):.0f}% of benchmark_app"
    tools = [(r.artifact, t) for r in results.rows for t in r.tools if t.tool == "benchmark_app"]
    ratios = [(artifact, t.latency_ratio) for artifact, t in tools if t.latency_ratio is not None]
    if not ratios:
        return TargetCheck(name, None, "no benchmark_app figures")
    detail = ", ".join(f"{artifact} {ratio:.2f}" for artifact, ratio in ratios)
    return TargetCheck(name, max(r for _, r in ratios) <= MAX_TOOL_OVERHEAD, f"facederm/benchmark_app p50: {detail}")


#: The targets, in the order they are printed. Add one here.
TARGETS: list[Callable[[BenchResults], TargetCheck]] = [
    _speed_target("OpenVINO fp32", _ov("fp32"), MIN_INT8_VS_FP32),
    _speed_target("torch fp32 eager", lambda r: r.key == BASELINE_KEY, MIN_INT8_VS_TORCH),
    int8_recall,
    tool_overhead,
]


def check_targets(results: BenchResults) -> list[TargetCheck]:
    return [target(results) for target in TARGETS]


def format_check(check: TargetCheck) -> str:
    return f"[{ {True: 'pass', False: 'FAIL', None: 'n/a '}[check.passed] }] {check.name}: {check.detail}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results_json", type=click.Path(exists=True, dir_okay=False))
@click.option("--strict", is_flag=True, help="Also fail when a target cannot be evaluated.")
@debug_option()
def main(results_json: str, strict: bool, debug: bool) -> None:
    """Check the speed targets against a facederm-bench results.json."""
    with one_line_errors("facederm-bench targets", debug):
        checks = check_targets(BenchResults.load(results_json))
    click.echo("\n".join(format_check(check) for check in checks))
    sys.exit(1 if any(c.passed is False or (strict and c.passed is None) for c in checks) else 0)


if __name__ == "__main__":
    main()
