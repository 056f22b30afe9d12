"""A loaded model: preprocessing, batching, the backend call, and the card's meaning of the output.

A model trained with clinical fields (``card.clinical``) also takes the answers to its clinical questions:
``predict(image, clinical={"age": 67, "bleed": True})``, validated and encoded by the card's schema; an absent or
unanswered field is missing (its own state), an unknown field or a value that does not fit raises a
:class:`~facederm.runtime.errors.ClinicalError` naming it.

One ``Model`` serves concurrent callers: it holds no per-call state, and every backend session is
thread-safe. Build one with :func:`facederm.runtime.load`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import Session
from .card import ModelCard
from .clinical import ClinicalSchema
from .errors import ArtifactError, ClinicalError, FacedermInputError, MetadataMismatchError
from .layout import ArtifactRecord, Manifest
from .prediction import Prediction, SelfTestResult
from .preprocess import describe_source, prepare_image, to_tensor
from .probe import make_probe, tolerance_for

#: Images per backend call when the artifact does not fix the batch size.
DEFAULT_MAX_BATCH = 32
DEFAULT_TOP_K = 3
#: One image's clinical answers: a mapping field -> value (None: nothing answered).
Record = Mapping[str, Any] | None
#: The answers for a stream of images: one record per image (a sequence in the images' order), a function of the
#: image source (facederm-predict matches a CSV's img_id to file names this way), or None (nothing answered).
ClinicalAnswers = Sequence[Record] | Callable[[Any], Record] | None


class Model:
    """An artifact opened on a backend. ``predict`` images; ``run`` raw float32 NCHW batches."""

    def __init__(
        self,
        session: Session,
        *,
        card: ModelCard,
        backend_name: str,
        path: Path,
        artifact: ArtifactRecord | None = None,
        manifest: Manifest | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._session = session
        self.card = card
        self.labels: tuple[str, ...] = tuple(card.labels)
        self.backend_name = backend_name
        self.path = path
        self.artifact = artifact
        self.manifest = manifest
        self.device = session.device
        self._crop = card.preprocessing.crop
        self._static_batch = session.static_batch
        limit = min(max_batch, session.max_batch) if session.max_batch else max_batch
        self.max_batch = self._static_batch or max(1, limit)
        self._referral = np.array([self.labels.index(x) for x in card.referral.labels], dtype=np.int64)
        self._referral_threshold = card.referral.threshold
        # per label: refer when it is the top label with a probability below this (0: never)
        self._unsure_below = np.array([card.referral.below_confidence.get(x, 0.0) for x in self.labels], np.float32)

    # --- metadata ---------------------------------------------------------------------------------
    @property
    def precision(self) -> str | None:
        """The artifact's precision from the manifest (None for a lone file without one)."""
        return self.artifact.precision if self.artifact else None

    @property
    def input_size(self) -> int:
        return self._crop

    @property
    def compute_precision(self) -> str | None:
        """What the device actually computes in, where the backend reports it (OpenVINO CPUs: bf16 unless
        asked for f32); None when unknown."""
        return self._session.compute_precision

    def __repr__(self) -> str:
        what = self.artifact.key if self.artifact else self.path.name
        return f"Model({what} on {self.backend_name}/{self.device}, labels={list(self.labels)})"

    # --- raw inference ----------------------------------------------------------------------------
    @property
    def clinical(self) -> ClinicalSchema | None:
        """The clinical schema the model's second input is encoded with (None: image-only)."""
        return self.card.clinical

    def run(self, batch: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        """float32 (N, 3, crop, crop) RGB 0-255 -> (N, num_classes) probabilities, chunked as the artifact needs.

        ``clinical``: float32 (N, F) answers encoded by :attr:`clinical` (``clinical.encode(records)``); None for an
        image-only model, and for a clinical model "nothing answered" (every field missing).
        """
        n = len(batch)
        if n <= self.max_batch and (self._static_batch is None or n == self._static_batch):
            return self._call(batch, clinical)  # the common case: one call, nothing copied
        step = self.max_batch
        outputs = [
            self._run_chunk(batch[i : i + step], None if clinical is None else clinical[i : i + step])
            for i in range(0, n, step)
        ]
        return np.concatenate(outputs, axis=0)

    def _call(self, batch: np.ndarray, clinical: np.ndarray | None) -> np.ndarray:
        # Image-only calls keep the one-argument form every session (and test double) implements.
        return self._session.run(batch) if clinical is None else self._session.run(batch, clinical)

    def _run_chunk(self, chunk: np.ndarray, clinical: np.ndarray | None = None) -> np.ndarray:
        if self._static_batch is None or len(chunk) == self._static_batch:
            answers = None if clinical is None else np.ascontiguousarray(clinical)
            return self._call(np.ascontiguousarray(chunk), answers)
        padded = np.zeros((self._static_batch, *chunk.shape[1:]), dtype=chunk.dtype)  # static graphs need full batches
        padded[: len(chunk)] = chunk
        if clinical is None:
            return self._call(padded, None)[: len(chunk)]
        schema = self.card.clinical
        fill = schema.missing_batch(self._static_batch) if schema is not None else np.zeros_like(clinical[:1])
        fill[: len(chunk)] = clinical
        return self._call(padded, fill)[: len(chunk)]

    # --- predictions ------------------------------------------------------------------------------
    def predict(
        self, inputs: Any, *, top_k: int = DEFAULT_TOP_K, clinical: Record | Sequence[Record] = None
    ) -> Prediction | list[Prediction]:
        """Predict one input (path, bytes, PIL image, uint8 HWC array) or a list of them.

        A list (or a uint8 N x H x W x 3 array) gives a list of :class:`Prediction`, in order; an input
        that cannot be read gives a Prediction with ``error`` set and the others are still predicted.
        A single input that cannot be read raises its :class:`FacedermInputError`.

        ``clinical`` (a model with clinical fields): one input's answers, ``{"age": 67, "bleed": True}``, or for a
        list one record per input (None: nothing answered). A record that does not fit the schema fails like an
        unreadable image: raised for a single input, that input's ``error`` in a list.
        """
        if isinstance(inputs, (list, tuple)) or (isinstance(inputs, np.ndarray) and inputs.ndim == 4):
            if isinstance(clinical, Mapping):
                raise ClinicalError("clinical: give one record per input (a list) when predicting a list of inputs")
            return list(self.predict_iter(inputs, top_k=top_k, clinical=clinical))
        if clinical is not None and not isinstance(clinical, Mapping):
            raise ClinicalError(f"clinical: one input takes one record (a mapping), got {type(clinical).__name__}")
        records = None if clinical is None else [clinical]
        (prediction,) = self.predict_iter([inputs], top_k=top_k, raise_errors=True, clinical=records)
        return prediction

    def predict_iter(
        self,
        inputs: Iterable[Any],
        *,
        batch_size: int | None = None,
        top_k: int = DEFAULT_TOP_K,
        raise_errors: bool = False,
        clinical: ClinicalAnswers = None,
    ) -> Iterator[Prediction]:
        """Stream predictions over any iterable: at most ``batch_size`` decoded images are held at once.

        ``clinical``: the inputs' answers (see :data:`ClinicalAnswers`): a sequence parallel to ``inputs`` or a
        function of each input.
        """
        size = max(1, batch_size or self.max_batch)
        iterator = iter(inputs)
        answers = self._answers(clinical)
        while chunk := list(itertools.islice(iterator, size)):
            records = (
                [answers(source) for source in chunk]
                if callable(answers)
                else list(itertools.islice(answers, len(chunk)))
            )
            if len(records) < len(chunk):
                raise ClinicalError(f"clinical: fewer records than inputs ({len(records)} for the next {len(chunk)})")
            yield from self._predict_chunk(chunk, top_k, raise_errors, records)

    def _answers(self, clinical: ClinicalAnswers) -> Callable[[Any], Record] | Iterator[Record]:
        """Every input's record, as a function of the input or an iterator in input order."""
        if clinical is None or (not callable(clinical) and all(r is None for r in clinical)):
            return lambda _source: None
        if self.card.clinical is None:
            raise ClinicalError(
                f"{self.path.name}: this model is image-only (trained without clinical fields): it takes no clinical"
                " answers"
            )
        return clinical if callable(clinical) else iter(clinical)

    def _predict_chunk(
        self, sources: Sequence[Any], top_k: int, raise_errors: bool, records: Sequence[Record] | None = None
    ) -> list[Prediction]:
        images: list[np.ndarray] = []
        answers: list[np.ndarray] = []
        results: list[Prediction | None] = []
        schema = self.card.clinical
        for source, record in zip(sources, records or [None] * len(sources)):
            try:
                image = self._prepare(source)
                if schema is not None:
                    answers.append(schema.encode_one(record))  # validated: unknown fields, bad values raise
                elif record is not None:
                    raise ClinicalError("this model is image-only: it takes no clinical answers")
                images.append(image)
                results.append(None)
            except FacedermInputError as exc:
                if raise_errors:
                    raise
                results.append(Prediction(describe_source(source), error=str(exc), error_type=type(exc).__name__))
        if images:
            probabilities = self.run(to_tensor(images), np.stack(answers) if answers else None)
            made = iter(self._to_predictions(probabilities, [s for s, r in zip(sources, results) if r is None], top_k))
            results = [r if r is not None else next(made) for r in results]
        return results  # type: ignore[return-value]

    def _prepare(self, source: Any) -> np.ndarray:
        # The one preprocessing path for every input; an RGB array already at the input size passes through
        # it without a resize or a copy, which keeps predict() within a few percent of the raw backend call.
        return prepare_image(source, self.card.preprocessing)

    def refers(self, probabilities: np.ndarray) -> np.ndarray:
        """Per row, whether the card's referral rule fires: a referral label at or above its threshold, or a top
        label less probable than its ``below_confidence``."""
        flags = np.zeros(len(probabilities), dtype=bool)
        if self._referral.size:
            flags |= (probabilities[:, self._referral] >= self._referral_threshold).any(axis=1)
        top = probabilities.argmax(axis=1)
        flags |= probabilities[np.arange(len(probabilities)), top] < self._unsure_below[top]
        return flags

    def _to_predictions(self, probabilities: np.ndarray, sources: Sequence[Any], top_k: int) -> list[Prediction]:
        k = max(1, min(top_k, len(self.labels)))
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        refer = [bool(f) for f in self.refers(probabilities)]
        out = []
        for source, row, top, flag in zip(sources, probabilities.tolist(), order.tolist(), refer):
            out.append(
                Prediction(
                    source=describe_source(source),
                    label=self.labels[top[0]],
                    probabilities=dict(zip(self.labels, row)),
                    top_k=[(self.labels[i], row[i]) for i in top],
                    refer=bool(flag),
                )
            )
        return out

    # --- self-test --------------------------------------------------------------------------------
    def self_test(self) -> SelfTestResult:
        """Run the manifest's seeded probe and compare with the fp32 outputs recorded at export."""
        probe = self.manifest.probe if self.manifest else None
        if probe is None:
            raise ArtifactError(
                f"{self.path}: no probe recorded; self_test needs an export dir whose manifest.json has one"
            )
        expected = np.asarray(probe.probabilities, dtype=np.float32)
        got = self.run(make_probe(probe.seed, probe.batch, self._crop))
        if got.shape != expected.shape:
            raise MetadataMismatchError(
                f"{self.path}: probe output shape {got.shape} differs from manifest.json's {expected.shape}"
            )
        delta = float(np.abs(got - expected).max())
        tolerance = tolerance_for(self.precision, probe.tolerance, self.compute_precision)
        agreement = float((got.argmax(1) == expected.argmax(1)).mean())
        effective = self.precision or "unknown"
        if self.compute_precision and self.compute_precision != self.precision:
            effective = f"{effective} (computed in {self.compute_precision})"
        return SelfTestResult(delta <= tolerance, delta, tolerance, effective, self.backend_name, agreement)

    # --- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Release native resources now (GPU memory); optional."""
        self._session.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
