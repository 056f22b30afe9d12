"""Model.predict: input kinds, batches with bad items, referral, static batches, threads, speed path."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runtime_builders import RuntimeExport

import facederm.runtime as rt
from facederm.runtime.errors import ImageNotFoundError, UnreadableImageError
from facederm.runtime.preprocess import prepare_image


@pytest.fixture(scope="module")
def model(runtime_export: RuntimeExport) -> rt.Model:
    return rt.load(runtime_export.root, backend="onnxruntime", precision="fp32")


def test_every_input_kind_gives_the_same_prediction(model: rt.Model, runtime_export: RuntimeExport) -> None:
    path = runtime_export.images[1]
    data = path.read_bytes()
    with Image.open(path) as img:
        pil = img.copy()
    by_kind = [
        model.predict(path),
        model.predict(str(path)),
        model.predict(data),
        model.predict(pil),
        model.predict(np.asarray(pil)),
    ]
    first = by_kind[0]
    for prediction in by_kind:
        assert prediction.label == first.label
        assert prediction.probabilities == pytest.approx(first.probabilities, abs=1e-6)


def test_prediction_fields(model: rt.Model, runtime_export: RuntimeExport) -> None:
    prediction = model.predict(runtime_export.images[0], top_k=2)
    assert list(prediction.probabilities) == list(model.labels)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert [label for label, _ in prediction.top_k][0] == prediction.label
    assert len(prediction.top_k) == 2 and prediction.top_k[0][1] >= prediction.top_k[1][1]
    assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
    assert prediction.source == str(runtime_export.images[0])
    assert rt.NOT_A_DIAGNOSIS in str(prediction)


def test_refer_follows_the_card_referral(model: rt.Model, runtime_export: RuntimeExport) -> None:
    referral = model.card.referral
    for prediction in model.predict(list(runtime_export.images)):
        expected = any(prediction.probabilities[x] >= referral.threshold for x in referral.labels)
        assert prediction.refer == expected
    assert any(p.refer for p in model.predict(list(runtime_export.images)))


def test_a_batch_goes_on_past_bad_items(model: rt.Model, runtime_export: RuntimeExport, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    good = list(runtime_export.images[:2])
    results = model.predict([good[0], tmp_path / "missing.png", broken, b"", good[1]])
    assert [r.ok for r in results] == [True, False, False, False, True]
    assert "missing.png" in results[1].error and results[1].error_type == ImageNotFoundError.__name__
    assert results[2].error_type == UnreadableImageError.__name__
    alone = model.predict(good)
    assert [r.probabilities for r in (results[0], results[4])] == [a.probabilities for a in alone]
    assert results[1].to_dict() == {"input": str(tmp_path / "missing.png"), "error": results[1].error}


def test_a_single_bad_input_raises_naming_it(model: rt.Model, tmp_path: Path) -> None:
    with pytest.raises(ImageNotFoundError, match="nope.png"):
        model.predict(tmp_path / "nope.png")


def test_batches_are_chunked_and_static_batch_models_looped(runtime_export: RuntimeExport) -> None:
    images = list(runtime_export.images) * 3
    reference = [p.probabilities for p in rt.load(runtime_export.root, precision="fp32").predict(images)]
    small = rt.load(runtime_export.root, precision="fp32", max_batch=4)
    static = rt.load(runtime_export.static_onnx)  # batch fixed to 1 in the graph
    assert static.max_batch == 1
    for model in (small, static):
        got = [p.probabilities for p in model.predict(images)]
        for a, b in zip(got, reference):
            assert a == pytest.approx(b, abs=1e-6)


def test_predict_iter_streams_in_order(model: rt.Model, runtime_export: RuntimeExport) -> None:
    consumed = []

    def sources():
        for path in runtime_export.images:
            consumed.append(path)
            yield path

    stream = model.predict_iter(sources(), batch_size=2)
    first = next(stream)
    assert len(consumed) == 2  # only one batch has been read so far
    rest = list(stream)
    assert [p.source for p in [first, *rest]] == [str(p) for p in runtime_export.images]


def test_uint8_array_at_input_size_is_used_as_is(model: rt.Model, runtime_export: RuntimeExport) -> None:
    prepared = prepare_image(runtime_export.images[4], model.card.preprocessing)
    assert prepared.shape == (model.input_size, model.input_size, 3)
    from_path = model.predict(runtime_export.images[4])
    from_array = model.predict(prepared)
    assert from_array.probabilities == pytest.approx(from_path.probabilities, abs=1e-6)
    batch = model.predict(np.stack([prepared, prepared]))  # an N x H x W x 3 array is a batch
    assert len(batch) == 2 and batch[1].label == from_path.label


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_threads_get_the_same_outputs_as_sequential_calls(runtime_export: RuntimeExport, backend: str) -> None:
    model = rt.load(runtime_export.root, backend=backend, precision="fp32", precision_hint="f32")
    inputs = [np.asarray(Image.open(p).convert("RGB")) for p in runtime_export.images]
    jobs = [inputs[i % len(inputs)] for i in range(8 * 50)]
    sequential = [model.predict(x).probabilities for x in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda x: model.predict(x).probabilities, jobs))
    assert concurrent == sequential


def test_bytes_of_a_png_with_alpha(model: rt.Model) -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (40, 40), (200, 30, 30, 128)).save(buffer, format="PNG")
    assert model.predict(buffer.getvalue()).ok
