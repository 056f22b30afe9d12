"""``facederm-data``: look at a data set before training on it. Thin: parse, call the library, print."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from facederm.runtime.cli_support import common_option, debug_option, one_line_errors

from .data_inspect import SITES, inspect_data
from .data_plot import plot_summary
from .labels import FACE_REGIONS, LABEL_SETS
from .splits import SPLIT_NAMES

SHOWN_PROBLEMS = 5  # in the table view; --json lists more


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Inspect the data sets facederm trains on."""


@main.command()
@click.argument("data_arg", metavar="[DATA]", required=False)
@common_option("--data", "data_opt", help="DATA as an argument works too.")
@common_option("--json", "as_json", is_flag=True)
@click.option(
    "--site",
    type=click.Choice(["face", "other", "all"]),
    default="all",
    show_default=True,
    help="Keep face images, other-site images, or all, before splitting.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the patient split.")
@click.option("--strict", is_flag=True, help="Fail on the first data problem instead of skipping and counting.")
@click.option("--verify", is_flag=True, help="Decode every image (slow) to find unreadable files.")
@click.option(
    "--label-set",
    type=click.Choice(sorted(LABEL_SETS)),
    default=None,
    help="Map labels onto this set (default: the reader's own, else inferred from the data).",
)
@common_option("--face-regions", default=",".join(FACE_REGIONS), show_default=True)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also save a PNG bar chart of images per class x split x site.",
)
@debug_option()
def inspect(
    data_arg: str | None,
    data_opt: str | None,
    as_json: bool,
    site: str,
    seed: int,
    strict: bool,
    verify: bool,
    label_set: str | None,
    face_regions: str,
    plot: str | None,
    debug: bool,
) -> None:
    """Counts per class x site x split, patients, class weights and data problems of DATA.

    DATA is pad-ufes-20:DIR, folder:DIR, csv:FILE or synthetic[:N][,size=S][,seed=K].
    """
    if (data_arg is None) == (data_opt is None):
        raise click.UsageError("give the data spec once: facederm-data inspect --data SPEC (or DATA)")
    data = data_arg or data_opt or ""
    regions = tuple(r.strip().upper() for r in face_regions.split(",") if r.strip())
    with one_line_errors("facederm-data", debug):
        summary = inspect_data(
            data,
            site=site,
            seed=seed,
            strict=strict,
            verify=verify,  # type: ignore[arg-type]
            label_set=label_set,
            face_regions=regions,
            progress=not as_json,
        )
        if plot:
            plot_summary(summary, plot)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary, Console())
    if plot and not as_json:
        click.echo(f"plot: {plot}")


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """The human view of :func:`facederm.training.data_inspect.summarize`'s result."""
    kind = "SYNTHETIC data (not clinical photos)" if summary["synthetic"] else "data"
    console.print(
        f"[bold]{kind}[/bold]: {summary['source']}  label set: {summary['label_set']['name']}  "
        f"site: {summary['site']}  seed: {summary['seed']}"
    )
    console.print(
        f"{summary['images']} images, {summary['patients']} patients, "
        f"{len(summary['label_set']['labels'])} classes; face {summary['sites']['face']}, "
        f"other {summary['sites']['other']}"
    )
    table = Table(title="images per class x split x site (face / other)")
    table.add_column("class")
    for name in SPLIT_NAMES:
        table.add_column(f"{name}\n{summary['splits'][name]['patients']} pat.", justify="right")
    table.add_column("all", justify="right")
    table.add_column("weight", justify="right")
    for label in summary["label_set"]["labels"]:
        cells = []
        for name in SPLIT_NAMES:
            by_site = summary["splits"][name]["classes_by_site"][label]
            cells.append(" / ".join(str(by_site[s]) for s in SITES))
        table.add_row(label, *cells, str(summary["classes"][label]), f"{summary['class_weights'][label]:.2f}")
    table.add_row(
        "all", *(str(summary["splits"][n]["images"]) for n in SPLIT_NAMES), str(summary["images"]), "", style="bold"
    )
    console.print(table)
    console.print(f"patients shared between splits: {summary['shared_patients']}")
    problems = summary["problems"]
    if problems["count"]:
        kinds = ", ".join(f"{k} {n}" for k, n in problems["by_kind"].items())
        console.print(f"[yellow]{problems['count']} problem(s) skipped[/yellow]: {kinds}")
        for item in problems["items"][:SHOWN_PROBLEMS]:
            console.print(f"  {item['kind']}: {item['item']}: {item['message']}", markup=False, highlight=False)
        if problems["count"] > SHOWN_PROBLEMS:
            console.print(
                f"  ... {problems['count'] - SHOWN_PROBLEMS} more (--json lists the first {len(problems['items'])})"
            )
    else:
        console.print("no data problems found" + ("" if summary.get("verified") else " (--verify decodes every image)"))
    for note in problems["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)


if __name__ == "__main__":
    main()
