"""Asking a judge and reading its verdicts, with retries: shared by the ``pairwise``, ``single_grade`` and
``cascade`` evaluators.

Every judge request goes through the kernel (``EvalContext.judge_generate``), so it is cached and a rerun asks
nothing already answered. A reply without a readable verdict is retried ``retries`` times as a follow-up turn (the
judge's reply, then a reminder of the format): a *different* request, so a deterministic judge can answer
differently, and itself cached, so a rerun reproduces the same outcome without calling the judge. After the last
retry the verdict is recorded as failed, with the judge's last reply; it is never scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from luopan.components import EvalContext
from luopan.errors import ConfigError
from luopan.types import FailedResult

REMINDERS = {
    "pair": "Your reply did not state a verdict. Reply with only the verdict: [[A]] if assistant A is better, "
            "[[B]] if assistant B is better, [[C]] for a tie.",
    "single": "Your reply did not state a rating. Reply with only the rating from 1 to 10, in this format: "
              "Rating: [[5]]",
    "correct": "Your reply did not give a verdict in the required format. Reply with only [[CORRECT]] or "
               "[[INCORRECT]].",
    # after a brief prompt (small judges): as plain as the prompt
    "pair-brief": "Reply with one letter only: A, B, or C.",
    "single-brief": "Reply with one number from 1 to 10 only.",
}


@dataclass
class Judgment:
    """The outcome of one judge question: ``verdict`` (parsed) or ``error`` (failed), and every reply."""

    verdict: Any = None
    replies: list[str] = field(default_factory=list)
    error: str | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.verdict is not None

    def record(self, max_chars: int = 4000) -> dict[str, Any]:
        out: dict[str, Any] = {"verdict": self.verdict, "attempts": self.attempts,
                               "reply": self.replies[-1][:max_chars] if self.replies else None}
        if self.error:
            out["error"] = self.error
        return out


def need_judge(ctx: EvalContext, evaluator: str) -> None:
    if ctx.judge_generate is None or not ctx.judges:
        raise ConfigError(f"{evaluator}: dataset '{ctx.dataset}' has no judge: add a judge model to models: with "
                          f"role: judge (or name one with the dataset's judge:)")


def ask(ctx: EvalContext, conversations: Sequence[list[tuple[str, str]]], parse: Callable[[str], Any], *,
        kind: str, judge: str | None = None, retries: int = 2) -> list[Judgment]:
    """Ask ``judge`` every conversation at once (one batch per round), retrying unreadable replies."""
    assert ctx.judge_generate is not None
    results = [Judgment() for _ in conversations]
    pending = {i: list(c) for i, c in enumerate(conversations)}
    for attempt in range(retries + 1):
        if not pending:
            break
        idx = list(pending)
        outs = ctx.judge_generate([pending[i] for i in idx], judge=judge)
        nxt: dict[int, list[tuple[str, str]]] = {}
        for i, out in zip(idx, outs):
            j = results[i]
            j.attempts = attempt + 1
            if isinstance(out, FailedResult):
                j.error = f"judge request failed: {out.error}"
                continue
            j.replies.append(out.text)
            verdict = parse(out.text)
            if verdict is not None:
                j.verdict = verdict
                continue
            if attempt < retries:
                nxt[i] = pending[i] + [("assistant", out.text), ("user", REMINDERS[kind])]
            else:
                j.error = f"no verdict after {attempt + 1} replies"
        pending = nxt
    return results


def clip(text: str, max_chars: int | None) -> str:
    """An answer shortened for a judge with a small context (the cut is marked, never silent)."""
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n[... {len(text) - max_chars} more characters cut for the judge]"
