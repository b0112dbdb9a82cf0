"""The benchmark presets end to end through the CLI: a few items of each with the ``fake`` backend (kernel
plumbing only: its scores mean nothing), and a couple with SmolLM2-135M on 5 items (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from luopan.cli import main

FAKE = {
    # preset: (limit, metric, samples per item)
    "arc_easy": (4, "accuracy", 1),
    "arc_challenge": (4, "accuracy", 1),
    "hellaswag": (4, "accuracy", 1),
    "boolq": (4, "accuracy", 1),
    "piqa": (4, "accuracy", 1),
    "winogrande": (4, "accuracy", 2),
    "truthfulqa_mc1": (4, "accuracy", 1),
    "truthfulqa_mc2": (4, "mc2", 1),
    "lambada_openai": (4, "acc", 1),
    "gsm8k_cot": (3, "strict_match", 1),
    "math": (3, "math_equiv", 1),
}


def _run(tmp_path: Path, model: str, datasets: str, name: str = "r") -> Path:
    run = tmp_path / f"{name}.yaml"
    run.write_text(f"run: {{output_dir: {tmp_path / 'out'}, name: {name}}}\nmodels:\n{model}datasets:\n{datasets}",
                   encoding="utf-8")
    assert main(["run", str(run), "--no-progress"]) == 0
    return tmp_path / "out" / name


def test_presets_run_end_to_end_with_the_fake_backend(tmp_path):
    datasets = "".join(f"  - {{preset: {p}, limit: {lim * k}}}\n" for p, (lim, _, k) in FAKE.items())
    datasets += "  - {preset: bbh, subsets: [boolean_expressions, navigate], limit_per_subset: 2}\n"
    out = _run(tmp_path, "  - preset: fake\n", datasets)
    for preset, (lim, metric, k) in FAKE.items():
        result = json.loads((out / "results" / "fake" / f"{preset}.json").read_text())
        assert result["error"] is None, (preset, result["error"])
        assert result["metric"] == metric, preset
        assert sum(s["n"] for s in result["subsets"]) == lim * k, preset
        assert 0.0 <= result["subsets"][0]["score"] <= 1.0
    bbh = json.loads((out / "results" / "fake" / "bbh.json").read_text())
    assert [s["subset"] for s in bbh["subsets"]] == ["boolean_expressions", "navigate"]
    assert bbh["metric"] == "exact_match" and bbh["provenance"]["generation"]["max_new_tokens"] == 1024
    summary = (out / "summary.md").read_text()
    assert "| gsm8k_cot | overall | flexible_match | 3 |" in summary
    assert "| lambada_openai | overall | perplexity | 4 |" in summary
    lam = json.loads((out / "results" / "fake" / "lambada_openai.json").read_text())
    assert lam["subsets"][0]["metrics"]["perplexity"] > 1.0


SMOLLM2 = ("  - preset: smollm2-135m-instruct\n    kind: base\n"
           "    params: {dtype: float32, device: cpu, batch_size: 8}\n")


@pytest.mark.slow
def test_smollm2_on_five_items_of_arc_winogrande_and_gsm8k(tmp_path):
    out = _run(tmp_path, SMOLLM2,
               "  - {preset: arc_easy, limit: 5}\n  - {preset: winogrande, limit: 5}\n"
               "  - {preset: gsm8k_cot, limit: 5, generation: {max_new_tokens: 96}}\n", "smol")
    arc = json.loads((out / "results" / "smollm2-135m-instruct" / "arc_easy.json").read_text())
    assert arc["error"] is None and arc["subsets"][0]["n"] == 5 and "acc_norm" in arc["subsets"][0]["metrics"]
    wino = [json.loads(x) for x in
            (out / "predictions" / "smollm2-135m-instruct" / "winogrande.jsonl").read_text().splitlines()]
    assert len(wino) == 10 and all(len(p["logprobs"]) == 1 for p in wino)  # 5 questions, one sample per option
    res = json.loads((out / "results" / "smollm2-135m-instruct" / "winogrande.json").read_text())
    assert res["subsets"][0]["n"] == 5  # n counts questions
    for a, b in zip(wino[::2], wino[1::2]):  # both options of a question share its verdict and prediction
        assert a["score"] == b["score"] and a["prediction"] == b["prediction"]
        assert a["prediction"] == (0 if a["logprobs"][0] >= b["logprobs"][0] else 1)
    gsm = [json.loads(x) for x in
           (out / "predictions" / "smollm2-135m-instruct" / "gsm8k_cot.jsonl").read_text().splitlines()]
    assert len(gsm) == 5 and all(p["prompt"].count("The answer is") == 8 for p in gsm)
    assert all("Q:" not in p["output"] for p in gsm)  # stopped at the next question
