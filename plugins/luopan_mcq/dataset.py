"""The ``mcq_csv`` dataset: multiple-choice questions from one CSV file per subject and split.

Prompts follow lm-eval's construction for ``output_type: multiple_choice``: the description, then each
few-shot example as ``question + answer_prefix + label`` followed by ``fewshot_delimiter``, then the question.
``Sample.prefix`` is everything before the question (shared by a subject's samples); the continuations
scored are ``answer_prefix + label`` for each label.

``circular: true`` (CircularEval) asks each question once per rotation of its options (A B C D, then
B C D A, ...: the texts move, the labels stay); the ``accuracy`` evaluator groups the rotations again through
``meta["circular"]`` and reports ``circular_accuracy`` beside plain accuracy (the original order's).
Few-shot examples keep their original order.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from luopan.components import Dataset
from luopan.data import files_fingerprint, find_data
from luopan.errors import ConfigError, LuopanError
from luopan.prompts import PromptTemplate, validate_template
from luopan.types import Sample
from luopan_mcq.layouts import (
    DEFAULT_LABELS,
    LAYOUTS,
    Layout,
    Question,
    detect_layout,
    read_header,
    read_questions,
)

TEMPLATE_NAMES = ("description", "question", "answer_prefix", "chat_prompt")


class McqCsvParams(BaseModel):
    """Options of the ``mcq_csv`` loader. Templates are Jinja2, rendered in a sandbox; None = the layout's."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="folder holding one sub-folder per split; searched like any data path")
    layout: Literal["auto", "cmmlu", "ceval", "mmlu"] = Field(
        default="auto", description="file and column layout; auto reads it from a CSV header"
    )
    eval_split: str | None = Field(
        default=None, description="the split scored; default test (val for ceval: its test has no answers)"
    )
    fewshot_split: str = Field(default="dev", description="few-shot examples: the first k rows of this split")
    description: str | None = Field(default=None, description="subject header; gets subject, subject_name")
    question: str | None = Field(
        default=None,
        description="one question; gets question, A..D, choices, options, labels, subject, subject_name",
    )
    answer_prefix: str | None = Field(
        default=None, description="text between the prompt and the answer label"
    )
    chat_prompt: str | None = Field(
        default=None, description="the single user turn for chat models; same variables, plus description"
    )
    choice_labels: list[str] = Field(default_factory=lambda: list(DEFAULT_LABELS), min_length=2)
    fewshot_delimiter: str = Field(default="\n\n", description="after each few-shot example")
    circular: bool = Field(
        default=False,
        description="CircularEval: each question once per rotation of its options; accuracy reports "
        "circular_accuracy (right in every rotation) beside plain accuracy",
    )

    @field_validator(*TEMPLATE_NAMES)
    @classmethod
    def _compiles(cls, value: str | None, info: Any) -> str | None:
        return validate_template(info.field_name, value)

    @field_validator("choice_labels")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if any(not v.strip() for v in value) or len(set(value)) != len(value):
            raise ValueError(f"choice labels must be distinct and non-empty, got {value}")
        return value


@dataclass(slots=True)
class _SubjectPrompt:
    """What every question of one subject shares, for one number of shots."""

    variables: dict[str, Any]  # subject, subject_name, labels, description
    prefix: str  # description + few-shot block
    continuations: list[str]
    fewshot_messages: list[dict[str, str]] | None  # the few-shot turns of the chat form


class McqCsvDataset(Dataset):
    """Multiple-choice questions from per-subject CSV files in the CMMLU, C-Eval or MMLU layout.

    Nothing is read at construction but one header (``layout: auto``); ``load`` reads a subject's file the
    first time it is needed and keeps its rows, so each file is read once.
    """

    def __init__(
        self,
        path: str,
        layout: str = "auto",
        eval_split: str | None = None,
        fewshot_split: str = "dev",
        description: str | None = None,
        question: str | None = None,
        answer_prefix: str | None = None,
        chat_prompt: str | None = None,
        choice_labels: list[str] | None = None,
        fewshot_delimiter: str = "\n\n",
        circular: bool = False,
    ) -> None:
        self.circular = circular
        self.root = find_data(path, what="mcq_csv path")
        self.layout = LAYOUTS[layout] if layout != "auto" else self._detect(self.root, eval_split)
        self.eval_split = eval_split or self.layout.default_eval_split
        self.fewshot_split = fewshot_split
        self.fewshot_delimiter = fewshot_delimiter
        self.labels = list(choice_labels or DEFAULT_LABELS)
        n_options = len(self.layout.option_columns)
        if len(self.labels) != n_options:
            raise ConfigError(
                f"mcq_csv: {len(self.labels)} choice_labels for the {self.layout.name} layout's {n_options} options"
            )
        if tuple(self.labels) != DEFAULT_LABELS and (question is None or chat_prompt is None):
            raise ConfigError(
                f"mcq_csv: choice_labels {self.labels} need the 'question' and 'chat_prompt' templates set too: "
                f"the defaults spell the options A-D"
            )
        given = {
            "description": description,
            "question": question,
            "answer_prefix": answer_prefix,
            "chat_prompt": chat_prompt,
        }
        self.templates = {
            name: PromptTemplate(name, src if src is not None else getattr(self.layout, name))
            for name, src in given.items()
        }
        self._read_by_templates = (
            self.templates["question"].variables | self.templates["chat_prompt"].variables
        )
        split_dir = self.root / self.eval_split
        if not split_dir.is_dir():
            splits = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise ConfigError(
                f"mcq_csv: no split '{self.eval_split}' in {self.root} (splits: {', '.join(splits)})"
            )
        self._subjects = self.layout.subjects(self.root, self.eval_split)
        if not self._subjects:
            raise ConfigError(f"mcq_csv: no {self.layout.name}-layout CSV files in {split_dir}")
        names = self.layout.subject_info["names"]
        self.display_names = {s: names.get(s, s.replace("_", " ")) for s in self._subjects}
        self._questions: dict[Path, list[Question]] = {}
        self._prompts: dict[tuple[str, int], _SubjectPrompt] = {}
        self._fingerprint: tuple[frozenset[Path], str] | None = None

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """The data folder (found like any data path), its layout, eval split and subjects: what building the
        loader checks, which reads one CSV header and lists the split's folder (no questions are read)."""
        try:
            cls.from_params(params)
        except LuopanError as exc:
            return [str(exc)]
        return []

    @staticmethod
    def _detect(root: Path, eval_split: str | None) -> Layout:
        folders = sorted(
            (p for p in root.iterdir() if p.is_dir()), key=lambda p: (p.name != eval_split, p.name)
        )
        first = next((f for d in folders for f in sorted(d.glob("*.csv"))), None)
        if first is None:
            raise ConfigError(f"mcq_csv: no CSV file under {root} to detect the layout from; set 'layout'")
        header = read_header(first)
        layout = detect_layout(header)
        if layout is None:
            known = "; ".join(f"{lay.name}: {','.join(lay.signature)},..." for lay in LAYOUTS.values())
            raise ConfigError(f"mcq_csv: {first}: unknown header {','.join(header)} (known layouts: {known})")
        return layout

    # ------------------------------------------------------------ Dataset API
    def subsets(self) -> list[str]:
        return list(self._subjects)

    reorders_options = True

    def load(
        self, subset: str, *, shots: int = 0, order: Callable[[str, int], Sequence[int]] | None = None
    ) -> list[Sample]:
        """A subject's questions; ``order`` (question id, n) -> the order to show its options in (robustness
        shuffles; the gold answer follows its text, CircularEval rotates the reordered options)."""
        if subset not in self.display_names:
            raise ConfigError(f"mcq_csv: no subject '{subset}' in {self.root / self.eval_split}")
        questions = self._read(self.eval_split, subset)
        head = self._subject_prompt(subset, shots)
        render_question = self.templates["question"].render
        render_chat = self.templates["chat_prompt"].render
        labels = self.labels
        variables = dict(head.variables)  # refilled for each question: renders keep no reference to it
        samples = []
        delim = self.templates["answer_prefix"].render(head.variables)
        for i, question in enumerate(questions):
            n = len(question.options)
            if order is not None:
                perm = list(order(f"{subset}/{i}", n))
                question = Question(
                    question.question, tuple(question.options[k] for k in perm), perm.index(question.answer)
                )
            for r in range(n if self.circular else 1):
                q = question
                if r:
                    q = Question(q.question, q.options[r:] + q.options[:r], (q.answer - r) % n)
                self._fill(variables, q)
                chat = render_chat(variables)
                messages = None
                if head.fewshot_messages is not None:
                    messages = [dict(m) for m in head.fewshot_messages]
                    messages.append({"role": "user", "content": chat})
                meta: dict[str, Any] = {
                    "answer": labels[q.answer],
                    "options": list(q.options),
                    "labels": list(labels),
                }
                if delim:  # acc_norm measures the label without it, as lm-eval does
                    meta["target_delimiter"] = delim
                if self.circular:
                    meta["circular"] = {"group": f"{subset}/{i}", "rotation": r, "n": n}
                samples.append(
                    Sample(
                        id=f"{subset}/{i}" if r == 0 else f"{subset}/{i}@{r}",
                        subset=subset,
                        prompt=head.prefix + render_question(variables),
                        target=q.answer,
                        choices=list(head.continuations),
                        prefix=head.prefix,
                        chat_prompt=chat,
                        messages=messages,
                        meta=meta,
                    )
                )
        return samples

    def categories(self) -> dict[str, list[str]]:
        present = set(self._subjects)
        groups = self.layout.subject_info["categories"]
        out = {cat: [s for s in members if s in present] for cat, members in groups.items()}
        return {cat: members for cat, members in out.items() if members}

    def fingerprint(self) -> str:
        files = frozenset(self._questions)
        if self._fingerprint is None or self._fingerprint[0] != files:
            self._fingerprint = (files, files_fingerprint(files))
        return self._fingerprint[1]

    def describe(self) -> dict[str, Any]:
        return {
            "layout": self.layout.name,
            "eval_split": self.eval_split,
            "fewshot_split": self.fewshot_split,
            "choice_labels": list(self.labels),
            "fewshot_delimiter": self.fewshot_delimiter,
            **({"circular": True} if self.circular else {}),
            "templates": {name: t.source for name, t in self.templates.items()},
        }

    # ------------------------------------------------------------ helpers
    def _read(self, split: str, subject: str) -> list[Question]:
        path = self.layout.path(self.root, split, subject)
        rows = self._questions.get(path)
        if rows is None:
            if not path.is_file():
                raise ConfigError(f"mcq_csv: {path} not found (split '{split}' has no file for '{subject}')")
            rows = self._questions[path] = read_questions(path, self.layout)
        return rows

    def _fill(self, variables: dict[str, Any], q: Question) -> None:
        """Set a question's template variables: the question, its options as A, B, ... (and as lists).

        ``choices`` and ``options`` are lists built per question, so only when a template reads them.
        """
        variables["question"] = q.question
        variables.update(zip(string.ascii_uppercase, q.options))
        if "choices" in self._read_by_templates:
            variables["choices"] = list(q.options)
        if "options" in self._read_by_templates:
            variables["options"] = list(zip(self.labels, q.options))

    def _subject_prompt(self, subject: str, shots: int) -> _SubjectPrompt:
        key = (subject, shots)
        head = self._prompts.get(key)
        if head is not None:
            return head
        base: dict[str, Any] = {
            "subject": subject,
            "subject_name": self.display_names[subject],
            "labels": list(self.labels),
        }
        base["description"] = self.templates["description"].render(base)
        answer_prefix = self.templates["answer_prefix"].render(base)
        examples: list[Question] = []
        if shots:
            pool = self._read(self.fewshot_split, subject)
            if shots > len(pool):
                path = self.layout.path(self.root, self.fewshot_split, subject)
                raise ConfigError(f"mcq_csv: {shots} few-shot examples requested, {path} has {len(pool)}")
            examples = pool[:shots]
        block = ""
        messages: list[dict[str, str]] = []
        variables = dict(base)
        for ex in examples:
            self._fill(variables, ex)
            label = self.labels[ex.answer]
            block += (
                self.templates["question"].render(variables) + answer_prefix + label + self.fewshot_delimiter
            )
            messages += [
                {"role": "user", "content": self.templates["chat_prompt"].render(variables)},
                {"role": "assistant", "content": label},
            ]
        head = _SubjectPrompt(
            base, base["description"] + block, [answer_prefix + lab for lab in self.labels], messages or None
        )
        self._prompts[key] = head
        return head
