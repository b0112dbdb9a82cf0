"""After a run: per model, needle dataset and task, the (length x depth) grid of scores as a heatmap PNG, the
table behind it (CSV, and in summary.md) and an overall score.

This is a ``luopan_run_finish`` hook rather than a summarizer so that it works whatever ``run.summarizer`` a run
names, also in runs that mix needle datasets with others: the grids are *added* to the run's summary tables
(summary.md/csv/json are written again with them, and the CLI prints them) and the files go to
``<run>/needle/<model>/<dataset>/``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luopan.components import SummaryTable, UnitResult
from luopan.files import atomic_write, safe_name

log = logging.getLogger("luopan.needle")

SKIPPED = "skipped"
NOT_RUN = "not run"


@dataclass
class Grid:
    """Scores of one model on one task of one needle dataset: ``cells[(length, depth)]`` is a score in [0, 1],
    or :data:`SKIPPED` (longer than the context window) or :data:`NOT_RUN` (not selected, or the unit failed)."""

    model: str
    dataset: str
    task: str
    kind: str
    lengths: list[int]
    depths: list[float]
    cells: dict[tuple[int, float], float | str] = field(default_factory=dict)
    counts: dict[tuple[int, float], int] = field(default_factory=dict)
    required: dict[tuple[int, float], int] = field(default_factory=dict)
    #: why cells were skipped: "window" (longer than the context window) or "too short"
    reasons: dict[tuple[int, float], str] = field(default_factory=dict)
    error: str | None = None

    @property
    def scores(self) -> list[float]:
        return [v for v in self.cells.values() if isinstance(v, float)]

    @property
    def overall(self) -> float | None:
        s = self.scores
        return sum(s) / len(s) if s else None

    @property
    def n_skipped(self) -> int:
        return sum(1 for v in self.cells.values() if v == SKIPPED)

    def value(self, length: int, depth: float) -> float | str:
        return self.cells.get((length, depth), NOT_RUN)

    def length_mean(self, length: int) -> float | None:
        s = [v for (n, _), v in self.cells.items() if n == length and isinstance(v, float)]
        return sum(s) / len(s) if s else None

    def depth_mean(self, depth: float) -> float | None:
        s = [v for (_, d), v in self.cells.items() if d == depth and isinstance(v, float)]
        return sum(s) / len(s) if s else None


def length_label(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else (f"{n / 1000:g}k" if n % 1000 == 0 else str(n))


def grids_from_rows(model: str, dataset: str, describe: dict[str, Any], rows: Sequence[dict[str, Any]],
                    error: str | None = None) -> list[Grid]:
    """Grids from a needle dataset's ``describe()`` and the prediction records (``extra.cell`` and ``score``)."""
    g = describe["grid"]
    lengths, depths = list(g["lengths"]), [float(d) for d in g["depths"]]
    grids = {name: Grid(model, dataset, name, t["kind"], lengths, depths, error=error)
             for name, t in g["tasks"].items()}
    acc: dict[tuple[str, int, float], list[float]] = defaultdict(list)
    for r in rows:
        cell = (r.get("extra") or {}).get("cell") or {}
        if cell.get("task") in grids:
            acc[(cell["task"], int(cell["length"]), float(cell["depth"]))].append(float(r["score"]))
    for (task, length, depth), scores in acc.items():
        grids[task].cells[(length, depth)] = sum(scores) / len(scores)
        grids[task].counts[(length, depth)] = len(scores)
    for s in describe.get("skipped", []):
        grid = grids.get(s["task"])
        if grid is not None and (s["length"], float(s["depth"])) not in grid.cells:
            grid.cells[(s["length"], float(s["depth"]))] = SKIPPED
            grid.reasons[(s["length"], float(s["depth"]))] = \
                "too short" if str(s.get("reason", "")).startswith("too short") else "window"
            if s.get("required_tokens"):
                grid.required[(s["length"], float(s["depth"]))] = s["required_tokens"]
    return list(grids.values())


def _pct(v: float | str | None) -> float | str | None:
    return 100.0 * v if isinstance(v, float) else v


def grid_table(grid: Grid, window: int | None, png: str | None) -> SummaryTable:
    cols = ["depth \\ length"] + [length_label(n) for n in grid.lengths] + ["mean"]
    rows: list[list[Any]] = []
    for d in grid.depths:
        rows.append([f"{d:g}%"] + [_pct(grid.value(n, d)) for n in grid.lengths] + [_pct(grid.depth_mean(d))])
    rows.append(["mean"] + [_pct(grid.length_mean(n)) for n in grid.lengths] + [_pct(grid.overall)])
    notes = [f"overall {grid.kind} score: " + (f"{100 * grid.overall:.1f}" if grid.overall is not None else "-")
             + f" over {len(grid.scores)} cells (mean of cell means; each cell averages its repeats)"]
    for reason, what in (("window", f"longer than the context window {window} allows with the answer budget"),
                         ("too short", "shorter than the template, question and needles together")):
        keys = [k for k, r in grid.reasons.items() if r == reason]
        if keys:
            lens = sorted({n for n, _ in keys})
            notes.append(f"{len(keys)} cells skipped, never truncated: {what} "
                         f"(lengths {', '.join(length_label(n) for n in lens)})")
    if grid.error:
        notes.append(f"unit FAILED: {grid.error}")
    if png:
        notes.append(f"heatmap: {png}")
    return SummaryTable(f"needle: {grid.model} / {grid.dataset} / {grid.task} (score by depth x length)",
                        cols, rows, notes)


def overview_table(grids: Sequence[Grid]) -> SummaryTable:
    rows = [[g.model, g.dataset, g.task, g.kind, len(g.scores), g.n_skipped, _pct(g.overall)] for g in grids]
    return SummaryTable("needle: overall", ["model", "dataset", "task", "kind", "cells", "skipped", "score"], rows,
                        ["score: mean over the cells that ran, in percent (recall of the needles' key phrases)"])


def cells_csv(grid: Grid) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "dataset", "task", "kind", "length", "depth", "status", "n", "score", "required_tokens"])
    for n in grid.lengths:
        for d in grid.depths:
            v = grid.value(n, d)
            status = "ok" if isinstance(v, float) else v
            w.writerow([grid.model, grid.dataset, grid.task, grid.kind, n, f"{d:g}", status,
                        grid.counts.get((n, d), 0), round(v, 4) if isinstance(v, float) else "",
                        grid.required.get((n, d), "")])
    return buf.getvalue()


def heatmap(grid: Grid, path: Path) -> None:
    """Depth (rows, 0% on top) x length (columns), colour = score; skipped cells grey and hatched."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    nr, nc = len(grid.depths), len(grid.lengths)
    data = np.full((nr, nc), np.nan)
    for i, d in enumerate(grid.depths):
        for j, n in enumerate(grid.lengths):
            v = grid.value(n, d)
            if isinstance(v, float):
                data[i, j] = v
    fig, ax = plt.subplots(figsize=(2.2 + 0.9 * nc, 1.6 + 0.42 * nr), dpi=110)
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i, d in enumerate(grid.depths):
        for j, n in enumerate(grid.lengths):
            v = grid.value(n, d)
            if v == SKIPPED:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.82", edgecolor="0.55", hatch="///",
                                       linewidth=0))
                ax.text(j, i, "skip", ha="center", va="center", fontsize=7, color="0.25")
            elif isinstance(v, float):
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                        color="black" if 0.2 < v < 0.85 else "white")
            else:
                ax.text(j, i, "–", ha="center", va="center", fontsize=7, color="0.5")
    ax.set_xticks(range(nc), [length_label(n) for n in grid.lengths])
    ax.set_yticks(range(nr), [f"{d:g}%" for d in grid.depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    overall = f"{100 * grid.overall:.1f}" if grid.overall is not None else "-"
    skipped = ""
    if grid.n_skipped:
        skipped = f" · grey: skipped ({' / '.join(sorted(set(grid.reasons.values()), reverse=True))})"
    ax.set_title(f"{grid.model} · {grid.dataset} · {grid.task} ({grid.kind})\noverall {overall}{skipped}",
                 fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.03, label="score")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def write_needle_reports(run: Any, results: Sequence[UnitResult]) -> list[Grid]:
    """The run_finish work: grids, PNGs, CSVs, and the grid tables added to the run's summaries."""
    from luopan_needle.dataset import NeedleDataset

    units: dict[tuple[str, str], list[Any]] = defaultdict(list)
    datasets: dict[str, NeedleDataset] = {}
    for unit in getattr(run, "units", []):
        ds = run.dataset(unit.dataset)
        if isinstance(ds, NeedleDataset):
            units[(unit.model.label, unit.dataset.label)].append(unit)
            datasets[unit.dataset.label] = ds
    if not units:
        return []
    errors = {(r.model, r.dataset): r.error for r in results if r.error}
    out_root = Path(run.out) / "needle"
    grids: list[Grid] = []
    tables: list[SummaryTable] = []
    no_plot: str | None = None
    for (model, dlabel), us in units.items():
        ds = datasets[dlabel]
        rows = [r for u in us for r in run.predictions(u)]
        for grid in grids_from_rows(model, dlabel, ds.describe(), rows, errors.get((model, dlabel))):
            folder = out_root / safe_name(model) / safe_name(dlabel)
            atomic_write(folder / f"{safe_name(grid.task)}.csv", cells_csv(grid))
            png: str | None = None
            if no_plot is None:
                try:
                    heatmap(grid, folder / f"{safe_name(grid.task)}.png")
                    png = str((folder / f"{safe_name(grid.task)}.png").relative_to(run.out))
                except ImportError as exc:
                    no_plot = f"heatmaps not drawn ({exc}): pip install 'luopan[plots]'"
                    log.warning("needle: %s", no_plot)
            tables.append(grid_table(grid, ds.window, png))
            grids.append(grid)
    overview = overview_table(grids)
    if no_plot:
        overview.notes.append(no_plot)
    tables.insert(0, overview)
    atomic_write(out_root / "summary.json", json.dumps(
        [{"model": g.model, "dataset": g.dataset, "task": g.task, "kind": g.kind, "overall": g.overall,
          "cells_run": len(g.scores), "cells_skipped": g.n_skipped, "error": g.error,
          "cells": [{"length": n, "depth": d, "score": v if isinstance(v, float) else None,
                     "status": "ok" if isinstance(v, float) else v}
                    for n in g.lengths for d in g.depths for v in [g.value(n, d)]]} for g in grids],
        ensure_ascii=False, indent=2))
    from luopan.report import to_markdown

    atomic_write(out_root / "summary.md", to_markdown(tables))
    run.add_tables(tables)
    return grids
