"""The real benchmark files in $LUOPAN_DATA: MT-Bench, Arena-Hard and AlpacaEval questions, their pregenerated
answers served by the ``answers`` backend, MT-Bench's own judge prompts, and AlpacaEval's annotations as votes."""

from __future__ import annotations

import pytest

from luopan.errors import ConfigError
from luopan.types import FailedResult, GenerationRequest
from luopan_judge.answers import AnswersBackend
from luopan_judge.prompts import PromptSet, render
from luopan_judge.questions import QuestionsDataset
from luopan_judge.votes import VotesSpec, load_votes


def test_mt_bench_questions_turns_and_references():
    d = QuestionsDataset("mt_bench/mt_bench")
    assert d.subsets() == ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"]
    samples = [s for sub in d.subsets() for s in d.load(sub)]
    assert len(samples) == 80 and all(len(s.turns or ()) == 2 for s in samples)
    with_ref = {s.subset for s in samples if s.target}
    assert with_ref == {"math", "reasoning", "coding"} and sum(1 for s in samples if s.target) == 30
    s = d.load("math")[0]
    assert s.id == "111" and s.prompt == s.turns[0] and len(s.target) == 2
    assert len(d.fingerprint()) == 64
    first = QuestionsDataset("mt_bench/mt_bench", turns=1).load("writing")[0]
    assert first.turns is None and first.prompt.startswith("Compose an engaging travel blog post")


def test_pregenerated_answers_by_id_and_turn():
    d = QuestionsDataset("mt_bench/mt_bench")
    s = d.load("math")[0]
    b = AnswersBackend("mt_bench/mt_bench/model_answer", model="vicuna-13b-v1.3")
    one = GenerationRequest(messages=(("user", s.turns[0]),), sample_id=s.id)
    two = GenerationRequest(messages=(("user", s.turns[0]), ("assistant", "..."), ("user", s.turns[1])), sample_id=s.id)
    missing = GenerationRequest(messages=(("user", "never asked"),), sample_id="9999")
    r1, r2, r3 = b.generate([one, two, missing])
    assert r1.text != r2.text and r1.text and r2.text
    assert isinstance(r3, FailedResult) and "no answer for question '9999'" in r3.error
    assert b.identity()["model"] == "vicuna-13b-v1.3" and len(b.identity()["sha256"]) == 64
    with pytest.raises(ConfigError, match="did you mean 'vicuna-13b-v1.3'"):
        AnswersBackend("mt_bench/mt_bench/model_answer", model="vicuna-13b-v13")


def test_arena_hard_and_alpaca_eval_layouts():
    ah = QuestionsDataset("arena_hard/arena-hard-v0.1")
    (sub,) = ah.subsets()
    qs = ah.load(sub)
    assert len(qs) == 500 and qs[0].target is None and qs[0].meta["cluster"]
    base = AnswersBackend("arena_hard/arena-hard-v0.1/model_answer", model="gpt-4-0314")
    (r,) = base.generate([GenerationRequest(messages=(("user", qs[0].prompt),), sample_id=qs[0].id)])
    assert r.text.startswith("X:1")
    v2 = QuestionsDataset("arena_hard/arena-hard-v2.0")  # its prompts hold U+2028: lines are split on \n only
    assert v2.subsets() == ["hard_prompt", "creative_writing"] and v2.describe()["questions"] == 750

    ae = QuestionsDataset("alpaca_eval/results/gpt4_1106_preview/model_outputs.json")
    assert ae.subsets() == ["helpful_base", "koala", "oasst", "selfinstruct", "vicuna"]
    samples = [s for sub in ae.subsets() for s in ae.load(sub)]
    assert len(samples) == 805
    s = next(x for x in samples if x.subset == "koala")
    davinci = AnswersBackend("alpaca_eval/results", model="text_davinci_003")
    by_id = davinci.generate([GenerationRequest(messages=(("user", s.prompt),), sample_id=s.id)])[0]
    by_text = davinci.generate([GenerationRequest(messages=(("user", s.prompt),))])[0]
    assert by_id.text == by_text.text and by_id.text


def test_mt_bench_judge_prompts_render():
    ps = PromptSet("mt_bench/judge_prompts.jsonl")
    names = {(k, ref, t): ps.get(k, ref, t).name for k in ("pair", "single") for ref in (False, True) for t in (1, 2)}
    assert names[("pair", False, 1)] == "pair-v2" and names[("pair", True, 2)] == "pair-math-v1-multi-turn"
    assert names[("single", True, 1)] == "single-math-v1"
    values = {"question": "Q?", "answer_a": "aa", "answer_b": "bb", "ref_answer_1": "R1", "ref_answer_2": "R2",
              "question_1": "Q1", "question_2": "Q2", "answer_a_1": "a1", "answer_a_2": "a2", "answer_b_1": "b1",
              "answer_b_2": "b2", "answer": "x", "answer_1": "x1", "answer_2": "x2"}
    conv = render(ps.get("pair", True, 2), values)
    assert conv[0][0] == "system" and "[[A]]" in conv[0][1]
    assert "### Reference answer:\nR2" in conv[1][1] and "### Assistant B:\nb2" in conv[1][1]
    with pytest.raises(ConfigError, match="no value for 'ref_answer_1'"):
        render(ps.get("single", True, 1), {"question": "q", "answer": "a"})


def test_alpaca_eval_annotations_as_votes():
    votes = load_votes(VotesSpec(path="alpaca_eval/results/gpt4/alpaca_eval_gpt4/annotations.json",
                                 models={"gpt4": "gpt-4"}))
    assert len(votes) == 805 and {(v.model_a, v.model_b) for v in votes} == {("text_davinci_003", "gpt-4")}
    assert {v.outcome for v in votes} <= {0.0, 0.5, 1.0} and votes[0].annotator == "alpaca_eval_gpt4"
    weighted = load_votes(VotesSpec(path="alpaca_eval/results/text_davinci_003/weighted_alpaca_eval_gpt4_turbo/"
                                         "annotations.json", name="gpt4-turbo"))
    assert all(0.0 <= v.outcome <= 1.0 for v in weighted) and weighted[0].source == "gpt4-turbo"


def test_vote_file_errors_name_the_record(tmp_path):
    (tmp_path / "v.csv").write_text("model_a,model_b,winner\nx,y,model_a\nx,y,banana\n")
    with pytest.raises(ConfigError, match=r"v.csv: record 1: winner: 'banana' is not model_a"):
        load_votes(VotesSpec(path=str(tmp_path / "v.csv")))
    (tmp_path / "w.jsonl").write_text('{"model_a": "x", "winner": "tie"}\n')
    with pytest.raises(ConfigError, match=r"w.jsonl: record 0: missing field\(s\) model_b"):
        load_votes(VotesSpec(path=str(tmp_path / "w.jsonl")))
