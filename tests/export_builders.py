"""A tiny trained run dir for the export tests, built once per session (seconds on a CPU).

mobilenetv3_small_050 at 64 px, 3 classes of the synthetic data set, trained a few epochs so its
predictions are decisive (a random network's near-uniform outputs would make argmax agreement noise).
The run records ``card.data["spec"]`` and a patient-grouped ``splits.json``, like a real training run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from facederm.runtime.card import ModelCard
from facederm.runtime.preprocess import resize_and_crop, to_tensor
from facederm.training.data import open_dataset, split_by_patient
from facederm.training.models import ProbabilityModel, create_model, default_preprocessing
from facederm.training.rundir import save_run

ARCH = "mobilenetv3_small_050"
SIZE = 64
SPEC = "synthetic:300,size=64,seed=3"
N_LABELS = 3


def make_tiny_run(run_dir: Path, epochs: int = 6, seed: int = 0) -> Path:
    """Train the tiny classifier on 3 synthetic classes and write a run dir."""
    torch.manual_seed(seed)
    dataset = open_dataset(SPEC)
    counts = dataset.class_counts()
    labels = tuple(sorted(counts, key=lambda k: -counts[k])[:N_LABELS])
    labels = tuple(label for label in dataset.labels if label in labels)  # keep the set's order
    samples = [s for s in dataset.samples if s.label in labels]
    splits = split_by_patient(samples, seed=seed)
    pre = default_preprocessing(ARCH, SIZE)
    model = create_model(ARCH, len(labels), head_hidden=64)
    wrapped = ProbabilityModel(model, pre)
    x = torch.from_numpy(to_tensor([resize_and_crop(dataset.load_rgb(s), SIZE) for s in splits.train]))
    y = torch.tensor([labels.index(s.label) for s in splits.train])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            idx = order[i : i + 32]
            optimizer.zero_grad()
            loss = torch.nn.functional.nll_loss(torch.log(wrapped(x[idx]) + 1e-8), y[idx])
            loss.backward()
            optimizer.step()
    model.eval()
    card = ModelCard(
        arch=ARCH, labels=labels, preprocessing=pre, model_args={"head_hidden": 64}, data={"spec": SPEC}, seed=seed
    )
    ids = {name: [s.image_id for s in part] for name, part in splits.items()}
    return save_run(run_dir, model, card, splits=ids)


def export_everything(tiny_run: Path, out: Path):
    """What :func:`full_export` runs, in its own process (it validates OpenVINO and ONNX Runtime int8 natively)."""
    from facederm.export import export_run

    result = export_run(tiny_run, out_dir=out, targets=["all"], max_drop=100.0, min_agreement=0.0)
    # palettize4 is opt-in (not a default variant): add it to the same export dir, as a user would.
    export_run(tiny_run, out_dir=out, targets=["coreml"], precisions=["palettize4"], max_drop=100.0, min_agreement=0.0)
    return result


def export_int8_8bit(tiny_run: Path, out: Path):
    """ONNX Runtime and OpenVINO int8 with ``int8_weight_bits=8``, in its own process (native int8 validation)."""
    from facederm.export import export_run

    return export_run(
        tiny_run,
        out_dir=out,
        targets=["onnx", "openvino"],
        precisions=["int8"],
        int8_weight_bits=8,
        max_drop=100.0,
        min_agreement=0.0,
    )
