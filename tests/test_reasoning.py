"""A reasoning model's thinking is cut off its answers by the kernel (luopan.reasoning), before any evaluator,
judge or later turn sees them: a scripted model that thinks before answering scores exactly as the same model
answering without thinking, through every evaluator (exact_match, number_match, math_equiv, the multiple-choice
extractor, code_pass, single grading and pairwise judging); the raw text stays in the predictions; the rule can be
changed or turned off per model, and a rerun with another rule is answered from the cache."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import judge_standins
import pytest
from judge_standins import ScriptedJudge, ScriptedParams, run_file, write_bench
from pydantic import BaseModel, ConfigDict, Field

from luopan import hookimpl
from luopan.cli import main
from luopan.components import Backend
from luopan.errors import ConfigError
from luopan.reasoning import ReasoningRule, answer_of
from luopan.types import ConversationResult, GenerationRequest, GenerationResult

#: what the scripted model thinks: a distractor for every evaluator (a number, a boxed answer, an option, a code
#: block, a judge's verdict and a model tag), so that an evaluator that saw it would score differently
THOUGHT = ("Hmm, is it 99? The answer is 99. #### 99 \\boxed{99} The answer is (A). 答案是 A\n"
           "Final Answer: The final answer is $99$. I hope it is correct.\n"
           "```python\ndef wrong():\n    return None\n```\n"
           "Rating: [[1]] [[B]] <m9> [[INCORRECT]]")


class ThinkerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: a text in the request's last user turn (or prompt) -> the answer; the first that matches
    answers: dict[str, str] = Field(default_factory=dict)
    #: no: the answer alone; closed: <think>...</think> then the answer; unfinished: <think>... and nothing more;
    #: opened: the thoughts, </think>, the answer (a template that opened <think> in the prompt)
    think: Literal["no", "closed", "unfinished", "opened"] = "no"
    calls_log: str | None = None


def think(answer: str, how: str) -> str:
    if how == "closed":
        return f"<think>\n{THOUGHT}\n</think>\n\n{answer}"
    if how == "unfinished":
        return f"<think>\n{THOUGHT}"
    if how == "opened":
        return f"{THOUGHT}\n</think>\n\n{answer}"
    return answer


class Thinker(Backend):
    """A chat model whose answers are scripted, with or without a thinking part."""

    kind = "chat"
    capabilities = frozenset({"generate"})

    def __init__(self, **p: Any) -> None:
        self.p = ThinkerParams(**p)

    def identity(self) -> dict[str, Any]:
        return {"backend": "thinker", **self.p.model_dump(exclude={"calls_log"})}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        out = []
        for r in requests:
            users = [c for role, c in r.messages or () if role == "user"]
            asked = users[-1] if users else (r.prompt or "")
            answer = next((a for k, a in self.p.answers.items() if k in asked), "I do not know.")
            if self.p.calls_log:
                with open(self.p.calls_log, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(r.message_dicts() or r.prompt) + "\n")
            out.append(GenerationResult(think(answer, self.p.think), 10, 20, "stop"))
        return out


class ThinkingJudgeParams(ScriptedParams):
    think: bool = True


class ThinkingJudge(ScriptedJudge):
    """The scripted judge, thinking first (its thoughts hold other verdicts)."""

    def __init__(self, **p: Any) -> None:
        self.thinks = bool(p.pop("think", True))
        super().__init__(**p)

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "backend": "thinking_judge", "think": self.thinks}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        outs = super().generate(requests)
        return [GenerationResult(think(o.text, "closed" if self.thinks else "no"), 10, 5, "stop") for o in outs]


@hookimpl
def luopan_register_backends(register: Any) -> None:
    register("thinker", Thinker, params=ThinkerParams, description="scripted thinking model (tests)")
    register("thinking_judge", ThinkingJudge, params=ThinkingJudgeParams, description="thinking judge (tests)")


@pytest.fixture
def registry():
    from luopan.plugins import load_registry, reset_registry

    reg = load_registry(extra_plugins=[("judge_standins", judge_standins),
                                       ("reasoning_standins", sys.modules[__name__])])
    reset_registry(reg)
    yield reg
    reset_registry(None)


# ---------------------------------------------------------------- the rule itself


@pytest.mark.parametrize("text, answer", [
    ("The answer is 4.", "The answer is 4."),                       # no thinking: unchanged
    ("<think>2+2?</think>\n\nThe answer is 4.", "The answer is 4."),
    ("<think>a</think>x</think>\ny", "y"),                          # the last end marker
    ("<think>2+2 is", ""),                                          # never finished: no answer
    ("<think>a</think>b<think>c", ""),                               # thinking again, unfinished
    ("2+2?</think>4", "4"),                                         # no start marker
    ("</think>  indented", "  indented"),                           # only newlines after the marker dropped
])
def test_the_default_rule(text, answer):
    assert ReasoningRule().answer(text) == answer


def test_other_markers_and_a_template_that_opens_the_thinking():
    opened = ReasoningRule(opened=True)
    assert opened.answer("thoughts</think>\nB") == "B" and opened.answer("thoughts, cut off") == ""
    rule = ReasoningRule(end="<|end_of_thought|>", start=None)
    assert rule.answer("x<|end_of_thought|>y") == "y" and rule.answer("<think>x") == "<think>x"


def test_results_keep_their_counts_and_conversations_go_turn_by_turn():
    rule = ReasoningRule()
    r = GenerationResult("<think>t</think>\nA", 3, 9, "stop")
    assert answer_of(r, rule) == GenerationResult("A", 3, 9, "stop")
    plain = GenerationResult("A", 3, 4, "stop")
    assert answer_of(plain, rule) is plain and answer_of(r, None) is r
    conv = answer_of(ConversationResult([r, GenerationResult("<think>u</think>B")]), rule)
    assert conv.texts == ["A", "B"] and conv.completion_tokens == 9


def test_the_multiple_choice_extractor_reads_the_answer_the_rule_leaves():
    from luopan_mcq.extract import extract_choice

    assert extract_choice(ReasoningRule().answer("<think>It could be A, or maybe B.</think>\n答案：D")) == "D"


# ---------------------------------------------------------------- configuration


def _resolve(tmp_path: Path, registry: Any, model: str) -> Any:
    from luopan.config import load_run

    p = tmp_path / "cfg.yaml"
    p.write_text(f"models:\n  - {model}\ndatasets:\n  - {{preset: gsm8k, limit: 1}}\n", encoding="utf-8")
    return load_run(str(p), registry).models[0]


def test_the_model_entry_sets_the_rule(tmp_path, registry):
    default = {"end": "</think>", "start": "<think>", "opened": False}
    assert _resolve(tmp_path, registry, "{preset: fake}").reasoning == default
    for off in ("none", "false", "off", "null"):
        assert _resolve(tmp_path, registry, f"{{preset: fake, reasoning: {off}}}").reasoning is None
    assert _resolve(tmp_path, registry, "{preset: fake, reasoning: true}").reasoning == default
    got = _resolve(tmp_path, registry, "{preset: fake, reasoning: {end: '[/THINK]', start: null}}").reasoning
    assert got == {"end": "[/THINK]", "start": None, "opened": False}
    # a preset's rule merges key by key with the entry's
    r1 = _resolve(tmp_path, registry, "{preset: deepseek-r1-distill-qwen-1.5b, reasoning: {end: '</t>'}}")
    assert r1.reasoning == {"end": "</t>", "start": "<think>", "opened": True}


@pytest.mark.parametrize("value, message", [
    ("{ends: x}", "models[0].reasoning.ends: unknown key 'ends' (did you mean 'end'?)"),
    ("{end: ''}", "models[0].reasoning.end: String should have at least 1 character"),
    ("maybe", "models[0].reasoning: Value error, must be a mapping (end, start, opened), true for the default "
              "rule, or none/false to turn it off (got 'maybe')"),
    ("{opened: 3}", "models[0].reasoning.opened: Input should be a valid boolean"),
])
def test_a_bad_rule_is_a_one_line_error(tmp_path, registry, value, message):
    with pytest.raises(ConfigError) as err:
        _resolve(tmp_path, registry, f"{{preset: fake, reasoning: {value}}}")
    assert message in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- every evaluator

MCQ = [("Which is a fruit?", ["car", "apple", "road", "shoe"], "B"), ("Which can fly?", ["bird", "rock", "cup", "pen"], "A")]


def _data(root: Path) -> dict[str, str]:
    """Small benchmarks in run-file form, and the scripted model's answers (some right, some wrong)."""
    d = root / "data"
    d.mkdir()
    rows = {
        "capitals": [{"q": "Capital of France?", "a": "Paris"}, {"q": "Capital of Japan?", "a": "Tokyo"}],
        "arith": [{"q": "Six times seven?", "a": "#### 42"}, {"q": "Two plus two?", "a": "#### 4"}],
        "math": [{"q": "Half of one?", "a": "\\frac{1}{2}"}, {"q": "Square root of nine?", "a": "3"}],
        "mcq": [{"q": q, "o": o, "a": a} for q, o, a in MCQ],
    }
    for name, rs in rows.items():
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs), encoding="utf-8")
    answers = {"Capital of France?": "Paris", "Capital of Japan?": "Kyoto",
               "Six times seven?": "6 * 7 = 42. #### 42", "Two plus two?": "#### 5",
               "Half of one?": "So it is $\\boxed{0.5}$.", "Square root of nine?": "$\\boxed{4}$",
               "Which is a fruit?": "B", "Which can fly?": "答案是 C"}
    # HumanEval: the first problem solved (in a fenced block, as chat models answer), the second not
    he = [json.loads(x) for x in (Path(__import__("os").environ["LUOPAN_DATA"]) / "humaneval" / "HumanEval.jsonl")
          .read_text(encoding="utf-8").splitlines()[:2]]
    answers[he[0]["entry_point"]] = f"```python\n{he[0]['prompt']}{he[0]['canonical_solution']}```"
    answers[he[1]["entry_point"]] = f"```python\n{he[1]['prompt']}    return []\n```"
    return answers


DATASETS = """datasets:
  - {name: exact, loader: files, params: {path: data/capitals.jsonl, prompt: "{{q}}", target: a},
     mode: generate, evaluator: exact_match}
  - {name: numbers, loader: files, params: {path: data/arith.jsonl, prompt: "{{q}}", target: a},
     mode: generate, evaluator: number_match}
  - {name: math, loader: files, params: {path: data/math.jsonl, prompt: "{{q}}", target: a},
     mode: generate, evaluator: math_equiv}
  - {name: mcq, loader: files, params: {path: data/mcq.jsonl, prompt: "{{q}} {{o}}", choices: o, target_index: a,
     choice_labels: [A, B, C, D]}, mode: generate, evaluator: accuracy}
  - {preset: humaneval, name: code, limit: 2, evaluator_params: {workers: 1, timeout: 20}}
"""


def _run(root: Path, name: str, models: list[str], datasets: str = DATASETS) -> Path:
    p = root / f"{name}.yaml"
    p.write_text(f"run: {{output_dir: {root / 'outputs'}, name: {name}}}\nmodels:\n"
                 + "".join(f"  - {m}\n" for m in models) + datasets, encoding="utf-8")
    assert main(["run", str(p), "--no-progress"]) == 0
    return root / "outputs" / name


def _result(out: Path, model: str, dataset: str) -> dict[str, Any]:
    return json.loads((out / "results" / model / f"{dataset}.json").read_text(encoding="utf-8"))


def _preds(out: Path, model: str, dataset: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "predictions" / model / f"{dataset}.jsonl").read_text().splitlines()]


def _scores(result: dict[str, Any]) -> list[Any]:
    """Each subset's questions, score and metrics (not the code sandbox's timings)."""
    return [(s["subset"], s["n"], s["score"], {k: v for k, v in s["metrics"].items() if k != "seconds"})
            for s in result["subsets"]]


def _model(name: str, answers: dict[str, str], how: str, extra: str = "", log: Path | None = None) -> str:
    params = {"answers": answers, "think": how, **({"calls_log": str(log)} if log else {})}
    return f"{{name: {name}, backend: thinker, kind: chat, params: {json.dumps(params)}{extra}}}"


EVALUATED = ("exact", "numbers", "math", "mcq", "code")


def test_every_evaluator_scores_a_thinking_model_as_if_it_had_not_thought(tmp_path, registry):
    answers = _data(tmp_path)
    out = _run(tmp_path, "r", [_model("plain", answers, "no"), _model("thinks", answers, "closed"),
                               _model("opened", answers, "opened", ", reasoning: {opened: true}")])
    for ds in EVALUATED:
        plain = _result(out, "plain", ds)
        assert plain["error"] is None and 0 < plain["subsets"][0]["score"] < 1, ds  # one right, one wrong
        for model in ("thinks", "opened"):
            other = _result(out, model, ds)
            assert other["error"] is None and _scores(other) == _scores(plain), (ds, model)
            assert other["version"] == plain["version"], ds  # same settings: the rule is on for both
            assert other["provenance"]["reasoning"]["end"] == "</think>"
            p, t = _preds(out, "plain", ds), _preds(out, model, ds)
            assert [r["prediction"] for r in t] == [r["prediction"] for r in p], (ds, model)
            assert [r["score"] for r in t] == [r["score"] for r in p], (ds, model)
            # the raw text is kept; the answer scored beside it
            assert all(THOUGHT in r["output"] and r["answer"] == q["output"] for r, q in zip(t, p)), (ds, model)
        assert all("answer" not in r for r in _preds(out, "plain", ds))


def test_the_rule_off_scores_the_whole_output_and_an_unfinished_thought_is_no_answer(tmp_path, registry):
    answers = _data(tmp_path)
    datasets = DATASETS.split("  - {name: numbers")[0]  # exact_match only
    out = _run(tmp_path, "r", [_model("plain", answers, "no"), _model("rule-off", answers, "closed", ", reasoning: none"),
                               _model("unfinished", answers, "unfinished")], datasets)
    assert _result(out, "plain", "exact")["subsets"][0]["score"] == 0.5
    off = _result(out, "rule-off", "exact")
    assert off["subsets"][0]["score"] == 0.0 and off["provenance"]["reasoning"] is None
    assert off["version"] != _result(out, "plain", "exact")["version"]  # the rule on or off: other settings
    assert all("answer" not in r and r["prediction"].startswith("<think>") for r in _preds(out, "rule-off", "exact"))
    unfinished = _preds(out, "unfinished", "exact")
    assert all(r["answer"] == "" and r["output"].startswith("<think>") and r["score"] == 0.0 for r in unfinished)


def test_changing_the_rule_reuses_the_cached_generations(tmp_path, registry):
    answers = _data(tmp_path)
    log = tmp_path / "calls.txt"
    datasets = DATASETS.split("  - {preset: humaneval")[0]
    first = _run(tmp_path, "rule-on", [_model("m", answers, "closed", log=log)], datasets)
    calls = len(log.read_text().splitlines())
    assert calls == 8
    second = _run(tmp_path, "rule-off", [_model("m", answers, "closed", ", reasoning: false", log=log)], datasets)
    third = _run(tmp_path, "other", [_model("m", answers, "closed", ", reasoning: {end: '</think>', start: null}",
                                            log=log)], datasets)
    assert len(log.read_text().splitlines()) == calls  # no new request: the cache holds the raw generations
    for ds in ("exact", "numbers", "math", "mcq"):
        assert _preds(second, "m", ds)[0]["output"] == _preds(first, "m", ds)[0]["output"]
        assert _result(second, "m", ds)["provenance"]["reasoning"] is None
        assert _result(third, "m", ds)["version"] == _result(first, "m", ds)["version"]
    assert _result(first, "m", "exact")["subsets"][0]["score"] == 0.5
    assert _result(second, "m", "exact")["subsets"][0]["score"] == 0.0


# ---------------------------------------------------------------- judges and conversations

JUDGED = {"m1": 50, "m2": 20}


def _judged_answers(how: str) -> dict[tuple[str, int], tuple[str, str]]:
    return {(m, i): (think(f"answer <{m}> to Q{i}: " + "x" * n, how), think(f"second <{m}>", how))
            for m, n in JUDGED.items() for i in range(1, 7)}


@pytest.mark.parametrize("evaluator, params", [("single_grade", "{}"),
                                               ("pairwise", "{opponents: all, baseline: m2, bootstrap: 50}")])
def test_judges_see_answers_without_thinking_and_read_their_own_verdict_after_theirs(tmp_path, registry,
                                                                                    evaluator, params):
    strengths = "{strengths: {m1: 8, m2: 3}, calls_log: %s}"
    plain, thinking = tmp_path / "plain", tmp_path / "thinking"
    write_bench(plain, JUDGED, answers=_judged_answers("no"))
    write_bench(thinking, JUDGED, answers=_judged_answers("closed"))
    log_a, log_b = tmp_path / "a.txt", tmp_path / "b.txt"
    a = run_file(plain, list(JUDGED), judge=strengths % log_a, evaluator=evaluator, params=params, name="a")
    assert main(["run", str(a), "--no-progress"]) == 0
    # the same judge on the thinking models' answers: the very same judge requests, all from the cache
    (thinking / "outputs").symlink_to(plain / "outputs")
    b = run_file(thinking, list(JUDGED), judge=strengths % log_b, evaluator=evaluator, params=params, name="b")
    assert main(["run", str(b), "--no-progress"]) == 0
    assert not log_b.exists()
    # a judge that thinks first (other verdicts in its thoughts): its verdicts are read after its thinking
    c = run_file(thinking, list(JUDGED), judge="", evaluator=evaluator, params=params, name="c",
                 extra_models="  - {name: judge, backend: thinking_judge, kind: chat, role: judge, "
                              "params: {strengths: {m1: 8, m2: 3}}}")
    assert main(["run", str(c), "--no-progress"]) == 0
    for m in JUDGED:
        ra = _result(plain / "outputs" / "a", m, "bench")
        for run in ("b", "c"):
            rb = _result(plain / "outputs" / run, m, "bench")
            assert rb["error"] is None and _scores(rb) == _scores(ra), (m, run)
    preds = _preds(plain / "outputs" / "c", "m1", "bench")
    assert all(THOUGHT in r["output"] and "<think>" not in r["answer"] for r in preds)
    assert all(r["answer_turns"] == [t.split("</think>\n\n")[-1] for t in r["turns"]] for r in preds)
    assert all("<think>" not in json.dumps(r["extra"]) for r in preds)  # the judge's replies recorded: no thoughts


def test_later_turns_get_the_answers_without_thinking_in_their_history(tmp_path, registry):
    write_bench(tmp_path, {})
    log = tmp_path / "calls.txt"
    answers = {"first turn": "First answer.", "second turn": "Second answer."}
    p = run_file(tmp_path, [], judge="{strengths: {m1: 8}}", evaluator="single_grade", params="{}",
                 extra_models="  - " + _model("m1", answers, "closed", log=log))
    assert main(["run", str(p), "--no-progress"]) == 0
    requests = [json.loads(x) for x in log.read_text().splitlines()]
    later = [r for r in requests if len(r) > 1]
    assert len(later) == 6 and all(r[1] == {"role": "assistant", "content": "First answer."} for r in later)
    preds = _preds(tmp_path / "outputs" / "r", "m1", "bench")
    assert all(r["answer_turns"] == ["First answer.", "Second answer."] and THOUGHT in r["turns"][0] for r in preds)
