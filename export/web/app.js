// facederm web: predict on the device, in the browser, with onnxruntime-web. The photo never leaves the page.
//
// The model's labels and preprocessing are read from the model file itself (ONNX metadata_props, written by
// facederm-export), the pixels are prepared exactly as facederm.runtime does (preprocess.js), and the
// probabilities come from the same graph the Python runtime runs. Hooks for tests and benchmarks:
//   await window.facedermReady            -> {model, bytes, backend, threads, loadMs, labels, ...}
//   await window.facedermPredict(buffer)  -> {labels, probabilities, ms, preprocessMs, ...}
//   await window.facedermPredict(buffer, {clinical: {age: 67, bleed: true}})  (a model with clinical fields; without
//                                            the option the page's form answers, unanswered fields are missing)
// facederm output is decision support for clinicians, not a diagnosis.

import * as clin from "./clinical.js";
import * as pre from "./preprocess.js";

// Replaced by facederm-export with a digest of the folder's files: a new export gets a fresh offline cache.
export const BUILD = "__FACEDERM_BUILD__";
export const CACHE_NAME = `facederm-web-${BUILD}`;
// Smallest first: the int8 graph is only in the folder when it passed the export's fidelity gate.
const MODEL_CANDIDATES = ["model.int8.onnx", "model.onnx"];
const RUNTIMES = {
  wasm: ["ort/ort.wasm.min.mjs", "ort/ort-wasm-simd-threaded.mjs", "ort/ort-wasm-simd-threaded.wasm"],
  webgpu: ["ort/ort.webgpu.min.mjs", "ort/ort-wasm-simd-threaded.asyncify.mjs",
    "ort/ort-wasm-simd-threaded.asyncify.wasm"],
};
const SHELL = ["./", "index.html", "app.js", "preprocess.js", "clinical.js", "manifest.webmanifest", "icon.svg"];
const METADATA_CARD = "facederm.card";
const METADATA_LABELS = "labels";
const METADATA_PREPROCESSING = "preprocessing";
// The graph's named inputs (facederm.runtime.metadata INPUT_NAME, CLINICAL_INPUT_NAME).
const IMAGE_INPUT = "image";
const CLINICAL_INPUT = "clinical";
const params = new URLSearchParams(location.search);

/** Top-level ``metadata_props`` of an ONNX ModelProto (field 14), read with a minimal protobuf walker. */
export function onnxMetadata(bytes) {
  const view = new Uint8Array(bytes);
  const text = new TextDecoder();
  let pos = 0;
  const varint = (end) => {
    let value = 0, mul = 1, b;
    do {
      if (pos >= end) throw new Error("truncated ONNX file");
      b = view[pos++];
      value += (b & 0x7f) * mul; // multiplication, not shifts: lengths can exceed 2^31
      mul *= 128;
    } while (b & 0x80);
    return value;
  };
  const skip = (wire, end) => {
    if (wire === 0) varint(end);
    else if (wire === 1) pos += 8;
    else if (wire === 2) { const n = varint(end); pos += n; } // not pos += varint(): pos is read first
    else if (wire === 5) pos += 4;
    else throw new Error(`unsupported protobuf wire type ${wire}`);
  };
  const props = {};
  while (pos < view.length) {
    const tag = varint(view.length);
    const field = Math.floor(tag / 8), wire = tag % 8;
    if (field === 14 && wire === 2) {
      const n = varint(view.length);
      const end = pos + n;
      let key = "", value = "";
      while (pos < end) {
        const t = varint(end);
        if ((t === 10 || t === 18)) {
          const len = varint(end);
          const s = text.decode(view.subarray(pos, pos + len));
          pos += len;
          if (t === 10) key = s; else value = s;
        } else skip(t % 8, end);
      }
      props[key] = value;
    } else {
      skip(wire, view.length);
    }
  }
  return props;
}

/** The model card, labels and preprocessing embedded by facederm-export; refuses a file without them. */
export function readCard(props, where) {
  if (!(METADATA_CARD in props)) throw new Error(`${where}: no facederm metadata; export it with facederm-export`);
  const card = JSON.parse(props[METADATA_CARD]);
  const labels = props[METADATA_LABELS] ? JSON.parse(props[METADATA_LABELS]) : card.labels;
  const preprocessing = props[METADATA_PREPROCESSING] ? JSON.parse(props[METADATA_PREPROCESSING]) : card.preprocessing;
  if (JSON.stringify(labels) !== JSON.stringify(card.labels)) throw new Error(`${where}: labels disagree with its card`);
  return { card, labels, preprocessing };
}

async function fetchModel() {
  const asked = params.get("model");
  const names = asked ? [asked] : MODEL_CANDIDATES;
  for (const name of names) {
    let response;
    try {
      response = await fetch(name);
    } catch (exc) {
      continue;
    }
    if (!response.ok) continue;
    // Keep the bytes for the offline cache without downloading the model twice.
    const copy = response.clone();
    const bytes = await response.arrayBuffer();
    return { name, bytes, copy };
  }
  throw new Error(`no model file found (tried ${names.join(", ")})`);
}

async function chooseBackend() {
  const asked = params.get("ep");
  if (asked === "wasm") return "wasm";
  if (navigator.gpu) {
    try {
      if (await navigator.gpu.requestAdapter()) return "webgpu";
    } catch (exc) { /* no usable GPU: WASM */ }
  }
  if (asked === "webgpu") throw new Error("WebGPU was asked for (?ep=webgpu) but this browser offers no GPU adapter");
  return "wasm";
}

function threadCount() {
  const asked = Number(params.get("threads"));
  // Threads need SharedArrayBuffer, which browsers give only to cross-origin isolated pages (COOP + COEP).
  if (!self.crossOriginIsolated) return 1;
  if (asked > 0) return asked;
  return Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1));
}

async function rememberOffline(files, model) {
  // The service worker serves these when the network is gone. Best effort: a browser without Cache
  // Storage (private mode) still predicts online.
  if (!("caches" in self)) return false;
  try {
    const cache = await caches.open(CACHE_NAME);
    await cache.put(new URL(model.name, location.href).href, model.copy);
    await cache.addAll(files);
    return true;
  } catch (exc) {
    console.warn("offline cache:", exc);
    return false;
  }
}

async function registerWorker() {
  if (!("serviceWorker" in navigator) || params.has("nosw")) return null;
  try {
    const registration = await navigator.serviceWorker.register("sw.js");
    await navigator.serviceWorker.ready;
    return registration;
  } catch (exc) {
    console.warn("service worker:", exc);
    return null;
  }
}

let ort = null;
let session = null;
let model = null;

async function load() {
  const start = performance.now();
  const worker = registerWorker();
  const [fetched, backend] = await Promise.all([fetchModel(), chooseBackend()]);
  const downloaded = performance.now();
  const meta = readCard(onnxMetadata(fetched.bytes), fetched.name);
  const runtime = RUNTIMES[backend];
  ort = await import(`./${runtime[0]}`);
  ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
  ort.env.wasm.numThreads = threadCount();
  const providers = backend === "webgpu" ? ["webgpu", "wasm"] : ["wasm"];
  session = await ort.InferenceSession.create(new Uint8Array(fetched.bytes), {
    executionProviders: providers, graphOptimizationLevel: "all",
  });
  const loaded = performance.now();
  const names = [...session.inputNames];
  const clinicalInput = names.includes(CLINICAL_INPUT) ? CLINICAL_INPUT : null;
  if (clinicalInput && !meta.card.clinical) throw new Error(`${fetched.name}: a clinical input but no schema in its card`);
  model = {
    ...meta,
    name: fetched.name,
    bytes: fetched.bytes.byteLength,
    backend,
    providers,
    threads: ort.env.wasm.numThreads,
    crossOriginIsolated: !!self.crossOriginIsolated,
    inputName: names.includes(IMAGE_INPUT) ? IMAGE_INPUT : names[0],
    clinicalInput,
    clinicalFields: clinicalInput ? meta.card.clinical.fields.map((f) => f.name) : [],
    outputName: session.outputNames[0],
    inputNames: [...session.inputNames],
    outputNames: [...session.outputNames],
    ortVersion: ort.env.versions ? ort.env.versions.web || ort.env.versions.common : "",
    loadMs: loaded - start,
    downloadMs: downloaded - start,
    sessionMs: loaded - downloaded,
  };
  await worker;
  model.offline = await rememberOffline([...SHELL, ...runtime], fetched);
  model.downloadBytes = downloadedBytes();
  return publicInfo();
}

function downloadedBytes() {
  // What this page fetched from the network (resource timing; 0 for files served from a cache).
  let total = 0;
  for (const entry of performance.getEntriesByType("resource")) total += entry.encodedBodySize || 0;
  const nav = performance.getEntriesByType("navigation")[0];
  return total + (nav ? nav.encodedBodySize || 0 : 0);
}

function publicInfo() {
  const { card, ...rest } = model;
  return { ...rest, arch: card.arch, labelNames: card.label_names || {}, referral: card.referral || {},
    note: card.note };
}

async function decodeRGBA(buffer) {
  // The browser's decoder, EXIF orientation applied, no colour-space conversion (PIL applies neither ICC
  // profiles nor gAMA chunks), no alpha premultiplication.
  const blob = new Blob([buffer]);
  const bitmap = await createImageBitmap(blob, {
    imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none",
  });
  const { width, height } = bitmap;
  const canvas = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(width, height)
    : Object.assign(document.createElement("canvas"), { width, height });
  const ctx = canvas.getContext("2d", { willReadFrequently: true, alpha: false });
  ctx.fillStyle = "#ffffff"; // transparency on white, as the runtime composites it
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(bitmap, 0, 0); // 1:1, no scaling: the resize is preprocess.js's
  bitmap.close();
  return { data: ctx.getImageData(0, 0, width, height).data, width, height, channels: 4 };
}

function isJpeg(buffer) {
  const b = new Uint8Array(buffer, 0, Math.min(3, buffer.byteLength));
  return b.length === 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;
}

/** prepare_image in the page: uint8 RGB crop x crop x 3 (and how the image was decoded). */
export async function prepare(buffer, preprocessing) {
  let img = await decodeRGBA(buffer);
  const decoded = [img.width, img.height];
  const scale = isJpeg(buffer) ? pre.draftScale(img.width, img.height, preprocessing.resize_shorter) : 1;
  if (scale > 1) img = pre.boxReduce(img.data, img.width, img.height, img.channels, scale);
  const rgb = pre.resizeAndCrop(img.data, img.width, img.height, img.channels, preprocessing.crop,
    preprocessing.resize_shorter, preprocessing.interpolation);
  return { rgb, decoded, draftScale: scale };
}

function toBase64(bytes) {
  let s = "";
  const u8 = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Predict one image (an ArrayBuffer of a PNG/JPEG/... file). ``options.tensor``: also return the input. */
export async function predict(buffer, options = {}) {
  if (!session) await ready;
  const size = model.preprocessing.crop;
  const t0 = performance.now();
  const { rgb, decoded, draftScale } = await prepare(buffer, model.preprocessing);
  const data = pre.toTensor(rgb, size);
  const t1 = performance.now();
  const feeds = { [model.inputName]: new ort.Tensor("float32", data, [1, 3, size, size]) };
  const answers = options.clinical !== undefined ? options.clinical : formAnswers();
  if (model.clinicalInput) {
    const encoded = clin.encodeClinical(model.card.clinical, answers);
    feeds[model.clinicalInput] = new ort.Tensor("float32", encoded, [1, encoded.length]);
  } else if (answers && Object.keys(answers).length) {
    throw new Error("this model takes no clinical answers (it was trained on images only)");
  }
  const outputs = await session.run(feeds);
  const probabilities = Array.from(outputs[model.outputName].data);
  const t2 = performance.now();
  const result = {
    labels: model.labels, probabilities, ms: t2 - t1, preprocessMs: t1 - t0, decoded, draftScale,
    refer: referral(probabilities),
  };
  if (options.tensor) {
    result.crop = toBase64(rgb);
    result.tensor = toBase64(data);
  }
  lastCrop = rgb;
  lastBuffer = buffer;
  return result;
}

// The card's referral rule, as facederm.runtime's Model.refers: a referral label at or above its threshold,
// or a top label less probable than its below_confidence entry.
function referral(probabilities) {
  const rule = model.card.referral || {};
  const hits = (rule.labels || []).filter((label) => probabilities[model.labels.indexOf(label)] >= rule.threshold);
  const top = probabilities.indexOf(Math.max(...probabilities));
  const unsureBelow = (rule.below_confidence || {})[model.labels[top]] || 0;
  const unsure = probabilities[top] < unsureBelow;
  return { flagged: hits.length > 0 || unsure, labels: hits, threshold: rule.threshold, unsure, unsureBelow };
}

// --- the page -----------------------------------------------------------------------------------------
let lastCrop = null;
let lastBuffer = null;
const $ = (id) => document.getElementById(id);

/** The clinical form's answers ({field: value}; unanswered fields left out), {} without a form. */
function formAnswers() {
  const answers = {};
  if (typeof document === "undefined" || !$("clinical-fields")) return answers;
  for (const input of $("clinical-fields").querySelectorAll("[data-field]")) {
    if (input.value !== "") answers[input.dataset.field] = input.value;
  }
  return answers;
}

/** One control per field of the card's clinical schema, every one unanswered at first. */
function buildClinicalForm(schema) {
  const box = $("clinical-fields");
  for (const field of schema.fields) {
    const label = document.createElement("label");
    label.textContent = field.name.replaceAll("_", " ");
    let input;
    if (field.kind === "number") {
      input = Object.assign(document.createElement("input"), { type: "text", inputMode: "decimal", placeholder: "-" });
    } else {
      input = document.createElement("select");
      const options = field.kind === "bool" ? [["", "-"], ["yes", "yes"], ["no", "no"]]
        : [["", "-"], ...field.categories.map((c) => [c, c.toLowerCase().replaceAll("_", " ")])];
      for (const [value, text] of options) input.append(new Option(text, value));
    }
    input.dataset.field = field.name;
    input.addEventListener("change", () => { if (lastBuffer) rerun(); });
    label.append(input);
    box.append(label);
  }
  $("clinical").hidden = false;
}

async function rerun() {
  try {
    show(await predict(lastBuffer));
    $("status").textContent = "";
  } catch (exc) {
    $("status").textContent = `${exc.message || exc}`;
  }
}

function show(result) {
  const list = $("results");
  list.replaceChildren();
  const order = result.probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]);
  const names = model.card.label_names || {};
  for (const [p, i] of order.slice(0, Number(params.get("top")) || 3)) {
    const label = model.labels[i];
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = names[label] ? `${label}: ${names[label]}` : label;
    const value = document.createElement("span");
    value.className = "p";
    value.textContent = `${(100 * p).toFixed(1)} %`;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.max(0.5, 100 * p)}%`;
    li.append(name, value, bar);
    list.append(li);
  }
  const refer = $("refer");
  refer.hidden = !result.refer.flagged;
  const reasons = [];
  if (result.refer.labels.length) {
    reasons.push(`${result.refer.labels.join(", ")} at or above ${(100 * result.refer.threshold).toFixed(0)} %`);
  }
  if (result.refer.unsure) reasons.push(`top label below ${(100 * result.refer.unsureBelow).toFixed(0)} %`);
  refer.textContent = result.refer.flagged ? `Flag for a clinician: ${reasons.join("; ")}` : "";
  $("timing").textContent = `model ${result.ms.toFixed(1)} ms, decode and resize ${result.preprocessMs.toFixed(1)} ms`
    + ` (${result.decoded[0]}x${result.decoded[1]} px${result.draftScale > 1 ? `, JPEG 1/${result.draftScale}` : ""})`;
  drawCrop(lastCrop, model.preprocessing.crop);
  $("output").hidden = false;
}

function drawCrop(rgb, size) {
  const canvas = $("crop");
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(size, size);
  for (let i = 0; i < size * size; i++) {
    image.data[i * 4] = rgb[i * 3];
    image.data[i * 4 + 1] = rgb[i * 3 + 1];
    image.data[i * 4 + 2] = rgb[i * 3 + 2];
    image.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

async function handleFile(file) {
  if (!file) return;
  $("status").textContent = `Reading ${file.name || "photo"}...`;
  try {
    show(await predict(await file.arrayBuffer()));
    $("status").textContent = "";
  } catch (exc) {
    $("status").textContent = `Could not read this image: ${exc.message || exc}`;
  }
}

function wirePage() {
  if (typeof document === "undefined" || !$("photo")) return;
  $("photo").addEventListener("change", (event) => handleFile(event.target.files[0]));
  const zone = $("drop");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    handleFile(event.dataTransfer.files[0]);
  });
}

function describe(info) {
  const where = info.backend === "webgpu" ? "WebGPU" : `WebAssembly SIMD, ${info.threads} thread${info.threads > 1 ? "s" : ""}`;
  const mb = (info.bytes / 1e6).toFixed(1);
  return `${info.arch}, ${info.labels.length} classes (${info.name}, ${mb} MB) on ${where};`
    + ` ready in ${(info.loadMs / 1000).toFixed(1)} s${info.offline ? "; works offline" : ""}.`;
}

wirePage();
export const ready = load();
window.facedermReady = ready;
window.facedermPredict = (buffer, options) => predict(buffer, options);
ready.then((info) => {
  if (typeof document === "undefined") return;
  $("model").textContent = describe(info);
  $("note").textContent = info.note || "facederm output is decision support for clinicians, not a diagnosis.";
  if (model.clinicalInput) buildClinicalForm(model.card.clinical);
  $("photo").disabled = false;
  document.body.classList.add("ready");
}, (exc) => {
  console.error(exc);
  if (typeof document !== "undefined") $("status").textContent = `The model could not be loaded: ${exc.message || exc}`;
});
