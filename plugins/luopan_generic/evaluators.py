"""Evaluators for generated answers: ``exact_match`` (normalised text) and ``number_match`` (GSM8K-style).

``exact_match`` compares the output with the target (or any of a list of targets) after the same
normalisation of both, as lm-eval's ``exact_match``: ``regexes_to_ignore`` removed first, then case and
punctuation when asked; luopan also folds Unicode (NFKC), strips the ends and collapses runs of whitespace.

Both take lm-eval's regex filter as an option (``extract`` / ``strict_pattern`` / ``flexible_pattern``): every
match of the pattern, the one at ``group_select`` (0 the first, -1 the last), its first non-empty group when
the pattern has groups; no match gives ``[invalid]``, which matches nothing.

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
from luopan_generic.numbers import extract_flexible, extract_strict, gold_number, normalise_number

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
    extract: str | None = Field(
        default=None, description="lm-eval's regex filter: compare only what this pattern matches"
    )
    group_select: int = Field(default=0, description="which match of 'extract' (0 the first, -1 the last)")

    @field_validator("regexes_to_ignore")
    @classmethod
    def _compile(cls, value: list[str]) -> list[str]:
        for r in value:
            _check_regex(r)
        return value

    @field_validator("extract")
    @classmethod
    def _compile_one(cls, value: str | None) -> str | None:
        return _check_regex(value) if value is not None else None


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"regex {pattern!r} does not compile: {exc}") from None
    return pattern


INVALID = "[invalid]"


def regex_filter(pattern: re.Pattern[str], text: str, group_select: int = 0) -> str:
    """lm-eval's ``regex`` + ``take_first`` filter: the match at ``group_select`` (its first non-empty group
    when the pattern has groups), stripped; ``[invalid]`` when nothing matches."""
    found = pattern.findall(text)
    if not found:
        return INVALID
    try:
        match = found[group_select]
    except IndexError:
        return INVALID
    if isinstance(match, tuple):
        match = next((m for m in match if m), INVALID)
    return match.strip()


class ExactMatch(Evaluator):
    """1.0 when the normalised output equals a normalised reference."""

    metric = "exact_match"

    def __init__(
        self,
        ignore_case: bool = True,
        ignore_punctuation: bool = False,
        regexes_to_ignore: Sequence[str] = (),
        first_line: bool = False,
        extract: str | None = None,
        group_select: int = 0,
    ) -> None:
        self.ignore_case = ignore_case
        self.ignore_punctuation = ignore_punctuation
        self.regexes = [re.compile(r) for r in regexes_to_ignore]
        self.first_line = first_line
        self.extract = re.compile(extract) if extract is not None else None
        self.group_select = group_select

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
            extra: dict[str, Any] = {}
            if self.extract is not None:
                text = regex_filter(self.extract, text, self.group_select)
                extra["extracted"] = float(text != INVALID)
            pred = self.normalise(text)
            ok = text != INVALID and any(pred == self.normalise(r) for r in _references(s.target))
            scored.append(ScoredSample(s.id, s.subset, float(ok), pred[:200], extra))
        return scored


# ---------------------------------------------------------------- number_match


class NumberMatchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    primary: Literal["strict", "flexible"] = Field(
        default="strict", description="which extraction is the score; the other goes in extra"
    )
    strict_pattern: str | None = Field(
        default=None, description="lm-eval's strict-match regex (its first match) instead of luopan's"
    )
    flexible_pattern: str | None = Field(
        default=None, description="lm-eval's flexible-extract regex (its last match) instead of luopan's"
    )

    @field_validator("strict_pattern", "flexible_pattern")
    @classmethod
    def _compile(cls, value: str | None) -> str | None:
        return _check_regex(value) if value is not None else None


class NumberMatch(Evaluator):
    """GSM8K-style numeric answers: strict (``#### N`` / ``The answer is N``) and flexible (last number)."""

    metric = "strict_match"

    def __init__(
        self, primary: str = "strict", strict_pattern: str | None = None, flexible_pattern: str | None = None
    ) -> None:
        self.primary = primary
        self.metric = f"{primary}_match"
        self.strict = re.compile(strict_pattern) if strict_pattern is not None else None
        self.flexible = re.compile(flexible_pattern) if flexible_pattern is not None else None

    def _found(self, text: str) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for key, pattern, fallback, select in (
            ("strict", self.strict, extract_strict, 0),
            ("flexible", self.flexible, extract_flexible, -1),
        ):
            if pattern is None:
                out[key] = fallback(text)
            else:
                got = regex_filter(pattern, text, select)
                out[key] = None if got == INVALID else normalise_number(got)
        return out

    def score(
        self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext
    ) -> list[ScoredSample]:
        _generated("number_match", ctx, samples, outputs)
        secondary = "flexible" if self.primary == "strict" else "strict"
        scored = []
        for s, o in zip(samples, outputs):
            golds = {gold_number(r) for r in _references(s.target)}
            found = self._found(o.text)
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
