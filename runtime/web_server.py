"""facederm-web: serve an exported web folder (``facederm-export RUN --target web``) on this machine.

A static file server from the standard library, with what onnxruntime-web needs: the cross-origin isolation
headers (COOP + COEP, so the page may use SharedArrayBuffer and therefore WebAssembly threads), the right MIME
types for ``.wasm`` (streaming compilation refuses anything but ``application/wasm``) and ``.mjs``, and
``Cache-Control: no-cache`` so a re-export is picked up (the page's service worker keeps it offline).
Any other static host works too; without these headers the page runs single-threaded.

From Python: ``with serve(folder, port=0) as server: print(server.url)``.
"""

from __future__ import annotations

import errno
import functools
import http.server
import threading
from pathlib import Path
from typing import Any

import click

from .cli_support import debug_option, one_line_errors
from .errors import ArtifactError, ConfigError

#: Where ``facederm-export --target web`` writes the page inside an export dir.
WEB_FOLDER = "web"
DEFAULT_PORT = 8000
DEFAULT_HOST = "127.0.0.1"

MIME_TYPES = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".onnx": "application/octet-stream",
    ".ort": "application/octet-stream",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
    ".png": "image/png",
}

#: Sent with every response: threads need a cross-origin isolated page.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}
    quiet = True

    def end_headers(self) -> None:
        for key, value in ISOLATION_HEADERS.items():
            self.send_header(key, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)


class WebServer:
    """A running server (a background thread); ``url`` is its address, ``stop()`` ends it."""

    def __init__(self, directory: Path, host: str, port: int, quiet: bool = True) -> None:
        handler = type("Handler", (_Handler,), {"quiet": quiet})
        try:
            self.httpd = http.server.ThreadingHTTPServer(
                (host, port), functools.partial(handler, directory=str(directory))
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is in use; pick another with --port") from exc
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self.httpd.daemon_threads = True
        self.directory = directory
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None
        self.stopped = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> WebServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="facederm-web", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving and release the port (a page reloaded afterwards is offline); idempotent."""
        if self.stopped:
            return
        self.stopped = True
        if self._thread is not None:
            self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def web_root(path: str | Path) -> Path:
    """The folder holding the page: ``path`` itself, or the ``web/`` folder of an export dir."""
    path = Path(path)
    if (path / "index.html").is_file():
        return path
    if (path / WEB_FOLDER / "index.html").is_file():
        return path / WEB_FOLDER
    raise ArtifactError(
        f"{path}: no index.html here or in {WEB_FOLDER}/; export one with facederm-export RUN --target web --out DIR"
    )


def serve(path: str | Path, *, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, quiet: bool = True) -> WebServer:
    """Serve ``path`` (a web folder or an export dir) in a background thread; ``port=0`` picks a free port."""
    return WebServer(web_root(path), host, port, quiet=quiet).start()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535), help="TCP port (0: any free one)."
)
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to listen on; 0.0.0.0 lets a phone on the same network open it (plain HTTP there: "
    "no offline mode, one thread; use an HTTPS static host for those).",
)
@click.option("--log", is_flag=True, help="Log every request.")
@debug_option()
def main(directory: Path, port: int, host: str, log: bool, debug: bool) -> None:
    """Serve the web page of an export (DIRECTORY: the export dir or its web/ folder) with the headers
    onnxruntime-web's threads need. Predictions run in the browser; nothing is uploaded.
    Output is decision support for clinicians, not a diagnosis."""
    with one_line_errors("facederm-web", debug):
        server = WebServer(web_root(directory), host, port, quiet=not log)
        click.echo(f"Serving {server.directory} at {server.url} (cross-origin isolated; Ctrl+C to stop)")
        if host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(f"On a phone on this network: http://<this computer's address>:{server.port}/")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            click.echo("stopped")
        finally:
            server.httpd.server_close()


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["ISOLATION_HEADERS", "MIME_TYPES", "WebServer", "serve", "web_root", "main"]
