"""Reading verdicts out of real-looking judge replies: pairwise, 1-10 ratings, correctness; English and Chinese."""

from __future__ import annotations

import pytest

from luopan_judge.verdict import parse_correct, parse_pairwise, parse_rating

PAIRWISE = [
    # FastChat's format, as GPT-4 writes it
    ("Assistant A gives a more detailed itinerary. [[A]]", "A"),
    ("Both are fine but B is more accurate.\n\n[[B]]", "B"),
    ("The two responses are equally good. [[C]]", "tie"),
    ("Final verdict: [[A]]", "A"),
    ("**Final Verdict:** [[B]]", "B"),
    ("My final verdict is tie: [[C]]", "tie"),
    ("[[ A ]]", "A"),
    ("[[tie]]", "tie"),
    # a judge that changes its mind: the last verdict counts
    ("At first glance [[A]] seems better, but on reflection the math in B is right. [[B]]", "B"),
    # the instructions echoed before the verdict
    ('I must output "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie. '
     "Assistant B is better. [[B]]", "B"),
    ('Output "[[A]]" if assistant A is better, "[[B]]" if B is better, "[[C]]" for a tie.', None),
    # Arena-Hard's format
    ("My final verdict is: [[A>>B]]", "A"),
    ("My final verdict is: [[A>B]]", "A"),
    ("My final verdict is tie: [[A=B]]", "tie"),
    ("My final verdict is: [[B>A]]", "B"),
    ("My final verdict is: [[B>>A]]", "B"),
    # full-width brackets and letters (Chinese keyboards)
    ("最终判决：【【A】】", "A"),
    ("［［Ｂ］］", "B"),
    ("裁决：[[C]]", "tie"),
    # Chinese phrasings
    ("助手A的回答更好。", "A"),
    ("综合来看，B更好", "B"),
    ("A 更好", "A"),
    ("回答B更胜一筹", "B"),
    ("两个回答不相上下，平局。", "tie"),
    ("平局", "tie"),
    ("我选择A", "A"),
    ("最终结果：B", "B"),
    ("两者相当", "tie"),
    ("助手B胜出", "B"),
    # English without brackets
    ("Assistant A is better.", "A"),
    ("Overall, Assistant B's answer is better because it is correct.", "B"),
    ("Final verdict: B", "B"),
    ("Verdict: A", "A"),
    ("I prefer Assistant B.", "B"),
    ("It's a tie.", "tie"),
    ("Both responses are equally helpful", "tie"),
    ("Response A is significantly better than response B.", "A"),
    ("[B]", "B"),
    ("A", "A"),
    ("C", "tie"),
    # no verdict: retried, then failed, never guessed
    ("Both answers have merits.", None),
    ("", None),
    ("I think the question is ambiguous and needs more context.", None),
    ("The answer from assistant is good", None),
    ("Answer A:\nThe answer is better", None),  # a heading echoed back, not a verdict
    ("Answer: B", "B"),
    ("A is better.", "A"),
    ("A is indeed better than B.", "A"),  # SmolLM2's replies in examples/mt_bench_arena.yaml
    ("A is the better choice.", "A"),
    ("B is clearly the better response.", "B"),
    ("I think B is clearly better than A", "B"),
    ("A, B, or C", None),  # the options echoed back
]

RATINGS = [
    ("The response is accurate. Rating: [[7]]", 7.0),
    ("Rating: [[10]]", 10.0),
    ("Rating: [[8.5]]", 8.5),
    ("[[3]]", 3.0),
    ("I'd give it a 7/10.", 7.0),
    ("Score: 6/10", 6.0),
    ("Rating: 4", 4.0),
    ("**Rating:** [[9]]", 9.0),
    ("评分：8分", 8.0),
    ("得分：[[6]]", 6.0),
    ("我给这个回答打 7 分", 7.0),
    ("评分为 9", 9.0),
    ("Rating: [[７]]", 7.0),
    ("I would rate it 6 out of 10.", 6.0),
    ("Rating: [[7/10]]", 7.0),
    ('I must rate on a scale of 1 to 10 in the format "[[rating]]", for example: "Rating: [[5]]". Rating: [[2]]', 2.0),
    ("The answer is wrong. [2]", 2.0),
    ("5", 5.0),
    ("Rating: [[0]]", None),
    ("Rating: [[11]]", None),
    ("The answer is well written and helpful.", None),
    ("", None),
    ("Rating: [[rating]]", None),
]

CORRECT = [
    ("The final answer matches. [[CORRECT]]", True),
    ("The answer is 12, the reference says 14. [[INCORRECT]]", False),
    ("[[correct]]", True),
    ("答案正确", True),
    ("结论：错误", False),
    ("【【正确】】", True),
    ("The answer is correct.", True),
    ("Verdict: incorrect", False),
    ("INCORRECT", False),
    ("I am not sure.", None),
]


@pytest.mark.parametrize(("text", "expected"), PAIRWISE)
def test_pairwise_verdicts(text, expected):
    assert parse_pairwise(text) == expected


@pytest.mark.parametrize(("text", "expected"), RATINGS)
def test_ratings(text, expected):
    assert parse_rating(text) == expected


@pytest.mark.parametrize(("text", "expected"), CORRECT)
def test_correctness(text, expected):
    assert parse_correct(text) is expected


def test_table_is_large():
    assert len(PAIRWISE) + len(RATINGS) + len(CORRECT) > 40
