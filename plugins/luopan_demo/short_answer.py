"""Short-answer scoring: normalise (case, punctuation, full-width forms, spaces) and compare.

``match: exact`` compares the first line of the output with each reference; ``match: contains`` (default)
accepts an output whose normalised first line contains a reference as a whole token (so "4" does not match
"42", and "cold" does not match "scolded").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from luopan.components import EvalContext, Evaluator
from luopan.types import Sample, ScoredSample

_PUNCT = re.compile(r"[\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u9fff]")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", text).split())


def first_answer_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line
    return ""


def matches(output: str, reference: str, mode: str) -> bool:
    out, ref = normalise(first_answer_line(output)), normalise(reference)
    if not ref:
        return False
    if mode == "exact":
        return out == ref
    if _CJK.search(ref):  # Chinese has no spaces between words: substring match
        return ref.replace(" ", "") in out.replace(" ", "")
    return re.search(rf"(?<![\w]){re.escape(ref)}(?![\w])", out) is not None


class ShortAnswerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    match: Literal["exact", "contains"] = "contains"


class ShortAnswer(Evaluator):
    metric = "accuracy"

    def __init__(self, match: str = "contains") -> None:
        self.match = match

    def score(self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext) -> list[ScoredSample]:
        if ctx.mode != "generate":
            raise ValueError("short_answer scores generated text: set 'mode: generate' for this dataset")
        scored = []
        for s, o in zip(samples, outputs):
            refs = s.target if isinstance(s.target, list) else [s.target]
            ok = any(matches(o.text, str(r), self.match) for r in refs)
            scored.append(ScoredSample(s.id, s.subset, float(ok), first_answer_line(o.text).strip()[:200]))
        return scored
