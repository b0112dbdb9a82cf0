"""Evaluators for generated answers: ``exact_match`` (normalised text) and ``number_match`` (GSM8K-style).

``exact_match`` compares the output with the target (or any of a list of targets) after the same
normalisation of both, as lm-eval's ``exact_match``: ``regexes_to_ignore`` removed first, then case and
punctuation when asked; luopan also folds Unicode (NFKC), strips the ends and collapses runs of whitespace.

``number_match`` reads a number out of the output twice: ``strict`` (the ``#### N`` or ``The answer is N``
form the prompt asks for) and ``flexible`` (the last number in the output), and compares each with the gold
number (after the reference's ``####``). The primary score is the strict match (lm-eval's gsm8k
``strict-match``); ``extra["flexible_match"]`` is the other (``flexible-extract``), averaged per subset too.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from luopan.components import EvalContext, Evaluator
from luopan.types import Sample, ScoredSample
from luopan_generic.numbers import extract_flexible, extract_strict, gold_number

_PUNCT = str.maketrans("", "", string.punctuation)
_UNICODE_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACES = re.compile(r"\s+")


def _generated(name: str, ctx: EvalContext, samples: Sequence[Sample], outputs: Sequence[Any]) -> None:
    if ctx.mode != "generate":
        raise ValueError(f"{name} scores generated text: set 'mode: generate' for dataset '{ctx.dataset}'")
    if len(samples) != len(outputs):
        raise ValueError(f"{name}: {len(outputs)} outputs for {len(samples)} samples")


def _references(target: Any) -> list[str]:
    if isinstance(target, (list, tuple)):
        return [str(t) for t in target]
    return [str(target)]


# ---------------------------------------------------------------- exact_match


class ExactMatchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ignore_case: bool = Field(default=True, description="compare case-insensitively")
    ignore_punctuation: bool = Field(default=False, description="drop punctuation (ASCII and Unicode)")
    regexes_to_ignore: list[str] = Field(default_factory=list, description="removed from both texts first")
    first_line: bool = Field(default=False, description="compare only the output's first non-empty line")

    @field_validator("regexes_to_ignore")
    @classmethod
    def _compile(cls, value: list[str]) -> list[str]:
        for r in value:
            try:
                re.compile(r)
            except re.error as exc:
                raise ValueError(f"regex {r!r} does not compile: {exc}") from None
        return value


class ExactMatch(Evaluator):
    """1.0 when the normalised output equals a normalised reference."""

    metric = "exact_match"

    def __init__(
        self,
        ignore_case: bool = True,
        ignore_punctuation: bool = False,
        regexes_to_ignore: Sequence[str] = (),
        first_line: bool = False,
    ) -> None:
        self.ignore_case = ignore_case
        self.ignore_punctuation = ignore_punctuation
        self.regexes = [re.compile(r) for r in regexes_to_ignore]
        self.first_line = first_line

    def normalise(self, text: str) -> str:
        for r in self.regexes:
            text = r.sub("", text)
        text = unicodedata.normalize("NFKC", text)
        if self.ignore_case:
            text = text.casefold()
        if self.ignore_punctuation:
            text = _UNICODE_PUNCT.sub("", text.translate(_PUNCT))
        return _SPACES.sub(" ", text).strip()

    def score(
        self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext
    ) -> list[ScoredSample]:
        _generated("exact_match", ctx, samples, outputs)
        scored = []
        for s, o in zip(samples, outputs):
            text = o.text
            if self.first_line:
                text = next((line for line in text.splitlines() if line.strip()), "")
            pred = self.normalise(text)
            ok = any(pred == self.normalise(r) for r in _references(s.target))
            scored.append(ScoredSample(s.id, s.subset, float(ok), pred[:200]))
        return scored


# ---------------------------------------------------------------- number_match


class NumberMatchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    primary: Literal["strict", "flexible"] = Field(
        default="strict", description="which extraction is the score; the other goes in extra"
    )


class NumberMatch(Evaluator):
    """GSM8K-style numeric answers: strict (``#### N`` / ``The answer is N``) and flexible (last number)."""

    metric = "strict_match"

    def __init__(self, primary: str = "strict") -> None:
        self.primary = primary
        self.metric = f"{primary}_match"

    def score(
        self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext
    ) -> list[ScoredSample]:
        _generated("number_match", ctx, samples, outputs)
        secondary = "flexible" if self.primary == "strict" else "strict"
        scored = []
        for s, o in zip(samples, outputs):
            golds = {gold_number(r) for r in _references(s.target)}
            found = {"strict": extract_strict(o.text), "flexible": extract_flexible(o.text)}
            match = {k: float(v is not None and v in golds) for k, v in found.items()}
            scored.append(
                ScoredSample(
                    s.id,
                    s.subset,
                    match[self.primary],
                    found[self.primary],
                    {
                        f"{secondary}_match": match[secondary],
                        "strict_found": float(found["strict"] is not None),
                        "strict": found["strict"],
                        "flexible": found["flexible"],
                        "gold": sorted(golds)[0] if len(golds) == 1 else sorted(golds),
                    },
                )
            )
        return scored
