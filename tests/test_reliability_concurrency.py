"""One loaded model serves many threads (issue 7 item 5): 8 threads x 200 predictions each, on ONNX Runtime
and on OpenVINO, with no error and outputs identical to the sequential ones."""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from facederm.runtime import load

THREADS = 8
PER_THREAD = 200


def _inputs(export) -> list:
    """Paths (decode + resize in the thread), bytes, and arrays of other sizes: the whole predict path."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 30), (32, 32), (70, 50))]
    return [str(p) for p in export.images] + [export.images[0].read_bytes()] + arrays


@pytest.mark.parametrize(("backend", "target"), [("onnxruntime", "onnx"), ("openvino", "openvino")])
def test_threads_share_one_model(runtime_export, backend: str, target: str):
    if backend == "openvino":
        pytest.importorskip("openvino")
    model = load(runtime_export.root, backend=backend, target=target, precision="fp32")
    inputs = _inputs(runtime_export)
    expected = [np.array(list(model.predict(x).probabilities.values())) for x in inputs]
    filters_before = list(warnings.filters)
    start = threading.Barrier(THREADS)  # all threads hit the model at the same moment

    def worker(offset: int) -> list[tuple[int, np.ndarray]]:
        start.wait()
        out = []
        for i in range(PER_THREAD):
            k = (offset + i) % len(inputs)
            out.append((k, np.array(list(model.predict(inputs[k]).probabilities.values()))))
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        results = [f.result() for f in [pool.submit(worker, t) for t in range(THREADS)]]  # re-raises any error

    assert sum(len(r) for r in results) == THREADS * PER_THREAD
    mismatches = [(k, got) for r in results for k, got in r if not np.array_equal(got, expected[k])]
    assert not mismatches, f"{len(mismatches)} concurrent outputs differ from sequential ones, e.g. {mismatches[0]}"
    assert warnings.filters == filters_before, "predicting changed the process-wide warning filters"


def test_threads_batches_and_errors_do_not_mix(runtime_export):
    # Batched calls with a bad input in the middle: each thread gets its own error at its own position.
    model = load(runtime_export.root, target="onnx", precision="fp32")
    good = [str(p) for p in runtime_export.images]
    reference = model.predict(good)

    def worker(t: int):
        batch = list(good)
        batch.insert(t % len(good), f"/nonexistent/thread-{t}.png")
        return t, model.predict(batch)

    with ThreadPoolExecutor(THREADS) as pool:
        for t, predictions in pool.map(worker, range(THREADS * 4)):
            bad = t % len(good)
            assert not predictions[bad].ok and f"thread-{t}.png" in predictions[bad].error
            rest = predictions[:bad] + predictions[bad + 1 :]
            assert [p.probabilities for p in rest] == [p.probabilities for p in reference]
