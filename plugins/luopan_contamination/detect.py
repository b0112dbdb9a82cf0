"""The n-gram overlap check: benchmark items against a corpus, per item and per benchmark.

An item is the text a model sees (the rendered prompt, 0-shot, so that the few-shot examples of another split
do not count) followed by the gold answer where it is text (the correct option of a multiple-choice question, a
reference answer; a bare option letter is left out). Its 13-grams (:mod:`luopan_contamination.ngrams`) are
looked up in the corpus; the item is **contaminated** when at least one is found (lm-eval's rule), or, with
``threshold``, when more than that fraction of them is.

N-grams that several items of one benchmark share are the prompt's boilerplate (an instruction line such as
CMMLU's "以下是关于解剖学的单项选择题...", "Answer:" and the option labels of a template), not an item's content:
an n-gram found in more than ``max_shared`` questions of a benchmark (default 1: only n-grams of one question
count; the rotations or options of one question are one question) is
not used, so a corpus quoting the template does not flag every item. Items left with no n-gram (shorter than 13
tokens, or all boilerplate) cannot be checked: they are counted as unchecked and never flagged. Raise
``max_shared`` for benchmarks whose items share real content (several questions on one passage) to let the
passage count for each of them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from luopan.types import Sample
from luopan_contamination.ngrams import N, NgramSet, ngram_hashes, token_hashes, tokens

#: punctuation glued between two letters or digits, with no space on either side
_GLUED = re.compile(r"(?<=[^\W_])([^\w\s]+)(?=[^\W_])")

__all__ = ["Item", "ItemResult", "BenchmarkResult", "Detector", "check", "item_text", "items_from_samples", "peak_rss_mb",
           "respaced"]


@dataclass(slots=True)
class Item:
    benchmark: str
    subset: str
    id: str
    text: str
    #: the question the item belongs to (rotations of one CircularEval question are one question); n-grams
    #: shared by the items of one question are not boilerplate
    question: str = ""


@dataclass(slots=True)
class ItemResult:
    benchmark: str
    subset: str
    id: str
    #: distinct n-grams of the item used in the check (boilerplate left out)
    ngrams: int
    #: how many of them the corpus holds
    matched: int
    #: matched / ngrams (0 when the item has none)
    ratio: float
    contaminated: bool
    #: False when the item has no n-gram to look up (shorter than n tokens, or only boilerplate)
    checked: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchmarkResult:
    benchmark: str
    items: int
    checked: int
    contaminated: int
    #: contaminated / checked
    fraction: float
    #: mean overlap ratio over the checked items
    mean_ratio: float
    #: boilerplate n-grams left out (shared by more than max_shared items)
    boilerplate_ngrams: int
    subsets: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def item_text(sample: Sample) -> str:
    """The text of an item checked for contamination: the prompt, then the gold answer where it is text."""
    parts = [sample.prompt]
    target = sample.target
    if sample.choices and isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(sample.choices):
        if len(sample.choices[target].strip()) > 1:  # an option's text, not its letter
            parts.append(sample.choices[target])
    elif isinstance(target, str) and len(target.strip()) > 1:
        parts.append(target)
    elif isinstance(target, list) and target and all(isinstance(t, str) for t in target):
        parts.append(target[0])
    return "\n".join(p for p in parts if p)


def items_from_samples(benchmark: str, samples: Iterable[Sample]) -> list[Item]:
    from luopan import question_key

    return [Item(benchmark, s.subset, s.id, item_text(s), question_key(s)) for s in samples]


def respaced(text: str) -> list[str]:
    """``text`` read with the punctuation glued between two words set apart: all of it, and, where several marks
    are glued, each mark alone (a copy may re-space its commas and keep ``26.95`` whole). Empty when nothing is
    glued."""
    marks = sorted({m.group(1) for m in _GLUED.finditer(text)})
    if not marks:
        return []
    out = [_GLUED.sub(r" \1 ", text)]
    if len(marks) > 1:
        for mark in marks[:8]:
            out.append(re.sub(rf"(?<=[^\W_])({re.escape(mark)})(?=[^\W_])", r" \1 ", text))
    return out


class Detector:
    """The items' n-grams, ready to be looked up in a corpus (:meth:`scan`) or a prebuilt corpus index
    (:meth:`results` with an :class:`NgramSet` of the whole corpus)."""

    def __init__(self, items: Sequence[Item], *, n: int = N, max_shared: int = 1, threshold: float = 0.0,
                 spacing_variants: bool = True) -> None:
        if n < 1:
            raise ValueError("n must be at least 1")
        self.items = list(items)
        self.n = n
        self.threshold = threshold
        self.max_shared = max_shared
        self.spacing_variants = spacing_variants
        raw = [np.unique(ngram_hashes(token_hashes(tokens(it.text)), n)) for it in self.items]
        # an item with punctuation glued between two words ("rabbit,because", "1,000") is also checked as if
        # the punctuation stood apart: a copy re-spaced around it ("rabbit , because") has other words under
        # lm-eval's rule (which deletes punctuation and joins what it glued)
        alt: list[list[np.ndarray]] = [[] for _ in self.items]
        if spacing_variants:
            for i, it in enumerate(self.items):
                for spaced in respaced(it.text):
                    a = np.unique(ngram_hashes(token_hashes(tokens(spaced)), n))
                    if len(a) and not np.array_equal(a, raw[i]):
                        alt[i].append(a)
        self.boilerplate: dict[str, int] = {}
        by_bench: dict[str, list[int]] = {}
        for i, it in enumerate(self.items):
            by_bench.setdefault(it.benchmark, []).append(i)
        self.hashes: list[np.ndarray] = list(raw)
        self.alt: list[list[np.ndarray]] = [list(a) for a in alt]
        for bench, idx in by_bench.items():
            questions: dict[str, list[np.ndarray]] = {}
            for i in idx:
                hs = questions.setdefault(self.items[i].question or self.items[i].id, [])
                hs.append(raw[i])
                hs.extend(alt[i])
            per_q = [np.unique(np.concatenate(hs)) if len(hs) > 1 else hs[0] for hs in questions.values()]
            allh = np.concatenate(per_q) if per_q else np.empty(0, dtype=np.uint64)
            uniq, counts = np.unique(allh, return_counts=True)
            common = uniq[counts > max_shared]
            self.boilerplate[bench] = len(common)
            if len(common):
                for i in idx:
                    self.hashes[i] = raw[i][~np.isin(raw[i], common, assume_unique=True)]
                    self.alt[i] = [a[~np.isin(a, common, assume_unique=True)] for a in alt[i]]
        # checked: the item's own reading has n-grams (a verbatim copy can be found); the re-spaced reading of an
        # item too short for its own can still flag a re-spaced copy, but is no check of a verbatim one
        self.short = [len(h) == 0 for h in self.hashes]
        parts = self.hashes + [a for alts in self.alt for a in alts]
        self.keys = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)

    def scan(self, texts: Iterable[str]) -> NgramSet:
        """Read the corpus once; keep the items' n-grams it holds (memory: the items' n-grams, not the corpus's)."""
        return NgramSet.build(texts, keep=self.keys, n=self.n)

    def results(self, found: NgramSet) -> list[ItemResult]:
        out = []
        for it, h, alts, short in zip(self.items, self.hashes, self.alt, self.short):
            total = len(h)
            matched = int(found.contains(h).sum()) if len(h) else 0
            ratio = matched / len(h) if len(h) else 0.0
            for a in alts:  # a re-spaced reading, where it matches more of the item
                if len(a):
                    m = int(found.contains(a).sum())
                    if m / len(a) > ratio:
                        total, matched, ratio = len(a), m, m / len(a)
            hit = matched > 0 and ratio > self.threshold
            out.append(ItemResult(it.benchmark, it.subset, it.id, total, matched, ratio, hit, not short))
        return out

    def summarize(self, results: Sequence[ItemResult]) -> list[BenchmarkResult]:
        by: dict[str, list[ItemResult]] = {}
        for r in results:
            by.setdefault(r.benchmark, []).append(r)
        out = []
        for bench, rs in by.items():
            checked = [r for r in rs if r.checked]
            bad = sum(r.contaminated for r in rs)
            subsets: dict[str, dict[str, int]] = {}
            for r in rs:
                s = subsets.setdefault(r.subset, {"items": 0, "checked": 0, "contaminated": 0})
                s["items"] += 1
                s["checked"] += r.checked
                s["contaminated"] += r.contaminated
            out.append(BenchmarkResult(
                bench, len(rs), len(checked), bad, bad / len(checked) if checked else 0.0,
                float(np.mean([r.ratio for r in checked])) if checked else 0.0,
                self.boilerplate.get(bench, 0), subsets))
        return out


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MiB (``resource.getrusage``)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def check(items: Sequence[Item], texts: Iterable[str], *, n: int = N, max_shared: int = 1,
          threshold: float = 0.0, spacing_variants: bool = True,
          ) -> tuple[list[ItemResult], list[BenchmarkResult], dict[str, Any]]:
    """Items against a corpus in one pass: per-item results, per-benchmark results, and the scan's figures."""
    t0 = time.perf_counter()
    det = Detector(items, n=n, max_shared=max_shared, threshold=threshold, spacing_variants=spacing_variants)
    t1 = time.perf_counter()
    found = det.scan(texts)
    t2 = time.perf_counter()
    results = det.results(found)
    stats = {"n": n, "max_shared": max_shared, "threshold": threshold, "items": len(items),
             "item_ngrams": int(len(det.keys)), "corpus_chars": found.chars, "corpus_ngrams": found.total,
             "matched_ngrams": len(found), "seconds_items": round(t1 - t0, 3), "seconds_corpus": round(t2 - t1, 3),
             "peak_rss_mb": round(peak_rss_mb(), 1)}
    return results, det.summarize(results), stats
