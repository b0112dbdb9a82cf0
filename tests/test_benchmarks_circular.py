"""CircularEval: each question asked once per rotation of its options; correct only if every rotation is.
Rotation in the mcq_csv and files loaders (real MMLU files and a small file), grouping and scoring in the
accuracy evaluator, and a run through the CLI with the fake backend."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from luopan.cli import main
from luopan.components import EvalContext
from luopan.errors import ConfigError
from luopan.types import GenerationResult, LoglikelihoodResult, Sample
from luopan_generic.dataset import FilesDataset
from luopan_mcq.accuracy import AccuracyEvaluator
from luopan_mcq.dataset import McqCsvDataset

DATA = Path(os.environ["LUOPAN_DATA"].split(os.pathsep)[0])
LL = EvalContext(mode="likelihood", model="m", dataset="d")
GEN = EvalContext(mode="generate", model="m", dataset="d")


def test_mcq_csv_rotates_the_option_texts_and_keeps_the_labels():
    plain = McqCsvDataset("mmlu", layout="mmlu").load("anatomy")
    circ = McqCsvDataset("mmlu", layout="mmlu", circular=True).load("anatomy")
    assert len(circ) == 4 * len(plain) == 4 * 135
    with open(DATA / "mmlu" / "test" / "anatomy_test.csv", encoding="utf-8", newline="") as fh:
        row = next(csv.DictReader(fh))
    options = [row[f"choice{i}"] for i in range(4)]
    gold = int(row["answer"])
    assert [s.id for s in circ[:4]] == ["anatomy/0", "anatomy/0@1", "anatomy/0@2", "anatomy/0@3"]
    assert circ[0].prompt == plain[0].prompt and circ[0].target == plain[0].target == gold
    for r, s in enumerate(circ[:4]):
        shown = options[r:] + options[:r]
        assert s.meta["options"] == shown
        assert s.prompt.endswith(
            f"\nA. {shown[0]}\nB. {shown[1]}\nC. {shown[2]}\nD. {shown[3]}\nAnswer:"
        )
        assert s.choices == [" A", " B", " C", " D"]  # the labels stay, the texts move
        assert shown[s.target] == options[gold]
        assert s.meta["circular"] == {"group": "anatomy/0", "rotation": r, "n": 4}
        assert s.chat_prompt is not None and f"A. {shown[0]}" in s.chat_prompt


def test_mcq_csv_few_shot_examples_keep_their_order():
    circ = McqCsvDataset("mmlu", layout="mmlu", circular=True).load("anatomy", shots=2)
    assert len({s.prefix for s in circ}) == 1


def _group(targets_right: list[bool], n: int = 4, group: str = "s/0") -> tuple[list[Sample], list]:
    samples, outs = [], []
    for r, right in enumerate(targets_right):
        target = (1 - r) % n
        samples.append(Sample(f"{group}@{r}", "s", "p", target, [" A", " B", " C", " D"],
                              meta={"circular": {"group": group, "rotation": r, "n": n}}))
        lls = [-5.0] * n
        lls[target if right else (target + 1) % n] = -1.0
        outs.append([LoglikelihoodResult(x) for x in lls])
    return samples, outs


def test_circular_accuracy_needs_every_rotation():
    s1, o1 = _group([True, True, True, True], group="s/0")
    s2, o2 = _group([True, False, True, True], group="s/1")
    s3, o3 = _group([False, True, True, True], group="s/2")
    scored = AccuracyEvaluator().score(s1 + s2 + s3, o1 + o2 + o3, LL)
    # the score of every member is the original order's verdict: the subset mean is plain accuracy
    assert [s.score for s in scored] == [1.0] * 8 + [0.0] * 4
    assert [s.extra["circular_accuracy"] for s in scored] == [1.0] * 4 + [0.0] * 8
    assert [s.extra["rotation_accuracy"] for s in scored[4:8]] == [1.0, 0.0, 1.0, 1.0]
    assert sum(s.score for s in scored) / 12 == pytest.approx(2 / 3)  # plain accuracy
    assert sum(s.extra["circular_accuracy"] for s in scored) / 12 == pytest.approx(1 / 3)


def test_a_group_cut_by_a_limit_is_flagged_not_counted():
    s, o = _group([True, True, False, True])
    scored = AccuracyEvaluator().score(s[:3], o[:3], LL)
    assert all("circular_accuracy" not in x.extra and x.extra["circular_incomplete"] == 1.0 for x in scored)
    assert [x.score for x in scored] == [1.0, 1.0, 0.0]  # each its own verdict


def test_circular_in_generate_mode_reads_the_letter_of_each_rotation():
    samples, _ = _group([True] * 4)
    for s in samples:
        s.meta.update(labels=["A", "B", "C", "D"], options=["w", "x", "y", "z"])
    texts = ["Answer: B", "The answer is A", "D", "B"]  # targets are 1, 0, 3, 2: the last one is wrong
    scored = AccuracyEvaluator().score(samples, [GenerationResult(t) for t in texts], GEN)
    assert [x.extra["rotation_accuracy"] for x in scored] == [1.0, 1.0, 1.0, 0.0]
    assert all(x.score == 1.0 and x.extra["circular_accuracy"] == 0.0 for x in scored)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [{"q": "2+2?", "opts": ["3", "4", "5"], "a": 1}, {"q": "Capital of France?", "opts": ["Rome", "Paris", "Oslo"], "a": 1}]


def test_files_loader_circular_with_lettered_options(tmp_path):
    f = _write(tmp_path / "quiz.jsonl", ROWS)
    ds = FilesDataset(
        path=str(f),
        prompt="{{ q }}\n{% for c in _choices %}{{ _labels[loop.index0] }}. {{ c }}\n{% endfor %}Answer:",
        choices="opts",
        target_index="a",
        choice_labels=["A", "B", "C"],
        circular=True,
    )
    samples = ds.load("quiz")
    assert len(samples) == 6
    assert samples[0].prompt == "2+2?\nA. 3\nB. 4\nC. 5\nAnswer:" and samples[0].target == 1
    assert samples[1].prompt == "2+2?\nA. 4\nB. 5\nC. 3\nAnswer:" and samples[1].target == 0
    assert samples[2].prompt == "2+2?\nA. 5\nB. 3\nC. 4\nAnswer:" and samples[2].target == 2
    assert all(s.choices == [" A", " B", " C"] for s in samples)
    assert samples[1].meta["circular"] == {"group": "quiz/0", "rotation": 1, "n": 3}
    assert samples[1].meta["options"] == ["4", "5", "3"] and samples[1].meta["answer"] == "A"


def test_files_loader_circular_must_show_the_options(tmp_path):
    f = _write(tmp_path / "quiz.jsonl", ROWS)
    with pytest.raises(ConfigError, match="_choices"):
        FilesDataset(path=str(f), prompt="{{ q }}", choices="opts", target_index="a",
                     choice_labels=["A", "B", "C"], circular=True)


def test_circular_mmlu_through_the_cli_with_the_fake_backend(tmp_path):
    run = tmp_path / "circ.yaml"
    run.write_text(
        f"run: {{output_dir: {tmp_path / 'out'}, name: c}}\n"
        "models:\n  - preset: fake\n"
        "datasets:\n  - {preset: mmlu, name: mmlu_circular, subsets: [anatomy, astronomy], limit_per_subset: 8,\n"
        "     params: {circular: true}}\n",
        encoding="utf-8",
    )
    assert main(["run", str(run), "--no-progress"]) == 0
    out = tmp_path / "out" / "c"
    result = json.loads((out / "results" / "fake" / "mmlu_circular.json").read_text())
    for sub in result["subsets"]:
        assert sub["n"] == 8 and "circular_accuracy" in sub["metrics"]  # 8 questions, each in 4 rotations
        assert sub["metrics"]["circular_accuracy"] <= sub["score"] + 1e-9  # every rotation right: the first too
    summary = (out / "summary.md").read_text()
    assert "| mmlu_circular | overall (mean) | circular_accuracy | 16 |" in summary
    preds = [json.loads(x) for x in (out / "predictions" / "fake" / "mmlu_circular.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds[:4]] == ["anatomy/0", "anatomy/0@1", "anatomy/0@2", "anatomy/0@3"]
    assert len(preds) == 2 * 8 * 4  # the limit counts questions: every rotation of each is asked
