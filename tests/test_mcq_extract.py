"""extract_choice: reading the chosen option out of what models really write, in Chinese and English."""

from __future__ import annotations

import re

import pytest

from luopan_mcq.extract import (
    ANSWER_PATTERNS,
    CORRECT_PATTERNS,
    CORRECTION_MARKERS,
    LABEL,
    REVISION_PATTERNS,
    TIE_PATTERNS,
    extract_choice,
)

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
    # --- a reply that corrects itself: the last answer after the correction wins
    ("The answer is A ... no, it should be B", "B"),
    ("答案是A。不对，应该是B", "B"),
    (
        "The answer is (A). Wait, let me reconsider. The question asks for the exception, and A is one of the "
        "listed effects. Actually the correct answer is C.",
        "C",
    ),
    ("Answer: B\n\nCorrection: I misread option D. The correct answer is D.", "D"),
    (
        "Based on the calculation above, the answer is B. However, I made an error above: 12 × 4 is 48, not 44. "
        "So the correct answer is C.",
        "C",
    ),
    ("I apologize for the mistake in my previous response. Option B is correct, not A.", "B"),
    (
        "So the answer would be C.\n\nUpon further reflection, option C only covers a special case. The best choice is D.",
        "D",
    ),
    ("The answer is B. Oops, I mixed up the two enzymes: it should be option A.", "A"),
    ("Answer: A. But wait, I need to double-check the units. Hmm, it's B.", "B"),
    ("根据题意，答案是B。等等，我再检查一下……B项混淆了概念，所以正确答案应该是C。", "C"),
    ("答案：A\n\n更正：题目问的是“不正确”的一项，A项说法是正确的，故本题选D。", "D"),
    ("答案为B。之前的分析有误，B项的时间顺序颠倒了，答案应为C。", "C"),
    ("故选B。\n\n抱歉，我看错了题干，C才是正确答案。", "C"),
    ("答案是C。不对，重新考虑一下，是D。", "D"),
    ("选A。不对不对，A项中的“全部”过于绝对，应选B。", "B"),
    (
        'Both A and C seem correct at first. Wait, C says "always", which is too strong. So the answer is A.',
        "A",
    ),
    # --- a correction that confirms the first choice
    (
        "The answer is B. Wait, let me double-check: A gives 12, C gives 20, D gives 24. Yes, the answer is still B.",
        "B",
    ),
    ("答案是B。等等，我再检查一下……A项错误，C项错误，D项错误，所以答案还是B。", "B"),
    # --- two options called right, none chosen: no answer
    ("both A and C are correct", None),
    ("A和C都对", None),
    ("Both B and D could be correct, depending on how the question is interpreted.", None),
    ("A and C are equally valid interpretations of the passage.", None),
    ("Option A and option C are both correct statements about photosynthesis.", None),
    ("I can't decide between A and C; both seem plausible to me.", None),
    ("It could be A, but it could also be C, since the passage doesn't say.", None),
    ("Either A or C would be acceptable here.", None),
    ("There are two correct answers here: B and D.", None),
    ("The answer is A. However, on second thought, both A and C are correct.", None),
    ("A和B都正确，题目可能有误。", None),
    ("可能是A，也可能是C，题干信息不足。", None),
    ("无法确定是A还是C。", None),
    ("A、C两项均正确，无法只选一个。", None),
    ("既可以选A，也可以选C。", None),
    ("答案是B。不过仔细想想，B和D都说得通。", None),
    ("本题正确答案有两个：A和D。", None),
    # --- ... unless one is chosen after that
    ("Both B and D seem plausible at first, but D ignores the time limit, so the correct answer is B.", "B"),
    ("A和C都有道理，但A更全面，故选A。", "A"),
    # --- judging options, negations and lists are no correction and no tie
    ("Option A and option C are both incorrect, the answer is B.", "B"),
    ("Neither A nor C is correct. The answer is B.", "B"),
    ("A和C都不正确，B项表述片面，故本题选D。", "D"),
    ("The answer is not A, it is D.", "D"),
    ("答案不是A，而是D。", "D"),
    (
        "A. Paris is the capital of Italy - incorrect.\nB. Berlin is the capital of France - incorrect.\n"
        "C. Paris is the capital of France - correct.\n\nTherefore, the answer is C.",
        "C",
    ),
    ("A项不对，因为它把主次颠倒了；B项不对，时间错误；D项不对，与题干无关。所以选C。", "C"),
    ("答案：B\n\n解析：A项不对，C项正确的说法应为“先有需求后有生产”，D项错误。", "B"),  # "不对" judges A
    ("答案：B。A项涉及政治、经济等等，C项正确但与题干无关。", "B"),  # "等等" is "and so on"
    ("答案是B。美国宪法第十四修正案与本题无关，C项正确但不符合题意。", "B"),
    (
        "The answer is B. Option A claims the reaction is endothermic; this is wrong. C is correct only at high "
        "pressure.",
        "B",
    ),
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
    assert len(ANSWER_PATTERNS) == 8
    assert len(CORRECT_PATTERNS) == 2
    assert len(REVISION_PATTERNS) == 5
    for pattern in ANSWER_PATTERNS + CORRECT_PATTERNS + REVISION_PATTERNS:
        assert isinstance(pattern, str)
        assert pattern.count(LABEL) == 1, pattern
        compiled = re.compile(pattern.replace(LABEL, "(?P<ans>A|B|C|D)"))
        assert list(compiled.groupindex) == ["ans"]


def test_tie_patterns_and_correction_markers_are_separate_tuple_elements():
    # the same missing-comma guard; in a tie pattern every <L> stands for any label, a marker names none
    assert len(TIE_PATTERNS) == 9
    assert len(CORRECTION_MARKERS) == 9
    for pattern in TIE_PATTERNS:
        assert isinstance(pattern, str)
        assert not re.compile(pattern.replace(LABEL, "(?:A|B|C|D)")).groupindex, pattern
    for marker in CORRECTION_MARKERS:
        assert isinstance(marker, str) and LABEL not in marker, marker
        re.compile(marker)
