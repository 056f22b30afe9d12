"""facederm-web: the static server sends the headers onnxruntime-web's threads need and the right MIME types."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from facederm.runtime.web_server import ISOLATION_HEADERS, main, serve, web_root


def _folder(tmp_path: Path) -> Path:
    web = tmp_path / "export" / "web"
    (web / "ort").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><p>hi</p>")
    (web / "ort" / "x.wasm").write_bytes(b"\0asm\1\0\0\0")
    (web / "ort" / "x.mjs").write_text("export const x = 1;")
    (web / "app.js").write_text("console.log(1);")
    (web / "manifest.webmanifest").write_text("{}")
    (web / "model.onnx").write_bytes(b"\x08\x07")
    return web


def test_headers_and_mime_types(tmp_path: Path):
    web = _folder(tmp_path)
    with serve(tmp_path / "export", port=0) as server:  # an export dir: its web/ folder is served
        assert server.url.startswith("http://127.0.0.1:")
        types = {}
        for rel in ("index.html", "ort/x.wasm", "ort/x.mjs", "app.js", "manifest.webmanifest", "model.onnx"):
            with urllib.request.urlopen(server.url + rel) as response:
                assert response.read() == (web / rel).read_bytes()
                for key, value in ISOLATION_HEADERS.items():
                    assert response.headers[key] == value, (rel, key)
                types[rel] = response.headers["Content-Type"]
    assert types["ort/x.wasm"] == "application/wasm"  # streaming compilation needs it
    assert types["ort/x.mjs"] == types["app.js"] == "text/javascript"
    assert types["manifest.webmanifest"] == "application/manifest+json"
    assert types["index.html"].startswith("text/html")
    assert server.stopped


def test_cli_errors_are_one_line_and_non_zero(tmp_path: Path):
    result = CliRunner().invoke(main, [str(tmp_path / "nothing")])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "facederm-web: error:" in lines[0] and "index.html" in lines[0]
    with pytest.raises(Exception):
        web_root(tmp_path)


def test_busy_port_is_a_clear_error(tmp_path: Path):
    web = _folder(tmp_path)
    with serve(web, port=0) as server:
        result = CliRunner().invoke(main, [str(web), "--port", str(server.port)])
    assert result.exit_code != 0 and "in use" in result.output and "--port" in result.output
