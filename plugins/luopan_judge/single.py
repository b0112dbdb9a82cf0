"""The ``single_grade`` and ``cascade`` evaluators.

``single_grade`` (MT-Bench's single-answer grading): a judge rates each answer from 1 to 10, turn by turn, shown
the reference answer when the question has one. The sample's score is the mean rating of its judged turns / 10
(the summary's percentages read as MT-Bench scores x10: 65.0 = 6.5); a turn without a readable rating after the
retries is failed, counted and left out; a sample none of whose turns could be rated is not scored.

``cascade``: correctness with a rule first and the judge only for what the rule rejects. A rule (``number_match``,
``exact_match``, ``final_number``, ...) accepts an answer as correct; the judge reads the rest beside the
reference and says ``[[CORRECT]]`` or ``[[INCORRECT]]`` (an answer right in substance but not in the rule's form).
``rule_decided`` (the judge calls saved) and ``judge_called`` are reported per sample and per subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from luopan.components import EvalContext, Evaluator
from luopan.errors import ConfigError
from luopan.types import GenerationResult, Sample, ScoredSample
from luopan_judge.judging import ask, clip, need_judge
from luopan_judge.pairwise import _turns_to_judge, answer_texts
from luopan_judge.prompts import PromptSet, render
from luopan_judge.questions import question_turns, reference_turns
from luopan_judge.rules import RuleSpec, final_number
from luopan_judge.verdict import parse_correct, parse_rating


class SingleGradeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    turns: list[int] | Literal["all"] = Field(default="all", description="which turns to rate (1-based)")
    prompts: str = Field(default="builtin", description="builtin, brief (the verdict alone), or a FastChat judge_prompts.jsonl")
    verdict_retries: int = Field(default=2, ge=0)
    max_answer_chars: int | None = Field(default=None, ge=100)


class SingleGrade(Evaluator):
    metric = "rating/10"
    needs_judge = True

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """The judge prompt file, when one is named."""
        from luopan_judge.checks import file_problems

        return file_problems(params.prompts) if params is not None else []

    def __init__(self, **params: Any) -> None:
        self.p = SingleGradeParams(**params)
        self.prompts = PromptSet(self.p.prompts)

    def score(self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext) -> list[ScoredSample]:
        if ctx.mode != "generate":
            raise ConfigError(f"single_grade scores generated answers: set 'mode: generate' for dataset '{ctx.dataset}'")
        need_judge(ctx, "single_grade")
        answers = [answer_texts(o) for o in outputs]
        jobs: list[tuple[int, int, str, str]] = []
        convs = []
        for judge in ctx.judges:
            for i, s in enumerate(samples):
                q = question_turns(s)
                ref = reference_turns(s)
                for turn in _turns_to_judge(self.p.turns, min(len(q), len(answers[i]))):
                    has_ref = bool(ref) and len(ref) >= turn  # type: ignore[arg-type]
                    prompt = self.prompts.get("single", has_ref, turn)
                    v = {"question": q[turn - 1], "answer": clip(answers[i][turn - 1], self.p.max_answer_chars)}
                    for k in range(1, turn + 1):
                        v[f"question_{k}"] = q[k - 1]
                        v[f"answer_{k}"] = clip(answers[i][k - 1], self.p.max_answer_chars)
                    for k, r in enumerate(ref or [], 1):
                        v[f"ref_answer_{k}"] = clip(r, self.p.max_answer_chars)
                    jobs.append((i, turn, judge, prompt.name))
                    convs.append(render(prompt, v))
        judged = []
        for judge in ctx.judges:
            mine = [c for c, job in zip(convs, jobs) if job[2] == judge]
            kind = "single-brief" if self.p.prompts == "brief" else "single"
            judged += ask(ctx, mine, parse_rating, kind=kind, judge=judge, retries=self.p.verdict_retries)
        per: dict[int, list[dict[str, Any]]] = {}
        for (i, turn, judge, name), j in zip(jobs, judged):
            per.setdefault(i, []).append({"turn": turn, "judge": judge, "prompt": name, "rating": j.verdict,
                                          "failed": j.error, **{k: v for k, v in j.record().items()
                                                                 if k in ("reply", "attempts")}})
        scored = []
        for i, s in enumerate(samples):
            recs = per.get(i, [])
            ratings = [r["rating"] for r in recs if r["rating"] is not None]
            extra: dict[str, Any] = {"ratings": recs, "n_failed": sum(1 for r in recs if r["failed"]),
                                     "answer_chars": sum(len(t) for t in answers[i])}
            for t in sorted({r["turn"] for r in recs}):
                vals = [r["rating"] for r in recs if r["turn"] == t and r["rating"] is not None]
                if vals:
                    extra[f"rating_turn{t}"] = sum(vals) / len(vals)
            score = sum(ratings) / len(ratings) / 10.0 if ratings else None
            scored.append(ScoredSample(s.id, s.subset, score, answers[i][-1][:200], extra))
        return scored


# ---------------------------------------------------------------- cascade

CORRECT_SYSTEM = (
    "You are checking an AI assistant's answer against a reference answer. Decide whether the assistant's final "
    "answer is correct, i.e. agrees with the reference in substance (ignore formatting, wording and the steps "
    "taken). Reply with a short reason, then end with exactly [[CORRECT]] or [[INCORRECT]]."
)
CORRECT_TEMPLATE = ("[Question]\n{question}\n\n[Reference answer]\n{reference}\n[End of reference answer]\n\n"
                    "[Assistant's answer]\n{answer}\n[End of assistant's answer]")


class CascadeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: str = Field(default="number_match", description="final_number, or a registered evaluator's name")
    rule_params: dict[str, Any] = Field(default_factory=dict, description="the rule evaluator's options")
    verdict_retries: int = Field(default=2, ge=0)
    max_answer_chars: int | None = Field(default=None, ge=100)


class Cascade(Evaluator):
    metric = "accuracy"
    needs_judge = True

    def __init__(self, **params: Any) -> None:
        self.p = CascadeParams(**params)
        self.spec = RuleSpec(rule=self.p.rule, params=self.p.rule_params)

    def _rule_scores(self, samples: Sequence[Sample], texts: list[str], ctx: EvalContext) -> list[float | None]:
        if self.p.rule == "final_number":
            out: list[float | None] = []
            for s, t in zip(samples, texts):
                ref = reference_turns(s)
                gold = final_number(ref[-1]) if ref else None
                out.append(None if gold is None else float(final_number(t) == gold))
            return out
        if ctx.components is None:
            raise ConfigError(f"cascade rule '{self.p.rule}': an evaluator rule needs the run's components")
        evaluator = ctx.components.evaluator(self.p.rule, self.p.rule_params)
        scored = evaluator.score(samples, [GenerationResult(t) for t in texts], ctx)
        return [sc.score for sc in scored]

    def score(self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext) -> list[ScoredSample]:
        if ctx.mode != "generate":
            raise ConfigError(f"cascade scores generated answers: set 'mode: generate' for dataset '{ctx.dataset}'")
        texts = [o.text for o in outputs]
        rule = self._rule_scores(samples, texts, ctx)
        todo = [i for i, r in enumerate(rule) if r != 1.0]
        if todo:
            need_judge(ctx, "cascade")
        convs = []
        for i in todo:
            s = samples[i]
            ref = reference_turns(s)
            reference = ref[-1] if ref else str(s.target)
            user = CORRECT_TEMPLATE.format(question=question_turns(s)[-1], reference=reference,
                                           answer=clip(texts[i], self.p.max_answer_chars))
            convs.append([("system", CORRECT_SYSTEM), ("user", user)])
        judged = ask(ctx, convs, parse_correct, kind="correct", retries=self.p.verdict_retries) if convs else []
        by = dict(zip(todo, judged))
        scored = []
        for i, s in enumerate(samples):
            extra: dict[str, Any] = {"rule": rule[i], "rule_decided": float(i not in by),
                                     "judge_called": float(i in by)}
            if i in by:
                j = by[i]
                extra["judge"] = j.record()
                extra["n_failed"] = 0 if j.ok else 1
                score = (1.0 if j.verdict else 0.0) if j.ok else None
            else:
                extra["n_failed"] = 0
                score = 1.0
            scored.append(ScoredSample(s.id, s.subset, score, texts[i].strip()[:200], extra))
        return scored
