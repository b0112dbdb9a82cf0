"""Readers for the local copies in ``$LUOPAN_DATA`` whose files the ``files`` loader cannot map alone.

Each presents its data as rows shaped like the documents lm-eval's task reads (after its ``process_docs``),
so a preset's templates are lm-eval's ``doc_to_text`` / ``doc_to_choice`` / ``doc_to_target``:

* ``hellaswag``: llama.cpp's text form (6 lines per item: ``activity_label: ctx``, the label, 4 endings),
  split ``validation``; rows ``{query, choices, label, ctx, endings}``, ``query`` and ``choices`` passed
  through lm-eval's ``preprocess`` (its ``process_docs``). The text form was already preprocessed by
  llama.cpp's extractor, which did not capitalise ``ctx_b`` as lm-eval does (see docs/benchmarks.md).
* ``piqa``: ``dev.jsonl`` beside ``dev-labels.lst``, split ``validation``; rows ``{goal, sol1, sol2, label}``.
* ``truthfulqa``: the original ``TruthfulQA.csv``, split ``validation``; rows ``{question, mc1_targets,
  mc2_targets, type, category}`` rebuilt the way ``mc_task.json`` was: MC1 = the best answer then the
  incorrect ones, MC2 = the correct ones then the incorrect ones, each answer ending with a period.
* ``bbh``: BIG-Bench Hard's ``bbh/<task>.json`` (split ``test``) and ``cot-prompts/<task>.txt`` (split
  ``fewshot``: the 3 chain-of-thought exemplars); rows ``{task, input, target, description}``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import orjson

from luopan.data import read_jsonl
from luopan_generic.readers import FilesDataError, Source, SplitRows


def preprocess(text: str) -> str:
    """lm-eval's ``hellaswag.utils.preprocess``, unchanged."""
    text = text.strip()
    # NOTE: Brackets are artifacts of the WikiHow dataset portion of HellaSwag.
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def _one_file(root: Path, name: str) -> Path:
    path = root if root.is_file() else root / name
    if not path.is_file():
        raise FilesDataError(f"{path}: not found")
    return path


class HellaSwagSource(Source):
    def __init__(self, root: Path) -> None:
        self.path = _one_file(root, "hellaswag_val_full.txt")

    def splits(self) -> list[str]:
        return ["validation"]

    def read(self, split: str) -> SplitRows:
        lines = self.path.read_text(encoding="utf-8").split("\n")
        while lines and not lines[-1]:
            lines.pop()
        if len(lines) % 6:
            raise FilesDataError(f"{self.path}: {len(lines)} lines, not a multiple of 6 (context, label, 4 endings)")
        rows = []
        for k in range(0, len(lines), 6):
            label = lines[k + 1].strip()
            if label not in ("0", "1", "2", "3"):
                raise FilesDataError(f"{self.path}: row {k // 6} (line {k + 2}): label {label!r} is not 0-3")
            endings = lines[k + 2 : k + 6]
            rows.append({
                "ctx": lines[k],
                "endings": endings,
                "query": preprocess(lines[k]),
                "choices": [preprocess(e) for e in endings],
                "label": int(label),
            })
        return SplitRows(split, rows, [(0, str(self.path))], [self.path])

    def describe(self) -> dict[str, Any]:
        return {"reader": "hellaswag", "files": {"validation": [str(self.path)]}}


class PiqaSource(Source):
    def __init__(self, root: Path) -> None:
        self.data = _one_file(root, "dev.jsonl")
        self.labels = self.data.with_name(self.data.stem + "-labels.lst")
        if not self.labels.is_file():
            raise FilesDataError(f"{self.labels}: not found (the labels of {self.data.name})")

    def splits(self) -> list[str]:
        return ["validation"]

    def read(self, split: str) -> SplitRows:
        docs = list(read_jsonl(self.data, error=FilesDataError))
        labels = [x.strip() for x in self.labels.read_text(encoding="utf-8").splitlines() if x.strip()]
        if len(docs) != len(labels):
            raise FilesDataError(f"{self.labels}: {len(labels)} labels for the {len(docs)} rows of {self.data}")
        rows = []
        for i, (doc, label) in enumerate(zip(docs, labels)):
            if label not in ("0", "1"):
                raise FilesDataError(f"{self.labels}: row {i}: label {label!r} is not 0 or 1")
            rows.append({**doc, "label": int(label)})
        return SplitRows(split, rows, [(0, str(self.data))], [self.data, self.labels])

    def describe(self) -> dict[str, Any]:
        return {"reader": "piqa", "files": {"validation": [str(self.data), str(self.labels)]}}


def _answers(cell: str) -> list[str]:
    """A ';'-separated answer list, each ending with a period (as in mc_task.json)."""
    out = []
    for a in cell.split(";"):
        a = a.strip()
        if a:
            out.append(a if a.endswith(".") else a + ".")
    return out


class TruthfulQASource(Source):
    def __init__(self, root: Path) -> None:
        self.path = _one_file(root, "TruthfulQA.csv")

    def splits(self) -> list[str]:
        return ["validation"]

    def read(self, split: str) -> SplitRows:
        with open(self.path, encoding="utf-8", newline="") as fh:
            records = list(csv.DictReader(fh))
        rows = []
        for i, r in enumerate(records):
            try:
                best = _answers(r["Best Answer"])
                correct, incorrect = _answers(r["Correct Answers"]), _answers(r["Incorrect Answers"])
            except KeyError as exc:
                raise FilesDataError(f"{self.path}: row {i}: no column {exc}") from None
            if len(best) != 1 or not incorrect:
                raise FilesDataError(f"{self.path}: row {i}: needs one best answer and an incorrect one")
            mc1 = best + incorrect
            mc2 = correct + incorrect
            rows.append({
                "question": r["Question"].strip(),
                "type": r.get("Type", ""),
                "category": r.get("Category", ""),
                "mc1_targets": {"choices": mc1, "labels": [1] + [0] * len(incorrect)},
                "mc2_targets": {"choices": mc2, "labels": [1] * len(correct) + [0] * len(incorrect)},
            })
        return SplitRows(split, rows, [(0, str(self.path))], [self.path])

    def describe(self) -> dict[str, Any]:
        return {"reader": "truthfulqa", "files": {"validation": [str(self.path)]}}


_COT_QUESTION = "\nA: Let's think step by step."


def parse_cot_prompt(path: Path) -> tuple[str, list[dict[str, str]]]:
    """A BBH ``cot-prompts/<task>.txt``: (task description, [{input, target}, ...]). The file is the canary
    line, ``-----``, the description, then exemplars ``Q: <input>\\nA: Let's think step by step.\\n<target>``
    separated by blank lines."""
    text = path.read_text(encoding="utf-8")
    if "\n-----\n" not in text:
        raise FilesDataError(f"{path}: no '-----' line after the canary")
    body = text.split("\n-----\n", 1)[1].strip("\n")
    parts = body.split("\n\nQ: ")
    description, examples = parts[0].strip(), []
    for k, part in enumerate(parts[1:]):
        if _COT_QUESTION not in part:
            raise FilesDataError(f"{path}: exemplar {k}: no \"A: Let's think step by step.\" line")
        q, a = part.split(_COT_QUESTION, 1)
        # the reasoning starts on the next line (on the same one in sports_understanding)
        examples.append({"input": q, "target": a.strip(" \n")})
    return description, examples


class BBHSource(Source):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tasks_dir = root / "bbh"
        self.prompts_dir = root / "cot-prompts"
        if not self.tasks_dir.is_dir() or not self.prompts_dir.is_dir():
            raise FilesDataError(f"{root}: expected the folders bbh/ (task files) and cot-prompts/")
        self.tasks = sorted(p.stem for p in self.tasks_dir.glob("*.json"))
        if not self.tasks:
            raise FilesDataError(f"{self.tasks_dir}: no task files")
        self._prompts: dict[str, tuple[str, list[dict[str, str]]]] = {}

    def splits(self) -> list[str]:
        return ["test", "fewshot"]

    def _prompt(self, task: str) -> tuple[str, list[dict[str, str]]]:
        if task not in self._prompts:
            self._prompts[task] = parse_cot_prompt(_one_file(self.prompts_dir, f"{task}.txt"))
        return self._prompts[task]

    def read(self, split: str) -> SplitRows:
        rows: list[dict[str, Any]] = []
        sources: list[tuple[int, str]] = []
        files: list[Path] = []
        for task in self.tasks:
            description, examples = self._prompt(task)
            if split == "fewshot":
                path = self.prompts_dir / f"{task}.txt"
                items = examples
            else:
                path = self.tasks_dir / f"{task}.json"
                doc = orjson.loads(path.read_bytes())
                items = doc["examples"] if isinstance(doc, dict) else doc
            sources.append((len(rows), str(path)))
            files.append(path)
            rows.extend({"task": task, "input": x["input"], "target": x["target"], "description": description}
                        for x in items)
        return SplitRows(split, rows, sources, files)

    def describe(self) -> dict[str, Any]:
        return {"reader": "bbh", "root": str(self.root)}


READERS = {
    "hellaswag": HellaSwagSource,
    "piqa": PiqaSource,
    "truthfulqa": TruthfulQASource,
    "bbh": BBHSource,
}
