"""The rich summary table of an export: one row per artifact, ok / skipped (reason) / failed (reason)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from facederm.runtime.layout import ArtifactRecord

_STYLE = {"ok": "green", "skipped": "yellow", "failed": "red"}


def _points(value: float | None) -> str:
    return "" if value is None else f"{value * 100:+.2f}"


def summary_table(records: list[ArtifactRecord] | tuple[ArtifactRecord, ...], title: str = "facederm export") -> Table:
    """Target, precision, file, size, status, how validated, agreement with its 95 % lower bound and number of
    inputs, the largest fp32 margin among the flips, macro recall delta on the test images with its CI.

    Reasons of skipped / failed rows are footnotes (see :func:`reasons`), so the table stays narrow.
    """
    table = Table(title=title, show_lines=False)
    for name, justify in (
        ("target", "left"),
        ("precision", "left"),
        ("path", "left"),
        ("MB", "right"),
        ("status", "left"),
        ("check", "left"),
        ("agree%", "right"),
        ("LB95%", "right"),
        ("n", "right"),
        ("flip m", "right"),
        ("recall pts", "right"),
        ("95% CI", "right"),
        ("s", "right"),
    ):
        # Headers are short and never truncated (min_width = their length); the README explains them.
        table.add_column(
            name,
            justify=justify,
            no_wrap=True,
            overflow="ellipsis" if name != "path" else "fold",
            min_width=24 if name == "path" else len(name),
        )  # type: ignore[arg-type]
    notes = reasons(records)
    for r in records:
        p = r.parity
        status = r.status if r.status == "ok" else f"{r.status} ({notes.index(r.error or '') + 1})"
        ci = ""
        if p and len(p.macro_recall_delta_ci) == 2:
            ci = f"{_points(p.macro_recall_delta_ci[0])} .. {_points(p.macro_recall_delta_ci[1])}"
        size = r.bytes + sum(f.bytes for f in r.files)
        table.add_row(
            escape(r.target),
            r.precision,
            escape(r.path) if r.status != "skipped" else "",
            f"{size / 1e6:.2f}" if size else "",
            f"[{_STYLE[r.status]}]{status}[/]",
            r.validated if r.status != "skipped" else "",
            f"{p.agreement * 100:.1f}" if p else "",
            f"{p.agreement_lower_bound * 100:.1f}" if p and p.agreement_lower_bound is not None else "",
            str(p.n_pairs or p.n_images) if p else "",
            f"{max(f.fp32_margin for f in p.flips):.2f}" if p and p.flips else "",
            _points(p.macro_recall_delta) if p else "",
            ci,
            f"{r.seconds:.1f}" if r.seconds is not None else "",
        )
    return table


def targets_table() -> Table:
    """Every registered target as declared: aliases, precisions (* = built by default), how it is validated here,
    where its artifacts carry labels and preprocessing, and whether its libraries are installed."""
    from .registry import all_targets

    table = Table(title="facederm export targets", show_lines=True)
    for name in ("target", "aliases", "precisions", "validation", "metadata", "ready"):
        table.add_column(name, overflow="fold")
    for target in all_targets():
        precisions = ", ".join(dict.fromkeys(f"{v.precision}{'*' if v.default else ''}" for v in target.variants))
        missing = target.missing_requirements()
        table.add_row(
            f"{target.name}\n({escape(target.title)})",
            ", ".join(target.aliases),
            precisions,
            escape(target.validation),
            escape(target.metadata),
            "[green]yes[/]" if not missing else f"[yellow]no[/]: {escape(missing[0])}",
        )
    return table


def reasons(records: list[ArtifactRecord] | tuple[ArtifactRecord, ...]) -> list[str]:
    """Distinct reasons of skipped / failed rows, in order (footnote n is ``reasons[n - 1]``)."""
    return list(dict.fromkeys(r.error or "" for r in records if r.status != "ok"))
