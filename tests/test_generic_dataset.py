"""The ``files`` loader: the real GSM8K files in ../shared/datasets (read, never copied) and small files made in
tmp_path (jsonl, json, csv, tsv, parquet, a save_to_disk folder)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from luopan.errors import ConfigError
from luopan.plugins import load_registry
from luopan_generic.dataset import FilesDataset, FilesParams
from luopan_generic.numbers import gold_number
from luopan_generic.readers import FilesDataError

DATA = Path(os.environ["LUOPAN_DATA"].split(os.pathsep)[0])
GSM8K_PROMPT = "Question: {{question}}\nAnswer:"


@pytest.fixture(scope="module")
def gsm8k() -> FilesDataset:
    """Built from the registry preset, exactly as a run would."""
    reg = load_registry()
    preset = reg.presets["dataset"]["gsm8k"].fields
    return reg.get("dataset", preset["loader"]).build(preset["params"])


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


QA = [
    {"q": "What is 2+2?", "a": "4", "topic": "math"},
    {"q": "Capital of France?", "a": "Paris", "topic": "geo"},
    {"q": "What is 3*3?", "a": "9", "topic": "math"},
    {"q": "Capital of Japan?", "a": "Tokyo", "topic": "geo"},
    {"q": "What is 10-7?", "a": "3", "topic": "math"},
]


# ---------------------------------------------------------------- GSM8K, the real files


def test_gsm8k_preset_counts_prompt_and_target(gsm8k):
    assert gsm8k.subsets() == ["gsm8k"]  # one subset, named after the data folder
    samples = gsm8k.load("gsm8k")
    rows = _rows(DATA / "gsm8k" / "test.jsonl")
    assert len(samples) == len(rows) == 1319
    assert len({s.id for s in samples}) == 1319 and samples[12].id == "gsm8k/12"
    first = samples[0]
    # lm-eval's gsm8k doc_to_text, byte for byte; the same text is the chat models' user turn
    assert first.prompt == "Question: " + rows[0]["question"] + "\nAnswer:"
    assert first.prompt.startswith("Question: Janet\u2019s ducks lay 16 eggs per day.")
    assert first.chat_prompt == first.prompt and first.messages is None
    assert first.prefix == "" and first.choices is None
    assert first.target == rows[0]["answer"] and first.target.endswith("#### 18")
    golds = [s.target.rsplit("####", 1)[1].strip() for s in samples]
    assert sum("," in g for g in golds) >= 10  # "#### 1,450,000": number_match drops the separators
    assert all(gold_number(s.target).lstrip("-").isdigit() for s in samples)
    assert gsm8k.default_evaluator == "exact_match"  # the preset names number_match itself


def test_gsm8k_fewshot_block_follows_lm_eval(gsm8k):
    train = _rows(DATA / "gsm8k" / "train.jsonl")
    assert len(train) == 7473
    samples = gsm8k.load("gsm8k", shots=3)
    block = "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in train[:3])
    assert all(s.prefix == block for s in samples)  # one shared prefix: the backend may compute it once
    assert samples[0].prompt == block + gsm8k.load("gsm8k")[0].prompt
    # chat models: each example a user turn and its answer an assistant turn, then the question
    msgs = samples[0].messages
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 3 + ["user"]
    assert msgs[0]["content"] == f"Question: {train[0]['question']}\nAnswer:"
    assert msgs[1]["content"] == train[0]["answer"]
    assert msgs[-1]["content"] == samples[0].chat_prompt


def test_gsm8k_seeded_fewshot_and_provenance():
    def prefix(ds: FilesDataset) -> str:
        return ds.load("gsm8k", shots=2)[0].prefix

    seeded = FilesDataset(path="gsm8k", prompt=GSM8K_PROMPT, target="answer", fewshot_seed=3)
    again = FilesDataset(path="gsm8k", prompt=GSM8K_PROMPT, target="answer", fewshot_seed=3)
    first_rows = FilesDataset(path="gsm8k", prompt=GSM8K_PROMPT, target="answer")
    assert prefix(seeded) == prefix(again) != prefix(first_rows)
    # the fingerprint covers the files read: test and train
    assert len(seeded.fingerprint()) == 64 and seeded.fingerprint() == first_rows.fingerprint()
    assert (
        first_rows.fingerprint()
        != FilesDataset(path="gsm8k", prompt=GSM8K_PROMPT, target="answer").fingerprint()
    )
    d = seeded.describe()
    assert d["templates"]["prompt"] == GSM8K_PROMPT and set(d["source"]["files"]) == {"test", "train"}


def test_gsm8k_single_file_path():
    ds = FilesDataset(path="gsm8k/test.jsonl", prompt=GSM8K_PROMPT, target="answer")
    assert ds.subsets() == ["gsm8k"]  # "test" names the split: the subset is named after the folder
    assert len(ds.load("gsm8k")) == 1319
    with pytest.raises(ConfigError, match="no split 'train'"):
        ds.load("gsm8k", shots=1)


# ---------------------------------------------------------------- file formats


def test_jsonl_csv_tsv_json_give_the_same_samples(tmp_path):
    write_jsonl(tmp_path / "j" / "test.jsonl", QA)
    write_csv(tmp_path / "c" / "test.csv", QA)
    write_csv(tmp_path / "t" / "test.tsv", QA, delimiter="\t")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "test.json").write_text(json.dumps({"data": QA}), encoding="utf-8")
    got = []
    for folder in "jcts":
        ds = FilesDataset(path=str(tmp_path / folder), prompt="Q: {{ q }}\nA:", target="a", subset="qa")
        samples = ds.load("qa")
        got.append([(s.id, s.prompt, s.target) for s in samples])
    assert got[0] == got[1] == got[2] == got[3]
    assert len(got[0]) == 5 and got[0][1] == ("qa/1", "Q: Capital of France?\nA:", "Paris")


def test_parquet_and_shard_names(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "bench" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(QA[:3]), folder / "test-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(QA[3:]), folder / "test-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(QA), folder / "train-00000-of-00001.parquet")
    ds = FilesDataset(path=str(tmp_path / "bench"), prompt="{{ q }}", target="a")
    assert ds.subsets() == ["bench"] and ds.source.splits() == ["test", "train"]
    samples = ds.load("bench", shots=1)
    assert [s.target for s in samples] == [r["a"] for r in QA]
    assert samples[0].prefix == "What is 2+2? 4\n\n"


def test_load_from_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict(
        {"test": datasets.Dataset.from_list(QA), "train": datasets.Dataset.from_list(QA[:2])}
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    ds = FilesDataset(path=str(tmp_path / "saved"), prompt="{{ q }}", target="a", subset_field="topic")
    assert ds.subsets() == ["geo", "math"]
    assert [s.target for s in ds.load("math")] == ["4", "9", "3"]
    assert ds.load("geo", shots=1)[0].prefix == "Capital of France? Paris\n\n"  # the same subset's example
    assert len(ds.fingerprint()) == 64


def test_hub_is_refused_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="save_to_disk"):
        FilesDataset(hub="openai/gsm8k", hub_config="main", prompt=GSM8K_PROMPT, target="answer")


def test_files_mapping_names_splits(tmp_path):
    write_jsonl(tmp_path / "eval_set.jsonl", QA[:3])
    write_jsonl(tmp_path / "examples.jsonl", QA[3:])
    ds = FilesDataset(
        files={"test": str(tmp_path / "eval_set.jsonl"), "train": str(tmp_path / "*ples.jsonl")},
        prompt="{{ q }}",
        target="a",
    )
    assert ds.subsets() == ["eval_set"]
    assert ds.load("eval_set", shots=2)[0].prefix == "Capital of Japan? Tokyo\n\nWhat is 10-7? 3\n\n"


# ---------------------------------------------------------------- templates and mappings


def test_templates_chat_prompt_description_and_fewshot_template(tmp_path):
    write_jsonl(tmp_path / "b" / "test.jsonl", QA[:2])
    write_jsonl(tmp_path / "b" / "dev.jsonl", QA[2:])
    ds = FilesDataset(
        path=str(tmp_path / "b"),
        fewshot_split="dev",
        prompt="Q: {{ q.strip() }}\nA:",
        chat_prompt="Answer briefly: {{ q }}",
        target="{{ a | lower }}",
        description="Quiz ({{ subset }}).\n\n",
        fewshot_template="Q: {{ q }}\nA: {{ a }}",
        fewshot_delimiter="\n###\n",
        fewshot_as_multiturn=False,
    )
    s = ds.load("b", shots=2)[1]
    prefix = "Quiz (b).\n\nQ: What is 3*3?\nA: 9\n###\nQ: Capital of Japan?\nA: Tokyo\n###\n"
    assert s.prefix == prefix and s.prompt == prefix + "Q: Capital of France?\nA:"
    assert s.target == "paris"  # a template target is rendered text
    # not multiturn: the base-model few-shot block before the chat prompt (a chat_prompt has no description)
    assert (
        s.messages is None
        and s.chat_prompt == prefix[len("Quiz (b).\n\n") :] + "Answer briefly: Capital of France?"
    )
    zero = ds.load("b")[0]
    assert (
        zero.prompt == "Quiz (b).\n\nQ: What is 2+2?\nA:"
        and zero.chat_prompt == "Answer briefly: What is 2+2?"
    )


def test_without_chat_prompt_the_chat_turn_is_the_base_prompt(tmp_path):
    write_jsonl(tmp_path / "b" / "test.jsonl", QA[:2])
    write_jsonl(tmp_path / "b" / "train.jsonl", QA[2:])
    ds = FilesDataset(path=str(tmp_path / "b"), prompt="Q: {{ q }}\nA:", target="a", description="Header\n")
    assert ds.load("b")[0].chat_prompt == "Header\nQ: What is 2+2?\nA:"
    msgs = ds.load("b", shots=1)[0].messages
    assert msgs[0] == {"role": "user", "content": "Header\nQ: What is 3*3?\nA:"}
    assert msgs[1:] == [
        {"role": "assistant", "content": "9"},
        {"role": "user", "content": "Q: What is 2+2?\nA:"},
    ]


def test_subset_field_groups_rows_and_keeps_row_ids(tmp_path):
    write_jsonl(tmp_path / "b" / "test.jsonl", QA)
    write_jsonl(tmp_path / "b" / "train.jsonl", QA)
    ds = FilesDataset(path=str(tmp_path / "b"), prompt="{{ q }}", target="a", subset_field="topic")
    assert ds.subsets() == ["geo", "math"]
    math = ds.load("math", shots=1)
    assert [s.id for s in math] == ["math/0", "math/2", "math/4"]  # the row in the split, for tracing
    assert all(s.subset == "math" for s in math) and math[0].prefix == "What is 2+2? 4\n\n"
    assert ds.load("geo", shots=2)[0].prefix == "Capital of France? Paris\n\nCapital of Japan? Tokyo\n\n"
    with pytest.raises(ConfigError, match="subset 'geo' has 2"):
        ds.load("geo", shots=3)
    with pytest.raises(ConfigError, match="no subset 'history'"):
        ds.load("history")


def test_nested_fields_and_list_targets(tmp_path):
    rows = [{"question": {"text": "Color of the sky?"}, "answers": ["blue", "azure"]}]
    write_jsonl(tmp_path / "n" / "test.jsonl", rows)
    ds = FilesDataset(path=str(tmp_path / "n"), prompt="question.text", target="answers")
    s = ds.load("n")[0]
    assert s.prompt == "Color of the sky?" and s.target == ["blue", "azure"]
    ds = FilesDataset(path=str(tmp_path / "n"), prompt="{{ question.text }}?", target="answers.1")
    assert ds.load("n")[0].target == "azure"


def test_multiple_choice_from_csv_columns_and_a_list_field(tmp_path):
    write_csv(
        tmp_path / "mc" / "test.csv",
        [
            {"question": "2+2?", "A": "3", "B": "4", "C": "5", "answer": "B"},
            {"question": "Sky?", "A": "blue", "B": "red", "C": "green", "answer": "A"},
        ],
    )
    ds = FilesDataset(
        path=str(tmp_path / "mc"),
        prompt="{{ question }}\nAnswer:",
        choices=["{{ A }}", "B", "C"],
        target_index="answer",
    )
    assert ds.default_evaluator == "accuracy"
    s = ds.load("mc")
    assert s[0].choices == [" 3", " 4", " 5"] and s[0].target == 1 and s[0].meta["answer"] == "4"
    assert s[1].target == 0
    write_jsonl(
        tmp_path / "ml" / "test.jsonl",
        [
            {"q": "2+2?", "choices": {"text": ["3", "4"]}, "label": 1},
            {"q": "Capital?", "choices": {"text": ["Rome", "Paris"]}, "label": "Paris"},
        ],
    )
    write_jsonl(tmp_path / "ml" / "train.jsonl", [{"q": "0+1?", "choices": {"text": ["1", "0"]}, "label": 0}])
    ds = FilesDataset(
        path=str(tmp_path / "ml"),
        prompt="{{ q }}",
        choices="choices.text",
        target_index="label",
        target_delimiter="",
    )
    s = ds.load("ml", shots=1)
    assert s[0].choices == ["3", "4"] and s[0].target == 1 and s[1].target == 1  # a choice's text
    assert s[0].prefix == "0+1?1\n\n"  # the example's answer is its gold choice


def test_registered_params_reject_bad_options():
    base = {"path": "gsm8k", "prompt": GSM8K_PROMPT, "target": "answer"}
    for bad, message in [
        ({"promt": "x"}, "Extra inputs"),
        ({"prompt": "{{ question }"}, "does not compile"),
        ({"choices": "{{ choices }}", "target_index": "label"}, "not a list"),
        ({"target_index": "label"}, "needs 'choices'"),
        ({"fewshot_split": "test"}, "give answers away"),
        ({"hub": "openai/gsm8k"}, "not both"),
        ({"subset": "x", "subset_field": "y"}, "subset_field"),
    ]:
        with pytest.raises(ValidationError, match=message):
            FilesParams.model_validate({**base, **bad})
    with pytest.raises(ValidationError, match="give 'target'"):
        FilesParams.model_validate({"path": "gsm8k", "prompt": "x"})


# ---------------------------------------------------------------- errors name the file, the row, the field


def test_template_error_names_file_row_and_field(tmp_path):
    rows = [{"q": "a", "a": "1"}, {"q": "b", "a": "2"}, {"question": "c", "a": "3"}]
    f = write_jsonl(tmp_path / "e" / "test.jsonl", rows)
    ds = FilesDataset(path=str(tmp_path / "e"), prompt="{{ q }}", target="a")
    with pytest.raises(FilesDataError) as err:
        ds.load("e")
    msg = str(err.value)
    assert (
        msg.startswith(f"{f}: row 2: template 'prompt': 'q' is undefined") and "columns: question, a" in msg
    )
    ds = FilesDataset(
        path=str(tmp_path / "e"), prompt="{{ q if q is defined else question }}", target="answr"
    )
    with pytest.raises(
        FilesDataError, match=rf"{f}: row 0: field 'target': no column 'answr' \(columns: q, a\)"
    ):
        ds.load("e")


def test_data_errors_name_file_row_and_line(tmp_path):
    f = tmp_path / "j" / "test.jsonl"
    f.parent.mkdir()
    f.write_text('{"q": "a", "a": "1"}\n\n{"q": "b", "a": \n', encoding="utf-8")
    with pytest.raises(FilesDataError, match=rf"{f}: row 1 \(line 3\): invalid JSON"):
        FilesDataset(path=str(f.parent), prompt="{{ q }}", target="a").load("j")
    c = tmp_path / "c" / "test.csv"
    c.parent.mkdir()
    c.write_text("q,a\nx,1\ny,2,extra\n", encoding="utf-8")
    with pytest.raises(
        FilesDataError, match=rf"{c}: row 1 \(line 3\): 1 field\(s\) more than the header's 2"
    ):
        FilesDataset(path=str(c.parent), prompt="{{ q }}", target="a").load("c")
    write_csv(tmp_path / "m" / "test.csv", [{"q": "x", "A": "1", "B": "2", "ans": "C"}])
    ds = FilesDataset(path=str(tmp_path / "m"), prompt="{{ q }}", choices=["A", "B"], target_index="ans")
    with pytest.raises(
        FilesDataError, match=r"test.csv: row 0: field 'target_index': 'C' is out of range for 2"
    ):
        ds.load("m")
    write_jsonl(tmp_path / "s" / "test.jsonl", [{"q": "x", "a": "1", "t": "k"}, {"q": "y", "a": "2"}])
    ds = FilesDataset(path=str(tmp_path / "s"), prompt="{{ q }}", target="a", subset_field="t")
    with pytest.raises(FilesDataError, match=r"test.jsonl: row 1: field 'subset_field': no column 't'"):
        ds.subsets()


def test_missing_data_and_splits(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        FilesDataset(path="no_such_benchmark", prompt="{{ q }}", target="a")
    write_jsonl(tmp_path / "two" / "test.jsonl", QA)
    write_csv(tmp_path / "two" / "test.csv", QA)
    with pytest.raises(
        ConfigError, match=r"split 'test' has files of several formats .*\(test.csv, test.jsonl\)"
    ):
        FilesDataset(path=str(tmp_path / "two"), prompt="{{ q }}", target="a")
    ds = FilesDataset(path=str(tmp_path / "two"), files={"test": "test.csv"}, prompt="{{ q }}", target="a")
    assert len(ds.load("two")) == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no data files"):
        FilesDataset(path=str(tmp_path / "empty"), prompt="{{ q }}", target="a")
    with pytest.raises(
        ConfigError, match=r"no split 'validation' in gsm8k \(splits: example_model_solutions"
    ):
        FilesDataset(path="gsm8k", split="validation", prompt=GSM8K_PROMPT, target="answer")
    ds = FilesDataset(path="gsm8k", prompt=GSM8K_PROMPT, target="answer", fewshot_split="test_socratic")
    with pytest.raises(ConfigError, match="2000 few-shot examples requested, split 'test_socratic' has 1319"):
        ds.load("gsm8k", shots=2000)
