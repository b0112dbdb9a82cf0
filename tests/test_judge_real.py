"""A real judge for the plumbing: SmolLM2-135M-Instruct judges MT-Bench's pregenerated answers, once through the
``hf`` backend (local) and once through llama.cpp's OpenAI-compatible server (the ``openai`` backend, the API
path). SmolLM2 is a weak judge: these tests check that every battle ends in a verdict or a counted failure, that
judge calls are cached (a rerun sends none), and that the arena tables are written; not the verdicts' quality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import LLAMA_SERVER_KEY

from luopan.cli import main

pytestmark = pytest.mark.slow


def write_run(tmp_path: Path, judge: str, name: str = "real", contestant: str = "") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""
run: {{output_dir: {tmp_path / 'outputs'}, name: {name}}}
models:
  - {{preset: mt-bench-answers, name: gpt-4, params: {{model: gpt-4}}}}
  - {{preset: mt-bench-answers, name: llama-13b, params: {{model: llama-13b}}}}
  - {judge}
{contestant}
datasets:
  - preset: mt_bench
    subsets: [writing, math]
    limit_per_subset: 1
    evaluator_params: {{prompts: brief, turns: [1], max_answer_chars: 600, verdict_retries: 1, bootstrap: 100}}
    generation: {{max_new_tokens: 24}}  # the contestant's answers (the dataset's 1024 would take minutes on CPU)
""", encoding="utf-8")
    return p


def check(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str], pairs: int = 1) -> None:
    out = capsys.readouterr().out
    arena = json.loads((tmp_path / "outputs" / name / "arena" / "mt_bench" / "summary.json").read_text())
    judge = arena["judges"]["judge"]
    assert judge["battles"] + judge["failed"] == 2 * pairs  # 2 questions, turn 1
    # each unit asks for all of its model's battles; a battle already asked from the other model's unit is
    # answered from the cache, so a fresh run sends some and finds the rest cached, and no judge call fails
    calls = judge["calls"]
    assert calls["sent"] >= 4 and calls["sent"] + calls["cached"] == calls["requests"] and calls["failed"] == 0
    assert "arena: mt_bench / judge judge" in out or judge["battles"] == 0
    # rerun: every judge call answered from the cache, the same leaderboard
    assert main(["run", str(tmp_path / f"{name}.yaml"), "--no-progress", "--name", f"{name}-again"]) == 0
    again = json.loads((tmp_path / "outputs" / f"{name}-again" / "arena" / "mt_bench" / "summary.json").read_text())
    assert again["judges"]["judge"]["calls"]["sent"] == 0
    assert again["judges"]["judge"]["calls"]["cached"] == judge["calls"]["requests"]
    assert again["leaderboards"] == arena["leaderboards"]


def test_smollm2_judge_through_the_hf_backend(tmp_path, capsys):
    """SmolLM2 also answers both MT-Bench turns itself (the second with its own first answer in the history)."""
    judge = "{preset: smollm2-135m-instruct, name: judge, role: judge, generation: {max_new_tokens: 12}}"
    contestant = "  - {preset: smollm2-135m-instruct, name: smollm2}"
    assert main(["run", str(write_run(tmp_path, judge, contestant=contestant)), "--no-progress"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "outputs/real/predictions/smollm2/mt_bench.jsonl").read_text().splitlines()]
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user"] and len(row["turns"]) == 2
        assert row["messages"][1]["content"] == row["turns"][0]
    check(tmp_path, "real", capsys, pairs=3)


def test_smollm2_judge_through_llama_cpp_server(tmp_path, llama_server, capsys, monkeypatch):
    monkeypatch.setenv("LUOPAN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LLAMA_TEST_CRED", LLAMA_SERVER_KEY)
    judge = (f"{{name: judge, backend: openai, kind: chat, role: judge, generation: {{max_new_tokens: 12}}, "
             f"params: {{base_url: '{llama_server}', model: smollm2, api_key_env: LLAMA_TEST_CRED}}}}")
    assert main(["run", str(write_run(tmp_path, judge, "api")), "--no-progress"]) == 0
    check(tmp_path, "api", capsys)
