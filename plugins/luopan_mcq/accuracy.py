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

Two multiple-choice forms span several samples per question, tied together by ``Sample.meta``:

* ``meta["circular"] = {"group", "rotation", "n"}`` (CircularEval): the question asked once per rotation of
  its options. Every member of a complete group gets the original order's verdict as its score (so the
  subset's accuracy is plain accuracy), ``extra["circular_accuracy"]`` = 1 only when every rotation is
  right, and ``extra["rotation_accuracy"]`` its own verdict (the mean over all rotations). A group cut by a
  limit keeps each member's own verdict and is flagged ``extra["circular_incomplete"]``.
* ``meta["partial"] = {"group", "option", "n"}`` (lm-eval's multiple input, WinoGrande): one sample per
  option, each scoring the same continuation after its own context; the option whose continuation is the
  most likely is the prediction, and every member gets the question's verdict.

In both, the kernel keeps a question's samples together (limits, seeded draws, shards) and a subset's ``n``
counts questions, not samples.
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
        partial = [i for i, s in enumerate(samples) if "partial" in s.meta]
        if partial and ctx.mode != "likelihood":
            raise ValueError(
                f"accuracy: dataset '{ctx.dataset}' puts its choices in the context (continuation): "
                f"it is scored by likelihood only; set 'mode: likelihood'"
            )
        skip = set(partial)
        scored: list[ScoredSample | None] = [None] * len(samples)
        for i, (s, o) in enumerate(zip(samples, outputs)):
            if i not in skip:
                scored[i] = _score_likelihood(s, o) if ctx.mode == "likelihood" else _score_generation(s, o)
        if partial:
            _score_partial(samples, outputs, partial, scored)
        out = [sc for sc in scored if sc is not None]
        if any("circular" in s.meta for s in samples):
            _circular(samples, out)
        return out


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


_Norms = tuple[tuple[int, ...] | None, tuple[int, ...] | None]
_NORMS: dict[tuple[tuple[str, ...], str], _Norms] = {}


def _norms(choices: tuple[str, ...], delim: str) -> _Norms:
    """Each choice's length in characters and in UTF-8 bytes, without the target delimiter in front of it;
    None where every choice has the same power-of-two length (dividing by it is exact, so the normalised
    arg-max is the plain one). Memoised: most benchmarks repeat a few option lists over every question."""
    key = (choices, delim)
    got = _NORMS.get(key)
    if got is None:
        texts = [c[len(delim):] if delim and c.startswith(delim) else c for c in choices]
        chars = tuple(max(1, len(t)) for t in texts)
        nbytes = tuple(max(1, len(t.encode("utf-8"))) for t in texts)
        got = (None if _uniform_pow2(chars) else chars, None if _uniform_pow2(nbytes) else nbytes)
        if len(_NORMS) < 10_000:
            _NORMS[key] = got
    return got


def _uniform_pow2(lengths: tuple[int, ...]) -> bool:
    n = lengths[0]
    return n & (n - 1) == 0 and lengths.count(n) == len(lengths)


def _score_likelihood(sample: Sample, results: Sequence[LoglikelihoodResult]) -> ScoredSample:
    choices = sample.choices or []
    if len(results) != len(choices) or not choices:
        raise ValueError(
            f"accuracy: sample {sample.id}: {len(results)} log-likelihoods for {len(choices)} choices"
        )
    gold = _gold(sample, _labels(sample))
    lls = [r.logprob for r in results]
    pred = _argmax(lls)
    # lm-eval normalises by the choice's own length, without the delimiter in front of it
    chars, nbytes = _norms(tuple(choices), sample.meta.get("target_delimiter") or "")
    by_chars = pred if chars is None else _argmax([ll / n for ll, n in zip(lls, chars)])
    by_bytes = pred if nbytes is None else _argmax([ll / n for ll, n in zip(lls, nbytes)])
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


def _score_partial(
    samples: Sequence[Sample], outputs: Sequence[Any], members: list[int], scored: list[ScoredSample | None]
) -> None:
    """One verdict per question whose options are separate samples (``meta["partial"]``)."""
    groups: dict[str, list[int]] = {}
    for i in members:
        groups.setdefault(samples[i].meta["partial"]["group"], []).append(i)
    for group, idx in groups.items():
        n = samples[idx[0]].meta["partial"]["n"]
        options = sorted(idx, key=lambda i: samples[i].meta["partial"]["option"])
        if [samples[i].meta["partial"]["option"] for i in options] != list(range(n)):
            raise ValueError(
                f"accuracy: question {group} has {len(idx)} of its {n} option samples (a limit or a shard "
                f"cut it): use a limit that is a multiple of {n}, and no shards"
            )
        lls = []
        for i in options:
            res = outputs[i]
            if len(res) != 1:
                raise ValueError(f"accuracy: sample {samples[i].id}: {len(res)} log-likelihoods, expected 1")
            lls.append(res[0].logprob)
        pred = _argmax(lls)
        gold = samples[options[0]].target
        for i in options:
            s = samples[i]
            scored[i] = ScoredSample(s.id, s.subset, float(pred == gold), pred, {"logprob": lls[s.meta["partial"]["option"]]})


def _circular(samples: Sequence[Sample], scored: list[ScoredSample]) -> None:
    """CircularEval: a question is right only if every rotation of its options is (``meta["circular"]``)."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        c = s.meta.get("circular")
        if c is not None:
            groups.setdefault(c["group"], []).append(i)
    for idx in groups.values():
        n = samples[idx[0]].meta["circular"]["n"]
        rotations = sorted(samples[i].meta["circular"]["rotation"] for i in idx)
        if rotations != list(range(n)):
            for i in idx:
                scored[i].extra["circular_incomplete"] = 1.0
            continue
        first = next(i for i in idx if samples[i].meta["circular"]["rotation"] == 0)
        base = scored[first]
        every = float(all(scored[i].score == 1.0 for i in idx))
        plain = {k: v for k, v in base.extra.items() if isinstance(v, float)}
        for i in idx:
            own = scored[i]
            own.extra = {**own.extra, **plain, "rotation_accuracy": own.score, "circular_accuracy": every}
            own.score = base.score
