"""The ``pairwise`` evaluator: a judge model compares this model's answer with another model's, question by
question and turn by turn; the battles feed the arena leaderboard (Bradley-Terry ratings, win rates).

Position bias: by default each pair is judged in both orders (this model as A, then as B). The pair's verdict
is the winner both orders agree on; when they disagree it is a tie, and the pair counts as inconsistent (the
judge's consistency rate is the share of pairs that agree). A pair with a failed verdict in either order is a
failed battle: counted, listed, never scored.

Opponents: the ``baseline`` model (default: the run's first model) or ``all`` the run's other models. The other
models' answers come from the kernel (``EvalContext.peer_outputs``: cached, or generated once), and the judge's
prompts are the same whichever model's unit asks, so every comparison is judged once and then read from the cache.

Cascade (``cascade: {rule: final_number}``): on questions with a reference answer, a rule decides first when
exactly one of the two answers matches the reference; the judge is asked only for the rest, and the calls saved
are reported. Votes (``votes:``): battles from files (human or other annotators), matched to the questions, which
the arena aggregates beside the judge's, alone, or together; ``judge: false`` uses only the votes.

Each sample's score is its mean outcome against the opponents (win 1, tie 0.5, loss 0) over the battles that did
not fail (``None`` when all failed), so the unit's score is its win rate against them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from luopan.components import EvalContext, Evaluator
from luopan.errors import ConfigError
from luopan.types import Sample, ScoredSample
from luopan_judge.judging import Judgment, ask, clip, need_judge
from luopan_judge.prompts import PromptSet, render
from luopan_judge.questions import question_turns, reference_turns
from luopan_judge.rules import RuleSpec, rule_correct
from luopan_judge.verdict import parse_pairwise
from luopan_judge.votes import VotesSpec, load_votes


class PairwiseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    baseline: str | None = Field(default=None, description="the model others are compared with (default: the first)")
    opponents: Literal["baseline", "all"] = Field(default="baseline", description="baseline, or every other model")
    swap: bool = Field(default=True, description="judge both orders; disagreeing orders are a tie")
    turns: list[int] | Literal["all"] = Field(default="all", description="which turns to judge (1-based)")
    prompts: str = Field(default="builtin", description="builtin, brief (the verdict alone), or a FastChat judge_prompts.jsonl")
    verdict_retries: int = Field(default=2, ge=0, description="follow-up requests when a reply has no verdict")
    max_answer_chars: int | None = Field(default=None, ge=100, description="cut longer answers (marked) for small judges")
    judge: bool = Field(default=True, description="false: no judge calls, only the votes")
    cascade: RuleSpec | None = Field(default=None, description="a rule decides first where a reference allows")
    votes: list[VotesSpec] = Field(default_factory=list, description="vote files: model_a, model_b, winner, annotator")
    bootstrap: int = Field(default=1000, ge=0, description="bootstrap resamples for the rating intervals")
    seed: int = 0
    plots: bool = True


def _turns_to_judge(spec: list[int] | str, n_turns: int) -> list[int]:
    if spec == "all":
        return list(range(1, n_turns + 1))
    return [t for t in spec if 1 <= t <= n_turns]  # type: ignore[union-attr]


def answer_texts(output: Any) -> list[str]:
    """A model's answer per turn: a ConversationResult's turns, or the single answer."""
    texts = getattr(output, "texts", None)
    return list(texts) if texts is not None else [output.text]


def pair_values(sample: Sample, turn: int, a: list[str], b: list[str], max_chars: int | None) -> dict[str, str]:
    q = question_turns(sample)
    ref = reference_turns(sample)
    v: dict[str, str] = {"question": q[turn - 1], "answer_a": clip(a[turn - 1], max_chars),
                         "answer_b": clip(b[turn - 1], max_chars)}
    for i in range(1, turn + 1):
        v[f"question_{i}"] = q[i - 1]
        v[f"answer_a_{i}"] = clip(a[i - 1], max_chars)
        v[f"answer_b_{i}"] = clip(b[i - 1], max_chars)
    if ref:
        for i, r in enumerate(ref, 1):
            v[f"ref_answer_{i}"] = clip(r, max_chars)
    return v


def winner_of(verdict: str, first: str, second: str) -> str:
    """The model a verdict on (A=first, B=second) names, or "tie"."""
    return first if verdict == "A" else second if verdict == "B" else "tie"


class Pairwise(Evaluator):
    metric = "win_rate"
    needs_judge = True

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """The judge prompt file, the votes files and numpy (the arena's ratings)."""
        from luopan_judge.checks import file_problems

        p = params if params is not None else PairwiseParams()
        return file_problems(p.prompts, p.votes, arena=True)

    def __init__(self, **params: Any) -> None:
        self.p = PairwiseParams(**params)
        self.prompts = PromptSet(self.p.prompts) if self.p.judge else None

    def score(self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext) -> list[ScoredSample]:
        if ctx.mode != "generate":
            raise ConfigError(f"pairwise scores generated answers: set 'mode: generate' for dataset '{ctx.dataset}'")
        if self.p.judge:
            need_judge(ctx, "pairwise")
        models = list(ctx.models) or [ctx.model]
        baseline = self.p.baseline or models[0]
        if baseline not in models:
            raise ConfigError(f"pairwise: baseline '{baseline}' is not a model of this run (models: {', '.join(models)}); "
                              f"add it, e.g. with the answers backend for pregenerated answers")
        opponents = [m for m in models if m != ctx.model] if self.p.opponents == "all" else \
            ([baseline] if ctx.model != baseline else [])
        mine = [answer_texts(o) for o in outputs]
        battles: list[list[dict[str, Any]]] = [[] for _ in samples]
        if self.p.judge and opponents:
            assert ctx.peer_outputs is not None
            theirs = {opp: [answer_texts(o) for o in ctx.peer_outputs(opp)] for opp in opponents}
            for judge in ctx.judges:  # one batch per judge: every opponent, sample, turn and order at once
                for i, rec in self._battles(samples, mine, theirs, ctx, models, judge):
                    battles[i].append(rec)
        vote_battles = self._vote_outcomes(samples, ctx.model, opponents) if self.p.votes else {}
        scored = []
        for i, s in enumerate(samples):
            recs = battles[i]
            outcomes = [r["outcome"] for r in recs if r["outcome"] is not None]
            if not self.p.judge:
                outcomes = vote_battles.get(s.id, [])
            score = sum(outcomes) / len(outcomes) if outcomes else (0.5 if not opponents else None)
            extra: dict[str, Any] = {
                "battles": recs,
                "n_battles": len(recs),
                "n_failed": sum(1 for r in recs if r["failed"]),
                "n_rule": sum(1 for r in recs if r.get("rule")),
                "answer_chars": sum(len(t) for t in mine[i]),
            }
            pairs = [r for r in recs if r.get("consistent") is not None]
            if pairs:
                extra["consistency"] = sum(1 for r in pairs if r["consistent"]) / len(pairs)
            scored.append(ScoredSample(s.id, s.subset, score, mine[i][-1][:200], extra))
        return scored

    def _battles(self, samples: Sequence[Sample], mine: list[list[str]], theirs: dict[str, list[list[str]]],
                 ctx: EvalContext, models: list[str], judge: str) -> list[tuple[int, dict[str, Any]]]:
        """Judge ``ctx.model`` against each opponent on every sample and turn; (sample index, battle record)s."""
        assert self.prompts is not None
        me = ctx.model
        jobs: list[tuple[int, list[tuple[str, str]], dict[str, Any]]] = []  # (sample, orders, record)
        convs: list[list[tuple[str, str]]] = []
        where: list[tuple[int, int]] = []  # (job, order)
        for opp, answers_opp in theirs.items():
            # a fixed presentation order whichever unit asks, so the other model's unit finds these in the cache
            first, second = (me, opp) if models.index(me) < models.index(opp) else (opp, me)
            orders = [(first, second), (second, first)] if self.p.swap else [(first, second)]
            for i, s in enumerate(samples):
                answers = {me: mine[i], opp: answers_opp[i]}
                n_turns = min(len(mine[i]), len(answers_opp[i]), len(question_turns(s)))
                ref = reference_turns(s)
                for turn in _turns_to_judge(self.p.turns, n_turns):
                    rec: dict[str, Any] = {"question": s.id, "turn": turn, "model_a": me, "model_b": opp,
                                           "judge": judge, "outcome": None, "failed": None, "consistent": None}
                    if self.p.cascade and ref and len(ref) >= turn:
                        ok_me = rule_correct(self.p.cascade, mine[i][turn - 1], ref[turn - 1], ctx)
                        ok_opp = rule_correct(self.p.cascade, answers_opp[i][turn - 1], ref[turn - 1], ctx)
                        if ok_me is not None and ok_opp is not None and ok_me != ok_opp:
                            rec.update(outcome=1.0 if ok_me else 0.0, rule=self.p.cascade.rule,
                                       judge_calls_saved=len(orders))
                            jobs.append((i, orders, rec))
                            continue
                    prompt = self.prompts.get("pair", bool(ref) and len(ref) >= turn, turn)
                    k = len(jobs)
                    jobs.append((i, orders, rec))
                    for o, (a, b) in enumerate(orders):
                        values = pair_values(s, turn, answers[a], answers[b], self.p.max_answer_chars)
                        convs.append(render(prompt, values))
                        where.append((k, o))
                    rec["prompt"] = prompt.name
        kind = "pair-brief" if self.p.prompts == "brief" else "pair"
        judged: list[Judgment] = ask(ctx, convs, parse_pairwise, kind=kind, judge=judge,
                                     retries=self.p.verdict_retries) if convs else []
        per_job: dict[int, list[Judgment | None]] = {}
        for (k, o), j in zip(where, judged):
            per_job.setdefault(k, [None] * len(jobs[k][1]))[o] = j
        out = []
        for k, (i, orders, rec) in enumerate(jobs):
            opp = rec["model_b"]
            if k in per_job:
                js = per_job[k]
                rec["judgments"] = [{"a": a, "b": b, **j.record()} for (a, b), j in zip(orders, js) if j is not None]
                bad = [j for j in js if j is None or not j.ok]
                if bad:
                    rec["failed"] = "; ".join(f"{a} as A: {j.error}" for (a, _b), j in zip(orders, js)
                                              if j is not None and not j.ok)
                else:
                    winners = [winner_of(j.verdict, a, b) for (a, b), j in zip(orders, js)]  # type: ignore[union-attr]
                    if len(winners) == 2:
                        rec["consistent"] = winners[0] == winners[1]
                    w = winners[0] if len(set(winners)) == 1 else "tie"
                    rec["winner"] = w
                    rec["outcome"] = 1.0 if w == me else 0.0 if w == opp else 0.5
            out.append((i, rec))
        return out

    def _vote_outcomes(self, samples: Sequence[Sample], me: str, opponents: list[str]) -> dict[str, list[float]]:
        """Per sample id: ``me``'s outcomes against ``opponents`` in the vote files (``judge: false``)."""
        by_text = {" ".join(question_turns(s)[0].split()): s.id for s in samples}
        ids = {s.id for s in samples}
        out: dict[str, list[float]] = {}
        for spec in self.p.votes:
            for v in load_votes(spec):
                qid = v.question if v.question in ids else by_text.get(" ".join(v.question.split()))
                if qid is None:
                    continue
                if v.model_a == me and v.model_b in opponents:
                    out.setdefault(qid, []).append(v.outcome)
                elif v.model_b == me and v.model_a in opponents:
                    out.setdefault(qid, []).append(1.0 - v.outcome)
        return out
