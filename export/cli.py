"""``facederm-export``: a run dir -> validated artifacts for ONNX Runtime, OpenVINO, Core ML and TensorRT.

Thin: parse, call :func:`facederm.export.export_run`, print the summary. A facederm error prints one
line and exits 2 (1 when an artifact failed its checks); ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import logging
import sys
import time

import click

from facederm.runtime.card import NOT_A_DIAGNOSIS
from facederm.runtime.cli_support import EXIT_PARTIAL, common_option, debug_option, one_line_errors

from .api import export_run
from .options import COREML_TARGETS, DEFAULT_CALIB_SIZE, DEFAULT_COREML_TARGET, INT8_WEIGHT_BITS_CHOICES, ExportOptions
from .parity import DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT


def _class_drops(values: tuple[str, ...]) -> dict[str, float]:
    # Labels are checked against the model's inside export_run; here only the LABEL=POINTS shape.
    from .parity import parse_class_drops

    return parse_class_drops(values, labels=[v.partition("=")[0].strip() for v in values])


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("run_dir", type=click.Path(file_okay=False), required=False)
@click.option(
    "--target",
    "-t",
    "targets",
    multiple=True,
    help="onnx (ort), openvino (ov), coreml (ios, mlpackage), tensorrt (trt, engine) or all; repeatable.",
)
@click.option(
    "--precision",
    "-p",
    "precisions",
    multiple=True,
    help="fp32, fp16, int8, int8-weights, palettize6, palettize4; repeatable (default: each target's set).",
)
@click.option(
    "--calib-data", default=None, help="Calibration data spec (default: every image the run trained on, all stages)."
)
@common_option(
    "--eval-data", default=None, help="Added to the gate's agreement check (always: the run's val + test patients)."
)
@click.option(
    "--eval-views",
    default="auto",
    show_default=True,
    help="Views per agreement image, 1-4 (identity, hflip, vflip, hvflip), or auto (>= 300 inputs).",
)
@click.option(
    "--calib-size",
    default=DEFAULT_CALIB_SIZE,
    show_default=True,
    type=int,
    help="Calibration inputs (class-stratified, patient-grouped; flipped views fill a small pool).",
)
@click.option(
    "--max-drop",
    default=DEFAULT_MAX_DROP,
    show_default=True,
    type=float,
    help="Macro recall drop vs fp32 (points) that fails when its 95% CI excludes 0.",
)
@click.option(
    "--max-class-drop",
    multiple=True,
    metavar="LABEL=POINTS",
    help="Largest allowed recall drop for one class, e.g. BCC=2; repeatable.",
)
@click.option(
    "--min-agreement",
    default=DEFAULT_MIN_AGREEMENT,
    show_default=True,
    type=float,
    help="Smallest one-sided 95% lower bound (percent) of top-label agreement with fp32 (0: off).",
)
@click.option(
    "--accuracy-control",
    is_flag=True,
    help="OpenVINO int8 with nncf.quantize_with_accuracy_control: layers back to float until the gate "
    "holds on the calibration images (minutes).",
)
@click.option(
    "--int8-search",
    is_flag=True,
    help="ONNX int8: also build per-tensor weights and keep the faster candidate (default: per-channel).",
)
@click.option(
    "--int8-weight-bits",
    type=click.Choice(INT8_WEIGHT_BITS_CHOICES),
    default="auto",
    show_default=True,
    help="ONNX Runtime and OpenVINO int8 weights: 7 bits decide alike on every CPU; 8 bits are more faithful where "
    "the products are exact (x86 with VNNI or AMX, ARM) and saturate on x86 without VNNI (the runtime warns there); "
    "auto: 8 when this machine's products are exact, else 7.",
)
@click.option(
    "--ensemble",
    is_flag=True,
    help="RUN_DIR is a CV dir (facederm-train --cv K): export the mean of its folds' probabilities as one graph "
    "(needs --eval-data: no image is held out from every fold).",
)
@click.option(
    "--coreml-target",
    default=DEFAULT_COREML_TARGET,
    show_default=True,
    type=click.Choice(COREML_TARGETS, case_sensitive=False),
    help="Core ML minimum iOS: auto (iOS16; palettized iOS18, one lookup table per channel group), iOS16, iOS18.",
)
@common_option("--batch-size", default=16, show_default=True, type=int, help="For the checks.")
@common_option("--out", "out_dir", type=click.Path(file_okay=False), help="The export dir.")
@click.option("--list-targets", is_flag=True, help="Show every target: precisions, validation, metadata, and exit.")
@common_option("--json", "as_json", is_flag=True, help="Here: the manifest, once written.")
@debug_option()
def main(
    run_dir: str | None,
    targets: tuple[str, ...],
    precisions: tuple[str, ...],
    calib_data: str | None,
    eval_data: str | None,
    eval_views: str,
    calib_size: int,
    max_drop: float,
    max_class_drop: tuple[str, ...],
    min_agreement: float,
    accuracy_control: bool,
    int8_search: bool,
    int8_weight_bits: str,
    ensemble: bool,
    coreml_target: str,
    batch_size: int,
    out_dir: str | None,
    list_targets: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """Export RUN_DIR (written by facederm-train) to deployable artifacts, each checked against fp32."""
    from rich.console import Console

    console = Console(width=max(Console().width, 170))
    if list_targets:
        from .summary import targets_table

        console.print(targets_table())
        return
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    with one_line_errors("facederm-export", debug):
        if run_dir is None or not targets or out_dir is None:
            missing = [n for n, v in (("RUN_DIR", run_dir), ("--target", targets), ("--out", out_dir)) if not v]
            raise click.UsageError(f"missing {', '.join(missing)} (or --list-targets)")
        options = ExportOptions(
            targets=targets,
            precisions=precisions or None,
            calib_data=calib_data,
            eval_data=eval_data,
            eval_views=eval_views,
            calib_size=calib_size,
            max_drop=max_drop,
            max_class_drop=_class_drops(max_class_drop),
            min_agreement=min_agreement,
            accuracy_control=accuracy_control,
            int8_search=int8_search,
            int8_weight_bits=int8_weight_bits,
            ensemble=ensemble,
            coreml_target=coreml_target,
            batch_size=batch_size,
        )
        result = export_run(run_dir, out_dir=out_dir, options=options, progress=True)
    if as_json:
        import json

        click.echo(json.dumps(result.manifest.to_dict(), indent=2))
        sys.exit(EXIT_PARTIAL if result.failed else 0)
    from .summary import reasons, summary_table

    console.print(summary_table(result.records))
    for number, reason in enumerate(reasons(result.records), 1):
        console.print(f"({number}) {reason}", soft_wrap=True, highlight=False, markup=False)
    floor = result.manifest.evaluation.get("fp32_under_noise") or {}
    if floor.get("agreement") is not None:
        console.print(
            f"noise floor: fp32 keeps its own top label on {floor['agreement'] * 100:.1f}% of "
            f"{floor['inputs']} inputs under pixel noise of sigma {floor['sigma_gray_levels']:g} gray level "
            "(an artifact's agreement reads against it)",
            highlight=False,
        )
    margins = result.manifest.evaluation.get("fp32_margins") or {}
    if margins.get("median") is not None:
        shares = ", ".join(f"{share * 100:.0f}% below {t}" for t, share in margins["below"].items())
        console.print(
            f"near-ties: fp32 top-1 margins (top-1 minus top-2 probability) over {margins['inputs']} inputs: "
            f"median {margins['median']:.2f}, {shares} (a few hundredths of change flips these)",
            highlight=False,
        )
    console.print(f"manifest: {result.manifest_path}  ({time.perf_counter() - start:.0f} s)  {NOT_A_DIAGNOSIS}")
    if result.failed:
        click.echo(
            f"facederm-export: {len(result.failed)} artifact(s) failed: "
            + "; ".join(f"{r.key}: {r.error}" for r in result.failed),
            err=True,
        )
        sys.exit(EXIT_PARTIAL)


if __name__ == "__main__":  # pragma: no cover
    main()
