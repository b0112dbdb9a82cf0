"""The ``needle_match`` evaluator: key phrases found in the answer after normalisation, optionally an LLM judge.

Score = the fraction of the task's answer groups found (single needle: 0 or 1; k needles: found/k; reasoning: the
combined answer). Normalisation: NFKC (full-width letters, digits and punctuation become half-width), case folded,
punctuation removed, traditional Chinese folded to simplified (OpenCC t2s) unless ``fold_chinese: false``.

With ``judge`` (a model preset or backend), a judge model also reads each answer and says how many of the facts it
states; its verdict is reported as ``judge`` and becomes the score with ``primary: judge``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from luopan.components import Backend, Components, EvalContext, Evaluator
from luopan.errors import ConfigError
from luopan.reasoning import ReasoningRule, ReasoningSpec, spec_value
from luopan.types import GenerationConfig, GenerationRequest, Sample, ScoredSample
from luopan_needle.text import contains_key

JUDGE_PROMPT = (
    "You are grading an answer to a question about a long document. The document contained these facts:\n"
    "{facts}\n\nQuestion: {question}\nAnswer to grade: {answer}\n\n"
    "How many of the {k} reference answers below does the answer state correctly?\n{references}\n\n"
    "Reply with one number from 0 to {k} and nothing else."
)


class JudgeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: str | None = Field(default=None, description="a model preset (registry.yaml or a plugin's)")
    backend: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    max_new_tokens: int = Field(default=8, ge=1)
    #: where the judge's own thinking ends (luopan.reasoning): its verdict is read from the text after it;
    #: default: the judge preset's rule, else ``</think>`` after ``<think>``; none/false: off
    reasoning: ReasoningSpec | None = Field(default_factory=ReasoningSpec)

    @field_validator("reasoning", mode="before")
    @classmethod
    def _reasoning(cls, v: Any) -> Any:
        return spec_value(v)

    def rule(self, components: Components | None = None) -> ReasoningRule | None:
        """The judge's reasoning rule: this spec's when written, else its preset's, else the default."""
        spec: Any = self.reasoning.model_dump() if self.reasoning is not None else None
        if "reasoning" not in self.model_fields_set and self.preset and components is not None:
            given = components.preset("model", self.preset).get("reasoning", ...)
            if given is not ...:
                value = spec_value(given)
                spec = None if value is None else ReasoningSpec.model_validate(value).model_dump()
        return ReasoningRule.of(spec)

    @model_validator(mode="after")
    def _one(self) -> JudgeSpec:
        if not self.preset and not self.backend:
            raise ValueError("a judge names a preset or a backend")
        return self


class NeedleMatchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fold_chinese: bool = Field(default=True, description="compare Chinese in simplified characters (OpenCC t2s)")
    judge: JudgeSpec | None = None
    primary: Literal["keyphrase", "judge"] = "keyphrase"

    @model_validator(mode="after")
    def _primary(self) -> NeedleMatchParams:
        if self.primary == "judge" and self.judge is None:
            raise ValueError("primary: judge needs a judge")
        return self


def groups_found(output: str, answers: Sequence[Sequence[str]], *, fold_chinese: bool = True) -> list[bool]:
    """For each answer group: whether any of its key phrases is in ``output``."""
    return [any(contains_key(output, k, fold_chinese=fold_chinese) for k in group) for group in answers]


def build_judge(spec: JudgeSpec, components: Components) -> Backend:
    """The needle judge's backend, built from the run's own components (a model preset and/or a backend)."""
    backend, params = spec.backend, dict(spec.params)
    if spec.preset:
        fields = components.preset("model", spec.preset)
        backend = backend or fields.get("backend")
        params = {**(fields.get("params") or {}), **params}
    if not backend:
        raise ConfigError(f"needle_match: judge preset '{spec.preset}' names no backend")
    b = components.backend(backend, params)
    b.kind = "chat"
    return b


class NeedleMatch(Evaluator):
    metric = "recall"

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """With ``fold_chinese`` (the default) any answer or key phrase with a Chinese character is folded with
        OpenCC: without the package scoring would stop at the first one."""
        from luopan.deps import installed

        if params is None or not params.fold_chinese or installed("opencc"):
            return []
        return ["fold_chinese folds traditional Chinese to simplified with OpenCC, and the opencc package is not "
                "installed: pip install 'luopan[needle]' (or fold_chinese: false when no answer has Chinese)"]

    def __init__(self, fold_chinese: bool = True, judge: dict[str, Any] | JudgeSpec | None = None,
                 primary: str = "keyphrase", judge_backend: Backend | None = None) -> None:
        self.fold_chinese = fold_chinese
        self.judge_spec = JudgeSpec(**judge) if isinstance(judge, dict) else judge
        self.primary = primary
        self._judge = judge_backend

    def score(self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext) -> list[ScoredSample]:
        if ctx.mode != "generate":
            raise ConfigError("needle_match scores generated answers: set 'mode: generate' for this dataset")
        texts = [o.text for o in outputs]
        verdicts = self._judge_all(samples, texts, ctx) if (self.judge_spec or self._judge) else None
        scored = []
        for i, (s, text) in enumerate(zip(samples, texts)):
            answers = s.target if isinstance(s.target, list) else [[str(s.target)]]
            answers = [[a] if isinstance(a, str) else list(a) for a in answers]
            found = groups_found(text, answers, fold_chinese=self.fold_chinese)
            k = len(found)
            key_score = sum(found) / k if k else 0.0
            extra: dict[str, Any] = {"found": sum(found), "needles": k, "all_found": float(all(found)),
                                     "groups_found": found}
            if s.meta:
                extra["cell"] = {x: s.meta.get(x) for x in ("task", "kind", "length", "depth", "repeat", "tokens",
                                                            "needle_depths")}
            score = key_score
            if verdicts is not None:
                extra["keyphrase"] = key_score
                extra["judge"] = verdicts[i]
                if self.primary == "judge":
                    score = verdicts[i]
            scored.append(ScoredSample(s.id, s.subset, score, text.strip()[:200], extra))
        return scored

    def _judge_all(self, samples: Sequence[Sample], texts: Sequence[str], ctx: EvalContext) -> list[float]:
        if self._judge is None:
            assert self.judge_spec is not None
            if ctx.components is None:
                raise ConfigError("needle_match: a judge needs the run's components")
            self._judge = build_judge(self.judge_spec, ctx.components)
            self._judge.load()
        max_new = self.judge_spec.max_new_tokens if self.judge_spec else 8
        reqs, ks = [], []
        for s, text in zip(samples, texts):
            answers = s.target if isinstance(s.target, list) else [[str(s.target)]]
            needles = (s.meta or {}).get("needles") or []
            question = (s.meta or {}).get("question") or ""
            refs = "\n".join(f"- {a if isinstance(a, str) else ' / '.join(a)}" for a in answers)
            prompt = JUDGE_PROMPT.format(facts="\n".join(f"- {n}" for n in needles), question=question,
                                         answer=text.strip()[:2000], k=len(answers), references=refs)
            reqs.append(GenerationRequest(messages=(("user", prompt),),
                                          config=GenerationConfig(max_new_tokens=max_new)))
            ks.append(len(answers))
        outs = self._judge.generate(reqs)
        # the verdict is read from the judge's final reply, without its thinking (a reasoning judge's count of
        # facts while it thinks is not its verdict)
        rule = self.judge_spec.rule(ctx.components) if self.judge_spec else ReasoningRule()
        verdicts = []
        for o, k in zip(outs, ks):
            reply = rule.answer(o.text) if rule is not None else o.text
            m = re.search(r"\d+", reply)
            verdicts.append(min(k, int(m.group())) / k if m and k else 0.0)
        return verdicts
