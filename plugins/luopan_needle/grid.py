"""The needle grid: a haystack tokenized once, and every (task, length, depth, repeat) prompt cut out of it.

A :class:`Haystack` keeps one growing text (the source text, repeated after a blank line when a length needs more
than it holds) and, for its tokenized part, the character offset where each token starts and the token indices of
the sentence boundaries. A prompt is then a few slices of that text: no cell is tokenized again, except the few
whose length comes within a small margin of the context window, which are counted exactly before being kept.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from luopan_needle.text import sentence_ends
from luopan_needle.tokenizer import NeedleTokenizer

JOINER = "\n\n"


@dataclass(frozen=True)
class Task:
    """Needles hidden together, one question, and the key phrases that score the answer.

    ``answers`` holds one group per fact to find; a group is found when any of its phrases is in the answer. The
    score is the fraction of groups found (single: one group; multi: one per needle; reasoning: the combined
    answer)."""

    name: str
    kind: str
    needles: tuple[str, ...]
    question: str
    answers: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Cell:
    task: str
    length: int
    depth: float
    repeat: int


@dataclass
class Prompt:
    """One built cell: its text, or why it was skipped."""

    cell: Cell
    text: str = ""
    #: tokens of the user text (template, question, needles and haystack), counted piecewise
    tokens: int = 0
    #: tokens the whole request needs: ``tokens`` plus template overhead plus the answer budget
    required: int = 0
    #: where each needle went, as a percentage of the haystack part (after snapping to a sentence boundary)
    needle_depths: list[float] = field(default_factory=list)
    #: character offset of each needle in ``text``
    needle_offsets: list[int] = field(default_factory=list)
    skipped: str | None = None
    exact: bool = False

    def meta(self) -> dict[str, Any]:
        return {"task": self.cell.task, "length": self.cell.length, "depth": self.cell.depth,
                "repeat": self.cell.repeat, "tokens": self.tokens, "required_tokens": self.required,
                "needle_depths": [round(d, 2) for d in self.needle_depths]}


class Haystack:
    """A text tokenized once, in chunks, as far as the longest cell needs."""

    def __init__(self, text: str, tokenizer: NeedleTokenizer, *, chunk_chars: int = 200_000) -> None:
        if not text.strip():
            raise ValueError("the haystack is empty")
        self.base = text.strip()
        self.tok = tokenizer
        self.chunk_chars = chunk_chars
        self.text = ""  # the tokenized text so far (copies of base after the first are joined by JOINER)
        self._starts: list[np.ndarray] = []
        self._bounds: list[np.ndarray] = []
        self._pos = 0  # characters of the first copy tokenized so far
        self._first: tuple[np.ndarray, np.ndarray, int] | None = None  # the whole text: starts, bounds, tokens
        self._copy: tuple[np.ndarray, np.ndarray, int] | None = None  # a further copy, joiner first
        self.n = 0
        self.starts = np.zeros(0, dtype=np.int64)
        self.bounds = np.zeros(1, dtype=np.int64)  # token indices where a sentence starts (0 included)
        self.tokenize_calls = 0

    # ------------------------------------------------------------ tokenization, once
    def ensure(self, n_tokens: int) -> None:
        """Tokenize until at least ``n_tokens`` tokens exist (repeating the text when it is shorter)."""
        grew = False
        while self.n < n_tokens:
            grew = True
            if self._pos < len(self.base):
                self._tokenize_chunk(n_tokens)
            else:
                self._append_copy()
        if grew:
            self.starts = np.concatenate(self._starts)
            self._starts = [self.starts]
            self.bounds = np.unique(np.concatenate([np.zeros(1, dtype=np.int64), *self._bounds]))
            self._bounds = [self.bounds]

    def _tokenize_chunk(self, n_tokens: int) -> None:
        if self.n:  # characters per token so far: read about as much more as the missing tokens need
            want = max(int((n_tokens - self.n) * self._pos / self.n * 1.1) + 2000, self.chunk_chars)
        else:  # a first chunk to learn the ratio (a Chinese character can be two tokens, English four)
            want = self.chunk_chars // 4
        end = min(len(self.base), self._pos + want)
        if end < len(self.base):  # cut at a sentence end, where token counts add up
            ends = sentence_ends(self.base[end : end + 20000])
            end = end + ends[0] if ends else len(self.base)
        piece = self.base[self._pos : end]
        self._add(piece, self.tok.starts(piece), self._pos)
        self._pos = end
        if end >= len(self.base):  # the whole text is tokenized: keep it for the copies
            self._first = (np.concatenate(self._starts),
                           np.unique(np.concatenate([np.zeros(1, dtype=np.int64), *self._bounds])), self.n)

    def _add(self, piece: str, starts: np.ndarray, char_offset: int) -> None:
        self.tokenize_calls += 1
        base_tok = self.n
        self.text += piece
        self._starts.append(starts + char_offset)
        ends = np.asarray(sentence_ends(piece), dtype=np.int64)
        if len(ends) and len(starts):
            idx = np.searchsorted(starts, ends, side="left")  # the token starting at (or after) each end
            self._bounds.append(idx + base_tok)  # len(starts): the chunk ends a sentence
        self.n += len(starts)

    def _append_copy(self) -> None:
        """Another copy of the whole text after a blank line: the first copy's tokens, shifted (the joiner is
        tokenized on its own; the copy starts a sentence)."""
        if self._copy is None:
            assert self._first is not None
            first_starts, first_bounds, n_first = self._first
            j = self.tok.starts(JOINER)
            self._copy = (np.concatenate([j, first_starts + len(JOINER)]),
                          np.concatenate([first_bounds + len(j), np.asarray([0, len(j)], dtype=np.int64)]),
                          n_first + len(j))
        starts, bounds, n = self._copy
        offset = len(self.text)
        self.text += JOINER + self.base
        self._starts.append(starts + offset)
        self._bounds.append(bounds + self.n)
        self.n += n

    # ------------------------------------------------------------ positions
    def char(self, i: int) -> int:
        """Character offset of token ``i`` (``n`` is the end of the tokenized text)."""
        return int(self.starts[i]) if i < self.n else len(self.text)

    def boundary_at_or_after(self, i: int) -> int:
        k = int(np.searchsorted(self.bounds, i, side="left"))
        return int(self.bounds[k]) if k < len(self.bounds) else self.n

    def boundary_at_or_before(self, i: int) -> int:
        k = int(np.searchsorted(self.bounds, i, side="right")) - 1
        return int(self.bounds[k]) if k >= 0 else 0

    def nearest_boundary(self, target: float, lo: int, hi: int) -> int:
        """The insertion point nearest ``target`` among the sentence boundaries in [lo, hi] and lo and hi
        themselves (the start and the end of the haystack part)."""
        a = int(np.searchsorted(self.bounds, lo, side="right"))
        b = int(np.searchsorted(self.bounds, hi, side="left"))
        cands = [lo, *self.bounds[a:b].tolist(), hi]
        k = bisect_left(cands, target)
        return min(cands[max(0, k - 1) : k + 1], key=lambda c: (abs(c - target), c))


class PromptBuilder:
    """Cuts every cell's prompt out of one :class:`Haystack`.

    ``templates[task]`` is ``(head, tail)``: the text before and after the document (the question in one of
    them). Lengths count the user text: template, question, needles and haystack. A cell is skipped when that
    plus ``overhead`` (chat template) plus ``answer_tokens`` exceeds ``window``; near the limit the prompt is
    tokenized whole to decide exactly, so no kept prompt is ever longer than the window allows.
    """

    def __init__(self, haystack: Haystack, tasks: Sequence[Task], templates: dict[str, tuple[str, str]], *,
                 separator: str, window: int | None, overhead: int, answer_tokens: int, seed: int = 0) -> None:
        self.hay = haystack
        self.tok = haystack.tok
        self.tasks = {t.name: t for t in tasks}
        self.templates = templates
        self.sep = separator
        self.window = window
        self.overhead = overhead
        self.answer_tokens = answer_tokens
        self.seed = seed
        self._fixed: dict[str, tuple[int, list[str], list[int], int]] = {}
        self._starts: dict[int, list[int]] = {}
        for t in tasks:
            head, tail = templates[t.name]
            needles = [self.sep + n.strip() for n in t.needles]
            counts = self.tok.count_many([head, tail, *needles])
            self._fixed[t.name] = (counts[0] + counts[1], needles, counts[2:], counts[0])

    def start_of(self, length: int, repeat: int) -> int:
        """Where the haystack part of every cell of (length, repeat) starts: a sentence start within the first
        ``length`` tokens of the text, the same for every depth and task (so a row compares like with like).
        Repeats take the sentence starts in a seeded shuffled order, so they differ while there are enough."""
        hay = self.hay
        hay.ensure(2 * length + 1)
        order = self._starts.get(length)
        if order is None:
            k = int(np.searchsorted(hay.bounds, length, side="left"))
            order = hay.bounds[: max(1, k)].tolist()
            random.Random(f"{self.seed}:{length}").shuffle(order)
            self._starts[length] = order
        i = order[repeat % len(order)]
        while i < hay.n and hay.text[hay.char(i) : hay.char(i + 1)].isspace():  # start at the sentence's first word
            i += 1
        return i

    def needed_tokens(self, lengths: Sequence[int]) -> int:
        return 2 * max(lengths) + 1 if lengths else 0

    def build(self, cell: Cell) -> Prompt:
        fixed, needles, needle_counts, _ = self._fixed[cell.task]
        out = Prompt(cell)
        filler = cell.length - fixed - sum(needle_counts)
        if filler < 1:
            out.skipped = f"too short: template, question and needles take {fixed + sum(needle_counts)} tokens"
            out.tokens = fixed + sum(needle_counts)
            return out
        hay = self.hay
        start = self.start_of(cell.length, cell.repeat)
        hay.ensure(start + filler + 1)
        end = hay.boundary_at_or_before(start + filler)
        if end <= start:  # one sentence longer than the whole filler: cut inside it, at a token
            end = start + filler
        k = len(needles)
        span = end - start
        depths = [cell.depth + i * (100.0 - cell.depth) / k for i in range(k)]
        points = [hay.nearest_boundary(start + d / 100.0 * span, start, end) for d in depths]
        head, tail = self.templates[cell.task]
        parts = [head]
        offsets = []
        prev = start
        length_so_far = len(head)
        for i, (p, needle) in enumerate(zip(points, needles)):
            chunk = hay.text[hay.char(prev) : hay.char(p)]
            if i == 0 and not chunk:  # the document starts with the needle
                needle = needle.lstrip()
            parts.append(chunk)
            length_so_far += len(chunk)
            offsets.append(length_so_far + (len(needle) - len(needle.lstrip())))
            parts.append(needle)
            length_so_far += len(needle)
            prev = p
        last = hay.text[hay.char(prev) : hay.char(end)]
        parts += [last, tail]
        out.text = "".join(parts)
        out.needle_offsets = offsets
        out.needle_depths = [100.0 * (p - start) / span if span else 0.0 for p in points]
        out.tokens = fixed + sum(needle_counts) + span
        out.required = out.tokens + self.overhead + self.answer_tokens
        if self.window is not None and out.required > self.window - self.slack(k):
            out.tokens = self.tok.count(out.text)  # close to the limit: count exactly
            out.required = out.tokens + self.overhead + self.answer_tokens
            out.exact = True
            if out.required > self.window:
                out.skipped = f"needs {out.required} tokens > context window {self.window}"
        return out

    @staticmethod
    def slack(n_needles: int) -> int:
        """Tokens by which piecewise counting may differ from counting the whole prompt (one or two per seam)."""
        return 16 + 4 * n_needles
