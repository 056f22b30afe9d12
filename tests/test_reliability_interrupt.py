"""Interruption (issue 7 item 6): SIGKILL at a random moment.

- An export killed mid-way leaves only complete, listed artifacts: every artifact that manifest.json lists
  as ok exists and matches its sha256; a rerun into the same dir completes and cleans up.
- Training killed during epoch 2 resumes with ``--resume`` and ends with the same metrics and weights
  as an uninterrupted run with the same seed.

Both kill real child processes (no exception handlers run, no finally blocks, no atexit).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facederm.runtime import load
from facederm.runtime.card import ModelCard
from facederm.runtime.layout import Manifest
from facederm.runtime.loader import verify_artifact

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("FACEDERM_KILL_SEED", random.randrange(1 << 30)))  # printed on failure: rerun with it
ARCH = "mobilenetv3_small_050"
SIZE = 32
SPEC = f"synthetic:60,size={SIZE},seed=2"


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 180.0) -> bool:
    """Poll until ``predicate()`` or the process exits; True when the predicate came true first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting (seed {SEED})")


def _kill(proc: subprocess.Popen) -> bool:
    """SIGKILL; True when the process was still running (a real interruption)."""
    running = proc.poll() is None
    if running:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return running


# --- export -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory) -> Path:
    """A run dir with an untrained tiny model (export does not care how good it is; the gate is off)."""
    import torch

    from facederm.training.data import open_dataset, split_by_patient
    from facederm.training.models import create_model, default_preprocessing
    from facederm.training.rundir import save_run

    torch.manual_seed(0)
    dataset = open_dataset(SPEC)
    splits = split_by_patient(dataset.samples, seed=0)
    model = create_model(ARCH, len(dataset.labels), head_hidden=32).eval()
    card = ModelCard(
        arch=ARCH,
        labels=dataset.labels,
        preprocessing=default_preprocessing(ARCH, SIZE),
        model_args={"head_hidden": 32},
        data={"spec": SPEC},
        seed=0,
    )
    ids = {name: [s.image_id for s in part] for name, part in splits.items()}
    return save_run(tmp_path_factory.mktemp("run") / "run", model, card, splits=ids)


EXPORT_OPTIONS = dict(targets=["onnx", "openvino"], precisions=["fp32", "fp16"], max_drop=100.0)
EXPORT_CHILD = f"""
import sys
import facederm.export.pipeline, facederm.training.rundir  # the heavy imports happen before READY
from facederm.export import export_run
print("READY", flush=True)
export_run(sys.argv[1], out_dir=sys.argv[2], **{EXPORT_OPTIONS!r})
print("DONE", flush=True)
"""


def _assert_consistent(out_dir: Path) -> int:
    """Every ok artifact in manifest.json exists and matches its sha256; returns how many there are."""
    manifest_file = out_dir / "manifest.json"
    if not manifest_file.exists():
        return 0
    manifest = Manifest.load(manifest_file)  # parses: the manifest is never half-written
    for record in manifest.ok_artifacts():
        verify_artifact(out_dir, record)  # IntegrityError names the file if missing or different
    return len(manifest.ok_artifacts())


def test_killed_export_leaves_only_complete_listed_artifacts(untrained_run: Path, tmp_path: Path):
    rng = random.Random(SEED)
    out_dir = tmp_path / "export"
    interrupted, seen_ok = 0, []
    for attempt in range(2):
        before = (out_dir / "manifest.json").stat().st_mtime_ns if (out_dir / "manifest.json").exists() else None
        proc = subprocess.Popen(
            [sys.executable, "-c", EXPORT_CHILD, str(untrained_run), str(out_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "READY", f"export child failed to start (seed {SEED})"
            # Wait until this run has started writing (the manifest is (re)written first), then a random delay.
            _wait_for(
                lambda before=before: (
                    (out_dir / "manifest.json").exists() and (out_dir / "manifest.json").stat().st_mtime_ns != before
                ),
                proc,
            )
            time.sleep(rng.uniform(0.0, 4.0) if attempt == 0 else rng.uniform(0.0, 1.5))  # fresh dir; re-export
        finally:
            interrupted += _kill(proc)
        seen_ok.append(_assert_consistent(out_dir))
    assert interrupted >= 1, f"no kill landed while an export was running (seed {SEED})"

    # A rerun into the same dir completes, lists every file it leaves, and removes the staging folders.
    from facederm.export import export_run

    result = export_run(untrained_run, out_dir=out_dir, **EXPORT_OPTIONS)
    assert result.ok, [(r.key, r.error) for r in result.failed]
    assert _assert_consistent(out_dir) >= 4, seen_ok
    leftovers = [p.name for p in out_dir.iterdir() if p.name.startswith(".")]
    assert not leftovers, f"staging or temporary files left: {leftovers}"
    listed = set()
    for record in result.manifest.ok_artifacts():
        listed |= {record.path, *(f.path for f in record.files)}
    present = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()} - {"manifest.json"}
    assert present <= listed, f"unlisted files: {sorted(present - listed)}"
    model = load(out_dir)
    assert model.self_test().passed


# --- training -----------------------------------------------------------------------------------------------
# Four epochs: the kill lands early in epoch 2, and the epochs after it leave a wide margin before the run
# could finish, however fast this machine is (with two epochs a quiet machine sometimes finished first).
TRAIN_ARGS = [
    "--data",
    SPEC,
    "--arch",
    ARCH,
    "--img-size",
    str(SIZE),
    "--epochs",
    "4",
    "--batch-size",
    "8",
    "--n-boot",
    "20",
    "--seed",
    "5",
    "--patience",
    "0",
    "--quiet",
]


def _train(out: Path, *extra: str) -> subprocess.Popen:
    code = "from facederm.training.cli_train import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *TRAIN_ARGS, "--out", str(out), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_training_killed_in_epoch_two_resumes_to_the_same_result(tmp_path: Path):
    from safetensors.numpy import load_file

    rng = random.Random(SEED)
    reference_dir, victim_dir = tmp_path / "reference", tmp_path / "victim"
    reference = _train(reference_dir)  # runs alongside the victim
    victim = _train(victim_dir)
    state_file = victim_dir / "checkpoint" / "state.json"
    try:
        assert _wait_for(state_file.exists, victim), f"training failed before epoch 1 ended: {victim.stderr.read()}"
        first_epoch = json.loads(state_file.read_text())["history"][0]["seconds"]
        # Later epochs take 0.5-1x epoch 1 (epoch 1 also fills the image cache): a short random delay lands in
        # epoch 2 (at worst epoch 3), well before the last of the four.
        time.sleep(rng.uniform(0.0, 0.3) * first_epoch)
    finally:
        interrupted = _kill(victim)
    state = json.loads(state_file.read_text())
    assert interrupted and not state.get("finished"), f"the kill came after the run ended (seed {SEED})"
    # Normally the last checkpoint is epoch 1's (index 0); the kill may land after epoch 2's: resuming must give
    # the same result either way.
    assert state["epoch"] in (0, 1, 2), state["epoch"]
    assert not (victim_dir / "metrics.json").exists()

    resumed = _train(victim_dir, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert reference.wait(timeout=600) == 0, reference.stderr.read()

    ref_metrics = json.loads((reference_dir / "metrics.json").read_text())
    got_metrics = json.loads((victim_dir / "metrics.json").read_text())
    assert got_metrics == ref_metrics
    ref_weights, got_weights = (
        load_file(reference_dir / "model.safetensors"),
        load_file(victim_dir / "model.safetensors"),
    )
    assert ref_weights.keys() == got_weights.keys()
    assert all((ref_weights[k] == got_weights[k]).all() for k in ref_weights), "weights differ after resume"

    # The run's recorded splits share no patient (checked from the data, not from the run's own claim).
    from facederm.training.data import check_disjoint_patients, open_dataset

    by_id = {s.image_id: s for s in open_dataset(SPEC).samples}
    recorded = json.loads((victim_dir / "splits.json").read_text())
    assert check_disjoint_patients({name: [by_id[i] for i in recorded[name]] for name in ("train", "val", "test")}) == 0
    assert check_disjoint_patients({name: [by_id[i] for i in recorded[name]] for name in ("training", "heldout")}) == 0
