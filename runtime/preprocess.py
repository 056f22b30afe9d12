"""The one preprocessing implementation: decode, orient, convert to RGB, resize, center-crop.

Training evaluation, calibration, export parity, the runtime and the benchmarks all call
:func:`prepare_image` (decode, JPEG draft, EXIF, RGB, resize, crop), so a model is judged on the pixels it is
deployed with. Exported graphs take the float32 NCHW 0-255 tensor and apply the normalization themselves, so
apps only resize and crop. (Training augmentation decodes in full and crops at random on top: see ImageCache.)
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .card import Preprocessing
from .errors import (
    EmptyImageError,
    FacedermInputError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidArrayError,
    UnreadableImageError,
)

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray

#: Refuse images with more pixels than this before decoding them (phones top out near 200 MP).
DEFAULT_MAX_PIXELS = 200_000_000

#: JPEG draft decoding (libjpeg's DCT-domain downscale by 1/2, 1/4 or 1/8) keeps at least this many times the
#: resize target on each side. Measured on 200 phone-sized JPEGs (PAD-UFES-20 images upscaled to 3000-4000 px,
#: quality 90) at the 300 px Lite0 input: the crop differs from a full decode by 0.14-0.17 uint8 levels on average
#: (max 9; less than the JPEG q90 encoding itself moves it, 0.23-0.26) and decoding is 3-5x faster (43-63 vs
#: ~206 ms). Drafting right down to the target (factor 1) was 6-15x faster but moved pixels by 0.9 levels (max 50).
DRAFT_FACTOR = 4

#: resize_and_crop resizes the whole image only while the result is at most this many times the
#: shorter side squared (aspect ratio up to 16:1, every real photo); beyond, it resamples the crop box only.
_MAX_RESIZE_AREA_FACTOR = 16

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class PreparedImage:
    """A preprocessed image: ``image`` uint8 HWC RGB (for display, Grad-CAM overlays) and
    ``tensor`` float32 1x3xHxW with values 0-255 (the exported graphs' input)."""

    image: np.ndarray
    tensor: np.ndarray
    source: str


def describe_source(source: object, name: str | None = None) -> str:
    """A short human name for an input, used in every error message."""
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL {source.mode} {source.width}x{source.height}>"
    if isinstance(source, np.ndarray):
        return f"<array {source.dtype} {source.shape}>"
    return f"<{type(source).__name__}>"


def load_image(
    source: ImageSource, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None
) -> np.ndarray:
    """Decode ``source`` to a uint8 HxWx3 RGB array, EXIF orientation applied.

    ``draft_size`` lets JPEG decoding skip resolution that a later resize would throw away: the decoded
    image keeps at least ``draft_size`` px on each side (see :data:`DRAFT_FACTOR`; :func:`prepare_image` sets it).
    Raises a :class:`FacedermInputError` subclass naming the input on any failure.
    """
    label = describe_source(source, name)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, label)
    try:
        if isinstance(source, Image.Image):
            return _pil_to_rgb(source, label, max_pixels, draft_size)
        if isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise EmptyImageError("empty input (0 bytes)", label)
            stream: object = io.BytesIO(bytes(source))
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise ImageNotFoundError("no such image file", label)
            if path.stat().st_size == 0:
                raise EmptyImageError("empty file (0 bytes)", label)
            stream = path
        else:
            raise FacedermInputError(
                f"unsupported input type {type(source).__name__}; pass a path, bytes, a PIL image or a uint8 array",
                label,
            )
        # No warnings.catch_warnings() here: it swaps process-wide filters and is not thread-safe
        # (concurrent predictions could leave a filter behind). _pil_to_rgb checks max_pixels itself;
        # PIL's own hard limit (DecompressionBombError, 2x Image.MAX_IMAGE_PIXELS) still applies.
        with Image.open(stream) as img:  # type: ignore[arg-type]
            return _pil_to_rgb(img, label, max_pixels, draft_size)
    except FacedermInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image too large: {exc}", label) from exc
    except UnidentifiedImageError as exc:
        raise UnreadableImageError("not a recognised image format", label) from exc
    except MemoryError as exc:
        raise ImageTooLargeError("image too large to decode", label) from exc
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        IndexError,
        TypeError,
        KeyError,
        ZeroDivisionError,
        struct.error,
    ) as exc:
        # PIL reports truncated/corrupt data through a zoo of exception types.
        raise UnreadableImageError(f"corrupt or truncated image ({type(exc).__name__}: {exc})", label) from exc


def _pil_to_rgb(img: Image.Image, label: str, max_pixels: int, draft_size: int | None) -> np.ndarray:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise EmptyImageError("image has no pixels", label)
    if width * height > max_pixels:
        raise ImageTooLargeError(f"{width}x{height} exceeds the {max_pixels:,}-pixel limit", label)
    if getattr(img, "is_animated", False):
        img.seek(0)  # animated GIF/WebP/APNG: the first frame
    if draft_size and img.format == "JPEG":
        img.draft("RGB", (draft_size, draft_size))
    img.load()
    img = ImageOps.exif_transpose(img) or img
    return _mode_to_rgb(img)


def _mode_to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit depth: scale to 0-255 rather than clip (PIL's convert('L') saturates at 255).
        arr = np.asarray(img, dtype=np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        top = (
            65535.0 if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) <= 65535) else arr.max(initial=1)
        )
        if mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        gray = np.clip(arr / max(top, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        # Transparent pixels become white, as a viewer shows them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _array_to_rgb(arr: np.ndarray, label: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise InvalidArrayError(f"arrays must be uint8 (0-255), got {arr.dtype}", label)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InvalidArrayError(f"arrays must be HxW, HxWx1, HxWx3 (RGB) or HxWx4; got shape {arr.shape}", label)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise EmptyImageError("array has no pixels", label)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        return _mode_to_rgb(Image.fromarray(arr, "RGBA"))
    return np.array(arr, order="C", copy=True)  # never alias the caller's array (outputs may be edited)


def resize_shorter_side(rgb: np.ndarray, shorter: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize so the shorter side is ``shorter`` px, aspect ratio kept (no crop; returned as is if already)."""
    height, width = rgb.shape[:2]
    scale = shorter / min(height, width)
    new_w = max(shorter, round(width * scale))
    new_h = max(shorter, round(height * scale))
    if (new_w, new_h) != (width, height):
        rgb = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), _RESAMPLE[interpolation]))
    return rgb


def resize_and_crop(
    rgb: np.ndarray, crop: int, resize_shorter: int | None = None, interpolation: str = "bilinear"
) -> np.ndarray:
    """Resize the shorter side to ``resize_shorter`` (default ``crop``), then take the center crop."""
    resize_shorter = resize_shorter or crop
    height, width = rgb.shape[:2]
    if (height, width) != (crop, crop) or resize_shorter != crop:
        shorter = max(resize_shorter, crop)
        scale = shorter / min(height, width)
        new_w = max(shorter, round(width * scale))
        new_h = max(shorter, round(height * scale))
        if new_w * new_h > _MAX_RESIZE_AREA_FACTOR * shorter * shorter:
            # Extreme aspect ratio (e.g. a 1 x 1,000,000 PNG): resizing the whole image would allocate
            # gigabytes. Resample only the box that the center crop keeps (same geometry, bounded memory;
            # may differ from the full resize by rounding, which no real photo reaches).
            sx, sy = width / new_w, height / new_h
            top, left = (new_h - crop) // 2, (new_w - crop) // 2
            box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
            resized = Image.fromarray(rgb).resize((crop, crop), _RESAMPLE[interpolation], box=box)
            return np.ascontiguousarray(np.asarray(resized))
        rgb = resize_shorter_side(rgb, shorter, interpolation)
        new_h, new_w = rgb.shape[:2]
        top = (new_h - crop) // 2
        left = (new_w - crop) // 2
        rgb = rgb[top : top + crop, left : left + crop]
    return np.ascontiguousarray(rgb)


def to_tensor(images: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """uint8 HWC image(s) -> float32 NCHW with values 0-255 (vectorised; no per-pixel Python)."""
    batch = np.stack(images) if isinstance(images, list) else images
    if batch.ndim == 3:
        batch = batch[None]
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)


def _as_preprocessing(spec: Preprocessing | int) -> Preprocessing:
    if isinstance(spec, Preprocessing):
        return spec
    return Preprocessing(crop=int(spec), resize_shorter=int(spec))


def prepare_image(
    source: ImageSource, spec: Preprocessing | int, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode and resize/crop one input: uint8 HxWx3 RGB at the model's input size.

    The one function behind every model input: the runtime, training evaluation, export calibration and
    parity, and the benchmarks call it, so JPEG draft decoding (:data:`DRAFT_FACTOR`) applies everywhere alike.
    A uint8 RGB array already ``crop`` x ``crop`` is taken as already preprocessed (an app that resized and
    cropped itself, or the output of this function) and is returned as is: no resize, no copy.
    """
    pre = _as_preprocessing(spec)
    if isinstance(source, np.ndarray) and source.dtype == np.uint8 and source.shape == (pre.crop, pre.crop, 3):
        return np.ascontiguousarray(source)
    rgb = load_image(source, name=name, max_pixels=max_pixels, draft_size=DRAFT_FACTOR * pre.resize_shorter)
    return resize_and_crop(rgb, pre.crop, pre.resize_shorter, pre.interpolation)


def preprocess(
    source: ImageSource, spec: Preprocessing | int, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> PreparedImage:
    """Preprocess one input for a model: see the module docstring.

    ``spec`` is the model card's :class:`Preprocessing`, or an int input size (resize shorter side to it,
    center-crop it). Raises a :class:`FacedermInputError` subclass naming the input.
    """
    image = prepare_image(source, spec, name=name, max_pixels=max_pixels)
    return PreparedImage(image=image, tensor=to_tensor(image), source=describe_source(source, name))
