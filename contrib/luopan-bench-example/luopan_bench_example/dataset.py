"""The unit-conversion benchmark: questions from the packaged ``data/units.jsonl`` (original to this
example), as multiple choice or short answer, and the ``within_tolerance`` evaluator."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from luopan.components import Dataset, EvalContext, Evaluator
from luopan.errors import ConfigError
from luopan.types import Sample, ScoredSample

DATA = Path(__file__).with_name("data") / "units.jsonl"
LABELS = ("A", "B", "C", "D")


class UnitConversionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    form: Literal["mcq", "qa"] = Field(default="mcq", description="multiple choice or short answer")
    path: str | None = Field(default=None, description="another jsonl file of the same shape")


class UnitConversion(Dataset):
    """Subsets are the kinds of quantity (length, mass, ...); few-shot examples are the first rows of the same
    kind, never the question itself."""

    def __init__(self, form: str = "mcq", path: str | None = None) -> None:
        self.form = form
        self.path = Path(path) if path else DATA
        if not self.path.is_file():
            raise ConfigError(f"unit_conversion: {self.path} not found")
        self.rows = [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x.strip()]
        self.default_evaluator = "accuracy" if form == "mcq" else "within_tolerance"

    def subsets(self) -> list[str]:
        return sorted({r["kind"] for r in self.rows})

    def _text(self, row: dict[str, Any]) -> str:
        q = f"Question: {row['question']}\n"
        if self.form == "mcq":
            q += "".join(f"{lab}. {opt}\n" for lab, opt in zip(LABELS, row["options"]))
        return q + "Answer:"

    def _answer(self, row: dict[str, Any]) -> str:
        return LABELS[row["answer"]] if self.form == "mcq" else str(row["value"])

    def load(self, subset: str, *, shots: int = 0) -> list[Sample]:
        rows = [(i, r) for i, r in enumerate(self.rows) if r["kind"] == subset]
        if not rows:
            raise ConfigError(f"unit_conversion: no subset '{subset}' (subsets: {', '.join(self.subsets())})")
        if shots >= len(rows):
            raise ConfigError(f"unit_conversion: {shots} shots leave no question in '{subset}' ({len(rows)} rows)")
        examples, questions = rows[:shots], rows[shots:]
        prefix = "".join(f"{self._text(r)} {self._answer(r)}\n\n" for _, r in examples)
        samples = []
        for i, r in questions:
            text = self._text(r)
            chat = text.replace("\nAnswer:", "\nAnswer with " + ("the letter only." if self.form == "mcq"
                                                                   else "the number only."))
            samples.append(Sample(
                id=f"{subset}/{i}", subset=subset, prompt=prefix + text, prefix=prefix, chat_prompt=chat,
                target=r["answer"] if self.form == "mcq" else r["value"],
                choices=[" " + lab for lab in LABELS] if self.form == "mcq" else None,
                meta={"labels": list(LABELS), "options": r["options"], "target_delimiter": " "}
                if self.form == "mcq" else {"unit": r["unit"]},
            ))
        return samples

    def fingerprint(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"form": self.form, "file": str(self.path)}


class WithinToleranceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rel_tol: float = Field(default=0.01, ge=0, description="relative tolerance")


_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?")


class WithinTolerance(Evaluator):
    metric = "within_tolerance"

    def __init__(self, rel_tol: float = 0.01) -> None:
        self.rel_tol = rel_tol

    def score(self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext) -> list[ScoredSample]:
        if ctx.mode != "generate":
            raise ValueError("within_tolerance scores generated text: set 'mode: generate'")
        out = []
        for s, o in zip(samples, outputs):
            found = _NUMBER.findall(o.text)
            value = float(found[-1].replace(",", "")) if found else None
            ok = value is not None and math.isclose(value, float(s.target), rel_tol=self.rel_tol)
            out.append(ScoredSample(s.id, s.subset, float(ok), value, {"parsed": float(value is not None)}))
        return out
