"""The default summarizer: per subset, per category, overall mean and weighted, counts, failures visible."""

from __future__ import annotations

import csv
import io
import json

import pytest

from luopan.components import UnitResult
from luopan.report import to_csv, to_markdown, write_summaries
from luopan_summary.default import DefaultSummarizer


def unit(model: str, error: str | None = None) -> UnitResult:
    return UnitResult(
        model, "bench", "accuracy",
        subsets=[{"subset": "a", "n": 10, "score": 1.0, "metrics": {}},
                 {"subset": "b", "n": 30, "score": 0.5, "metrics": {}},
                 {"subset": "c", "n": 60, "score": 0.0, "metrics": {}}],
        categories={"AB": ["a", "b"], "C": ["c"], "Missing": ["zzz"]},
        display_names={"a": "甲"}, error=error,
    )


def rows_by_label(table):
    return {row[1]: row for row in table.rows}


def test_subsets_categories_and_both_overalls():
    [t] = DefaultSummarizer().summarize([unit("m1")])
    r = rows_by_label(t)
    assert t.columns == ["dataset", "subset", "metric", "n", "m1"]
    assert r["a (甲)"][3:] == [10, 100.0]
    assert r["category: AB"][3:] == [40, 75.0]  # mean of the category's subsets
    assert r["category: C"][3:] == [60, 0.0]
    assert "category: Missing" not in r
    assert r["overall (mean)"][3:] == [100, 50.0]  # each subset counts once
    assert r["overall (weighted)"][3:] == [100, 25.0]  # each question counts once: (10 + 15 + 0) / 100


def test_failed_unit_is_shown_never_as_a_silent_dash():
    [t] = DefaultSummarizer().summarize([unit("ok"), unit("bad", error="RuntimeError: out of memory")])
    r = rows_by_label(t)
    assert r["overall (mean)"][4:] == [50.0, "ERROR: RuntimeError: out of memory"]
    assert any("bad on bench FAILED: RuntimeError: out of memory" in n for n in t.notes)
    assert "| - |" not in to_markdown([t])
    long = "RuntimeError: " + " ".join(f"word{i}" for i in range(40))
    [t] = DefaultSummarizer().summarize([unit("bad", error=long)])
    assert rows_by_label(t)["overall"][4] == f"ERROR: {long}"  # nothing cut


def test_files_md_csv_json(tmp_path):
    tables = DefaultSummarizer().summarize([unit("m1")])
    write_summaries(tmp_path, tables, [unit("m1")])
    assert "| bench | overall (weighted) | accuracy | 100 | 25.00 |" in (tmp_path / "summary.md").read_text()
    rows = list(csv.reader(io.StringIO((tmp_path / "summary.csv").read_text())))
    assert rows[0] == ["table", "dataset", "subset", "metric", "n", "m1"]
    assert ["Summary", "bench", "overall (mean)", "accuracy", "100", "50.0"] in rows
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["units"][0]["model"] == "m1" and data["tables"][0]["title"] == "Summary"
    assert to_csv(tables).count("\n") == len(tables[0].rows) + 1


def test_intervals_in_md_csv_and_json(tmp_path):
    from luopan.scoring import subset_entries
    from luopan.types import Sample, ScoredSample

    samples = [Sample(f"{s}/{i}", s, "q", 0) for s in ("a", "b") for i in range(10)]
    scored = [ScoredSample(x.id, x.subset, float(i % 3 == 0), None, {"logprob": -1.0 - i / 10, "perplexity": 0.0})
              for i, x in enumerate(samples)]
    entries = subset_entries(samples, scored, {"perplexity": ("logprob", lambda v: 2.0 ** (-sum(v) / len(v)))})
    u = UnitResult("m1", "bench", "accuracy", entries, version="0a1b2c")
    [t] = DefaultSummarizer().summarize([u])
    write_summaries(tmp_path, [t], [u])
    md = (tmp_path / "summary.md").read_text()
    a = next(s for s in entries if s["subset"] == "a")
    half = (a["stats"]["score"]["ci"][1] - a["stats"]["score"]["ci"][0]) / 2
    assert f"| bench | a | accuracy | 10 | {100 * a['score']:.2f} ± {100 * half:.2f} | 0a1b2c |" in md
    ppl = next(r for r in t.rows if r[2] == "perplexity")
    assert ppl[-1] == "0a1b2c" and t.stats[t.rows.index(ppl)]["m1"]["method"] == "mean of subsets"
    one = UnitResult("m1", "bench", "accuracy", [e for e in entries if e["subset"] == "a"], version="0a1b2c")
    line = to_markdown(DefaultSummarizer().summarize([one])).split("| perplexity |")[1].splitlines()[0]
    lo, hi = a["stats"]["perplexity"]["ci"]
    assert f"| {a['metrics']['perplexity']:.2f} [{lo:.2f}, {hi:.2f}] |" in line  # a bootstrap interval, as it is
    rows = list(csv.reader(io.StringIO((tmp_path / "summary.csv").read_text())))
    assert rows[0] == ["table", "dataset", "subset", "metric", "n", "m1", "version", "m1 se", "m1 ci_low", "m1 ci_high"]
    row = next(r for r in rows if r[2] == "a")
    assert float(row[7]) == pytest.approx(100 * a["stats"]["score"]["se"], abs=1e-4)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["units"][0]["version"] == "0a1b2c" and data["units"][0]["subsets"][0]["stats"]["score"]["n"] == 10
    assert data["tables"][0]["stats"][0]["m1"]["version"] == "0a1b2c"


def test_older_results_without_stats_show_values_alone():
    [t] = DefaultSummarizer().summarize([unit("m1")])
    assert t.stats == [] and "±" not in to_markdown([t]) and "version" not in t.columns
