"""The export pipeline behind :func:`facederm.export.export_run`.

For each requested (target, precision): check the target's dependencies (missing -> skipped record with
the pip command), build in a staging folder, run the artifact (natively or through its twin) on the
evaluation images, apply the parity gate, move it into place, record it in ``manifest.json``.
One artifact failing never stops the others.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from facederm.runtime.errors import BackendUnavailableError, ConfigError, FacedermError, MissingDependencyError
from facederm.runtime.layout import ArtifactRecord, Parity, Probe, file_digest
from facederm.runtime.probe import DEFAULT_TOLERANCE, make_probe
from facederm.runtime.version import __version__

from .calibration import EvaluationData, ViewedSet, calibration_set, evaluation_data
from .context import BuildContext, BuiltArtifact, quant_aware_record, torch_predict
from .options import ExportOptions, ExportResult
from .parity import AgreementInputs, GateRules, check_class_drops, compute_parity, gate_verdict, margin_profile
from .registry import Target, Variant, resolve_targets
from .staging import ManifestStore, clean_stale_staging, file_entries, install, new_staging_dir, remove_artifact_files

log = logging.getLogger("facederm.export")

PROBE_SEED = 0
PROBE_BATCH = 2


def _plan(targets: list[Target], precisions: Sequence[str] | None) -> list[tuple[Target, list[Variant], list[str]]]:
    """(target, variants to build, requested precisions it lacks) per target; unknown precisions are errors."""
    if precisions is not None:
        known = {p for t in targets for p in t.precisions}
        unknown = sorted(set(precisions) - known)
        if unknown:
            offered = ", ".join(f"{t.name}: {'/'.join(t.precisions)}" for t in targets)
            raise ConfigError(f"unknown precision(s) {', '.join(unknown)} for these targets ({offered})")
    plan = []
    for target in targets:
        lacking = [] if precisions is None else [p for p in precisions if p not in target.precisions]
        plan.append((target, target.select(precisions), lacking))
    return plan


def _versions(built: BuiltArtifact) -> dict[str, str]:
    return {"facederm": __version__, "torch": torch.__version__, **built.converter_versions}


def _tolerances(records: list[ArtifactRecord], deltas: dict[str, float]) -> dict[str, float]:
    tol = {}
    for record in records:
        if record.status != "ok":
            continue
        # The runtime's table is the floor, raised to twice what this export's artifacts showed, so a
        # correct artifact always passes its own self-test.
        floor = DEFAULT_TOLERANCE.get(record.precision, DEFAULT_TOLERANCE["int8"])
        tol[record.precision] = max(tol.get(record.precision, floor), 2.0 * deltas.get(record.key, 0.0))
    return {k: round(v, 6) for k, v in tol.items()}


def run_export(
    run_dir: str | Path,
    *,
    out_dir: str | Path,
    options: ExportOptions,
    progress: bool = False,
    on_record: Callable[[ArtifactRecord], None] | None = None,
) -> ExportResult:
    """Export ``run_dir`` to ``out_dir`` as ``options`` say (see :func:`facederm.export.export_run`)."""
    from facederm.training.ensemble import load_trained
    from facederm.training.models import ProbabilityModel

    rules = options.gate_rules()
    batch_size, seed = options.batch_size, options.seed
    plan = _plan(resolve_targets(options.targets), list(options.precisions) if options.precisions else None)

    run_dir = Path(run_dir)
    classifier, card = load_trained(run_dir, ensemble=options.ensemble)
    check_class_drops(options.max_class_drop, card.labels)
    model = ProbabilityModel.from_card(classifier, card).eval()
    quant_aware = quant_aware_record(card) is not None

    evaluation = evaluation_data(run_dir, card, options.eval_data, options.eval_views)
    evaluation.agreement.images.tensors()  # decode once, before any artifact is built
    reference = predict_inputs(torch_predict(model), evaluation.agreement, batch_size)
    noise_floor = fp32_noise_floor(model, evaluation.agreement, reference, batch_size, seed=seed)
    probe_x = make_probe(PROBE_SEED, PROBE_BATCH, card.input_size)
    probe_ref = torch_predict(model)(probe_x)

    calibration: ViewedSet | None = None
    if any(v.calibrated for _, variants, _ in plan for v in variants):
        calibration = calibration_set(
            run_dir, card, evaluation, calib_data=options.calib_data, size=options.calib_size, seed=seed
        )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(out_dir)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    store = ManifestStore(
        out_dir,
        card,
        created=created,
        facederm_version=__version__,
        source_run=run_dir.name,
        calibration=calibration.describe(card.labels) if calibration is not None else {},
        evaluation={
            **_describe_evaluation(evaluation, card.labels),
            "fp32_under_noise": noise_floor,
            "fp32_margins": margin_profile(reference),
        },
        gate=rules.to_dict(),
        options=options.to_dict(),
    )
    probe = Probe(seed=PROBE_SEED, batch=PROBE_BATCH, probabilities=tuple(tuple(map(float, r)) for r in probe_ref))
    store.set_probe(probe)

    scratch = new_staging_dir(out_dir, "scratch")
    shared: dict[str, object] = {}
    records: list[ArtifactRecord] = []
    probe_deltas: dict[str, float] = {}
    total = sum(len(v) + len(lacking) for _, v, lacking in plan)

    def emit(record: ArtifactRecord) -> None:
        store.put(record)
        records.append(record)
        if on_record:
            on_record(record)

    bar = _progress(progress)
    try:
        with bar or nullcontext():
            task = bar.add_task("export", total=total) if bar else None
            for target, variants, lacking in plan:
                for precision in lacking:
                    emit(
                        ArtifactRecord(
                            target=target.name,
                            precision=precision,
                            path=f"{target.name}.{precision}",
                            status="skipped",
                            error=f"{target.name} has no {precision} (it has {', '.join(target.precisions)})",
                        )
                    )
                    if bar:
                        bar.advance(task)
                missing: MissingDependencyError | None = None
                try:
                    target.check_requirements()
                except MissingDependencyError as exc:
                    missing = exc
                # A target that cannot feed a second input skips a clinical model, with its reason (not a failure).
                unsupported = target.clinical_unsupported if card.clinical is not None else ""
                for variant in variants:
                    if bar:
                        bar.update(task, description=f"{target.name} {variant.precision}")
                    if unsupported:
                        emit(_skipped(target, variant, unsupported))
                    elif variant.off_grid and quant_aware and options.precisions is None:
                        emit(_skipped(target, variant, variant.off_grid))
                    elif missing is not None:
                        emit(_skipped(target, variant, str(missing)))
                    else:
                        ctx = BuildContext(
                            model=model,
                            card=card,
                            precision=variant.precision,
                            path=variant.path,
                            workdir=new_staging_dir(out_dir, f"{target.name}-{variant.precision}"),
                            scratch=scratch,
                            calibration=calibration if variant.calibrated else None,  # type: ignore[arg-type]
                            batch_size=batch_size,
                            shared=shared,
                            options=options,
                        )
                        record, delta = _export_one(
                            target, variant, ctx, out_dir, store, evaluation, reference, probe_x, probe_ref, rules
                        )
                        probe_deltas[record.key] = delta
                        emit(record)
                    if bar:
                        bar.advance(task)
        store.set_probe(
            Probe(
                seed=PROBE_SEED,
                batch=PROBE_BATCH,
                probabilities=probe.probabilities,
                tolerance=_tolerances(list(store.manifest.artifacts), probe_deltas),
            )
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ExportResult(manifest=store.manifest, records=tuple(records), out_dir=out_dir)


def predict_inputs(predict, inputs: ViewedSet, batch_size: int) -> np.ndarray:
    """``predict`` over every input of ``inputs`` in batches (views made per batch); a clinical model's graph gets
    each input's answers too (both inputs, as deployed)."""
    out = [
        np.asarray(predict(batch) if clinical is None else predict(batch, clinical), dtype=np.float32)
        for batch, clinical in inputs.input_batches(batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


#: Pixel noise (gray levels) of the fp32 noise floor: less than a phone sensor or JPEG adds.
NOISE_FLOOR_SIGMA = 1.0


def fp32_noise_floor(
    model: torch.nn.Module, inputs: ViewedSet, reference: np.ndarray, batch_size: int, *, seed: int = 0
) -> dict[str, object]:
    """How often the fp32 model changes its own top label under Gaussian pixel noise of one gray level: the
    scale an artifact's agreement is read against (a model that flips under such noise flips under int8 too)."""
    rng = np.random.default_rng(seed)
    predict = torch_predict(model)

    def noisy(batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        noise = rng.normal(0.0, NOISE_FLOOR_SIGMA, batch.shape).astype(np.float32)
        return predict(np.clip(batch + noise, 0.0, 255.0), clinical)  # pixel noise only: the answers stay

    probs = predict_inputs(noisy, inputs, batch_size)
    same = probs.argmax(1) == reference.argmax(1)
    return {
        "sigma_gray_levels": NOISE_FLOOR_SIGMA,
        "inputs": int(len(same)),
        "agreement": round(float(same.mean()), 6) if len(same) else None,
    }


def gate_parity(
    reference: np.ndarray, probs: np.ndarray, evaluation: EvaluationData, labels: Sequence[str], *, seed: int = 0
) -> Parity:
    """The gate's figures from fp32 and artifact probabilities on every agreement input (view-major, so the
    identity view of image i is row i: the labelled test images are read from there)."""
    agreement = evaluation.agreement
    rows = evaluation.labelled_index
    labelled = evaluation.labelled
    return compute_parity(
        reference[rows],
        probs[rows],
        labelled.y_true,
        list(labelled.patients),
        labels,
        agreement=AgreementInputs(reference, probs, agreement.image_ids, agreement.view_names, agreement.spec),
        eval_data=labelled.spec,
        seed=seed,
    )


def _describe_evaluation(evaluation: EvaluationData, labels: Sequence[str]) -> dict[str, object]:
    labelled = evaluation.labelled
    return {
        "agreement": evaluation.agreement.describe(labels),
        "labelled": {"data": labelled.spec, "images": len(labelled), "patients": len(set(labelled.patients.tolist()))},
    }


def _skipped(target: Target, variant: Variant, reason: str) -> ArtifactRecord:
    return ArtifactRecord(
        target=variant.record_target or target.name,
        precision=variant.precision,
        path=variant.path,
        status="skipped",
        error=reason,
    )


def _export_one(
    target: Target,
    variant: Variant,
    ctx: BuildContext,
    out_dir: Path,
    store: ManifestStore,
    evaluation: EvaluationData,
    reference: np.ndarray,
    probe_x: np.ndarray,
    probe_ref: np.ndarray,
    rules: GateRules,
) -> tuple[ArtifactRecord, float]:
    """Build, validate, gate and install one artifact; never raises for the artifact's own failures."""
    name = variant.record_target or target.name
    key = f"{name}:{variant.precision}"
    old = store.mark_pending(key, name, variant.precision, variant.path)
    start = time.perf_counter()
    base = dict(target=name, precision=variant.precision, path=variant.path)
    calib_ids = ctx.calibration.ids if ctx.calibration is not None else ()
    built: BuiltArtifact | None = None
    try:
        built = variant.build(ctx)
        probs = predict_inputs(built.predict, evaluation.agreement, ctx.batch_size)
        probe_delta = float(np.abs(built.predict(probe_x) - probe_ref).max())
        parity = gate_parity(reference, probs, evaluation, ctx.card.labels, seed=ctx.options.seed)
    except (MissingDependencyError, BackendUnavailableError) as exc:  # e.g. no tensorrt / no GPU: skip
        shutil.rmtree(ctx.workdir, ignore_errors=True)
        return ArtifactRecord(**base, status="skipped", error=str(exc), seconds=_since(start)), 0.0
    except Exception as exc:
        log.debug("%s failed", key, exc_info=True)
        shutil.rmtree(ctx.workdir, ignore_errors=True)
        message = str(exc) if isinstance(exc, FacedermError) else f"{type(exc).__name__}: {exc}"
        _drop_old(out_dir, old)
        return ArtifactRecord(
            **base,
            status="failed",
            error=message.strip().splitlines()[0][:500] if message else type(exc).__name__,
            calibration_ids=calib_ids,
            seconds=_since(start),
        ), 0.0
    finally:
        if built is not None and built.close is not None:
            built.close()
    assert built is not None
    common = dict(
        format=built.format,
        validated=built.validated,
        validated_reason=built.validated_reason,
        parity=parity,
        converter_versions=_versions(built),
        calibration_ids=calib_ids,
        options={**built.options, "probe_max_abs_delta": round(probe_delta, 6)},
    )
    reason, decision = gate_verdict(parity, rules)
    common["parity"] = dataclasses.replace(parity, decision=decision)
    if reason:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
        _drop_old(out_dir, old)
        return ArtifactRecord(**base, status="failed", error=reason, **common, seconds=_since(start)), probe_delta
    install(ctx.workdir, out_dir, [*built.files, variant.path])
    shutil.rmtree(ctx.workdir, ignore_errors=True)
    sha, size = file_digest(out_dir / variant.path)
    files = file_entries(out_dir, list(built.files))
    return ArtifactRecord(
        **base, status="ok", sha256=sha, bytes=size, files=files, **common, seconds=_since(start)
    ), probe_delta


def _drop_old(out_dir: Path, old: ArtifactRecord | None) -> None:
    # The manifest no longer lists the previous build as ok: do not leave its files to be mistaken for it.
    if old is not None and old.status == "ok":
        remove_artifact_files(out_dir, [old.path, *(f.path for f in old.files)])


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
