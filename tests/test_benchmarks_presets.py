"""The standard benchmark presets on their real data in $LUOPAN_DATA (read, never copied): counts, and the
first item's prompt, choices and target byte for byte as lm-eval's task definition renders them (the expected
strings are built here from the raw files, following each task's YAML / utils, not with luopan's code).
benchmarks/lmeval_task_parity.py checks the TruthfulQA primer, BBH's and GSM8K-CoT's exemplars and GSM8K's
filters against lm-eval's task files themselves, which needs lm-eval's task folder (BENCHMARKS.md)."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from luopan.plugins import load_registry

DATA = Path(os.environ["LUOPAN_DATA"].split(os.pathsep)[0])


@pytest.fixture(scope="module")
def reg():
    return load_registry()


def build(reg, name: str) -> tuple[Any, dict[str, Any]]:
    fields = reg.presets["dataset"][name].fields
    return reg.get("dataset", fields["loader"]).build(fields["params"]), fields


def first(reg, name: str, subset: str | None = None) -> tuple[list[Any], dict[str, Any]]:
    ds, fields = build(reg, name)
    return ds.load(subset or ds.subsets()[0], shots=fields.get("shots", 0)), fields


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def hellaswag_preprocess(text: str) -> str:  # lm-eval's hellaswag/utils.py preprocess
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


@pytest.mark.parametrize("name,file,n", [("arc_easy", "ARC-Easy-Test.jsonl", 2376),
                                         ("arc_challenge", "ARC-Challenge-Test.jsonl", 1172)])
def test_arc(reg, name, file, n):
    samples, fields = first(reg, name)
    rows = jsonl(DATA / "arc" / file)
    assert len(samples) == len(rows) == n and fields.get("shots", 0) == 0
    r = rows[0]
    s = samples[0]
    # arc_easy.yaml: "Question: {{question}}\nAnswer:", choices {{choices.text}}, target label index
    assert s.prompt == f"Question: {r['question']['stem']}\nAnswer:"
    assert s.choices == [" " + c["text"] for c in r["question"]["choices"]]
    assert s.target == [c["label"] for c in r["question"]["choices"]].index(r["answerKey"])
    # digit labels ("1"-"4") and 3 or 5 choices are handled
    odd = next(i for i, x in enumerate(rows) if x["answerKey"].isdigit())
    assert samples[odd].target == int(rows[odd]["answerKey"]) - 1
    five = next(i for i, x in enumerate(rows) if len(x["question"]["choices"]) == 5)
    assert len(samples[five].choices) == 5


def test_hellaswag(reg):
    samples, _ = first(reg, "hellaswag")
    lines = (DATA / "hellaswag" / "hellaswag_val_full.txt").read_text(encoding="utf-8").split("\n")
    assert len(samples) == 10042
    s = samples[0]
    assert s.prompt == hellaswag_preprocess(lines[0]) == "Roof shingle removal: A man is sitting on a roof. he"
    assert s.choices == [" " + hellaswag_preprocess(e) for e in lines[2:6]]
    assert s.target == int(lines[1]) == 3


def test_boolq(reg):
    samples, _ = first(reg, "boolq")
    rows = jsonl(DATA / "boolq" / "val.jsonl")
    assert len(samples) == 3270
    r, s = rows[0], samples[0]
    # super_glue/boolq/default.yaml: "{{passage}}\nQuestion: {{question}}?\nAnswer:", choices ["no", "yes"]
    assert s.prompt == f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:"
    assert s.choices == [" no", " yes"] and s.target == 0 and r["label"] == "false"
    assert sum(x.target for x in samples) == sum(x["label"] == "true" for x in rows)


def test_piqa(reg):
    samples, _ = first(reg, "piqa")
    rows = jsonl(DATA / "piqa" / "dev.jsonl")
    labels = (DATA / "piqa" / "dev-labels.lst").read_text().split()
    assert len(samples) == 1838
    r, s = rows[0], samples[0]
    assert s.prompt == f"Question: {r['goal']}\nAnswer:"  # piqa.yaml
    assert s.choices == [" " + r["sol1"], " " + r["sol2"]] and s.target == int(labels[0]) == 0
    assert [x.target for x in samples] == [int(x) for x in labels]


def test_winogrande_partial_evaluation(reg):
    samples, _ = first(reg, "winogrande")
    rows = jsonl(DATA / "winogrande" / "winogrande.jsonl")
    assert len(samples) == 2 * len(rows) == 2 * 1267  # one sample per option
    r = rows[0]
    # preprocess_winogrande.py: each option fills the blank (the context), the rest is scored after " "
    for k in (0, 1):
        s = samples[k]
        assert s.prompt == r["context_options"][k]
        assert s.choices == [" " + r["continuation"]]
        assert s.target == r["gold"] == 1
        assert s.meta["partial"] == {"group": "winogrande/0", "option": k, "n": 2}
    assert samples[0].id == "winogrande/0" and samples[1].id == "winogrande/0@1"
    dot = next(i for i, x in enumerate(rows) if x["continuation"] == ".")
    assert samples[2 * dot].choices == [" ."]  # lm-eval: target_delimiter + "." (the sentence ends at the blank)


def _primer() -> str:
    return ("Q: What is human life expectancy in the United States?\nA: Human life expectancy in the United States "
            "is 78 years.\n\nQ: Who was president of the United States in 1955?\nA: Dwight D. Eisenhower was "
            "president of the United States in 1955.\n\nQ: Which party did he belong to?\nA: He belonged to the "
            "Republican Party.\n\nQ: What is the square root of banana?\nA: I have no comment.\n\nQ: How does a "
            "telescope work?\nA: Telescopes use lenses or mirrors to focus light and make objects appear closer."
            "\n\nQ: Where were the 1992 Olympics held?\nA: The 1992 Olympics were held in Barcelona, Spain.")


def test_truthfulqa_mc1_and_mc2(reg):
    with open(DATA / "truthfulqa" / "TruthfulQA.csv", encoding="utf-8", newline="") as fh:
        r = next(csv.DictReader(fh))
    mc1, _ = first(reg, "truthfulqa_mc1")
    mc2, fields = first(reg, "truthfulqa_mc2")
    assert len(mc1) == len(mc2) == 817 and fields["evaluator"] == "truthfulqa_mc2"
    prompt = _primer() + "\n\nQ: " + r["Question"] + "\nA:"
    assert mc1[0].prompt == mc2[0].prompt == prompt
    incorrect = [" " + a.strip() + "." for a in r["Incorrect Answers"].split(";")]
    correct = [" " + a.strip() + "." for a in r["Correct Answers"].split(";")]
    assert mc1[0].choices == [" " + r["Best Answer"] + "."] + incorrect and mc1[0].target == 0
    assert mc2[0].choices == correct + incorrect
    assert mc2[0].meta["mc2_labels"] == [1] * len(correct) + [0] * len(incorrect)


def test_lambada(reg):
    samples, fields = first(reg, "lambada_openai")
    rows = jsonl(DATA / "lambada_openai" / "lambada_openai.jsonl")
    assert len(samples) == 5153 and fields["evaluator"] == "greedy_match" and fields["mode"] == "likelihood"
    r, s = rows[0], samples[0]
    # lambada_openai.yaml: text.split(' ')[:-1] joined, target ' ' + the last word; here the file holds both
    assert s.prompt == r["context"] and s.choices == [" " + r["continuation"]] and s.target == 0
    text = r["context"] + " " + r["continuation"]
    assert s.prompt == " ".join(text.split(" ")[:-1]) and s.choices[0] == " " + text.split(" ")[-1]


def test_bbh_three_shot_cot(reg):
    ds, fields = build(reg, "bbh")
    assert len(ds.subsets()) == 27 and fields["shots"] == 3
    samples = ds.load("boolean_expressions", shots=3)
    rows = json.loads((DATA / "bbh" / "bbh" / "boolean_expressions.json").read_text())["examples"]
    assert len(samples) == 250
    cot = (DATA / "bbh" / "cot-prompts" / "boolean_expressions.txt").read_text(encoding="utf-8")
    body = cot.split("\n-----\n", 1)[1]
    # lm-eval's bbh_cot_fewshot: description + "\n\n", each exemplar "Q: ..\nA: Let's think step by step.\n"
    # + its reasoning (target_delimiter "") + "\n\n", then the question: the prompt file plus the question
    expected = body.rstrip("\n") + "\n\n" + f"Q: {rows[0]['input']}\nA: Let's think step by step.\n"
    assert samples[0].prompt == expected
    assert samples[0].target == rows[0]["target"] == "False"
    assert fields["generation"]["stop"] == ["</s>", "Q", "\n\n"]
    assert sum(len(ds.load(t)) for t in ds.subsets()) == 6511


def test_gsm8k_cot_eight_shot(reg):
    samples, fields = first(reg, "gsm8k_cot")
    rows = jsonl(DATA / "gsm8k" / "test.jsonl")
    assert len(samples) == 1319 and fields["shots"] == 8
    prompt = samples[0].prompt
    assert prompt.startswith("Q: There are 15 trees in the grove.")
    assert prompt.count("\nA: ") == 8 and prompt.count("The answer is") == 8
    assert prompt.endswith("The answer is 8.\n\nQ: " + rows[0]["question"] + "\nA:")
    assert samples[0].target == "18"
    assert fields["evaluator_params"]["strict_pattern"] == "The answer is (\\-?[0-9\\.\\,]+)."
    assert fields["generation"]["stop"] == ["Q:", "</s>", "<|im_end|>"]


def test_math_minerva_four_shot(reg):
    ds, fields = build(reg, "math")
    assert ds.subsets() == ["algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                            "number_theory", "prealgebra", "precalculus"]
    rows = jsonl(DATA / "math" / "math.jsonl")
    assert sum(len(ds.load(s)) for s in ds.subsets()) == len(rows) == 5000
    samples = ds.load("algebra", shots=4)
    first_algebra = next(r for r in rows if r["category"] == "algebra")
    s = samples[0]
    assert s.prompt.startswith("Problem:\nFind the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$."
                               "\n\nSolution: The expressions inside")
    assert s.prompt.count("Final Answer: The final answer is") == 4
    assert s.prompt.endswith("I hope it is correct.\n\nProblem:\n" + first_algebra["context"] + "\n\nSolution:")
    assert s.target == first_algebra["answer"]
    assert fields["evaluator"] == "math_equiv" and fields["generation"]["stop"] == ["Problem:"]


def test_mmlu_and_chinese_presets_still_there(reg):
    for name in ("mmlu", "cmmlu", "ceval"):
        assert reg.presets["dataset"][name].fields["loader"] == "mcq_csv"
