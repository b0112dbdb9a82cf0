"""The embedded demo benchmark and the short-answer evaluator."""

from __future__ import annotations

import pytest

from luopan.components import EvalContext
from luopan.types import GenerationResult, Sample
from luopan_demo.dataset import DemoDataset
from luopan_demo.short_answer import ShortAnswer, matches, normalise


def test_demo_subsets_and_shapes():
    mcq, qa = DemoDataset("mcq"), DemoDataset("qa")
    assert mcq.subsets() == ["zh_mcq", "en_mcq"] and qa.subsets() == ["zh_qa", "en_qa"]
    s = mcq.load("zh_mcq")[0]
    assert s.choices == ["A", "B", "C", "D"] and s.target == 1 and s.meta["options"][1] == "北京"
    assert s.prompt.endswith("答案：") and s.chat_prompt and not s.chat_prompt.endswith("答案：")
    q = qa.load("en_qa")[0]
    assert q.choices is None and q.target == ["Tokyo"]
    assert len(mcq.fingerprint()) == 64
    with pytest.raises(ValueError, match="shots"):
        mcq.load("zh_mcq", shots=1)


@pytest.mark.parametrize(
    ("output", "ref", "mode", "ok"),
    [
        ("Tokyo", "Tokyo", "contains", True),
        ("tokyo.", "Tokyo", "exact", True),
        ("The capital is Tokyo.\nMore text", "Tokyo", "contains", True),
        ("4", "4", "contains", True),
        ("42", "4", "contains", False),
        ("He scolded me", "cold", "contains", False),
        ("北京。", "北京", "contains", True),
        ("答案：北京市", "北京", "contains", True),
        ("ＨＥＬＬＯ！", "hello", "exact", True),
        ("", "hello", "contains", False),
        ("first line\nTokyo", "Tokyo", "contains", False),
    ],
)
def test_short_answer_matching(output, ref, mode, ok):
    assert matches(output, ref, mode) is ok


def test_normalise_folds_width_case_and_punctuation():
    assert normalise("  Ｐａｃｉｆｉｃ  Ocean!! ") == "pacific ocean"


def test_short_answer_evaluator_scores_and_requires_generation():
    samples = [Sample("a/0", "a", "q", ["Tokyo"]), Sample("a/1", "a", "q", ["4", "four"])]
    outs = [GenerationResult("Tokyo"), GenerationResult("Five")]
    scored = ShortAnswer().score(samples, outs, EvalContext("generate", "m", "d"))
    assert [s.score for s in scored] == [1.0, 0.0]
    with pytest.raises(ValueError, match="mode: generate"):
        ShortAnswer().score(samples, [[], []], EvalContext("likelihood", "m", "d"))
