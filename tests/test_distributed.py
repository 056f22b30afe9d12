"""The training command under torchrun: 2 CPU ranks (gloo) end an epoch with identical weights,
and only rank 0 writes the run dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from facederm.training.distributed import STATE_HASH_ENV, state_hash
from facederm.training.rundir import load_run


@pytest.mark.slow
def test_two_cpu_ranks_end_with_identical_weights(tmp_path):
    out, hashes = tmp_path / "run", tmp_path / "hashes"
    env = dict(os.environ, **{STATE_HASH_ENV: str(hashes), "OMP_NUM_THREADS": "1"})
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "facederm.training.cli_train",
        "--data",
        "synthetic:64",
        "--arch",
        "mobilenetv3_small_050",
        "--protocol",
        "all",
        "--epochs",
        "1",
        "--img-size",
        "32",
        "--batch-size",
        "8",
        "--n-boot",
        "20",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = ((hashes / f"rank{r}.sha256").read_text().strip() for r in (0, 1))
    assert rank0 == rank1
    # The written weights are those weights, and the per-epoch log counts both ranks' images.
    assert state_hash(load_run(out)[0]) == rank0
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and history[0]["images_per_s"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["n_images"] == len(json.loads((out / "splits.json").read_text())["test"])
