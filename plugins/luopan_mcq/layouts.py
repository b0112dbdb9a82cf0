"""The CSV layouts ``mcq_csv`` reads, their default prompts, and the CSV reader.

Default prompts are lm-evaluation-harness's, byte for byte, so accuracies can be compared with it:

* CMMLU: the task files ``benchmarks/_common.py`` writes for lm-eval (``target_delimiter: ""``);
* C-Eval: lm-eval's ``ceval-valid`` (``lm_eval/tasks/ceval/_default_ceval_yaml`` and its
  ``_generate_configs.py``), whose choices follow the default target delimiter, a space;
* MMLU: lm-eval's ``mmlu`` (``lm_eval/tasks/mmlu/default/_default_template_yaml``).

The chat prompts are luopan's own: one question, its options, and an instruction to answer with the letter.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from luopan.data import csv_records
from luopan.errors import LuopanError

DEFAULT_LABELS: tuple[str, ...] = ("A", "B", "C", "D")
_SUBJECTS_DIR = Path(__file__).with_name("subjects")


class McqDataError(LuopanError):
    """A data file is malformed. The message is one line naming the file, the row and the line."""


class Question(NamedTuple):
    question: str
    options: tuple[str, ...]
    answer: int  # index into options


@dataclass(frozen=True)
class Layout:
    """How one benchmark lays out its files and columns, and its default prompt templates."""

    name: str
    #: the leading header columns that identify the layout (``layout: auto``)
    signature: tuple[str, ...]
    question_column: str
    option_columns: tuple[str, ...]
    answer_column: str
    #: answer cell -> option index, by position
    answer_values: tuple[str, ...]
    #: the file of a subject inside its split's folder; ``{subject}`` and ``{split}`` are replaced
    file_name: str
    default_eval_split: str
    description: str
    question: str
    answer_prefix: str
    chat_prompt: str
    #: subject names and categories, in ``subjects/``
    subjects_file: str

    def path(self, root: Path, split: str, subject: str) -> Path:
        return root / split / self.file_name.format(subject=subject, split=split)

    def subjects(self, root: Path, split: str) -> list[str]:
        """The subjects that have a file in ``split``, sorted; reads no file."""
        prefix, suffix = self.file_name.format(split=split, subject="\0").split("\0")  # around {subject}
        names = os.listdir(root / split)
        return sorted(
            n[len(prefix) : len(n) - len(suffix)]
            for n in names
            if n.startswith(prefix) and n.endswith(suffix) and len(n) > len(prefix) + len(suffix)
        )

    @cached_property
    def subject_info(self) -> dict[str, Any]:
        """``{"names": {subject: display name}, "categories": {category: [subject, ...]}}``."""
        with open(_SUBJECTS_DIR / self.subjects_file, encoding="utf-8") as fh:
            return json.load(fh)


_ZH_OPTIONS = "\nA. {{ A }}\nB. {{ B }}\nC. {{ C }}\nD. {{ D }}\n"
_ZH_CHAT_TAIL = _ZH_OPTIONS + "\n请直接给出正确答案的选项字母（A、B、C 或 D）。"

CMMLU = Layout(
    name="cmmlu",
    signature=("", "Question", "A", "B", "C", "D"),
    question_column="Question",
    option_columns=("A", "B", "C", "D"),
    answer_column="Answer",
    answer_values=("A", "B", "C", "D"),
    file_name="{subject}.csv",
    default_eval_split="test",
    description="以下是关于{{ subject_name }}的单项选择题，请直接给出正确答案的选项。\n\n",
    question="{{ question }}" + _ZH_OPTIONS + "答案：",
    answer_prefix="",
    chat_prompt="以下是关于{{ subject_name }}的单项选择题。\n\n{{ question }}" + _ZH_CHAT_TAIL,
    subjects_file="cmmlu.json",
)

CEVAL = Layout(
    name="ceval",
    signature=("id", "question", "A", "B", "C", "D"),
    question_column="question",
    option_columns=("A", "B", "C", "D"),
    answer_column="answer",
    answer_values=("A", "B", "C", "D"),
    file_name="{subject}_{split}.csv",
    default_eval_split="val",  # the test split's answers are withheld by the authors
    description="以下是中国关于{{ subject_name }}的单项选择题，请选出其中的正确答案。\n\n",
    question="{{ question.strip() }}" + _ZH_OPTIONS + "答案：",
    answer_prefix=" ",
    chat_prompt="以下是中国关于{{ subject_name }}考试的单项选择题。\n\n{{ question.strip() }}"
    + _ZH_CHAT_TAIL,
    subjects_file="ceval.json",
)

MMLU = Layout(
    name="mmlu",
    signature=("question", "choice0", "choice1", "choice2", "choice3"),
    question_column="question",
    option_columns=("choice0", "choice1", "choice2", "choice3"),
    answer_column="answer",
    answer_values=("0", "1", "2", "3"),
    file_name="{subject}_{split}.csv",
    default_eval_split="test",
    description="The following are multiple choice questions (with answers) about {{ subject_name }}.\n\n",
    question="{{ question.strip() }}\nA. {{ choices[0] }}\nB. {{ choices[1] }}\nC. {{ choices[2] }}\n"
    "D. {{ choices[3] }}\nAnswer:",
    answer_prefix=" ",
    chat_prompt="The following is a multiple choice question about {{ subject_name }}.\n\n{{ question.strip() }}\n"
    "A. {{ A }}\nB. {{ B }}\nC. {{ C }}\nD. {{ D }}\n\n"
    "Answer with the letter of the correct option (A, B, C or D).",
    subjects_file="mmlu.json",
)

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (CMMLU, CEVAL, MMLU)}


def detect_layout(header: list[str]) -> Layout | None:
    """The layout whose signature starts ``header``, if any."""
    for layout in LAYOUTS.values():
        if tuple(header[: len(layout.signature)]) == layout.signature:
            return layout
    return None


def read_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return next(csv.reader(fh), [])


def read_questions(path: Path, layout: Layout) -> list[Question]:
    """Every question of one CSV file, in file order. Blank lines are skipped.

    Raises :class:`McqDataError` naming the file, the row (0-based, as in sample ids) and its first line.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return _parse(path, csv.reader(fh), layout)
    except UnicodeDecodeError as exc:
        raise McqDataError(f"{path}: not UTF-8 text ({exc})") from None


def _parse(path: Path, reader: Any, layout: Layout) -> list[Question]:
    header = next(reader, None)
    if not header:
        raise McqDataError(f"{path}: empty file, expected a header row")
    column = {name: i for i, name in enumerate(header)}
    required = (layout.question_column, *layout.option_columns, layout.answer_column)
    missing = [c for c in required if c not in column]
    if missing:
        hint = " (this split has no answers?)" if missing == [layout.answer_column] else ""
        raise McqDataError(
            f"{path}: line 1: missing column {', '.join(repr(c) for c in missing)} in the header "
            f"({','.join(header)}) of the {layout.name} layout{hint}"
        )
    q_col = column[layout.question_column]
    options_of = itemgetter(*(column[c] for c in layout.option_columns))
    a_col = column[layout.answer_column]
    answer_index = {v: i for i, v in enumerate(layout.answer_values)}
    out: list[Question] = []
    for index, start, row in csv_records(path, reader, header, McqDataError):
        answer = answer_index.get(row[a_col].strip())
        if answer is None:
            raise McqDataError(
                f"{path}: row {index} (line {start}): answer {row[a_col]!r} is not one of "
                f"{', '.join(layout.answer_values)}"
            )
        out.append(Question(row[q_col], options_of(row), answer))
    return out
