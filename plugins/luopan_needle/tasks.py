"""Needle tasks: the built-in ones (tasks.yaml), tasks written in the run file, and needle sets read from the
multi-needle CSVs of gkamradt/LLMTest_NeedleInAHaystack; and the prompt templates."""

from __future__ import annotations

import ast
import csv
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from luopan.data import find_data
from luopan.errors import ConfigError
from luopan_needle.grid import Task

BUILTIN = Path(__file__).with_name("tasks.yaml")

#: (language, question position) -> template; {document} and {question} are replaced
TEMPLATES: dict[tuple[str, str], str] = {
    ("en", "end"): "Read the document below, then answer the question that follows it using only information "
                   "from the document.\n\n<document>\n{document}\n</document>\n\nQuestion: {question}\nAnswer:",
    ("en", "start"): "Answer the question below using only information from the document that follows it.\n\n"
                     "Question: {question}\n\n<document>\n{document}\n</document>\n\nAnswer:",
    ("zh", "end"): "请阅读下面的文档，然后只根据文档中的信息回答文档后面的问题。\n\n<文档>\n{document}\n</文档>\n\n"
                   "问题：{question}\n回答：",
    ("zh", "start"): "请只根据后面文档中的信息回答下面的问题。\n\n问题：{question}\n\n<文档>\n{document}\n</文档>\n\n回答：",
}

_INGREDIENT = re.compile(r"^\s*(.+?)\s+(?:is|are)\s+(?:one of\s+)?the secret ingredients?\b", re.IGNORECASE)


class TaskSpec(BaseModel):
    """A task in the run file (or tasks.yaml)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", description="label of the task (subsets are <language>_<name>/len<L>)")
    kind: Literal["single", "multi", "reasoning"] = "single"
    needles: list[str] = Field(default_factory=list, description="sentences hidden in the haystack, in order")
    question: str = ""
    answers: list[str | list[str]] = Field(
        default_factory=list, description="key phrases: one group per fact (a group: any of its phrases)")
    csv: str | None = Field(default=None, description="a multi-needle CSV of gkamradt's tester: needles from it")
    total_needles: int | None = Field(default=None, ge=1, description="with csv: the needle set of this size")

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if self.csv is None:
            if not self.needles or not self.question or not self.answers:
                raise ValueError("a task needs needles, question and answers (or csv)")
            if self.kind == "single" and len(self.needles) != 1:
                raise ValueError("a single-needle task has exactly one needle")
            if self.kind == "multi" and len(self.answers) != len(self.needles):
                raise ValueError("a multi-needle task has one answer group per needle")
        return self


@lru_cache(maxsize=1)
def builtin_tasks() -> dict[str, dict[str, dict[str, Any]]]:
    return yaml.safe_load(BUILTIN.read_text(encoding="utf-8"))


def resolve_task(entry: str | TaskSpec | dict[str, Any], language: str) -> tuple[Task, list[Path]]:
    """A :class:`Task` and the files it read (for the fingerprint)."""
    if isinstance(entry, str):
        table = builtin_tasks().get(language, {})
        if entry not in table:
            raise ConfigError(f"needle: no built-in task '{entry}' for language '{language}' "
                              f"(built-in: {', '.join(table) or 'none'}); write the task out in the run file")
        spec = TaskSpec(name=entry, **table[entry])
    elif isinstance(entry, dict):
        spec = TaskSpec(**entry)
    else:
        spec = entry
    name = spec.name or spec.kind
    if spec.csv is None:
        answers = tuple(tuple([a] if isinstance(a, str) else a) for a in spec.answers)
        return Task(name, spec.kind, tuple(spec.needles), spec.question, answers), []
    path = find_data(spec.csv, what=f"needle task '{name}': csv")
    needles, keys = needles_from_csv(path, spec.total_needles)
    question = spec.question or "What are the secret ingredients needed to build the perfect pizza?"
    answers = tuple(tuple([a] if isinstance(a, str) else a) for a in spec.answers) if spec.answers \
        else tuple((k,) for k in keys)
    kind = spec.kind if spec.kind != "single" or len(needles) == 1 else "multi"
    return Task(name, kind, tuple(needles), question, answers), [path]


def needles_from_csv(path: Path, total: int | None) -> tuple[list[str], list[str]]:
    """The first needle set of ``total`` needles (any size when None) in a gkamradt multi-needle CSV (column
    ``needles``, a Python list literal), and each needle's key phrase: the ingredient before '... is one of the
    secret ingredients'."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        raw = row.get("needles") or ""
        if not raw:
            continue
        try:
            needles = [str(n).strip() for n in ast.literal_eval(raw)]
        except (ValueError, SyntaxError):
            raise ConfigError(f"{path}: column 'needles' is not a list of strings: {raw[:80]!r}") from None
        if total is not None and len(needles) != total:
            continue
        keys = []
        for n in needles:
            m = _INGREDIENT.match(n)
            if not m:
                raise ConfigError(f"{path}: cannot find the key phrase of needle {n!r}; give the task's answers")
            keys.append(m.group(1))
        return needles, keys
    raise ConfigError(f"{path}: no row with {total} needles" if total else f"{path}: no needles column")


def split_template(template: str, question: str) -> tuple[str, str]:
    """(head, tail) around the document, with the question filled in."""
    if template.count("{document}") != 1:
        raise ConfigError("needle: the template must contain {document} exactly once")
    head, tail = template.split("{document}")
    return head.replace("{question}", question), tail.replace("{question}", question)
