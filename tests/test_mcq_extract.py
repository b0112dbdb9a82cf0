"""extract_choice: reading the chosen option out of what models really write, in Chinese and English."""

from __future__ import annotations

import re

import pytest

from luopan_mcq.extract import ANSWER_PATTERNS, CORRECT_PATTERNS, LABEL, extract_choice

CASES = [
    # --- Chinese answer statements
    ("答案是 B", "B"),
    ("正确答案：B。", "B"),
    ("答案：C", "C"),
    ("答案为D", "D"),
    ("答案应该是C。", "C"),
    ("答案是选项 A", "A"),
    ("正确的选项是 A", "A"),
    ("综上所述，本题答案为：D．", "D"),
    ("答案：\n\n**B**", "B"),
    ("答案：b", "B"),
    ("答案是Ｃ", "C"),
    ("答案（Ｂ）", "B"),
    # --- choosing
    ("选B", "B"),
    ("应该选择C项", "C"),
    ("故选：A", "A"),
    ("这道题选D。不选A是因为它混淆了概念。", "D"),
    ("不选A，选D", "D"),
    # --- reasoning before the final answer
    ("A项错误，B项错误，D项错误，故本题选C。", "C"),
    ("答案：A\n\n解析：B项错误，C项说法片面，D项与题干无关。", "A"),
    ("答案是B吗？不对，再想一想，答案是C", "C"),
    ("A错误。B错误。C正确。D错误。", "C"),
    ("选项B错误，选项C正确", "C"),
    (
        "A is wrong because the force is too small. B is also wrong since it ignores friction. "
        "D contradicts the data. So the answer is C.",
        "C",
    ),
    ("Let's think step by step. Option A is incorrect. Option C is the correct answer.", "C"),
    # --- English answer statements
    ("The answer is **B**", "B"),
    ("Answer: B", "B"),
    ("**Answer:** (A)", "A"),
    ("The answer is: C. 1945", "C"),
    ("The correct option is (D).", "D"),
    ("Answer:\nD", "D"),
    ("answer: a", "A"),
    ("I would choose B.", "B"),
    ("I would not choose A; I'd go with C.", "C"),
    ("Final Answer: The final answer is $\\boxed{B}$. I hope it is correct.", "B"),
    ("Option B is correct.", "B"),
    ("<think>It could be A, or maybe B.</think>\n答案：D", "D"),
    # --- a bare or leading label
    ("B", "B"),
    ("B。", "B"),
    ("(B)", "B"),
    ("B. 北京", "B"),
    ("B) Beijing", "B"),
    ("b)", "B"),
    ("Ｂ", "B"),
    ("Ⓑ", "B"),
    ("我认为是B", "B"),
    # --- nothing to read, or nothing unambiguous
    ("Let's think step by step.", None),
    ("A good answer is hard to give without more context.", None),
    ("the answer is a matter of definition", None),
    ("A. 北京\nB. 上海\nC. 广州\nD. 深圳", None),
    ("A或B", None),
    ("答案不确定。", None),
    ("I don't know.", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_extracts_the_chosen_label(text, expected):
    assert extract_choice(text, ["A", "B", "C", "D"]) == expected


def test_there_are_at_least_forty_real_looking_cases():
    assert len(CASES) >= 40


OPTIONS = ["上海", "北京", "广州", "深圳"]


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        ("北京", OPTIONS, "B"),
        ("中国的首都是北京。", OPTIONS, "B"),
        ("The capital of France is Paris.", ["London", "Paris", "Berlin", "Rome"], "B"),
        ("北京市", ["北京", "北京市", "广州", "深圳"], "B"),  # the longer option that contains the shorter
        ("上海和北京都很大", OPTIONS, None),  # two options named: ambiguous
        ("3", ["1", "2", "3", "4"], "C"),  # a one-character option counts only as the whole reply
        ("共有3种可能，答案不唯一", ["1", "2", "3", "4"], None),
        ("答案是 B，北京", OPTIONS, "B"),  # a letter wins over option text
    ],
)
def test_option_text_when_no_label_is_found(text, options, expected):
    assert extract_choice(text, ["A", "B", "C", "D"], options) == expected


def test_no_letter_is_read_out_of_an_english_word():
    labels = [chr(ord("A") + i) for i in range(12)]  # A..L: "Let's" must not give L (OpenCompass #1933)
    assert extract_choice("Let's think step by step.", labels) is None
    assert extract_choice("Apple is a fruit.", labels) is None


def test_custom_labels():
    assert extract_choice("答案是 3", ["1", "2", "3", "4"]) == "3"
    assert extract_choice("The answer is (Y)", ["W", "X", "Y", "Z"]) == "Y"


def test_patterns_are_separate_tuple_elements_each_with_one_label_group():
    # A missing comma between two string literals would fuse two patterns into one element (OpenCompass
    # PR #2600): the count drops and that element carries two label placeholders.
    assert len(ANSWER_PATTERNS) == 6
    assert len(CORRECT_PATTERNS) == 2
    for pattern in ANSWER_PATTERNS + CORRECT_PATTERNS:
        assert isinstance(pattern, str)
        assert pattern.count(LABEL) == 1, pattern
        compiled = re.compile(pattern.replace(LABEL, "(?P<ans>A|B|C|D)"))
        assert list(compiled.groupindex) == ["ans"]
