"""HumanEval and MBPP: the standard prompts, answer extraction, the unbiased pass@k estimator, the canonical
solutions passing through the whole harness, and an end-to-end run through the CLI."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest

from luopan.components import EvalContext
from luopan.errors import ConfigError
from luopan.types import GenerationResult, Sample
from luopan_code.dataset import CodeDataset
from luopan_code.evaluator import CodePass
from luopan_code.passk import mean_pass_at_k, pass_at_k
from luopan_code.programs import extract_code, solution

# ---------------------------------------------------------------- pass@k


def exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_the_binomial_formula():
    for n in range(1, 16):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(exact(n, c, k)), abs=1e-12), (n, c, k)


def test_pass_at_k_known_values():
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # pass@1 is c/n
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(6, 5, 2) == 1.0  # n - c < k: any 2 of them include a correct one


def test_pass_at_k_is_numerically_stable_where_the_binomials_are_huge():
    # C(2000, 1000) has about 600 digits: no float can hold it, the product form needs none
    for n, c, k in [(2000, 1, 1000), (2000, 17, 100), (1000, 999, 10), (5000, 3, 2500)]:
        assert pass_at_k(n, c, k) == pytest.approx(float(exact(n, c, k)), rel=1e-9)


def test_pass_at_k_rejects_impossible_inputs_and_averages_problems():
    for n, c, k in [(3, 4, 1), (3, 1, 4), (3, 1, 0)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)
    assert mean_pass_at_k([(4, 1), (4, 0), (4, 4)], 1) == pytest.approx((0.25 + 0 + 1) / 3)


def test_the_evaluator_pools_samples_of_one_problem_for_pass_at_k():
    tests = "assert f() == 1\n"
    right, wrong = "def f():\n    return 1\n", "def f():\n    return 2\n"
    answers = {"p1": [right, wrong, wrong, wrong], "p2": [wrong, wrong, wrong, wrong], "p3": [right] * 4}
    samples, outputs = [], []
    for p, texts in answers.items():
        for r, t in enumerate(texts):
            samples.append(Sample(f"t/{p}#{r}", "t", "", tests, meta={"problem": p, "tests": tests}))
            outputs.append(GenerationResult(t))
    scored = CodePass(k=[1, 2, 4, 8]).score(samples, outputs, EvalContext("generate", "m", "t"))
    by_problem = {s.id.split("#")[0]: s.extra for s in scored}
    assert by_problem["t/p1"]["pass@2"] == pytest.approx(0.5) and by_problem["t/p1"]["pass@4"] == 1.0
    assert by_problem["t/p2"]["pass@4"] == 0.0 and by_problem["t/p3"]["pass@1"] == 1.0
    assert "pass@8" not in by_problem["t/p1"]  # k > n: not estimable
    assert [s.score for s in scored[:4]] == [1.0, 0.0, 0.0, 0.0]
    mean2 = sum(s.extra["pass@2"] for s in scored) / len(scored)
    assert mean2 == pytest.approx(mean_pass_at_k([(4, 1), (4, 0), (4, 4)], 2))


# ---------------------------------------------------------------- answers to programs

PROMPT = 'from typing import List\n\n\ndef twice(xs: List[int]) -> List[int]:\n    """Double each."""\n'


def test_a_base_model_completion_continues_the_prompt_and_stops_at_top_level_code():
    code, how = solution("    return [2 * x for x in xs]\n\n\ndef unrelated():\n    pass\n", code_prompt=PROMPT,
                         entry_point="twice", stops=("\nclass", "\ndef", "\n#", "\nif", "\nprint"))
    assert how == "completion" and code == PROMPT + "    return [2 * x for x in xs]\n\n"


def test_a_chat_answer_with_the_whole_function_in_a_block_follows_the_prompt():
    answer = "Sure! Here it is:\n\n```python\ndef twice(xs):\n    return [x * 2 for x in xs]\n```\n\nExample:\n" \
             "```python\nprint(twice([1]))\n```"
    code, how = solution(answer, code_prompt=PROMPT, entry_point="twice")
    assert how == "function" and code == PROMPT + "\ndef twice(xs):\n    return [x * 2 for x in xs]\n"


def test_a_chat_answer_with_only_the_body_in_a_block_continues_the_prompt():
    code, how = solution("```python\n    return [x + x for x in xs]\n```", code_prompt=PROMPT, entry_point="twice")
    assert how == "completion" and code.endswith('"""Double each."""\n    return [x + x for x in xs]\n')


def test_mbpp_answers_in_begin_done_or_fences():
    assert extract_code("[BEGIN]\ndef f():\n    return 1\n[DONE]") == "\ndef f():\n    return 1\n"
    assert solution("def f():\n    return 1\n[DONE] trailing")[0] == "def f():\n    return 1\n"
    assert extract_code("Here:\n```py\nimport math\ndef f(): return math.pi\n```") == \
        "import math\ndef f(): return math.pi\n"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"  # cut at max tokens
    assert extract_code("no code at all") == "no code at all"


def test_an_answer_without_code_is_not_run():
    s = Sample("t/0", "t", PROMPT, "", meta={"code_prompt": PROMPT, "entry_point": "twice", "tests": "assert 1"})
    [scored] = CodePass().score([s], [GenerationResult("")], EvalContext("generate", "m", "t"))
    assert scored.score == 0.0 and scored.extra["reason"] == "no code in the answer"


# ---------------------------------------------------------------- prompts


def test_humaneval_prompts():
    ds = CodeDataset(benchmark="humaneval")
    samples = ds.load("humaneval")
    rows = ds.rows()
    assert len(samples) == 164 and samples[0].id == "humaneval/0"
    s, row = samples[0], rows[0]
    assert s.prompt == row["prompt"] and s.meta["problem"] == "HumanEval/0"  # lm-eval: doc_to_text "{{prompt}}"
    assert s.chat_prompt.startswith("Complete the following Python function.")
    assert s.chat_prompt.endswith("```python\n" + row["prompt"] + "```")
    assert s.meta["tests"] == row["test"] + "\n\ncheck(has_close_elements)\n"
    assert s.messages is None and s.prefix == ""
    with pytest.raises(ConfigError, match="zero-shot"):
        ds.load("humaneval", shots=3)


def test_mbpp_three_shot_prompt_and_test_split():
    ds = CodeDataset(benchmark="mbpp")
    samples = ds.load("mbpp", shots=3)
    assert len(samples) == 500 and samples[0].id == "mbpp/11" and samples[-1].id == "mbpp/510"
    by_id = {r["task_id"]: r for r in ds.rows()}
    s, row = samples[0], by_id[11]
    ex = by_id[2]
    first_example = (
        f"You are an expert Python programmer, and here is your task: {ex['text']} Your code should pass "
        f"these tests:\n\n" + "\n".join(ex["test_list"]) + "\n[BEGIN]\n" + ex["code"] + "\n[DONE]\n\n"
    )
    assert s.prefix.startswith(first_example)
    assert [by_id[t]["text"] in s.prefix for t in (2, 3, 4)] == [True] * 3 and by_id[5]["text"] not in s.prefix
    assert s.prompt == s.prefix + (
        f"You are an expert Python programmer, and here is your task: {row['text']} Your code should pass "
        f"these tests:\n\n" + "\n".join(row["test_list"]) + "\n[BEGIN]\n"
    )
    assert [m["role"] for m in s.messages] == ["user", "assistant"] * 3 + ["user"]
    assert s.messages[1]["content"] == f"[BEGIN]\n{ex['code']}\n[DONE]" and "[BEGIN]" not in s.messages[-1]["content"]
    assert s.meta["tests"] == "\n".join(row["test_list"]) + "\n"
    assert CodeDataset(benchmark="mbpp").load("mbpp")[0].prefix == ""  # shots: 0 has no examples
    with pytest.raises(ConfigError, match="fewshot_ids"):
        ds.load("mbpp", shots=4)
    with pytest.raises(ConfigError, match="scored split"):
        CodeDataset(benchmark="mbpp", split="prompt").load("mbpp", shots=3)


def test_mbpp_setup_code_runs_after_the_solution():
    samples = {s.id: s for s in CodeDataset(benchmark="mbpp").load("mbpp")}
    tests = samples["mbpp/367"].meta["tests"]
    assert tests.startswith("root = Node(1)") and "assert is_tree_balanced(root) == False" in tests


# ---------------------------------------------------------------- canonical solutions


def _canonical(bench: str, shots: int, limit: int | None, timeout: float) -> list:
    samples = CodeDataset(benchmark=bench).load(bench, shots=shots)[:limit]
    outputs = [GenerationResult(s.meta["reference"]) for s in samples]
    return CodePass(timeout=timeout, workers=2).score(samples, outputs, EvalContext("generate", "m", bench))


def test_the_first_canonical_solutions_pass():
    for bench, shots in (("humaneval", 0), ("mbpp", 3)):
        scored = _canonical(bench, shots, 8, 30)
        assert [s.extra["reason"] for s in scored if s.score < 1] == [], bench


@pytest.mark.slow
def test_every_canonical_solution_passes():
    """All 164 HumanEval canonical solutions and all 500 MBPP test-split reference solutions pass (about 100 s
    on 2 busy cores). MBPP task 123's reference needs ~13 s there: the mbpp preset's timeout is 30 s."""
    for bench, shots in (("humaneval", 0), ("mbpp", 3)):
        scored = _canonical(bench, shots, None, 30)
        failed = [(s.id, s.extra["reason"]) for s in scored if s.score < 1]
        assert failed == [], bench
        assert {s.extra["how"] for s in scored} == ({"completion"} if bench == "humaneval" else {"code"})


# ---------------------------------------------------------------- end to end


def test_presets_run_end_to_end_with_the_fake_backend(tmp_path):
    from luopan.cli import main

    run = tmp_path / "code.yaml"
    run.write_text(
        f"run: {{output_dir: {tmp_path / 'outputs'}, name: c}}\n"
        "models:\n  - {preset: fake}\n  - {preset: fake, name: fake-chat, kind: chat}\n"
        "datasets:\n  - {preset: humaneval, limit: 3, generation: {max_new_tokens: 8}}\n"
        "  - {preset: mbpp, limit: 2, generation: {max_new_tokens: 8}}\n",
        encoding="utf-8",
    )
    assert main(["run", str(run), "--no-progress"]) == 0
    out = tmp_path / "outputs" / "c"
    result = json.loads((out / "results" / "fake" / "humaneval.json").read_text())
    assert result["metric"] == "pass@1" and result["subsets"][0]["n"] == 3
    assert result["provenance"]["evaluator"] == "code_pass" and result["provenance"]["shots"] == 0
    assert result["provenance"]["generation"]["stop"] == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    mbpp = json.loads((out / "results" / "fake-chat" / "mbpp.json").read_text())
    assert mbpp["provenance"]["shots"] == 3 and mbpp["provenance"]["generation"]["stop"] == ["[DONE]"]
    preds = [json.loads(x) for x in (out / "predictions" / "fake-chat" / "mbpp.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == ["mbpp/11", "mbpp/12"]
    assert len(preds[0]["messages"]) == 7 and preds[0]["extra"]["status"] in ("failed", "timeout")
    assert preds[0]["extra"]["reason"]
