"""Judge prompts: luopan's built-in ones, or a FastChat-style ``judge_prompts.jsonl`` (MT-Bench's own, read from
the data folder, never copied into this repository).

A prompt is chosen by its kind (``pair`` or ``single``), whether the question has a reference answer (FastChat's
``*-math-*`` prompts, used for math, reasoning and coding) and whether a later turn of a multi-turn conversation
is judged (``*-multi-turn``). Templates are ``str.format`` templates over FastChat's variables: ``question``,
``answer_a``, ``answer_b``, ``answer``, ``ref_answer_1``; for turn ``k`` of a conversation ``question_1`` ..
``question_k``, ``answer_a_1`` .., ``answer_b_1`` .., ``answer_1`` .., ``ref_answer_1`` ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from luopan.data import find_data, read_jsonl
from luopan.errors import ConfigError


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    system: str
    template: str


_PAIR_SYSTEM = (
    "You are an impartial judge. Compare the answers of two AI assistants, A and B, to the user's question{focus} "
    "and decide which is better{criteria}. Do not let the order of the answers, their length or the assistants' "
    "names influence you. Explain your reasoning in a few sentences, then end with your verdict in exactly this "
    "format: [[A]] if assistant A is better, [[B]] if assistant B is better, [[C]] for a tie."
)
_SINGLE_SYSTEM = (
    "You are an impartial judge. Rate the answer of an AI assistant to the user's question{focus}{criteria}. "
    "Explain your reasoning in a few sentences, then end with your rating from 1 (worst) to 10 (best) in exactly "
    "this format: Rating: [[5]]"
)
_GENERAL = " (helpfulness, relevance, accuracy, depth, creativity and level of detail)"
_WITH_REF = ": correctness matters most; compare with the reference answer and point out mistakes"


def _conv(who: str, k: int) -> str:
    suffix = "a_{i}" if who == "A" else ("b_{i}" if who == "B" else "{i}")
    parts = []
    for i in range(1, k + 1):
        parts.append(f"### User:\n{{question_{i}}}\n\n### Assistant{(' ' + who) if who else ''}:\n"
                     f"{{answer_{suffix.format(i=i)}}}")
    return "\n\n".join(parts)


def _ref_conv(k: int) -> str:
    return "\n\n".join(f"### User:\n{{question_{i}}}\n\n### Reference answer:\n{{ref_answer_{i}}}" for i in range(1, k + 1))


def _brief(kind: str, reference: bool, turn: int, name: str) -> JudgePrompt:
    """Plain text, one user message ending with the question: small models imitate bracketed layouts instead of
    answering them, but answer a plain "Which answer is better, A or B?" with a letter."""
    ref = ""
    if reference:
        ref = "Reference answer (correct):\n" + ("{ref_answer_1}" if turn == 1 else f"{{ref_answer_{turn}}}") + "\n\n"

    def conv(x: str) -> str:
        return "\n".join(f"User: {{question_{i}}}\nAssistant: {{answer_{x}{i}}}" for i in range(1, turn + 1))

    if kind == "pair":
        if turn == 1:
            body = "Question: {question}\n\n" + ref + "Answer A:\n{answer_a}\n\nAnswer B:\n{answer_b}\n\n"
            ask = "Which answer is better, A or B?"
        else:
            body = ref + f"Conversation A:\n{conv('a_')}\n\nConversation B:\n{conv('b_')}\n\n"
            ask = "Which assistant answered the last question better, A or B?"
        return JudgePrompt(name, "", body + ask + " Reply with one letter: A, B, or C if they are equally good.")
    if turn == 1:
        body = "Question: {question}\n\n" + ref + "Answer:\n{answer}\n\n"
        ask = "Rate the answer"
    else:
        body = ref + f"Conversation:\n{conv('')}\n\n"
        ask = "Rate the assistant's answer to the last question"
    return JudgePrompt(name, "", body + ask + " from 1 (worst) to 10 (best). Reply with one number.")


def builtin_prompt(kind: str, reference: bool, turn: int, *, brief: bool = False) -> JudgePrompt:
    """luopan's own judge prompt for ``kind`` (pair/single), with or without a reference, judging ``turn``.
    ``brief``: the verdict alone, no explanation and no system message: one plain user message ending with the
    question, for small or cheap judges (a few output tokens per call; small models follow it far better)."""
    focus = "" if turn == 1 else f" in a conversation (judge only the answers to the user's question number {turn})"
    criteria = _WITH_REF if reference else _GENERAL
    name = f"luopan-{'brief-' if brief else ''}{kind}{'-ref' if reference else ''}{'' if turn == 1 else '-multi-turn'}"
    if brief:
        return _brief(kind, reference, turn, name)
    return _builtin(kind, reference, turn, focus, criteria, name)


def _builtin(kind: str, reference: bool, turn: int, focus: str, criteria: str, name: str) -> JudgePrompt:
    if kind == "pair":
        system = _PAIR_SYSTEM.format(focus=focus, criteria=criteria)
        if turn == 1:
            body = "[Question]\n{question}\n\n"
            if reference:
                body += "[Reference answer]\n{ref_answer_1}\n[End of reference answer]\n\n"
            body += ("[Assistant A's answer]\n{answer_a}\n[End of assistant A's answer]\n\n"
                     "[Assistant B's answer]\n{answer_b}\n[End of assistant B's answer]")
        else:
            body = f"[Reference conversation]\n{_ref_conv(turn)}\n[End of reference conversation]\n\n" if reference else ""
            body += (f"[Assistant A's conversation]\n{_conv('A', turn)}\n[End of assistant A's conversation]\n\n"
                     f"[Assistant B's conversation]\n{_conv('B', turn)}\n[End of assistant B's conversation]")
        return JudgePrompt(name, system, body)
    system = _SINGLE_SYSTEM.format(focus=focus, criteria=criteria)
    if turn == 1:
        body = "[Question]\n{question}\n\n"
        if reference:
            body += "[Reference answer]\n{ref_answer_1}\n[End of reference answer]\n\n"
        body += "[Assistant's answer]\n{answer}\n[End of assistant's answer]"
    else:
        body = f"[Reference conversation]\n{_ref_conv(turn)}\n[End of reference conversation]\n\n" if reference else ""
        body += f"[Assistant's conversation]\n{_conv('', turn)}\n[End of assistant's conversation]"
    return JudgePrompt(name, system, body)


# FastChat's names: pair-v2, pair-math-v1, pair-v2-multi-turn, pair-math-v1-multi-turn, single-v1, ...
def _fastchat_key(name: str, kind: str) -> tuple[str, bool, bool] | None:
    if not (name.startswith("pair") or name.startswith("single")):
        return None
    return ("pair" if name.startswith("pair") else "single", "math" in name, name.endswith("multi-turn"))


class PromptSet:
    """The prompts a judging evaluator uses: ``builtin`` (explanation, then the verdict), ``brief`` (the verdict
    alone), or a FastChat-style file."""

    def __init__(self, source: str = "builtin") -> None:
        self.source = source
        self.file: Path | None = None
        self.by_key: dict[tuple[str, bool, bool], JudgePrompt] = {}
        if source not in ("builtin", "brief"):
            self.file = find_data(source, what="judge prompts")
            for n, rec in enumerate(read_jsonl(self.file, what="judge prompts")):
                try:
                    key = _fastchat_key(rec["name"], rec.get("type", ""))
                    if key is not None:
                        self.by_key.setdefault(key, JudgePrompt(rec["name"], rec.get("system_prompt", ""),
                                                                rec["prompt_template"]))
                except KeyError as exc:
                    raise ConfigError(f"judge prompts: {self.file}: row {n}: not a judge prompt record "
                                      f"(no field {exc})") from None
            if not self.by_key:
                raise ConfigError(f"{self.file}: no pair-* or single-* judge prompts")

    def get(self, kind: str, reference: bool, turn: int) -> JudgePrompt:
        if self.file is None:
            return builtin_prompt(kind, reference, turn, brief=self.source == "brief")
        if turn > 2:
            raise ConfigError(f"{self.file}: FastChat judge prompts cover two turns; turn {turn} needs the "
                              f"built-in prompts (prompts: builtin)")
        key = (kind, reference, turn > 1)
        prompt = self.by_key.get(key) or self.by_key.get((kind, False, turn > 1))
        if prompt is None:
            raise ConfigError(f"{self.file}: no {kind} judge prompt for {'turn 2' if turn > 1 else 'turn 1'}")
        return prompt


def render(prompt: JudgePrompt, values: dict[str, str]) -> list[tuple[str, str]]:
    """The judge conversation: the prompt's system message (if any) and the filled-in user message."""
    try:
        user = prompt.template.format(**values)
    except KeyError as exc:
        raise ConfigError(f"judge prompt '{prompt.name}': no value for {exc} (this sample lacks it, e.g. a "
                          f"reference answer)") from None
    return ([("system", prompt.system)] if prompt.system.strip() else []) + [("user", user)]
