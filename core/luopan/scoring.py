"""Scoring: per-sample verdicts into per-subset entries (questions, not samples), shards merged again, usage.

A subset entry is ``{"subset", "n", "score", "metrics", "stats"}`` plus ``metric_n`` (a metric fewer questions
report) and ``unscored`` (questions without a score): ``n`` counts questions, so a question asked as several
samples (WinoGrande's options, CircularEval's rotations, repeats for pass@k) counts once. ``stats`` holds the
uncertainty of the score (key ``"score"``) and of each metric (its name): ``{"n", "se", "ci", "method", "sd"}``
(:mod:`luopan.stats`): the mean of per-question values analytically, a metric an evaluator declares in
``derived_metrics`` (not a mean: perplexity) by a seeded bootstrap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from luopan import stats
from luopan.components import Backend, UnitResult
from luopan.types import Sample
from luopan.units import question_key

#: a metric that is not the mean of per-question values: (the extra it is computed from, the function of them)
Derived = tuple[str, Callable[[Sequence[float]], float]]


def subset_entries(samples: Sequence[Sample], scored: Sequence[Any],
                   derived: Mapping[str, Derived] | None = None) -> list[dict[str, Any]]:
    """Per subset: ``n`` questions, the score (mean over questions of each question's mean score), each extra
    metric the same way (``metric_n`` where fewer questions report it), ``unscored`` questions, and ``stats``:
    each one's standard error and 95% interval. A question of several samples (options, rotations, repeats)
    counts once, so a limit of N questions reports n = N. ``derived`` (an evaluator's ``derived_metrics``):
    metrics computed by a function of another extra's per-question values, their interval by bootstrap."""
    qkey = {s.id: question_key(s) for s in samples}
    per_subset: dict[str, dict[str, list[Any]]] = {}
    for sc in scored:
        per_subset.setdefault(sc.subset, {}).setdefault(qkey.get(sc.id, sc.id), []).append(sc)
    subsets = []
    for name, questions in per_subset.items():
        scores: list[float] = []
        extra: dict[str, list[float]] = defaultdict(list)
        unscored = 0
        for items in questions.values():
            if len(items) == 1:  # the common case, kept cheap
                it = items[0]
                if it.score is None:
                    unscored += 1
                else:
                    scores.append(it.score)
                for k, v in it.extra.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        extra[k].append(float(v))
                continue
            values = [it.score for it in items if it.score is not None]
            if values:
                scores.append(sum(values) / len(values))
            else:
                unscored += 1
            per_item: dict[str, list[float]] = defaultdict(list)
            for it in items:
                for k, v in it.extra.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        per_item[k].append(float(v))
            for k, v in per_item.items():
                extra[k].append(sum(v) / len(v))
        score = stats.estimate_mean(scores)
        entry: dict[str, Any] = {
            "subset": name,
            "n": len(scores),
            "score": score.value,
            "metrics": {k: sum(v) / len(v) for k, v in extra.items()},
        }
        entry_stats = {"score": score.to_dict()}
        for k, v in extra.items():
            rule = derived.get(k) if derived else None
            source = extra.get(rule[0]) if rule else None
            if rule and source:
                est = stats.bootstrap(source, rule[1], seed=stats.seed_of(name, k))
                entry["metrics"][k] = est.value
            else:
                est = stats.estimate_mean(v)
            entry_stats[k] = est.to_dict()
        entry["stats"] = entry_stats
        counts = {k: len(v) for k, v in extra.items() if len(v) != len(scores)}
        if counts:  # a metric only some questions report: its own count, so shards merge exactly
            entry["metric_n"] = counts
        if unscored:  # not scored (e.g. every judge verdict failed): counted, never guessed
            entry["unscored"] = unscored
        subsets.append(entry)
    return subsets


def group_outputs(mode: str, samples: Sequence[Sample], raw: list[Any]) -> list[Any]:
    """Per sample: its result (generation) or the results of its choices (likelihood, one request each)."""
    if mode == "generate":
        return raw
    outputs, pos = [], 0
    for s in samples:
        n = len(s.choices or ())
        outputs.append(raw[pos : pos + n])
        pos += n
    return outputs


def merge_shards(results: list[UnitResult]) -> list[UnitResult]:
    """Combine the shards of one model x dataset into one result. A subset's score is the mean over the scored
    items of every shard (each shard weighted by its ``n``); a metric is the mean over the items that report it
    (``metric_n`` where that differs from ``n``), so a metric one shard lacks is not counted as 0 there. The
    standard errors of means merge exactly (:func:`luopan.stats.pool`); a bootstrapped metric's as independent
    parts."""
    merged: dict[tuple[str, str], UnitResult] = {}
    for r in results:
        key = (r.model, r.dataset)
        if key not in merged:
            merged[key] = UnitResult(r.model, r.dataset, r.metric, [_copy_subset(s) for s in r.subsets],
                                     r.categories, r.display_names, r.error, r.provenance, dict(r.usage),
                                     list(r.failed_items), r.version)
            continue
        m = merged[key]
        if r.error and not m.error:
            m.error = r.error
        by = {s["subset"]: s for s in m.subsets}
        for s in r.subsets:
            if s["subset"] not in by:
                m.subsets.append(_copy_subset(s))
                by[s["subset"]] = m.subsets[-1]
                continue
            t = by[s["subset"]]
            _merge_stats(t, s)
            n = t["n"] + s["n"]
            t["score"] = ((t["score"] or 0.0) * t["n"] + (s["score"] or 0.0) * s["n"]) / n if n else None
            if s.get("unscored"):
                t["unscored"] = t.get("unscored", 0) + s["unscored"]
            tn, sn = _metric_counts(t), _metric_counts(s)
            metrics, counts = {}, {}
            for k in {**t["metrics"], **s["metrics"]}:
                a, b = tn.get(k, 0), sn.get(k, 0)
                counts[k] = a + b
                metrics[k] = ((t["metrics"].get(k, 0.0) * a + s["metrics"].get(k, 0.0) * b) / (a + b)
                              if a + b else 0.0)
            t["metrics"], t["n"] = metrics, n
            t.pop("metric_n", None)
            if odd := {k: c for k, c in counts.items() if c != n}:
                t["metric_n"] = odd
        for k, v in r.usage.items():
            m.usage[k] = v if isinstance(v, str) else m.usage.get(k, 0) + v
        m.failed_items.extend(r.failed_items)
    return list(merged.values())


def _copy_subset(s: dict[str, Any]) -> dict[str, Any]:
    out = dict(s)
    out["metrics"] = dict(s.get("metrics", {}))
    if "metric_n" in s:
        out["metric_n"] = dict(s["metric_n"])
    if "stats" in s:
        out["stats"] = {k: dict(v) for k, v in s["stats"].items()}
    return out


def _merge_stats(t: dict[str, Any], s: dict[str, Any]) -> None:
    """The stats of two shards' entries of one subset (``t`` before its values are merged), into ``t``."""
    if "stats" not in t and "stats" not in s:
        return
    ts, ss = t.get("stats", {}), s.get("stats", {})
    out = {}
    for k in {**ts, **ss}:
        a = stats.Estimate.from_dict(t["score"] if k == "score" else t["metrics"].get(k), ts.get(k))
        b = stats.Estimate.from_dict(s["score"] if k == "score" else s["metrics"].get(k), ss.get(k))
        if a.method == "unknown" or b.method == "unknown":
            continue
        if a.method == "mean" and b.method == "mean":
            n, mean, sd = stats.pool([(a.n, a.value, a.sd), (b.n, b.value, b.sd)])
            out[k] = stats.from_moments(n, mean, sd).to_dict()
        else:  # a bootstrapped statistic: the shards as independent strata (never clusters), weighted by items
            out[k] = stats.weighted_mean([a, b], min_clusters=len((a, b)) + 1).to_dict()
    t["stats"] = out


def _metric_counts(s: dict[str, Any]) -> dict[str, int]:
    """How many items each of a subset's metrics is the mean of."""
    odd = s.get("metric_n", {})
    return {k: odd.get(k, s["n"]) for k in s["metrics"]}


def usage_of(outs: Sequence[Any], backend: Backend | None = None) -> dict[str, Any]:
    """Token counts of answered requests, and their cost where the backend has a ``price`` (per million
    tokens: ``{"prompt": 0.5, "completion": 1.5, "currency": "USD"}``)."""
    p = c = 0
    for o in outs:
        if o is not None:
            p += getattr(o, "prompt_tokens", None) or 0
            c += getattr(o, "completion_tokens", None) or 0
    usage: dict[str, Any] = {"prompt_tokens": p, "completion_tokens": c}
    price = backend.price if backend is not None else None
    if price:
        usage["cost"] = round((p * price.get("prompt", 0) + c * price.get("completion", 0)) / 1e6, 6)
        usage["currency"] = price.get("currency", "USD")
    return usage
