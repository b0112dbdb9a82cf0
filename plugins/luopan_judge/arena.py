"""After a run: the arena leaderboard of each pairwise-judged dataset, and a table of every judge's work.

For each dataset scored by ``pairwise``, the battles recorded in the models' predictions (each judged comparison
once, whichever unit recorded it) and the battles of its vote files are aggregated per source (each judge; each
votes file) and, when there are several, all together:

- Bradley-Terry ratings on the Elo scale (the baseline at 1000) with 95% bootstrap intervals over questions;
- the win rate against the baseline (ties count half), the battles, and each model's mean answer length in
  characters beside it (judges favour long answers: read the ratings with it);
- the pairwise win-rate matrix (row beats column, ties half);
- per judge: its consistency rate (pairs whose two orders agree; a disagreeing pair counted as a tie), its failed
  verdicts, and its calls (requests, answered from the cache, sent);
- judge-vote agreement on the (question, turn, pair) items both judged.

This is a ``luopan_run_finish`` hook (like the needle plugin's reports), so it works with any ``run.summarizer``:
the tables are added to the run's summaries (summary.md/csv/json are written again, the CLI prints them) and the
files go to ``<run>/arena/<dataset>/``: ``battles.jsonl``, ``leaderboard.csv``, ``matrix.csv``,
``agreement.csv``, ``failures.jsonl``, ``ratings.png`` and ``matrix.png`` (with ``pip install 'luopan[plots]'``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from luopan.components import SummaryTable, UnitResult
from luopan.files import atomic_write, ensure_dir, safe_name
from luopan_judge.bt import Battle, Ratings, fit
from luopan_judge.votes import VotesSpec, discrete, load_votes

log = logging.getLogger("luopan.judge")

JUDGING_EVALUATORS = ("pairwise", "single_grade", "cascade")


@dataclass
class Source:
    """The battles of one judge or one votes file on one dataset."""

    name: str
    kind: str  # "judge" or "votes"
    battles: list[Battle] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    pairs: int = 0            # judged in both orders
    consistent: int = 0
    rule_decided: int = 0
    calls_saved: int = 0
    dropped: int = 0          # votes on models or questions not in this run


def _evaluator(run: Any, spec: Any) -> str:
    return spec.evaluator or run.dataset(spec).default_evaluator


def collect(run: Any, dlabel: str) -> tuple[dict[str, Source], dict[str, list[int]], list[str], dict[str, str]]:
    """Judge sources (deduplicated battles), answer lengths per model, the dataset's sample ids and their first
    turns' text (to match votes by question text)."""
    sources: dict[str, Source] = {}
    lengths: dict[str, list[int]] = defaultdict(list)
    seen: set[tuple[Any, ...]] = set()
    ids: list[str] = []
    texts: dict[str, str] = {}
    for unit in run.units:
        if unit.dataset.label != dlabel:
            continue
        for s in unit.samples:
            if s.id not in texts:
                ids.append(s.id)
                first = (s.turns or [s.chat_prompt if s.chat_prompt is not None else s.prompt])[0]
                texts[" ".join(str(first).split())] = s.id
        for row in run.predictions(unit):
            extra = row.get("extra") or {}
            if "answer_chars" in extra:
                lengths[unit.model.label].append(int(extra["answer_chars"]))
            for b in extra.get("battles") or []:
                key = (b["question"], b["turn"], b["judge"], tuple(sorted((b["model_a"], b["model_b"]))))
                if key in seen:
                    continue
                seen.add(key)
                src = sources.setdefault(b["judge"], Source(b["judge"], "judge"))
                if b.get("consistent") is not None:
                    src.pairs += 1
                    src.consistent += int(bool(b["consistent"]))
                if b.get("rule"):
                    src.rule_decided += 1
                    src.calls_saved += int(b.get("judge_calls_saved", 0))
                if b.get("failed"):
                    src.failed.append(b)
                elif b.get("outcome") is not None:
                    src.battles.append(Battle(b["model_a"], b["model_b"], float(b["outcome"]),
                                              f"{b['question']}#{b['turn']}", b["judge"]))
    return sources, lengths, ids, texts


def vote_sources(specs: Sequence[VotesSpec], models: Sequence[str], ids: Sequence[str],
                 texts: dict[str, str]) -> dict[str, Source]:
    idset, mset = set(ids), set(models)
    out: dict[str, Source] = {}
    for spec in specs:
        for v in load_votes(spec):
            src = out.setdefault(v.source, Source(v.source, "votes"))
            qid = v.question if v.question in idset else texts.get(" ".join(v.question.split()))
            if qid is None or v.model_a not in mset or v.model_b not in mset or v.model_a == v.model_b:
                src.dropped += 1
                continue
            src.battles.append(Battle(v.model_a, v.model_b, v.outcome, f"{qid}#{v.turn}", v.annotator))
    return out


def win_rate(battles: Sequence[Battle], model: str, opponent: str) -> tuple[float | None, int]:
    """``model``'s mean outcome against ``opponent`` (ties half) and the number of battles."""
    vals = [b.outcome if b.a == model else 1.0 - b.outcome for b in battles
            if {b.a, b.b} == {model, opponent}]
    return (sum(vals) / len(vals) if vals else None), len(vals)


def matrix(battles: Sequence[Battle], models: Sequence[str]) -> list[list[Any]]:
    rows = []
    for m in models:
        row: list[Any] = [m]
        for o in models:
            if m == o:
                row.append(None)
            else:
                w, n = win_rate(battles, m, o)
                row.append(None if w is None else 100.0 * w)
        rows.append(row)
    return rows


def agreement(judge: Source, votes: Source) -> dict[str, Any]:
    """Judge-vote agreement on shared (question, turn, pair) items: every vote against the judge's verdict,
    oriented alike; also without the comparisons where either said tie (the MT-Bench paper's "w/o tie")."""
    verdicts: dict[tuple[str, frozenset[str]], tuple[str, float]] = {}
    for b in judge.battles:
        verdicts[(b.question, frozenset((b.a, b.b)))] = (b.a, discrete(b.outcome))
    items: set[Any] = set()
    n = agree = n_nt = agree_nt = 0
    for v in votes.battles:
        key = (v.question, frozenset((v.a, v.b)))
        if key not in verdicts:
            continue
        a, jo = verdicts[key]
        vo = discrete(v.outcome if v.a == a else 1.0 - v.outcome)
        items.add(key)
        n += 1
        agree += int(jo == vo)
        if jo != 0.5 and vo != 0.5:
            n_nt += 1
            agree_nt += int(jo == vo)
    return {"judge": judge.name, "votes": votes.name, "items": len(items), "comparisons": n,
            "agreement": agree / n if n else None, "comparisons_without_ties": n_nt,
            "agreement_without_ties": agree_nt / n_nt if n_nt else None}


def _ci(r: Ratings, m: str) -> str:
    if m == r.anchor:
        return "anchor"
    if m not in r.low:
        return "-"
    return f"{r.low[m]:.0f} to {r.high[m]:.0f}"


def leaderboard(title: str, r: Ratings, battles: Sequence[Battle], baseline: str,
                lengths: dict[str, list[int]], notes: list[str]) -> tuple[SummaryTable, list[dict[str, Any]]]:
    cols = ["rank", "model", "rating", "95% CI", f"win rate vs {baseline} (%)", "battles", "mean answer chars"]
    rows, records = [], []
    for rank, m in enumerate(r.order(), 1):
        w, _ = win_rate(battles, m, baseline)
        n = sum(1 for b in battles if m in (b.a, b.b))
        wr = 50.0 if m == baseline else (None if w is None else 100.0 * w)
        length = sum(lengths.get(m, [])) / len(lengths[m]) if lengths.get(m) else None
        rows.append([rank, m, r.rating[m], _ci(r, m), wr, n, length])
        records.append({"rank": rank, "model": m, "rating": r.rating[m], "low": r.low.get(m), "high": r.high.get(m),
                        "win_rate_vs_baseline": wr, "battles": n, "mean_answer_chars": length})
    return SummaryTable(title, cols, rows, notes), records


def _csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for row in rows:
        w.writerow(["" if c is None else (round(c, 4) if isinstance(c, float) else c) for c in row])
    return buf.getvalue()


def _calls(results: Sequence[UnitResult], dlabel: str, judge: str) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for r in results:
        if r.dataset == dlabel:
            for k, v in ((r.provenance or {}).get("judges") or {}).get(judge, {}).items():
                if isinstance(v, int):
                    total[k] += v
    return dict(total)


def dataset_arena(run: Any, spec: Any, results: Sequence[UnitResult], out: Path) -> list[SummaryTable]:
    from luopan_judge.pairwise import PairwiseParams

    params = PairwiseParams(**spec.evaluator_params)
    models = [m.label for m in run.config.models if m.role != "judge"]
    baseline = params.baseline or models[0]
    judges, lengths, ids, texts = collect(run, spec.label)
    votes = vote_sources(params.votes, models, ids, texts) if params.votes else {}
    sources = list(judges.values()) + list(votes.values())
    tables: list[SummaryTable] = []
    ensure_dir(out, "arena folder")
    summary: dict[str, Any] = {"dataset": spec.label, "baseline": baseline, "leaderboards": {}, "judges": {},
                               "agreement": []}
    groups = [(s.name if s.kind == "votes" else f"judge {s.name}", s.battles, [s]) for s in sources]
    if len(sources) > 1:
        groups.append(("all sources", [b for s in sources for b in s.battles], sources))
    ratings_for_plot: list[tuple[str, Ratings]] = []
    for title, battles, srcs in groups:
        present = [m for m in models if any(m in (b.a, b.b) for b in battles)]
        notes: list[str] = []
        for s in srcs:
            if s.kind == "judge":
                calls = _calls(results, spec.label, s.name)
                rate = f"{100.0 * s.consistent / s.pairs:.1f}% of {s.pairs} pairs" if s.pairs else "not measured (swap: false)"
                n_all = len(s.battles) + len(s.failed)
                notes.append(f"judge {s.name}: consistency {rate} (same winner in both orders; an inconsistent pair "
                             f"counts as a tie); failed verdicts: {len(s.failed)} of {n_all} battles "
                             f"({'see failures.jsonl' if s.failed else 'none'}); judge calls: "
                             f"{calls.get('sent', 0)} sent, {calls.get('cached', 0)} answered from the cache"
                             + (f", {calls['failed']} failed (a rerun retries them)" if calls.get("failed") else "")
                             + " (both models' units ask each comparison: the second finds it in the cache)")
                if s.rule_decided:
                    notes.append(f"cascade: the rule decided {s.rule_decided} battles, saving {s.calls_saved} judge calls")
                summary["judges"][s.name] = {"pairs": s.pairs, "consistent": s.consistent,
                                             "consistency": s.consistent / s.pairs if s.pairs else None,
                                             "battles": len(s.battles), "failed": len(s.failed),
                                             "rule_decided": s.rule_decided, "calls_saved": s.calls_saved,
                                             "calls": calls}
            else:
                notes.append(f"votes {s.name}: {len(s.battles)} votes used"
                             + (f", {s.dropped} on models or questions not in this run left out" if s.dropped else ""))
        if not battles:
            tables.append(SummaryTable(f"arena: {spec.label} / {title}", ["model"], [], notes + ["no battles"]))
            continue
        anchor = baseline if baseline in present else None
        r = fit(battles, present, anchor=anchor, rounds=params.bootstrap, seed=params.seed)
        notes.insert(0, f"Bradley-Terry ratings (Elo scale, {anchor or 'mean'} = 1000), 95% intervals from "
                        f"{params.bootstrap} bootstrap resamples of the {r.n_questions} questions x turns; "
                        f"{r.n_battles} battles; ties count half")
        table, records = leaderboard(f"arena: {spec.label} / {title}", r, battles, baseline, lengths, notes)
        tables.append(table)
        ratings_for_plot.append((title, r))
        slug = safe_name(title)
        atomic_write(out / f"leaderboard_{slug}.csv",
                     _csv(list(records[0]), [list(rec.values()) for rec in records]))
        mrows = matrix(battles, r.order())
        atomic_write(out / f"matrix_{slug}.csv", _csv(["model"] + r.order(), mrows))
        tables.append(SummaryTable(f"arena: {spec.label} / {title}: win rate (%) of row over column",
                                   ["model"] + r.order(), mrows, ["ties count half; - : no battles"]))
        summary["leaderboards"][title] = records
        if params.plots:
            _plots(out, slug, f"{spec.label}: {title}", r, mrows, tables[-2], lengths)
    agreements = [agreement(j, v) for j in sources if j.kind == "judge" for v in sources if v.kind == "votes"]
    if agreements:
        cols = ["judge", "votes", "items", "comparisons", "agreement (%)", "comparisons w/o ties",
                "agreement w/o ties (%)"]
        rows = [[a["judge"], a["votes"], a["items"], a["comparisons"],
                 None if a["agreement"] is None else 100 * a["agreement"], a["comparisons_without_ties"],
                 None if a["agreement_without_ties"] is None else 100 * a["agreement_without_ties"]] for a in agreements]
        tables.append(SummaryTable(f"arena: {spec.label}: judge-vote agreement", cols, rows,
                                   ["every vote on an item the judge also decided, compared with the judge's verdict "
                                    "(A, B or tie; an inconsistent judge pair is a tie)"]))
        atomic_write(out / "agreement.csv", _csv(cols, rows))
        summary["agreement"] = agreements
    atomic_write(out / "battles.jsonl", "".join(
        json.dumps({**asdict(b), "kind": s.kind, "source_name": s.name}, ensure_ascii=False) + "\n"
        for s in sources for b in s.battles))
    atomic_write(out / "failures.jsonl", "".join(
        json.dumps(f, ensure_ascii=False) + "\n" for s in sources for f in s.failed))
    atomic_write(out / "summary.json", json.dumps(summary, ensure_ascii=False, indent=2))
    return tables


def _plots(out: Path, slug: str, title: str, r: Ratings, mrows: list[list[Any]], table: SummaryTable,
           lengths: dict[str, list[int]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        table.notes.append(f"plots not drawn ({exc}): pip install 'luopan[plots]'")
        return
    order = r.order()
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(order) + 1.4), dpi=110)
    ys = list(range(len(order)))[::-1]
    for y, m in zip(ys, order):
        if m in r.low:
            ax.plot([r.low[m], r.high[m]], [y, y], color="0.4", lw=2)
        ax.plot([r.rating[m]], [y], "o", color="tab:blue")
    ax.set_yticks(ys, [f"{m}\n{sum(lengths[m]) / len(lengths[m]):.0f} chars" if lengths.get(m) else m for m in order],
                  fontsize=8)
    ax.set_xlabel("Bradley-Terry rating (Elo scale), 95% bootstrap interval; mean answer length beside each model")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(out / f"ratings_{slug}.png", bbox_inches="tight")
    plt.close(fig)
    import numpy as np

    data = np.array([[np.nan if v is None else v for v in row[1:]] for row in mrows], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 0.8 * len(order), 1.2 + 0.6 * len(order)), dpi=110)
    im = ax.imshow(np.ma.masked_invalid(data), cmap="RdYlGn", vmin=0, vmax=100)
    for i in range(len(order)):
        for j in range(len(order)):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.0f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(order)), order, rotation=45, ha="right")
    ax.set_yticks(range(len(order)), order)
    ax.set_title(f"{title}: win rate (%) of row over column", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.savefig(out / f"matrix_{slug}.png", bbox_inches="tight")
    plt.close(fig)
    table.notes.append(f"plots: ratings_{slug}.png, matrix_{slug}.png")


def judging_table(run: Any, results: Sequence[UnitResult]) -> SummaryTable | None:
    """One row per unit scored with a judge: its calls, failures and what the evaluator adds."""
    rows = []
    for unit in run.units:
        ev = _evaluator(run, unit.dataset)
        if ev not in JUDGING_EVALUATORS:
            continue
        res = next((r for r in results if r.model == unit.model.label and r.dataset == unit.dataset.label), None)
        preds = run.predictions(unit)
        failed = sum(int((p.get("extra") or {}).get("n_failed", 0)) for p in preds)
        calls = ((res.provenance if res else {}) or {}).get("judges") or {}
        detail = ""
        if ev == "single_grade":
            ratings = [r["rating"] for p in preds for r in (p.get("extra") or {}).get("ratings", [])
                       if r.get("rating") is not None]
            by_turn: dict[int, list[float]] = defaultdict(list)
            for p in preds:
                for r in (p.get("extra") or {}).get("ratings", []):
                    if r.get("rating") is not None:
                        by_turn[r["turn"]].append(r["rating"])
            detail = (f"mean rating {sum(ratings) / len(ratings):.2f}/10 over {len(ratings)} ratings" if ratings
                      else "no ratings") + "".join(f"; turn {t}: {sum(v) / len(v):.2f}" for t, v in sorted(by_turn.items()))
        elif ev == "cascade":
            decided = sum(int((p.get("extra") or {}).get("rule_decided", 0)) for p in preds)
            detail = f"rule decided {decided} of {len(preds)} (judge calls saved: {decided})"
        elif ev == "pairwise":
            pairs = [b for p in preds for b in (p.get("extra") or {}).get("battles", []) if b.get("consistent") is not None]
            if pairs:
                detail = f"consistency {100.0 * sum(1 for b in pairs if b['consistent']) / len(pairs):.1f}% of {len(pairs)} pairs"
        if res is not None and res.error:
            detail = f"unit FAILED: {res.error[:80]}"
        for judge in unit.dataset.judges or ["-"]:
            c = calls.get(judge, {})
            rows.append([unit.model.label, unit.dataset.label, ev, judge, c.get("requests", 0), c.get("cached", 0),
                         c.get("sent", 0), c.get("failed", 0), failed, detail])
    if not rows:
        return None
    return SummaryTable("judging", ["model", "dataset", "evaluator", "judge", "judge requests", "cached", "sent",
                                    "request failures", "failed verdicts", "detail"], rows,
                        ["failed verdicts: no readable verdict after the retries; counted, never scored",
                         "a rerun answers every judge request from the cache (sent: 0) and retries request failures"])


def write_arena_reports(run: Any, results: Sequence[UnitResult]) -> list[SummaryTable]:
    """The run_finish work: arena tables and files for pairwise datasets, and the judging table."""
    if not getattr(run, "units", None):
        return []
    tables: list[SummaryTable] = []
    for spec in run.config.datasets:
        if _evaluator(run, spec) == "pairwise" and any(u.dataset.label == spec.label for u in run.units):
            tables += dataset_arena(run, spec, results, Path(run.out) / "arena" / safe_name(spec.label))
    jt = judging_table(run, results)
    if jt is not None:
        tables.append(jt)
    if not tables:
        return []
    from luopan.report import to_markdown

    atomic_write(Path(run.out) / "arena" / "summary.md", to_markdown(tables))
    run.add_tables(tables)
    return tables
