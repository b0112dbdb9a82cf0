"""13-gram overlap between benchmark items and a corpus, by hashing.

Normalisation follows lm-eval's decontamination (``lm_eval.decontamination.janitor``): ASCII letters lowercased,
ASCII punctuation (``string.punctuation``) deleted, words split on whitespace, 13 consecutive words form an
n-gram. On ASCII text the n-grams are exactly lm-eval's. Text that is not ASCII is first put in Unicode NFKC
form (full-width letters, digits and punctuation become their plain forms), lowercased with ``str.lower`` and
stripped of every Unicode punctuation character as well. Chinese, Japanese and other scripts written without
spaces: each CJK ideograph or kana is a token of its own (``罗盘很好`` is four tokens), so a CJK 13-gram is 13
consecutive characters (about six to nine words), while Latin words and numbers inside CJK text stay whole.

Every token is hashed to 64 bits (blake2b), and an n-gram's hash is a polynomial of its tokens' hashes modulo
2**64, mixed by splitmix64's finaliser: computed for a whole block of text at once with numpy. Two different
n-grams share a hash with probability about 2**-64: with ten million item n-grams and a billion corpus n-grams,
about one chance in two thousand of a single false match overall.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["N", "normalize", "tokens", "token_hashes", "ngram_hashes", "text_ngram_hashes", "NgramSet"]

#: lm-eval's n-gram size
N = 13

_ASCII_TABLE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)
_UNICODE_TABLE: dict[int, str | None] | None = None
#: CJK ideographs (unified, extension A, compatibility) and kana, in the basic plane: a token each
_CJK_RANGES = ((0x3040, 0x30FF), (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
#: CJK ideographs beyond the basic plane (extensions B and later)
_CJK_ASTRAL = re.compile("[\U00020000-\U0003134f]")

_P = np.uint64(0x100000001B3)  # the polynomial's base (odd)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _unicode_table() -> dict[int, str | None]:
    """One ``str.translate`` table for text that is not ASCII: punctuation deleted, CJK characters spaced out."""
    global _UNICODE_TABLE
    if _UNICODE_TABLE is None:
        table: dict[int, str | None] = {ord(c): None for c in string.punctuation}
        for cp in range(0x80, 0x10000):
            if unicodedata.category(chr(cp)).startswith("P"):
                table[cp] = None
        for lo, hi in _CJK_RANGES:
            for cp in range(lo, hi + 1):
                if table.get(cp, "") is not None:  # a CJK punctuation mark stays deleted
                    table[cp] = f" {chr(cp)} "
        _UNICODE_TABLE = table
    return _UNICODE_TABLE


def normalize(text: str) -> str:
    """lm-eval's ``Janitor.normalize_string`` on ASCII text; NFKC, lowercase, all punctuation deleted and CJK
    characters set apart by spaces on any other text."""
    if text.isascii():
        return text.translate(_ASCII_TABLE)
    text = unicodedata.normalize("NFKC", text).lower().translate(_unicode_table())
    if _CJK_ASTRAL.search(text):
        text = _CJK_ASTRAL.sub(r" \g<0> ", text)
    return text


def tokens(text: str) -> list[str]:
    """The words (and CJK characters) n-grams are made of."""
    return normalize(text).split()


class _TokenHashes(dict):  # type: ignore[type-arg]
    """token -> 64-bit hash, computed on first sight (a bounded memo: cleared when it grows large)."""

    limit = 4_000_000

    def __missing__(self, token: str) -> int:
        if len(self) >= self.limit:
            self.clear()
        h = int.from_bytes(hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                           "little")
        self[token] = h
        return h


_TOKENS = _TokenHashes()


def token_hashes(words: Sequence[str]) -> np.ndarray:
    """The 64-bit hashes of ``words`` (uint64 array)."""
    return np.fromiter(map(_TOKENS.__getitem__, words), dtype=np.uint64, count=len(words))


def ngram_hashes(hashes: np.ndarray, n: int = N) -> np.ndarray:
    """The hash of every run of ``n`` consecutive tokens, from the tokens' hashes (uint64; empty when shorter)."""
    m = len(hashes) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    acc = hashes[:m].copy()
    for i in range(1, n):
        acc *= _P
        acc += hashes[i : i + m]
    acc ^= acc >> np.uint64(30)
    acc *= _M1
    acc ^= acc >> np.uint64(27)
    acc *= _M2
    acc ^= acc >> np.uint64(31)
    return acc


def text_ngram_hashes(text: str, n: int = N) -> np.ndarray:
    """The distinct n-gram hashes of one text (sorted uint64)."""
    return np.unique(ngram_hashes(token_hashes(tokens(text)), n))


def stream_ngram_hashes(texts: Iterable[str], n: int = N, block_chars: int = 8 << 20) -> Iterator[np.ndarray]:
    """The n-gram hashes of a stream of texts read as one run of words, one array per block of about
    ``block_chars`` characters (n-grams across block boundaries included: the last ``n - 1`` tokens carry
    over)."""
    carry = np.empty(0, dtype=np.uint64)
    parts: list[str] = []
    size = 0

    def flush() -> np.ndarray:
        nonlocal carry
        text = " ".join(parts)
        parts.clear()
        h = np.concatenate([carry, token_hashes(tokens(text))])
        carry = h[-(n - 1):] if n > 1 else h[:0]
        return ngram_hashes(h, n)

    for t in texts:
        parts.append(t)
        size += len(t)
        if size >= block_chars:
            size = 0
            yield flush()
    if parts:
        yield flush()


def member(sorted_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Boolean mask: which ``values`` are in ``sorted_keys`` (a sorted uint64 array)."""
    if len(sorted_keys) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    idx = np.searchsorted(sorted_keys, values)
    idx[idx == len(sorted_keys)] = 0
    return sorted_keys[idx] == values


class NgramSet:
    """A set of n-gram hashes built in one streaming pass with bounded memory: a sorted, de-duplicated uint64
    array (8 bytes per distinct n-gram), merged from per-block arrays as they come.

    With ``keep`` (a sorted uint64 array: the items' n-grams) only those hashes are kept, so memory does not grow
    with the corpus at all: this is how the checks run. Without it, every distinct corpus n-gram is kept (a
    reusable index of the corpus, :meth:`save` / :meth:`load`, 8 bytes per distinct n-gram)."""

    def __init__(self, keys: np.ndarray | None = None, *, n: int = N) -> None:
        self.n = n
        self.keys = np.empty(0, dtype=np.uint64) if keys is None else np.asarray(keys, dtype=np.uint64)
        self.total = 0  # n-grams read (with repeats)
        self.chars = 0

    @classmethod
    def build(cls, texts: Iterable[str], *, keep: np.ndarray | None = None, n: int = N,
              merge_every: int = 16_000_000) -> NgramSet:
        out = cls(n=n)
        pending: list[np.ndarray] = []
        pending_len = 0

        def counted(it: Iterable[str]) -> Iterator[str]:
            for t in it:
                out.chars += len(t)
                yield t

        for block in stream_ngram_hashes(counted(texts), n):
            out.total += len(block)
            if keep is not None:
                block = block[member(keep, block)]
            if len(block) == 0:
                continue
            block = np.unique(block)
            pending.append(block)
            pending_len += len(block)
            if pending_len >= merge_every:
                out.keys = np.unique(np.concatenate([out.keys, *pending]))
                pending, pending_len = [], 0
        if pending:
            out.keys = np.unique(np.concatenate([out.keys, *pending]))
        return out

    def __contains__(self, h: Any) -> bool:
        return bool(member(self.keys, np.asarray([h], dtype=np.uint64))[0])

    def __len__(self) -> int:
        return len(self.keys)

    def contains(self, values: np.ndarray) -> np.ndarray:
        return member(self.keys, values)

    def save(self, path: Any) -> None:
        np.save(path, self.keys)

    @classmethod
    def load(cls, path: Any, *, n: int = N) -> NgramSet:
        return cls(np.load(path, mmap_mode="r"), n=n)

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes)
