// facederm web: the Python runtime's preprocessing (facederm.runtime.preprocess.prepare_image) in plain JS.
//
// Canvas drawImage resizing does not give PIL's pixels (other filters, no antialiasing, GPU rounding), so
// the resize is Pillow's own algorithm (libImaging/Resample.c, 8 bits per channel): separable convolution,
// horizontal pass then vertical, coefficients normalized per output pixel and rounded to 22-bit fixed
// point, accumulation in integers from a half-unit bias, clipped to 0..255. JS numbers are IEEE doubles,
// so the coefficient arithmetic below is the same double arithmetic as Pillow's C code, in the same order.
// No DOM here: the same module runs in the page and under node (tests/test_web_preprocess.py).

export const PRECISION_BITS = 32 - 8 - 2; // Pillow: 8 bits of result, 2 bits of headroom for negative lobes
export const DRAFT_FACTOR = 4; // facederm.runtime.preprocess.DRAFT_FACTOR
export const MAX_RESIZE_AREA_FACTOR = 16; // facederm.runtime.preprocess._MAX_RESIZE_AREA_FACTOR

function bilinearFilter(x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

function bicubicFilter(x) {
  const a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

export const FILTERS = {
  bilinear: { fn: bilinearFilter, support: 1.0 },
  bicubic: { fn: bicubicFilter, support: 2.0 },
};

/** Python's round(): half to even (Math.round rounds half up, which would change output sizes). */
export function pyRound(x) {
  const f = Math.floor(x);
  const diff = x - f;
  if (diff > 0.5) return f + 1;
  if (diff < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Pillow's precompute_coeffs + normalize_coeffs_8bpc: for each output index its first input index,
 * its tap count and its fixed-point weights. in0/in1 are the box edges (C floats in Pillow).
 */
export function coefficients(inSize, in0, in1, outSize, filter) {
  in0 = Math.fround(in0);
  in1 = Math.fround(in1);
  const scale = Math.fround(in1 - in0) / outSize; // (double)(in1 - in0) with float operands
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5); // C's (int) truncates toward zero
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const v = filter.fn((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0.0 ? w[x] / ww : w[x];
      // normalize_coeffs_8bpc: round half away from zero into 22-bit fixed point
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * (1 << PRECISION_BITS))
                                 : Math.trunc(0.5 + k * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(v) {
  // Pillow's clip8 lookup: v >> PRECISION_BITS (arithmetic shift), then clamp to 0..255.
  const s = v >> PRECISION_BITS;
  return s < 0 ? 0 : s > 255 ? 255 : s;
}

/**
 * Pillow's ImagingResample for an RGB image (``src``: Uint8 array, ``channels`` per pixel, 3 are used).
 * Returns RGB (3 channels) ``outW`` x ``outH`` for the box (x0, y0, x1, y1) of the source. Only output
 * columns [cx, cx + cw) and rows [cy, cy + ch) are computed (the center crop); every output pixel depends
 * on its own coefficients only, so the values equal those of the full resize followed by the crop.
 */
export function resampleRGB(src, width, height, channels, outW, outH, interpolation, box, crop) {
  const filter = FILTERS[interpolation];
  if (!filter) throw new Error(`resample: unsupported interpolation ${interpolation}`);
  const [bx0, by0, bx1, by1] = box || [0, 0, width, height];
  const [cx, cy, cw, ch] = crop || [0, 0, outW, outH];
  // Pillow skips a pass whose size and box are the identity (a skipped pass is bit-exact by construction).
  const needH = outW !== width || bx0 !== 0 || bx1 !== outW;
  const needV = outH !== height || by0 !== 0 || by1 !== outH;
  const hor = needH ? coefficients(width, bx0, bx1, outW, filter) : null;
  const vert = needV ? coefficients(height, by0, by1, outH, filter) : null;
  // Pillow 12.2+ (python-pillow/Pillow#9549) runs the vertical pass first when the height shrinks by more
  // than twice as many pixels as the width; the 8-bit rounding between passes makes the order visible.
  const verticalFirst = needH && needV && outH < height && (height - outH) > 2 * (width - outW);
  const img = { data: src, width, height, channels, x0: 0, y0: 0 };
  if (verticalFirst) {
    const [c0, c1] = span(hor, cx, cw);
    const tmp = verticalPass(img, vert, cy, ch, c0, c1 - c0);
    return horizontalPass(tmp, hor, cx, cw, cy, ch).data;
  }
  if (needH) {
    const [r0, r1] = needV ? span(vert, cy, ch) : [cy, cy + ch];
    const tmp = horizontalPass(img, hor, cx, cw, r0, r1 - r0);
    return needV ? verticalPass(tmp, vert, cy, ch, cx, cw).data : tmp.data;
  }
  if (needV) return verticalPass(img, vert, cy, ch, cx, cw).data;
  return verticalPass(img, null, cy, ch, cx, cw).data; // plain crop
}

// Source indexes [first, last) that output indexes [o, o + n) read.
function span(coeffs, o, n) {
  let first = Infinity, last = 0;
  for (let i = o; i < o + n; i++) {
    first = Math.min(first, coeffs.bounds[i * 2]);
    last = Math.max(last, coeffs.bounds[i * 2] + coeffs.bounds[i * 2 + 1]);
  }
  return [first, last];
}

// Horizontal pass over ``rows`` rows from ``r0``: output columns [cx, cx + cw). ``img.x0``/``img.y0``: where the
// view starts in source coordinates (a view holds only the rows or columns the next pass reads).
function horizontalPass(img, hor, cx, cw, r0, rows) {
  const { data, width, channels } = img;
  const out = new Uint8Array(cw * rows * 3);
  const half = 1 << (PRECISION_BITS - 1);
  for (let y = 0; y < rows; y++) {
    const rowBase = (y + r0 - img.y0) * width * channels;
    for (let i = 0; i < cw; i++) {
      const xx = cx + i;
      const xmin = hor.bounds[xx * 2] - img.x0;
      const xmax = hor.bounds[xx * 2 + 1];
      const kbase = xx * hor.ksize;
      let s0 = half, s1 = half, s2 = half;
      for (let x = 0; x < xmax; x++) {
        const k = hor.kk[kbase + x];
        const p = rowBase + (x + xmin) * channels;
        s0 += data[p] * k;
        s1 += data[p + 1] * k;
        s2 += data[p + 2] * k;
      }
      const o = (y * cw + i) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { data: out, width: cw, height: rows, channels: 3, x0: cx, y0: r0 };
}

// Vertical pass: output rows [cy, cy + ch), over ``cols`` columns from ``c0`` (``vert`` null: plain copy).
function verticalPass(img, vert, cy, ch, c0, cols) {
  const { data, width, channels } = img;
  const out = new Uint8Array(cols * ch * 3);
  const half = 1 << (PRECISION_BITS - 1);
  for (let j = 0; j < ch; j++) {
    const yy = cy + j;
    if (vert === null) {
      for (let i = 0; i < cols; i++) {
        const p = ((yy - img.y0) * width + c0 + i - img.x0) * channels;
        const o = (j * cols + i) * 3;
        out[o] = data[p]; out[o + 1] = data[p + 1]; out[o + 2] = data[p + 2];
      }
      continue;
    }
    const ymin = vert.bounds[yy * 2] - img.y0;
    const ymax = vert.bounds[yy * 2 + 1];
    const kbase = yy * vert.ksize;
    for (let i = 0; i < cols; i++) {
      const col = (c0 + i - img.x0) * channels;
      let s0 = half, s1 = half, s2 = half;
      for (let y = 0; y < ymax; y++) {
        const k = vert.kk[kbase + y];
        const p = (y + ymin) * width * channels + col;
        s0 += data[p] * k;
        s1 += data[p + 1] * k;
        s2 += data[p + 2] * k;
      }
      const o = (j * cols + i) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { data: out, width: cols, height: ch, channels: 3, x0: c0, y0: cy };
}

/**
 * Pillow's NEAREST resize (an affine scale, ImagingScaleAffine): source positions are accumulated
 * step by step in doubles, as Pillow does, then truncated.
 */
export function nearestRGB(src, width, height, channels, outW, outH, box, crop) {
  const [bx0, by0, bx1, by1] = (box || [0, 0, width, height]).map(Math.fround);
  const [cx, cy, cw, ch] = crop || [0, 0, outW, outH];
  const a0 = Math.fround(bx1 - bx0) / outW;
  const a4 = Math.fround(by1 - by0) / outH;
  const coord = (v) => (v < 0.0 ? -1 : Math.trunc(v));
  const xin = new Int32Array(outW);
  let xo = bx0 + a0 * 0.5;
  for (let x = 0; x < outW; x++) {
    xin[x] = coord(xo);
    xo += a0;
  }
  const out = new Uint8Array(cw * ch * 3);
  let yo = by0 + a4 * 0.5;
  for (let y = 0; y < outH; y++) {
    const yi = coord(yo);
    yo += a4;
    if (y < cy || y >= cy + ch) continue;
    for (let i = 0; i < cw; i++) {
      const xi = xin[cx + i];
      const o = ((y - cy) * cw + i) * 3;
      if (yi < 0 || yi >= height || xi < 0 || xi >= width) continue; // Pillow fills 0 outside
      const p = (yi * width + xi) * channels;
      out[o] = src[p];
      out[o + 1] = src[p + 1];
      out[o + 2] = src[p + 2];
    }
  }
  return out;
}

/**
 * facederm.runtime.preprocess.resize_and_crop: resize the shorter side to ``resizeShorter`` (>= crop), then
 * the center ``crop`` x ``crop``. Returns RGB uint8 crop x crop x 3.
 */
export function resizeAndCrop(src, width, height, channels, crop, resizeShorter, interpolation = "bilinear") {
  resizeShorter = resizeShorter || crop;
  if (width === crop && height === crop && resizeShorter === crop) {
    return resampleRGB(src, width, height, channels, width, height, "bilinear", null, [0, 0, crop, crop]);
  }
  const shorter = Math.max(resizeShorter, crop);
  const scale = shorter / Math.min(height, width);
  const newW = Math.max(shorter, pyRound(width * scale));
  const newH = Math.max(shorter, pyRound(height * scale));
  const resample = (outW, outH, box, cropBox) => (interpolation === "nearest"
    ? nearestRGB(src, width, height, channels, outW, outH, box, cropBox)
    : resampleRGB(src, width, height, channels, outW, outH, interpolation, box, cropBox));
  if (newW * newH > MAX_RESIZE_AREA_FACTOR * shorter * shorter) {
    // Extreme aspect ratio: the runtime resamples only the box its center crop keeps.
    const sx = width / newW, sy = height / newH;
    const top = Math.floor((newH - crop) / 2), left = Math.floor((newW - crop) / 2);
    const box = [left * sx, top * sy, (left + crop) * sx, (top + crop) * sy];
    return resample(crop, crop, box, null);
  }
  const top = Math.floor((newH - crop) / 2);
  const left = Math.floor((newW - crop) / 2);
  if (newW === width && newH === height) { // resize_shorter_side returns the image as is
    return resampleRGB(src, width, height, channels, width, height, "bilinear", null, [left, top, crop, crop]);
  }
  return resample(newW, newH, null, [left, top, crop, crop]);
}

/**
 * JPEG draft decoding as the runtime asks PIL for it (Image.draft("RGB", (4 * resize, 4 * resize))):
 * the DCT scale 1/8, 1/4 or 1/2 that keeps both sides >= the request. Returns 1 when PIL decodes in full.
 */
export function draftScale(width, height, resizeShorter) {
  const size = DRAFT_FACTOR * resizeShorter;
  const scale = Math.min(Math.floor(width / size), Math.floor(height / size));
  for (const sc of [8, 4, 2]) if (scale >= sc) return sc;
  return 1;
}

/**
 * Stand-in for libjpeg's scaled IDCT (which a browser cannot be asked for): the mean of each sc x sc block
 * of the full decode, ceil(W / sc) x ceil(H / sc) like PIL's draft size. Approximate, see the README.
 */
export function boxReduce(src, width, height, channels, sc) {
  const outW = Math.ceil(width / sc), outH = Math.ceil(height / sc);
  const out = new Uint8Array(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    const y0 = y * sc, y1 = Math.min(height, y0 + sc);
    for (let x = 0; x < outW; x++) {
      const x0 = x * sc, x1 = Math.min(width, x0 + sc);
      let r = 0, g = 0, b = 0;
      for (let yy = y0; yy < y1; yy++) {
        for (let xx = x0; xx < x1; xx++) {
          const p = (yy * width + xx) * channels;
          r += src[p]; g += src[p + 1]; b += src[p + 2];
        }
      }
      const n = (y1 - y0) * (x1 - x0);
      const o = (y * outW + x) * 3;
      out[o] = Math.floor(r / n + 0.5);
      out[o + 1] = Math.floor(g / n + 0.5);
      out[o + 2] = Math.floor(b / n + 0.5);
    }
  }
  return { data: out, width: outW, height: outH, channels: 3 };
}

/** RGB uint8 HWC -> float32 NCHW (values 0-255, as facederm.runtime.preprocess.to_tensor). */
export function toTensor(rgb, size) {
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    out[i] = rgb[i * 3];
    out[plane + i] = rgb[i * 3 + 1];
    out[2 * plane + i] = rgb[i * 3 + 2];
  }
  return out;
}
