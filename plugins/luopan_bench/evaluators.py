"""Evaluators for benchmarks whose metric is not plain accuracy or exact match.

* ``greedy_match`` (LAMBADA, lm-eval's ``loglikelihood`` output type): each sample has one continuation;
  ``acc`` = 1 when every one of its tokens is the model's greedy choice; ``extra["perplexity"]`` is the
  subset's perplexity, exp(-mean log-likelihood) over its samples (lm-eval's ``perplexity`` aggregation),
  written on each sample and declared in ``derived_metrics`` (the kernel computes it from ``extra["logprob"]``,
  the sample's own log-likelihood, and its interval by bootstrap). With shards the merged perplexity is the
  shards' sample-weighted mean, not the corpus value.
* ``truthfulqa_mc2``: the probability mass of the true answers, normalised over all answers
  (lm-eval's ``process_results_mc2``); the labels come from ``meta["mc2_labels"]``.
* ``math_equiv`` (MATH): the final answer read out of the solution (``Final Answer: The final answer is X``,
  else the last ``\\boxed{}``) is equivalent to the gold answer (:mod:`luopan_bench.mathans`: math-verify when
  installed, else sympy); ``extra["exact_match"]`` is the normalised string equality alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from luopan.components import EvalContext, Evaluator
from luopan.types import Sample, ScoredSample


def _check(name: str, mode: str, ctx: EvalContext, samples: Sequence[Sample], outputs: Sequence[Any]) -> None:
    if ctx.mode != mode:
        raise ValueError(f"{name} scores {'log-likelihoods' if mode == 'likelihood' else 'generated text'}: "
                         f"set 'mode: {mode}' for dataset '{ctx.dataset}'")
    if len(samples) != len(outputs):
        raise ValueError(f"{name}: {len(outputs)} outputs for {len(samples)} samples")


def _perplexity(logprobs: Sequence[float]) -> float:
    return math.exp(-sum(logprobs) / len(logprobs))


class GreedyMatch(Evaluator):
    metric = "acc"
    # perplexity is not a mean of per-sample values: the kernel computes it from the log-likelihoods, and its
    # interval by bootstrap
    derived_metrics = {"perplexity": ("logprob", _perplexity)}

    def score(self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext) -> list[ScoredSample]:
        _check("greedy_match", "likelihood", ctx, samples, outputs)
        lls: dict[str, list[float]] = {}
        rows = []
        for s, res in zip(samples, outputs):
            if len(res) != 1:
                raise ValueError(f"greedy_match: sample {s.id} has {len(res)} continuations; it scores exactly one")
            r = res[0]
            lls.setdefault(s.subset, []).append(r.logprob)
            rows.append((s, r))
        ppl = {k: _perplexity(v) for k, v in lls.items()}
        return [ScoredSample(s.id, s.subset, float(r.is_greedy), r.is_greedy,
                             {"logprob": r.logprob, "perplexity": ppl[s.subset]}) for s, r in rows]


class TruthfulQAMC2(Evaluator):
    metric = "mc2"

    def score(self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext) -> list[ScoredSample]:
        _check("truthfulqa_mc2", "likelihood", ctx, samples, outputs)
        out = []
        for s, res in zip(samples, outputs):
            labels = s.meta.get("mc2_labels")
            if not isinstance(labels, list) or len(labels) != len(res):
                raise ValueError(f"truthfulqa_mc2: sample {s.id}: meta['mc2_labels'] must give one label per choice")
            lls = [r.logprob for r in res]
            top = max(lls)
            probs = [math.exp(ll - top) for ll in lls]  # the normalisation cancels the shift
            total = sum(probs)
            true = sum(p for p, lab in zip(probs, labels) if int(lab) == 1)
            pred = max(range(len(lls)), key=lls.__getitem__)
            out.append(ScoredSample(s.id, s.subset, true / total, pred, {"mc1_style": float(int(labels[pred]) == 1)}))
        return out


class MathEquiv(Evaluator):
    metric = "math_equiv"

    @classmethod
    def environment(cls) -> list[str]:
        """math-verify compares answers; without it sympy does (a smaller LaTeX subset). Without either, no two
        different spellings of an answer would ever be equal: scores would be silently low."""
        from luopan.deps import installed

        if installed("math_verify") or installed("sympy"):
            return []
        return ["neither math-verify nor sympy is installed, so equivalent answers could not be recognised: "
                "pip install 'luopan[math]'"]

    def score(self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext) -> list[ScoredSample]:
        from luopan_bench.mathans import equivalent, extract_answer, normalize

        _check("math_equiv", "generate", ctx, samples, outputs)
        out = []
        for s, o in zip(samples, outputs):
            gold = s.target if isinstance(s.target, str) else str(s.target)
            found = extract_answer(o.text)
            ok = equivalent(found, gold)
            exact = found is not None and normalize(found) == normalize(gold)
            out.append(ScoredSample(s.id, s.subset, float(ok), found,
                                    {"exact_match": float(exact), "extracted": float(found is not None)}))
        return out
