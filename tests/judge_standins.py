"""A scripted judge for the judge tests: verdicts follow rules written in the test, so win rates, consistency
rates, ties and failures have exact expected values. Never a stand-in for a real judge's behaviour.

The answers under test carry their model's name as ``<m1>``; the scripted judge reads the two answers (or the one)
out of the prompt and decides by the models' ``strengths``. ``biased`` question ids get ``[[A]]`` whatever the
order (inconsistent pairs); ``garbage`` ids never get a verdict; ``garbage_once`` ids get one only after the
reminder. ``calls_log`` gets one line per request served (to count judge calls across runs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from luopan import hookimpl
from luopan.components import Backend
from luopan.types import GenerationRequest, GenerationResult

TAG = re.compile(r"<(m\d+|[a-z][\w.-]*)>")


class ScriptedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strengths: dict[str, float] = Field(default_factory=dict)
    biased: list[str] = Field(default_factory=list)
    garbage: list[str] = Field(default_factory=list)
    garbage_once: list[str] = Field(default_factory=list)
    style: str = "brackets"  # brackets | chinese | rating_slash
    calls_log: str | None = None
    delay_s: float = 0.0  # per request (to interrupt a run mid-judging)
    chunk_size: int = 256


class ScriptedJudge(Backend):
    kind = "chat"
    capabilities = frozenset({"generate"})

    def __init__(self, **p: Any) -> None:
        self.p = ScriptedParams(**p)
        self.chunk_size = self.p.chunk_size

    def identity(self) -> dict[str, Any]:
        return {"backend": "scripted", **self.p.model_dump(exclude={"calls_log", "delay_s", "chunk_size"})}

    def _qid(self, text: str) -> str | None:
        m = re.search(r"\bQ(\d+)\b", text)
        return m.group(1) if m else None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        out = []
        for r in requests:
            msgs = list(r.messages or ())
            k = next(i for i, (role, _) in enumerate(msgs) if role == "user")
            first_user = "\n".join(c for _, c in msgs[: k + 1])  # the system prompt and the question
            retried = sum(1 for role, _ in msgs if role == "assistant") > 0
            qid = self._qid(first_user)
            if self.p.delay_s:
                import time

                time.sleep(self.p.delay_s)
            if self.p.calls_log:
                with open(self.p.calls_log, "a", encoding="utf-8") as fh:
                    fh.write(f"{qid}\n")
            out.append(GenerationResult(self._reply(first_user, qid, retried), 10, 5, "stop"))
        return out

    def _reply(self, prompt: str, qid: str | None, retried: bool) -> str:
        if qid in self.p.garbage or (qid in self.p.garbage_once and not retried):
            return "Both answers have merits and I cannot really say."
        if "[[CORRECT]]" in prompt:  # the cascade's correctness question
            ref = re.search(r"\[Reference answer\]\n(.*?)\n\[End", prompt, re.S).group(1)  # type: ignore[union-attr]
            ans = re.search(r"\[Assistant's answer\]\n(.*?)\n\[End", prompt, re.S).group(1)  # type: ignore[union-attr]
            gold = re.findall(r"\d+", ref)[-1]
            return "[[CORRECT]]" if gold in ans else "Not the same value. [[INCORRECT]]"
        tags = TAG.findall(prompt.split("[Assistant", 1)[1] if "[Assistant" in prompt else prompt)
        if "Rating: [[5]]" in prompt or "rating from 1" in prompt or "to 10 (best)" in prompt:  # single grading
            s = self.p.strengths.get(tags[-1], 5) if tags else 5
            return f"The answer is fine. {s:g}/10" if self.p.style == "rating_slash" else f"Rating: [[{s:g}]]"
        if qid in self.p.biased:
            return "Assistant A is better. [[A]]" if self.p.style == "brackets" else "A更好"
        # pairwise: the first tag inside A's block, then inside B's block
        a_block = re.search(r"Assistant A's (?:answer|conversation)\]\n(.*?)\n\[End of assistant A", prompt, re.S)
        b_block = re.search(r"Assistant B's (?:answer|conversation)\]\n(.*?)\n\[End of assistant B", prompt, re.S)
        a = TAG.findall(a_block.group(1))[-1] if a_block else None
        b = TAG.findall(b_block.group(1))[-1] if b_block else None
        sa, sb = self.p.strengths.get(a, 0), self.p.strengths.get(b, 0)
        if self.p.style == "chinese":
            return "助手A的回答更好" if sa > sb else "助手B的回答更好" if sb > sa else "两者不相上下，平局"
        return f"Explanation... [[{'A' if sa > sb else 'B' if sb > sa else 'C'}]]"


@hookimpl
def luopan_register_backends(register: Any) -> None:
    register("scripted", ScriptedJudge, params=ScriptedParams, description="scripted judge (judge tests only)")


# ---------------------------------------------------------------- test data: an MT-Bench-shaped benchmark


def write_bench(root: Any, models: dict[str, int], *, questions: int = 6, math_from: int = 5,
                refs: dict[int, tuple[str, str]] | None = None, answers: dict[tuple[str, int], tuple[str, str]] | None = None
                ) -> None:
    """``root/bench/question.jsonl`` (two turns, "Q<i>" in the text; questions >= ``math_from`` are math with a
    reference answer), and ``root/answers/<model>.jsonl`` (MT-Bench layout): each answer carries ``<model>`` and
    ``length`` x's, unless ``answers`` gives the text."""
    import json
    from pathlib import Path

    root = Path(root)
    (root / "bench" / "reference_answer").mkdir(parents=True, exist_ok=True)
    (root / "answers").mkdir(exist_ok=True)
    qs = [{"question_id": i, "category": "math" if i >= math_from else "writing",
           "turns": [f"Q{i} first turn question", f"Q{i} second turn question"]} for i in range(1, questions + 1)]
    (root / "bench" / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    refs = refs or {}
    ref_rows = [{"question_id": q["question_id"], "model_id": "gpt-4",
                 "choices": [{"index": 0, "turns": list(refs.get(q["question_id"],
                                                                (f"So the answer is {q['question_id'] * 7}.", "Then 3.")))}]}
                for q in qs if q["category"] == "math"]
    (root / "bench" / "reference_answer" / "gpt-4.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ref_rows))
    answers = answers or {}
    for m, length in models.items():
        rows = []
        for q in qs:
            i = q["question_id"]
            turns = answers.get((m, i), (f"answer <{m}> to Q{i}: " + "x" * length, f"second <{m}>"))
            rows.append({"question_id": i, "answer_id": f"{m}-{i}", "model_id": m, "choices": [{"index": 0, "turns": list(turns)}]})
        (root / "answers" / f"{m}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_file(root: Any, models: list[str], *, judge: str = "{strengths: {m1: 3, m2: 2, m3: 1}}",
             dataset: str = "", evaluator: str = "pairwise", params: str = "{opponents: all, baseline: m2, bootstrap: 200}",
             name: str = "r", extra_models: str = "") -> Any:
    from pathlib import Path

    root = Path(root)
    lines = [f"run: {{output_dir: {root / 'outputs'}, name: {name}}}", "models:"]
    lines += [f"  - {{name: {m}, backend: answers, kind: chat, params: {{path: answers, model: {m}}}}}" for m in models]
    if judge:
        lines.append(f"  - {{name: judge, backend: scripted, kind: chat, role: judge, params: {judge}}}")
    lines += [extra_models] if extra_models else []
    lines += ["datasets:", "  - name: bench", "    loader: questions", "    params: {path: bench}", "    mode: generate",
              f"    evaluator: {evaluator}", f"    evaluator_params: {params}"]
    lines += [dataset] if dataset else []
    p = root / f"{name}.yaml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p
