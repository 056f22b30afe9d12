"""The one preprocessing function: every input kind, EXIF orientation, every PIL mode to RGB,
shorter-side resize + center crop, the pixel-count bound, and precise errors (issue 2 item 4)."""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facederm.runtime.card import Preprocessing
from facederm.runtime.errors import (
    EmptyImageError,
    FacedermInputError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidArrayError,
    UnreadableImageError,
)
from facederm.runtime.preprocess import load_image, prepare_image, preprocess, resize_and_crop, to_tensor

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR declaring ``width`` x ``height``, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b"")


def stripes(width: int, height: int, colors, vertical: bool = True) -> np.ndarray:
    """Equal stripes of ``colors``: left-to-right when ``vertical``, else top-to-bottom."""
    arr = np.zeros((height, width, 3), np.uint8)
    n = len(colors)
    for i, c in enumerate(colors):
        if vertical:
            arr[:, i * width // n : (i + 1) * width // n] = c
        else:
            arr[i * height // n : (i + 1) * height // n, :] = c
    return arr


def close_to(pixel, color, tol: int = 24) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, int) - np.asarray(color, int)) <= tol))


# --- every input kind gives the same pixels --------------------------------------------------------
def test_all_source_kinds_agree(tmp_path: Path):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    data = encode(Image.fromarray(rgb))
    path = tmp_path / "img.png"
    path.write_bytes(data)
    sources = [str(path), path, data, bytearray(data), memoryview(data), Image.fromarray(rgb), rgb]
    for source in sources:
        out = load_image(source)
        assert out.dtype == np.uint8 and out.shape == (40, 50, 3), type(source)
        np.testing.assert_array_equal(out, rgb)  # PNG is lossless: exactly the same pixels


@pytest.mark.parametrize(
    ("shape", "expected_first"), [((6, 8), (9, 9, 9)), ((6, 8, 1), (9, 9, 9)), ((6, 8, 3), (9, 9, 9))]
)
def test_array_layouts(shape, expected_first):
    arr = np.full(shape, 9, np.uint8)
    out = load_image(arr)
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == expected_first


def test_rgba_array_composited_on_white():
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 255
    arr[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    out = load_image(arr)
    assert out.shape == (4, 4, 3)
    assert tuple(out[0, 0]) == RED and tuple(out[3, 3]) == WHITE


def test_array_input_is_not_modified_or_aliased():
    arr = np.full((8, 8, 3), 100, np.uint8)
    out = load_image(arr)
    out[:] = 0
    assert arr.min() == 100


# --- EXIF orientation --------------------------------------------------------------------------------
@pytest.mark.parametrize(("orientation", "red_side"), [(6, "right"), (8, "left"), (3, "bottom"), (1, "top")])
def test_exif_orientation_applied(orientation, red_side):
    # Stored 60 wide x 30 high, red band along the top. Orientation 6 means "rotate 90 deg clockwise to
    # display", so the top band ends up on the right; 8 (counter-clockwise) on the left; 3 at the bottom.
    stored = stripes(60, 30, [RED, BLUE, BLUE], vertical=False)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    out = load_image(data)
    rotated = orientation in (6, 8)
    assert out.shape == ((60, 30, 3) if rotated else (30, 60, 3))
    h, w = out.shape[:2]
    probe = {"right": out[h // 2, w - 2], "left": out[h // 2, 1], "top": out[1, w // 2], "bottom": out[h - 2, w // 2]}
    assert close_to(probe[red_side], RED, 40), (orientation, probe)
    opposite = {"right": "left", "left": "right", "top": "bottom", "bottom": "top"}[red_side]
    assert close_to(probe[opposite], BLUE, 40)


def test_exif_orientation_on_a_pil_image_input():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (40, 20), RED), "JPEG", exif=exif.tobytes())
    with Image.open(io.BytesIO(data)) as img:
        assert load_image(img).shape == (40, 20, 3)


def test_broken_exif_does_not_escape():
    data = encode(Image.new("RGB", (20, 20), RED), "JPEG")
    # Splice an APP1 "Exif" segment with garbage after the SOI marker.
    app1 = b"Exif\0\0" + b"MM\0*\0\0\0\x08\xff\xff" + b"\x00" * 20
    broken = data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
    try:
        out = load_image(broken)
    except FacedermInputError:
        return
    assert out.shape == (20, 20, 3)


# --- PIL modes ----------------------------------------------------------------------------------------------
def _mode_image(mode: str) -> tuple[Image.Image, tuple[int, int, int]]:
    """A 10x8 image in ``mode`` whose every pixel should come out as the returned RGB colour."""
    size = (10, 8)
    if mode == "1":
        return Image.new("1", size, 1), WHITE
    if mode == "L":
        return Image.new("L", size, 128), (128, 128, 128)
    if mode == "LA":
        return Image.new("LA", size, (0, 255)), (0, 0, 0)
    if mode == "LA-transparent":
        return Image.new("LA", size, (0, 0)), WHITE
    if mode == "P":
        return Image.new("RGB", size, RED).convert("P"), RED
    if mode == "P-transparent":
        img = Image.new("P", size, 1)
        img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        img.info["transparency"] = 1  # index 1 (red) is transparent -> shown white
        return img, WHITE
    if mode == "PA":
        return Image.new("RGBA", size, (*RED, 255)).convert("PA"), RED
    if mode == "RGBA":
        return Image.new("RGBA", size, (*RED, 255)), RED
    if mode == "RGBA-half":
        return Image.new("RGBA", size, (0, 0, 0, 128)), (127, 127, 127)
    if mode == "RGBX":
        return Image.new("RGBX", size, (*GREEN, 0)), GREEN
    if mode == "RGBa":
        return Image.new("RGBA", size, (*BLUE, 255)).convert("RGBa"), BLUE
    if mode == "CMYK":
        return Image.new("CMYK", size, (0, 255, 255, 0)), RED
    if mode == "YCbCr":
        return Image.new("RGB", size, RED).convert("YCbCr"), RED
    if mode == "HSV":
        return Image.new("HSV", size, (0, 255, 255)), RED
    if mode == "I;16":
        return Image.fromarray(np.full(size[::-1], 65535, np.uint16)), WHITE
    if mode == "I;16-mid":
        return Image.fromarray(np.full(size[::-1], 32768, np.uint16)), (128, 128, 128)
    if mode == "I;16B":
        return Image.new("I;16B", size, 65535), WHITE
    if mode == "I":
        return Image.new("I", size, 65535), WHITE
    if mode == "F":
        return Image.new("F", size, 1.0), WHITE
    if mode == "F-half":
        return Image.new("F", size, 0.5), (128, 128, 128)
    raise AssertionError(mode)


MODES = [
    "1",
    "L",
    "LA",
    "LA-transparent",
    "P",
    "P-transparent",
    "PA",
    "RGBA",
    "RGBA-half",
    "RGBX",
    "RGBa",
    "CMYK",
    "YCbCr",
    "HSV",
    "I;16",
    "I;16-mid",
    "I;16B",
    "I",
    "F",
    "F-half",
]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_to_plausible_rgb(mode):
    img, expected = _mode_image(mode)
    out = load_image(img)
    assert out.dtype == np.uint8 and out.shape == (8, 10, 3)
    assert close_to(out[4, 5], expected, 2), (mode, out[4, 5], expected)
    assert (out == out[0, 0]).all(), "a uniform image must stay uniform"


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("I;16", "PNG"),
        ("P-transparent", "PNG"),
        ("LA", "PNG"),
        ("CMYK", "JPEG"),
        ("1", "PNG"),
        ("F", "TIFF"),
        ("I;16", "TIFF"),
        ("RGBA", "WEBP"),
        ("P", "GIF"),
        ("L", "JPEG"),
        ("RGBA", "TIFF"),
        ("YCbCr", "JPEG"),
    ],
)
def test_modes_survive_encoding(mode, fmt):
    img, expected = _mode_image(mode)
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    if mode == "P-transparent" and fmt == "PNG":
        kwargs["transparency"] = 1
    out = load_image(encode(img, fmt, **kwargs))
    assert out.shape == (8, 10, 3)
    assert close_to(out[4, 5], expected, 6), (mode, fmt, out[4, 5], expected)


def test_sixteen_bit_png_is_scaled_not_saturated():
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16)[None].repeat(4, 0)
    out = load_image(encode(Image.fromarray(ramp)))
    row = out[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0) and len(np.unique(row)) > 40, "16-bit gradient must stay a gradient"


def test_animated_gif_and_webp_use_the_first_frame():
    frames = [Image.new("RGB", (12, 12), c) for c in (RED, GREEN, BLUE)]
    for fmt, kwargs in (("GIF", {}), ("WEBP", {"lossless": True})):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0, **kwargs)
        out = load_image(data)
        assert out.shape == (12, 12, 3)
        assert close_to(out[6, 6], RED, 8), fmt


# --- resize and crop ------------------------------------------------------------------------------------------
def test_wide_image_keeps_the_horizontal_center():
    out = prepare_image(stripes(90, 30, [RED, GREEN, BLUE]), 30)
    assert out.shape == (30, 30, 3)
    assert (out == GREEN).all(axis=-1).mean() > 0.9


def test_tall_image_keeps_the_vertical_center():
    out = prepare_image(stripes(20, 120, [RED, GREEN, BLUE], vertical=False), 16)
    assert out.shape == (16, 16, 3)
    assert (out == GREEN).all(axis=-1).mean() > 0.9


def test_shorter_side_is_resized_before_the_crop():
    # 40x80 (HxW): shorter side 40 -> 32 means the whole height is kept; the crop takes the middle 32 of 64.
    rgb = stripes(80, 40, [RED, GREEN, GREEN, BLUE])
    out = prepare_image(rgb, 32)
    assert out.shape == (32, 32, 3)
    assert (out == GREEN).all(axis=-1).mean() > 0.9
    # resize_shorter > crop zooms in: a centered 20x20 white square in 40x40 fills most of a 32 crop of 64.
    square = np.zeros((40, 40, 3), np.uint8)
    square[10:30, 10:30] = 255
    zoomed = prepare_image(square, Preprocessing(crop=32, resize_shorter=64))
    plain = prepare_image(square, Preprocessing(crop=32, resize_shorter=32))
    assert (zoomed > 128).mean() > (plain > 128).mean() + 0.3


def test_exact_size_input_is_untouched():
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(prepare_image(rgb, 32), rgb)


def test_upscales_small_images():
    out = prepare_image(np.full((3, 5, 3), 200, np.uint8), 32)
    assert out.shape == (32, 32, 3) and (out == 200).all()


@pytest.mark.parametrize("shape", [(1, 200_000, 3), (150_000, 2, 3)])
def test_extreme_aspect_ratio_uses_bounded_memory(shape):
    # A 1 x 200,000 image resized to a 64-px shorter side would be 12.8M x 64 pixels (2.4 GB).
    rgb = np.zeros(shape, np.uint8)
    rgb[..., 1] = 255
    tracemalloc.start()
    try:
        out = prepare_image(rgb, 64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (64, 64, 3) and (out == GREEN).all()
    assert peak < 50e6, f"peak {peak / 1e6:.0f} MB"


def test_extreme_aspect_ratio_keeps_the_center():
    rgb = stripes(6000, 2, [RED, GREEN, BLUE])
    assert close_to(prepare_image(rgb, 16)[8, 8], GREEN, 2)


def test_resize_and_crop_and_to_tensor_directly():
    rgb = np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    out = resize_and_crop(rgb, 32, 40, "bicubic")
    assert out.shape == (32, 32, 3) and out.flags.c_contiguous
    batch = to_tensor([out, out])
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32 and batch.flags.c_contiguous


# --- outputs ---------------------------------------------------------------------------------------------
def test_preprocess_returns_image_and_matching_tensor(tmp_path: Path):
    path = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (45, 60, 3), dtype=np.uint8)).save(path)
    spec = Preprocessing(crop=32, resize_shorter=36, interpolation="bicubic")
    prepared = preprocess(path, spec)
    assert prepared.image.dtype == np.uint8 and prepared.image.shape == (32, 32, 3)
    assert prepared.tensor.dtype == np.float32 and prepared.tensor.shape == (1, 3, 32, 32)
    assert prepared.tensor.flags.c_contiguous
    np.testing.assert_array_equal(prepared.tensor[0], prepared.image.transpose(2, 0, 1).astype(np.float32))
    assert prepared.tensor.min() >= 0 and prepared.tensor.max() <= 255 and prepared.tensor.max() > 1
    assert prepared.source == str(path)
    np.testing.assert_array_equal(prepare_image(path, spec), prepared.image)
    np.testing.assert_array_equal(preprocess(path.read_bytes(), spec).image, prepared.image)


# --- errors -----------------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageNotFoundError, match="nope.jpg") as info:
        preprocess(missing, 32)
    assert isinstance(info.value, FileNotFoundError)  # callers catching the builtin still work
    with pytest.raises(ImageNotFoundError, match=str(tmp_path)):
        load_image(tmp_path)  # a directory is not an image


def test_empty_inputs(tmp_path: Path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(EmptyImageError, match="empty.png"):
        preprocess(empty, 32)
    with pytest.raises(EmptyImageError, match="0 bytes"):
        preprocess(b"", 32)
    with pytest.raises(EmptyImageError):
        preprocess(np.zeros((0, 5, 3), np.uint8), 32)


@pytest.mark.parametrize(
    "data", [b"hello world, not an image", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"%PDF-1.4\n" + b"0" * 100]
)
def test_non_image_bytes(data, tmp_path: Path):
    with pytest.raises(UnreadableImageError, match=f"<{len(data)} bytes>"):
        preprocess(data, 32)
    path = tmp_path / "fake.jpg"
    path.write_bytes(data)
    with pytest.raises(UnreadableImageError, match="fake.jpg"):
        preprocess(path, 32)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"])
def test_truncated_files(fmt, tmp_path: Path):
    rng = np.random.default_rng(4)
    data = encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImageError, match=f"cut.{fmt.lower()}"):
        preprocess(path, 32)


def test_declared_huge_dimensions_refused_without_allocating():
    data = png_header_only(100_000, 100_000)  # 68 bytes that claim 10 gigapixels
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError, match=f"<{len(data)} bytes>"):
            load_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5e6


def test_max_pixels_is_checked_before_decoding():
    # The file has no valid pixel data: reaching the decoder would give UnreadableImageError.
    with pytest.raises(ImageTooLargeError, match="exceeds the 1,000-pixel limit"):
        preprocess(png_header_only(2000, 2000), 32, max_pixels=1000)
    with pytest.raises(ImageTooLargeError):
        preprocess(Image.new("L", (100, 100)), 32, max_pixels=1000)


def test_loading_leaves_global_warning_filters_alone():
    # warnings.catch_warnings() is not thread-safe; preprocessing must not swap process-wide filters.
    before = list(warnings.filters)
    load_image(encode(Image.new("RGB", (8, 8))))
    assert warnings.filters == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int64, np.int8, bool])
def test_wrong_dtype_arrays(dtype):
    arr = np.zeros((8, 8, 3), dtype)
    with pytest.raises(InvalidArrayError, match=np.dtype(dtype).name):
        preprocess(arr, 32)


def test_nan_array_refused():
    with pytest.raises(InvalidArrayError, match="uint8"):
        preprocess(np.full((8, 8, 3), np.nan, np.float32), 32)


@pytest.mark.parametrize("shape", [(8,), (8, 8, 2), (8, 8, 5), (1, 8, 8, 3), (3, 8, 8, 1)])
def test_wrong_shape_arrays(shape):
    with pytest.raises(InvalidArrayError, match="shape"):
        preprocess(np.zeros(shape, np.uint8), 32)


@pytest.mark.parametrize("source", [None, 42, [1, 2, 3], {"path": "x"}])
def test_unsupported_input_types(source):
    with pytest.raises(FacedermInputError, match="unsupported input type"):
        preprocess(source, 32)


def test_name_overrides_the_source_in_messages():
    with pytest.raises(UnreadableImageError, match="upload-17"):
        preprocess(b"garbage", 32, name="upload-17")
