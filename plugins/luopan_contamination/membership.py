"""Membership signals for a model without its training corpus: Min-K% probability and the option-order test.

* **Min-K% probability** (Shi et al., 2023, "Detecting pretraining data from large language models"): the mean
  of the lowest k% of the item text's per-token log-probabilities. Text seen in training has fewer very unlikely
  tokens, so a higher value suggests membership. It needs per-token log-probabilities: a backend offers them
  through an optional ``token_logprobs(texts) -> list[list[float]]`` method (the ``hf`` backend has it); others
  are skipped. The value depends on the model, the tokenizer and the text's own difficulty: it is a ranking
  signal, compared between items or models against a reference (items known to be unseen), never a verdict.
* **Option-order test** (after Oren et al., 2023, "Proving test set contamination in black box language
  models"): for a multiple-choice item whose prompt lists its options (``A. ...``, ``B. ...``), the log-likelihood
  of the prompt as published against the same prompt with its options shuffled (meaning unchanged). A model
  that never saw the benchmark has no reason to prefer the published order: each of ``1 + shuffles`` orders is
  the most likely with probability ``1 / (1 + shuffles)``. Across a benchmark, the share of items whose published
  order wins is compared with that rate by a one-sided binomial test; a small p-value is evidence that the model
  saw the benchmark in that order. A large one is no evidence of cleanliness (a paraphrased or partial leak
  leaves the order test blind).

Both go through the backend directly, not the request cache. :func:`membership` is the entry point; any object
with ``loglikelihood`` (and optionally ``token_logprobs``) works, e.g. a model fine-tuned on purpose on a
benchmark, wrapped as a luopan backend.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from typing import Any

from luopan.types import LoglikelihoodRequest

__all__ = ["min_k_percent", "option_lines", "shuffle_options", "binomial_sf", "membership", "supports_token_logprobs"]

_OPTION = re.compile(r"^(\s*\(?)([A-Ja-j])([.)．、:：]\s*)(.*\S.*)$")


def min_k_percent(logprobs: Sequence[float], k: float = 0.2) -> float | None:
    """Mean of the lowest ``k`` fraction (at least one) of ``logprobs``; None when there are none."""
    if not logprobs:
        return None
    if not 0 < k <= 1:
        raise ValueError("k must be in (0, 1]")
    m = max(1, math.ceil(k * len(logprobs)))
    low = sorted(logprobs)[:m]
    return sum(low) / m


def option_lines(text: str) -> tuple[int, int] | None:
    """The line range ``[start, end)`` of the longest run of consecutive option lines ``A. ...``, ``B. ...`` (labels
    in order from A), at least two; None when the text lists no options."""
    lines = text.split("\n")
    best: tuple[int, int] | None = None
    i = 0
    while i < len(lines):
        m = _OPTION.match(lines[i])
        if m and m.group(2).upper() == "A":
            j = i + 1
            while j < len(lines):
                mj = _OPTION.match(lines[j])
                if not mj or ord(mj.group(2).upper()) - ord("A") != j - i:
                    break
                j += 1
            if j - i >= 2 and (best is None or j - i > best[1] - best[0]):
                best = (i, j)
            i = j
        else:
            i += 1
    return best


def shuffle_options(text: str, rng: random.Random, count: int) -> list[str]:
    """``count`` rewrites of ``text`` with the contents of its option lines in other orders (labels kept); empty
    when the text lists no options."""
    span = option_lines(text)
    if span is None:
        return []
    lines = text.split("\n")
    parsed = [_OPTION.match(line) for line in lines[span[0]:span[1]]]
    contents = [m.group(4) for m in parsed if m]
    if len(set(contents)) < 2:
        return []
    seen = {tuple(contents)}
    out: list[str] = []
    for _ in range(count * 20):
        if len(out) == count:
            break
        perm = contents[:]
        rng.shuffle(perm)
        if tuple(perm) in seen:
            continue
        seen.add(tuple(perm))
        new = [f"{m.group(1)}{m.group(2)}{m.group(3)}{c}" for m, c in zip(parsed, perm) if m]
        out.append("\n".join(lines[:span[0]] + new + lines[span[1]:]))
    return out


def binomial_sf(successes: int, n: int, p: float) -> float:
    """P(X >= successes) for X ~ Binomial(n, p)."""
    if successes <= 0:
        return 1.0
    if successes > n:
        return 0.0
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
            + (n - k) * math.log1p(-p) for k in range(successes, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs))


def supports_token_logprobs(backend: Any) -> bool:
    return callable(getattr(backend, "token_logprobs", None))


def membership(backend: Any, texts: Sequence[str], *, k: float = 0.2, shuffles: int = 3, seed: int = 0,
               chunk: int = 64) -> dict[str, Any]:
    """Min-K% (when the backend gives per-token log-probs) and the option-order test over ``texts`` (the items of
    one benchmark, as a model would read them). Returns the per-benchmark figures and per-item values."""
    rng = random.Random(seed)
    per_item: list[dict[str, Any]] = [{} for _ in texts]
    result: dict[str, Any] = {"items": len(texts), "k": k, "shuffles": shuffles}
    if supports_token_logprobs(backend):
        values = []
        for start in range(0, len(texts), chunk):
            for i, lps in enumerate(backend.token_logprobs(list(texts[start:start + chunk])), start):
                v = min_k_percent(lps, k)
                per_item[i]["min_k"] = v
                if v is not None:
                    values.append(v)
        result["min_k"] = sum(values) / len(values) if values else None
    else:
        result["min_k"] = None
        result["min_k_note"] = "the backend gives no per-token log-probs (token_logprobs)"
    requests: list[LoglikelihoodRequest] = []
    owners: list[tuple[int, int]] = []  # (item, 0 for the published order, j >= 1 for the j-th shuffle)
    if shuffles > 0:
        for i, text in enumerate(texts):
            rewrites = shuffle_options(text, rng, shuffles)
            if len(rewrites) < shuffles:
                continue
            for j, t in enumerate([text, *rewrites]):
                requests.append(LoglikelihoodRequest("", t))
                owners.append((i, j))
    scores: dict[int, list[float]] = {}
    for start in range(0, len(requests), chunk):
        part = requests[start:start + chunk]
        # a total log-prob is the sum of the per-token ones: where those exist, one plain pass per text (the hf
        # backend packs requests that share a context, the empty one here, into one row: slow for long texts)
        if supports_token_logprobs(backend):
            totals = [sum(lps) for lps in backend.token_logprobs([r.continuation for r in part])]
        else:
            totals = [r.logprob for r in backend.loglikelihood(part)]
        for (i, j), lp in zip(owners[start:start + chunk], totals):
            scores.setdefault(i, [0.0] * (shuffles + 1))[j] = float(lp)
    wins = 0
    gaps = []
    for i, lps in scores.items():
        best = lps[0] > max(lps[1:])
        wins += best
        gap = lps[0] - sum(lps[1:]) / shuffles
        gaps.append(gap)
        per_item[i].update({"canonical_best": best, "order_gap": gap})
    n = len(scores)
    expected = 1 / (shuffles + 1) if shuffles > 0 else None
    result.update({
        "order_items": n,
        "canonical_best": wins / n if n else None,
        "expected_best": expected,
        "mean_order_gap": sum(gaps) / n if n else None,
        "p_value": binomial_sf(wins, n, expected) if n and expected else None,
    })
    result["per_item"] = per_item
    return result
