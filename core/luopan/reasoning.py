"""A reasoning model's thinking, kept apart from its answer: one rule per model, applied by the kernel.

A reasoning model writes its thoughts before its answer (``<think>...</think> The answer is 4.``). What is
scored is the answer: the text after the *last* end marker (newlines right after it dropped, as reasoning
models' chat templates do). A model entry's ``reasoning:`` sets the rule:

* absent (the default): end ``</think>``, start ``<think>``. A model that never writes the markers is
  unaffected.
* ``{end: ..., start: ..., opened: ...}``: other markers; ``start: null`` for a model with no start marker;
  ``opened: true`` for a model whose chat template opens the thinking in the prompt (its output begins inside
  it, with no start marker: DeepSeek-R1's distilled models).
* ``none`` or ``false``: off; evaluators see the whole output.

Thinking that never finished (the output holds the start marker and no end marker after it, or, with
``opened: true``, no end marker at all; typically the token budget ran out mid-thought) gives an empty answer:
the model did not answer, and its thoughts are not scored as if they were one.

The kernel applies the rule after a generation is answered (or read from the cache) and before any evaluator,
judge or later turn sees it: the evaluated model's outputs, a compared model's (``peer_outputs``), each turn of
a conversation (the history sent back for the next turn holds the answers without thoughts, as reasoning
models' chat templates do), and a judge model's own replies, with the judge's rule, before its verdict is read.
The prediction files keep the raw text (``output``) and add ``answer`` where the rule changed it. The cache
keeps raw generations, so changing the rule reuses them; the rule is part of a result's provenance and of its
comparability hash (generation only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from luopan.types import ConversationResult, GenerationResult

__all__ = ["ReasoningSpec", "ReasoningRule", "spec_value", "rule_of", "answer_of", "answers_of", "DEFAULT_START",
           "DEFAULT_END"]

DEFAULT_START = "<think>"
DEFAULT_END = "</think>"


class ReasoningSpec(BaseModel):
    """A model entry's ``reasoning:`` mapping."""

    model_config = ConfigDict(extra="forbid")

    #: where the thinking ends: the answer is the text after its last occurrence
    end: str = Field(default=DEFAULT_END, min_length=1)
    #: where the thinking starts (null: the model writes none); with it and no end marker after it, the
    #: thinking never finished
    start: str | None = Field(default=DEFAULT_START, min_length=1)
    #: the prompt (the chat template) opened the thinking: an output without the end marker never finished it
    opened: bool = False


def spec_value(value: Any) -> Any:
    """``reasoning:`` as written, before validation: ``none``/``false``/null turn the rule off (None), ``true``
    is the default rule; a mapping is validated by :class:`ReasoningSpec`. Anything else is a one-line error."""
    if isinstance(value, str) and value.strip().lower() in ("none", "off"):
        return None
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if isinstance(value, (dict, ReasoningSpec)):
        return value
    raise ValueError("must be a mapping (end, start, opened), true for the default rule, or none/false to turn "
                     "it off")


@dataclass(frozen=True, slots=True)
class ReasoningRule:
    """Where a model's thinking starts and ends; :meth:`answer` is what remains to be scored."""

    end: str = DEFAULT_END
    start: str | None = DEFAULT_START
    opened: bool = False

    @classmethod
    def of(cls, spec: Mapping[str, Any] | None) -> ReasoningRule | None:
        """The rule of a resolved model's ``reasoning`` (None: off)."""
        if spec is None:
            return None
        return cls(str(spec.get("end", DEFAULT_END)), spec.get("start", DEFAULT_START), bool(spec.get("opened")))

    def to_dict(self) -> dict[str, Any]:
        return {"end": self.end, "start": self.start, "opened": self.opened}

    def answer(self, text: str) -> str:
        """``text`` without its thinking: after the last end marker; "" when the thinking never finished."""
        cut = text.rfind(self.end)
        if cut < 0:
            unfinished = self.opened or (self.start is not None and self.start in text)
            return "" if unfinished else text
        rest = text[cut + len(self.end):]
        if self.start is not None and self.start in rest:  # thinking opened again and not closed
            return ""
        return rest.lstrip("\r\n")


def rule_of(model: Any) -> ReasoningRule | None:
    """The rule of a resolved model (anything with a ``reasoning`` attribute; none: off)."""
    return ReasoningRule.of(getattr(model, "reasoning", None))


def answer_of(result: Any, rule: ReasoningRule | None) -> Any:
    """One generation result with its text replaced by the answer (token counts and finish reason kept); a
    conversation turn by turn. The same object when nothing changes; anything else (a failure, a likelihood)
    unchanged."""
    if rule is None:
        return result
    if isinstance(result, ConversationResult):
        turns = [answer_of(t, rule) for t in result.turns]
        return result if all(a is b for a, b in zip(turns, result.turns)) else ConversationResult(turns)
    if isinstance(result, GenerationResult):
        text = rule.answer(result.text)
        if text == result.text:
            return result
        return GenerationResult(text, result.prompt_tokens, result.completion_tokens, result.finish_reason)
    return result


def answers_of(results: Sequence[Any], rule: ReasoningRule | None) -> list[Any]:
    """:func:`answer_of` over a list of results."""
    return list(results) if rule is None else [answer_of(r, rule) for r in results]
