"""The ``accuracy`` evaluator for multiple-choice samples (``Sample.target`` = index of the gold choice).

* likelihood mode: the prediction is the choice with the highest log-likelihood (the first on a tie, as
  numpy's argmax). ``extra`` also holds lm-eval's two length-normalised variants: ``acc_norm`` divides each
  log-likelihood by the continuation's length in characters, ``acc_bytes`` by its length in UTF-8 bytes.
  lm-eval measures the choice without its target delimiter; with the same delimiter before every choice,
  as here, the two differ only when the choices differ in length.
* generate mode: the label is read out of the text by :func:`luopan_mcq.extract.extract_choice`; a reply
  that names no option scores 0, with ``extra["extracted"] = None``.

``prediction`` is the index of the chosen option in both modes (None when nothing could be read), so it
compares directly with ``target``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from luopan.components import EvalContext, Evaluator
from luopan.types import GenerationResult, LoglikelihoodResult, Sample, ScoredSample
from luopan_mcq.extract import extract_choice


class AccuracyEvaluator(Evaluator):
    """Multiple-choice accuracy: argmax log-likelihood, or the option named in generated text."""

    metric = "accuracy"

    def score(
        self, samples: Sequence[Sample], outputs: Sequence[Any], ctx: EvalContext
    ) -> list[ScoredSample]:
        if len(samples) != len(outputs):
            raise ValueError(f"accuracy: {len(outputs)} outputs for {len(samples)} samples")
        if ctx.mode == "likelihood":
            return [_score_likelihood(s, o) for s, o in zip(samples, outputs)]
        return [_score_generation(s, o) for s, o in zip(samples, outputs)]


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _labels(sample: Sample) -> list[str]:
    labels = sample.meta.get("labels") or [c.strip() for c in sample.choices or ()]
    if not labels:
        raise ValueError(f"accuracy: sample {sample.id} has neither choices nor meta['labels']")
    return list(labels)


def _gold(sample: Sample, labels: Sequence[str]) -> int:
    target = sample.target
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(labels):
        return target
    if isinstance(target, str) and target in labels:
        return list(labels).index(target)
    raise ValueError(f"accuracy: sample {sample.id}: target {target!r} is not an option index or label")


def _score_likelihood(sample: Sample, results: Sequence[LoglikelihoodResult]) -> ScoredSample:
    choices = sample.choices or []
    if len(results) != len(choices) or not choices:
        raise ValueError(
            f"accuracy: sample {sample.id}: {len(results)} log-likelihoods for {len(choices)} choices"
        )
    gold = _gold(sample, _labels(sample))
    lls = [r.logprob for r in results]
    pred = _argmax(lls)
    by_chars = _argmax([ll / max(1, len(c)) for ll, c in zip(lls, choices)])
    by_bytes = _argmax([ll / max(1, len(c.encode("utf-8"))) for ll, c in zip(lls, choices)])
    return ScoredSample(
        sample.id,
        sample.subset,
        float(pred == gold),
        pred,
        {"acc_norm": float(by_chars == gold), "acc_bytes": float(by_bytes == gold)},
    )


def _score_generation(sample: Sample, output: GenerationResult) -> ScoredSample:
    labels = _labels(sample)
    gold = _gold(sample, labels)
    extracted = extract_choice(output.text, labels, sample.meta.get("options"))
    pred = labels.index(extracted) if extracted is not None else None
    return ScoredSample(
        sample.id,
        sample.subset,
        float(pred == gold),
        pred,
        {"extracted": extracted, "parsed": float(extracted is not None)},
    )
