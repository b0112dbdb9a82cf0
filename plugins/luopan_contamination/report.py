"""A run's items, the clean-subset scores of a finished run, and the output files (contamination.json, .csv, .md)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from luopan.components import SummaryTable
from luopan.files import atomic_write
from luopan_contamination.detect import BenchmarkResult, Item, ItemResult, items_from_samples

__all__ = ["run_items", "run_folder", "clean_scores", "tables", "write_outputs"]


def run_items(cfg: Any, reg: Any) -> list[Item]:
    """Every item of every dataset entry of a resolved run config (its subsets and limits), rendered 0-shot (the
    few-shot examples come from another split); the repeats of a problem are one item."""
    from luopan import run_samples

    items: list[Item] = []
    for label, samples in run_samples(cfg, reg, shots=0).items():
        seen: set[str] = set()
        for it in items_from_samples(label, samples):
            base = it.id.split("#r", 1)[0]
            if base not in seen:
                seen.add(base)
                items.append(dataclasses.replace(it, id=base))
    return items


def run_folder(cfg: Any) -> Path:
    """Where ``luopan run`` writes this run: ``run.output_dir / run.name`` (relative to the working folder)."""
    out = Path(cfg.run.output_dir)
    if not out.is_absolute():
        out = Path.cwd() / out
    return out / (cfg.run.name or "contamination")


def _macro(records: Sequence[dict[str, Any]]) -> tuple[float | None, int]:
    """Mean over subsets of the mean per-sample score (luopan's overall score), and the number of scored samples."""
    by: dict[str, list[float]] = {}
    for r in records:
        if r.get("score") is not None:
            by.setdefault(str(r.get("subset", "")), []).append(float(r["score"]))
    means = [sum(v) / len(v) for v in by.values() if v]
    return (sum(means) / len(means) if means else None), sum(len(v) for v in by.values())


def _flagged(rec: dict[str, Any], bad: set[str]) -> bool:
    rid = str(rec.get("id"))
    return rid in bad or rid.split("#r", 1)[0] in bad  # a repeat of a flagged problem


def clean_scores(run_dir: Path, flagged: Mapping[str, set[str]]) -> list[dict[str, Any]]:
    """Per model and dataset of the finished run in ``run_dir``: the score on every item and on the items not
    flagged (``flagged``: dataset label -> contaminated sample ids), both recomputed from the predictions the same
    way (mean per subset, then over subsets). Datasets the check did not cover are left out."""
    from luopan.api import load_results

    results = load_results(run_dir)
    out = []
    for u in results.units:
        if u.dataset not in flagged or u.error:
            continue
        try:
            records = list(results.predictions(u.model, u.dataset))
        except KeyError:
            continue
        bad = flagged[u.dataset]

        clean = [r for r in records if not _flagged(r, bad)]
        full, n_full = _macro(records)
        cleaned, n_clean = _macro(clean)
        out.append({"model": u.model, "dataset": u.dataset, "metric": u.metric, "score": full, "n": n_full,
                    "clean_score": cleaned, "clean_n": n_clean, "flagged": n_full - n_clean,
                    "delta": None if full is None or cleaned is None else cleaned - full})
    return out


def tables(benchmarks: Sequence[BenchmarkResult], scores: Sequence[dict[str, Any]] = (),
           membership: Sequence[dict[str, Any]] = ()) -> list[SummaryTable]:
    ts = [SummaryTable(
        "Contamination: 13-gram overlap with the corpus",
        ["benchmark", "items", "checked", "contaminated", "contaminated %", "mean overlap %", "boilerplate n-grams"],
        [[b.benchmark, b.items, b.checked, b.contaminated, 100.0 * b.fraction, 100.0 * b.mean_ratio,
          b.boilerplate_ngrams] for b in benchmarks],
        notes=["contaminated: at least one 13-gram of the item (prompt and gold answer, normalised as lm-eval's "
               "decontamination) is in the corpus; items under 13 tokens are not checked (docs/contamination.md)"],
    )]
    if scores:
        ts.append(SummaryTable(
            "Clean-subset scores (items not flagged)",
            ["model", "dataset", "metric", "score", "n", "clean score", "clean n", "clean - full"],
            [[s["model"], s["dataset"], s["metric"], _pct(s["score"]), s["n"], _pct(s["clean_score"]),
              s["clean_n"], _pct(s["delta"])] for s in scores],
            notes=["scores recomputed from the predictions: mean per subset, then over subsets"],
        ))
    if membership:
        ts.append(SummaryTable(
            "Membership signals (no corpus)",
            ["model", "benchmark", "items", "min-k% logprob", "order tests", "canonical order best %",
             "expected %", "p-value"],
            [[m["model"], m["benchmark"], m["items"], m.get("min_k"), m.get("order_items"),
              _pct(m.get("canonical_best")), _pct(m.get("expected_best")), _p(m.get("p_value"))]
             for m in membership],
            notes=["min-k%: mean of the lowest k% token log-probs of the item (higher: more familiar; compare with "
                   "a reference, never alone); canonical order best: how often the published option order is more "
                   "likely than every shuffle (exchangeability: expected 1/(shuffles+1)); see docs/contamination.md"],
        ))
    return ts


def _pct(v: Any) -> Any:
    return None if v is None else 100.0 * float(v)


def _p(v: Any) -> Any:
    return None if v is None else f"{v:.3g}"


def write_outputs(out: Path, results: Sequence[ItemResult], benchmarks: Sequence[BenchmarkResult],
                  stats: dict[str, Any], scores: Sequence[dict[str, Any]] = (),
                  membership: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """contamination.json (everything), contamination.csv (one row per item) and contamination.md (the tables)."""
    from luopan.report import to_markdown

    doc = {"ngram": stats, "benchmarks": [b.to_dict() for b in benchmarks], "clean_scores": list(scores),
           "membership": list(membership), "items": [r.to_dict() for r in results]}
    paths = [out / "contamination.json", out / "contamination.csv", out / "contamination.md"]
    atomic_write(paths[0], json.dumps(doc, ensure_ascii=False, indent=1))
    buf = io.StringIO()
    w = csv.writer(buf)
    fields = [f.name for f in dataclasses.fields(ItemResult)]
    w.writerow(fields)
    for r in results:
        w.writerow([getattr(r, f) for f in fields])
    atomic_write(paths[1], buf.getvalue())
    atomic_write(paths[2], to_markdown(tables(benchmarks, scores, membership)))
    return paths
