"""facederm-predict: table and JSON output, folders, exit codes, one-line errors, backend listing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from runtime_builders import RuntimeExport

from facederm.runtime.card import NOT_A_DIAGNOSIS
from facederm.runtime.cli import main


def invoke(*args: str | Path):
    return CliRunner(env={"COLUMNS": "250"}).invoke(main, [str(a) for a in args])  # wide: paths on one line


def test_table_output_lists_every_image_and_the_note(runtime_export: RuntimeExport) -> None:
    result = invoke(runtime_export.root, *runtime_export.images[:2])
    assert result.exit_code == 0, result.output
    for label in ("label", "top-k", "refer"):
        assert label in result.stdout
    for image in runtime_export.images[:2]:
        assert str(image) in result.stdout
    assert NOT_A_DIAGNOSIS in result.stdout


def test_json_lines_walk_folders_and_match_python(runtime_export: RuntimeExport, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, image in enumerate(runtime_export.images[:3]):
        shutil.copy(image, (folder / "sub" if i else folder) / image.name)
    (folder / "notes.txt").write_text("not an image")
    result = invoke(runtime_export.root, folder, "--json", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3 and all(set(r) == {"input", "label", "probabilities", "refer"} for r in records)
    assert NOT_A_DIAGNOSIS in result.stderr and NOT_A_DIAGNOSIS not in result.stdout
    from facederm.runtime import load

    expected = load(runtime_export.root).predict(records[0]["input"])
    assert records[0]["label"] == expected.label


def test_a_bad_input_gives_an_error_record_and_exit_1(runtime_export: RuntimeExport, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"garbage")
    result = invoke(runtime_export.root, runtime_export.images[0], broken, "--json")
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["label"] and set(records[1]) == {"input", "error"} and "broken.png" in records[1]["error"]
    table = invoke(runtime_export.root, broken, runtime_export.images[0])
    assert table.exit_code == 1 and "error" in table.stdout


def test_an_empty_folder_is_reported(runtime_export: RuntimeExport, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke(runtime_export.root, tmp_path / "empty")
    assert result.exit_code == 1 and "no images found" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}", "{image}"], "no such export dir"),
        (["{root}", "{image}", "--backend", "coreml"], "coreml"),
        (["{root}", "{image}", "--backend", "nope"], "unknown backend"),
    ],
)
def test_fatal_errors_are_one_line_without_traceback(
    runtime_export: RuntimeExport, tmp_path: Path, args: list[str], message: str
) -> None:
    values = {"missing": tmp_path / "missing", "image": runtime_export.images[0], "root": runtime_export.root}
    result = invoke(*[a.format(**values) for a in args])
    assert result.exit_code == 2
    assert result.stderr.startswith("facederm-predict: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_debug_shows_the_exception(runtime_export: RuntimeExport, tmp_path: Path) -> None:
    result = invoke(tmp_path / "missing", runtime_export.images[0], "--debug")
    assert result.exit_code != 0 and result.exception is not None


def test_list_backends_and_self_test(runtime_export: RuntimeExport) -> None:
    listing = invoke("--list-backends")
    assert listing.exit_code == 0
    for name in ("onnxruntime", "openvino", "coreml", "tensorrt"):
        assert name in listing.stdout
    checked = invoke(runtime_export.root, "--self-test", "--backend", "openvino")
    assert checked.exit_code == 0 and "self-test passed" in checked.stderr


def test_missing_images_is_a_usage_error(runtime_export: RuntimeExport) -> None:
    assert invoke(runtime_export.root).exit_code == 2
