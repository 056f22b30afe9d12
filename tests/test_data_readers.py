"""Every reader, and every data problem in lenient (skip and count) and strict (raise) mode."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facederm.runtime.errors import ConfigError, DataError
from facederm.training.data import PROBLEM_KINDS, open_dataset, parse_spec

PAD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pad-ufes-20-subset"
PAD_COLUMNS = ["patient_id", "lesion_id", "age", "region", "diagnostic", "img_id", "biopsed"]


def write_png(path: Path, color=(200, 150, 120), size=(12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), color, np.uint8)).save(path)
    return path


def write_pad(root: Path, rows: list[dict], image_dir_of=lambda i: "images") -> Path:
    """A PAD-UFES-20 layout: metadata.csv (official column names) + images in ``image_dir_of(row index)``."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PAD_COLUMNS)
        writer.writeheader()
        for i, row in enumerate(rows):
            full = {"age": "60", "biopsed": "True", **row}
            no_file = full.pop("_no_file", False)
            writer.writerow(full)
            if not no_file and full["img_id"]:
                write_png(root / image_dir_of(i) / full["img_id"], color=(10 * i % 255, 100, 100))
    return root


def pad_row(patient: int, label: str, region: str = "ARM", n: int = 0, **extra) -> dict:
    return {
        "patient_id": f"PAT_{patient}",
        "lesion_id": str(patient * 10),
        "region": region,
        "diagnostic": label,
        "img_id": f"PAT_{patient}_{patient * 10}_{n}.png",
        **extra,
    }


GOOD_ROWS = [
    pad_row(1, "ACK", "FACE"),
    pad_row(1, "ACK", "FACE", 1),
    pad_row(2, "SEK", "NOSE"),
    pad_row(3, "BCC", "BACK"),
    pad_row(4, "NEV", "arm"),
    pad_row(5, "MEL", "EAR"),
    pad_row(6, "SCC", "LIP"),
]


# --- PAD-UFES-20 ---------------------------------------------------------------------------------
def test_pad_official_layout_maps_codes_and_regions(tmp_path):
    root = write_pad(tmp_path / "pad", GOOD_ROWS)
    ds = open_dataset(f"pad-ufes-20:{root}")
    assert len(ds) == 7 and ds.report.count == 0
    assert ds.labels == ("AK", "BCC", "MEL", "NEV", "SCC", "SK")
    by_id = {s.image_id: s for s in ds.samples}
    first = by_id["PAT_1_10_0.png"]
    assert (first.label, first.patient_id, first.lesion_id, first.region) == ("AK", "PAT_1", "10", "FACE")
    assert by_id["PAT_4_40_0.png"].region == "ARM"  # upper-cased
    assert not ds.synthetic
    image = ds.load_rgb(first)
    assert image.dtype == np.uint8 and image.shape == (10, 12, 3)


@pytest.mark.parametrize("layout", ["images/imgs_part_{k}", "imgs_part_{k}", "images/imgs_part_{k}/imgs_part_{k}"])
def test_pad_publisher_zip_layouts_find_images_in_every_part(tmp_path, layout):
    root = write_pad(tmp_path / "pad", GOOD_ROWS, image_dir_of=lambda i: layout.format(k=i % 3 + 1))
    ds = open_dataset(f"pad-ufes-20:{root}")
    assert len(ds) == len(GOOD_ROWS) and ds.report.count == 0
    assert {Path(s.path).parent.name for s in ds.samples} == {"imgs_part_1", "imgs_part_2", "imgs_part_3"}


def test_bare_directory_with_metadata_is_pad(tmp_path):
    root = write_pad(tmp_path / "pad", GOOD_ROWS)
    assert parse_spec(str(root)) == ("pad-ufes-20", str(root))
    assert len(open_dataset(str(root))) == 7


def test_label_set_study_drops_classes_it_does_not_have(tmp_path):
    root = write_pad(tmp_path / "pad", GOOD_ROWS)
    ds = open_dataset(f"pad-ufes-20:{root}", label_set="study")
    assert set(ds.labels) == {"AK", "BCC", "SK", "SCC"}
    assert ds.report.by_kind() == {"unknown_label": 2}  # MEL and NEV, counted, not silent


def test_pad_without_metadata_or_columns_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="metadata.csv"):
        open_dataset(f"pad-ufes-20:{tmp_path / 'empty'}")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metadata.csv").write_text("patient_id,img_id\nPAT_1,a.png\n")
    with pytest.raises(DataError, match="diagnostic"):
        open_dataset(f"pad-ufes-20:{tmp_path / 'bad'}")
    with pytest.raises(DataError, match="no such directory"):
        open_dataset(f"pad-ufes-20:{tmp_path / 'missing'}")


@pytest.mark.realdata
def test_pad_shared_subset_counts():
    if not (PAD_DIR / "metadata.csv").is_file():
        pytest.skip(f"{PAD_DIR} is absent")
    ds = open_dataset(f"pad-ufes-20:{PAD_DIR}")
    assert len(ds) == 541 and len(ds.patients) == 425 and ds.report.count == 0
    assert len(ds.labels) == 6
    assert sum(s.is_face() for s in ds.samples) == 143


# --- folder and csv ------------------------------------------------------------------------------
def test_folder_reader_one_class_per_subfolder(tmp_path):
    for label, n in (("rash", 2), ("acne", 3)):
        for i in range(n):
            write_png(tmp_path / "set" / label / f"{i}.png")
    (tmp_path / "set" / "acne" / "notes.txt").write_text("not an image")
    (tmp_path / "set" / ".hidden").mkdir()
    ds = open_dataset(f"folder:{tmp_path / 'set'}")
    assert ds.labels == ("acne", "rash")
    assert len(ds) == 5
    assert len(ds.patients) == 5  # no patient ids: one patient per image ...
    assert any("split is by image" in note for note in ds.report.notes)  # ... and the report says so
    assert {s.image_id for s in ds.samples} >= {"acne/0.png", "rash/0.png"}  # same file name, two classes: fine


def test_folder_with_registered_codes_uses_that_set(tmp_path):
    write_png(tmp_path / "set" / "ACK" / "a.png")
    write_png(tmp_path / "set" / "SEK" / "b.png")
    ds = open_dataset(f"folder:{tmp_path / 'set'}")
    assert ds.label_set.name == "pad" and ds.labels == ("AK", "SK")


def test_csv_reader_relative_paths_and_optional_columns(tmp_path):
    write_png(tmp_path / "data" / "img" / "a.png")
    write_png(tmp_path / "data" / "img" / "b.png")
    absolute = write_png(tmp_path / "elsewhere" / "c.png")
    (tmp_path / "data" / "list.csv").write_text(
        "path,label,patient_id,region,lesion_id\n"
        "img/a.png,BCC,P1,nose,L1\n"
        f"img/b.png,SEK,P1,back,L2\n"
        f"{absolute},ack,P2,,L3\n"
    )
    ds = open_dataset(f"csv:{tmp_path / 'data' / 'list.csv'}")
    assert [(s.label, s.patient_id, s.region, s.lesion_id) for s in ds.samples] == [
        ("BCC", "P1", "NOSE", "L1"),
        ("SK", "P1", "BACK", "L2"),
        ("AK", "P2", "", "L3"),
    ]
    assert Path(ds.samples[0].path) == tmp_path / "data" / "img" / "a.png"
    assert ds.report.count == 0 and not ds.report.notes


def test_csv_without_patient_column_splits_by_image_and_says_so(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    (tmp_path / "l.csv").write_text("path,label\na.png,x\nb.png,y\n")
    ds = open_dataset(str(tmp_path / "l.csv"))  # a bare .csv path works too
    assert [s.patient_id for s in ds.samples] == ["a.png", "b.png"]
    assert any("split is by image" in note for note in ds.report.notes)
    with pytest.raises(DataError, match="label"):
        (tmp_path / "m.csv").write_text("file,diagnosis\na.png,x\n")
        open_dataset(f"csv:{tmp_path / 'm.csv'}")


def test_unknown_spec_lists_the_readers():
    with pytest.raises(ConfigError) as info:
        open_dataset("isic:/somewhere")
    for prefix in ("pad-ufes-20:", "folder:", "csv:", "synthetic:"):
        assert prefix in str(info.value)


# --- problems: one bad sample of each kind ---------------------------------------------------------
def _bad_pad(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """GOOD_ROWS plus one row with problem ``kind``; returns the root and the bad item's name."""
    if kind == "missing_file":
        bad = pad_row(9, "BCC", _no_file=True)
    elif kind == "unknown_label":
        bad = pad_row(9, "XYZ")
    elif kind == "duplicate_image_id":
        bad = dict(GOOD_ROWS[2], patient_id="PAT_9")
    elif kind == "missing_patient_id":
        bad = pad_row(9, "BCC", patient_id="")
    elif kind == "bad_row":
        bad = pad_row(9, "BCC", img_id="")
    elif kind == "unreadable_image":
        bad = pad_row(9, "BCC")
    root = write_pad(tmp_path / kind, GOOD_ROWS + [bad])
    if kind == "unreadable_image":
        (root / "images" / bad["img_id"]).write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    return root, bad["img_id"] or "line"


@pytest.mark.parametrize("kind", PROBLEM_KINDS)
def test_each_problem_is_skipped_and_counted_when_lenient(tmp_path, kind):
    root, item = _bad_pad(tmp_path, kind)
    ds = open_dataset(f"pad-ufes-20:{root}", verify=kind == "unreadable_image")
    assert len(ds) == len(GOOD_ROWS)
    assert ds.report.by_kind() == {kind: 1}
    assert item in ds.report.problems[0].item or item in ds.report.problems[0].message


@pytest.mark.parametrize("kind", PROBLEM_KINDS)
def test_each_problem_raises_when_strict(tmp_path, kind):
    root, item = _bad_pad(tmp_path, kind)
    with pytest.raises(DataError) as info:
        open_dataset(f"pad-ufes-20:{root}", strict=True, verify=kind == "unreadable_image")
    assert kind in str(info.value) and item in str(info.value)


def test_unreadable_images_are_only_found_by_verify(tmp_path):
    root, _ = _bad_pad(tmp_path, "unreadable_image")
    assert open_dataset(f"pad-ufes-20:{root}").report.count == 0  # existence only: cheap


def test_no_usable_image_is_an_error_naming_the_first_problem(tmp_path):
    root = write_pad(tmp_path / "pad", [pad_row(1, "XYZ")])
    with pytest.raises(DataError, match="no usable images.*unknown_label"):
        open_dataset(f"pad-ufes-20:{root}")
