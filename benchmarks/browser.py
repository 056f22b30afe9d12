"""Drive the exported web page (``facederm-export --target web``) in a real headless Chromium.

One module for everything that talks to the page: launch Debian's ``chromium`` through Python ``playwright``
(``executable_path``: playwright's own browser download is never used), serve the folder on 127.0.0.1 with
:mod:`facederm.runtime.web_server`, load the page, feed it image files through its test hook
(``window.facedermPredict``) and read back the probabilities, the per-image latency measured inside the page,
the model's load time and the bytes downloaded. ``tests/test_web.py`` and ``facederm-bench`` both call
:func:`measure_in_browser`.
"""

from __future__ import annotations

import base64
import os
import shutil
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from facederm.runtime.errors import BackendUnavailableError, FacedermError
from facederm.runtime.web_server import WebServer, serve, web_root

#: Where a chromium binary is looked for (``$FACEDERM_CHROMIUM`` first).
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ENV = "FACEDERM_CHROMIUM"
#: Flags for a headless run as root in a container; no GPU here (the page falls back to WebAssembly).
CHROMIUM_ARGS = ("--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu")
#: A phone-sized viewport for the screenshot.
VIEWPORT = {"width": 412, "height": 780}

_PREDICT_JS = """async ([b64, tensor]) => {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return await window.facedermPredict(bytes.buffer, { tensor });
}"""
_READY_JS = "async () => await window.facedermReady"


class BrowserUnavailableError(BackendUnavailableError):
    """Chromium or Python playwright is missing: the browser measurements are skipped with this reason."""


def chromium_path() -> str | None:
    """The chromium executable to drive, or None."""
    explicit = os.environ.get(CHROMIUM_ENV)
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def unavailable_reason() -> str | None:
    """Why the browser cannot be driven here (None: it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is not installed (pip install 'facederm[dev]')"
    if chromium_path() is None:
        return (
            "no chromium executable (apt-get install chromium chromium-driver, or set "
            f"${CHROMIUM_ENV} to a Chromium/Chrome binary)"
        )
    return None


class PageSession:
    """The page open in headless Chromium: ``info`` is what ``window.facedermReady`` resolved to."""

    def __init__(self, page: Any, server: WebServer, url: str, info: dict[str, Any], browser_version: str) -> None:
        self.page = page
        self.server: WebServer | None = server
        self.url = url
        self.info = info
        self.browser_version = browser_version
        self.console: list[str] = []

    def predict(self, data: bytes, *, tensor: bool = False) -> dict[str, Any]:
        """Run the page's own decode, resize and model on one file's bytes; ``tensor``: also the input."""
        result = self.page.evaluate(_PREDICT_JS, [base64.b64encode(data).decode("ascii"), tensor])
        if tensor:
            size = int(self.info["preprocessing"]["crop"])
            result["crop"] = np.frombuffer(base64.b64decode(result["crop"]), np.uint8).reshape(size, size, 3)
            result["tensor"] = np.frombuffer(base64.b64decode(result["tensor"]), np.float32).reshape(1, 3, size, size)
        return result

    def go_offline(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Stop the server (nothing answers any more) and reload: the service worker must serve everything."""
        controlled = self.page.evaluate("() => !!navigator.serviceWorker && !!navigator.serviceWorker.controller")
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.page.reload(wait_until="load", timeout=timeout_s * 1000)
        self.info = self.page.evaluate(_READY_JS)
        self.info["controlled_before_reload"] = controlled
        return self.info

    def screenshot(self, path: Path, image: Path | None = None) -> Path:
        """Save a PNG of the page; with ``image``, after choosing it through the real file input."""
        if image is not None:
            self.page.set_input_files("#photo", str(image))
            self.page.wait_for_selector("#output:not([hidden])", timeout=60_000)
            self.page.wait_for_function("() => document.getElementById('status').textContent === ''")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def open_page(
    web_dir: Path,
    *,
    model: str | None = None,
    ep: str = "wasm",
    threads: int | None = None,
    timeout_s: float = 120.0,
    extra_query: dict[str, str] | None = None,
) -> Iterator[PageSession]:
    """Serve ``web_dir`` on 127.0.0.1 and open its page in headless Chromium (``model``: a file of the folder,
    default: the page's own choice; ``ep``: "wasm", "webgpu" or "auto"). Raises :class:`BrowserUnavailableError`
    when chromium or playwright is missing, :class:`FacedermError` when the page cannot load its model."""
    reason = unavailable_reason()
    if reason:
        raise BrowserUnavailableError(reason)
    from urllib.parse import urlencode

    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    query = {
        k: v
        for k, v in (
            ("model", model),
            ("ep", None if ep == "auto" else ep),
            ("threads", str(threads) if threads else None),
        )
        if v
    }
    query.update(extra_query or {})
    server = serve(web_root(web_dir), port=0)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=list(CHROMIUM_ARGS))
            try:
                context = browser.new_context(viewport=VIEWPORT, service_workers="allow")
                page = context.new_page()
                console: list[str] = []
                page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
                page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
                url = server.url + "index.html" + (f"?{urlencode(query)}" if query else "")
                page.set_default_timeout(timeout_s * 1000)
                page.goto(url, wait_until="load")
                try:
                    info = page.evaluate(_READY_JS)
                except PlaywrightError as exc:
                    tail = "; ".join(console[-3:])
                    raise FacedermError(
                        f"{url}: the page could not load its model: {exc.message.splitlines()[0]}"
                        f"{' (console: ' + tail + ')' if tail else ''}"
                    ) from exc
                session = PageSession(page, server, url, info, browser.version)
                session.console = console
                yield session
            finally:
                browser.close()
    finally:
        server.stop()  # idempotent: go_offline may have stopped it already


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pct(q: float) -> float:
        return float(np.percentile(ordered, q))

    return {
        "n": len(ordered),
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "mean": float(statistics.fmean(ordered)),
        "min": float(ordered[0]),
    }


def measure_in_browser(
    web_dir: Path,
    images: Sequence[Path],
    *,
    model: str | None = None,
    ep: str = "wasm",
    threads: int | None = None,
    warmup: int = 1,
    repeats: int = 1,
    tensors: bool = False,
    offline: bool = False,
    screenshot: Path | None = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Load the web page of ``web_dir`` in headless Chromium and predict each of ``images`` inside it.

    ``model``: which model file of the folder (``model.onnx``, ``model.int8.onnx``; default: the page's choice,
    the smallest present). ``ep``: "wasm" (default), "webgpu" or "auto" (WebGPU when the browser offers an
    adapter). ``threads``: WebAssembly threads (default: the page's, up to 4 when cross-origin isolated).
    ``warmup`` untimed runs on the first image, then each image ``repeats`` times. ``tensors``: return each
    image's uint8 crop and float32 input tensor as the page built them. ``offline``: afterwards stop the
    server, reload (service worker) and predict every image once more. ``screenshot``: save a PNG after
    choosing the first image through the page's file input.

    Returns a dict: ``browser`` (version), ``info`` (what the page reports: model file, bytes, backend,
    threads, crossOriginIsolated, labels, preprocessing, onnxruntime-web version), ``load_ms`` (page load to
    session ready, the model download included), ``model_bytes``, ``download_bytes`` (what the page fetched),
    ``predictions`` (per image: ``path``, ``probabilities``, ``ms`` = model run, ``preprocess_ms``, and with
    ``tensors`` ``crop``/``tensor`` arrays), ``latency_ms`` / ``preprocess_ms`` (n, p50, p90, p99, mean, min
    over every timed run), ``wall_s``, and with ``offline`` ``offline`` (``info`` after the reload and
    ``probabilities`` per image). Raises :class:`BrowserUnavailableError` when chromium/playwright is missing.
    """
    started = time.perf_counter()
    images = [Path(p) for p in images]
    if not images:
        raise FacedermError("measure_in_browser: no images given")
    datas = [p.read_bytes() for p in images]
    with open_page(web_dir, model=model, ep=ep, threads=threads, timeout_s=timeout_s) as session:
        info = dict(session.info)
        for _ in range(max(0, warmup)):
            session.predict(datas[0])
        predictions, latencies, prep = [], [], []
        for path, data in zip(images, datas):
            first: dict[str, Any] | None = None
            for r in range(max(1, repeats)):
                result = session.predict(data, tensor=tensors and r == 0)
                latencies.append(float(result["ms"]))
                prep.append(float(result["preprocessMs"]))
                first = first or result
            assert first is not None
            entry = {
                "path": str(path),
                "probabilities": [float(p) for p in first["probabilities"]],
                "ms": float(first["ms"]),
                "preprocess_ms": float(first["preprocessMs"]),
                "decoded": first.get("decoded"),
                "draft_scale": first.get("draftScale"),
                "refer": first.get("refer"),
            }
            if tensors:
                entry["crop"], entry["tensor"] = first["crop"], first["tensor"]
            predictions.append(entry)
        out: dict[str, Any] = {
            "browser": f"Chromium {session.browser_version}",
            "info": info,
            "load_ms": float(info["loadMs"]),
            "model_bytes": int(info["bytes"]),
            "download_bytes": int(info.get("downloadBytes") or 0),
            "predictions": predictions,
            "latency_ms": _stats(latencies),
            "preprocess_ms": _stats(prep),
            "console": list(session.console),
        }
        if screenshot is not None:
            out["screenshot"] = str(session.screenshot(Path(screenshot), images[0]))
        if offline:
            after = session.go_offline(timeout_s)
            out["offline"] = {
                "info": after,
                "probabilities": [[float(p) for p in session.predict(data)["probabilities"]] for data in datas],
            }
    out["wall_s"] = round(time.perf_counter() - started, 3)
    return out


__all__ = [
    "BrowserUnavailableError",
    "PageSession",
    "chromium_path",
    "measure_in_browser",
    "open_page",
    "unavailable_reason",
]
