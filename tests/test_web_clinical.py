"""The page's clinical encoding (export/web/clinical.js) equals facederm.runtime's, checked without a browser under node.

The same schema and records go through ``ClinicalSchema.encode_one`` and ``encodeClinical``: numbers (as numbers and
as text), booleans (true/false, yes/no, 1/0), categories in any case, missing answers (absent, null, NaN, the
schema's tokens such as ``UNK``) must give the same float32 vector; a field the schema lacks and a value that does
not fit its field are refused by both, naming the field. Skipped when node is not installed.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from facederm.runtime.clinical import ClinicalField, ClinicalSchema
from facederm.runtime.errors import FacedermError

CLINICAL_JS = Path(__file__).resolve().parents[1] / "export" / "web" / "clinical.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

RUNNER = """
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const clin = await import(pathToFileURL(process.argv[2]).href);
const { schema, records } = JSON.parse(readFileSync(process.argv[3], "utf8"));
const out = records.map((r) => {
  const record = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v === "__NaN__" ? NaN : v]));
  try { return { vector: Array.from(clin.encodeClinical(schema, record)) }; }
  catch (exc) { return { error: exc.message }; }
});
writeFileSync(process.argv[4], JSON.stringify({ out, width: clin.clinicalWidth(schema) }));
"""

SCHEMA = ClinicalSchema(
    (
        ClinicalField("age", "number", mean=56.0, std=19.2, observed=10),
        ClinicalField("gender", "category", categories=("FEMALE", "MALE"), observed=9),
        ClinicalField("bleed", "bool", observed=8),
        ClinicalField("region", "category", categories=("FACE", "NOSE", "CHEST"), observed=10),
        ClinicalField("diameter_1", "number", mean=11.5, std=7.25, observed=6),
    )
)
GOOD = [
    {},
    {"age": 67, "gender": "MALE", "bleed": True, "region": "NOSE", "diameter_1": 12.5},
    {"age": "67", "gender": "female", "bleed": "yes", "region": " face ", "diameter_1": "3e1"},
    {"age": 18.25, "bleed": "no", "region": "Chest"},
    {"age": None, "gender": "UNK", "bleed": "", "region": "n/a", "diameter_1": "__NaN__"},
    {"bleed": 1, "diameter_1": -4},
    {"bleed": 0, "age": "  41 "},
    {"bleed": "TRUE", "gender": "Male"},
]
BAD = [
    ({"biopsed": True}, "biopsed"),
    ({"agee": 3}, "agee"),
    ({"age": "old"}, "age"),
    ({"age": True}, "age"),
    ({"bleed": "sometimes"}, "bleed"),
    ({"region": "ELBOW"}, "region"),
]


def _node(tmp_path: Path, records: list[dict]) -> dict:
    runner, job, out = tmp_path / "run.mjs", tmp_path / "job.json", tmp_path / "out.json"
    runner.write_text(RUNNER)
    job.write_text(json.dumps({"schema": SCHEMA.to_dict(), "records": records}))
    subprocess.run([NODE, str(runner), str(CLINICAL_JS), str(job), str(out)], check=True, timeout=120)
    return json.loads(out.read_text())


def _with_nan(record: dict) -> dict:
    return {k: (math.nan if v == "__NaN__" else v) for k, v in record.items()}


def test_the_page_encodes_answers_as_the_runtime_does(tmp_path: Path):
    found = _node(tmp_path, GOOD)
    assert found["width"] == SCHEMA.width
    for record, page in zip(GOOD, found["out"]):
        assert "error" not in page, (record, page)
        expected = SCHEMA.encode_one(_with_nan(record))
        np.testing.assert_array_equal(np.asarray(page["vector"], dtype=np.float32), expected, err_msg=str(record))
    # Not all-missing by accident: the second record answers every field (no indicator set).
    assert sum(SCHEMA.encode_one(GOOD[1])[list(SCHEMA.indicator_columns)]) == 0


@pytest.mark.parametrize(("record", "field"), BAD)
def test_the_page_refuses_what_the_runtime_refuses_naming_the_field(tmp_path: Path, record: dict, field: str):
    page = _node(tmp_path, [record])["out"][0]
    assert "error" in page and f'"{field}"' in page["error"], page
    with pytest.raises(FacedermError, match=field):
        SCHEMA.encode_one(record)
