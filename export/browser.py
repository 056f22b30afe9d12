"""Drive the exported web page (``facederm-export --target web``) in a real headless Chromium.

Debian's ``chromium`` through Python ``playwright`` (``executable_path``: playwright's own browser download is never
used); the folder is served on 127.0.0.1 by :mod:`facederm.runtime.web_server`; images go through the page's test
hook ``window.facedermPredict``. ``tests/test_web.py`` and ``facederm-bench`` both call :func:`measure_in_browser`.
"""

from __future__ import annotations

import base64
import os
import shutil
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from facederm.runtime.errors import BackendUnavailableError, FacedermError
from facederm.runtime.web_server import WebServer, serve, web_root

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ENV = "FACEDERM_CHROMIUM"
#: Headless as root in a container; no GPU here (the page falls back to WebAssembly).
CHROMIUM_ARGS = ("--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu")
VIEWPORT = {"width": 412, "height": 780}  # a phone, for the screenshot

_PREDICT_JS = """async ([b64, tensor, clinical]) => {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return await window.facedermPredict(bytes.buffer, clinical === null ? { tensor } : { tensor, clinical });
}"""
_READY_JS = "async () => await window.facedermReady"


class BrowserUnavailableError(BackendUnavailableError):
    """Chromium or Python playwright is missing: browser measurements are skipped with this reason."""


def chromium_path() -> str | None:
    """The chromium executable to drive (``$FACEDERM_CHROMIUM`` first), or None."""
    explicit = os.environ.get(CHROMIUM_ENV)
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((found for name in CHROMIUM_CANDIDATES if (found := shutil.which(name))), None)


def unavailable_reason() -> str | None:
    """Why the browser cannot be driven here (None: it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is not installed (pip install 'facederm[dev]')"
    if chromium_path() is None:
        return f"no chromium executable (apt-get install chromium, or set ${CHROMIUM_ENV} to a Chromium/Chrome binary)"
    return None


class PageSession:
    """The page open in headless Chromium; ``info`` is what ``window.facedermReady`` resolved to."""

    def __init__(self, page: Any, server: WebServer, info: dict[str, Any], browser_version: str) -> None:
        self.page, self.server, self.info, self.browser_version = page, server, info, browser_version
        self.console: list[str] = []

    def predict(
        self, data: bytes, *, tensor: bool = False, clinical: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The page's own decode, resize and model on one file's bytes; ``tensor``: also its crop and input;
        ``clinical``: the answers (a model with clinical fields; None: the page's form, unanswered by default)."""
        answers = None if clinical is None else dict(clinical)
        result = self.page.evaluate(_PREDICT_JS, [base64.b64encode(data).decode("ascii"), tensor, answers])
        if tensor:
            size = int(self.info["preprocessing"]["crop"])
            result["crop"] = np.frombuffer(base64.b64decode(result["crop"]), np.uint8).reshape(size, size, 3)
            result["tensor"] = np.frombuffer(base64.b64decode(result["tensor"]), np.float32).reshape(1, 3, size, size)
        return result

    def go_offline(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Stop the server and reload: the service worker must serve everything."""
        controlled = self.page.evaluate("() => !!navigator.serviceWorker && !!navigator.serviceWorker.controller")
        self.server.stop()
        self.page.reload(wait_until="load", timeout=timeout_s * 1000)
        self.info = {**self.page.evaluate(_READY_JS), "controlled_before_reload": controlled}
        return self.info

    def screenshot(self, path: Path, image: Path | None = None) -> Path:
        """A PNG of the page; with ``image``, after choosing it through the real file input."""
        if image is not None:
            self.page.set_input_files("#photo", str(image))
            self.page.wait_for_selector("#output:not([hidden])", timeout=60_000)
            self.page.wait_for_function("() => document.getElementById('status').textContent === ''")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def open_page(
    web_dir: Path, *, model: str | None = None, ep: str = "wasm", threads: int | None = None, timeout_s: float = 120.0
) -> Iterator[PageSession]:
    """Serve ``web_dir`` on 127.0.0.1 and open its page (``model``: a file of the folder, default the page's choice;
    ``ep``: "wasm", "webgpu" or "auto"). Raises :class:`BrowserUnavailableError` when chromium or playwright is
    missing, :class:`FacedermError` when the page cannot load its model."""
    reason = unavailable_reason()
    if reason:
        raise BrowserUnavailableError(reason)
    from urllib.parse import urlencode

    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    query = {"model": model, "ep": None if ep == "auto" else ep, "threads": str(threads) if threads else None}
    query_text = urlencode({k: v for k, v in query.items() if v})
    server = serve(web_root(web_dir), port=0)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=list(CHROMIUM_ARGS))
            try:
                page = browser.new_context(viewport=VIEWPORT, service_workers="allow").new_page()
                console: list[str] = []
                page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
                page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
                url = server.url + "index.html" + (f"?{query_text}" if query_text else "")
                page.set_default_timeout(timeout_s * 1000)
                page.goto(url, wait_until="load")
                try:
                    info = page.evaluate(_READY_JS)
                except PlaywrightError as exc:
                    tail = f" (console: {'; '.join(console[-3:])})" if console else ""
                    raise FacedermError(
                        f"{url}: the page could not load its model: {exc.message.splitlines()[0]}{tail}"
                    ) from exc
                session = PageSession(page, server, info, browser.version)
                session.console = console
                yield session
            finally:
                browser.close()
    finally:
        server.stop()  # idempotent: go_offline may have stopped it already


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
    return {"n": len(values), "p50": p50, "p90": p90, "p99": p99, "mean": statistics.fmean(values), "min": min(values)}


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
    clinical: Sequence[Mapping[str, Any] | None] | None = None,
    offline: bool = False,
    screenshot: Path | None = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Predict each of ``images`` inside the web page of ``web_dir`` in headless Chromium.

    ``model``, ``ep``, ``threads``: as :func:`open_page`. ``warmup`` untimed runs on the first image, then each image
    ``repeats`` times; ``tensors``: each prediction also holds the page's ``crop`` and ``tensor``; ``clinical``: each
    image's answers for a model with clinical fields (None: the page's form, unanswered); ``offline``: then
    stop the server, reload and predict every image again (``offline``: ``info``, ``probabilities``);
    ``screenshot``: a PNG after choosing the first image through the file input.

    Returns ``browser``, ``info`` (the page's report: model file, bytes, backend, threads, labels, ...), ``load_ms``,
    ``model_bytes``, ``download_bytes``, ``predictions`` (per image: ``path``, ``probabilities``, ``ms``,
    ``preprocess_ms``, ``decoded``, ``draft_scale``, ``refer``), ``latency_ms`` / ``preprocess_ms`` (n, p50, p90,
    p99, mean, min over every timed run), ``console`` and ``wall_s``.
    """
    started = time.perf_counter()
    images = [Path(p) for p in images]
    if not images:
        raise FacedermError("measure_in_browser: no images given")
    datas = [p.read_bytes() for p in images]
    answers = list(clinical) if clinical is not None else [None] * len(images)
    if len(answers) != len(images):
        raise FacedermError(f"measure_in_browser: {len(answers)} clinical records for {len(images)} images")
    with open_page(web_dir, model=model, ep=ep, threads=threads, timeout_s=timeout_s) as session:
        info = dict(session.info)
        for _ in range(max(0, warmup)):
            session.predict(datas[0])
        predictions, latencies, prep = [], [], []
        for path, data, record in zip(images, datas, answers):
            runs = [session.predict(data, tensor=tensors and r == 0, clinical=record) for r in range(max(1, repeats))]
            latencies += [float(r["ms"]) for r in runs]
            prep += [float(r["preprocessMs"]) for r in runs]
            first = runs[0]
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
            offline_runs = (session.predict(data, clinical=record) for data, record in zip(datas, answers))
            probabilities = [[float(p) for p in run["probabilities"]] for run in offline_runs]
            out["offline"] = {"info": after, "probabilities": probabilities}
    out["wall_s"] = round(time.perf_counter() - started, 3)
    return out
