"""The ``code`` dataset loader: HumanEval and MBPP, with their standard prompts.

HumanEval (openai/human-eval's ``HumanEval.jsonl``, 164 problems, zero-shot):

- base models continue the prompt, the function's signature and docstring (lm-eval's ``humaneval``:
  ``doc_to_text: "{{prompt}}"``; the ``humaneval`` preset stops at ``\\nclass``, ``\\ndef``, ``\\n#``,
  ``\\nif``, ``\\nprint``);
- chat models get one user turn: an instruction and the prompt in a fenced block
  (:data:`HUMANEVAL_CHAT`); the function is taken from the fenced block of the answer (the
  ``humaneval_instruct`` preset has no stop sequences, which would cut a chat answer at its first ``def``).

MBPP (the original ``mbpp.jsonl``, 974 problems): the test split is task ids 11-510, the few-shot examples
are task ids 2, 3 and 4 (the paper's prompt; lm-eval's ``mbpp`` task has the same format). Each problem reads
``You are an expert Python programmer, and here is your task: {text} Your code should pass these
tests:\\n\\n{tests}\\n[BEGIN]\\n``, an example adds ``{code}\\n[DONE]``, examples are separated by a blank
line and generation stops at ``[DONE]``. Chat models get each example as a user turn (the same text without
``[BEGIN]``) and an assistant turn ``[BEGIN]\\n{code}\\n[DONE]``.

Every sample carries what the ``code_pass`` evaluator needs in ``Sample.meta``: ``problem`` (the task id:
samples of one problem are pooled for pass@k), ``tests`` (run after the solution), ``code_prompt`` (what a
HumanEval completion continues), ``entry_point`` and ``stops``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from luopan.components import Dataset
from luopan.data import files_fingerprint, find_data
from luopan.errors import ConfigError, LuopanError
from luopan.prompts import PromptTemplate, validate_template
from luopan.types import Sample
from luopan_code.programs import HUMANEVAL_STOPS

HUMANEVAL_CHAT = (
    "Complete the following Python function. Answer with the complete function, its signature included, "
    "in one ```python code block.\n\n```python\n{{ prompt }}```"
)
MBPP_PROMPT = (
    "You are an expert Python programmer, and here is your task: {{ text }} "
    "Your code should pass these tests:\n\n{{ tests }}\n[BEGIN]\n"
)
MBPP_CHAT = (
    "You are an expert Python programmer, and here is your task: {{ text }} "
    "Your code should pass these tests:\n\n{{ tests }}\n"
)
#: the standard MBPP splits, by task id (inclusive)
MBPP_SPLITS: dict[str, tuple[int, int]] = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}
_DEFAULT_PATHS = {"humaneval": "humaneval/HumanEval.jsonl", "mbpp": "mbpp/mbpp.jsonl"}


class CodeParams(BaseModel):
    """Options of the ``code`` loader."""

    model_config = ConfigDict(extra="forbid")

    benchmark: Literal["humaneval", "mbpp"] = Field(description="which benchmark's layout and prompts")
    path: str | None = Field(
        default=None,
        description="the jsonl file (default humaneval/HumanEval.jsonl or mbpp/mbpp.jsonl, searched in "
        "the working directory, the run file's folder and LUOPAN_DATA)",
    )
    split: Literal["test", "validation", "train", "prompt"] = Field(
        default="test", description="MBPP: the task ids scored (test: 11-510); HumanEval has only test"
    )
    fewshot_ids: list[int] = Field(
        default_factory=lambda: [2, 3, 4], description="MBPP: the task ids of the few-shot examples, in order"
    )
    prompt: str | None = Field(default=None, description="a Jinja template replacing the base-model prompt")
    chat_prompt: str | None = Field(default=None, description="a Jinja template replacing the chat user turn")

    @field_validator("prompt", "chat_prompt")
    @classmethod
    def _compiles(cls, value: str | None, info: Any) -> str | None:
        return validate_template(info.field_name, value)

    @model_validator(mode="after")
    def _consistent(self) -> CodeParams:
        if self.benchmark == "humaneval" and self.split != "test":
            raise ValueError("HumanEval has one split: test")
        return self


def data_file(p: CodeParams) -> Path:
    """The benchmark's jsonl file: ``path`` (a file, or a folder holding the standard file name) or the default
    path, found like any data path."""
    path = find_data(p.path or _DEFAULT_PATHS[p.benchmark], what=f"{p.benchmark} data")
    if path.is_dir():
        path = path / Path(_DEFAULT_PATHS[p.benchmark]).name
        if not path.exists():
            raise ConfigError(f"code: no {path.name} in {path.parent}")
    return path


class CodeDataset(Dataset):
    """HumanEval or MBPP problems as samples for the ``code_pass`` evaluator."""

    default_evaluator = "code_pass"

    def __init__(self, **params: Any) -> None:
        p = self.params = CodeParams.model_validate(params)
        self.path = data_file(p)
        humaneval = p.benchmark == "humaneval"
        self._prompt = PromptTemplate("prompt", p.prompt or ("{{ prompt }}" if humaneval else MBPP_PROMPT))
        self._chat = PromptTemplate("chat_prompt", p.chat_prompt or (HUMANEVAL_CHAT if humaneval else MBPP_CHAT))
        self._rows: list[dict[str, Any]] | None = None

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """The benchmark's data file, found like any data path (nothing is read)."""
        try:
            data_file(params)
        except LuopanError as exc:
            return [str(exc)]
        return []

    # ------------------------------------------------------------ data
    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            rows = []
            with open(self.path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        rows.append(json.loads(line))
                    except ValueError as exc:
                        raise ConfigError(f"{self.path}: line {n}: not JSON ({exc})") from None
            need = ("task_id", "prompt", "test", "entry_point") if self.params.benchmark == "humaneval" \
                else ("task_id", "text", "code", "test_list")
            for i, row in enumerate(rows):
                missing = [k for k in need if k not in row]
                if missing:
                    raise ConfigError(f"{self.path}: row {i}: no field {', '.join(missing)} "
                                      f"(is this a {self.params.benchmark} file?)")
            self._rows = rows
        return self._rows

    def _variables(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.params.benchmark == "humaneval":
            return {"task_id": row["task_id"], "prompt": row["prompt"], "entry_point": row["entry_point"]}
        return {"task_id": row["task_id"], "text": row["text"], "tests": "\n".join(row["test_list"]),
                "test_list": row["test_list"], "code": row["code"]}

    # ------------------------------------------------------------ Dataset API
    def subsets(self) -> list[str]:
        return [self.params.benchmark]

    def load(self, subset: str, *, shots: int = 0) -> list[Sample]:
        if subset != self.params.benchmark:
            raise ConfigError(f"code: no subset '{subset}' (the only subset is '{self.params.benchmark}')")
        if self.params.benchmark == "humaneval":
            if shots:
                raise ConfigError("code: HumanEval is zero-shot (its prompt is the function to complete); "
                                  "set shots: 0")
            return [self._humaneval(i, row) for i, row in enumerate(self.rows())]
        return self._mbpp(shots)

    def _humaneval(self, i: int, row: dict[str, Any]) -> Sample:
        v = self._variables(row)
        tests = f"{row['test']}\n\ncheck({row['entry_point']})\n"
        return Sample(
            id=f"humaneval/{i}",
            subset="humaneval",
            prompt=self._prompt.render(v),
            target=tests,
            chat_prompt=self._chat.render(v),
            meta={"problem": row["task_id"], "tests": tests, "code_prompt": row["prompt"],
                  "entry_point": row["entry_point"], "stops": list(HUMANEVAL_STOPS),
                  "reference": row.get("canonical_solution", "")},
        )

    def _mbpp(self, shots: int) -> list[Sample]:
        p = self.params
        by_id = {int(r["task_id"]): r for r in self.rows()}
        if shots > len(p.fewshot_ids):
            raise ConfigError(f"code: {shots} few-shot examples requested, fewshot_ids lists "
                              f"{len(p.fewshot_ids)} ({p.fewshot_ids}); MBPP's standard is 3")
        lo, hi = MBPP_SPLITS[p.split]
        examples = []
        for tid in p.fewshot_ids[:shots]:
            if tid not in by_id:
                raise ConfigError(f"code: few-shot task id {tid} is not in {self.path}")
            if lo <= tid <= hi:
                raise ConfigError(f"code: few-shot task id {tid} is in the scored split '{p.split}' ({lo}-{hi})")
            examples.append(by_id[tid])
        prefix = "".join(self._prompt.render(self._variables(ex)) + ex["code"] + "\n[DONE]\n\n" for ex in examples)
        turns: list[dict[str, str]] = []
        for ex in examples:
            turns += [{"role": "user", "content": self._chat.render(self._variables(ex))},
                      {"role": "assistant", "content": f"[BEGIN]\n{ex['code']}\n[DONE]"}]
        samples = []
        for tid in range(lo, hi + 1):
            row = by_id.get(tid)
            if row is None:
                continue
            v = self._variables(row)
            setup = row.get("test_setup_code") or ""
            tests = (setup.strip("\n") + "\n" if setup.strip() else "") + "\n".join(row["test_list"]) + "\n"
            chat = self._chat.render(v)
            samples.append(Sample(
                id=f"mbpp/{tid}",
                subset="mbpp",
                prompt=prefix + self._prompt.render(v),
                target=tests,
                prefix=prefix,
                chat_prompt=chat,
                messages=[*turns, {"role": "user", "content": chat}] if turns else None,
                meta={"problem": f"mbpp/{tid}", "tests": tests, "code_prompt": "", "entry_point": None,
                      "reference": row["code"]},
            ))
        if not samples:
            raise ConfigError(f"code: no MBPP task ids {lo}-{hi} in {self.path}")
        return samples

    def fingerprint(self) -> str:
        return files_fingerprint([self.path])

    def describe(self) -> dict[str, Any]:
        p = self.params
        d: dict[str, Any] = {
            "source": str(self.path),
            "benchmark": p.benchmark,
            "templates": {"prompt": self._prompt.source, "chat_prompt": self._chat.source},
        }
        if p.benchmark == "mbpp":
            d.update(split=p.split, task_ids=list(MBPP_SPLITS[p.split]), fewshot_ids=p.fewshot_ids,
                     fewshot_answer="{code}\\n[DONE] (chat: [BEGIN]\\n{code}\\n[DONE])")
        return d
