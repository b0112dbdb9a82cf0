"""Rows: each dataset's subsets, then its categories, then its overall scores; one column per model.

Scores are percentages. "overall (mean)" is the mean over subsets (each subject counts once, CMMLU's
convention); "overall (weighted)" is over questions. A failed unit shows its error in its cells, never "-".
A few secondary metrics that a benchmark reports beside its score (CircularEval's ``circular_accuracy``,
GSM8K's ``flexible_match``, LAMBADA's ``perplexity``) get an overall row of their own when every unit of the
dataset has them; all others stay in results/*.json.

Every score carries its uncertainty (the table's ``stats``: standard error, 95% interval, n, method and the
comparability hash): a subset's from its questions, a category's and "overall (mean)"'s as a mean of subset
scores (SE = sqrt(sum se_i^2) / k), "overall (weighted)"'s clustered by subset (:mod:`luopan.stats`). The
``version`` column is the hash of the settings behind the scores (data, prompt, shots, generation); a note
says when the intervals of the leading models overlap, and when models ran a dataset with different settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from luopan import stats
from luopan.components import Summarizer, SummaryTable, UnitResult
from luopan.stats import Estimate

#: secondary metrics shown beside the score: name -> shown as a percentage?
BESIDE = {"circular_accuracy": True, "flexible_match": True, "perplexity": False}


class DefaultSummarizer(Summarizer):
    def summarize(self, results: Sequence[UnitResult]) -> list[SummaryTable]:
        models = list(dict.fromkeys(r.model for r in results))
        datasets = list(dict.fromkeys(r.dataset for r in results))
        by = {(r.model, r.dataset): r for r in results}
        with_version = any(r.version for r in results)
        rows: list[list[Any]] = []
        row_stats: list[dict[str, dict[str, Any]]] = []
        notes: list[str] = []

        def add(ds: str, label: str, metric: str, n: int, units: Sequence[UnitResult | None],
                fn: Callable[[UnitResult], Estimate], version: str) -> dict[str, Estimate]:
            cells, cell_stats, shown = _cells(units, models, fn)
            rows.append([ds, label, metric, n] + cells + ([version] if with_version else []))
            row_stats.append(cell_stats)
            return shown

        for ds in datasets:
            units = [by.get((m, ds)) for m in models]
            ok = [u for u in units if u is not None and not u.error]
            metric = (ok[0].metric if ok else units[0].metric if units[0] else "score")
            subsets = list(dict.fromkeys(s["subset"] for u in ok for s in u.subsets))
            names = {k: v for u in ok for k, v in u.display_names.items()}
            cats = next((u.categories for u in ok if u.categories), {})
            versions = list(dict.fromkeys(u.version for u in ok if u.version))
            version = " / ".join(versions)

            if len(subsets) > 1:
                for s in subsets:
                    label = f"{s} ({names[s]})" if s in names else s
                    add(ds, label, metric, _n_of(ok, [s]), units, lambda u, s=s: _subset_est(u, s), version)
                for cat, members in cats.items():
                    present = [m for m in members if m in subsets]
                    if not present:
                        continue
                    add(ds, f"category: {cat}", metric, _n_of(ok, present), units,
                        lambda u, p=present: _mean_est(u, p), version)
            headline = add(ds, "overall (mean)" if len(subsets) > 1 else "overall", metric, _n_of(ok, subsets),
                           units, lambda u: _mean_est(u, [s["subset"] for s in u.subsets]), version)
            if len(subsets) > 1:
                add(ds, "overall (weighted)", metric, _n_of(ok, subsets), units, _weighted_est, version)
            for extra, pct in BESIDE.items():
                if ok and extra != metric and all(all(extra in s["metrics"] for s in u.subsets) for u in ok):
                    add(ds, "overall (mean)" if len(subsets) > 1 else "overall", extra, _n_of(ok, subsets), units,
                        lambda u, e=extra, p=pct: _extra_est(u, e, p), version)
            notes += _overlap_note(ds, headline)
            if len(versions) > 1:
                which = ", ".join(f"{u.model} {u.version}" for u in ok)
                notes.append(f"{ds}: the models ran it with different settings (version {which}): their scores "
                             f"are not comparable; luopan compare says what differs")
            for u in units:
                if u is not None and u.error:
                    notes.append(f"{u.model} on {ds} FAILED: {u.error}")
                if u is not None and u.usage and any(u.usage.values()):
                    cost = (f", cost {u.usage['cost']:.4f} {u.usage.get('currency', 'USD')}"
                            if "cost" in u.usage else "")
                    notes.append(f"{u.model} on {ds}: {u.usage.get('prompt_tokens', 0):,} prompt tokens, "
                                 f"{u.usage.get('completion_tokens', 0):,} completion tokens{cost}")
        if any(row_stats):
            notes.append("± is half the 95% interval (t quantile x standard error; [low, high] where a bootstrap "
                         "interval is not symmetric); subsets: mean of their questions; categories and overall "
                         "(mean): mean of subset scores, SE = sqrt(sum se_i^2) / k; overall (weighted): "
                         f"clustered by subset (at least {stats.MIN_CLUSTERS} subsets, else subsets as strata)")
        columns = ["dataset", "subset", "metric", "n"] + models + (["version"] if with_version else [])
        return [SummaryTable("Summary", columns, rows, notes, row_stats if any(row_stats) else [])]


def _cells(units: Sequence[UnitResult | None], models: Sequence[str],
           fn: Callable[[UnitResult], Estimate]) -> tuple[list[Any], dict[str, dict[str, Any]], dict[str, Estimate]]:
    """One cell per model: the value, or the unit's error (never a silent "-"); the cells' stats by model
    column, and the estimates shown (for the overlap note)."""
    out: list[Any] = []
    cell_stats: dict[str, dict[str, Any]] = {}
    shown: dict[str, Estimate] = {}
    for m, u in zip(models, units):
        if u is None:
            out.append("not run")
        elif u.error:
            out.append(f"ERROR: {u.error}")  # the whole message: never cut mid-word
        else:
            est = fn(u)
            out.append(est.value)
            if est.value is not None:
                shown[m] = est
            if est.value is not None and est.method != "unknown":
                cell_stats[m] = {**est.to_dict(), **({"version": u.version} if u.version else {})}
                cell_stats[m].pop("sd", None)
    return out, cell_stats, shown


def _overlap_note(ds: str, shown: dict[str, Estimate]) -> list[str]:
    """A line when the leading model's 95% interval overlaps another model's: the order is not settled."""
    ranked = sorted(((m, e) for m, e in shown.items() if e.ci is not None), key=lambda x: -x[1].value)  # type: ignore[operator]
    if len(ranked) < 2:
        return []
    lead, est = ranked[0]
    close = [(m, e) for m, e in ranked[1:] if stats.overlap(est.ci, e.ci)]
    if not close:
        return []
    others = ", ".join(f"{m} ({e.value:.2f})" for m, e in close)
    return [f"{ds}: the 95% intervals of the top models overlap: {lead} ({est.value:.2f}) and {others}; their "
            f"order is not settled by these questions (luopan compare tests the difference on the same items)"]


def _subset(u: UnitResult, name: str) -> dict[str, Any] | None:
    return next((s for s in u.subsets if s["subset"] == name), None)


def _estimate(s: dict[str, Any], key: str = "score") -> Estimate:
    """A subset's score (``key="score"``) or metric as an estimate, in its stored units."""
    value = s["score"] if key == "score" else s["metrics"].get(key)
    est = Estimate.from_dict(value, s.get("stats", {}).get(key))
    if est.method == "unknown":  # a result without stats (an older run): the value alone
        n = s["n"] if key == "score" else s.get("metric_n", {}).get(key, s["n"])
        return Estimate(value, None, None, n, "unknown")
    return est


def _subset_est(u: UnitResult, name: str) -> Estimate:
    s = _subset(u, name)
    if s is None or s["score"] is None:
        return Estimate(None, None, None, 0, "unknown")
    return _estimate(s).scaled(100.0)


def _n_of(ok: Sequence[UnitResult], names: Sequence[str]) -> int:
    return sum(s["n"] for s in ok[0].subsets if s["subset"] in names) if ok else 0


def _combined(parts: list[Estimate], how: Callable[[list[Estimate]], Estimate]) -> Estimate:
    if not parts:
        return Estimate(None, None, None, 0, "unknown")
    est = how(parts)
    if any(p.method == "unknown" for p in parts):
        return Estimate(est.value, None, None, est.n, "unknown")
    return est


def _mean_est(u: UnitResult, names: Sequence[str]) -> Estimate:
    parts = [_estimate(s) for s in u.subsets if s["subset"] in names and s["score"] is not None]
    return _combined(parts, stats.mean_of_means).scaled(100.0)


def _weighted_est(u: UnitResult) -> Estimate:
    parts = [_estimate(s) for s in u.subsets if s["score"] is not None]
    return _combined(parts, stats.weighted_mean).scaled(100.0)


def _extra_est(u: UnitResult, name: str, pct: bool) -> Estimate:
    parts = [_estimate(s, name) for s in u.subsets if name in s["metrics"]]
    est = _combined(parts, stats.mean_of_means)
    return est.scaled(100.0) if pct else est
