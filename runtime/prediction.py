"""What ``Model.predict`` and ``Model.self_test`` return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .card import NOT_A_DIAGNOSIS


@dataclass(frozen=True)
class Prediction:
    """The model's output for one input, or the reason it has none (``error``).

    ``probabilities`` maps every label to its probability (card order); ``top_k`` lists the
    ``k`` most likely (label, probability) pairs; ``refer`` is True when the card's referral rule
    fires (any referral label at or above its threshold, or a top label below its ``below_confidence``). This is
    decision support, not a diagnosis.
    """

    source: str
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    top_k: list[tuple[str, float]] = field(default_factory=list)
    refer: bool = False
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def confidence(self) -> float | None:
        """Probability of the predicted label (None for an error result)."""
        return self.probabilities.get(self.label) if self.label is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-lines record: ``{input, label, probabilities, refer}`` or ``{input, error}``."""
        if self.error is not None:
            return {"input": self.source, "error": self.error}
        return {"input": self.source, "label": self.label, "probabilities": self.probabilities, "refer": self.refer}

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.source}: error: {self.error}"
        flag = " [refer to a clinician]" if self.refer else ""
        return f"{self.source}: {self.label} ({self.confidence:.3f}){flag}. {NOT_A_DIAGNOSIS}"


@dataclass(frozen=True)
class SelfTestResult:
    """Outcome of running the manifest's seeded probe: ``passed`` when ``max_abs_delta <= tolerance``."""

    passed: bool
    max_abs_delta: float
    tolerance: float
    precision: str
    backend: str
    argmax_agreement: float

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"self-test {verdict}: max |delta p| {self.max_abs_delta:.2e} (tolerance {self.tolerance:.1e},"
            f" {self.precision} on {self.backend}), argmax agreement {self.argmax_agreement:.0%}"
        )
