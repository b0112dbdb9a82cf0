"""Text helpers: sentence boundaries, line unwrapping, OpenCC conversion and the answer normaliser.

Sentence boundaries are the positions right after a sentence's final punctuation (English ``. ! ?`` followed by
whitespace, Chinese ``。！？`` anywhere), closing quotes and brackets included, and *before* the whitespace that
follows: byte-level BPE and SentencePiece tokenizers attach a space to the word after it, so cutting there keeps
the token count of the pieces equal to the count of the whole.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from luopan.deps import require

_CLOSERS = "\"'”’)）]」』》〉】"
SENTENCE_END = re.compile(
    rf"(?:[.!?]+[{re.escape(_CLOSERS)}]*(?=\s|$))|(?:[。！？]+[!?{re.escape(_CLOSERS)}]*)"
)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
#: a word character that is not a CJK ideograph: what may not touch a non-Chinese key phrase
_WORDISH = r"[^\W_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"

#: OpenCC conversions accepted by ``convert_haystack`` and ``convert_needles``
OPENCC_CONFIGS = ("s2t", "t2s", "s2tw", "tw2s", "s2hk", "hk2s", "s2twp", "tw2sp", "t2tw", "tw2t", "t2hk", "hk2t",
                  "t2jp", "jp2t")


def sentence_ends(text: str) -> list[int]:
    """Character positions right after each sentence's final punctuation, in order."""
    return [m.end() for m in SENTENCE_END.finditer(text)]


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def cjk_ratio(text: str) -> float:
    sample = text[:20000]
    letters = sum(1 for c in sample if c.isalpha())
    return len(_CJK.findall(sample)) / letters if letters else 0.0


def unwrap_lines(text: str) -> str:
    """Join hard-wrapped lines inside paragraphs (Chinese e-texts wrap every ~40 characters).

    A single newline between two non-blank lines is removed unless the next line is indented (verse, a new
    paragraph marked by an ideographic space); blank lines (paragraph breaks) stay."""
    return re.sub(r"(?<=[^\n])\n(?=[^\n\u3000 \t])", "", text)


@lru_cache(maxsize=8)
def _converter(config: str) -> Any:
    opencc = require("opencc", extra="needle", component="needle (Chinese script conversion)")
    return opencc.OpenCC(config)


def convert(text: str, config: str | None) -> str:
    """``text`` converted with OpenCC ``config`` (``t2s``: traditional to simplified, ``s2t`` back, ...)."""
    if not config or not text:
        return text
    return _converter(config).convert(text)


def normalise(text: str, *, fold_chinese: bool = True) -> str:
    """Lower case, full-width to half-width (NFKC), punctuation to spaces, runs of spaces collapsed; with
    ``fold_chinese`` traditional characters become simplified (OpenCC ``t2s``), so either script matches."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if fold_chinese and has_cjk(text):
        text = convert(text, "t2s")
    return " ".join(_NON_WORD.sub(" ", text).split())


def contains_key(output: str, key: str, *, fold_chinese: bool = True) -> bool:
    """Whether the normalised ``output`` contains the normalised key phrase ``key``.

    Phrases with Chinese characters match as substrings with spaces ignored (Chinese has no spaces between
    words); others match as whole words, so ``1987`` does not match ``19870`` and ``art`` not ``start`` (a
    Chinese character next to them is a word boundary: ``生于1998年`` contains ``1998``)."""
    k = normalise(key, fold_chinese=fold_chinese)
    if not k:
        return False
    out = normalise(output, fold_chinese=fold_chinese)
    if has_cjk(k):
        return k.replace(" ", "") in out.replace(" ", "")
    return re.search(rf"(?<!{_WORDISH}){re.escape(k)}(?!{_WORDISH})", out) is not None
