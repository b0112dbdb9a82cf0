"""The ``files`` loader's options added for the standard benchmarks: ``*`` paths, few-shot rows
written in the run file, a description from the subset's rows, ``meta`` fields, ``continuation`` (partial
evaluation) with few-shot, and the regex options of ``exact_match`` / ``number_match``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from luopan.components import EvalContext
from luopan.types import GenerationResult, Sample
from luopan_generic.dataset import FilesDataset, FilesParams
from luopan_generic.evaluators import ExactMatch, NumberMatch
from luopan_generic.fields import FieldError, RowField

GEN = EvalContext(mode="generate", model="m", dataset="d")


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_star_maps_a_path_over_a_list():
    row = {"q": {"choices": [{"text": "a", "label": "1"}, {"text": "b", "label": "2"}]}}
    assert RowField("choices", "q.choices.*.text")(row) == ["a", "b"]
    assert RowField("choices", "q.choices.*.label")(row) == ["1", "2"]
    with pytest.raises(FieldError, match="item 0 of 'q.choices' has no 'txt'"):
        RowField("choices", "q.choices.*.txt")(row)
    with pytest.raises(FieldError, match="not a list"):
        RowField("choices", "q.*.text")({"q": "abc"})


def test_fewshot_rows_from_the_run_file(tmp_path):
    f = _write(tmp_path / "qa" / "test.jsonl", [{"question": "1+1?", "answer": "work #### 2"}])
    ds = FilesDataset(
        path=str(f.parent),
        prompt="Q: {{question}}\nA:",
        target="{{ answer.split('####')[-1].strip() if answer is defined else target }}",
        fewshot_rows=[{"question": "2+2?", "target": "2 and 2 make 4. The answer is 4."},
                      {"question": "3+3?", "target": "The answer is 6."}],
    )
    [s] = ds.load("qa", shots=2)
    assert s.prompt == ("Q: 2+2?\nA: 2 and 2 make 4. The answer is 4.\n\nQ: 3+3?\nA: The answer is 6.\n\n"
                        "Q: 1+1?\nA:")
    assert s.target == "2"
    assert s.messages[1] == {"role": "assistant", "content": "2 and 2 make 4. The answer is 4."}
    with pytest.raises(Exception, match="3 few-shot examples requested, fewshot_rows has 2"):
        ds.load("qa", shots=3)


def test_description_reads_the_subsets_first_row_and_meta_fields(tmp_path):
    rows = [{"task": "t1", "desc": "Do t1.", "x": "a", "y": "A", "extra": [1, 0]},
            {"task": "t2", "desc": "Do t2.", "x": "b", "y": "B", "extra": [0, 1]}]
    f = _write(tmp_path / "d.jsonl", rows)
    ds = FilesDataset(path=str(f), subset_field="task", description="{{ desc }} ({{ subset }})\n\n",
                      prompt="{{x}}", target="y", meta={"flags": "extra", "upper": "{{ x | upper }}"})
    [s] = ds.load("t2")
    assert s.prompt == "Do t2. (t2)\n\nb" and s.prefix == "Do t2. (t2)\n\n"
    assert s.meta["flags"] == [0, 1] and s.meta["upper"] == "B"


def test_continuation_with_few_shot_examples(tmp_path):
    rows = [{"ctx": ["The cat", "The dog"], "rest": "barked.", "gold": 1},
            {"ctx": ["Ann", "Bob"], "rest": "is a girl's name.", "gold": 0}]
    f = _write(tmp_path / "w" / "test.jsonl", rows[:1])
    _write(tmp_path / "w" / "train.jsonl", rows[1:])
    ds = FilesDataset(path=str(f.parent), choices="ctx", continuation="rest", target_index="gold")
    samples = ds.load("w", shots=1)
    # lm-eval's multiple input: the example is its gold context + " " + the continuation
    assert [s.prompt for s in samples] == ["Ann is a girl's name.\n\nThe cat", "Ann is a girl's name.\n\nThe dog"]
    assert all(s.choices == [" barked."] and s.target == 1 for s in samples)
    assert samples[1].meta["answer"] == "The dog" and "answer" not in samples[0].meta


def test_option_combinations_that_make_no_sense_are_refused():
    base = {"path": "x.jsonl", "target_index": "g"}
    with pytest.raises(ValidationError, match="'continuation' needs 'choices'"):
        FilesParams.model_validate({"path": "x.jsonl", "target": "t", "continuation": "c"})
    with pytest.raises(ValidationError, match="'circular' and 'continuation'"):
        FilesParams.model_validate({**base, "choices": "c", "continuation": "r", "circular": True})
    with pytest.raises(ValidationError, match="give 'prompt'"):
        FilesParams.model_validate({**base, "choices": "c"})
    with pytest.raises(ValidationError, match="'circular' rotates"):
        FilesParams.model_validate({"path": "x.jsonl", "prompt": "p", "target": "t", "circular": True})


def test_exact_match_with_lm_evals_regex_filter():
    ev = ExactMatch(ignore_case=False, extract="(?<=the answer is )(.*)(?=.)")
    samples = [Sample(f"s/{i}", "s", "p", t) for i, t in enumerate(["(A)", "True", "True"])]
    outs = [GenerationResult(t) for t in ["So the answer is (A).", "So the answer is true.", "True."]]
    scored = ev.score(samples, outs, GEN)
    assert [s.score for s in scored] == [1.0, 0.0, 0.0]
    assert [s.extra["extracted"] for s in scored] == [1.0, 1.0, 0.0]


def test_number_match_with_lm_evals_patterns():
    ev = NumberMatch(strict_pattern=r"#### (\-?[0-9\.\,]+)", flexible_pattern=r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
    s = Sample("s/0", "s", "p", "x #### 1,200")
    [a] = ev.score([s], [GenerationResult("so 1,200 in total.\n#### 1,200")], GEN)
    [b] = ev.score([s], [GenerationResult("The answer is 1200.")], GEN)  # not "#### N": strict misses
    assert (a.score, a.extra["flexible_match"]) == (1.0, 1.0)
    assert (b.score, b.extra["flexible_match"]) == (0.0, 1.0)
