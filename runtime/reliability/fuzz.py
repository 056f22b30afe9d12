"""Fuzz the one image path: only :class:`FacedermInputError` subclasses may escape preprocessing.

    python -m facederm.runtime.reliability.fuzz                 # 100,000 cases, about 2-4 minutes on 2 cores
    python -m facederm.runtime.reliability.fuzz --cases 5000 --seed 3
    python -m facederm.runtime.reliability.fuzz --atheris       # coverage-guided (pip install atheris first)

Cases mix: random bytes; mutated real PNG/JPEG/GIF/WebP/TIFF/BMP bytes (bit flips, byte overwrites, inserted
and deleted runs, truncation, header fields set to extremes) from a corpus that covers 16-bit, palette,
transparency, CMYK, EXIF orientation, animated GIF/WebP; PNG headers declaring huge or zero dimensions;
arrays of every dtype/shape including NaN; PIL images of every mode. A case *escapes* when anything other
than a ``FacedermInputError`` is raised, or when a success returns something other than a uint8 crop x crop
x 3 image and its float32 1x3xcropxcrop tensor. Prints the number of cases, outcomes and every escape.

The corpus and the case generator are shared with ``tests/test_reliability_fuzz.py`` (the CI-sized run).
"""

from __future__ import annotations

import collections
import io
import struct
import sys
import time
import traceback
import warnings
import zlib
from typing import Any

import click
import numpy as np
from PIL import Image

from ..card import Preprocessing
from ..cli_support import debug_option
from ..errors import FacedermInputError
from ..preprocess import load_image, preprocess

#: The fuzzed calls use a small pixel bound so that mutated headers declaring big images stay fast to reject
#: or decode; the default bound is exercised by explicit tests.
FUZZ_MAX_PIXELS = 1 << 20
SPEC = Preprocessing(crop=16, resize_shorter=20)

PIL_MODES = (
    "1",
    "L",
    "LA",
    "P",
    "PA",
    "RGB",
    "RGBA",
    "RGBa",
    "RGBX",
    "CMYK",
    "YCbCr",
    "HSV",
    "LAB",
    "I",
    "I;16",
    "I;16B",
    "I;16L",
    "F",
    "La",
)
ARRAY_DTYPES = (
    np.uint8,
    np.int8,
    np.uint16,
    np.int32,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
    np.bool_,
    np.complex64,
)


def _encode(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header(width: int, height: int, bit_depth: int = 8, color_type: int = 2, data: bytes = b"") -> bytes:
    """A PNG with a valid signature, an IHDR declaring these fields (CRC correct) and ``data`` as IDAT."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width & 0xFFFFFFFF, height & 0xFFFFFFFF, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(data or b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def seed_corpus() -> dict[str, bytes]:
    """Small valid files in many formats and modes: the starting points of mutation."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 17, 3), dtype=np.uint8))
    gray16 = Image.fromarray(rng.integers(0, 65536, (9, 11), dtype=np.uint16))
    rgba = Image.fromarray(rng.integers(0, 256, (10, 10, 4), dtype=np.uint8), "RGBA")
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    corpus = {
        "png_rgb": _encode(rgb, "PNG"),
        "png_16bit": _encode(gray16, "PNG"),
        "png_rgba": _encode(rgba, "PNG"),
        "png_palette_trns": _encode(pal, "PNG", transparency=0),
        "png_1bit": _encode(rgb.convert("1"), "PNG"),
        "png_la": _encode(rgba.convert("LA"), "PNG"),
        "jpeg": _encode(rgb, "JPEG", quality=80),
        "jpeg_exif6": _encode(rgb, "JPEG", exif=exif.tobytes()),
        "jpeg_cmyk": _encode(rgb.convert("CMYK"), "JPEG"),
        "jpeg_gray_progressive": _encode(rgb.convert("L"), "JPEG", progressive=True),
        "gif_animated": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0),
        "webp_lossy": _encode(rgb, "WEBP", quality=50),
        "webp_animated": _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=40),
        "tiff_rgb": _encode(rgb, "TIFF"),
        "tiff_16bit": _encode(gray16, "TIFF"),
        "tiff_float": _encode(Image.fromarray(rng.random((6, 7), dtype=np.float32)), "TIFF"),
        "tiff_lzw_cmyk": _encode(rgb.convert("CMYK"), "TIFF", compression="tiff_lzw"),
        "bmp": _encode(rgb, "BMP"),
        "bmp_palette": _encode(pal, "BMP"),
        "ico": _encode(rgb.resize((16, 16)), "ICO", sizes=[(16, 16)]),
        "ppm": _encode(rgb, "PPM"),
        "png_header_big": png_header(30_000, 30_000),
        "png_header_zero": png_header(0, 5),
    }
    return corpus


# --- mutations (used by the script; the tests let hypothesis draw equivalent operations) -------------------
def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """1-8 random edits: bit flips, byte overwrites with extremes, inserted/deleted runs, truncation, splices."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        if not buf:
            buf = bytearray(rng.bytes(int(rng.integers(1, 64))))
        op = int(rng.integers(0, 7))
        pos = int(rng.integers(0, len(buf)))
        if op == 0:
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            buf[pos] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == 2:  # a 16/32-bit field (sizes, offsets, lengths) set to an extreme
            width = int(rng.choice([2, 4]))
            value = int(rng.choice([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])) & ((1 << (8 * width)) - 1)
            buf[pos : pos + width] = value.to_bytes(width, str(rng.choice(["big", "little"])))  # type: ignore[arg-type]
        elif op == 3:
            buf[pos:pos] = rng.bytes(int(rng.integers(1, 32)))
        elif op == 4:
            del buf[pos : pos + int(rng.integers(1, 32))]
        elif op == 5:
            del buf[max(1, pos) :]
        else:  # duplicate a run (repeated chunks/segments)
            end = min(len(buf), pos + int(rng.integers(1, 64)))
            buf[pos:pos] = buf[pos:end]
    return bytes(buf)


def random_array(rng: np.random.Generator) -> np.ndarray:
    dtype = ARRAY_DTYPES[int(rng.integers(0, len(ARRAY_DTYPES)))]
    ndim = int(rng.integers(0, 5))
    shape = tuple(int(rng.choice([0, 1, 2, 3, 4, 5, 9])) for _ in range(ndim))
    arr = np.asarray((rng.random(shape) * 300 - 20).astype(dtype) if dtype is not np.bool_ else rng.random(shape) > 0.5)
    if np.issubdtype(arr.dtype, np.floating) and arr.size and rng.random() < 0.5:
        arr.flat[0] = rng.choice([np.nan, np.inf, -np.inf])
    if rng.random() < 0.2 and arr.ndim >= 2:
        arr = arr[::-1]  # non-contiguous views
    return arr


def random_pil(rng: np.random.Generator) -> Image.Image:
    mode = PIL_MODES[int(rng.integers(0, len(PIL_MODES)))]
    size = (int(rng.choice([0, 1, 3, 20, 50])), int(rng.choice([0, 1, 3, 20, 50])))
    img = Image.new(mode, size)
    if size[0] and size[1] and mode not in ("La", "RGBa", "LAB", "HSV"):
        img = Image.frombytes(mode, size, rng.bytes(len(img.tobytes())))
    return img


def random_case(rng: np.random.Generator, corpus: dict[str, bytes]) -> tuple[str, Any]:
    """(kind, source) for one fuzz case."""
    roll = rng.random()
    if roll < 0.6:
        name = list(corpus)[int(rng.integers(0, len(corpus)))]
        return f"mutated:{name}", mutate(corpus[name], rng)
    if roll < 0.72:
        return "random-bytes", rng.bytes(int(rng.integers(0, 512)))
    if roll < 0.8:
        w, h = (
            int(rng.choice([0, 1, 2**15, 2**16 + 1, 2**31 - 1, 2**32 - 1, int(rng.integers(0, 5000))]))
            for _ in range(2)
        )
        return "png-header", png_header(w, h, int(rng.choice([1, 2, 4, 8, 16, 3])), int(rng.choice([0, 2, 3, 4, 6, 5])))
    if roll < 0.92:
        return "array", random_array(rng)
    return "pil", random_pil(rng)


def check_one(source: Any) -> str:
    """Run one input through both entry points; returns the outcome name. Raises AssertionError on an escape."""
    try:
        image = load_image(source, max_pixels=FUZZ_MAX_PIXELS)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.flags.c_contiguous, (
            f"load_image returned {image.dtype} {image.shape}"
        )
        prepared = preprocess(source, SPEC, max_pixels=FUZZ_MAX_PIXELS)
    except FacedermInputError as exc:
        return type(exc).__name__
    image, tensor = prepared.image, prepared.tensor
    assert image.dtype == np.uint8 and image.shape == (SPEC.crop, SPEC.crop, 3), f"image {image.dtype} {image.shape}"
    assert tensor.dtype == np.float32 and tensor.shape == (1, 3, SPEC.crop, SPEC.crop), f"tensor {tensor.shape}"
    assert np.array_equal(tensor[0], image.transpose(2, 0, 1)), "tensor is not the image transposed"
    return "ok"


def run(cases: int, seed: int, report_every: float = 10.0) -> int:
    """The plain random fuzzer. Returns the number of escapes."""
    rng = np.random.default_rng(seed)
    corpus = seed_corpus()
    outcomes: collections.Counter[str] = collections.Counter()
    escapes: list[str] = []
    start = last = time.perf_counter()
    for i in range(cases):
        kind, source = random_case(rng, corpus)
        try:
            outcomes[check_one(source)] += 1
        except Exception as exc:
            outcomes["ESCAPE"] += 1
            escapes.append(f"case {i} ({kind}): {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
        now = time.perf_counter()
        if now - last > report_every:
            last = now
            print(
                f"  {i + 1:,}/{cases:,} cases, {len(escapes)} escapes, {(i + 1) / (now - start):.0f} cases/s",
                file=sys.stderr,
            )
    elapsed = time.perf_counter() - start
    print(f"fuzz: {cases:,} cases in {elapsed:.0f} s ({cases / elapsed:.0f}/s), seed {seed}")
    for name, count in outcomes.most_common():
        print(f"  {name:24s} {count:8,}")
    print(f"escapes: {len(escapes)}")
    for text in escapes[:20]:
        print(text)
    return len(escapes)


def run_atheris(cases: int) -> None:
    """Coverage-guided fuzzing of load_image on raw bytes (atheris is not a facederm dependency)."""
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install atheris (not a facederm dependency)")

    corpus = list(seed_corpus().values())
    counter = {"n": 0}

    def one(data: bytes) -> None:
        counter["n"] += 1
        # Half the inputs are a corpus file with atheris' bytes spliced in, so mutations start from valid files.
        if data and data[0] & 1:
            base = corpus[data[0] % len(corpus)]
            cut = int.from_bytes(data[1:3] or b"\0", "little") % (len(base) + 1)
            data = base[:cut] + data[3:] + base[cut + len(data[3:]) :]
        check_one(data)

    atheris.instrument_all()
    print(f"atheris: up to {cases:,} runs over load_image/preprocess (an escape stops with a traceback)")
    atheris.Setup([sys.argv[0], f"-runs={cases}", "-max_len=4096"], one)
    atheris.Fuzz()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--cases", type=click.IntRange(min=1), default=100_000, show_default=True, help="Fuzz cases to run.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the case generator.")
@click.option("--atheris", is_flag=True, help="Coverage-guided fuzzing with atheris (pip install atheris).")
@debug_option()
def main(cases: int, seed: int, atheris: bool, debug: bool) -> None:
    """Fuzz the one image path: only FacedermInputError subclasses may escape preprocessing (exit 1 on an escape)."""
    if not debug:
        warnings.simplefilter("ignore")  # PIL warns about every corrupt tag; the outcome counts say enough
    if atheris:
        run_atheris(cases)
        return
    sys.exit(1 if run(cases, seed) else 0)


if __name__ == "__main__":
    main()
