"""Label sets are data: the ordered class codes a model predicts, their long names, and the source
codes that map onto them (PAD-UFES-20 writes ACK and SEK where the reference study writes AK and SK).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from facederm.runtime.errors import ConfigError

#: Body sites counted as "face" (PAD-UFES-20's region names, upper case).
FACE_REGIONS: tuple[str, ...] = ("FACE", "NOSE", "EAR", "LIP")


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of class codes. ``canonical`` maps a source code (any case, alias or long name)
    onto one of ``labels``, or None when it is not part of this set."""

    name: str
    labels: tuple[str, ...]
    long_names: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"label set {self.name!r}: duplicate labels in {self.labels}")
        stray = sorted(set(self.aliases.values()) - set(self.labels))
        if stray:
            raise ConfigError(f"label set {self.name!r}: aliases point to unknown labels {stray}")

    def __hash__(self) -> int:  # dict fields are unhashable; the name and codes identify a set
        return hash((self.name, self.labels))

    def _lookup(self) -> dict[str, str]:
        table = {code.upper(): code for code in self.labels}
        table.update({name.upper(): code for code, name in self.long_names.items() if code in self.labels})
        table.update({raw.upper(): code for raw, code in self.aliases.items()})
        return table

    def canonical(self, raw: str) -> str | None:
        """The code for ``raw`` (a code, an alias or a long name; case and spaces ignored), else None."""
        if raw is None:
            return None
        return self._lookup().get(str(raw).strip().upper())

    def restrict(self, present: Iterable[str]) -> LabelSet:
        """This set limited to the codes in ``present``, order kept (a model needs no empty classes)."""
        keep = set(present)
        labels = tuple(code for code in self.labels if code in keep)
        return LabelSet(
            name=self.name,
            labels=labels,
            long_names={c: n for c, n in self.long_names.items() if c in keep},
            aliases={r: c for r, c in self.aliases.items() if c in keep},
        )

    def long_name(self, code: str) -> str:
        return self.long_names.get(code, code)


_LONG_NAMES = {
    "AK": "actinic keratosis",
    "BCC": "basal cell carcinoma",
    "MEL": "melanoma",
    "NEV": "nevus",
    "SCC": "squamous cell carcinoma",
    "SK": "seborrheic keratosis",
    "LE": "lupus erythematosus",
    "ROS": "rosacea",
}
_PAD_ALIASES = {"ACK": "AK", "SEK": "SK"}


def _label_set(name: str, labels: tuple[str, ...], aliases: dict[str, str]) -> LabelSet:
    return LabelSet(name, labels, {c: _LONG_NAMES[c] for c in labels}, aliases)


#: Registry of the known label sets, keyed by name.
LABEL_SETS: dict[str, LabelSet] = {
    # PAD-UFES-20's six diagnoses, under the reference study's names where they overlap.
    "pad": _label_set("pad", ("AK", "BCC", "MEL", "NEV", "SCC", "SK"), dict(_PAD_ALIASES)),
    # The reference study's six face conditions.
    "study": _label_set("study", ("BCC", "LE", "ROS", "SK", "AK", "SCC"), dict(_PAD_ALIASES)),
}


def get_label_set(name: str) -> LabelSet:
    """The registered label set called ``name``; :class:`ConfigError` listing the known names otherwise."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        known = ", ".join(sorted(LABEL_SETS))
        raise ConfigError(f"unknown label set {name!r}; known: {known}") from None


def infer_label_set(raw_labels: Iterable[str], name: str = "data") -> LabelSet:
    """The first registered set that knows every label in ``raw_labels``; otherwise a set made from
    the labels themselves (sorted), so user data with its own classes works without configuration."""
    raw = sorted({str(r).strip() for r in raw_labels if str(r).strip()})
    for label_set in LABEL_SETS.values():
        if raw and all(label_set.canonical(r) is not None for r in raw):
            return label_set
    return LabelSet(name=name, labels=tuple(raw))
