"""A tokenizer-free token estimate, for rate limits and dry-run costs before any request is sent.

About four characters of English per token and about one token per CJK character (and per other
non-ASCII character) for the tokenizers of the common API models; a dry run labels the result "~".
"""

from __future__ import annotations


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    ascii_chars = sum(1 for ch in text if ord(ch) < 128) if not text.isascii() else len(text)
    return (ascii_chars + 3) // 4 + (len(text) - ascii_chars)
