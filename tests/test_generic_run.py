"""End to end through the CLI: the gsm8k preset with the fake backend as a chat model, and a no-code benchmark
written in a run file (the ``files`` loader on a jsonl file, few-shot, the default ``exact_match``)."""

from __future__ import annotations

import json
from pathlib import Path

from luopan.cli import main


def test_gsm8k_preset_with_a_chat_model(tmp_path, capsys):
    run = tmp_path / "gsm8k.yaml"
    run.write_text(
        f"run: {{output_dir: {tmp_path / 'outputs'}, name: g}}\n"
        "models:\n  - {preset: fake, kind: chat}\n"
        "datasets:\n  - {preset: gsm8k, limit: 5}\n",
        encoding="utf-8",
    )
    assert main(["run", str(run), "--no-progress"]) == 0
    out = tmp_path / "outputs" / "g"
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| gsm8k | overall | strict_match | 5 |" in summary
    assert "| gsm8k | overall | strict_match | 5 |" in capsys.readouterr().out
    preds = [json.loads(x) for x in (out / "predictions" / "fake" / "gsm8k.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [f"gsm8k/{i}" for i in range(5)]
    assert preds[0]["prompt"].startswith("Question: Janet") and preds[0]["prompt"].endswith("\nAnswer:")
    assert preds[0]["target"].endswith("#### 18") and "flexible_match" in preds[0]["extra"]
    result = json.loads((out / "results" / "fake" / "gsm8k.json").read_text())
    assert result["metric"] == "strict_match" and result["subsets"][0]["n"] == 5
    assert "flexible_match" in result["subsets"][0]["metrics"]
    prov = result["provenance"]
    assert prov["mode"] == "generate" and prov["evaluator"] == "number_match"
    assert prov["generation"]["stop"] == ["Question:", "</s>", "<|im_end|>"]
    assert prov["generation"]["max_new_tokens"] == 256 and len(prov["dataset"]["fingerprint"]) == 64


def test_a_benchmark_written_in_the_run_file(tmp_path):
    data = tmp_path / "capitals"
    data.mkdir()
    rows = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Peru", "Lima")]
    for split, part in (("test", rows[:3]), ("train", rows[3:])):
        (data / f"{split}.jsonl").write_text(
            "".join(json.dumps({"country": c, "capital": k}) + "\n" for c, k in part), encoding="utf-8"
        )
    run = tmp_path / "capitals.yaml"
    run.write_text(
        f"""run: {{output_dir: {tmp_path / "outputs"}, name: c}}
models:
  - preset: fake
datasets:
  - name: capitals
    loader: files
    params:
      path: capitals          # found beside the run file
      prompt: "The capital of {{{{ country }}}} is"
      target: capital
    shots: 1
    mode: generate
    generation: {{max_new_tokens: 8, stop: ["\\n"]}}
""",
        encoding="utf-8",
    )
    assert main(["run", str(run), "--no-progress"]) == 0
    out = tmp_path / "outputs" / "c"
    preds = [
        json.loads(x) for x in (out / "predictions" / "fake" / "capitals.jsonl").read_text().splitlines()
    ]
    assert preds[0]["prompt"] == "The capital of Peru is Lima\n\nThe capital of France is"
    assert [p["target"] for p in preds] == ["Paris", "Tokyo", "Rome"]
    assert "| capitals | overall | exact_match | 3 |" in (out / "summary.md").read_text(encoding="utf-8")
    assert Path(out / "config.yaml").is_file()
