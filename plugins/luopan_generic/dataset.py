"""The ``files`` dataset: any benchmark in jsonl / json / csv / tsv / parquet files, a ``save_to_disk`` folder
or a Hugging Face hub dataset, mapped to samples by templates in the run file (no code).

Prompts follow lm-eval's construction: ``description``, then each few-shot example followed by
``fewshot_delimiter``, then the row's ``prompt``. A few-shot example is ``fewshot_template`` rendered on the
example's row, by default ``prompt + target_delimiter + answer`` (the answer: ``target``, or the gold choice
for multiple choice). ``Sample.prefix`` is everything before the row's prompt (shared by a subset's samples).
For multiple choice, the continuations scored are ``target_delimiter + choice``.

Chat models get ``chat_prompt`` (default: ``prompt``) as the user turn; with few-shot examples, each example
is a user turn and its answer an assistant turn before it (``fewshot_as_multiturn``), or the base-model
few-shot block is put in front of the user turn.

Multiple choice has two more forms, both scored by the ``accuracy`` evaluator, which groups the samples of a
question again through ``Sample.meta``:

* ``circular: true`` (CircularEval): each question is asked once per rotation of its options (A B C D,
  B C D A, ...); templates show the options of the sample's order through ``_choices`` / ``_labels``;
  ``meta["circular"] = {"group", "rotation", "n"}``. Plain accuracy is the original order's.
* ``continuation`` (lm-eval's "multiple input", WinoGrande's partial evaluation): each choice completes the
  prompt (it fills the blank), and the same continuation after it is what is scored, so a question becomes one
  sample per choice with that one continuation; ``meta["partial"] = {"group", "option", "n"}``.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections import ChainMap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from luopan.components import Dataset
from luopan.data import files_fingerprint, find_data
from luopan.deps import installed
from luopan.errors import ConfigError, LuopanError
from luopan.prompts import PromptTemplate, validate_template
from luopan.types import Sample
from luopan_generic.fields import FieldError, RowField, choice_index, is_template
from luopan_generic.readers import (
    FORMATS,
    SPLIT_FILE,
    DiskSource,
    FilesDataError,
    FileSource,
    HubSource,
    Source,
    SplitRows,
    check_one_format,
    discover_splits,
    expand,
    file_format,
    is_saved_dataset,
)

_LETTERS = string.ascii_uppercase
#: file names that name a split, not a benchmark: "gsm8k/test.jsonl" is the benchmark gsm8k
_SPLIT_NAMES = frozenset({"test", "train", "dev", "val", "valid", "validation", "eval", "data"})


class FilesParams(BaseModel):
    """Options of the ``files`` loader. Mappings are Jinja2 templates (``{{ }}``) or field names."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        default=None,
        description="a data file, a folder of them (one split per file name) or a save_to_disk folder; "
        "searched in the working directory, the run file's folder and LUOPAN_DATA",
    )
    hub: str | None = Field(default=None, description="a Hugging Face hub dataset id (needs the network)")
    hub_config: str | None = Field(default=None, description="the hub dataset's configuration (e.g. main)")
    hub_revision: str | None = Field(default=None, description="a hub commit or tag, for reproducibility")
    files: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="split -> file(s) or glob(s), relative to path's folder; adds to or replaces found splits",
    )
    format: Literal["auto", "jsonl", "json", "csv", "tsv", "parquet"] = Field(
        default="auto", description="file format; auto: from the suffix"
    )
    split: str = Field(default="test", description="the split scored (a single file is this split)")
    subset: str | None = Field(
        default=None, description="name of the single subset; default the folder's (or file's) name"
    )
    subset_field: str | None = Field(default=None, description="a column whose values become the subsets")
    prompt: str | None = Field(
        default=None,
        description="the base-model text of one row: a template or a field name (optional with continuation)",
    )
    chat_prompt: str | None = Field(default=None, description="the user turn for chat models; default prompt")
    target: str | None = Field(default=None, description="the gold answer: a template or a field name")
    choices: str | list[str] | None = Field(
        default=None, description="multiple choice: a field holding a list, or a list of templates / fields"
    )
    target_index: str | None = Field(
        default=None, description="multiple choice: the gold choice (0-based index, letter or choice text)"
    )
    choice_labels: list[str] | None = Field(
        default=None,
        description="multiple choice with lettered options (MMLU style): score these labels (A, B, ...) and "
        "show the choices in the prompt through _choices / _labels",
    )
    target_delimiter: str = Field(default=" ", description="between a prompt and its answer (lm-eval)")
    description: str = Field(
        default="",
        description="text before the few-shot block; a template of 'subset' and of the subset's first row",
    )
    continuation: str | None = Field(
        default=None,
        description="multiple choice with the choices in the context (WinoGrande): each choice completes the "
        "prompt and this text after it (a template or field) is scored",
    )
    circular: bool = Field(
        default=False,
        description="CircularEval: ask each question once per rotation of its options (templates show them "
        "through _choices and _labels); the accuracy evaluator reports circular_accuracy",
    )
    meta: dict[str, str] = Field(
        default_factory=dict,
        description="Sample.meta key -> a field or template of the row (for evaluators that need more)",
    )
    fewshot_rows: list[dict[str, Any]] | None = Field(
        default=None,
        description="few-shot examples written in the run file (lm-eval's fewshot_config.samples), "
        "used instead of fewshot_split",
    )
    fewshot_split: str = Field(default="train", description="where few-shot examples come from")
    fewshot_template: str | None = Field(
        default=None, description="one few-shot example (a template of its row); default prompt + answer"
    )
    fewshot_delimiter: str = Field(default="\n\n", description="after each few-shot example")
    fewshot_seed: int | None = Field(
        default=None, description="None: the first k rows; an int: a seeded sample of k (the same for all)"
    )
    fewshot_as_multiturn: bool = Field(
        default=True, description="chat models: few-shot examples as user/assistant turns"
    )

    @field_validator("prompt", "chat_prompt", "target", "target_index", "continuation")
    @classmethod
    def _mapping_compiles(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            RowField(info.field_name, value)
        return value

    @field_validator("description", "fewshot_template")
    @classmethod
    def _template_compiles(cls, value: str | None, info: Any) -> str | None:
        return validate_template(info.field_name, value)

    @field_validator("choices")
    @classmethod
    def _choices(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, str):
            if is_template(value):
                raise ValueError(
                    "a template gives text, not a list: name a field that holds the list, "
                    "or give a list with one template per choice"
                )
            RowField("choices", value)
        elif isinstance(value, list):
            if not value:
                raise ValueError("multiple choice needs at least 1 choice")
            for i, v in enumerate(value):
                RowField(f"choices[{i}]", v)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FilesParams:
        if self.hub is not None and (self.path is not None or self.files):
            raise ValueError("give either 'hub' or 'path' / 'files', not both")
        if self.hub is None and self.path is None and not self.files:
            raise ValueError("give the data: 'path' (a file or folder), 'files' or 'hub'")
        if self.hub is None and (self.hub_config or self.hub_revision):
            raise ValueError("'hub_config' and 'hub_revision' need 'hub'")
        if self.target is None and self.target_index is None:
            raise ValueError("give 'target' (or 'choices' and 'target_index' for multiple choice)")
        if self.target_index is not None and self.choices is None:
            raise ValueError("'target_index' needs 'choices'")
        if self.choices is not None and self.target_index is None:
            raise ValueError("'choices' needs 'target_index' (which choice is right)")
        if self.subset is not None and self.subset_field is not None:
            raise ValueError(
                "'subset' names the single subset; with 'subset_field' the subsets come from the data"
            )
        if self.prompt is None and self.continuation is None:
            raise ValueError("give 'prompt' (the text of one row)")
        if self.continuation is not None and self.choices is None:
            raise ValueError("'continuation' needs 'choices' (the texts that each complete the prompt)")
        if self.circular and self.choices is None:
            raise ValueError("'circular' rotates the options of multiple choice: it needs 'choices'")
        if self.choice_labels is not None and (self.choices is None or self.continuation is not None):
            raise ValueError("'choice_labels' label the options of 'choices' (and not with 'continuation')")
        if self.choice_labels is not None and len(set(self.choice_labels)) != len(self.choice_labels):
            raise ValueError(f"choice_labels must be distinct, got {self.choice_labels}")
        if self.circular and self.continuation is not None:
            raise ValueError("'circular' and 'continuation' do not go together: the choices are the contexts")
        for key, value in self.meta.items():
            RowField(f"meta.{key}", value)
        if self.fewshot_split == self.split and self.fewshot_rows is None:
            raise ValueError(
                f"fewshot_split '{self.fewshot_split}' is the split scored: examples would give answers away"
            )
        return self


def source_problems(source: Source, split: str, where: str) -> list[str]:
    """What would stop reading ``split`` from ``source`` (found without reading it): a split that is not there,
    a library the files need that is not installed."""
    problems = []
    splits = source.splits()
    if split not in splits:
        problems.append(f"no split '{split}' in {where} (splits: {', '.join(splits) or 'none'})")
    needs = set()
    if isinstance(source, DiskSource):
        needs.add("datasets")
    elif isinstance(source, FileSource):
        try:
            if any(file_format(f, source.fmt) == "parquet" for files in source.files.values() for f in files):
                needs.add("pyarrow")
        except LuopanError as exc:
            problems.append(str(exc))
    problems += [f"reading {where} needs the {name} package, which is not installed: pip install 'luopan[datasets]'"
                 for name in sorted(needs) if not installed(name)]
    return problems


@dataclass(slots=True)
class _Head:
    """What every sample of one subset shares, for one number of shots."""

    prefix: str  # description + few-shot block (base models)
    chat_prefix: str  # before the chat user turn (description without chat_prompt; block unless multiturn)
    messages: list[dict[str, str]] | None  # the few-shot turns (chat models, multiturn)


class FilesDataset(Dataset):
    """Samples from data files mapped by templates. Files are read when first needed, each split once."""

    def __init__(self, **params: Any) -> None:
        p = self.params = FilesParams.model_validate(params)
        self.source, self._name = self._open(p)
        splits = self.source.splits()
        if p.split not in splits:
            raise ConfigError(
                f"files: no split '{p.split}' in {self._where()} (splits: {', '.join(splits) or 'none'})"
            )
        self._splits_available = splits
        self.fields: dict[str, RowField] = {}
        if p.prompt is not None:
            self.fields["prompt"] = RowField("prompt", p.prompt)
        if p.chat_prompt is not None:
            self.fields["chat_prompt"] = RowField("chat_prompt", p.chat_prompt)
        if p.target is not None:
            self.fields["target"] = RowField("target", p.target)
        if p.target_index is not None:
            self.fields["target_index"] = RowField("target_index", p.target_index)
        if p.continuation is not None:
            self.fields["continuation"] = RowField("continuation", p.continuation)
        self._meta = {k: RowField(f"meta.{k}", v) for k, v in p.meta.items()}
        # templates that show the options of the sample's order (circular, choice_labels) read these two
        reads = set().union(*(f.variables for k, f in self.fields.items() if k in ("prompt", "chat_prompt")))
        self._shows_options = bool(reads & {"_choices", "_labels"})
        if p.circular and not self._shows_options and p.choice_labels is not None:
            raise ConfigError(
                "files: 'circular' rotates the options, but neither prompt nor chat_prompt shows them: "
                "use {{ _choices }} (and {{ _labels }}) in the templates"
            )
        self._choices: RowField | list[RowField] | None = None
        if isinstance(p.choices, str):
            self._choices = RowField("choices", p.choices)
        elif p.choices is not None:
            self._choices = [RowField(f"choices[{i}]", c) for i, c in enumerate(p.choices)]
        self._subset_field = (
            RowField("subset_field", p.subset_field, template=False) if p.subset_field else None
        )
        self._description = PromptTemplate("description", p.description)
        self._description_reads_row = bool(self._description.variables - {"subset"})
        self._fewshot = PromptTemplate("fewshot_template", p.fewshot_template) if p.fewshot_template else None
        self.default_evaluator = "accuracy" if p.choices is not None else "exact_match"
        self._rows: dict[str, SplitRows] = {}
        self._groups: dict[str, list[int]] | None = None
        self._heads: dict[tuple[str, int], _Head] = {}

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """The data files (found like any data path), the split scored among them, and the libraries they need;
        nothing is read. A hub dataset needs the ``datasets`` package (its splits are the network's business)."""
        p = params
        if p.hub is not None:
            return [] if installed("datasets") else [
                "hub datasets need the datasets package, which is not installed: pip install 'luopan[datasets]'"]
        try:
            source, _ = FilesDataset._open(p)
        except LuopanError as exc:
            return [str(exc)]
        return source_problems(source, p.split, p.path or "files")

    # ------------------------------------------------------------ sources
    @staticmethod
    def _open(p: FilesParams) -> tuple[Source, str]:
        if p.hub is not None:
            name = p.subset or p.hub.rstrip("/").split("/")[-1]
            return HubSource(p.hub, p.hub_config, p.hub_revision), name
        found: dict[str, list[Path]] = {}
        name = p.subset
        base: Path | None = None
        if p.path is not None:
            root = find_data(p.path, what="files path")
            if root.is_dir():
                if is_saved_dataset(root):
                    if p.files:
                        raise ConfigError(
                            f"files: {root} is a save_to_disk folder: its splits are fixed, drop 'files'"
                        )
                    return DiskSource(root, p.split), name or root.name
                found = discover_splits(root)
                base = root
                name = name or root.name
            else:
                found = {p.split: [root]}
                base = root.parent
                name = name or _name_of_file(root)
        for split, patterns in p.files.items():
            pats = [patterns] if isinstance(patterns, str) else patterns
            found[split] = [f for pat in pats for f in expand(pat, base)]
            if name is None and split == p.split and found[split]:
                name = _name_of_file(found[split][0])
        if not found:
            raise ConfigError(
                f"files: no data files in {base} (looked for <split>.{{{','.join(FORMATS)}}}, also under data/)"
            )
        check_one_format(found)
        return FileSource(found, p.format), name or "data"

    def _where(self) -> str:
        d = self.source.describe()
        if "hub" in d:
            return f"hub '{d['hub']}'"
        if "load_from_disk" in d:
            return str(d["load_from_disk"])
        return self.params.path or "files"

    def _split(self, split: str) -> SplitRows:
        rows = self._rows.get(split)
        if rows is None:
            if split not in self._splits_available:
                raise ConfigError(
                    f"files: no split '{split}' in {self._where()} (splits: {', '.join(self._splits_available)})"
                )
            rows = self._rows[split] = self.source.read(split)
        return rows

    # ------------------------------------------------------------ Dataset API
    def subsets(self) -> list[str]:
        if self._subset_field is None:
            return [self._name]
        return list(self._subset_groups())

    reorders_options = True

    def load(self, subset: str, *, shots: int = 0,
             order: Callable[[str, int], Sequence[int]] | None = None) -> list[Sample]:
        """A subset's samples; ``order`` (question id, n) -> the order to show a multiple-choice question's
        options in (robustness shuffles; the gold answer follows its text; circular rotates the reordered
        options; a ``continuation`` question, one sample per option, has no order to change)."""
        split = self._split(self.params.split)
        if self._subset_field is None:
            if subset != self._name:
                raise ConfigError(f"files: no subset '{subset}' (the only subset is '{self._name}')")
            indices: list[int] | range = range(len(split.rows))
        else:
            groups = self._subset_groups()
            if subset not in groups:
                raise ConfigError(f"files: no subset '{subset}' in field '{self.params.subset_field}'")
            indices = groups[subset]
        head = self._head(subset, shots)
        samples: list[Sample] = []
        rows = split.rows
        for i in indices:
            try:
                self._row_samples(samples, subset, i, rows[i], head, order)
            except FieldError as exc:
                raise FilesDataError(f"{split.where(i)}: {exc}") from None
        return samples

    def _row_samples(self, out: list[Sample], subset: str, i: int, row: dict[str, Any], head: _Head,
                     order: Callable[[str, int], Sequence[int]] | None = None) -> None:
        """Append the samples of one row: one, or one per rotation (circular) or per choice (continuation)."""
        p = self.params
        fields = self.fields
        prompt, chat = fields.get("prompt"), fields.get("chat_prompt")
        choices = self._choices_of(row)
        meta: dict[str, Any] = {"row": i}
        for key, f in self._meta.items():
            meta[key] = f(row)
        if choices is None:
            target: Any = fields["target"](row)
            text = prompt.text(row) if prompt is not None else ""
            out.append(self._sample(f"{subset}/{i}", subset, text, chat.text(row) if chat else text, target,
                                    None, head, meta))
            return
        gold = choice_index(fields["target_index"](row), choices)
        n = len(choices)
        delim = p.target_delimiter
        meta["target_delimiter"] = delim
        if p.continuation is not None:  # one sample per choice, each scoring the same continuation
            scored = [delim + fields["continuation"].text(row)]
            lead = prompt.text(row) if prompt is not None else ""
            for k, context in enumerate(choices):
                m = dict(meta, partial={"group": f"{subset}/{i}", "option": k, "n": n})
                if k == gold:
                    m["answer"] = context
                sid = f"{subset}/{i}" if k == 0 else f"{subset}/{i}@{k}"
                out.append(self._sample(sid, subset, lead + context, lead + context, gold, scored, head, m))
            return
        if order is not None:
            perm = list(order(f"{subset}/{i}", n))
            choices, gold = [choices[k] for k in perm], perm.index(gold)
        labels = p.choice_labels
        if labels is not None and len(labels) != n:
            raise FieldError(f"field 'choices': {n} choices for {len(labels)} choice_labels")
        shown = labels or [_LETTERS[k] if k < len(_LETTERS) else str(k + 1) for k in range(n)]
        for r in range(n if p.circular else 1):
            order = choices[r:] + choices[:r]
            target = (gold - r) % n
            view = ChainMap({"_choices": order, "_labels": shown}, row) if self._shows_options else row
            text = prompt.text(view) if prompt is not None else ""
            m = dict(meta, answer=(labels[target] if labels else order[target]))
            if self._shows_options:
                m.update(labels=list(shown), options=list(order))
            if p.circular:
                m["circular"] = {"group": f"{subset}/{i}", "rotation": r, "n": n}
            scored = [delim + c for c in (labels or order)]
            sid = f"{subset}/{i}" if r == 0 else f"{subset}/{i}@{r}"
            out.append(self._sample(sid, subset, text, chat.text(view) if chat else text, target, scored, head, m))

    @staticmethod
    def _sample(sid: str, subset: str, text: str, chat_text: str, target: Any, choices: list[str] | None,
                head: _Head, meta: dict[str, Any]) -> Sample:
        messages = None
        if head.messages is not None:
            messages = [dict(m) for m in head.messages]
            messages.append({"role": "user", "content": chat_text})
        else:
            chat_text = head.chat_prefix + chat_text
        return Sample(
            id=sid,
            subset=subset,
            prompt=head.prefix + text,
            target=target,
            choices=choices,
            prefix=head.prefix,
            chat_prompt=chat_text,
            messages=messages,
            meta=meta,
        )

    def fingerprint(self) -> str:
        files = sorted({f for rows in self._rows.values() for f in rows.files})
        parts = [files_fingerprint(files)] if files else []
        if isinstance(self.source, HubSource):
            parts += self.source.fingerprint_parts()
        if not parts:
            return ""
        return parts[0] if len(parts) == 1 else hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        p = self.params
        templates = {
            k: v
            for k, v in (
                ("prompt", p.prompt),
                ("chat_prompt", p.chat_prompt),
                ("target", p.target),
                ("choices", p.choices),
                ("target_index", p.target_index),
                ("description", p.description),
                ("fewshot_template", p.fewshot_template),
                ("continuation", p.continuation),
            )
            if v not in (None, "")
        }
        source = self.source.describe()
        if "files" in source:  # the splits this dataset reads, not every file beside them
            source["files"] = {s: f for s, f in source["files"].items() if s in (p.split, p.fewshot_split)}
        return {
            "source": source,
            "split": p.split,
            "fewshot_split": p.fewshot_split,
            "subset_field": p.subset_field,
            "templates": templates,
            "target_delimiter": p.target_delimiter,
            "fewshot_delimiter": p.fewshot_delimiter,
            "fewshot_seed": p.fewshot_seed,
            "fewshot_as_multiturn": p.fewshot_as_multiturn,
            **({"choice_labels": p.choice_labels} if p.choice_labels else {}),
            **({"circular": True} if p.circular else {}),
            **({"fewshot_rows": len(p.fewshot_rows)} if p.fewshot_rows is not None else {}),
        }

    # ------------------------------------------------------------ helpers
    def _choices_of(self, row: dict[str, Any]) -> list[str] | None:
        spec = self._choices
        if spec is None:
            return None
        if isinstance(spec, list):
            return [f.text(row) for f in spec]
        value = spec(row)
        if not isinstance(value, (list, tuple)) or not value:
            raise FieldError(f"field 'choices': '{spec.source}' holds {_short(value)}, not a list of choices")
        return [v if isinstance(v, str) else str(v) for v in value]

    def _example(self, row: dict[str, Any]) -> tuple[str, str, str]:
        """A few-shot example: (the question text, the chat user turn, the answer it shows). The answer is the
        gold choice (its label with choice_labels), or the target (its first, for a list); with continuation
        the question is the gold choice and the answer the continuation."""
        fields = self.fields
        prompt, chat = fields.get("prompt"), fields.get("chat_prompt")
        choices = self._choices_of(row)
        view: Any = row
        if choices is None:
            target = fields["target"](row)
            if isinstance(target, (list, tuple)):
                target = target[0] if target else ""
            answer = target if isinstance(target, str) else str(target)
        else:
            gold = choice_index(fields["target_index"](row), choices)
            if self.params.continuation is not None:
                text = (prompt.text(row) if prompt is not None else "") + choices[gold]
                return text, text, fields["continuation"].text(row)
            labels = self.params.choice_labels
            answer = labels[gold] if labels else choices[gold]
            if self._shows_options:
                shown = labels or [_LETTERS[k] if k < len(_LETTERS) else str(k + 1) for k in range(len(choices))]
                view = ChainMap({"_choices": choices, "_labels": shown}, row)
        text = prompt.text(view) if prompt is not None else ""
        return text, (chat.text(view) if chat is not None else text), answer

    def _subset_of(self, split: SplitRows, i: int) -> str:
        assert self._subset_field is not None
        try:
            value = self._subset_field(split.rows[i])
        except FieldError as exc:
            raise FilesDataError(f"{split.where(i)}: {exc}") from None
        if value is None or value == "" or isinstance(value, (dict, list)):
            raise FilesDataError(
                f"{split.where(i)}: field 'subset_field': '{self.params.subset_field}' is {_short(value)}, "
                f"not a subset name"
            )
        return str(value)

    def _subset_groups(self) -> dict[str, list[int]]:
        if self._groups is None:
            split = self._split(self.params.split)
            groups: dict[str, list[int]] = {}
            for i in range(len(split.rows)):
                groups.setdefault(self._subset_of(split, i), []).append(i)
            self._groups = dict(sorted(groups.items()))
        return self._groups

    def _fewshot_pool(self, split: SplitRows, subset: str) -> list[int]:
        """Example rows for ``subset``: those of the same subset when the few-shot split has the field."""
        if self._subset_field is None or not split.rows:
            return list(range(len(split.rows)))
        try:
            self._subset_field(split.rows[0])
        except FieldError:
            return list(range(len(split.rows)))  # the few-shot split has no such field: one shared pool
        return [i for i in range(len(split.rows)) if self._subset_of(split, i) == subset]

    def _head(self, subset: str, shots: int) -> _Head:
        key = (subset, shots)
        head = self._heads.get(key)
        if head is not None:
            return head
        p = self.params
        description = ""
        if p.description:
            variables: dict[str, Any] = {"subset": subset}
            if self._description_reads_row:  # a per-subset column (BBH's task description): its first row
                split = self._split(p.split)
                first = (self._subset_groups()[subset][0] if self._subset_field is not None else 0)
                variables = {**split.rows[first], "subset": subset}
            description = self._description.render(variables)
        # without a chat_prompt, the chat user turn is the base prompt: description included
        chat_description = description if "chat_prompt" not in self.fields else ""
        if not shots:
            head = _Head(description, chat_description, None)
            self._heads[key] = head
            return head
        if p.fewshot_rows is not None:
            split = SplitRows("fewshot_rows", p.fewshot_rows, [(0, "fewshot_rows")])
        else:
            split = self._split(p.fewshot_split)
        pool = self._fewshot_pool(split, subset)
        if shots > len(pool):
            of = f" of subset '{subset}'" if self._subset_field is not None else ""
            where = "fewshot_rows" if p.fewshot_rows is not None else f"split '{p.fewshot_split}'"
            raise ConfigError(f"files: {shots} few-shot examples requested, {where}{of} has {len(pool)}")
        chosen = (
            pool[:shots]
            if p.fewshot_seed is None
            else sorted(random.Random(p.fewshot_seed).sample(pool, shots))
        )
        block: list[str] = []
        messages: list[dict[str, str]] = []
        for j in chosen:
            row = split.rows[j]
            try:
                text, user, answer = self._example(row)
                if self._fewshot is not None:
                    try:
                        block.append(self._fewshot.render(row))
                    except ConfigError as exc:  # the template's own error, naming fewshot_template
                        raise FieldError(str(exc)) from None
                else:
                    block.append(text + p.target_delimiter + answer)
            except FieldError as exc:
                raise FilesDataError(f"{split.where(j)}: {exc}") from None
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        text = "".join(b + p.fewshot_delimiter for b in block)
        if p.fewshot_as_multiturn:
            messages[0]["content"] = chat_description + messages[0]["content"]
            head = _Head(description + text, "", messages)
        else:
            head = _Head(description + text, chat_description + text, None)
        self._heads[key] = head
        return head


def _name_of_file(path: Path) -> str:
    """``mybench.jsonl`` -> mybench; ``gsm8k/test.jsonl`` -> gsm8k (the file names a split, not the data)."""
    m = SPLIT_FILE.match(path.name)
    stem = m["split"] if m else path.stem
    return path.parent.name if stem.lower() in _SPLIT_NAMES and path.parent.name else stem


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
