"""The page's resize (export/web/preprocess.js) equals Pillow's, checked without a browser under node.

Random images of many sizes and aspect ratios (downscale, upscale, one side only, beyond 16:1 where the runtime
resamples the crop box only), bilinear / bicubic / nearest, RGB and RGBA strides: preprocess.js's
``resizeAndCrop`` must return exactly facederm.runtime's ``resize_and_crop``. Also the JPEG draft scale and
Python's round-half-even. Skipped when node is not installed.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facederm.runtime.preprocess import DRAFT_FACTOR, resize_and_crop

PREPROCESS_JS = Path(__file__).resolve().parents[1] / "export" / "web" / "preprocess.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

RUNNER = """
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const pre = await import(pathToFileURL(process.argv[2]).href);
const jobs = JSON.parse(readFileSync(process.argv[3], "utf8"));
const out = jobs.map((j) => {
  if (j.kind === "round") return j.values.map(pre.pyRound);
  if (j.kind === "draft") return pre.draftScale(j.w, j.h, j.resize);
  const src = Uint8Array.from(Buffer.from(j.data, "base64"));
  return Buffer.from(pre.resizeAndCrop(src, j.w, j.h, j.c, j.crop, j.resize, j.interp)).toString("base64");
});
writeFileSync(process.argv[4], JSON.stringify(out));
"""


def _run_node(tmp_path: Path, jobs: list[dict]) -> list:
    runner, job_file, out_file = tmp_path / "run.mjs", tmp_path / "jobs.json", tmp_path / "out.json"
    runner.write_text(RUNNER)
    job_file.write_text(json.dumps(jobs))
    subprocess.run([NODE, str(runner), str(PREPROCESS_JS), str(job_file), str(out_file)], check=True, timeout=300)
    return json.loads(out_file.read_text())


def _cases(rng: np.random.Generator, n: int):
    for i in range(n):
        w, h = int(rng.integers(1, 900)), int(rng.integers(1, 900))
        if i % 12 == 0:
            w, h = int(rng.integers(1, 40)), int(rng.integers(700, 3000))  # beyond 16:1: the box path
        if i % 12 == 1:
            w, h = 1600, 1200  # a phone-like landscape photo
        crop = int(rng.choice([8, 17, 32, 64, 100, 224, 300]))
        resize = crop + int(rng.choice([0, 0, 1, 13, 32]))
        interp = ("bilinear", "bicubic", "nearest")[i % 3]
        channels = int(rng.choice([3, 4]))
        img = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        if i % 4 == 0:  # smooth content too: rounding shows differently than on noise
            yy, xx = np.mgrid[0:h, 0:w]
            img[..., 0] = (127 + 127 * np.sin(xx / 7.0 + yy / 11.0)).astype(np.uint8)
        yield img, crop, resize, interp


def test_resize_and_crop_equals_pillow_bit_for_bit(tmp_path: Path):
    rng = np.random.default_rng(0)
    jobs, expected = [], []
    for img, crop, resize, interp in _cases(rng, 240):
        h, w, c = img.shape
        expected.append(resize_and_crop(np.ascontiguousarray(img[..., :3]), crop, resize, interp))
        jobs.append(
            dict(
                kind="resize",
                w=w,
                h=h,
                c=c,
                crop=crop,
                resize=resize,
                interp=interp,
                data=base64.b64encode(img.tobytes()).decode(),
            )
        )
    outs = _run_node(tmp_path, jobs)
    bad = []
    for job, ref, out in zip(jobs, expected, outs):
        got = np.frombuffer(base64.b64decode(out), np.uint8).reshape(ref.shape)
        if not np.array_equal(got, ref):
            bad.append(
                (
                    job["w"],
                    job["h"],
                    job["crop"],
                    job["resize"],
                    job["interp"],
                    int(np.abs(got.astype(int) - ref).max()),
                )
            )
    assert not bad, f"{len(bad)} of {len(jobs)} differ from Pillow: {bad[:5]}"


def test_python_rounding_and_jpeg_draft_scale(tmp_path: Path):
    values = [0.5, 1.5, 2.5, 3.5, -0.5, 2.4999999, 2.5000001, 299.5, 300.5, 1e6 + 0.5]
    sizes = [
        (4000, 3000, 300),
        (2400, 2400, 300),
        (2399, 4000, 300),
        (1100, 700, 64),
        (511, 900, 64),
        (9000, 9000, 224),
        (640, 480, 80),
        (300, 300, 300),
    ]
    outs = _run_node(
        tmp_path, [dict(kind="round", values=values)] + [dict(kind="draft", w=w, h=h, resize=r) for w, h, r in sizes]
    )
    assert outs[0] == [round(v) for v in values]
    for (w, h, r), scale in zip(sizes, outs[1:]):
        jpeg = tmp_path / "x.jpg"
        Image.new("RGB", (w, h), (90, 120, 200)).save(jpeg, quality=80)
        with Image.open(jpeg) as im:
            im.draft("RGB", (DRAFT_FACTOR * r, DRAFT_FACTOR * r))  # what the runtime asks PIL for
            assert im.size == (-(-w // scale), -(-h // scale)), (w, h, r, scale, im.size)
