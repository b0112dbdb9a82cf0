"""The ``needle`` dataset loader: a grid of context lengths x depths x seeded repeats over one haystack.

Subsets are ``<language>_<task>/len<L>`` (one per task and length, so the default summary reads as a score per
length); each sample's cell is in ``Sample.meta`` (task, length, depth, repeat, tokens, where the needles went).
Cells longer than the context window allows are not samples: they are listed in ``describe()['skipped']`` (and so
in every result's provenance), logged, and drawn as skipped in the heatmaps.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from luopan import models
from luopan.components import Dataset
from luopan.data import files_fingerprint, find_data
from luopan.deps import installed
from luopan.errors import ConfigError, LuopanError
from luopan.types import Sample
from luopan_needle.grid import Cell, Haystack, Prompt, PromptBuilder, Task
from luopan_needle.tasks import TEMPLATES, TaskSpec, builtin_tasks, resolve_task, split_template
from luopan_needle.text import OPENCC_CONFIGS, cjk_ratio, convert, unwrap_lines
from luopan_needle.tokenizer import NeedleTokenizer, load_tokenizer

log = logging.getLogger("luopan.needle")

DEFAULT_DEPTHS = [float(d) for d in range(0, 101, 10)]


class NeedleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    haystack: str | list[str] = Field(
        description="text file(s), folder(s) of *.txt (sorted) or glob(s), found like any data path; joined by "
                    "blank lines")
    language: Literal["auto", "en", "zh"] = Field(
        default="auto", description="prompt template and built-in tasks; auto: zh when the text is mostly Chinese")
    convert_haystack: str | None = Field(default=None, description="OpenCC conversion of the haystack, e.g. t2s")
    convert_needles: str | None = Field(
        default=None, description="OpenCC conversion of needles, questions, key phrases and template, e.g. s2t")
    unwrap_lines: bool | None = Field(
        default=None, description="join hard-wrapped lines inside paragraphs (default: true for zh)")
    tokenizer: str = Field(
        default="chars", description="chars, a tokenizer/model folder, a hub id or pkg:<package> (with gguf_file)")
    gguf_file: str | None = None
    context_window: int | None = Field(
        default=None, ge=1, description="default: the model's, from its config or GGUF (none for chars: no limit)")
    overhead_tokens: int | None = Field(
        default=None, ge=0, description="tokens the chat template adds (default: measured with the tokenizer)")
    answer_tokens: int = Field(default=32, ge=1, description="tokens kept free for the answer (>= max_new_tokens)")
    lengths: list[int] = Field(default_factory=lambda: [1024, 2048, 4096, 8192], min_length=1)
    depths: list[float] = Field(default_factory=lambda: list(DEFAULT_DEPTHS), min_length=1,
                                description="percent of the haystack before the (first) needle")
    repeats: int = Field(default=1, ge=1, description="seeded repeats per cell (each a different haystack start)")
    seed: int = 0
    tasks: list[str | TaskSpec] = Field(default_factory=lambda: ["single"], min_length=1)
    question_position: Literal["end", "start"] = "end"
    template: str | None = Field(default=None, description="a prompt with {document} and {question}")

    @field_validator("lengths")
    @classmethod
    def _lengths(cls, v: list[int]) -> list[int]:
        if any(x < 16 for x in v):
            raise ValueError("lengths are token counts of at least 16")
        return sorted(dict.fromkeys(v))

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[float]) -> list[float]:
        if any(not 0 <= x <= 100 for x in v):
            raise ValueError("depths are percentages from 0 to 100")
        return sorted(dict.fromkeys(float(x) for x in v))

    @field_validator("convert_haystack", "convert_needles")
    @classmethod
    def _opencc(cls, v: str | None) -> str | None:
        if v is not None and v.removesuffix(".json") not in OPENCC_CONFIGS:
            raise ValueError(f"an OpenCC conversion: one of {', '.join(OPENCC_CONFIGS)}")
        return v.removesuffix(".json") if v else v


def haystack_files(spec: str | list[str]) -> list[Path]:
    """The text files a ``haystack`` option names, in order (a folder: its *.txt files, sorted)."""
    files: list[Path] = []
    for item in [spec] if isinstance(spec, str) else spec:
        parts = Path(item).parts
        wild = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
        if wild is not None:  # a glob: find its fixed leading folder like any data path, then match the rest
            root = find_data(Path(*parts[:wild]) if wild else Path("."), what="needle haystack")
            found = sorted(f for f in root.glob(str(Path(*parts[wild:]))) if f.is_file())
            if not found:
                raise ConfigError(f"needle haystack: '{item}' matches no file")
            files += found
            continue
        p = find_data(item, what="needle haystack")
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix == ".txt")
            if not found:
                raise ConfigError(f"needle haystack: no *.txt file in {p}")
            files += found
        else:
            files.append(p)
    return files


def needle_problems(p: NeedleParams) -> list[str]:
    """What would stop building the grid, found without reading the haystack or loading the tokenizer: the
    haystack files, task CSVs, the tokenizer's files and the packages the options need (OpenCC for
    ``convert_haystack`` / ``convert_needles``, transformers for a model tokenizer, gguf for its GGUF)."""
    problems = []
    try:
        haystack_files(p.haystack)
    except LuopanError as exc:
        problems.append(str(exc))
    for option in ("convert_haystack", "convert_needles"):
        if getattr(p, option) and not installed("opencc"):
            problems.append(f"{option}: {getattr(p, option)} converts Chinese script with OpenCC, and the opencc "
                            f"package is not installed: pip install 'luopan[needle]'")
            break
    if p.tokenizer == "chars":
        if p.gguf_file:
            problems.append("gguf_file needs a tokenizer path, not 'chars'")
    else:
        if not installed("transformers"):
            problems.append(f"tokenizer '{p.tokenizer}' is read with transformers, which is not installed: "
                            f"pip install 'luopan[hf]'")
        try:
            resolved = models.resolve(p.tokenizer, who="needle: tokenizer")
            if p.gguf_file:
                if resolved.local is None:
                    raise ConfigError(f"needle: tokenizer '{p.tokenizer}' with gguf_file: give a local folder or "
                                      f"pkg:<package>")
                models.gguf_parts(resolved, p.gguf_file, who="needle: tokenizer")
        except LuopanError as exc:
            problems.append(str(exc))
        if p.gguf_file and not installed("gguf"):
            problems.append("gguf_file: the tokenizer is read from the GGUF with the gguf package, which is not "
                            "installed: pip install 'luopan[hf]'")
    languages = [p.language] if p.language != "auto" else ["en", "zh"]
    csvs = []
    for task in p.tasks:
        if isinstance(task, str):
            csvs += [spec["csv"] for lang in languages
                     if (spec := builtin_tasks().get(lang, {}).get(task)) and spec.get("csv")]
        elif task.csv:
            csvs.append(task.csv)
    for path in dict.fromkeys(csvs):
        try:
            find_data(path, what="needle task csv")
        except LuopanError as exc:
            problems.append(str(exc))
    return problems


class NeedleDataset(Dataset):
    default_evaluator = "needle_match"

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        return needle_problems(params)

    def __init__(self, tokenizer_obj: NeedleTokenizer | None = None, **params: Any) -> None:
        self.params = NeedleParams(**params)
        p = self.params
        self.files = haystack_files(p.haystack)
        text = "\n\n".join(f.read_text(encoding="utf-8").strip() for f in self.files)
        self.language = p.language if p.language != "auto" else ("zh" if cjk_ratio(text) > 0.3 else "en")
        if p.unwrap_lines if p.unwrap_lines is not None else self.language == "zh":
            text = unwrap_lines(text)
        text = convert(text, p.convert_haystack)
        self.tokenizer = tokenizer_obj or load_tokenizer(p.tokenizer, p.gguf_file)
        self.window = p.context_window if p.context_window is not None else self.tokenizer.window
        self.overhead = p.overhead_tokens if p.overhead_tokens is not None else self.tokenizer.overhead
        self.tasks: list[Task] = []
        self.task_files: list[Path] = []
        for entry in p.tasks:
            task, read = resolve_task(entry, self.language)
            self.tasks.append(self._converted(task))
            self.task_files += read
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"needle: task names must differ, got {names}")
        template = p.template or TEMPLATES[(self.language, p.question_position)]
        if p.template is None and p.convert_needles:
            template = convert(template, p.convert_needles)
        self.template = template
        self.templates = {t.name: split_template(template, t.question) for t in self.tasks}
        self.haystack = Haystack(text, self.tokenizer)
        self.builder = PromptBuilder(self.haystack, self.tasks, self.templates,
                                     separator="" if self.language == "zh" else " ", window=self.window,
                                     overhead=self.overhead, answer_tokens=p.answer_tokens, seed=p.seed)
        self.haystack.ensure(self.builder.needed_tokens(p.lengths))
        self.prompts: dict[str, list[Prompt]] = {}
        self.skipped: list[Prompt] = []
        for task in self.tasks:
            for length in p.lengths:
                subset = self.subset_name(task.name, length)
                for depth in p.depths:
                    for r in range(p.repeats):
                        built = self.builder.build(Cell(task.name, length, depth, r))
                        if built.skipped:
                            self.skipped.append(built)
                        else:
                            self.prompts.setdefault(subset, []).append(built)
        if self.skipped:
            by_len: dict[int, int] = {}
            for b in self.skipped:
                by_len[b.cell.length] = by_len.get(b.cell.length, 0) + 1
            log.warning("needle (%s, %s): %d of %d cells skipped, never truncated: %s; context window %s",
                        self.files[0].name if len(self.files) == 1 else self.files[0].parent.name,
                        "/".join(t.name for t in self.tasks),
                        len(self.skipped), len(self.skipped) + sum(map(len, self.prompts.values())),
                        ", ".join(f"{n} at length {length}" for length, n in sorted(by_len.items())), self.window)

    def _converted(self, task: Task) -> Task:
        c = self.params.convert_needles
        if not c:
            return task
        return Task(task.name, task.kind, tuple(convert(n, c) for n in task.needles), convert(task.question, c),
                    tuple(tuple(convert(a, c) for a in group) for group in task.answers))

    def subset_name(self, task: str, length: int) -> str:
        return f"{self.language}_{task}/len{length}"

    # ------------------------------------------------------------ Dataset
    def subsets(self) -> list[str]:
        return list(self.prompts)

    def load(self, subset: str, *, shots: int = 0) -> list[Sample]:
        if shots:
            raise ConfigError("needle: the needle grid has no few-shot examples (shots must be 0)")
        tasks = {t.name: t for t in self.tasks}
        out = []
        for b in self.prompts.get(subset, []):
            c = b.cell
            task = tasks[c.task]
            meta = b.meta() | {"kind": task.kind, "language": self.language, "needles": list(task.needles),
                               "question": task.question, "answers": [list(g) for g in task.answers]}
            out.append(Sample(f"{subset}/d{c.depth:g}/r{c.repeat}", subset, b.text,
                              [list(g) for g in task.answers], chat_prompt=b.text, meta=meta))
        return out

    def categories(self) -> dict[str, list[str]]:
        cats: dict[str, list[str]] = {}
        for subset in self.prompts:
            cats.setdefault(subset.split("/")[0], []).append(subset)
        return cats if len(cats) > 1 else {}

    def fingerprint(self) -> str:
        h = hashlib.sha256(files_fingerprint(self.files + self.task_files).encode())
        h.update(repr(sorted(self.tokenizer.identity().items())).encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        p = self.params
        skipped: dict[tuple[str, int, float], dict[str, Any]] = {}
        for b in self.skipped:
            key = (b.cell.task, b.cell.length, b.cell.depth)
            entry = skipped.setdefault(key, {"task": b.cell.task, "length": b.cell.length, "depth": b.cell.depth,
                                             "repeats": 0, "reason": b.skipped,
                                             "required_tokens": b.required or None})
            entry["repeats"] += 1
        return {
            "template": self.template,
            "language": self.language,
            "haystack": [str(f) for f in self.files],
            "haystack_tokens_read": self.haystack.n,
            "tokenizer": self.tokenizer.identity(),
            "context_window": self.window,
            "overhead_tokens": self.overhead,
            "answer_tokens": p.answer_tokens,
            "grid": {"lengths": p.lengths, "depths": p.depths, "repeats": p.repeats, "seed": p.seed,
                     "question_position": p.question_position,
                     "tasks": {t.name: {"kind": t.kind, "needles": list(t.needles), "question": t.question,
                                        "answers": [list(g) for g in t.answers]} for t in self.tasks},
                     "subsets": {t.name: [self.subset_name(t.name, n) for n in p.lengths] for t in self.tasks}},
            "cells": sum(map(len, self.prompts.values())),
            "skipped": list(skipped.values()),
        }
