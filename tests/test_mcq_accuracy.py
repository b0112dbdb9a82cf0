"""The accuracy evaluator, and an end-to-end run on CMMLU with the fake backend through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from luopan.cli import main
from luopan.components import EvalContext
from luopan.plugins import load_registry, reset_registry
from luopan.types import GenerationResult, LoglikelihoodResult, Sample
from luopan_mcq.accuracy import AccuracyEvaluator


def _sample(target: int = 1, choices: list[str] | None = None, **meta) -> Sample:
    return Sample(
        id="s/0",
        subset="s",
        prompt="p",
        target=target,
        choices=choices or ["A", "B", "C", "D"],
        meta={"answer": "ABCD"[target], "options": ["上海", "北京", "广州", "深圳"], **meta},
    )


def _ll(*logprobs: float) -> list[LoglikelihoodResult]:
    return [LoglikelihoodResult(lp) for lp in logprobs]


LIKELIHOOD = EvalContext(mode="likelihood", model="m", dataset="d")
GENERATE = EvalContext(mode="generate", model="m", dataset="d")


def test_registered_from_the_entry_point():
    reg = load_registry()
    assert isinstance(reg.get("evaluator", "accuracy").build({}), AccuracyEvaluator)
    assert reg.get("dataset", "mcq_csv").plugin.name == "mcq"


def test_likelihood_picks_the_highest_logprob():
    ev = AccuracyEvaluator()
    right, wrong = ev.score([_sample(1), _sample(2)], [_ll(-3, -1, -2, -4), _ll(-3, -1, -2, -4)], LIKELIHOOD)
    assert (right.score, right.prediction) == (1.0, 1)
    assert (wrong.score, wrong.prediction) == (0.0, 1)
    assert right.extra == {"acc_norm": 1.0, "acc_bytes": 1.0}


def test_a_tie_goes_to_the_first_choice_as_numpys_argmax():
    [s] = AccuracyEvaluator().score([_sample(0)], [_ll(-1, -1, -2, -2)], LIKELIHOOD)
    assert s.prediction == 0 and s.score == 1.0


def test_acc_norm_divides_by_characters_and_acc_bytes_by_utf8_bytes():
    # " 是" is 2 characters and 4 bytes, " yes" 4 characters and 4 bytes
    sample = Sample(id="s/0", subset="s", prompt="p", target=0, choices=[" 是", " yes"])
    [s] = AccuracyEvaluator().score([sample], [_ll(-5.0, -6.0)], LIKELIHOOD)
    assert s.prediction == 0 and s.score == 1.0  # raw: -5 > -6
    assert s.extra["acc_norm"] == 0.0  # per character: -5/2 = -2.5 < -6/4 = -1.5
    assert s.extra["acc_bytes"] == 1.0  # per byte: -5/4 = -1.25 > -6/4 = -1.5


def test_likelihood_needs_one_result_per_choice():
    with pytest.raises(ValueError, match="3 log-likelihoods for 4 choices"):
        AccuracyEvaluator().score([_sample()], [_ll(-1, -2, -3)], LIKELIHOOD)


@pytest.mark.parametrize(
    ("text", "prediction", "score"),
    [
        ("答案是 B", 1, 1.0),
        ("The answer is (C).", 2, 0.0),
        ("北京", 1, 1.0),  # the option's text
        ("Let's think step by step.", None, 0.0),
    ],
)
def test_generation_reads_the_label(text, prediction, score):
    [s] = AccuracyEvaluator().score(
        [_sample(1, labels=["A", "B", "C", "D"])], [GenerationResult(text)], GENERATE
    )
    assert (s.prediction, s.score) == (prediction, score)
    assert s.extra["extracted"] == (None if prediction is None else "ABCD"[prediction])
    assert s.extra["parsed"] == float(prediction is not None)


def test_generation_labels_default_to_the_stripped_choices():
    sample = Sample(id="x/0", subset="x", prompt="p", target=2, choices=[" A", " B", " C", " D"])
    [s] = AccuracyEvaluator().score([sample], [GenerationResult("Answer: C")], GENERATE)
    assert s.score == 1.0 and s.extra["extracted"] == "C"


# ---------------------------------------------------------------- end to end


@pytest.fixture
def fresh_registry():
    reset_registry(None)
    yield
    reset_registry(None)


def _run_file(tmp_path: Path, model: str, extra: str = "") -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(
        f"run: {{name: mcq, output_dir: {tmp_path / 'outputs'}}}\n"
        f"models:\n  - {model}\n"
        "datasets:\n"
        "  - preset: cmmlu\n"
        "    subsets: [agronomy, anatomy]\n"
        "    limit_per_subset: 1\n" + extra,
        encoding="utf-8",
    )
    return path


def test_end_to_end_cmmlu_with_the_fake_backend(fresh_registry, tmp_path):
    assert main(["run", str(_run_file(tmp_path, "{preset: fake}")), "--no-progress"]) == 0
    out = tmp_path / "outputs" / "mcq"
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "agronomy (农学)" in summary and "anatomy (解剖学)" in summary
    assert "| cmmlu | overall (mean) | accuracy | 2 |" in summary
    preds = [json.loads(line) for line in (out / "predictions/fake/cmmlu.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == ["agronomy/0", "anatomy/0"]
    assert all(len(p["logprobs"]) == 4 and p["prediction"] in range(4) for p in preds)
    result = json.loads((out / "results/fake/cmmlu.json").read_text(encoding="utf-8"))
    assert result["provenance"]["dataset"]["layout"] == "cmmlu"
    assert len(result["provenance"]["dataset"]["fingerprint"]) == 64
    assert {"acc_norm", "acc_bytes"} <= set(result["subsets"][0]["metrics"])


def test_end_to_end_generation_with_a_chat_model(fresh_registry, tmp_path):
    run = _run_file(tmp_path, "{name: fake_chat, backend: fake, kind: chat}", extra="    shots: 2\n")
    assert main(["run", str(run), "--no-progress"]) == 0
    out = tmp_path / "outputs" / "mcq"
    preds = [
        json.loads(line) for line in (out / "predictions/fake_chat/cmmlu.jsonl").read_text().splitlines()
    ]
    assert len(preds) == 2
    for p in preds:  # the fake model answers "答案是 X" or "The answer is (X).": always readable
        assert p["extra"]["extracted"] in {"A", "B", "C", "D"}
        assert p["prediction"] == "ABCD".index(p["extra"]["extracted"])
    assert (out / "summary.md").is_file()


def test_equal_power_of_two_lengths_skip_the_division_and_agree_with_it():
    """Options of one power-of-two length take the plain arg-max (dividing by 2 is exact); any other length
    divides. Both give lm-eval's answer, ties (first option wins) included."""
    from luopan_mcq.accuracy import _score_likelihood

    for choices, lls in [([" AB", " CD"], [-2.0, -1.0]), ([" AB", " CD"], [-1.0, -1.0]),
                         ([" ABC", " DEF"], [-3.0000000000000004, -3.0]), ([" A", " BC"], [-1.5, -2.5])]:
        sample = Sample("q", "s", "p", 0, choices=choices, meta={"target_delimiter": " "})
        sc = _score_likelihood(sample, [LoglikelihoodResult(x) for x in lls])
        texts = [c[1:] for c in choices]
        want_chars = max(range(2), key=lambda i: lls[i] / len(texts[i]))
        want_bytes = max(range(2), key=lambda i: lls[i] / len(texts[i].encode()))
        assert sc.extra == {"acc_norm": float(want_chars == 0), "acc_bytes": float(want_bytes == 0)}
