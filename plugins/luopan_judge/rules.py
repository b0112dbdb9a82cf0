"""Rule-based checks of an answer against a reference, the first stage of a cascade (the judge decides the rest).

``final_number``: the last number of the answer equals the last number of the reference (``$1,000`` = ``1000``,
``18.0`` = ``18``); a reference without a number cannot be decided (``None``). Any registered evaluator of
generated text (``exact_match``, ``number_match``, ...) can be the rule too: its score 1.0 means correct.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from luopan.components import EvalContext
from luopan.errors import ConfigError

_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?")




class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: str = Field(default="final_number", description="final_number, or a registered evaluator's name")
    params: dict[str, Any] = Field(default_factory=dict, description="the evaluator's options")


def final_number(text: str) -> str | None:
    """The last number in ``text``, normalised (a fraction ``3/4`` kept as such)."""
    import unicodedata

    found = _NUMBER.findall(unicodedata.normalize("NFKC", text).replace("\u2212", "-"))
    if not found:
        return None
    raw = found[-1].replace("$", "").replace(",", "").replace(" ", "")
    if "/" in raw:
        return raw
    try:
        d = Decimal(raw)
    except InvalidOperation:
        return raw
    return str(int(d)) if d == d.to_integral_value() else format(d.normalize(), "f")


def rule_correct(spec: RuleSpec, answer: str, reference: str, ctx: EvalContext | None = None) -> bool | None:
    """Whether ``answer`` matches ``reference`` by the rule; ``None`` when the rule cannot tell. A rule that is
    a registered evaluator is built from the run's own components (``ctx.components``)."""
    if spec.rule == "final_number":
        gold = final_number(reference)
        if gold is None:
            return None
        return final_number(answer) == gold
    if ctx is None or ctx.components is None:
        raise ConfigError(f"cascade rule '{spec.rule}': an evaluator rule needs the run's components")
    from luopan.types import GenerationResult, Sample

    evaluator = ctx.components.evaluator(spec.rule, spec.params)  # built once per run and options
    s = Sample("rule", "rule", "", reference)
    scored = evaluator.score([s], [GenerationResult(answer)], EvalContext("generate", "", "",
                                                                          components=ctx.components))
    return scored[0].score == 1.0
