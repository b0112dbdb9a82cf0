"""Writing summaries: summary.md (markdown tables), summary.csv and summary.json, from summarizer tables."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from luopan.components import SummaryTable, UnitResult


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(tables: Sequence[SummaryTable]) -> str:
    parts = []
    for t in tables:
        lines = [f"### {t.title}", "", "| " + " | ".join(t.columns) + " |",
                 "|" + "|".join("---" for _ in t.columns) + "|"]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
        lines += [""] + [f"- {n}" for n in t.notes]
        parts.append("\n".join(lines).rstrip() + "\n")
    return "\n".join(parts)


def to_csv(tables: Sequence[SummaryTable]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    for t in tables:
        w.writerow(["table"] + t.columns)
        for row in t.rows:
            w.writerow([t.title] + ["" if c is None else (round(c, 4) if isinstance(c, float) else c) for c in row])
    return buf.getvalue()


def write_summaries(out: Path, tables: Sequence[SummaryTable], results: Sequence[UnitResult]) -> None:
    from luopan.files import atomic_write

    atomic_write(out / "summary.md", to_markdown(tables))
    atomic_write(out / "summary.csv", to_csv(tables))
    atomic_write(out / "summary.json", json.dumps(
        {"tables": [asdict(t) for t in tables], "units": [asdict(r) for r in results]},
        ensure_ascii=False, indent=2))
