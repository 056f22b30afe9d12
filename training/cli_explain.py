"""``facederm-explain``: Grad-CAM overlays (and lesion-mask localization scores) for a trained run."""

from __future__ import annotations

import click

from facederm.runtime.cli_support import one_line_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Folder for the PNGs + JSON.")
@click.option("--masks", type=click.Path(file_okay=False), default=None,
              help="Lesion masks (<image name>_mask.png): score Grad-CAM energy inside the lesion vs chance.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(run_dir, images, out, masks, device, debug) -> None:
    """Write Grad-CAM overlays (image | heatmap, predicted label and probability) for IMAGE... ."""

    def body() -> None:
        from facederm.runtime.card import NOT_A_DIAGNOSIS

        from .gradcam import explain

        summary = explain(run_dir, list(images), out, masks_dir=masks, device=device, progress=True)
        for row in summary["images"]:
            where = ""
            if "localization" in row:
                loc = row["localization"]
                where = f"  energy in lesion {loc['energy_in_mask']:.2f} vs chance {loc['mask_share']:.2f}"
            click.echo(f"{row['image']}: {row['label']} p={row['probability']:.2f}{where}")
        mean = summary.get("localization_mean")
        if mean and mean["energy_in_mask"] is not None:
            click.echo(f"mean over {summary['n_scored']} masked images: energy in lesion {mean['energy_in_mask']:.3f}, "
                       f"chance {mean['mask_share']:.3f}, ratio {mean['ratio']:.2f}, peak in lesion "
                       f"{mean['peak_in_mask']:.2f}")
        click.echo(f"wrote {out} ({NOT_A_DIAGNOSIS})")

    with one_line_errors("facederm-explain", debug):
        body()


if __name__ == "__main__":  # pragma: no cover
    main()
