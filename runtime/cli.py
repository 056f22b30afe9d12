"""facederm-predict: run an exported model on images, files or folders, as a table or JSON lines.

Thin on purpose: everything here is :func:`facederm.runtime.load`, ``Model.predict_iter``,
:func:`facederm.runtime.image_files.iter_image_inputs` and ``facederm.runtime.backends()``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import backends as backend_registry
from .card import NOT_A_DIAGNOSIS
from .cli_support import EXIT_PARTIAL, common_option, debug_option, one_line_errors
from .clinical_files import ClinicalAnswersFile, read_answers
from .errors import ClinicalError
from .image_files import IMAGE_SUFFIXES, iter_image_inputs
from .loader import load
from .model import Model
from .prediction import Prediction

EXIT_INPUT_FAILED = EXIT_PARTIAL  # at least one image could not be predicted


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@common_option("--backend", help="Default: the best available.")
@common_option("--device", help="Default (auto): the backend's own.")
@click.option("--precision", help="Pick the export dir's artifact of this precision (fp32, fp16, int8 ...).")
@click.option("--target", help="Pick the export dir's artifact of this target (onnx, ort, openvino ...).")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1), help="Labels listed per image.")
@common_option("--json", "as_json", is_flag=True, help="One object per line.")
@common_option(
    "--batch-size",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="Decoded and run together (memory is bounded by this).",
)
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of the artifact against manifest.json.")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads (default: the backend's).")
@click.option("--precision-hint", help="OpenVINO compute precision, e.g. f32 (CPUs may default to bf16).")
@click.option(
    "--clinical",
    "clinical_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Clinical answers for a model trained with clinical fields: a CSV with an img_id column matched to the "
    "image file names (PAD's metadata.csv works), or JSON (image name -> record, or one record for all images).",
)
@click.option("--self-test", is_flag=True, help="Run the manifest's seeded probe and report the deviation.")
@click.option("--list-backends", is_flag=True, help="Show which backends run on this machine, and exit.")
@debug_option()
def main(
    path: Path | None,
    images: tuple[Path, ...],
    backend: str | None,
    device: str | None,
    precision: str | None,
    target: str | None,
    top_k: int,
    as_json: bool,
    batch_size: int,
    no_verify: bool,
    threads: int | None,
    precision_hint: str | None,
    clinical_file: Path | None,
    self_test: bool,
    list_backends: bool,
    debug: bool,
) -> None:
    """Predict skin-lesion classes for IMAGES (files or folders) with the exported model at PATH.

    PATH is an export dir (with manifest.json) or one artifact (.onnx, .ort, .xml, .mlpackage, .engine).
    Output is decision support for clinicians, not a diagnosis.
    """
    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    with one_line_errors("facederm-predict", debug):
        if list_backends:
            out.print(_backends_table())
            return
        if path is None or (not images and not self_test):
            raise click.UsageError("give an export dir (or artifact) and at least one image or folder")
        options: dict[str, Any] = {k: v for k, v in (("threads", threads), ("precision_hint", precision_hint)) if v}
        model = load(
            path,
            backend,
            None if device in (None, "auto") else device,
            precision=precision,
            target=target,
            verify=not no_verify,
            **options,
        )
        if self_test:
            result = model.self_test()
            err.print(str(result))
            if not result.passed:
                sys.exit(EXIT_INPUT_FAILED)
        answers = _clinical_answers(model, clinical_file, err)
        if images:
            failed = _predict(model, images, top_k, as_json, batch_size, out, err, answers)
            if answers is not None and answers.unmatched:
                err.print(
                    f"note: {len(answers.unmatched)} image(s) had no record in {answers.path.name} (e.g. "
                    f"{answers.unmatched[0]}): predicted with every clinical field missing",
                    markup=False,
                )
            if failed:
                sys.exit(EXIT_INPUT_FAILED)


def _clinical_answers(model: Model, clinical_file: Path | None, err: Console) -> ClinicalAnswersFile | None:
    """The --clinical file read against the model's schema (an image-only model refuses one)."""
    schema = model.clinical
    if clinical_file is None:
        if schema is not None:
            err.print(
                f"note: this model takes clinical answers ({', '.join(schema.names)}); without --clinical FILE every "
                "field is predicted as missing",
                markup=False,
            )
        return None
    if schema is None:
        raise ClinicalError(f"--clinical {clinical_file}: this model is image-only (trained without clinical fields)")
    answers = read_answers(clinical_file, schema)
    err.print(answers.describe(), markup=False)
    return answers


def _predict(
    model: Model,
    images: tuple[Path, ...],
    top_k: int,
    as_json: bool,
    batch_size: int,
    out: Console,
    err: Console,
    answers: ClinicalAnswersFile | None = None,
) -> int:
    """Stream predictions to ``out``; returns how many inputs failed."""
    empty_dirs: list[Path] = []
    sources = iter_image_inputs(images, on_empty_dir=empty_dirs.append)
    rows: list[Prediction] = []
    failed = 0
    with _progress(err) as progress:
        task = progress.add_task(f"predicting with {model.backend_name}", total=None)
        for prediction in model.predict_iter(sources, batch_size=batch_size, top_k=top_k, clinical=answers):
            failed += not prediction.ok
            if as_json:
                out.print(json.dumps(prediction.to_dict()), markup=False)
            else:
                rows.append(prediction)  # small objects only: decoded images are gone by now
            progress.advance(task)
    for folder in empty_dirs:
        err.print(f"error: {folder}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})", markup=False)
    if not as_json:
        out.print(_predictions_table(rows, model))
    (err if as_json else out).print(NOT_A_DIAGNOSIS, markup=False)  # JSON stdout stays machine-readable
    return failed + len(empty_dirs)


def _progress(err: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _predictions_table(rows: list[Prediction], model: Model) -> Table:
    table = Table(title=f"{model!r}", title_justify="left")
    table.add_column("input", overflow="fold", ratio=1)  # long paths wrap; the figures never do
    for column in ("label", "p", "top-k", "refer"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        if not row.ok:
            table.add_row(_escape(row.source), f"[red]error: {_escape(row.error or '')}[/red]", "", "", "")
            continue
        top = ", ".join(f"{label} {p:.2f}" for label, p in row.top_k)
        refer = "[bold yellow]refer[/bold yellow]" if row.refer else ""
        table.add_row(_escape(row.source), row.label or "", f"{row.confidence:.3f}", top, refer)
    return table


def _backends_table() -> Table:
    table = Table(title="facederm backends on this machine", title_justify="left")
    for column in ("backend", "available", "devices", "files", "why"):
        table.add_column(column, overflow="fold")
    for info in backend_registry.backends():
        mark = "[green]yes[/green]" if info.available else "[red]no[/red]"
        table.add_row(info.name, mark, ", ".join(info.devices), ", ".join(info.suffixes), _escape(info.reason))
    return table


def _escape(text: str) -> str:
    return escape(text)
