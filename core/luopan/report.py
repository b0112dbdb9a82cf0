"""Writing summaries: summary.md (markdown tables), summary.csv and summary.json, from summarizer tables (with the
uncertainty of their cells where a table has ``stats``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from luopan.components import SummaryTable, UnitResult


def _cell(v: Any, st: dict[str, Any] | None = None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        ci = st.get("ci") if st else None
        if not ci:
            return f"{v:.2f}"
        lo, hi = ci
        if abs((hi - v) - (v - lo)) <= 1e-9 * max(1.0, abs(v), abs(hi), abs(lo)):
            return f"{v:.2f} ± {(hi - lo) / 2:.2f}"
        return f"{v:.2f} [{lo:.2f}, {hi:.2f}]"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _row_stats(t: SummaryTable, i: int) -> dict[str, dict[str, Any]]:
    return t.stats[i] if i < len(t.stats) and t.stats[i] else {}


def to_markdown(tables: Sequence[SummaryTable]) -> str:
    """Tables as Markdown; a numeric cell with a 95% interval in the table's ``stats`` reads
    ``value ± half-width`` (``value [low, high]`` where the interval is not symmetric)."""
    parts = []
    for t in tables:
        lines = [f"### {t.title}", "", "| " + " | ".join(t.columns) + " |",
                 "|" + "|".join("---" for _ in t.columns) + "|"]
        for i, row in enumerate(t.rows):
            st = _row_stats(t, i)
            lines.append("| " + " | ".join(_cell(c, st.get(col)) for col, c in zip(t.columns, row)) + " |")
        lines += [""] + [f"- {n}" for n in t.notes]
        parts.append("\n".join(lines).rstrip() + "\n")
    return "\n".join(parts)


def _num(c: Any) -> Any:
    return "" if c is None else (round(c, 4) if isinstance(c, float) else c)


def to_csv(tables: Sequence[SummaryTable]) -> str:
    """Tables as CSV, one header row per table; columns with a 95% interval in ``stats`` get three more at the
    end of the row: ``<column> se``, ``<column> ci_low``, ``<column> ci_high``."""
    buf = io.StringIO()
    w = csv.writer(buf)
    for t in tables:
        with_stats = [c for c in t.columns if any(c in _row_stats(t, i) for i in range(len(t.rows)))]
        w.writerow(["table"] + t.columns + [f"{c} {k}" for c in with_stats for k in ("se", "ci_low", "ci_high")])
        for i, row in enumerate(t.rows):
            st = _row_stats(t, i)
            more: list[Any] = []
            for c in with_stats:
                cell = st.get(c) or {}
                ci = cell.get("ci") or (None, None)
                more += [_num(cell.get("se")), _num(ci[0]), _num(ci[1])]
            w.writerow([t.title] + [_num(c) for c in row] + more)
    return buf.getvalue()


def write_summaries(out: Path, tables: Sequence[SummaryTable], results: Sequence[UnitResult]) -> None:
    from luopan.files import atomic_write

    atomic_write(out / "summary.md", to_markdown(tables))
    atomic_write(out / "summary.csv", to_csv(tables))
    atomic_write(out / "summary.json", json.dumps(
        {"tables": [asdict(t) for t in tables], "units": [asdict(r) for r in results]},
        ensure_ascii=False, indent=2))


def rebuild_reports(run_dir: str | Path, registry: Any = None) -> list[Path]:
    """Rebuild the reports plugins write after a run (report.html: the ``luopan_report`` hook) from the finished
    run folder ``run_dir``, with the installed plugins (or ``registry``); return the paths written. A folder a
    run did not write is a :class:`~luopan.errors.ConfigError`."""
    from luopan.errors import ConfigError

    out = Path(run_dir)
    if not out.is_dir() or not ((out / "results").is_dir() or (out / "summary.json").is_file()):
        raise ConfigError(f"{out}: not a run folder (no results/ or summary.json in it); give the folder a run "
                          "wrote, e.g. outputs/<run name>")
    if registry is None:
        from luopan.plugins import get_registry

        registry = get_registry()
    written = [Path(p) for paths in registry.pm.hook.luopan_report(out=out) for p in (paths or ())]
    if not written:
        raise ConfigError("no installed plugin writes reports (the luopan_report plugin is part of luopan: "
                          "is it disabled by LUOPAN_DISABLE_PLUGINS?)")
    return written
