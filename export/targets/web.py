"""Web: a static folder that predicts inside the browser with onnxruntime-web (``web/`` in the export dir).

``web/index.html`` + ``app.js`` (no framework) + ``preprocess.js`` (the Python runtime's resize, bit for bit)
+ a web app manifest and a service worker (offline after the first visit) + onnxruntime-web's files under
``web/ort/`` (WebAssembly SIMD, threads when the page is cross-origin isolated, WebGPU when the browser has
it) + the model. Two variants, the smallest first: ``web/model.int8.onnx`` (the ONNX Runtime static int8 Q/DQ
graph, from this export's shared calibration ranges) and ``web/model.onnx`` (fp32). A variant that fails the
fidelity gate is never installed, and the page loads the first model file it finds, so it runs the smallest
graph that passed, else fp32. Labels and preprocessing are read by the page from the model's own ONNX
``metadata_props``. A model with clinical fields gets a form built from the card's schema there (every field
unanswered at first) and ``clinical.js`` encodes its answers as ``facederm.runtime.clinical`` does.

onnxruntime-web comes from npm: ``export/web/package-lock.json`` pins it (and its dependencies) exactly and
``npm ci`` installs it once into the facederm cache (``$FACEDERM_CACHE_DIR``, else ``$XDG_CACHE_HOME/facederm``,
else ``~/.cache/facederm``), keyed by the lock file's digest. Without npm (and without that cache) the target
is skipped with the reason, as a missing Python backend is.

Validation here is a twin: onnxruntime (CPU) runs the very file the page loads, through the runtime's loader.
The browser itself (onnxruntime-web's WebAssembly kernels, the page's decode and resize) is checked by
``tests/test_web.py`` in headless Chromium against the Python runtime on the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from facederm.runtime.errors import ExportError, MissingDependencyError

from ..context import BuildContext, BuiltArtifact
from ..onnx_graph import ort_predict, shared_fp32, versions
from ..registry import Target, Variant, register
from .onnx import INT8_SCHEME, int8_options, quant_aware_options, quantize_int8

#: The static assets shipped in the facederm package (``facederm.export``'s package data).
ASSETS = Path(__file__).resolve().parents[1] / "web"
#: Files of ASSETS copied into every web folder (package*.json only install onnxruntime-web).
PAGE_FILES = ("index.html", "app.js", "preprocess.js", "clinical.js", "sw.js", "manifest.webmanifest", "icon.svg")
#: Files in which ``__FACEDERM_BUILD__`` is replaced by the folder's build id (the offline cache's name).
BUILD_PLACEHOLDER = "__FACEDERM_BUILD__"
STAMPED = ("app.js", "sw.js")
#: onnxruntime-web's files the page uses: the WebAssembly build, and the WebGPU one (loaded only with a GPU).
ORT_FILES = (
    "ort.wasm.min.mjs",
    "ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm",
    "ort.webgpu.min.mjs",
    "ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm",
)
FOLDER = "web"
ORT_FOLDER = "ort"
NPM_TIMEOUT_S = 600

TWIN_REASON = (
    "twin: onnxruntime (CPU) ran the model file the page loads; the page itself (onnxruntime-web "
    "WebAssembly, its decode and resize) is checked in headless Chromium by tests/test_web.py"
)


class WebToolchainMissing(MissingDependencyError):
    """npm is not installed (or could not install onnxruntime-web): the web target is skipped with the reason."""

    def __init__(self, message: str) -> None:
        self.package = "npm"
        self.extra = ""
        Exception.__init__(self, message)


def ort_web_version() -> str:
    """The onnxruntime-web version pinned in ``export/web/package.json``."""
    return json.loads((ASSETS / "package.json").read_text())["dependencies"]["onnxruntime-web"]


def cache_root() -> Path:
    """The facederm cache (same rule as the benchmarks' default-model cache)."""
    explicit = os.environ.get("FACEDERM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "facederm"


def _lock_digest() -> str:
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update((ASSETS / name).read_bytes())
    return h.hexdigest()[:16]


def ort_web_dist() -> Path:
    """onnxruntime-web's ``dist`` folder, installed with ``npm ci`` from the lock file on first use.

    Raises :class:`WebToolchainMissing` when npm is absent or the install fails (offline without a cache).
    """
    home = cache_root() / "onnxruntime-web" / f"{ort_web_version()}-{_lock_digest()}"
    dist = home / "node_modules" / "onnxruntime-web" / "dist"
    if all((dist / name).is_file() for name in ORT_FILES):
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise WebToolchainMissing(
            "npm is not installed: the web target copies onnxruntime-web from npm "
            "(install Node.js 18+ with npm, e.g. apt-get install nodejs npm)"
        )
    home.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".npm-", dir=home.parent))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(ASSETS / name, work / name)
        # --ignore-scripts: nothing from the registry runs here; the files are only copied into the page.
        cmd = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise WebToolchainMissing(
                f"npm ci (onnxruntime-web {ort_web_version()}) took over {NPM_TIMEOUT_S} s"
            ) from exc
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise WebToolchainMissing(
                f"npm ci could not install onnxruntime-web {ort_web_version()} (offline? {last[0][:200]})"
            )
        missing = [n for n in ORT_FILES if not (work / "node_modules/onnxruntime-web/dist" / n).is_file()]
        if missing:
            raise ExportError(f"onnxruntime-web {ort_web_version()} lacks {', '.join(missing)}")
        if home.exists():
            shutil.rmtree(home)  # an incomplete earlier install
        os.replace(work, home)  # another process may have won the race: then its copy is used
    except OSError as exc:
        if not dist.is_dir():
            raise ExportError(f"could not install onnxruntime-web into {home}: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dist


def build_id(ctx: BuildContext) -> str:
    """Digest of the page's files, the lock file and the model card: names the page's offline cache, so a new
    facederm, onnxruntime-web or trained model never serves an old cache. Equal for both variants of one
    export (they install the same page files)."""
    h = hashlib.sha256()
    for name in PAGE_FILES:
        h.update((ASSETS / name).read_bytes())
    h.update(_lock_digest().encode())
    h.update(json.dumps(ctx.card.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def write_page(folder: Path, build: str, dist: Path) -> list[Path]:
    """Copy the page and onnxruntime-web into ``folder``; returns the files written."""
    written = []
    (folder / ORT_FOLDER).mkdir(parents=True, exist_ok=True)
    for name in PAGE_FILES:
        target = folder / name
        if name in STAMPED:
            text = (ASSETS / name).read_text(encoding="utf-8")
            if BUILD_PLACEHOLDER not in text:
                raise ExportError(f"{ASSETS / name}: the build placeholder {BUILD_PLACEHOLDER} is missing")
            target.write_text(text.replace(BUILD_PLACEHOLDER, build), encoding="utf-8")
        else:
            shutil.copyfile(ASSETS / name, target)
        written.append(target)
    for name in ORT_FILES:
        shutil.copyfile(dist / name, folder / ORT_FOLDER / name)
        written.append(folder / ORT_FOLDER / name)
    return written


def _build(ctx: BuildContext, make_model) -> BuiltArtifact:
    dist = ort_web_dist()  # first: without npm the variant is skipped before any work
    model = ctx.output
    make_model(model)
    folder = model.parent
    files = write_page(folder, build_id(ctx), dist)
    rel = tuple(p.relative_to(ctx.workdir).as_posix() for p in files)
    return BuiltArtifact(
        # The main file is a plain ONNX graph: facederm.runtime.load reads it too (the tests compare the two).
        format="onnx",
        predict=ort_predict(model),
        validated="twin",
        validated_reason=TWIN_REASON,
        files=rel,
        converter_versions={**versions("onnx", "onnxruntime"), "onnxruntime-web": ort_web_version()},
        options={
            "page": f"{FOLDER}/index.html",
            "model": model.name,
            "onnxruntime_web": ort_web_version(),
            "execution_providers": "webgpu (when the browser has it), else wasm (SIMD; threads when "
            "cross-origin isolated)",
        },
    )


def build_int8(ctx: BuildContext) -> BuiltArtifact:
    """The page with ONNX Runtime's int8 graph (:func:`~facederm.export.targets.onnx.quantize_int8`: 7-bit weights,
    so no kernel saturates): onnxruntime-web's WebAssembly kernels then give the probabilities of
    ``facederm.runtime`` on the same file (measured equal, tests/test_web.py), which is what the gate runs. Always 7
    bits (``--int8-weight-bits`` is not applied): the browser's CPU is unknown at export time."""
    built = _build(ctx, lambda out: quantize_int8(ctx, out, weight_bits=7))
    built.options.update(scheme=INT8_SCHEME, **int8_options(7), **quant_aware_options(ctx))
    return built


def build_fp32(ctx: BuildContext) -> BuiltArtifact:
    """The page with the fp32 graph (the fallback when int8 fails the gate)."""
    return _build(ctx, lambda out: shutil.copyfile(shared_fp32(ctx), out))


TARGET = register(
    Target(
        name="web",
        title="Web (onnxruntime-web)",
        aliases=("browser", "onnxruntime-web", "wasm"),
        # int8 first: when it fails the gate it must not remove the page files that fp32 installs after it.
        variants=(
            Variant("int8", f"{FOLDER}/model.int8.onnx", build_int8, calibrated=True),
            Variant("fp32", f"{FOLDER}/model.onnx", build_fp32),
        ),
        requires=(("onnx", "onnx", "the web target's ONNX graph"), ("onnxruntime", "onnx", "web target validation")),
        validation="twin: facederm.runtime's onnxruntime session on the page's model file; the browser itself in "
        "tests/test_web.py (headless Chromium)",
        metadata="ONNX metadata_props (facederm.card, labels, preprocessing), read by the page itself",
    )
)
