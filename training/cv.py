"""Patient-grouped K-fold cross-validation (``facederm-train --cv K``) and paired comparison of two recipes.

One 33-image test split cannot rank recipes; K folds give every image one out-of-fold prediction:

- **Folds**: scikit-learn's ``StratifiedGroupKFold`` (groups = patients; strata = label x face/other site,
  shuffled with the seed), so each fold's test patients have every class, on the face and elsewhere, where the
  data allow. Validation patients are carved from the other patients the way :func:`split_by_patient` carves
  them (class- and site-stratified, by patient); the rest train. Every fold is checked patient-disjoint and the
  test folds are checked to cover every image exactly once.
- **Runs**: each fold trains through :func:`~facederm.training.trainer.train` into ``CV_DIR/fold-<k>/``, a
  normal run dir (``facederm-export`` takes it), then predicts *every* image of its test fold, all sites, whatever
  the protocol scores: ``oof.csv`` then holds one prediction per image and the summary reports face images and
  all sites for every protocol. ``--resume`` keeps the folds that finished and continues the others.
- **Summary** (``cv_summary.json``, a rich table): per fold and pooled out-of-fold macro recall (6-class mean),
  the mean over the classes with at least 5 images in the pool, macro precision, macro AUC, per-class recall
  with support; patient-bootstrap 95 % CIs on the pooled figures and the spread across folds.
- **Paired comparison** (:func:`compare_oof`): two CV dirs on the same images, macro recall of B minus A with a
  patient-bootstrap CI (both resampled together), e.g. ``python -m facederm.training.cv compare A B``.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from facederm.runtime.cli_support import common_option, debug_option, one_line_errors
from facederm.runtime.errors import ConfigError, DataError, DataLeakageError, SchemaError
from facederm.runtime.layout import CARD_FILE, CV_PLAN_FILE, CV_SUMMARY_FILE, OOF_FILE, fold_dir
from facederm.runtime.schema import read_json, write_json_atomic

from .config import TrainConfig, recorded_defaults
from .dataset import DataSet, Sample
from .labels import FACE_REGIONS
from .metrics import (
    classification_report,
    confusion_matrix,
    macro_recall,
    macro_recall_over,
    patient_bootstrap,
    per_class_recall,
)
from .splits import Splits, check_disjoint_patients, split_by_patient

View = Literal["face", "all"]
VIEWS: tuple[View, ...] = ("face", "all")
#: A class's recall over fewer images than this says little: the summary adds the mean over the others.
MIN_SUPPORT = 5
#: Fold-level figures whose spread across folds the summary reports.
SPREAD_METRICS = ("macro_recall", "macro_recall_supported", "macro_precision", "auc_macro")
PROB_PREFIX = "p_"
OOF_COLUMNS = ("img_id", "patient_id", "site", "label", "fold")

FoldCallback = Callable[[int, Path], None]
_TEXT_FIELDS = ("image_ids", "patient_ids", "sites", "truth")  # OOF's per-row text, in OOF_COLUMNS order


# ----------------------------------------------------------------------------------------------- folds
def check_k(samples: Sequence[Sample], k: int) -> None:
    """Raise :class:`ConfigError` unless ``2 <= k <=`` the patients of the rarest class (else a fold tests none)."""
    if k < 2:
        raise ConfigError(f"--cv {k}: K-fold cross-validation needs K >= 2")
    patients: dict[str, set[str]] = defaultdict(set)
    for sample in samples:
        patients[sample.label].add(sample.patient_id)
    if not patients:
        raise DataError("--cv: the data set has no images")
    label, fewest = min(((label, len(p)) for label, p in patients.items()), key=lambda item: (item[1], item[0]))
    if k > fewest:
        raise ConfigError(
            f"--cv {k}: class {label} has only {fewest} patient(s), so some fold would test none of it; "
            f"use --cv {fewest} or fewer"
        )


def make_folds(
    samples: Sequence[Sample],
    k: int,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    face_regions: Sequence[str] = FACE_REGIONS,
) -> list[Splits]:
    """K patient-disjoint (train, val, test) splits whose test sets partition ``samples``.

    Test folds: ``StratifiedGroupKFold(k, shuffle=True, random_state=seed)`` grouped by patient and stratified
    on label x site (face / other). Val: ``val_fraction`` of the remaining images, by patient, stratified as
    :func:`split_by_patient` does. The same samples and seed give the same folds in any input order.
    """
    from sklearn.model_selection import StratifiedGroupKFold  # the train extra; imported when folds are made

    check_k(samples, k)
    ordered = sorted(samples, key=lambda s: (s.patient_id, s.image_id, s.path))  # input order never matters
    strata = [f"{s.label}|{'face' if s.is_face(face_regions) else 'other'}" for s in ordered]
    groups = [s.patient_id for s in ordered]
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Rare label x site strata (PAD: 1 SCC face image) have fewer members than folds; check_k guards
        # what matters (every class's patients), so sklearn's warning about it is noise here.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        tests = [test for _, test in splitter.split(np.zeros(len(ordered)), strata, groups)]
    fold_of = {groups[i]: fold for fold, test in enumerate(tests) for i in test}
    _fill_missing_classes(fold_of, ordered, k)
    folds = []
    for fold in range(k):
        test = [s for s in ordered if fold_of[s.patient_id] == fold]
        rest = [s for s in ordered if fold_of[s.patient_id] != fold]
        inner = split_by_patient(
            rest, val_fraction=val_fraction, test_fraction=0.0, seed=seed, face_regions=face_regions
        )
        folds.append(Splits(train=inner.train, val=inner.val, test=test))
    check_folds(folds, samples)
    return folds


def _fill_missing_classes(fold_of: dict[str, int], samples: Sequence[Sample], k: int) -> None:
    """Give every test fold each class that has at least ``k`` patients, moving patients in ``fold_of``.

    StratifiedGroupKFold is a heuristic: on label x site strata it can leave a fold without a class that has
    K patients (both of its strata rare). Rarest class first, one patient moves from the fold holding the most
    patients of that class to a fold lacking it; never a patient whose leaving would empty their fold of any
    class (so an earlier repair stays), smallest patient first (fold sizes barely change).
    """
    labels_of: dict[str, set[str]] = defaultdict(set)
    images_of: Counter[str] = Counter()
    for sample in samples:
        labels_of[sample.patient_id].add(sample.label)
        images_of[sample.patient_id] += 1
    patients_of: dict[str, list[str]] = defaultdict(list)
    for patient in sorted(labels_of):
        for label in labels_of[patient]:
            patients_of[label].append(patient)

    def held(label: str) -> Counter[int]:
        return Counter(fold_of[p] for p in patients_of[label])

    for label in sorted(patients_of, key=lambda name: (len(patients_of[name]), name)):
        if len(patients_of[label]) < k:
            continue
        while lacking := [fold for fold in range(k) if not held(label)[fold]]:
            holders = held(label)
            movable = [p for p in patients_of[label] if all(held(other)[fold_of[p]] >= 2 for other in labels_of[p])]
            if not movable:  # each candidate would leave its fold without a class: keep the folds as they are
                break
            mover = min(movable, key=lambda p: (-holders[fold_of[p]], images_of[p], p))
            fold_of[mover] = lacking[0]


def check_folds(folds: Sequence[Splits], samples: Sequence[Sample]) -> None:
    """Every fold patient-disjoint (:class:`DataLeakageError` naming the fold) and the test folds covering each
    image of ``samples`` exactly once (:class:`DataError` otherwise)."""
    for index, fold in enumerate(folds):
        try:
            check_disjoint_patients(fold)
        except DataLeakageError as exc:
            raise DataLeakageError(f"fold {index}: {exc}") from None
    tested = Counter(s.image_id for fold in folds for s in fold.test)
    wanted = Counter(s.image_id for s in samples)
    if tested != wanted:
        missing, twice = wanted - tested, tested - wanted
        raise DataError(
            f"the test folds do not cover every image once: {sum(missing.values())} missing, "
            f"{sum(twice.values())} extra (e.g. {next(iter(missing or twice))})"
        )


# ----------------------------------------------------------------------------------- out-of-fold table
@dataclass(frozen=True)
class OOF:
    """Out-of-fold predictions: one row per image; ``probs[:, c]`` is the probability of ``labels[c]``."""

    labels: tuple[str, ...]
    image_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]
    sites: tuple[str, ...]  # "face" or "other"
    truth: tuple[str, ...]
    folds: np.ndarray  # int, [N]
    probs: np.ndarray  # float, [N, C]

    @classmethod
    def from_samples(
        cls,
        samples: Sequence[Sample],
        probs: np.ndarray,
        labels: Sequence[str],
        fold: int,
        face_regions: Sequence[str] = FACE_REGIONS,
    ) -> OOF:
        """One fold's rows: ``samples`` with their predicted ``probs`` [N, C] over ``labels``."""
        return cls(
            tuple(labels),
            tuple(s.image_id for s in samples),
            tuple(s.patient_id for s in samples),
            tuple("face" if s.is_face(face_regions) else "other" for s in samples),
            tuple(s.label for s in samples),
            np.full(len(samples), fold, dtype=np.int64),
            np.asarray(probs, dtype=np.float64).reshape(len(samples), len(labels)),
        )

    @classmethod
    def concat(cls, parts: Sequence[OOF]) -> OOF:
        """The rows of ``parts`` (the folds) one after another."""
        labels = parts[0].labels
        if any(p.labels != labels for p in parts):
            raise SchemaError(f"folds disagree on the labels: {sorted({p.labels for p in parts})}")
        return cls(
            labels,
            *(tuple(x for p in parts for x in getattr(p, name)) for name in _TEXT_FIELDS),
            np.concatenate([p.folds for p in parts]),
            np.concatenate([p.probs for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def take(self, rows: Sequence[int] | np.ndarray) -> OOF:
        """These rows, in this order (a view, a fold, another table's order)."""
        rows = np.asarray(rows, dtype=np.int64)
        pick = rows.tolist()
        return OOF(
            self.labels,
            *(tuple(getattr(self, name)[i] for i in pick) for name in _TEXT_FIELDS),
            self.folds[rows],
            self.probs[rows],
        )

    def select(self, view: View) -> OOF:
        """The face images (``"face"``) or every image (``"all"``)."""
        return self if view == "all" else self.take([i for i, s in enumerate(self.sites) if s == view])

    def y(self) -> np.ndarray:
        """The true labels as class indices."""
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[t] for t in self.truth], dtype=np.int64)


def write_oof(path: str | Path, oof: OOF) -> None:
    """``oof.csv``: img_id, patient_id, site, label, fold, then ``p_<label>`` per class; written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*OOF_COLUMNS, *(PROB_PREFIX + label for label in oof.labels)])
        for i in range(len(oof)):
            fixed = (oof.image_ids[i], oof.patient_ids[i], oof.sites[i], oof.truth[i], int(oof.folds[i]))
            writer.writerow([*fixed, *(f"{p:.9g}" for p in oof.probs[i])])  # 9 digits: float32 exactly
    tmp.replace(path)


def read_oof(path: str | Path) -> OOF:
    """Read an ``oof.csv``, or the one in a CV dir (:class:`SchemaError` when malformed)."""
    path = Path(path)
    if path.suffix != ".csv":  # a CV dir
        path = path / OOF_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; make a CV dir with facederm-train --cv K --out DIR")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header = rows[0] if rows else []
    labels = tuple(c[len(PROB_PREFIX) :] for c in header[len(OOF_COLUMNS) :])
    if (
        tuple(header[: len(OOF_COLUMNS)]) != OOF_COLUMNS
        or not labels
        or not all(c.startswith(PROB_PREFIX) for c in header[len(OOF_COLUMNS) :])
    ):
        raise SchemaError(f"{path}: not an {OOF_FILE}: its columns must be {', '.join(OOF_COLUMNS)}, p_<label>...")
    body = rows[1:]
    try:
        return OOF(
            labels,
            *(tuple(r[i] for r in body) for i in range(len(_TEXT_FIELDS))),
            np.array([int(r[4]) for r in body], dtype=np.int64),
            np.array([[float(x) for x in r[5:]] for r in body], dtype=np.float64).reshape(len(body), len(labels)),
        )
    except (ValueError, IndexError) as exc:
        raise SchemaError(f"{path}: malformed row: {exc}") from None


# ---------------------------------------------------------------------------------------------- summary
def _finite(value: float | None) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def _view_report(oof: OOF, supported: Sequence[int], *, n_boot: int, seed: int) -> dict[str, Any]:
    """classification_report plus the mean recall over ``supported`` classes (with its CI when n_boot > 0)."""
    y, groups = oof.y(), list(oof.patient_ids)
    report = classification_report(y, oof.probs, oof.labels, groups, n_boot=n_boot, seed=seed)
    statistic = macro_recall_over(supported)
    report["supported_classes"] = [oof.labels[c] for c in supported]
    report["macro_recall_supported"] = _finite(statistic(y, oof.probs)) if supported and len(y) else None
    ci: list[float | None] = [None, None]
    if n_boot > 0 and supported and len(y):
        ci = [_finite(v) for v in patient_bootstrap(statistic, y, oof.probs, groups, n_boot=n_boot, seed=seed)]
    report["macro_recall_supported_ci"] = ci
    return report


def _spread(values: Sequence[float | None]) -> dict[str, float | int | None]:
    got = np.array([v for v in values if v is not None], dtype=float)
    if not got.size:
        return {"mean": None, "sd": None, "min": None, "max": None, "n_folds": 0}
    return {
        "mean": float(got.mean()),
        "sd": float(got.std(ddof=1)) if got.size > 1 else None,
        "min": float(got.min()),
        "max": float(got.max()),
        "n_folds": int(got.size),
    }


def summarize(oof: OOF, *, n_boot: int = 1000, seed: int = 0, min_support: int = MIN_SUPPORT) -> dict[str, Any]:
    """Per fold and pooled out-of-fold metrics for face images and for all sites, with the spread across folds.

    ``supported_classes`` of a view are the classes with at least ``min_support`` images in its pool (for the
    face view: face images); ``macro_recall_supported`` is the mean recall over them, in the pool and per fold.
    Pooled figures carry patient-bootstrap 95 % CIs (``n_boot`` resamples); per-fold figures none.
    """
    views: dict[str, Any] = {}
    fold_ids = sorted(set(oof.folds.tolist()))
    for view in VIEWS:
        part = oof.select(view)
        support = np.bincount(part.y(), minlength=len(oof.labels))
        supported = [c for c in range(len(oof.labels)) if support[c] >= min_support]
        folds = []
        for fold in fold_ids:
            one = part.take(np.flatnonzero(part.folds == fold))
            folds.append({"fold": fold, **_view_report(one, supported, n_boot=0, seed=seed)})
        views[view] = {
            "pooled": _view_report(part, supported, n_boot=n_boot, seed=seed),
            "folds": folds,
            "spread": {metric: _spread([f[metric] for f in folds]) for metric in SPREAD_METRICS},
        }
    return {"labels": list(oof.labels), "min_support": min_support, "n_boot": n_boot, "views": views}


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _interval(ci: Sequence[float | None]) -> str:
    return "" if not ci or ci[0] is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


#: Macro rows of the summary table: (label, key in a report).
_TABLE_METRICS = (
    ("mean recall", "macro_recall"),
    ("mean, n>={m}", "macro_recall_supported"),
    ("precision", "macro_precision"),
    ("AUC", "auc_macro"),
)


def summary_tables(summary: dict[str, Any]) -> list[Table]:
    """One rich table per view (face images, all sites): a row per metric (the macro figures, then each class's
    recall with its pooled support), a column per fold, the pooled figure with its 95 % CI, and the folds' mean
    +- sd and range."""
    labels, min_support = summary["labels"], summary["min_support"]
    tables = []
    for view, title in (("face", "face images"), ("all", "all sites")):
        data = summary["views"][view]
        pooled, folds, spread = data["pooled"], data["folds"], data["spread"]
        scored = " (the site the protocol scores)" if summary.get("site_eval", "all") == view else ""
        table = Table(
            title=f"out-of-fold, {title}{scored}: {pooled['n_images']} images, {pooled['n_patients']} patients",
            caption=f"mean, n>={min_support}: mean recall over the classes with >= {min_support} images here "
            f"({', '.join(pooled['supported_classes']) or 'none'}); precision and AUC: macro; per class: recall "
            "(pooled images); CI: patient bootstrap",
        )
        table.add_column("metric")
        for fold in folds:
            table.add_column(f"fold {fold['fold']}\n{fold['n_images']} img", justify="right")
        table.add_column("pooled, 95% CI", justify="right", no_wrap=True)
        table.add_column("folds mean±sd", justify="right")
        table.add_column("min-max", justify="right")
        for name, key in _TABLE_METRICS:
            values = spread.get(key)
            ci = pooled.get(f"{key}_ci")
            table.add_row(
                name.format(m=min_support),
                *(_num(fold[key]) for fold in folds),
                f"{_num(pooled[key])} {_interval(ci) if ci else ''}".strip(),
                f"{_num(values['mean'])}±{_num(values['sd'])}" if values else "",
                f"{_num(values['min'])}-{_num(values['max'])}" if values else "",
            )
        table.add_section()
        for label in labels:
            one = pooled["per_class"][label]
            recalls = [fold["per_class"][label]["recall"] for fold in folds]
            values = _spread(recalls)
            table.add_row(
                f"{label} (n={one['support']})",
                *(_num(r) for r in recalls),
                f"{_num(one['recall'])} {_interval(one['recall_ci'])}".strip(),
                f"{_num(values['mean'])}±{_num(values['sd'])}",
                f"{_num(values['min'])}-{_num(values['max'])}",
            )
        tables.append(table)
    return tables


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print :func:`summary_tables` (to stdout unless ``console`` says otherwise)."""
    console = console or Console()
    for table in summary_tables(summary):
        console.print(table)


# ------------------------------------------------------------------------------------------------ run
@dataclass
class CVResult:
    """The CV dir, its fold run dirs, the out-of-fold predictions and the summary written."""

    cv_dir: Path
    run_dirs: list[Path]
    oof: OOF
    summary: dict[str, Any]


def _plan(config: TrainConfig, k: int, folds: Sequence[Splits]) -> dict[str, Any]:
    from .trainer import RESUME_KEYS  # the options a resumed fold must keep

    options = config.to_dict()
    return {
        "k": k,
        "options": {key: options[key] for key in RESUME_KEYS},
        "folds": [sorted(s.image_id for s in fold.test) for fold in folds],
    }


def _claim(cv_dir: Path, plan: dict[str, Any], resume: bool) -> None:
    """Write the fold plan into a new CV dir, or check that a resumed one was made with the same plan."""
    path = cv_dir / CV_PLAN_FILE
    if path.is_file():
        if not resume:
            raise ConfigError(
                f"{cv_dir} already holds a cross-validation; pass --resume to continue it or choose another --out"
            )
        saved = read_json(path)
        changed = [key for key in ("k", "folds") if saved.get(key) != plan[key]]
        # An option the saved plan lacks is one added since: it had its default then.
        saved_options = {**recorded_defaults(), **saved.get("options", {})}
        changed += [key for key, value in plan["options"].items() if saved_options.get(key) != value]
        if changed:
            raise ConfigError(f"{cv_dir}: cannot resume with different options or folds ({', '.join(changed)})")
        return
    if cv_dir.is_dir() and any(cv_dir.iterdir()):
        raise ConfigError(f"{cv_dir} is not empty and holds no cross-validation; choose another --out")
    cv_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, plan)


def _mark_fold(run_dir: Path, fold: int, k: int) -> None:
    """Say in the fold's model card (so in every artifact exported from it) which split it was trained on."""
    from .rundir import load_card

    card = load_card(run_dir)
    where = (
        f"cross-validation fold {fold} of {k}: test = this fold's patients (StratifiedGroupKFold), val carved by "
        "patient from the other patients, the rest train; then filtered by site per stage"
    )
    data = {**card.data, "split_patients_over": where, "cross_validation": {"fold": fold, "k": k}}
    replace(card, data=data).save(run_dir / CARD_FILE)


def _predict_fold(run_dir: Path, dataset: DataSet, test: list[Sample], fold: int, config: TrainConfig) -> OOF:
    """Every image of the fold's test patients, all sites, through the fold's best weights."""
    from .evaluate import predict_probabilities, resolve_device
    from .rundir import load_run

    model, card = load_run(run_dir)
    probs = predict_probabilities(
        model, dataset, test, card.preprocessing, batch_size=config.batch_size, device=resolve_device(config.device)
    )
    return OOF.from_samples(test, probs, card.labels, fold, dataset.face_regions)


def run_cv(
    config: TrainConfig, k: int, *, console: Console | None = None, on_fold_end: FoldCallback | None = None
) -> CVResult:
    """K-fold cross-validation of ``config`` into the CV dir ``config.out``; see the module docstring.

    ``config.resume`` continues a CV dir: folds whose predictions exist are kept, a killed fold resumes from its
    checkpoint. ``on_fold_end(fold, run_dir)`` runs after each fold's predictions are written (tests interrupt
    with it).
    """
    from .data import open_dataset
    from .protocols import get_protocol
    from .trainer import train

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--cv trains its folds one after another in one process; run it without torchrun")
    if config.splits is not None:
        raise ConfigError("run_cv makes its own folds: leave TrainConfig.splits unset")
    cv_dir = Path(config.out)
    console = console or Console(stderr=True)
    say = console.print if config.progress else (lambda *args, **kwargs: None)
    protocol = get_protocol(config.protocol)
    dataset = open_dataset(config.data, label_set=config.label_set, face_regions=config.face_regions)
    folds = make_folds(
        dataset.samples, k, seed=config.seed, val_fraction=config.val_fraction, face_regions=dataset.face_regions
    )
    _claim(cv_dir, _plan(config, k, folds), config.resume)
    say(
        f"[bold]facederm-train --cv {k}[/]: {len(dataset)} images, {len(dataset.patients)} patients"
        f"{' [SYNTHETIC]' if dataset.synthetic else ''}; protocol {protocol.name} (scores {protocol.eval_site} "
        f"images; out-of-fold predictions for every site) into {cv_dir}"
    )
    parts, run_dirs = [], []
    for index, fold in enumerate(folds):
        run_dir = fold_dir(cv_dir, index)
        run_dirs.append(run_dir)
        done = run_dir / OOF_FILE
        if done.is_file():  # written only after the fold's run finished
            say(f"fold {index + 1}/{k}: finished earlier, kept ({run_dir})")
            parts.append(read_oof(done))
            continue
        say(
            f"[bold]fold {index + 1}/{k}[/]: {len(fold.train)} train / {len(fold.val)} val / {len(fold.test)} test "
            f"images ({len({s.patient_id for s in fold.test})} test patients), all sites before the protocol's stages"
        )
        train(replace(config, out=run_dir, splits=fold), console=console)
        _mark_fold(run_dir, index, k)
        part = _predict_fold(run_dir, dataset, fold.test, index, config)
        write_oof(done, part)
        parts.append(part)
        if on_fold_end is not None:
            on_fold_end(index, run_dir)
    oof = OOF.concat(parts)
    if Counter(oof.image_ids) != Counter(s.image_id for s in dataset.samples):
        raise DataError(f"{cv_dir}: the folds' predictions do not cover every image once; rerun with --resume")
    write_oof(cv_dir / OOF_FILE, oof)
    summary = {
        "k": k,
        "data": config.data,
        "synthetic": dataset.synthetic,
        "arch": config.arch,
        "protocol": protocol.name,
        "site_eval": protocol.eval_site,
        "seed": config.seed,
        "folds": [
            {
                "fold": index,
                "run_dir": run_dir.name,
                "train_images": len(fold.train),
                "val_images": len(fold.val),
                "test_images": len(fold.test),
                "test_patients": len({s.patient_id for s in fold.test}),
            }
            for index, (fold, run_dir) in enumerate(zip(folds, run_dirs))
        ],
        **summarize(oof, n_boot=config.n_boot, seed=config.seed),
    }
    write_json_atomic(cv_dir / CV_SUMMARY_FILE, summary)
    say(f"wrote {cv_dir / OOF_FILE} and {cv_dir / CV_SUMMARY_FILE}")
    return CVResult(cv_dir, run_dirs, oof, summary)


# ------------------------------------------------------------------------------------ paired comparison
@dataclass(frozen=True)
class PairedDifference:
    """Macro recall of B minus A on the same images (paired), with a patient-bootstrap 95 % CI."""

    a: str
    b: str
    site: str
    n_images: int
    n_patients: int
    macro_recall_a: float | None
    macro_recall_b: float | None
    delta: float | None
    ci: tuple[float | None, float | None]
    n_boot: int
    per_class: dict[str, dict[str, float | int | None]]  # label -> support, recall_a, recall_b, delta

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _aligned(a: OOF, b: OOF, where: tuple[str, str]) -> OOF:
    """``b``'s rows in ``a``'s order; :class:`ConfigError` unless both hold the same images, labels, patients."""
    if a.labels != b.labels:
        raise ConfigError(f"{where[0]} and {where[1]} predict different labels: {a.labels} vs {b.labels}")
    if set(a.image_ids) != set(b.image_ids):
        only_a, only_b = set(a.image_ids) - set(b.image_ids), set(b.image_ids) - set(a.image_ids)
        raise ConfigError(
            f"{where[0]} and {where[1]} hold different images ({len(only_a)} only in the first, {len(only_b)} only "
            "in the second): compare cross-validations of the same data and face regions"
        )
    row = {image_id: i for i, image_id in enumerate(b.image_ids)}
    aligned = b.take([row[i] for i in a.image_ids])
    if aligned.truth != a.truth or aligned.patient_ids != a.patient_ids:
        raise ConfigError(f"{where[0]} and {where[1]} disagree on the labels or patients of the same images")
    return aligned


def compare_oof(
    a: str | Path, b: str | Path, *, site: View = "face", n_boot: int = 1000, seed: int = 0
) -> PairedDifference:
    """Macro recall of CV dir (or oof.csv) ``b`` minus ``a`` on the same ``site`` images, paired.

    Both recipes' predictions are resampled together, by patient, so the CI is that of the difference itself
    (much narrower than two separate CIs when the recipes err on the same images).
    """
    if site not in VIEWS:
        raise ConfigError(f"site {site!r}: use face or all")
    first = read_oof(a).select(site)
    second = _aligned(first, read_oof(b).select(site), (str(a), str(b)))
    y, classes = first.y(), len(first.labels)
    joint = np.concatenate([first.probs, second.probs], axis=1)

    def difference(y_true: np.ndarray, probs: np.ndarray) -> float:
        return macro_recall(y_true, probs[:, classes:]) - macro_recall(y_true, probs[:, :classes])

    ci: tuple[float | None, float | None] = (None, None)
    if len(y) and n_boot > 0:
        low, high = patient_bootstrap(difference, y, joint, list(first.patient_ids), n_boot=n_boot, seed=seed)
        ci = (_finite(low), _finite(high))
    recalls = [per_class_recall(confusion_matrix(y, p.probs.argmax(axis=1), classes)) for p in (first, second)]
    support = np.bincount(y, minlength=classes)
    per_class = {
        label: {
            "support": int(support[c]),
            "recall_a": _finite(recalls[0][c]),
            "recall_b": _finite(recalls[1][c]),
            "delta": _finite(recalls[1][c] - recalls[0][c]),
        }
        for c, label in enumerate(first.labels)
    }
    score_a = _finite(macro_recall(y, first.probs)) if len(y) else None
    score_b = _finite(macro_recall(y, second.probs)) if len(y) else None
    return PairedDifference(
        a=str(a),
        b=str(b),
        site=site,
        n_images=len(y),
        n_patients=len(set(first.patient_ids)),
        macro_recall_a=score_a,
        macro_recall_b=score_b,
        delta=None if score_a is None or score_b is None else score_b - score_a,
        ci=ci,
        n_boot=n_boot,
        per_class=per_class,
    )


# -------------------------------------------------------------------------------------------------- CLI
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Cross-validation dirs (facederm-train --cv K): print a summary, compare two recipes paired."""


@main.command("summary")
@click.argument("cv_dir", type=click.Path(file_okay=False))
@common_option("--json", "as_json", is_flag=True)
@debug_option()
def summary_command(cv_dir: str, as_json: bool, debug: bool) -> None:
    """Print a CV dir's summary (its cv_summary.json) as tables."""
    with one_line_errors("cv summary", debug):
        path = Path(cv_dir) / CV_SUMMARY_FILE
        if not path.is_file():
            raise ConfigError(f"{cv_dir}: no {CV_SUMMARY_FILE}; run facederm-train --cv K --out {cv_dir} (--resume)")
        summary = read_json(path)
    if as_json:
        click.echo(path.read_text(encoding="utf-8").rstrip())
    else:
        print_summary(summary)


@main.command("compare")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option(
    "--site",
    type=click.Choice(VIEWS),
    default="face",
    show_default=True,
    help="Compare on the face images or on every site.",
)
@click.option("--n-boot", default=1000, show_default=True, type=int, help="Bootstrap resamples of patients.")
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@common_option("--json", "as_json", is_flag=True)
@debug_option()
def compare_command(a: str, b: str, site: View, n_boot: int, seed: int, as_json: bool, debug: bool) -> None:
    """Macro recall of CV dir B minus CV dir A on the same images, with a patient-bootstrap 95 % CI."""
    import json

    with one_line_errors("cv compare", debug):
        result = compare_oof(a, b, site=site, n_boot=n_boot, seed=seed)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    console = Console()
    table = Table(title=f"B minus A on {result.n_images} {site} images of {result.n_patients} patients (paired)")
    for name in ("class", "images", "recall A", "recall B", "B - A"):
        table.add_column(name, justify="left" if name == "class" else "right")
    for label, c in result.per_class.items():
        delta = "-" if c["delta"] is None else f"{c['delta']:+.2f}"
        table.add_row(label, str(c["support"]), _num(c["recall_a"]), _num(c["recall_b"]), delta)
    table.add_section()
    delta = "-" if result.delta is None else f"{result.delta:+.3f}"
    table.add_row(
        "mean recall",
        str(result.n_images),
        _num(result.macro_recall_a, 3),
        _num(result.macro_recall_b, 3),
        delta,
        style="bold",
    )
    console.print(table)
    low, high = result.ci
    console.print(
        f"A = {a}\nB = {b}\nmacro recall B - A: {delta}, 95 % CI "
        + ("n/a" if low is None else f"[{low:+.3f}, {high:+.3f}]")
        + f" (patient bootstrap, {n_boot} resamples): "
        + _verdict(low, high)
    )


def _verdict(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "undefined"
    if low > 0:
        return "B is better (the CI excludes 0)"
    if high < 0:
        return "A is better (the CI excludes 0)"
    return "no measured difference (the CI includes 0)"


if __name__ == "__main__":  # pragma: no cover
    main()
