"""``number_match`` and ``exact_match``: the number extractors on real-looking outputs, and on the GSM8K
authors' own model solutions (../shared/datasets/gsm8k/example_model_solutions.jsonl, labelled correct or not)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from luopan.components import EvalContext
from luopan.plugins import load_registry
from luopan.types import GenerationResult, Sample
from luopan_generic.evaluators import ExactMatch, ExactMatchParams, NumberMatch
from luopan_generic.numbers import extract_flexible, extract_strict, gold_number, normalise_number

DATA = Path(os.environ["LUOPAN_DATA"].split(os.pathsep)[0])
GEN = EvalContext("generate", "m", "d")


@pytest.mark.parametrize(
    ("output", "strict", "flexible"),
    [
        # GSM8K's own answer format, and lm-eval's few-shot continuations
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18", "18"),
        ("Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18\n\n", "18", "18"),
        ("#### $1,000", "1000", "1000"),
        ("He made a profit of $70,000.\n#### 70000", "70000", "70000"),
        ("The total is 1,450,000 dollars.\n#### 1,450,000", "1450000", "1450000"),
        ("#### -5", "-5", "-5"),
        ("####18", "18", "18"),
        # the first "####" counts (lm-eval's take_first), the flexible one is the last number
        ("#### 18\nQuestion 2: ... #### 20", "18", "20"),
        # chain-of-thought answer sentences
        ("So she earns 18 dollars a day. The answer is 18.", "18", "18"),
        ("The answer is $18.00.", "18", "18"),
        ("Therefore, the final answer is: 1,000", "1000", "1000"),
        ("The answer is **42**.", "42", "42"),
        ("The answer is \\boxed{7}", "7", "7"),
        # no stated answer: only the flexible extraction finds something
        ("She makes 9 * 2 = $18 every day.", None, "18"),
        ("The cost is $1,000.", None, "1000"),
        ("18.", None, "18"),
        ("It is 18.5 meters long.", None, "18.5"),
        ("The temperature fell to -5 degrees.", None, "-5"),
        ("Her balance is -$20 now", None, "-20"),
        ("So 10 - 5 = 5", None, "5"),  # a spaced minus is an operator
        ("pages 3-5", None, "5"),  # a hyphen between numbers is no sign
        ("Used 50% of the 300 apples", None, "300"),
        ("The answer: twelve", None, None),
        ("Model COVID19 and x2 are names", None, None),  # digits inside words are not numbers
        ("答案是１８元", None, "18"),  # full-width digits after Chinese text
        ("", None, None),
    ],
)
def test_number_extractors(output, strict, flexible):
    assert extract_strict(output) == strict
    assert extract_flexible(output) == flexible


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("1,000", "1000"),
        ("$1,000", "1000"),
        ("$18.00", "18"),
        ("18.", "18"),
        ("-0.50", "-0.5"),
        (" 7 ", "7"),
        ("3.140", "3.14"),
        ("-0", "0"),
        ("Paris.", "paris"),
    ],
)
def test_normalise_number(text, normal):
    assert normalise_number(text) == normal
    assert normalise_number(normal) == normal  # idempotent


def test_gold_number_reads_after_the_last_hashes():
    assert gold_number("Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n#### 18") == "18"
    assert gold_number("So 1,000 - 550 = 450\n#### 1,450,000") == "1450000"
    assert gold_number(18) == "18" and gold_number("$5.50") == "5.5"


def _samples(targets):
    return [Sample(f"s/{i}", "s", "p", t) for i, t in enumerate(targets)]


def test_number_match_scores_strict_and_reports_flexible():
    ev = load_registry().get("evaluator", "number_match").build({})
    assert ev.metric == "strict_match"
    samples = _samples(["...\n#### 18", "...\n#### 1,000", "#### 5", "#### 3"])
    outputs = [
        GenerationResult(t)
        for t in ["9 * 2 = 18\n#### 18", "It costs $1,000.", "The answer is 6. Wait, 5", "#### 4"]
    ]
    scored = ev.score(samples, outputs, GEN)
    assert [s.score for s in scored] == [1.0, 0.0, 0.0, 0.0]
    assert [s.extra["flexible_match"] for s in scored] == [1.0, 1.0, 1.0, 0.0]
    assert [s.extra["strict_found"] for s in scored] == [1.0, 0.0, 1.0, 1.0]
    assert [s.prediction for s in scored] == ["18", None, "6", "4"]
    assert scored[1].extra["flexible"] == "1000" and scored[1].extra["gold"] == "1000"
    flexible = NumberMatch(primary="flexible")
    assert flexible.metric == "flexible_match"
    assert [s.score for s in flexible.score(samples, outputs, GEN)] == [1.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="mode: generate"):
        ev.score(samples, outputs, EvalContext("likelihood", "m", "d"))


def test_number_match_on_the_gsm8k_authors_solutions():
    """Their 6B and 175B solutions end with "A: N" and are labelled correct or not: the flexible extraction
    agrees with every label, and the strict one does once the answer line is written "#### N"."""
    test = [json.loads(x) for x in (DATA / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    sols = [
        json.loads(x)
        for x in (DATA / "gsm8k" / "example_model_solutions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(test) == len(sols) == 1319
    samples, outputs, labels = [], [], []
    for i, (t, s) in enumerate(zip(test, sols)):
        assert t["question"] == s["question"]
        for model in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            text = s[model]["solution"]
            head, _, last = text.rpartition("\nA: ")
            samples.append(Sample(f"gsm8k/{i}", "gsm8k", "", t["answer"]))
            outputs.append(GenerationResult(f"{head}\n#### {last}" if head else text))
            labels.append(float(s[model]["is_correct"]))
    scored = NumberMatch().score(samples, outputs, GEN)
    assert [x.score for x in scored] == labels
    assert [x.extra["flexible_match"] for x in scored] == labels
    assert 0.2 < sum(labels) / len(labels) < 0.8


def test_exact_match_options():
    samples = _samples(["Paris", ["Tokyo", "東京"], "yes", "42"])
    outputs = [GenerationResult(t) for t in ["  paris ", "東京", "Yes.", "The answer is 42\nmore"]]
    assert [s.score for s in ExactMatch().score(samples, outputs, GEN)] == [1.0, 1.0, 0.0, 0.0]
    loose = ExactMatch(ignore_punctuation=True, regexes_to_ignore=[r"(?s)^.*answer is ", r"\n.*"])
    assert [s.score for s in loose.score(samples, outputs, GEN)] == [1.0, 1.0, 1.0, 1.0]
    strict_case = ExactMatch(ignore_case=False)
    assert strict_case.score(samples[:1], outputs[:1], GEN)[0].score == 0.0
    first = ExactMatch(first_line=True, ignore_punctuation=True)
    assert first.score(_samples(["the answer is 42"]), outputs[3:], GEN)[0].score == 1.0
    with pytest.raises(ValidationError, match="does not compile"):
        ExactMatchParams(regexes_to_ignore=["("])
    with pytest.raises(ValueError, match="mode: generate"):
        ExactMatch().score(samples, outputs, EvalContext("likelihood", "m", "d"))
