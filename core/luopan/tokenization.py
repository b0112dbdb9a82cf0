"""Tokenization rules shared by backend plugins, so that every backend scores the same tokens.

Nothing here imports a model library: the functions take the tokenizer's own ``encode`` callables.

* :func:`split_pair` is lm-eval's context/continuation split, the one ``luopan_hf.likelihood.encode_pair``
  applies: trailing whitespace of the context moves to the continuation; ``whole = encode(context +
  continuation)``, ``ctx = encode(context)``, the continuation is ``whole[len(ctx):]``; where a token merges
  across the boundary (``whole`` does not start with ``ctx``) the continuation is tokenized on its own after the
  exact context tokens; an empty context is replaced by one prefix token (BOS, else EOS).
* :func:`bos_rule` is the BOS rule every backend applies (the hf backend's, lm-eval's): special tokens follow
  ``add_bos_token`` when set, else the tokenizer's default, and a text that already starts with the BOS string
  gets no second one. :func:`hf_encode` applies it with a Hugging Face tokenizer (``LoadedModel.tok_encode``,
  the vllm and lmdeploy backends); the llamacpp backend with llama.cpp's tokenizer.
* :func:`hf_chat_prompt` renders a chat with a Hugging Face tokenizer's template exactly as the hf backend does
  (the vllm, lmdeploy backends and the needle dataset's token counts use it too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Encode", "bos_rule", "common_prefix_length", "hf_chat_prompt", "hf_encode", "hf_prefix_token_id",
           "split_pair"]

Encode = Callable[[str], list[int]]


def split_pair(
    context: str,
    continuation: str,
    *,
    encode: Encode,
    encode_plain: Encode,
    prefix_token_id: int,
) -> tuple[list[int], list[int]]:
    """``(context tokens, continuation tokens)`` for scoring ``continuation`` after ``context``.

    ``encode`` tokenizes plain text as a prompt (BOS by the model's rule); ``encode_plain`` without any special
    token added; ``prefix_token_id`` conditions a continuation whose context is empty."""
    if context == "":
        cont = encode(continuation)
        if cont and cont[0] == prefix_token_id:
            return cont[:1], cont[1:]
        return [prefix_token_id], cont
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
        if context == "":
            return split_pair("", continuation, encode=encode, encode_plain=encode_plain,
                              prefix_token_id=prefix_token_id)
    whole = encode(context + continuation)
    ctx = encode(context)
    if whole[: len(ctx)] == ctx:
        return ctx, whole[len(ctx) :]
    return ctx, encode_plain(continuation)


def bos_rule(text: str, bos: str | None, add_bos_token: bool | None) -> bool | None:
    """Whether a backend adds special tokens (BOS) when it encodes ``text``: False when ``text`` already starts
    with the BOS string ``bos`` (never a second one), else ``add_bos_token``; None means the tokenizer's own
    default. Every backend encodes prompts by this rule (the hf backend's, lm-eval's)."""
    if bos and text.startswith(bos):
        return False
    return add_bos_token


def hf_encode(tokenizer: Any, text: str, add_bos_token: bool | None = None) -> list[int]:
    """Token ids of ``text`` by a Hugging Face tokenizer, with the hf backend's BOS rule (:func:`bos_rule`)."""
    add = bos_rule(text, getattr(tokenizer, "bos_token", None), add_bos_token)
    if add is None:
        return list(tokenizer.encode(text))
    return list(tokenizer.encode(text, add_special_tokens=add))


def hf_prefix_token_id(tokenizer: Any) -> int:
    """BOS, else EOS: what an empty context is replaced by."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return int(bos if bos is not None else tokenizer.eos_token_id)


def hf_chat_prompt(tokenizer: Any, messages: Sequence[dict[str, str]], chat_template: str | None = None) -> str:
    """The chat prompt text exactly as the hf backend renders it (``apply_chat_template`` with the generation
    prompt, ``chat_template`` replacing the tokenizer's own when given)."""
    kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": False}
    if chat_template is not None:
        kwargs["chat_template"] = chat_template
    return tokenizer.apply_chat_template(list(messages), **kwargs)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share (the KV cache a backend can keep between two prompts)."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
