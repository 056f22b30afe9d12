"""``facederm-explain``: Grad-CAM overlays (and lesion-mask localization scores) for a trained run."""

from __future__ import annotations

import click

from facederm.runtime.cli_support import common_option, debug_option, one_line_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@common_option("--out", "out", required=True, type=click.Path(file_okay=False), help="Here: the PNGs and explain.json.")
@click.option(
    "--masks",
    type=click.Path(file_okay=False),
    default=None,
    help="Lesion masks (<image name>_mask.png): score Grad-CAM energy inside the lesion vs chance.",
)
@common_option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@common_option("--json", "as_json", is_flag=True, help="Here: the summary.")
@debug_option()
def main(run_dir, images, out, masks, device, as_json, debug) -> None:
    """Write Grad-CAM overlays (image | heatmap, predicted label and probability) for IMAGE... ."""

    def body() -> None:
        from facederm.runtime.card import NOT_A_DIAGNOSIS

        from .gradcam import explain

        summary = explain(run_dir, list(images), out, masks_dir=masks, device=device, progress=not as_json)
        if as_json:
            import json

            click.echo(json.dumps(summary, indent=2))
            return
        for row in summary["images"]:
            where = ""
            if "localization" in row:
                loc = row["localization"]
                where = f"  energy in lesion {loc['energy_in_mask']:.2f} vs chance {loc['mask_share']:.2f}"
            click.echo(f"{row['image']}: {row['label']} p={row['probability']:.2f}{where}")
        mean = summary.get("localization_mean")
        if mean and mean["energy_in_mask"] is not None:
            click.echo(
                f"mean over {summary['n_scored']} masked images: energy in lesion {mean['energy_in_mask']:.3f}, "
                f"chance {mean['mask_share']:.3f}, ratio {mean['ratio']:.2f}, peak in lesion "
                f"{mean['peak_in_mask']:.2f}"
            )
        click.echo(f"wrote {out} ({NOT_A_DIAGNOSIS})")

    with one_line_errors("facederm-explain", debug):
        body()


if __name__ == "__main__":  # pragma: no cover
    main()
