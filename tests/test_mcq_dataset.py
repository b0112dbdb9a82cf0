"""The mcq_csv dataset on the real CMMLU, C-Eval and MMLU files in ../shared/datasets (read, never copied)."""

from __future__ import annotations

import csv
import gc
import os
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from luopan.data import files_fingerprint
from luopan.errors import ConfigError, LuopanError
from luopan.plugins import load_registry
from luopan_mcq.dataset import McqCsvDataset, McqCsvParams
from luopan_mcq.layouts import McqDataError

DATA = Path(os.environ["LUOPAN_DATA"].split(os.pathsep)[0])


@pytest.fixture(scope="module")
def cmmlu() -> McqCsvDataset:
    return McqCsvDataset("cmmlu")


@pytest.fixture(scope="module")
def ceval() -> McqCsvDataset:
    return McqCsvDataset("ceval")


@pytest.fixture(scope="module")
def mmlu() -> McqCsvDataset:
    return McqCsvDataset("mmlu")


# ---------------------------------------------------------------- the three layouts


@pytest.mark.parametrize(
    ("name", "layout", "split", "n_subjects", "n_questions"),
    [
        ("cmmlu", "cmmlu", "test", 67, 11_582),
        ("ceval", "ceval", "val", 52, 1_346),
        ("mmlu", "mmlu", "test", 57, 14_042),
    ],
)
def test_each_layout_loads_every_question(request, name, layout, split, n_subjects, n_questions):
    ds = request.getfixturevalue(name)
    assert ds.layout.name == layout  # detected from the header (layout: auto)
    assert ds.eval_split == split  # C-Eval's test split has no answers: val by default
    assert len(ds.subsets()) == n_subjects
    samples = [s for subject in ds.subsets() for s in ds.load(subject)]
    assert len(samples) == n_questions
    assert len({s.id for s in samples}) == n_questions
    assert all(isinstance(s.target, int) and 0 <= s.target < 4 for s in samples)


def test_registry_presets_build_the_three_datasets():
    reg = load_registry()
    for preset, n_subjects in (("cmmlu", 67), ("ceval", 52), ("mmlu", 57)):
        fields = reg.preset("dataset", preset).fields
        ds = reg.get("dataset", fields["loader"]).build(fields["params"])
        assert len(ds.subsets()) == n_subjects, preset


def test_the_whole_of_cmmlu_loads_in_well_under_0_3_s():
    best = float("inf")
    for _ in range(3):  # CPU time, best of three: the machine is shared
        ds = McqCsvDataset("cmmlu")
        gc.collect()
        start = time.process_time()
        n = sum(len(ds.load(s)) for s in ds.subsets())
        best = min(best, time.process_time() - start)
    assert n == 11_582
    assert best < 0.3, f"{best:.3f} s"


# ---------------------------------------------------------------- prompts


def test_cmmlu_two_shot_prompt_is_lm_evals_byte_for_byte(cmmlu):
    sample = cmmlu.load("agronomy", shots=2)[0]
    expected = (
        "以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n"
        "肉牛屠宰后，胴体的哪个部位肉质较好\nA. 胸\nB. 腹\nC. 大腿\nD. 小腿\n答案：C"
        "\n\n"
        "下列鸭品种中，产蛋量最高的品种是\nA. 高邮鸭\nB. 北京鸭\nC. 樱桃谷鸭\nD. 绍鸭\n答案：D"
        "\n\n"
        "在农业生产中被当作极其重要的劳动对象发挥作用，最主要的不可替代的基本生产资料是\n"
        "A. 农业生产工具\nB. 土地\nC. 劳动力\nD. 资金\n答案："
    )
    assert sample.prompt == expected
    assert sample.prompt.encode("utf-8") == expected.encode("utf-8")
    assert sample.choices == ["A", "B", "C", "D"]  # target_delimiter "": no leading space
    assert sample.target == 1
    assert sample.meta == {
        "answer": "B",
        "options": ["农业生产工具", "土地", "劳动力", "资金"],
        "labels": ["A", "B", "C", "D"],
    }
    assert sample.id == "agronomy/0" and sample.subset == "agronomy"


def _lmeval_cmmlu_prompt(subject: str, name: str, shots: int, row: int) -> str:
    """lm-eval's multiple_choice construction, written out independently from the CSV rows."""

    def rows(split: str) -> list[dict[str, str]]:
        with open(DATA / "cmmlu" / split / f"{subject}.csv", encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))

    def doc_to_text(d: dict[str, str]) -> str:
        return f"{d['Question']}\nA. {d['A']}\nB. {d['B']}\nC. {d['C']}\nD. {d['D']}\n答案："

    description = f"以下是关于{name}的单项选择题，请直接给出正确答案的选项。\n\n"
    examples = [doc_to_text(d) + "" + d["Answer"] for d in rows("dev")[:shots]]
    fewshot = "\n\n".join(examples) + "\n\n" if examples else ""
    return description + fewshot + doc_to_text(rows("test")[row])


@pytest.mark.parametrize("shots", [0, 1, 5])
@pytest.mark.parametrize("subject", ["anatomy", "college_actuarial_science", "world_religions"])
def test_cmmlu_prompts_follow_lm_evals_construction(cmmlu, subject, shots):
    samples = cmmlu.load(subject, shots=shots)
    for row in (0, len(samples) - 1):
        expected = _lmeval_cmmlu_prompt(subject, cmmlu.display_names[subject], shots, row)
        assert samples[row].prompt == expected


def test_prefix_is_the_shared_head_of_every_prompt(cmmlu):
    samples = cmmlu.load("anatomy", shots=3)
    prefixes = {s.prefix for s in samples}
    assert len(prefixes) == 1
    prefix = prefixes.pop()
    assert prefix.endswith("\nD. 梳状肌\n答案：D\n\n")
    assert all(s.prompt.startswith(prefix) and len(s.prompt) > len(prefix) for s in samples)
    assert cmmlu.load("anatomy")[0].prefix == "以下是关于解剖学的单项选择题，请直接给出正确答案的选项。\n\n"


def test_mmlu_prompt_is_lm_evals(mmlu):
    sample = mmlu.load("abstract_algebra", shots=1)[0]
    assert sample.prompt == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n"
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
        "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
    )
    assert sample.choices == [" A", " B", " C", " D"]
    assert sample.target == 1 and sample.meta["answer"] == "B"


def test_ceval_prompt_is_lm_evals_ceval_valid(ceval):
    sample = ceval.load("law")[0]
    assert sample.prompt.startswith(
        "以下是中国关于法学的单项选择题，请选出其中的正确答案。\n\n下列关于法律推理的表述"
    )
    assert sample.prompt.endswith("\nD. 辩证推理实际上是一种立法活动\n答案：")
    assert sample.choices == [" A", " B", " C", " D"]


def test_chat_prompt_is_one_question_with_an_instruction(cmmlu, mmlu):
    zh = cmmlu.load("agronomy")[0]
    assert zh.chat_prompt == (
        "以下是关于农学的单项选择题。\n\n在农业生产中被当作极其重要的劳动对象发挥作用，最主要的不可替代的基本生产资料是\n"
        "A. 农业生产工具\nB. 土地\nC. 劳动力\nD. 资金\n\n请直接给出正确答案的选项字母（A、B、C 或 D）。"
    )
    assert zh.messages is None
    en = mmlu.load("abstract_algebra")[0]
    assert en.chat_prompt.startswith(
        "The following is a multiple choice question about abstract algebra.\n\n"
    )
    assert en.chat_prompt.endswith("\nD. 6\n\nAnswer with the letter of the correct option (A, B, C or D).")


def test_few_shot_chat_is_a_conversation(cmmlu):
    sample = cmmlu.load("agronomy", shots=2)[0]
    assert [m["role"] for m in sample.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in sample.messages[1::2]] == ["C", "D"]
    assert sample.messages[-1]["content"] == sample.chat_prompt
    assert "肉牛屠宰后" in sample.messages[0]["content"]


def test_few_shot_examples_are_the_first_rows_and_limited(cmmlu):
    assert len(cmmlu.load("agronomy", shots=5)) == 169
    with pytest.raises(ConfigError, match=r"6 few-shot examples requested, .*dev/agronomy.csv has 5"):
        cmmlu.load("agronomy", shots=6)


def test_templates_come_from_the_config(tmp_path):
    ds = McqCsvDataset(
        "cmmlu",
        description="[{{ subject }}|{{ subject_name }}]\n",
        answer_prefix=" ",
        question="Q: {{ question }}{% for label, text in options %} ({{ label }}) {{ text }}{% endfor %} =>",
    )
    sample = ds.load("agronomy", shots=1)[0]
    assert sample.prompt.startswith(
        "[agronomy|农学]\nQ: 肉牛屠宰后，胴体的哪个部位肉质较好 (A) 胸 (B) 腹 (C) 大腿 (D) 小腿 => C\n\nQ: "
    )
    assert sample.choices == [" A", " B", " C", " D"]
    assert ds.describe()["templates"]["answer_prefix"] == " "


def test_a_template_cannot_execute_code():
    ds = McqCsvDataset("cmmlu", question="{{ question.__class__.__base__.__subclasses__() }}")
    with pytest.raises(ConfigError, match="template 'question'"):
        ds.load("agronomy")


def test_custom_labels_need_their_own_templates():
    with pytest.raises(ConfigError, match="choice_labels"):
        McqCsvDataset("cmmlu", choice_labels=["1", "2", "3", "4"])
    ds = McqCsvDataset(
        "cmmlu",
        choice_labels=["1", "2", "3", "4"],
        question="{{ question }}{% for l, t in options %}\n{{ l }}. {{ t }}{% endfor %}\n答案：",
        chat_prompt="{{ question }}",
    )
    sample = ds.load("agronomy")[0]
    assert sample.choices == ["1", "2", "3", "4"] and sample.meta["answer"] == "2"
    assert "\n2. 土地\n" in sample.prompt


# ---------------------------------------------------------------- categories, names, provenance


@pytest.mark.parametrize(
    ("name", "categories"),
    [
        ("cmmlu", ["STEM", "Humanities", "Social Science", "Other", "China specific"]),
        ("ceval", ["STEM", "Social Science", "Humanities", "Other"]),
        ("mmlu", ["STEM", "humanities", "social sciences", "other"]),
    ],
)
def test_every_subject_on_disk_has_a_category(request, name, categories):
    ds = request.getfixturevalue(name)
    cats = ds.categories()
    assert list(cats) == categories
    topical = [c for c in categories if c != "China specific"]
    for subject in ds.subsets():
        assert sum(subject in cats[c] for c in topical) == 1, subject  # exactly one topical category
    assert {s for members in cats.values() for s in members} == set(ds.subsets())


def test_cmmlu_china_specific_subjects_also_count_in_their_topic(cmmlu):
    cats = cmmlu.categories()
    assert len(cats["China specific"]) == 15
    assert "chinese_history" in cats["China specific"] and "chinese_history" in cats["Humanities"]
    assert "ancient_chinese" in cats["Social Science"]  # linguistics, in CMMLU's own grouping


def test_display_names(cmmlu, ceval, mmlu):
    assert cmmlu.display_names["agronomy"] == "农学"
    assert ceval.display_names["mao_zedong_thought"] == "毛泽东思想和中国特色社会主义理论体系概论"
    assert mmlu.display_names["high_school_us_history"] == "high school us history"
    for ds in (cmmlu, ceval, mmlu):
        assert set(ds.display_names) == set(ds.subsets())


def test_fingerprint_covers_the_files_read():
    ds = McqCsvDataset("cmmlu")
    ds.load("agronomy", shots=1)
    read = [DATA / "cmmlu" / "test" / "agronomy.csv", DATA / "cmmlu" / "dev" / "agronomy.csv"]
    assert ds.fingerprint() == files_fingerprint(read)
    ds.load("anatomy")
    assert ds.fingerprint() == files_fingerprint(read + [DATA / "cmmlu" / "test" / "anatomy.csv"])


def test_describe_records_layout_and_templates(ceval):
    d = ceval.describe()
    assert d["layout"] == "ceval" and d["eval_split"] == "val" and d["fewshot_split"] == "dev"
    assert set(d["templates"]) == {"description", "question", "answer_prefix", "chat_prompt"}


# ---------------------------------------------------------------- configuration and data errors


def test_params_forbid_unknown_keys_and_check_templates():
    with pytest.raises(ValidationError, match="extra"):
        McqCsvParams(path="cmmlu", shot=5)
    with pytest.raises(ValidationError, match="template 'question' does not compile"):
        McqCsvParams(path="cmmlu", question="{{ question ")
    assert McqCsvParams(path="cmmlu").model_dump()["eval_split"] is None


def test_ceval_test_split_has_no_answers():
    ds = McqCsvDataset("ceval", eval_split="test")
    with pytest.raises(McqDataError, match=r"missing column 'answer'.*no answers"):
        ds.load("law")


def _write(root: Path, subject: str, text: str, split: str = "test") -> Path:
    path = root / split / f"{subject}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


HEADER = ",Question,A,B,C,D,Answer\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('0,q0,a,b,c,d,A\n1,"two\nlines",a,b,c\n', r"row 1 \(line 3\): missing column 'D', 'Answer'"),
        ("0,q0,a,b,c,d,A\n1,q1,a,b,c,d,E\n", r"row 1 \(line 3\): answer 'E' is not one of A, B, C, D"),
        ("0,q0,a,b,c,d,A,extra\n", r"row 0 \(line 2\): 1 field\(s\) more than the header's 7"),
        ("0,q0,a,b,c,d,\n", r"row 0 \(line 2\): answer '' is not one of"),
    ],
)
def test_a_malformed_row_is_a_one_line_error_naming_file_and_row(tmp_path, body, message):
    path = _write(tmp_path, "bad", HEADER + body)
    ds = McqCsvDataset(str(tmp_path), layout="cmmlu")
    with pytest.raises(McqDataError, match=message) as info:
        ds.load("bad")
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, LuopanError)


def test_a_header_without_a_required_column_names_it(tmp_path):
    path = _write(tmp_path, "bad", ",Question,A,B,C,D\n0,q,a,b,c,d\n")
    ds = McqCsvDataset(str(tmp_path), layout="cmmlu")
    with pytest.raises(McqDataError, match=rf"^{path}: line 1: missing column 'Answer'"):
        ds.load("bad")


def test_an_unknown_header_cannot_be_auto_detected(tmp_path):
    _write(tmp_path, "x", "q,a,b\n1,2,3\n")
    with pytest.raises(ConfigError, match=r"x.csv: unknown header q,a,b"):
        McqCsvDataset(str(tmp_path))


def test_a_small_custom_dataset_in_the_cmmlu_layout(tmp_path):
    _write(
        tmp_path,
        "my_topic",
        HEADER + '0,"1+1=?",1,2,3,4,B\n\n1,"Capital of France?",Paris,Rome,Oslo,Bern,A\n',
    )
    _write(tmp_path, "my_topic", HEADER + "0,2+2=?,3,4,5,6,B\n", split="dev")
    ds = McqCsvDataset(str(tmp_path))
    assert ds.layout.name == "cmmlu" and ds.subsets() == ["my_topic"]
    assert ds.display_names == {"my_topic": "my topic"} and ds.categories() == {}
    samples = ds.load("my_topic", shots=1)
    assert [s.id for s in samples] == ["my_topic/0", "my_topic/1"]  # the blank line is skipped
    assert samples[1].prompt.endswith("\n\nCapital of France?\nA. Paris\nB. Rome\nC. Oslo\nD. Bern\n答案：")


def test_missing_split_and_missing_path_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        McqCsvDataset("no_such_benchmark")
    with pytest.raises(ConfigError, match="no split 'validation'"):
        McqCsvDataset("cmmlu", eval_split="validation")
