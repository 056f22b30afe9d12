"""facederm-data inspect: the JSON a script relies on, the table a person reads, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from facederm.training.cli_data import main
from facederm.training.data_inspect import inspect_data

PAD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pad-ufes-20-subset"
SPLITS = ("train", "val", "test")


def run(*args: str):
    return CliRunner().invoke(main, ["inspect", *args])


def check_consistent(summary: dict) -> None:
    assert summary["shared_patients"] == 0
    assert sum(summary["classes"].values()) == summary["images"]
    assert summary["sites"]["face"] + summary["sites"]["other"] == summary["images"]
    assert sum(summary["splits"][n]["images"] for n in SPLITS) == summary["images"]
    assert sum(summary["splits"][n]["patients"] for n in SPLITS) == summary["patients"]
    for label, n in summary["classes"].items():
        assert sum(summary["splits"][s]["classes"][label] for s in SPLITS) == n
    assert set(summary["class_weights"]) == set(summary["classes"])
    assert {"count", "by_kind", "items"} <= set(summary["problems"])


def test_json_on_synthetic_data():
    result = run("synthetic:120,size=32", "--json", "--seed", "2")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["synthetic"] is True and summary["images"] == 120
    check_consistent(summary)
    assert summary == inspect_data("synthetic:120,size=32", seed=2)  # the CLI is the library


def test_site_filter_keeps_only_face_images():
    summary = json.loads(run("synthetic:120,size=32", "--json", "--site", "face").output)
    assert summary["sites"]["other"] == 0 and 0 < summary["images"] < 120
    check_consistent(summary)


def test_table_says_synthetic():
    result = run("synthetic:60,size=32")
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output and "train" in result.output


def test_verify_reports_an_unreadable_image_and_strict_fails_in_one_line(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        shutil.copy(Path(__file__), tmp_path / label / "ok.png")  # not an image
    summary = json.loads(run(f"folder:{tmp_path}", "--json").output)
    assert summary["problems"]["count"] == 0  # existence only without --verify
    result = run(f"folder:{tmp_path}", "--verify", "--strict")
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facederm-data: error: unreadable_image") and "ok.png" in lines[0]


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    result = run(f"pad-ufes-20:{tmp_path / 'nowhere'}")
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        f"facederm-data: error: pad-ufes-20:{tmp_path / 'nowhere'}: no such directory"
    ]
    debug = run(f"pad-ufes-20:{tmp_path / 'nowhere'}", "--debug")
    assert debug.exit_code != 0 and debug.exception is not None


def test_console_script_is_installed():
    exe = shutil.which("facederm-data")
    if exe is None:
        pytest.skip("facederm-data is not on PATH (package not installed)")
    done = subprocess.run(
        [exe, "inspect", "synthetic:30,size=16", "--json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["images"] == 30


@pytest.mark.realdata
def test_json_on_pad_ufes_20():
    if not (PAD_DIR / "metadata.csv").is_file():
        pytest.skip(f"{PAD_DIR} is absent")
    result = run(f"pad-ufes-20:{PAD_DIR}", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    check_consistent(summary)
    assert (summary["images"], summary["patients"], len(summary["classes"])) == (541, 425, 6)
    assert summary["sites"]["face"] == 143
    assert summary["synthetic"] is False and summary["problems"]["count"] == 0
    assert all(summary["splits"][n]["images"] > 0 for n in SPLITS)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "data.png"
    result = run("synthetic:60,size=16", "--plot", str(out))
    assert result.exit_code == 0, result.output
    from PIL import Image

    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 200
    assert [p.name for p in tmp_path.iterdir()] == ["data.png"]  # no temporary file left behind
