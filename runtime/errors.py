"""facederm's exception types.

Every failure a user can cause has its own type, so callers catch exactly what they can handle and
CLIs turn it into one line. All derive from :class:`FacedermError`.
"""

from __future__ import annotations


class FacedermError(Exception):
    """Base class of every error facederm raises on purpose."""


class Int8SaturationWarning(RuntimeWarning):
    """An int8 artifact with 8-bit weights opened on an x86 CPU without VNNI: its kernels may saturate, so it can
    decide differently from what its fidelity gate measured (see :mod:`facederm.runtime.cpu`)."""


# --- inputs (images and arrays handed to preprocessing or predict) -------------------------------
class FacedermInputError(FacedermError, ValueError):
    """An input image could not be used. The message names the input."""

    def __init__(self, message: str, source: str | None = None) -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class ImageNotFoundError(FacedermInputError, FileNotFoundError):
    """The image path does not exist or is not a file."""


class EmptyImageError(FacedermInputError):
    """The input has no bytes or no pixels."""


class UnreadableImageError(FacedermInputError):
    """The bytes are not an image, or the image is truncated or corrupt."""


class ImageTooLargeError(FacedermInputError):
    """The image declares more pixels than allowed (decompression-bomb guard)."""


class InvalidArrayError(FacedermInputError):
    """An array input has the wrong dtype, shape or values."""


# --- clinical fields (the optional second model input, runtime/clinical.py) ----------------------
class ClinicalError(FacedermInputError):
    """A clinical record, field list or schema cannot be used. The message names the field and the value."""


class UnknownClinicalFieldError(ClinicalError):
    """A record names a field the model's clinical schema does not have (or a field list names an unknown one)."""


class InvalidClinicalValueError(ClinicalError):
    """A clinical value does not fit its field: not a number, not true/false, or a category never seen in training."""


class ForbiddenClinicalFieldError(ClinicalError):
    """A field that must never be a model input: it encodes the label (PAD-UFES-20's ``biopsed``) or an identifier."""


# --- schemas: model card and manifest ------------------------------------------------------------
class SchemaError(FacedermError, ValueError):
    """A model card or manifest is malformed: missing field, wrong type, bad value."""


class UnsupportedSchemaVersionError(SchemaError):
    """The file was written by a facederm with a schema this version cannot read."""


class UnsafePathError(SchemaError):
    """A file entry is absolute, contains '..', or resolves outside its directory."""


# --- artifacts and backends ----------------------------------------------------------------------
class ArtifactError(FacedermError):
    """An artifact cannot be loaded or does not match its manifest."""


class IntegrityError(ArtifactError):
    """An artifact's sha256 does not match the manifest: it was modified or corrupted."""


class MetadataMismatchError(ArtifactError):
    """Labels or preprocessing inside an artifact disagree with the manifest."""


class BackendUnavailableError(FacedermError):
    """A backend's library or hardware is missing on this machine. The message says what to install."""


class BackendMismatchError(ArtifactError):
    """The backend cannot run this kind of file (e.g. an .xml given to onnxruntime)."""


# --- data, training, export ----------------------------------------------------------------------
class DataError(FacedermError):
    """A data set cannot be read or is unusable (no images, unknown labels with --strict, ...)."""


class DataLeakageError(DataError):
    """The same patient appears in two splits."""


class MissingDependencyError(FacedermError, ImportError):
    """An optional dependency is not installed. The message gives the pip command."""

    def __init__(self, package: str, extra: str, purpose: str = "") -> None:
        self.package = package
        self.extra = extra
        why = f" for {purpose}" if purpose else ""
        super().__init__(f"{package} is not installed{why}: pip install 'facederm[{extra}]'")


class ToolError(FacedermError):
    """A backend's own benchmark program failed or printed nothing readable."""


class ExportError(FacedermError):
    """An export target failed to convert or to validate."""


class ConfigError(FacedermError, ValueError):
    """A command-line or API option is invalid (unknown arch, target, protocol...)."""


class IncompatibleEngineError(ArtifactError):
    """A TensorRT engine was built for another TensorRT version or GPU compute capability: rebuild it here."""
