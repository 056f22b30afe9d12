"""``train(TrainConfig) -> TrainResult``: the whole of ``facederm-train`` as a library call.

Split once by patient over all samples, then run the protocol's stages (each keeps its body sites from
each split, so no patient crosses splits in any stage), keep the best epoch by validation macro recall,
evaluate on the test patients' images of the protocol's site, and write the run dir.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from timm.utils import ModelEmaV3

from facederm.runtime.card import Calibration, ModelCard, Referral
from facederm.runtime.clinical import ClinicalSchema
from facederm.runtime.errors import ConfigError, DataError
from facederm.runtime.layout import HISTORY_FILE, METRICS_FILE
from facederm.runtime.schema import write_json_atomic
from facederm.runtime.version import __version__

from . import checkpoint as ckpt
from .calibrate import calibration_report, fit_on_validation
from .clinical import encode_samples, fit_run_schema, fusion_report, summary_line
from .config import TrainConfig, parse_refer_below, recorded_defaults
from .data import DataSet, ImageCache, Sample, class_weights, fingerprint, open_dataset, select_sites, split_by_patient
from .distributed import World, barrier, close_world, init_world, write_state_hash
from .engine import (
    AugmentedSet,
    Stability,
    make_loader,
    make_optimizer,
    predict_sharded,
    train_one_epoch,
    warmup_cosine,
)
from .evaluate import preprocess_samples, resolve_device, split_metrics
from .extra_data import ExtraData, open_extra_data, with_extra_images
from .metrics import macro_recall
from .models import CLINICAL_FUSIONS, create_model, default_preprocessing
from .plots import plot_confusion_matrix, plot_history, plot_roc
from .protocols import Protocol, Stage, get_protocol
from .rundir import load_metrics, recorded_splits, save_run
from .transforms import Normalize, TrainAugment

MALIGNANT = ("BCC", "MEL", "SCC")
#: Options that must match when resuming (the rest, e.g. workers or device, may change).
RESUME_KEYS = (
    "data",
    "arch",
    "protocol",
    "epochs",
    "img_size",
    "batch_size",
    "lr",
    "finetune_lr_scale",
    "pixel_noise",
    "head_hidden",
    "head_dropout",
    "label_smoothing",
    "rotation",
    "color_jitter",
    "stability_weight",
    "stability_noise",
    "ema_decay",
    "quant_aware_epochs",
    "quant_aware_lr",
    "seed",
    "label_set",
    "face_regions",
    "val_fraction",
    "test_fraction",
    "weights",
    "pretrained",
    "imagenet_weights",
    "clinical",
    "clinical_dropout",
    "clinical_hidden",
    "clinical_fusion",
    "extra_data",
)

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """Where the run was written and what it measured."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    card: ModelCard | None = None


@dataclass
class _StageData:
    stage: Stage
    train: list[Sample]
    val: list[Sample]


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str]:
    import timm

    return {
        "facederm": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
    }


def _stage_data(protocol: Protocol, splits, dataset: DataSet, extras: list[ExtraData]) -> list[_StageData]:
    stages = []
    extra = [s for source in extras for s in source.samples]
    for stage in protocol.stages:
        train = select_sites(splits.train, stage.site, dataset.face_regions)
        if stage.extra is not None:
            train += select_sites(extra, stage.extra, dataset.face_regions)  # training only, never val or test
        val = select_sites(splits.val, stage.site, dataset.face_regions)
        if not train:
            raise DataError(
                f"{dataset.spec}: protocol {protocol.name!r} stage {stage.name!r} has no {stage.site} training images"
            )
        stages.append(_StageData(stage, train, val))
    return stages


def _check_resumable(config: TrainConfig, state: dict[str, Any]) -> None:
    # An option a run from an older facederm did not record had its default value then (pixel noise came
    # later, with a default of 12: before it there was none).
    defaults = {**recorded_defaults(), "pixel_noise": 0.0}
    saved = {k: state.get("config", {}).get(k, defaults.get(k)) for k in RESUME_KEYS}
    current = config.to_dict()
    changed = [k for k in RESUME_KEYS if saved[k] != current.get(k)]
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ConfigError(f"{config.out}: cannot resume with different options ({detail})")


class _Reporter:
    """Progress bar and log lines on rank 0; silent elsewhere or with ``progress=False``."""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
            transient=False,
        )

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message)

    def __enter__(self) -> _Reporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)


def train(
    config: TrainConfig, *, on_epoch_end: EpochCallback | None = None, console: Console | None = None
) -> TrainResult:
    """Train ``config.arch`` on ``config.data`` with ``config.protocol`` and write ``config.out``.

    ``on_epoch_end`` gets each history row after its checkpoint is written (tests use it to interrupt
    a run). Under ``torchrun`` every rank calls this; rank 0 writes files.
    """
    started = time.time()
    run_dir = Path(config.out)
    device = resolve_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    world = init_world(device)
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    reporter = _Reporter(config.progress and world.is_main, console)
    try:
        return _train(config, run_dir, device, world, reporter, started, on_epoch_end)
    finally:
        close_world(world)


def _train(
    config: TrainConfig,
    run_dir: Path,
    device: torch.device,
    world: World,
    reporter: _Reporter,
    started: float,
    on_epoch_end: EpochCallback | None,
) -> TrainResult:
    state: dict[str, Any] | None = None
    groups: dict[str, dict[str, torch.Tensor]] = {}
    if config.resume and ckpt.has_checkpoint(run_dir):
        state, groups = ckpt.load_checkpoint(run_dir)
        _check_resumable(config, state)
        if state.get("finished"):
            reporter.log(f"{run_dir}: already finished; nothing to resume")
            return TrainResult(run_dir, load_metrics(run_dir), state.get("history", []))
    elif config.resume:
        reporter.log(f"{run_dir}: no checkpoint yet, starting from the beginning")
    elif ckpt.has_checkpoint(run_dir) or (run_dir / METRICS_FILE).exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")

    _seed_everything(config.seed)
    protocol = get_protocol(config.protocol)
    dataset = open_dataset(config.data, label_set=config.label_set, face_regions=config.face_regions)
    labels = dataset.labels
    if len(labels) < 2:
        raise DataError(f"{config.data}: only one class ({labels[0]}) present; a classifier needs at least two")
    # --- hook: fixed splits (a cross-validation fold, training/cv.py); TrainConfig checked them disjoint ---
    if config.splits is not None:
        splits = config.splits
    else:
        splits = split_by_patient(
            dataset.samples,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
            face_regions=dataset.face_regions,
        )
    # --- end of hook ---
    extras = open_extra_data(config.extra_data, dataset)
    stages = _stage_data(protocol, splits, dataset, extras)
    test = select_sites(splits.test, protocol.eval_site, dataset.face_regions)
    preprocessing = default_preprocessing(config.arch, config.img_size)
    model_args = {"head_hidden": config.head_hidden, "head_dropout": config.head_dropout}
    # Clinical fields: the schema is fitted on the training images of every stage, never on val or test answers.
    schema = fit_run_schema(config.clinical, [s for sd in stages for s in sd.train]) if config.clinical else None
    if schema is not None:
        model_args.update(
            clinical_features=schema.width,
            clinical_hidden=config.clinical_hidden,
            clinical_fusion=config.clinical_fusion,
        )
    model = create_model(
        config.arch,
        len(labels),
        pretrained=config.pretrained,
        weights=config.weights,
        imagenet_weights=bool(config.imagenet_weights),
        **model_args,
    )
    if schema is not None:
        model.head.clinical_missing.copy_(torch.from_numpy(schema.missing_vector()))
    model = model.to(device).to(memory_format=torch.channels_last)
    normalize = Normalize(preprocessing).to(device)
    cache = ImageCache(with_extra_images(dataset, extras), config.img_size, config.cache_bytes)
    augment = TrainAugment(
        config.img_size, pixel_noise=config.pixel_noise, rotation=config.rotation, color_jitter=config.color_jitter
    )

    if state is None:
        reporter.log(
            f"[bold]facederm-train[/] {config.arch} ({config.init_description}), protocol {protocol.name}: "
            f"{protocol.description}"
        )
        reporter.log(
            f"data {config.data}: {len(dataset)} images, {len(dataset.patients)} patients, labels "
            f"{', '.join(labels)}{' [SYNTHETIC]' if dataset.synthetic else ''}; device {device}, "
            f"{world.world_size} process(es)"
        )
        for extra in extras:
            reporter.log(f"  {extra.describe()}")
        for sd in stages:
            reporter.log(f"  stage {sd.stage.name}: {len(sd.train)} train / {len(sd.val)} val images ({sd.stage.site})")
        reporter.log(
            f"  test: {len(test)} images ({protocol.eval_site}) of {len({s.patient_id for s in test})} patients"
        )
        if schema is not None:
            reporter.log(f"  clinical: {schema.describe()}; field dropout {config.clinical_dropout:g}")

    history: list[dict[str, Any]] = list(state["history"]) if state else []
    best_state: dict[str, torch.Tensor] | None = None
    with reporter:
        for stage_index, sd in enumerate(stages):
            if state is not None and stage_index < state["stage"]:
                continue
            resume_here = state is not None and stage_index == state["stage"]
            if resume_here and state.get("stage_done"):
                best_state = {k: v.to(device) for k, v in groups["best"].items()}
                state = None
                continue
            if stage_index > 0 and best_state is not None and not resume_here:
                model.load_state_dict(best_state)  # fine-tune from the previous stage's best epoch
            best_state = _run_stage(
                config,
                stage_index,
                sd,
                model,
                normalize,
                cache,
                augment,
                labels,
                preprocessing,
                dataset,
                device,
                world,
                reporter,
                history,
                state if resume_here else None,
                groups if resume_here else {},
                on_epoch_end,
                run_dir,
                len(stages),
                schema=schema,
            )
            state = None
    model.load_state_dict(best_state)
    quant_aware = (
        _quant_aware(
            config,
            model,
            normalize,
            stages,
            labels,
            cache,
            augment,
            dataset,
            preprocessing,
            device,
            world,
            reporter,
            schema,
        )
        if config.quant_aware_epochs
        else None
    )

    # Final evaluation on the best weights (every rank predicts a shard).
    final = stages[-1]
    evaluated = {"test": test, "val": final.val}
    if protocol.eval_site == "all":
        evaluated["test_face"] = select_sites(splits.test, "face", dataset.face_regions)
    metrics: dict[str, Any] = {}
    probabilities: dict[str, np.ndarray] = {}
    bare = model
    clinical_splits: dict[str, tuple[list[Sample], np.ndarray, np.ndarray]] = {}
    for name, samples in evaluated.items():
        images = _preprocessed(dataset, samples, preprocessing)
        answers = encode_samples(schema, samples) if schema is not None else None
        probabilities[name] = predict_sharded(
            bare, images, preprocessing, world, batch_size=config.batch_size, device=device, clinical=answers
        )
        metrics[name] = split_metrics(probabilities[name], samples, labels, n_boot=config.n_boot, seed=config.seed)
        if schema is not None and name != "val":  # the same images with every clinical field masked
            masked = predict_sharded(
                bare,
                images,
                preprocessing,
                world,
                batch_size=config.batch_size,
                device=device,
                clinical=schema.missing_batch(len(samples)),
            )
            clinical_splits[name] = (samples, probabilities[name], masked)
    if schema is not None:
        metrics["clinical"] = fusion_report(
            schema,
            config.clinical_dropout,
            clinical_splits,
            dataset.samples,
            labels,
            n_boot=config.n_boot,
            seed=config.seed,
        )
    metrics["protocol"] = protocol.name
    metrics["site_eval"] = protocol.eval_site
    metrics["synthetic"] = dataset.synthetic
    temperature = _calibrate(config, evaluated, probabilities, labels, metrics)
    write_state_hash(world, bare)

    card = None
    if world.is_main:
        wall = time.time() - started
        card = _card(
            config,
            dataset,
            protocol,
            stages,
            test,
            labels,
            preprocessing,
            model_args,
            wall,
            f"{device.type} x{world.world_size}",
            temperature,
            extras,
            quant_aware,
        )
        if schema is not None:
            card = replace(card, clinical=schema, data={**card.data, "clinical": _clinical_card_data(config, stages)})
        split_ids = recorded_splits(
            final.train,
            final.val,
            test,
            training=[s for sd in stages for s in sd.train],
            heldout=[*splits.val, *splits.test],
        )
        save_run(run_dir, bare.cpu() if device.type != "cpu" else bare, card, metrics, split_ids)
        write_json_atomic(run_dir / HISTORY_FILE, history)
        _write_plots(run_dir, metrics, probabilities, evaluated, labels, history)
        ckpt.mark_finished(run_dir)
        summary = metrics["test"]
        reporter.log(
            f"test ({protocol.eval_site}, {summary['n_images']} images): macro recall "
            f"{_fmt(summary['macro_recall'])} CI {_fmt_ci(summary['macro_recall_ci'])}, macro precision "
            f"{_fmt(summary['macro_precision'])}; wrote {run_dir}"
        )
        reporter.log(_calibration_line(metrics["calibration"]))
        if "clinical" in metrics:
            reporter.log(summary_line(metrics["clinical"]))
    barrier(world)
    return TrainResult(run_dir, metrics, history, card)


def _calibrate(
    config: TrainConfig,
    evaluated: dict[str, list[Sample]],
    probabilities: dict[str, np.ndarray],
    labels: list[str],
    metrics: dict[str, Any],
) -> float:
    """Fit the card's temperature on the final stage's validation images (``--no-calibrate``: 1) and record
    the ECE before and after it on val and on the test images, which the fit never saw."""
    index = {label: i for i, label in enumerate(labels)}
    scored = {
        name: (probabilities[name], np.array([index[s.label] for s in samples], dtype=np.int64))
        for name, samples in evaluated.items()
    }
    if not config.calibrate:
        metrics["calibration"] = calibration_report(1.0, scored, fitted_on="", reason="--no-calibrate")
        return 1.0
    val = scored.pop("val")
    temperature, metrics["calibration"] = fit_on_validation(val, scored)
    return temperature


def _calibration_line(report: dict[str, Any]) -> str:
    if "not_fitted" in report:
        return f"calibration: none ({report['not_fitted']})"
    parts = [
        f"{name} ECE {report[name]['ece_before']:.3f} -> {report[name]['ece_after']:.3f} (n={report[name]['n']})"
        for name in ("val", "test")
        if name in report
    ]
    return f"calibration: temperature {report['temperature']:.2f} fitted on val; " + ", ".join(parts)


def _clinical_card_data(config: TrainConfig, stages: list[_StageData]) -> dict[str, Any]:
    """The card's ``data.clinical``: how the clinical fields were fitted and trained (the schema is ``card.clinical``)."""
    return {
        "fields": config.clinical,
        "fitted_on": f"the training images of every stage ({sum(len(sd.train) for sd in stages)} images)",
        "fusion": CLINICAL_FUSIONS[config.clinical_fusion],
        "embedding": config.clinical_hidden,
        "dropout_per_field": config.clinical_dropout,
    }


def _preprocessed(dataset: DataSet, samples: list[Sample], preprocessing) -> np.ndarray:
    if not samples:
        return np.zeros((0, preprocessing.crop, preprocessing.crop, 3), dtype=np.uint8)
    return np.stack(list(preprocess_samples(dataset, samples, preprocessing)))


def _quant_aware(
    config: TrainConfig,
    model: torch.nn.Module,
    normalize: Normalize,
    stages: list[_StageData],
    labels: list[str],
    cache: ImageCache,
    augment: TrainAugment,
    dataset: DataSet,
    preprocessing,
    device: torch.device,
    world: World,
    reporter,
    schema: ClinicalSchema | None,
) -> dict[str, object]:
    """``--quant-aware-epochs``: teach the chosen weights to reproduce their own predictions on every image the run
    trained on (all stages, augmented) as int8 computes them, then snap them onto the int8 grid
    (training/quant_aware.py). The evaluation that follows, the
    calibration temperature and the saved weights are all of the snapped model."""
    from .quant_aware import RANGE_IMAGES, quant_aware_finetune

    if world.distributed:
        raise ConfigError("--quant-aware-epochs runs in one process: start it without torchrun")
    samples = [s for sd in stages for s in sd.train]
    clinical = (schema, encode_samples(schema, samples)) if schema is not None else None
    train_set = AugmentedSet(samples, labels, cache, augment, clinical, config.clinical_dropout)
    step = max(1, len(samples) // RANGE_IMAGES)
    range_samples = samples[::step][:RANGE_IMAGES]
    reporter.log(
        f"  quant-aware: {config.quant_aware_epochs} epoch(s) on {len(samples)} training images (target: this "
        f"model's own predictions), int8 weight grid and activations, lr {config.quant_aware_lr:g}"
    )

    def on_epoch(epoch: int, result) -> None:
        reporter.log(
            f"  quant-aware epoch {epoch + 1}/{config.quant_aware_epochs}: loss {result.loss:.3f}, "
            f"{result.seconds:.0f} s"
        )

    return quant_aware_finetune(
        model,
        normalize,
        train_set,
        range_images=_preprocessed(dataset, range_samples, preprocessing),
        range_answers=encode_samples(schema, range_samples) if schema is not None else None,
        epochs=config.quant_aware_epochs,
        lr=config.quant_aware_lr,
        batch_size=config.batch_size,
        seed=config.seed + 104_729,
        device=device,
        on_epoch=on_epoch,
    )


def _run_stage(
    config: TrainConfig,
    stage_index: int,
    sd: _StageData,
    model,
    normalize,
    cache,
    augment,
    labels,
    preprocessing,
    dataset,
    device,
    world: World,
    reporter: _Reporter,
    history: list[dict[str, Any]],
    state: dict[str, Any] | None,
    groups: dict[str, dict[str, torch.Tensor]],
    on_epoch_end: EpochCallback | None,
    run_dir: Path,
    n_stages: int,
    schema: ClinicalSchema | None = None,
) -> dict[str, torch.Tensor]:
    """Train one stage; returns its best weights (by validation macro recall)."""
    clinical = (schema, encode_samples(schema, sd.train)) if schema is not None else None
    train_set = AugmentedSet(sd.train, labels, cache, augment, clinical, config.clinical_dropout)
    val_clinical = encode_samples(schema, sd.val) if schema is not None else None
    loader, sampler = make_loader(
        train_set,
        world,
        config.seed + 7919 * stage_index,
        config.batch_size,
        config.workers,
        pin_memory=device.type == "cuda",
    )
    weights = class_weights(sd.train, labels)
    criterion = torch.nn.CrossEntropyLoss(
        weight=torch.tensor([weights[label] for label in labels], dtype=torch.float32, device=device),
        label_smoothing=config.label_smoothing,
    )
    ddp_model = model
    if world.distributed:
        # Some timm backbones keep head layers that forward_features never reaches (MobileNetV3's conv_head).
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    # A stage that starts from the previous stage's weights may fine-tune them at a lower peak rate
    # (--finetune-lr-scale), so classes the new sites lack (PAD's face images: MEL, SCC) fade less.
    lr = config.lr * (config.finetune_lr_scale if stage_index > 0 else 1.0)
    optimizer = make_optimizer(model, lr, config.weight_decay)
    steps_per_epoch = max(1, len(loader))
    total = steps_per_epoch * config.epochs
    warmup = min(total, max(1, round(config.warmup_epochs * steps_per_epoch)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup, config.min_lr_ratio))
    val_images = _preprocessed(dataset, sd.val, preprocessing)
    val_index = {label: i for i, label in enumerate(labels)}
    val_true = np.array([val_index[s.label] for s in sd.val], dtype=np.int64)

    best_score, bad_epochs, start_epoch = -1.0, 0, 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # --ema-decay: validate, keep and checkpoint the weights' moving average instead of the raw weights
    ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=True) if config.ema_decay else None
    scored = ema.module if ema is not None else model
    if state is not None:
        ckpt.restore_training(groups, state, model, optimizer, scheduler)
        best_state = {k: v.to(device) for k, v in groups["best"].items()}
        best_score, bad_epochs, start_epoch = state["best_score"], state["bad_epochs"], state["epoch"] + 1
        if ema is not None:
            ema.module.load_state_dict(groups["ema"])
    step = start_epoch * steps_per_epoch

    label = f"stage {stage_index + 1}/{n_stages} {sd.stage.name}" if n_stages > 1 else "training"
    epochs_task = reporter.progress.add_task(label, total=config.epochs, completed=start_epoch, info="")
    steps_task = reporter.progress.add_task("  batches", total=steps_per_epoch, info="")
    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        epoch_key = stage_index * 100_000 + epoch
        sampler.set_epoch(epoch_key)
        torch.manual_seed(config.seed * 1_000_003 + epoch_key)  # dropout: same masks after a resume
        reporter.progress.reset(steps_task, total=steps_per_epoch)

        def on_step(loss: float) -> None:
            nonlocal step
            step += 1
            if ema is not None:
                ema.update(model, step=step)
            reporter.progress.update(steps_task, advance=1, info=f"loss {loss:.3f}")

        result = train_one_epoch(
            ddp_model,
            normalize,
            loader,
            criterion,
            optimizer,
            scheduler,
            device,
            world,
            amp=config.amp and device.type == "cuda",
            stability=Stability(config.stability_weight, config.stability_noise) if config.stability_weight else None,
            on_step=on_step,
        )
        val_probs = predict_sharded(
            scored, val_images, preprocessing, world, batch_size=config.batch_size, device=device, clinical=val_clinical
        )
        score = macro_recall(val_true, val_probs) if len(val_true) else float("nan")
        # No validation images: keep the last epoch (nothing to choose with).
        improved = bool(np.isnan(score) or score > best_score)
        if improved:
            best_score = -1.0 if np.isnan(score) else score
            best_state = {k: v.detach().clone() for k, v in scored.state_dict().items()}
            bad_epochs = 0
        else:
            bad_epochs += 1
        row = {
            "stage": sd.stage.name,
            "epoch": epoch + 1,
            "loss": result.loss,
            "val_macro_recall": None if np.isnan(score) else float(score),
            "best": improved,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": result.seconds,
            "images_per_s": result.images * world.world_size / max(result.seconds, 1e-9),
        }
        history.append(row)
        stopped_early = config.patience > 0 and bad_epochs >= config.patience and epoch + 1 < config.epochs
        if world.is_main:
            ckpt.save_checkpoint(
                run_dir,
                model=model,
                best_model_state=best_state,
                optimizer=optimizer,
                scheduler=scheduler,
                state={
                    "stage": stage_index,
                    "epoch": epoch,
                    "best_score": best_score,
                    "bad_epochs": bad_epochs,
                    "history": history,
                    "config": config.to_dict(),
                    "stage_done": stopped_early or epoch + 1 == config.epochs,
                },
                ema_state=ema.module.state_dict() if ema is not None else None,
            )
        barrier(world)
        reporter.progress.update(
            epochs_task,
            advance=1,
            info=f"loss {result.loss:.3f}  val macro recall "
            f"{_fmt(row['val_macro_recall'])}  best {_fmt(best_score if best_score >= 0 else None)}",
        )
        reporter.log(
            f"  {sd.stage.name} epoch {epoch + 1}/{config.epochs}: loss {result.loss:.3f}, val macro recall "
            f"{_fmt(row['val_macro_recall'])}{' (best)' if improved else ''}, {result.seconds:.0f} s "
            f"({row['images_per_s']:.1f} img/s)"
        )
        if on_epoch_end is not None:
            on_epoch_end(row)
        if stopped_early:
            reporter.log(
                f"  early stop after epoch {epoch + 1}: no better validation macro recall in {config.patience} epochs"
            )
            break
    reporter.progress.remove_task(steps_task)
    model.load_state_dict(best_state)
    return best_state


def _card(
    config: TrainConfig,
    dataset: DataSet,
    protocol: Protocol,
    stages: list[_StageData],
    test: list[Sample],
    labels,
    preprocessing,
    model_args,
    wall: float,
    where: str,
    temperature: float,
    extras: list[ExtraData],
    quant_aware: dict[str, object] | None = None,
) -> ModelCard:
    final = stages[-1]
    extra_ids = {s.image_id for source in extras for s in source.samples}

    def extra_count(samples: list[Sample]) -> int:
        return sum(s.image_id in extra_ids for s in samples)

    # The fingerprint is of the main data (its splits); extra images are counted per stage and source below.
    main_train = [s for s in final.train if s.image_id not in extra_ids]
    data = fingerprint(dataset, {"train": main_train, "val": final.val, "test": test})
    data.update(
        {
            "spec": config.data,
            "label_set": dataset.label_set.name,
            "synthetic": dataset.synthetic,
            "site_eval": protocol.eval_site,
            "stages": [
                {
                    "name": sd.stage.name,
                    "site": sd.stage.site,
                    "train_images": len(sd.train),
                    "val_images": len(sd.val),
                    "extra_train_images": extra_count(sd.train),
                }
                for sd in stages
            ],
            "extra_data": [extra.summary() for extra in extras],
            "split_patients_over": "all samples (split once by patient, then filtered by site per stage)",
            "training": {
                "init": config.init_description,
                "epochs": config.epochs,
                "batch_size": config.batch_size,
                "lr": config.lr,
                "finetune_lr_scale": config.finetune_lr_scale,
                "weight_decay": config.weight_decay,
                "img_size": config.img_size,
                "patience": config.patience,
                "optimizer": "AdamW, warm-up + cosine",
                "device": where,
                "loss": "class-weighted cross-entropy"
                + (
                    f" + {config.stability_weight:g} x KL(p(x) || p(x + noise)), noise sigma ~ "
                    f"U(0, {config.stability_noise:g}) gray levels (stability training)"
                    if config.stability_weight
                    else ""
                ),
                "augmentation": (f"random rotation +-{config.rotation:g} deg, " if config.rotation else "")
                + "random resized crop, h+v flips"
                + (f", colour jitter {config.color_jitter:g}" if config.color_jitter else "")
                + (f", pixel noise sigma ~ U(0, {config.pixel_noise:g}) gray levels" if config.pixel_noise else ""),
                "head": (
                    f"GAP -> 1x1 conv {config.head_hidden} -> FC {config.head_hidden} -> dropout "
                    f"{config.head_dropout:g} -> classes"
                    if config.head_hidden
                    else f"GAP -> dropout {config.head_dropout:g} -> classes (linear)"
                ),
                "rotation": config.rotation,
                "color_jitter": config.color_jitter,
                "pixel_noise": config.pixel_noise,
                "label_smoothing": config.label_smoothing,
                "stability_weight": config.stability_weight,
                "stability_noise": config.stability_noise,
                "ema_decay": config.ema_decay,
                **({"quant_aware": quant_aware} if quant_aware else {}),
            },
        }
    )
    return ModelCard(
        arch=config.arch,
        labels=tuple(labels),
        label_names={label: dataset.label_set.long_name(label) for label in labels},
        preprocessing=preprocessing,
        referral=Referral(
            labels=tuple(label for label in labels if label in MALIGNANT),
            threshold=0.5,
            below_confidence=parse_refer_below(config.refer_below, labels),
        ),
        calibration=Calibration(temperature=temperature, fitted_on="val" if temperature != 1.0 else ""),
        model_args=model_args,
        protocol=protocol.name,
        data=json.loads(json.dumps(data)),
        seed=config.seed,
        versions=_versions(),
        git_commit=_git_commit(),
        wall_time_s=round(wall, 2),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _write_plots(run_dir: Path, metrics, probabilities, evaluated, labels, history) -> None:
    index = {label: i for i, label in enumerate(labels)}
    for name in ("test", "test_face"):
        if name not in metrics or not len(probabilities[name]):
            continue
        y_true = np.array([index[s.label] for s in evaluated[name]])
        where = f"{name} ({metrics[name]['n_images']} images)"
        plot_confusion_matrix(
            metrics[name]["confusion_matrix"], labels, run_dir / f"confusion_{name}.png", f"confusion matrix, {where}"
        )
        plot_roc(y_true, probabilities[name], labels, run_dir / f"roc_{name}.png", f"ROC one-vs-rest, {where}")
    if history:
        plot_history(history, run_dir / "history.png")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def _fmt_ci(ci) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"
