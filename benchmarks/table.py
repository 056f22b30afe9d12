"""The terminal table (rich): one line per row, the columns people compare first, at most 120 columns wide.

What does not fit goes to ``results.csv`` and ``report.md``, which keep everything: min-max spreads, p90 / p99,
the delta CIs, per-class recall, full reasons. Rows for a precision a target does not have (the export's
"coreml has no fp32") are not rows here; a row skipped or failed for a real reason keeps its one line, and
its reason is one short line under the table (:func:`reasons`; rows with the same reason share a line).

Compressed rows (fp16, int8, palettized ...) show their speed-up over the same backend's fp32 row and the
export gate's verdict side by side.
"""

from __future__ import annotations

import re

from rich import box
from rich.table import Table

from facederm.runtime import backends as runtime_backends

from .plan import BASELINE_KEY
from .report import fp32_reference, num, pct, points, speedup, stat
from .schema import BenchResults, Row

#: Every line of the table, and of the reasons printed under it ("  * " + reason), fits this many columns.
WIDTH = 120
REASON_WIDTH = WIDTH - 4

#: The backend that runs an artifact of a target natively: ``@backend`` is shown only for another one
#: (TensorRT's ONNX graph run by onnxruntime: ``tensorrt:int8@ort``).
_HOME_BACKEND = {
    "torch": "torch",
    "onnx": "onnxruntime",
    "onnx-mobile": "onnxruntime",
    "openvino": "openvino",
    "coreml": "coreml",
    "tensorrt-engine": "tensorrt",
}
#: Why a row is slower than its fp32 reference, where that is known and expected (printed under the table):
#: target -> (ISA flags of which the host needs one, why).
_SLOWER_BECAUSE = {
    "onnx-mobile": (
        ("avx2", "avx512f"),
        "built for arm: no NCHWc layout, which model.onnx gets at load on this x86 CPU",
    )
}
_SLOWER = 0.9  # a ratio under this is "slower" (timings vary 10 % between runs)
_LACKS_PRECISION = re.compile(r"\bhas no \S+ \(it has ")
#: The export gate's reason, as the manifest records it ("fidelity gate: ...", older exports "parity gate: ...").
_GATE = re.compile(r"\b(?:fidelity|parity) gate:")
_MAX_NAME = 24
#: The gate's reasons, shortened for the lines under the table (report.md keeps them whole).
_SHORTER = (
    (re.compile(r"^export failed: (?:fidelity|parity) gate:"), "export gate:"),
    (re.compile(r" \(only \d+ inputs, [^)]*\)"), ""),
    (
        re.compile(r"agreement (\S+) of (\d+) inputs \((\d+) changed\), 95% lower bound (\S+) < --min-agreement (\S+)"),
        r"agree \1 (\3 of \2 changed), lower bound \4 < \5",
    ),
    (re.compile(r"argmax agreement (\S+) \(< --min-agreement (\S+)\)"), r"agree \1 < \2"),
    (
        re.compile(
            r"harm shown: macro recall delta (\S+) points, 95% CI (\[[^]]*\]) on \d+ test images lies entirely "
            r"below 0"
        ),
        r"recall \1 pts, CI \2 < 0",
    ),
    (
        re.compile(
            r"macro recall delta (\S+) points, 95% CI (\[[^]]*\]) on \d+ test images: a drop beyond --max-drop "
            r"(\S+) with a CI that excludes 0"
        ),
        r"recall \1 pts (> \3), CI \2 excludes 0",
    ),
    (
        re.compile(r"(\S+) recall dropped (\S+) points \(> --max(?:-class)?-drop (?:\S+=)?(\S+)\)"),
        r"\1 recall -\2 pts > \3",
    ),
    (
        re.compile(r"(\S+)'s (?:ONNX graph|twin) run by (\S+): the twin's numbers, NOT (\S+) speed"),
        r"\1's graph run by \2 (the twin): NOT \3 speed",
    ),
)


def lacks_precision(row: Row) -> bool:
    """The export's placeholder for a precision its target does not have ("coreml has no fp32 ...")."""
    return row.status == "skipped" and bool(_LACKS_PRECISION.search(row.reason))


def shown_rows(results: BenchResults) -> list[Row]:
    """The rows of the terminal table: every row but the lacking-precision placeholders."""
    return [r for r in results.rows if not lacks_precision(r)]


def _short(backend: str) -> str:
    """The backend's own short name ("ort", "ov"), or its name (torch, or one not registered here)."""
    try:
        return runtime_backends.get(backend).short_name or backend
    except Exception:
        return backend


def row_name(row: Row) -> str:
    """``onnx:int8``, ``tensorrt:int8@ort``, ``onnx:fp32@ort/cuda``: the artifact, and its backend and device
    where they are not the format's own on the CPU."""
    name = row.artifact.replace("/qdq-onnx", "/qdq")  # results.json files of older versions
    device = row.device if row.device.lower() not in ("cpu", "-", "default", "") else ""
    if row.backend not in ("-", _HOME_BACKEND.get(row.target)) or device:
        name += f"@{_short(row.backend)}"
    return f"{name}/{device}" if device else name


def _slower_note(results: BenchResults, rows: list[Row], row: Row) -> str:
    ratio = speedup(rows, row)
    if ratio is None or ratio >= _SLOWER or row.target not in _SLOWER_BECAUSE:
        return ""
    flags, why = _SLOWER_BECAUSE[row.target]
    return why if any(results.environment.isa.get(f) for f in flags) else ""


def _no_ratio_note(rows: list[Row], row: Row) -> str:
    """The row's own note where a timed compressed row has no speed-up (TensorRT's graph timed in onnxruntime)."""
    if row.p50 is None or row.precision == "fp32" or not row.note or speedup(rows, row) is not None:
        return ""
    return row.note


def _gate_reasons(row: Row) -> list[str]:
    parts = _GATE.split(row.reason, maxsplit=1)
    return [p.strip() for p in parts[1].split(";") if p.strip()] if len(parts) == 2 else []


def _short_gate_reason(reason: str) -> str:
    if reason.startswith(("agreement", "argmax agreement")):
        return "agree"
    if reason.startswith(("harm shown", "macro recall")):
        return "recall"
    match = re.match(r"(\S+) recall dropped", reason)
    if match:
        return match.group(1)
    return "non-finite" if "non-finite" in reason else reason.split()[0]


def gate_verdict(row: Row) -> str:
    """The export gate's verdict for the artifact: ``pass`` (the manifest lists it ok: it passed), ``FAIL``
    and what failed (``agree``, ``recall``, a class), ``-`` where it never reached the gate, ``ref`` for the
    baseline. The gate's figures are in the reasons under the table and in report.md."""
    if row.key == BASELINE_KEY:
        return "ref"
    failed = list(dict.fromkeys(_short_gate_reason(r) for r in _gate_reasons(row)))
    if failed:
        return f"FAIL {failed[0]}" + (f"+{len(failed) - 1}" if len(failed) > 1 else "")
    if row.reason.startswith(("export failed", "export skipped")):
        return "-"  # never reached the gate (a converter error, a missing converter)
    return "pass"


def _tool_ratio(row: Row) -> str:
    return "/".join(f"{t.latency_ratio:.2f}" for t in row.tools if t.latency_ratio is not None) or "-"


def _state(row: Row) -> str:
    return row.status + ("*" if row.reason else "")  # the reasons are listed under the table


def _ratio_cell(results: BenchResults, rows: list[Row], row: Row) -> str:
    ratio = speedup(rows, row)
    if ratio is None:
        return "-*" if _no_ratio_note(rows, row) else "-"
    return f"{ratio:.2f}x" + ("*" if _slower_note(results, rows, row) else "")


def _delta(row: Row) -> str:
    a = row.accuracy
    return points(a.delta_macro_recall) if a is not None and a.delta_macro_recall is not None else "-"


COLUMNS = (
    ("row", "left"),
    ("status", "left"),
    ("acc.", "left"),
    ("MB", "right"),
    ("p50\nms", "right"),
    ("vs\nfp32", "right"),
    ("export\ngate", "left"),
    ("img/s\n@{batch}", "right"),
    ("RSS\nMB", "right"),
    ("recall\n%", "right"),
    ("delta\npts", "right"),
    ("agree\n%", "right"),
    ("/tool\np50", "right"),
)


def results_table(results: BenchResults) -> Table:
    ev, cfg = results.eval, results.config
    title = (
        f"facederm-bench: {cfg.threads} threads, batch 1 latency, img/s at batch {cfg.batch}, {cfg.repeats} "
        f"repeat{'s' if cfg.repeats != 1 else ''}"
    )
    if ev is not None:
        title += f"; {ev.n_images} eval images{' (SYNTHETIC)' if ev.synthetic else ''}"
    caption = (
        "vs fp32: speed-up over the same backend's fp32 row. export gate: the export's gate verdict. acc.: "
        "native or twin figures. delta: macro recall points vs torch fp32. /tool: facederm p50 / the backend's "
        "own tool. *: below. Load times, spreads, CIs, per-class recall, full reasons: report.md, results.csv."
    )
    table = Table(
        title=title,
        caption=caption,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
        caption_justify="left",
    )
    for name, justify in COLUMNS:
        table.add_column(
            name.format(batch=cfg.batch),
            justify=justify,
            no_wrap=True,  # type: ignore[arg-type]
            **({"max_width": _MAX_NAME, "overflow": "ellipsis"} if name == "row" else {}),
        )
    rows = shown_rows(results)
    for r in rows:
        style = {"failed": "red", "skipped": "yellow"}.get(r.status, "")
        a = r.accuracy
        table.add_row(
            row_name(r),
            _state(r),
            r.validated,
            num(r.size_mb, 1),
            stat(r.latency_ms.get("p50"), 2, spread=False),
            _ratio_cell(results, rows, r),
            gate_verdict(r),
            stat(r.throughput_ips, 0, spread=False),
            stat(r.peak_rss_mb, 0, spread=False),
            pct(a.macro_recall if a else None),
            _delta(r),
            pct(a.agreement if a else None),
            _tool_ratio(r),
            style=style,
        )
    return table


def _clip(text: str, width: int = REASON_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def _compact(reason: str) -> str:
    for pattern, short in _SHORTER:
        reason = pattern.sub(short, reason)
    return reason


def reasons(results: BenchResults) -> list[str]:
    """One short line per reason behind the table's asterisks (``rows: reason``), rows with the same reason on one
    line; every line fits :data:`REASON_WIDTH`. The full reasons are in report.md and results.csv."""
    rows = shown_rows(results)
    grouped: dict[str, list[str]] = {}
    for r in rows:
        if r.reason:
            grouped.setdefault(_compact(r.reason), []).append(row_name(r))
        note = _slower_note(results, rows, r)
        ref = fp32_reference(rows, r)
        if note and ref is not None:
            grouped.setdefault(f"{speedup(rows, r):.2f}x vs {row_name(ref)}: {note}", []).append(row_name(r))
        if _no_ratio_note(rows, r):
            grouped.setdefault(_compact(_no_ratio_note(rows, r)), []).append(row_name(r))
    return [_clip(f"{', '.join(names)}: {reason}") for reason, names in grouped.items()]
