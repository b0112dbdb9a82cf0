"""Scoring for the benchmark presets: GSM8K strict/flexible extraction with lm-eval's patterns, BBH's answer
filter, MATH answer equivalence, LAMBADA's greedy accuracy and perplexity, TruthfulQA MC2, WinoGrande's
grouped options — on tables of real-looking outputs."""

from __future__ import annotations

import math
import re

import pytest

from luopan.components import EvalContext
from luopan.plugins import load_registry
from luopan.types import GenerationResult, LoglikelihoodResult, Sample
from luopan_bench.mathans import equivalent, extract_answer, normalize
from luopan_generic.evaluators import regex_filter
from luopan_mcq.accuracy import AccuracyEvaluator

GEN = EvalContext(mode="generate", model="m", dataset="d")
LL = EvalContext(mode="likelihood", model="m", dataset="d")


@pytest.fixture(scope="module")
def reg():
    return load_registry()


def evaluator(reg, preset: str):
    fields = reg.presets["dataset"][preset].fields
    return reg.get("evaluator", fields["evaluator"]).build(fields.get("evaluator_params", {}))


def gen(texts: list[str]) -> list[GenerationResult]:
    return [GenerationResult(t) for t in texts]


# ---------------------------------------------------------------- GSM8K chain of thought

GSM8K = [
    # (model output, gold, strict right?, flexible right?)
    (" Janet has 16 - 3 - 4 = 9 eggs. She makes 9 * 2 = 18 dollars. The answer is 18.", "18", True, True),
    (" 16 - 3 - 4 = 9. 9 * 2 = $18. The answer is $18.", "18", False, True),  # lm-eval's strict: no "$"
    (" The answer is 1,000.\n\n", "1000", True, True),
    (" It makes 18 dollars every day.", "18", False, True),
    (" The answer is 17. Wait, 9 * 2 = 18.", "18", False, True),  # strict: the first; flexible: the last
    (" The answer is -5.", "-5", True, True),
    (" Total is 2.50 dollars. The answer is 2.5.", "2.5", True, True),
    (" No idea.", "7", False, False),
]


@pytest.mark.parametrize("text,gold,strict,flexible", GSM8K)
def test_gsm8k_cot_strict_and_flexible(reg, text, gold, strict, flexible):
    ev = evaluator(reg, "gsm8k_cot")
    [s] = ev.score([Sample("g/0", "g", "p", gold)], gen([text]), GEN)
    assert (s.score == 1.0, s.extra["flexible_match"] == 1.0) == (strict, flexible)


def test_lm_eval_regex_filter_semantics():
    flexible = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
    assert regex_filter(flexible, "so 5 x 3 = 15 dollars, 23 - 15 is 8.", -1) == "8."
    assert regex_filter(re.compile(r"The answer is (\-?[0-9\.\,]+)."), "nothing") == "[invalid]"
    answer = re.compile("(?<=the answer is )(.*)(?=.)")
    assert regex_filter(answer, "So the answer is (B).\nQ: next") == "(B)"


# ---------------------------------------------------------------- BBH


@pytest.mark.parametrize("text,target,ok", [
    ("not True = False. So the answer is False.", "False", True),
    ("... So the answer is (C).", "(C)", True),
    ("... So the answer is (c).", "(C)", False),  # lm-eval's bbh exact_match is case-sensitive
    ("... So the answer is valid.", "invalid", False),
    ("The result is True.", "True", False),  # no "the answer is": [invalid]
])
def test_bbh_answer_after_the_answer_is(reg, text, target, ok):
    [s] = evaluator(reg, "bbh").score([Sample("b/0", "b", "p", target)], gen([text]), GEN)
    assert s.score == float(ok)


# ---------------------------------------------------------------- MATH

MATH = [
    # (solution generated, gold, equivalent?)
    ("So $x=\\frac{1}{2}$.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}", True),
    ("Final Answer: The final answer is $0.5$. I hope it is correct.", "\\frac{1}{2}", True),
    ("Final Answer: The final answer is $\\frac12$. I hope it is correct.", "\\frac{1}{2}", True),
    ("The answer is $\\boxed{2\\sqrt{2}}$.", "\\sqrt{8}", True),
    ("Final Answer: The final answer is $[2,5)$. I hope it is correct.", "[2,5)", True),
    ("Final Answer: The final answer is $18$ dollars. I hope it is correct.", "18", True),
    ("Final Answer: The final answer is $\\dfrac{3}{4}$. I hope it is correct.", "\\frac{3}{4}", True),
    ("Final Answer: The final answer is $x^2+2x+1$. I hope it is correct.", "(x+1)^2", True),
    ("Final Answer: The final answer is $17$. I hope it is correct.", "18", False),
    ("Final Answer: The final answer is $[2,5]$. I hope it is correct.", "[2,5)", False),
    ("I could not solve it.", "3", False),
]


@pytest.mark.parametrize("text,gold,ok", MATH)
def test_math_equivalence(reg, text, gold, ok):
    [s] = evaluator(reg, "math").score([Sample("m/0", "m", "p", gold)], gen([text]), GEN)
    assert s.score == float(ok), (text, s.prediction)


def test_math_answer_extraction_and_normalisation():
    assert extract_answer("x\nFinal Answer: The final answer is $24$. I hope it is correct.") == "$24$"
    assert extract_answer("so $\\boxed{\\frac{a}{b}}$ and more") == "\\frac{a}{b}"
    assert extract_answer("no answer here") is None
    assert normalize("$18$ dollars") == "18" and normalize("\\text{(B)}") == "(B)"
    assert normalize("x = 1,000") == "1000"
    assert not equivalent(None, "1")


def test_math_sympy_fallback_without_math_verify(monkeypatch):
    from luopan_bench import mathans

    monkeypatch.setattr(mathans, "math_verify_available", lambda: False)
    assert mathans.equivalent("0.5", "\\frac{1}{2}")
    assert mathans.equivalent("2\\sqrt{2}", "\\sqrt{8}")
    assert not mathans.equivalent("17", "18")
    assert not mathans.equivalent("[2,5]", "[2,5)")  # not parseable by the fallback: not called equal


# ---------------------------------------------------------------- likelihood metrics


def test_lambada_greedy_accuracy_and_perplexity(reg):
    ev = evaluator(reg, "lambada_openai")
    samples = [Sample(f"l/{i}", "l", "ctx", 0, [" word"]) for i in range(3)]
    outs = [[LoglikelihoodResult(-1.0, True)], [LoglikelihoodResult(-2.0, False)], [LoglikelihoodResult(-3.0, True)]]
    scored = ev.score(samples, outs, LL)
    assert [s.score for s in scored] == [1.0, 0.0, 1.0]
    assert all(s.extra["perplexity"] == pytest.approx(math.exp(2.0)) for s in scored)  # exp(-mean ll)


def test_truthfulqa_mc2_probability_mass(reg):
    ev = evaluator(reg, "truthfulqa_mc2")
    s = Sample("t/0", "t", "p", 0, [" a", " b", " c"], meta={"mc2_labels": [1, 1, 0]})
    lls = [math.log(0.2), math.log(0.2), math.log(0.6)]
    [sc] = ev.score([s], [[LoglikelihoodResult(x) for x in lls]], LL)
    assert sc.score == pytest.approx(0.4)
    assert sc.extra["mc1_style"] == 0.0  # the single most likely answer is a false one


def test_winogrande_options_are_scored_together():
    ev = AccuracyEvaluator()
    samples = []
    for q, gold in enumerate((1, 0)):
        for k in range(2):
            samples.append(Sample(f"w/{q}" + (f"@{k}" if k else ""), "w", f"ctx{k}", gold, [" rest"],
                                  meta={"partial": {"group": f"w/{q}", "option": k, "n": 2}}))
    # question 0: option 1 more likely (gold 1: right); question 1: option 1 more likely (gold 0: wrong)
    outs = [[LoglikelihoodResult(x)] for x in (-5.0, -2.0, -4.0, -1.0)]
    scored = ev.score(samples, outs, LL)
    assert [s.score for s in scored] == [1.0, 1.0, 0.0, 0.0]
    assert [s.prediction for s in scored] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="multiple of 2"):
        ev.score(samples[:3], outs[:3], LL)  # a limit that cuts a question's options
    with pytest.raises(ValueError, match="likelihood only"):
        ev.score(samples, gen(["a"] * 4), GEN)


def test_acc_norm_measures_the_choice_without_its_delimiter():
    # lm-eval divides by len(choice) without the leading " ": -3/2 = -1.5 < -5.5/4 = -1.375, so " abcd" wins;
    # counting the space would give -3/3 = -1.0 > -5.5/5 = -1.1 and pick " ab"
    s = Sample("n/0", "n", "p", 1, [" ab", " abcd"], meta={"target_delimiter": " "})
    [sc] = AccuracyEvaluator().score([s], [[LoglikelihoodResult(-3.0), LoglikelihoodResult(-5.5)]], LL)
    assert sc.score == 0.0 and sc.extra["acc_norm"] == 1.0
