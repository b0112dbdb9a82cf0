"""The needle normaliser and key-phrase matching; sentence boundaries; multi-needle scoring."""

from __future__ import annotations

import pytest

from luopan.components import EvalContext
from luopan.errors import ConfigError
from luopan.types import GenerationResult, Sample
from luopan_needle.evaluator import NeedleMatch, groups_found
from luopan_needle.text import contains_key, normalise, sentence_ends, unwrap_lines


def test_normalise_case_punctuation_and_width():
    assert normalise("Dolores  PARK!!") == "dolores park"
    assert normalise("ＤＯＬＯＲＥＳ　Ｐａｒｋ．") == "dolores park"  # full-width letters, space and stop
    assert normalise("１９８７年") == "1987年"
    assert normalise("“上海人工智能实验室”。") == "上海人工智能实验室"
    assert normalise("Espresso-soaked dates") == "espresso soaked dates"


def test_normalise_folds_traditional_chinese():
    pytest.importorskip("opencc")
    assert normalise("上海人工智能實驗室") == normalise("上海人工智能实验室")
    assert normalise("上海人工智能實驗室", fold_chinese=False) != normalise("上海人工智能实验室", fold_chinese=False)


@pytest.mark.parametrize(("output", "key", "found"), [
    ("The best thing is to sit in dolores park.", "Dolores Park", True),
    ("THE BEST THING: EAT A SANDWICH", "eat a sandwich", True),
    ("Ｄｏｌｏｒｅｓ　Ｐａｒｋ", "Dolores Park", True),
    ("Alice was born in 19870.", "1987", False),
    ("Alice was born in 1987.", "1987", True),
    ("小红出生于1987年。", "1987", True),
    ("小明在上海人工 智能实验室实习", "上海人工智能实验室", True),
    ("小明在上海人工智能實驗室實習。", "上海人工智能实验室", True),
    ("小明在北京实习", "上海人工智能实验室", False),
    ("he started", "art", False),
    ("", "art", False),
])
def test_contains_key(output, key, found):
    if not key.isascii():
        pytest.importorskip("opencc")
    assert contains_key(output, key) is found


def test_sentence_ends_english_and_chinese():
    text = 'He left. "Go!" she said. Mr.Smith e.g.x 3.5 ok? 他走了。「好！」她說。'
    ends = sentence_ends(text)
    assert [text[:e][-3:] for e in ends] == ["ft.", 'o!"', "id.", "ok?", "走了。", "好！」", "她說。"]


def test_unwrap_lines_keeps_paragraphs_and_verse():
    text = "話說天下大勢，分久必合，\n合久必分。\n\n　　建寧二年\n四月"
    assert unwrap_lines(text) == "話說天下大勢，分久必合，合久必分。\n\n　　建寧二年四月"


def _sample(answers):
    return Sample("x", "en_multi/len1024", "p", answers, meta={"task": "multi", "length": 1024, "depth": 50.0,
                                                               "repeat": 0})


def test_multi_needle_score_is_fraction_recovered():
    answers = [["Figs"], ["Prosciutto"], ["Goat cheese"]]
    ev = NeedleMatch()
    ctx = EvalContext("generate", "m", "d")
    outs = [GenerationResult("The secret ingredients are figs and goat cheese."),
            GenerationResult("Prosciutto, goat cheese and FIGS."),
            GenerationResult("Pineapple.")]
    scored = ev.score([_sample(answers)] * 3, outs, ctx)
    assert [round(s.score, 3) for s in scored] == [0.667, 1.0, 0.0]
    assert scored[0].extra["found"] == 2 and scored[0].extra["needles"] == 3
    assert scored[0].extra["groups_found"] == [True, False, True]
    assert scored[1].extra["all_found"] == 1.0 and scored[0].extra["all_found"] == 0.0
    assert scored[0].extra["cell"]["depth"] == 50.0


def test_answer_group_alternatives():
    assert groups_found("sit in the park", [["Dolores Park", "eat a sandwich"]]) == [False]
    assert groups_found("eat a sandwich", [["Dolores Park", "eat a sandwich"]]) == [True]


def test_needle_match_needs_generate_mode():
    with pytest.raises(ConfigError, match="mode: generate"):
        NeedleMatch().score([_sample([["a"]])], [GenerationResult("a")], EvalContext("likelihood", "m", "d"))


class _Judge:
    kind = "chat"

    def __init__(self, replies):
        self.replies = replies
        self.prompts = []

    def generate(self, requests):
        self.prompts += [r.messages[0][1] for r in requests]
        return [GenerationResult(t) for t in self.replies]


def test_llm_judge_verdicts():
    judge = _Judge(["2", "Answer: 3 of them", "none"])
    ev = NeedleMatch(primary="judge", judge_backend=judge)
    answers = [["Figs"], ["Prosciutto"], ["Goat cheese"]]
    outs = [GenerationResult("figs, prosciutto"), GenerationResult("all three"), GenerationResult("?")]
    scored = ev.score([_sample(answers)] * 3, outs, EvalContext("generate", "m", "d"))
    assert [round(s.score, 3) for s in scored] == [0.667, 1.0, 0.0]
    assert scored[0].extra["keyphrase"] == pytest.approx(2 / 3) and scored[1].extra["keyphrase"] == 0.0
    assert "Reply with one number from 0 to 3" in judge.prompts[0] and "figs, prosciutto" in judge.prompts[0]


def test_a_thinking_judge_is_read_after_its_thinking():
    """The judge counts facts while it thinks; only the number in its final reply is its verdict."""
    replies = ["<think>1 fact? maybe 3</think>\n2", "<think>counting: 1, 2, 3 ...", "<think>none</think>3"]
    answers = [["Figs"], ["Prosciutto"], ["Goat cheese"]]
    outs = [GenerationResult("figs, prosciutto")] * 3
    scored = NeedleMatch(primary="judge", judge_backend=_Judge(replies)).score(
        [_sample(answers)] * 3, outs, EvalContext("generate", "m", "d"))
    assert [round(s.score, 3) for s in scored] == [0.667, 0.0, 1.0]  # the unfinished thought is no verdict


def test_the_judge_rule_comes_from_the_spec_or_the_judge_preset():
    from luopan_needle.evaluator import JudgeSpec

    class Components:
        def preset(self, kind, name):
            return {"backend": "hf", "reasoning": {"end": "</reasoning>", "start": None}}

    assert JudgeSpec(preset="r1").rule(Components()).end == "</reasoning>"
    assert JudgeSpec(preset="r1", reasoning="none").rule(Components()) is None
    assert JudgeSpec(backend="hf").rule(None).end == "</think>"
    with pytest.raises(ValueError, match="reasoning"):
        JudgeSpec(backend="hf", reasoning=3)
