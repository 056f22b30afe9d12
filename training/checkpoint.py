"""Resumable training state: RUN_DIR/checkpoint/ holds one safetensors file of tensors (model, best model,
optimizer moments, RNG states) and ``state.json`` (stage, epoch, best score, scheduler, history...).

No pickle. Crash-safe: the tensors go to a new file first, then ``state.json`` is replaced atomically
to point at it, then older tensor files are removed; a kill at any moment leaves a consistent pair.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from facederm.runtime.errors import ConfigError
from facederm.runtime.layout import CHECKPOINT_DIR, CHECKPOINT_STATE_FILE
from facederm.runtime.schema import read_json, write_json_atomic


def _optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Python, numpy and torch (CPU + CUDA) generator states: tensors and JSON parts."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [py_version, list(py_state), py_gauss],
    }
    return tensors, meta


def restore_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))


def save_checkpoint(
    run_dir: str | Path,
    *,
    model: torch.nn.Module,
    best_model_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict[str, Any],
    ema_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the training state after an epoch. ``state`` is JSON (stage, epoch, best, history...);
    ``ema_state``: the weights' moving average (``--ema-decay``), when training keeps one."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_model_state.items()})
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in (ema_state or {}).items()})
    optimizer_tensors, optimizer_meta = _optimizer_to_flat(optimizer)
    rng_tensors, rng_meta = rng_state()
    tensors.update(optimizer_tensors)
    tensors.update(rng_tensors)
    name = f"tensors-s{state['stage']}-e{state['epoch']:04d}.safetensors"
    tmp = folder / f".{name}.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, folder / name)
    full_state = dict(state, tensors=name, optimizer=optimizer_meta, scheduler=scheduler.state_dict(), rng=rng_meta)
    write_json_atomic(folder / CHECKPOINT_STATE_FILE, full_state)
    for old in folder.glob("tensors-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return folder


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_STATE_FILE).is_file()


def load_checkpoint(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """(state, tensors by group: "model", "best", "optimizer", "rng", "ema") of the last completed epoch."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not has_checkpoint(run_dir):
        raise ConfigError(
            f"{run_dir}: nothing to resume (no {CHECKPOINT_DIR}/{CHECKPOINT_STATE_FILE}); run without --resume"
        )
    state = read_json(folder / CHECKPOINT_STATE_FILE)
    if state.get("finished"):  # a finished run keeps only its state (the tensors were deleted at the end)
        return state, {}
    raw = load_file(str(folder / state["tensors"]))
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "best": {}, "optimizer": {}, "rng": {}, "ema": {}}
    for key, tensor in raw.items():
        group, rest = key.split(".", 1)
        groups[group][rest if group in ("model", "best", "ema") else key] = tensor
    return state, groups


def restore_training(
    groups: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Put model, optimizer, scheduler and RNGs back where ``save_checkpoint`` left them."""
    model.load_state_dict(groups["model"])
    optimizer.load_state_dict(_optimizer_from_flat(groups["optimizer"], state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    restore_rng_state(groups["rng"], state["rng"])


def mark_finished(run_dir: str | Path) -> None:
    """Record that the run completed: ``--resume`` then does nothing, and the large tensors file goes."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not (folder / CHECKPOINT_STATE_FILE).is_file():
        return
    state = read_json(folder / CHECKPOINT_STATE_FILE)
    write_json_atomic(
        folder / CHECKPOINT_STATE_FILE,
        {"finished": True, "config": state.get("config", {}), "history": state.get("history", [])},
    )
    for old in folder.glob("tensors-*.safetensors"):
        old.unlink(missing_ok=True)
