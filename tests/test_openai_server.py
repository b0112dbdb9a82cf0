"""The openai backend against a real OpenAI-compatible server: llama-cpp-python's, serving SmolLM2 on
127.0.0.1 (the ``llama_server`` fixture in conftest.py starts it; .ci/run installs it), sometimes behind
luopan's fault proxy in forwarding mode to count and disturb requests."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
import yaml
from conftest import LLAMA_SERVER_KEY

from faultproxy import ProxyThread  # tools/faultproxy.py
from luopan.cli import main

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is the capital of France?",
    "Name a colour of the sky.",
    "What is 2 + 3?",
    "Who wrote Hamlet?",
    "中国的首都是哪座城市？",
    "一年有几个月？",
]


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("LUOPAN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LLAMA_TEST_CRED", LLAMA_SERVER_KEY)


def write_run(folder: Path, base_url: str, questions: list[str], *, name: str = "r", mode: str = "generate",
              kind: str = "chat", **params) -> Path:
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"q": q, "a": "x", "choices": ["A", "B"], "gold": 0}, ensure_ascii=False) + "\n"
                            for q in questions), encoding="utf-8")
    ds = {"name": "qs", "loader": "files", "params": {"path": str(data), "prompt": "q", "target": "a"},
          "mode": mode, "evaluator": "exact_match", "generation": {"max_new_tokens": 12}}
    if mode == "likelihood":
        ds["params"].update(choices="choices", target_index="gold")
        ds.pop("evaluator")
        ds.pop("generation")
    cfg = {
        "run": {"name": name, "output_dir": str(folder / "out")},
        "models": [{"name": "api", "backend": "openai", "kind": kind,
                    "params": {"base_url": base_url, "model": "smollm2", "api_key_env": "LLAMA_TEST_CRED",
                               "max_concurrency": 4, **params}}],
        "datasets": [ds],
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


def predictions(folder: Path, name: str = "r") -> list[dict]:
    path = folder / "out" / name / "predictions" / "api" / "qs.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def result(folder: Path, name: str = "r") -> dict:
    return json.loads((folder / "out" / name / "results" / "api" / "qs.json").read_text(encoding="utf-8"))


def test_chat_generation_matches_the_plain_sdk_and_hides_the_key(tmp_path, llama_server, capsys):
    path = write_run(tmp_path, llama_server, QUESTIONS)
    assert main(["run", str(path), "--no-progress"]) == 0
    preds = predictions(tmp_path)
    assert len(preds) == len(QUESTIONS)
    usage = result(tmp_path)["usage"]
    assert usage["prompt_tokens"] > 50 and usage["completion_tokens"] > 0
    # the same request through the bare SDK gives the same greedy text
    client = openai.OpenAI(base_url=llama_server, api_key=LLAMA_SERVER_KEY, max_retries=0)
    for p in preds[:2]:
        r = client.chat.completions.create(model="smollm2", messages=p["messages"], max_tokens=12, temperature=0.0,
                                           top_p=1.0)
        assert r.choices[0].message.content == p["output"]
    out = capsys.readouterr()
    assert LLAMA_SERVER_KEY not in out.out + out.err
    for f in (tmp_path / "out").rglob("*"):
        if f.is_file():
            assert LLAMA_SERVER_KEY.encode() not in f.read_bytes(), f


def test_wrong_key_fails_fast_without_retries(tmp_path, llama_server, capsys, monkeypatch):
    monkeypatch.setenv("LLAMA_TEST_CRED", "sk-wrong-key-123456")
    with ProxyThread(llama_server) as proxy:
        path = write_run(tmp_path, proxy.base_url, QUESTIONS * 3)
        assert main(["run", str(path), "--no-progress"]) == 1
        received = proxy.stats.received
    err = capsys.readouterr().err
    res = result(tmp_path)
    assert len(res["failed_items"]) == len(QUESTIONS) * 3
    assert "HTTP 401" in res["failed_items"][0]["error"]
    assert received <= 4  # at most the requests already in flight; none retried, the rest never sent
    assert "HTTP 401" in err


def test_context_too_long_fails_that_item_at_once(tmp_path, llama_server):
    long_q = "Please summarise: " + "the quick brown fox jumps over the lazy dog " * 400
    with ProxyThread(llama_server) as proxy:
        path = write_run(tmp_path, proxy.base_url, QUESTIONS[:3] + [long_q])
        assert main(["run", str(path), "--no-progress"]) == 1
        assert proxy.stats.received == 4  # the 400 was not retried
    res = result(tmp_path)
    assert [i["id"] for i in res["failed_items"]] == ["qs/3"] or len(res["failed_items"]) == 1
    assert res["failed_items"][0]["error"].startswith("HTTP 400")
    assert "context" in res["failed_items"][0]["error"].lower() or "token" in res["failed_items"][0]["error"].lower()


def test_faults_through_a_proxy_give_the_same_answers(tmp_path, llama_server):
    clean = tmp_path / "clean"
    clean.mkdir()
    assert main(["run", str(write_run(clean, llama_server, QUESTIONS)), "--no-progress"]) == 0
    with ProxyThread(llama_server, fault_rate=0.25, seed=3, retry_after=0.05, stall_s=4.0) as proxy:
        faulty = tmp_path / "faulty"
        faulty.mkdir()
        path = write_run(faulty, proxy.base_url, QUESTIONS, timeout=2.0, max_retries=12, retry_max_wait=0.2)
        assert main(["run", str(path), "--no-progress"]) == 0
        assert sum(proxy.stats.faults.values()) >= 1
    assert [p["output"] for p in predictions(faulty)] == [p["output"] for p in predictions(clean)]


def test_likelihood_refused_where_echo_logprobs_are_shifted(tmp_path, llama_server, capsys):
    path = write_run(tmp_path, llama_server, QUESTIONS[:2], mode="likelihood", kind="base")
    assert main(["run", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "echo logprobs do not score each token given the tokens before it" in err
    assert "issue #1983" in err
