"""Pairwise judging end to end with a scripted judge: exact win rates, consistency, inconsistent pairs as ties,
failed verdicts retried then counted (never scored), judge calls cached and resumable, multi-turn rollout of
pregenerated answers, votes alone and beside the judge with the agreement rate, the pairwise cascade."""

from __future__ import annotations

import json
from pathlib import Path

import judge_standins
import pytest
from judge_standins import run_file, write_bench

from luopan.cli import main

MODELS = {"m1": 50, "m2": 20, "m3": 80}


@pytest.fixture
def judge_registry():
    from luopan.plugins import load_registry, reset_registry

    reg = load_registry(extra_plugins=[("judge_standins", judge_standins)])
    reset_registry(reg)
    yield reg
    reset_registry(None)


def _calls(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _summary(tmp_path: Path, name: str = "r") -> dict:
    return json.loads((tmp_path / "outputs" / name / "summary.json").read_text())


def _table(summary: dict, title: str) -> dict:
    return next(t for t in summary["tables"] if t["title"] == title)


def _arena(tmp_path: Path, name: str = "r") -> dict:
    return json.loads((tmp_path / "outputs" / name / "arena" / "bench" / "summary.json").read_text())


SCRIPT = "{strengths: {m1: 3, m2: 2, m3: 1}, biased: ['1'], garbage: ['2'], garbage_once: ['3'], calls_log: CALLS}"


def test_win_rates_consistency_failures_and_cache(judge_registry, tmp_path, capsys):
    write_bench(tmp_path, MODELS)
    calls = tmp_path / "calls.txt"
    p = run_file(tmp_path, list(MODELS), judge=SCRIPT.replace("CALLS", str(calls)))
    assert main(["run", str(p), "--no-progress"]) == 0
    # 3 pairs x 6 questions x 2 turns x 2 orders = 72; q2 never parses: 12 requests x 2 retries; q3 parses
    # after one reminder: 12 more
    assert _calls(calls) == 72 + 24 + 12

    arena = _arena(tmp_path)
    judge = arena["judges"]["judge"]
    assert judge["pairs"] == 30 and judge["consistent"] == 24 and judge["consistency"] == pytest.approx(0.8)
    assert judge["failed"] == 6 and judge["battles"] == 30
    board = {r["model"]: r for r in arena["leaderboards"]["judge judge"]}
    # q1 is judged "A" whatever the order: inconsistent, so a tie; q2 failed: not scored
    assert board["m1"]["win_rate_vs_baseline"] == pytest.approx(90.0)  # (8 wins + 2 ties / 2) / 10
    assert board["m3"]["win_rate_vs_baseline"] == pytest.approx(10.0)
    assert board["m2"]["win_rate_vs_baseline"] == 50.0 and board["m2"]["rating"] == pytest.approx(1000.0)
    assert [r["model"] for r in arena["leaderboards"]["judge judge"]] == ["m1", "m2", "m3"]
    assert board["m1"]["low"] <= board["m1"]["rating"] <= board["m1"]["high"]
    assert board["m1"]["mean_answer_chars"] == pytest.approx(len("answer <m1> to Q1: ") + 50 + len("second <m1>"))
    failures = (tmp_path / "outputs/r/arena/bench/failures.jsonl").read_text().splitlines()
    assert len(failures) == 6 and all(json.loads(f)["question"] == "2" for f in failures)
    assert all("no verdict after 3 replies" in json.loads(f)["failed"] for f in failures)

    # the unit's score: win rate against every other model over the battles that did not fail
    res = json.loads((tmp_path / "outputs/r/results/m1/bench.json").read_text())
    writing = next(s for s in res["subsets"] if s["subset"] == "writing")
    assert writing["n"] == 3 and writing["unscored"] == 1 and writing["score"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert res["provenance"]["judges"]["judge"]["sent"] > 0

    out = capsys.readouterr().out
    assert "consistency 80.0% of 30 pairs" in out and "failed verdicts: 6 of 36 battles" in out
    assert "judge calls: 108 sent, 108 answered from the cache" in out  # 72 requests in each of the 3 units
    assert "| 1 | m1 |" in out and "win rate (%) of row over column" in out

    # rerun: every judge answer comes from the cache
    assert main(["run", str(p), "--no-progress", "--name", "again"]) == 0
    assert _calls(calls) == 108
    again = _summary(tmp_path, "again")
    judging = _table(again, "judging")
    assert all(row[6] == 0 and row[5] == row[4] for row in judging["rows"])  # sent 0, cached = requests
    assert _arena(tmp_path, "again")["leaderboards"] == arena["leaderboards"]


def test_judge_calls_resume_where_they_stopped(judge_registry, tmp_path):
    write_bench(tmp_path, MODELS)
    calls = tmp_path / "calls.txt"
    script = SCRIPT.replace("CALLS", str(calls))
    p = run_file(tmp_path, list(MODELS), judge=script, dataset="    limit: 3")
    assert main(["run", str(p), "--no-progress"]) == 0
    first = _calls(calls)
    assert first == 36 + 24 + 12  # q1..q3
    p = run_file(tmp_path, list(MODELS), judge=script, name="full")
    assert main(["run", str(p), "--no-progress"]) == 0
    assert _calls(calls) - first == 36  # only q4..q6 were new


def test_judging_resumes_after_kill_9(judge_registry, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    write_bench(tmp_path, MODELS)
    calls = tmp_path / "calls.txt"
    script = SCRIPT.replace("CALLS", str(calls))[:-1] + ", delay_s: 0.02, chunk_size: 4}"
    p = run_file(tmp_path, list(MODELS), judge=script)
    here = Path(__file__).parent
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import judge_standins; "
            "from luopan.plugins import load_registry, reset_registry; "
            "reset_registry(load_registry(extra_plugins=[('judge_standins', judge_standins)])); "
            "from luopan.cli import main; sys.exit(main(['run', sys.argv[2], '--no-progress']))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(here), str(p)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while _calls(calls) < 30 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _calls(calls)
    assert 30 <= before < 108, before
    assert main(["run", str(p), "--no-progress"]) == 0
    # asked again: at most the chunk in flight and the chunks of the last tenth of a second (commits are at most
    # ten a second; here a chunk of 4 arrives every 0.02 s): 6 chunks of 4
    assert 108 <= _calls(calls) <= 108 + 6 * 4
    judging = _table(_summary(tmp_path), "judging")
    assert sum(row[5] for row in judging["rows"]) > 0  # the rerun found judge answers in the cache


def test_multi_turn_rollout_uses_the_models_own_first_answer(judge_registry, tmp_path):
    write_bench(tmp_path, MODELS, questions=2)
    p = run_file(tmp_path, list(MODELS))
    assert main(["run", str(p), "--no-progress"]) == 0
    row = json.loads((tmp_path / "outputs/r/predictions/m3/bench.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user"]
    assert row["messages"][1]["content"].startswith("answer <m3> to Q1") and row["turns"][1] == "second <m3>"
    turns = sorted({(b["turn"], b["prompt"]) for b in row["extra"]["battles"]})
    assert turns == [(1, "luopan-pair"), (2, "luopan-pair-multi-turn")]


def test_one_order_and_chinese_verdicts(judge_registry, tmp_path):
    write_bench(tmp_path, MODELS)
    calls = tmp_path / "calls.txt"
    p = run_file(tmp_path, list(MODELS), judge=f"{{strengths: {{m1: 3, m2: 2, m3: 2}}, style: chinese, calls_log: {calls}}}",
                 params="{opponents: all, baseline: m2, swap: false, bootstrap: 50}")
    assert main(["run", str(p), "--no-progress"]) == 0
    assert _calls(calls) == 3 * 6 * 2
    arena = _arena(tmp_path)
    assert arena["judges"]["judge"]["pairs"] == 0 and arena["judges"]["judge"]["consistency"] is None
    board = {r["model"]: r for r in arena["leaderboards"]["judge judge"]}
    assert board["m1"]["win_rate_vs_baseline"] == 100.0 and board["m3"]["win_rate_vs_baseline"] == 50.0  # 平局
    assert "not measured (swap: false)" in (tmp_path / "outputs/r/summary.md").read_text()


def test_baseline_only_and_the_default_baseline(judge_registry, tmp_path):
    write_bench(tmp_path, MODELS)
    p = run_file(tmp_path, list(MODELS), params="{bootstrap: 0}")  # baseline: the first model, m1
    assert main(["run", str(p), "--no-progress"]) == 0
    s = _summary(tmp_path)
    overall = next(r for r in _table(s, "Summary")["rows"] if r[1] == "overall (weighted)")
    assert overall[4:7] == [50.0, 0.0, 0.0]  # m1 is the baseline; m2 and m3 always lose to it (then: version)
    arena = _arena(tmp_path)
    assert arena["baseline"] == "m1" and arena["judges"]["judge"]["battles"] == 2 * 12


VOTES = """model_a,model_b,winner,annotator,question_id,turn
m1,m2,model_a,alice,4,1
m2,m3,tie,alice,4,1
m3,m1,model_a,bob,4,1
m1,m2,model_b,bob,5,2
"""


def test_votes_beside_the_judge_and_agreement(judge_registry, tmp_path):
    write_bench(tmp_path, MODELS)
    (tmp_path / "votes.csv").write_text(VOTES)
    p = run_file(tmp_path, list(MODELS), params="{opponents: all, baseline: m2, bootstrap: 50, "
                                               "votes: [{path: votes.csv, name: human}]}")
    assert main(["run", str(p), "--no-progress"]) == 0
    arena = _arena(tmp_path)
    assert set(arena["leaderboards"]) == {"judge judge", "human", "all sources"}
    (agree,) = arena["agreement"]
    # the judge: m1 > m2 > m3 everywhere. Votes: m1>m2 agrees; m2=m3 and m3>m1 and m2>m1 (q5 turn 2) do not
    assert agree["comparisons"] == 4 and agree["agreement"] == pytest.approx(1 / 4)
    assert agree["comparisons_without_ties"] == 3 and agree["agreement_without_ties"] == pytest.approx(1 / 3)
    human = {r["model"]: r for r in arena["leaderboards"]["human"]}
    assert human["m1"]["battles"] == 3 and human["m1"]["win_rate_vs_baseline"] == pytest.approx(50.0)


def test_votes_alone_make_no_judge_calls(judge_registry, tmp_path):
    write_bench(tmp_path, MODELS)
    (tmp_path / "votes.jsonl").write_text("".join(json.dumps(v) + "\n" for v in [
        {"model_a": "m1", "model_b": "m2", "winner": "model_a", "judge": "expert", "question_id": 1},
        {"model_a": "m3", "model_b": "m2", "winner": "m3", "judge": "expert", "question_id": 1},
        {"model_a": "m1", "model_b": "m2", "winner": "tie", "judge": "expert", "question_id": 2},
        {"model_a": "m1", "model_b": "gpt-9", "winner": "tie", "judge": "expert", "question_id": 2},
    ]))
    p = run_file(tmp_path, list(MODELS), judge="", params="{judge: false, baseline: m2, bootstrap: 50, "
                                                          "votes: [{path: votes.jsonl}]}")
    assert main(["run", str(p), "--no-progress"]) == 0
    arena = _arena(tmp_path)
    assert list(arena["leaderboards"]) == ["votes"] and arena["judges"] == {}
    board = {r["model"]: r for r in arena["leaderboards"]["votes"]}
    assert board["m1"]["win_rate_vs_baseline"] == pytest.approx(75.0) and board["m3"]["win_rate_vs_baseline"] == 100.0
    assert "1 on models or questions not in this run left out" in (tmp_path / "outputs/r/summary.md").read_text()
    res = json.loads((tmp_path / "outputs/r/results/m1/bench.json").read_text())
    assert "judges" not in res["provenance"]
    writing = next(s for s in res["subsets"] if s["subset"] == "writing")
    assert writing["n"] == 2 and writing["score"] == pytest.approx(0.75)  # q1 won, q2 tied; q3, q4 no votes


def test_pairwise_cascade_rule_decides_where_the_reference_allows(judge_registry, tmp_path):
    answers = {("m1", 5): ("<m1> Adding up gives 35.", "second <m1>"), ("m2", 5): ("<m2> I get 36.", "second <m2>"),
               ("m3", 5): ("<m3> It is 36", "second <m3>")}
    write_bench(tmp_path, MODELS, answers=answers)
    calls = tmp_path / "calls.txt"
    p = run_file(tmp_path, list(MODELS), judge=f"{{strengths: {{m1: 1, m2: 2, m3: 3}}, calls_log: {calls}}}",
                 params="{opponents: all, baseline: m2, bootstrap: 50, cascade: {rule: final_number}}")
    assert main(["run", str(p), "--no-progress"]) == 0
    arena = _arena(tmp_path)
    # q5 turn 1: m1 is right, m2 and m3 wrong: the rule decides m1-m2 and m1-m3 (2 battles, 4 calls saved); q6
    # (nobody matches 42) and every turn 2 go to the judge
    assert arena["judges"]["judge"]["rule_decided"] == 2 and arena["judges"]["judge"]["calls_saved"] == 4
    assert _calls(calls) == 72 - 4
    battles = [json.loads(x) for x in (tmp_path / "outputs/r/arena/bench/battles.jsonl").read_text().splitlines()]
    q5 = [b for b in battles if b["question"] == "5#1" and "m1" in (b["a"], b["b"])]
    assert all((b["outcome"] == 1.0) == (b["a"] == "m1") for b in q5)
    assert "cascade: the rule decided 2 battles, saving 4 judge calls" in (tmp_path / "outputs/r/summary.md").read_text()


def test_config_errors_are_one_line(judge_registry, tmp_path, capsys):
    write_bench(tmp_path, MODELS)
    p = run_file(tmp_path, ["m1", "m2"], dataset="    judge: jduge")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "datasets[0].judge: no model is named 'jduge' (did you mean 'judge'?)" in err and len(err.splitlines()) == 1
    p = run_file(tmp_path, ["m1", "m2"], params="{oponents: all}")
    assert main(["validate", str(p)]) == 2
    assert "unknown key 'oponents' (did you mean 'opponents'?)" in capsys.readouterr().err
    p = run_file(tmp_path, ["m1", "m2"], judge="")
    assert main(["validate", str(p)]) == 2
    assert "pairwise needs a judge" in capsys.readouterr().err
    p = run_file(tmp_path, ["m1", "m2"], judge="", extra_models="  - {name: j, backend: scripted, role: judge}")
    assert main(["validate", str(p)]) == 2
    assert "judge 'j' must be a chat model (kind: chat)" in capsys.readouterr().err
    p = run_file(tmp_path, ["m1", "m2"], params="{baseline: m9}")
    assert main(["validate", str(p)]) == 2
    assert "pairwise: baseline 'm9' is not a model of this run" in capsys.readouterr().err


def test_dry_run_shows_later_turns_and_the_judge(judge_registry, tmp_path, capsys):
    write_bench(tmp_path, MODELS, questions=3)
    p = run_file(tmp_path, ["m1", "m2"])
    assert main(["run", str(p), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "turns 2+: 3 requests, 0 cached" in out and "judged by judge" in out
    assert main(["run", str(p), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["run", str(p), "--dry-run"]) == 0
    assert "turns 2+: 3 requests, 3 cached" in capsys.readouterr().out


def test_missing_answer_fails_the_item_by_name(judge_registry, tmp_path, capsys):
    write_bench(tmp_path, MODELS, questions=3)
    f = tmp_path / "answers" / "m2.jsonl"
    f.write_text("".join(line + "\n" for line in f.read_text().splitlines()[:2]))  # no answer to question 3
    p = run_file(tmp_path, ["m1", "m2"], params="{baseline: m1, bootstrap: 0}")
    assert main(["run", str(p), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "FAILED m2/bench" in err and "m2.jsonl: no answer for question '3'" in err


def test_two_judges_each_with_its_consistency(judge_registry, tmp_path):
    write_bench(tmp_path, MODELS, questions=4)
    second = "  - {name: lazy, backend: scripted, kind: chat, role: judge, params: {biased: ['1', '2', '3', '4']}}"
    p = run_file(tmp_path, list(MODELS), extra_models=second, params="{opponents: all, baseline: m2, bootstrap: 50}")
    assert main(["run", str(p), "--no-progress"]) == 0
    arena = _arena(tmp_path)
    assert set(arena["leaderboards"]) == {"judge judge", "judge lazy", "all sources"}
    assert arena["judges"]["judge"]["consistency"] == 1.0
    assert arena["judges"]["lazy"]["consistency"] == 0.0  # always "A": every pair inconsistent, all ties
    lazy = {r["model"]: r for r in arena["leaderboards"]["judge lazy"]}
    assert lazy["m1"]["win_rate_vs_baseline"] == 50.0 and lazy["m3"]["win_rate_vs_baseline"] == 50.0
    res = json.loads((tmp_path / "outputs/r/results/m1/bench.json").read_text())
    assert set(res["provenance"]["judges"]) == {"judge", "lazy"}
