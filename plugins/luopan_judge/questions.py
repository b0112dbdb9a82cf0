"""The ``questions`` dataset loader: open-ended questions for model-judged evaluation, in the layouts of MT-Bench
(two turns, GPT-4 reference answers for math, reasoning and coding), Arena-Hard (one turn) and AlpacaEval (one
turn; the instructions are read from any ``model_outputs.json``, which holds all 805).

Sample ids are the benchmark's own question ids (MT-Bench ``question_id``, Arena-Hard ``uid``, AlpacaEval's row
index), so the ``answers`` backend finds pregenerated answers by id. ``Sample.turns`` holds MT-Bench's two user
turns (the kernel asks the second with the model's own first answer in the history); ``Sample.target`` holds the
reference answer's turns when there is one, else ``None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from luopan.components import Dataset
from luopan.data import files_fingerprint, find_data
from luopan.errors import ConfigError, LuopanError
from luopan.types import Sample
from luopan_judge.answers import parse_records


class QuestionsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a question file (question.jsonl, model_outputs.json) or the folder holding "
                                  "question.jsonl")
    format: Literal["auto", "mt_bench", "arena_hard", "alpaca_eval"] = "auto"
    references: str | None = Field(
        default="reference_answer/gpt-4.jsonl",
        description="reference answers (MT-Bench layout), relative to the question folder; missing file: none")
    turns: int | None = Field(default=None, ge=1, description="ask at most this many turns (1: first turn only)")
    subset_field: str | None = Field(default=None, description="default: category (MT-Bench, Arena-Hard), "
                                                               "dataset (AlpacaEval)")


def _read(path: Path) -> list[dict[str, Any]]:
    from luopan_judge.answers import _read_records

    return _read_records(path)


def question_file(path: str) -> Path:
    """The question file ``path`` names (a file, or the folder holding question.jsonl), found like any data
    path."""
    p = find_data(path, what="questions")
    file = p / "question.jsonl" if p.is_dir() else p
    if not file.is_file():
        raise ConfigError(f"questions: no question.jsonl in {p}")
    return file


class QuestionsDataset(Dataset):
    default_evaluator = "pairwise"

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """The question file, found like any data path (nothing is read)."""
        try:
            question_file(params.path)
        except LuopanError as exc:
            return [str(exc)]
        return []

    def __init__(self, path: str, format: str = "auto", references: str | None = "reference_answer/gpt-4.jsonl",
                 turns: int | None = None, subset_field: str | None = None) -> None:
        self.file = question_file(path)
        self.records = _read(self.file)
        if not self.records:
            raise ConfigError(f"questions: {self.file} holds no questions")
        first = self.records[0]
        if format == "auto":
            format = ("mt_bench" if "turns" in first else "arena_hard" if "uid" in first and "prompt" in first
                      else "alpaca_eval" if "instruction" in first else "")
            if not format:
                raise ConfigError(f"questions: {self.file}: unknown layout (fields {', '.join(sorted(first))}); set "
                                  f"format: mt_bench, arena_hard or alpaca_eval")
        self.format = format
        self.max_turns = turns
        self.subset_field = subset_field or ("dataset" if format == "alpaca_eval" else "category")
        self.ref_file: Path | None = None
        self.refs: dict[str, list[str]] = {}
        if references and format == "mt_bench":
            ref = self.file.parent / references
            if ref.is_file():
                self.ref_file = ref
                self.refs = parse_records(_read(ref), "mt_bench", source=str(ref))[0]
        self._samples: dict[str, list[Sample]] = {}
        for n, r in enumerate(self.records):
            s = self._sample(n, r)
            self._samples.setdefault(s.subset, []).append(s)

    def _sample(self, n: int, r: dict[str, Any]) -> Sample:
        where = f"{self.file}: record {n}"
        try:
            if self.format == "mt_bench":
                qid = str(r["question_id"])
                turns = [str(t) for t in r["turns"]]
            elif self.format == "arena_hard":
                qid = str(r["uid"])
                turns = [str(r["prompt"])]
            else:
                qid = str(n)
                turns = [str(r["instruction"])]
        except KeyError as exc:
            raise ConfigError(f"{where}: missing field {exc}") from None
        if self.max_turns:
            turns = turns[: self.max_turns]
        subset = str(r.get(self.subset_field) or "all")
        ref = self.refs.get(qid)
        meta = {k: r[k] for k in ("category", "cluster", "subcategory", "dataset") if k in r}
        meta["question_id"] = qid
        return Sample(qid, subset, turns[0], ref[: len(turns)] if ref else None, chat_prompt=turns[0],
                      turns=turns if len(turns) > 1 else None, meta=meta)

    def subsets(self) -> list[str]:
        return list(self._samples)

    def load(self, subset: str, *, shots: int = 0) -> list[Sample]:
        if shots:
            raise ConfigError("questions: open-ended questions take no few-shot examples (shots: 0)")
        return list(self._samples[subset])

    def fingerprint(self) -> str:
        return files_fingerprint([self.file] + ([self.ref_file] if self.ref_file else []))

    def describe(self) -> dict[str, Any]:
        return {"format": self.format, "file": str(self.file), "references": str(self.ref_file or ""),
                "turns": self.max_turns or max(len(r.get("turns", [1])) for r in self.records),
                "questions": len(self.records), "with_reference": len(self.refs)}


def reference_turns(sample: Sample) -> list[str] | None:
    """The sample's reference answer, one string per turn (``None`` when it has none)."""
    t = sample.target
    if t is None or t == "":
        return None
    if isinstance(t, (list, tuple)):
        return [str(x) for x in t] or None
    return [str(t)]


def question_turns(sample: Sample) -> list[str]:
    return list(sample.turns) if sample.turns else [sample.chat_prompt if sample.chat_prompt is not None
                                                    else sample.prompt]

