"""Single-answer grading (1-10, per turn, references shown) and the cascade (rule first, the judge for the rest)
with a scripted judge: exact scores, failed ratings counted and never scored, judge calls saved."""

from __future__ import annotations

import json

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


def test_single_grade_per_turn_with_failures(judge_registry, tmp_path, capsys):
    write_bench(tmp_path, MODELS)
    calls = tmp_path / "calls.txt"
    p = run_file(tmp_path, list(MODELS), evaluator="single_grade", params="{}",
                 judge=f"{{strengths: {{m1: 9, m2: 6, m3: 2}}, garbage: ['2'], style: rating_slash, calls_log: {calls}}}")
    assert main(["run", str(p), "--no-progress"]) == 0
    # 3 models x 6 questions x 2 turns; q2 (2 turns x 3 models) retried twice
    assert len(calls.read_text().splitlines()) == 36 + 6 * 2
    res = json.loads((tmp_path / "outputs/r/results/m1/bench.json").read_text())
    writing = next(s for s in res["subsets"] if s["subset"] == "writing")
    assert writing["score"] == pytest.approx(0.9) and writing["n"] == 3 and writing["unscored"] == 1
    assert writing["metrics"]["rating_turn1"] == pytest.approx(9.0) and writing["metrics"]["n_failed"] == pytest.approx(0.5)
    rows = [json.loads(x) for x in (tmp_path / "outputs/r/predictions/m1/bench.jsonl").read_text().splitlines()]
    math = next(r for r in rows if r["id"] == "5")
    assert [r["prompt"] for r in math["extra"]["ratings"]] == ["luopan-single-ref", "luopan-single-ref-multi-turn"]
    q2 = next(r for r in rows if r["id"] == "2")
    assert q2["score"] is None and all(r["failed"] == "no verdict after 3 replies" for r in q2["extra"]["ratings"])
    out = capsys.readouterr().out
    assert "mean rating 9.00/10 over 10 ratings; turn 1: 9.00; turn 2: 9.00" in out
    # every rating of a model is the same here: no spread, so each interval has width 0
    assert "| bench | overall (weighted) | rating/10 | 5 | 90.00 ± 0.00 | 60.00 ± 0.00 | 20.00 ± 0.00 |" in out


def test_cascade_rule_first_judge_for_the_rest(judge_registry, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "arith.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "Q1 7 * 5?", "answer": "#### 35"}, {"question": "Q2 6 * 7?", "answer": "#### 42"},
        {"question": "Q3 2 + 2?", "answer": "#### 4"}, {"question": "Q4 9 - 1?", "answer": "#### 8"}]))
    (tmp_path / "answers").mkdir()
    (tmp_path / "answers" / "m1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "arith/0", "answer": "#### 35"},                      # the rule accepts it
        {"id": "arith/1", "answer": "Six sevens make 42 in total."},  # the rule cannot, the judge says correct
        {"id": "arith/2", "answer": "I think it is 5."},             # the judge says incorrect
        {"id": "arith/3", "answer": "The answer is 8"}]))            # the rule accepts it (strict form)
    calls = tmp_path / "calls.txt"
    (tmp_path / "run.yaml").write_text(f"""
run: {{output_dir: {tmp_path / 'outputs'}, name: c}}
models:
  - {{name: m1, backend: answers, kind: chat, params: {{path: answers, model: m1}}}}
  - {{name: judge, backend: scripted, kind: chat, role: judge, params: {{calls_log: {calls}}}}}
datasets:
  - name: arith
    loader: files
    params: {{path: data/arith.jsonl, prompt: "{{{{question}}}}", target: answer}}
    mode: generate
    evaluator: cascade
    evaluator_params: {{rule: number_match}}
""")
    assert main(["run", str(tmp_path / "run.yaml"), "--no-progress"]) == 0
    assert len(calls.read_text().splitlines()) == 2
    res = json.loads((tmp_path / "outputs/c/results/m1/arith.json").read_text())
    (sub,) = res["subsets"]
    assert sub["score"] == pytest.approx(0.75)
    assert sub["metrics"]["rule_decided"] == pytest.approx(0.5) and sub["metrics"]["judge_called"] == pytest.approx(0.5)
    assert "rule decided 2 of 4 (judge calls saved: 2)" in capsys.readouterr().out
