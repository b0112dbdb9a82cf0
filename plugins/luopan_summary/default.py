"""Rows: each dataset's subsets, then its categories, then its overall scores; one column per model.

Scores are percentages. "overall (mean)" is the mean over subsets (each subject counts once, CMMLU's
convention); "overall (weighted)" is over questions. A failed unit shows its error in its cells, never "-".
A few secondary metrics that a benchmark reports beside its score (CircularEval's ``circular_accuracy``,
GSM8K's ``flexible_match``, LAMBADA's ``perplexity``) get an overall row of their own when every unit of the
dataset has them; all others stay in results/*.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from luopan.components import Summarizer, SummaryTable, UnitResult


def _pct(x: float) -> float:
    return 100.0 * x


#: secondary metrics shown beside the score: name -> shown as a percentage?
BESIDE = {"circular_accuracy": True, "flexible_match": True, "perplexity": False}


class DefaultSummarizer(Summarizer):
    def summarize(self, results: Sequence[UnitResult]) -> list[SummaryTable]:
        models = list(dict.fromkeys(r.model for r in results))
        datasets = list(dict.fromkeys(r.dataset for r in results))
        by = {(r.model, r.dataset): r for r in results}
        rows: list[list[Any]] = []
        notes: list[str] = []
        for ds in datasets:
            units = [by.get((m, ds)) for m in models]
            ok = [u for u in units if u is not None and not u.error]
            metric = (ok[0].metric if ok else units[0].metric if units[0] else "score")
            subsets = list(dict.fromkeys(s["subset"] for u in ok for s in u.subsets))
            names = {k: v for u in ok for k, v in u.display_names.items()}
            cats = next((u.categories for u in ok if u.categories), {})

            if len(subsets) > 1:
                for s in subsets:
                    label = f"{s} ({names[s]})" if s in names else s
                    rows.append([ds, label, metric, _n_of(ok, [s])] + _cells(units, lambda u, s=s: _subset_score(u, s)))
                for cat, members in cats.items():
                    present = [m for m in members if m in subsets]
                    if not present:
                        continue
                    rows.append([ds, f"category: {cat}", metric, _n_of(ok, present)]
                                + _cells(units, lambda u, p=present: _mean_of(u, p)))
            rows.append([ds, "overall (mean)" if len(subsets) > 1 else "overall", metric, _n_of(ok, subsets)]
                        + _cells(units, lambda u: _mean_of(u, [s["subset"] for s in u.subsets])))
            if len(subsets) > 1:
                rows.append([ds, "overall (weighted)", metric, _n_of(ok, subsets)] + _cells(units, _weighted))
            for extra, pct in BESIDE.items():
                if ok and extra != metric and all(all(extra in s["metrics"] for s in u.subsets) for u in ok):
                    rows.append([ds, "overall (mean)" if len(subsets) > 1 else "overall", extra,
                                 _n_of(ok, subsets)] + _cells(units, lambda u, e=extra, p=pct: _extra_mean(u, e, p)))
            for u in units:
                if u is not None and u.error:
                    notes.append(f"{u.model} on {ds} FAILED: {u.error}")
                if u is not None and u.usage and any(u.usage.values()):
                    cost = (f", cost {u.usage['cost']:.4f} {u.usage.get('currency', 'USD')}"
                            if "cost" in u.usage else "")
                    notes.append(f"{u.model} on {ds}: {u.usage.get('prompt_tokens', 0):,} prompt tokens, "
                                 f"{u.usage.get('completion_tokens', 0):,} completion tokens{cost}")
        return [SummaryTable("Summary", ["dataset", "subset", "metric", "n"] + models, rows, notes)]


def _cells(units: Sequence[UnitResult | None], fn: Any) -> list[Any]:
    """One cell per model: the value, or the unit's error (never a silent "-")."""
    out: list[Any] = []
    for u in units:
        if u is None:
            out.append("not run")
        elif u.error:
            out.append(f"ERROR: {u.error}")  # the whole message: never cut mid-word
        else:
            out.append(fn(u))
    return out


def _subset_score(u: UnitResult, name: str) -> float | None:
    s = next((s for s in u.subsets if s["subset"] == name), None)
    return _pct(s["score"]) if s and s["score"] is not None else None


def _n_of(ok: Sequence[UnitResult], names: Sequence[str]) -> int:
    return sum(s["n"] for s in ok[0].subsets if s["subset"] in names) if ok else 0


def _mean_of(u: UnitResult, names: Sequence[str]) -> float | None:
    vals = [s["score"] for s in u.subsets if s["subset"] in names and s["score"] is not None]
    return _pct(sum(vals) / len(vals)) if vals else None


def _weighted(u: UnitResult) -> float | None:
    n = sum(s["n"] for s in u.subsets if s["score"] is not None)
    return _pct(sum(s["score"] * s["n"] for s in u.subsets if s["score"] is not None) / n) if n else None


def _extra_mean(u: UnitResult, name: str, pct: bool) -> float | None:
    vals = [s["metrics"][name] for s in u.subsets if name in s["metrics"]]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    return _pct(mean) if pct else mean
